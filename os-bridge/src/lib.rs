//! Linux process actors: cgroups, host resources, task logs (filled by the process-actors work).
