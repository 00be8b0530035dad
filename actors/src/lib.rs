//! Cluster entities: master, agent, framework API, allocator and the wire protocol (filled by the cluster-core work).
