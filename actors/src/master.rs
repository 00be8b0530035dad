//! The master: it knows the agents and the frameworks, offers the agents' free resources to
//! the frameworks by DRF, validates and forwards their launches, and tracks every task.
//!
//! Its supervision tree (`rest_for_one`: a child's restart restarts those after it, since
//! they depend on it):
//!
//! ```text
//! master (supervisor, rest_for_one)          master/supervisor
//! ├── allocator        master/allocator         the DRF engine and the offer cycle
//! ├── observers        (supervisor, one_for_one)
//! │   └── agent/<id>   master/observer/<id>     one per agent: heartbeats, failure detector
//! └── core             master                   agent and framework registries, offers,
//!                                               tasks, the registry file
//! ```
//!
//! The core is the front door: agents, frameworks and operators talk to `master`. When the
//! core restarts, it resets the allocator, reads the registry file, and asks every admitted
//! agent to register again; frameworks subscribe again when their driver sees the core go.

mod allocator;
mod core;
mod observer;
mod registry;
mod text;

use std::path::PathBuf;
use std::time::Duration;

use troupe_runtime::detector::DetectorConfig;
use troupe_runtime::supervisor::StartError;
use troupe_runtime::supervisor::{ChildSpec, Strategy, SupFlags};
use troupe_runtime::{Child, SupervisorRef, SupervisorSpec};

pub use self::allocator::{ALLOCATOR_PATH, Allocator, AllocatorMsg, AllocatorStats};
pub use self::core::{CoreArgs, MasterCore, describe_not_offered, valid_role};
pub use self::observer::{AGENT_HEARTBEAT, Observer, ObserverArgs, observer_path};
pub use self::registry::{Facts, REMOVED_FRAMEWORKS_KEPT, Registry, RegistryError};

/// The master core's path.
pub const MASTER_PATH: &str = "master";

/// How a master runs.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// The registry file; `None` keeps the durable facts in memory only.
    pub registry: Option<PathBuf>,
    /// The time between periodic allocation cycles (a cycle also runs soon after any
    /// change that frees resources).
    pub allocation_interval: Duration,
    /// How long an offer stays valid; `None`: until used, declined or rescinded.
    pub offer_timeout: Option<Duration>,
    /// How agents' silence is judged.
    pub detector: DetectorConfig,
    /// How long an unreachable agent's tasks stay `Unreachable` before they are `Gone`.
    pub agent_gone_after: Duration,
    /// How many terminal tasks are kept for `troupe ps --all` and reconciliation.
    pub completed_tasks_kept: usize,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            registry: None,
            allocation_interval: Duration::from_secs(1),
            offer_timeout: None,
            detector: DetectorConfig::default(),
            agent_gone_after: Duration::from_secs(600),
            completed_tasks_kept: 10_000,
        }
    }
}

/// Starts the master's supervision tree on this node (the node must be started). The core
/// answers at [`MASTER_PATH`] once this returns.
pub async fn start(config: MasterConfig) -> Result<SupervisorRef, StartError> {
    // A corrupt registry must stop the start with its reason, not be overwritten.
    Registry::open(config.registry.as_deref()).map_err(|e| StartError::Spawn(e.to_string()))?;
    let interval = config.allocation_interval;
    let allocator = Child::new(
        ChildSpec::worker("allocator").start("allocator", Default::default()),
        move |ctx: troupe_runtime::supervisor::StartCtx| async move {
            ctx.spawn(Allocator { interval }, ()).await
        },
    );
    let observers = Child::supervisor(
        ChildSpec::supervisor("observers"),
        SupervisorSpec::new(
            SupFlags::new(Strategy::OneForOne).intensity(100, Duration::from_secs(10)),
        ),
    );
    let core = Child::new(
        ChildSpec::worker("core").start("master", Default::default()),
        move |ctx: troupe_runtime::supervisor::StartCtx| {
            let config = config.clone();
            async move {
                let args = CoreArgs {
                    config,
                    parent: ctx.supervisor().clone(),
                };
                ctx.spawn(MasterCore, args).await
            }
        },
    );
    let tree = SupervisorRef::start(
        SupervisorSpec::new(
            SupFlags::new(Strategy::RestForOne).intensity(5, Duration::from_secs(30)),
        )
        .child(allocator)
        .child(observers)
        .child(core),
    )
    .await?;
    // Named, so that the inspector and `troupe tree` show what it is.
    let _ = troupe_runtime::register_cell(SUPERVISOR_PATH, &tree.cell());
    Ok(tree)
}

/// The path of the master's top supervisor.
pub const SUPERVISOR_PATH: &str = "master/supervisor";
