//! The agent's hold on its work directory: `<work-dir>/agent.lock`, flocked while the core
//! runs, so that two agents never share a work directory (each would adopt the other's
//! tasks). The lock goes with the core's state: a restarted core takes it again.

use super::AgentConfig;

/// Locks the agent's work directory, or says which one is in use.
pub(super) fn lock(config: &AgentConfig) -> Result<std::fs::File, String> {
    let path = config.work_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(format!(
            "the work directory {} is in use by another agent; give this one another --work-dir",
            config.work_dir.display()
        )),
        Err(e) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}
