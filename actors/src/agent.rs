//! The agent: it registers its host's resources with the master, runs each task as a process
//! actor in its own cgroup and sandbox, and reports every state change of its tasks until
//! the framework acknowledges it.
//!
//! Its supervision tree (`rest_for_one`: the core depends on the executors):
//!
//! ```text
//! agent/<id>/supervisor (rest_for_one)
//! ├── executors        (supervisor, one_for_one)
//! │   └── <task-id>    task/<task-id>     one process actor per task (temporary)
//! └── core             agent/<id>         registration, heartbeats, status updates,
//!                                         checkpoint, kills, logs, usage
//! ```
//!
//! The core also removes ended tasks' sandboxes past their time (`gc`).
//!
//! A crash of the core leaves the tasks running: the restarted core reads its checkpoint and
//! finds them again. So does a restarted agent process, which adopts each task's process
//! from the task's own checkpoint (its recorded exit, if it ended meanwhile).

mod core;
pub mod gc;
mod work_dir;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use troupe_runtime::supervisor::{ChildSpec, StartCtx, StartError, Strategy, SupFlags};
use troupe_runtime::{Child, SupervisorRef, SupervisorSpec};

pub use self::core::{AgentArgs, AgentCore};
use crate::protocol::{AgentId, Resources};

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Its id: its name, stable across restarts.
    pub id: AgentId,
    /// The master's address when the master is another node; `None` when it runs on this
    /// node (the embedded cluster).
    pub master: Option<SocketAddr>,
    /// What it offers; `None`: what the host (or the agent's own cgroup) has.
    pub resources: Option<Resources>,
    /// Its attributes, given to frameworks with its offers.
    pub attributes: BTreeMap<String, String>,
    /// Where it keeps its checkpoint and the tasks' sandboxes.
    pub work_dir: PathBuf,
    /// The ports its tasks may be given.
    pub ports: crate::protocol::PortRange,
    /// When ended tasks' sandboxes are removed.
    pub gc: gc::GcPolicy,
}

impl AgentConfig {
    /// An agent `id` working in `work_dir`, with the master on this node.
    pub fn new(id: impl Into<String>, work_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            id: AgentId(id.into()),
            master: None,
            resources: None,
            attributes: BTreeMap::new(),
            work_dir: work_dir.into(),
            ports: Default::default(),
            gc: gc::GcPolicy::default(),
        }
    }

    /// Where the tasks' sandboxes are.
    pub fn sandbox_root(&self) -> PathBuf {
        self.work_dir.join("sandboxes")
    }
}

/// Starts an agent's supervision tree on this node (the node must be started). It
/// registers with the master on its own, and again whenever the master comes back.
pub async fn start(config: AgentConfig) -> Result<SupervisorRef, StartError> {
    if !troupe_runtime::addr::valid_path(&format!("agent/{}", config.id))
        || config.id.0.contains('/')
    {
        return Err(StartError::Spawn(format!(
            "invalid agent id {:?}: use letters, digits, `-`, `_` and `.`",
            config.id.0
        )));
    }
    std::fs::create_dir_all(config.sandbox_root()).map_err(|e| {
        StartError::Spawn(format!(
            "cannot create the work directory {}: {e}",
            config.work_dir.display()
        ))
    })?;
    let executors = Child::supervisor(
        ChildSpec::supervisor("executors"),
        SupervisorSpec::new(
            SupFlags::new(Strategy::OneForOne).intensity(1000, Duration::from_secs(1)),
        ),
    );
    let id = config.id.clone();
    let core = Child::new(
        ChildSpec::worker("core").start("agent", Default::default()),
        move |ctx: StartCtx| {
            let config = config.clone();
            async move {
                let args = AgentArgs {
                    config,
                    parent: ctx.supervisor().clone(),
                };
                ctx.spawn(AgentCore, args).await
            }
        },
    );
    let tree = SupervisorRef::start(
        SupervisorSpec::new(
            SupFlags::new(Strategy::RestForOne).intensity(5, Duration::from_secs(30)),
        )
        .child(executors)
        .child(core),
    )
    .await?;
    // Named, so that the inspector and `troupe tree` show whose it is.
    let _ = troupe_runtime::register_cell(&format!("agent/{id}/supervisor"), &tree.cell());
    Ok(tree)
}
