//! The open-file limit of a process that owns tasks.
//!
//! An owner holds descriptors for every task it runs: its cgroup's directories and the
//! control files kept open (see `crate::cgroup`), its shim's socket, its log files. The
//! soft limit most hosts start a service with (1024, systemd's default) would stop an agent
//! at about a hundred tasks with "too many open files". So, as Go's runtime and Nomad's
//! agents do, an owner raises its soft limit to the hard one when it starts
//! ([`raise_for_owner`]), and its tasks get back the limit it started with unless their spec
//! sets one ([`task_default`]): a program that uses `select` breaks on a descriptor above
//! 1024, and a task must not see its limits change with the agent that runs it.

use std::sync::OnceLock;

use rustix::process::{Resource, Rlimit as RawLimit, getrlimit, setrlimit};

use crate::spec::Rlimit;

/// The limit this process had before it was raised; set by the first raise.
static STARTED_WITH: OnceLock<RawLimit> = OnceLock::new();

/// What [`raise_for_owner`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raised {
    /// The soft limit went from the first figure to the second (the hard limit).
    From(u64, u64),
    /// It was as high as it may go already (or unlimited).
    AlreadyAtMost,
}

/// Raises this process's soft open-file limit to its hard limit, once, and remembers the
/// limit it had for [`task_default`]. An error when the kernel refuses.
pub fn raise_for_owner() -> std::io::Result<Raised> {
    let now = getrlimit(Resource::Nofile);
    let before = STARTED_WITH.get_or_init(|| now);
    if now.current == now.maximum {
        return Ok(Raised::AlreadyAtMost);
    }
    let raised = RawLimit {
        current: now.maximum,
        maximum: now.maximum,
    };
    setrlimit(Resource::Nofile, raised).map_err(std::io::Error::from)?;
    let soft = |l: Option<u64>| l.unwrap_or(u64::MAX);
    Ok(Raised::From(soft(before.current), soft(now.maximum)))
}

/// The open-file limit a task gets when its spec sets none: the one this process started
/// with, when it raised its own (`None` otherwise: the task inherits the process's).
pub(crate) fn task_default() -> Option<Rlimit> {
    let before = STARTED_WITH.get()?;
    Some(Rlimit {
        resource: "nofile".into(),
        soft: before.current,
        hard: before.maximum,
    })
}

/// `rlimits` with [`task_default`] added when they set no open-file limit of their own.
pub(crate) fn with_task_default(mut rlimits: Vec<Rlimit>) -> Vec<Rlimit> {
    if !rlimits.iter().any(|r| r.resource == "nofile") {
        rlimits.extend(task_default());
    }
    rlimits
}

/// About how many descriptors an owner holds for one running task (its cgroup's
/// directories and kept control files, its shim's socket, its logs and their keepers), with
/// room to spare: measured at about 9 on a cgroup-v1 host.
pub const FDS_PER_TASK: u64 = 16;

/// Descriptors an owner keeps free for its own work (connections, checkpoints, logs read
/// for operators), which no launch may take.
pub const FDS_RESERVED: u64 = 64;

/// This process's open descriptors now and its soft limit, if they can be read.
pub fn in_use() -> Option<(u64, u64)> {
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let limit = getrlimit(Resource::Nofile).current?;
    Some((open, limit))
}

/// Room for launches within the open-file limit: a launch takes [`FDS_PER_TASK`] of it, and
/// one that would leave less than [`FDS_RESERVED`] free is refused with why, before it
/// starts, rather than failing halfway with "too many open files".
#[derive(Debug, Clone, Copy)]
pub struct Room {
    open: u64,
    limit: Option<u64>,
}

impl Room {
    /// The room now (unlimited when the limit cannot be read).
    pub fn now() -> Room {
        match in_use() {
            Some((open, limit)) => Room {
                open,
                limit: Some(limit),
            },
            None => Room {
                open: 0,
                limit: None,
            },
        }
    }

    /// Takes room for one more task, or says why there is none.
    pub fn take(&mut self) -> Result<(), String> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        if self.open + FDS_PER_TASK + FDS_RESERVED > limit {
            return Err(format!(
                "the agent is near its open-file limit ({} of {limit} descriptors in use, and a task needs about {FDS_PER_TASK}): raise its limit (ulimit -n), or run fewer tasks on it",
                self.open
            ));
        }
        self.open += FDS_PER_TASK;
        Ok(())
    }
}
