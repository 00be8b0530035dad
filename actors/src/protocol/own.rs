//! What actors send themselves, or what their own node's actors send them: never on the
//! wire. Each is an `Own` variant of its actor's message enum, opaque outside this crate
//! (its field is private), and serde skips the variant, so a peer can neither make, encode
//! nor decode one. (An actor has one message type, and a local send is checked against it:
//! a separate enum would make every sender name the actor's private type.)

use super::{AgentId, AgentMsg, FrameworkId, MasterMsg, Resources, SchedulerMsg, TaskId};

/// A message an actor's own node sends it, opaque outside this crate (see `Own` variants
/// of [`MasterMsg`], [`AgentMsg`], [`ObserverMsg`], [`SchedulerMsg`]).
#[derive(Debug)]
pub struct Own(pub(crate) ());

/// What the master core's own node sends it (see [`MasterMsg::Own`]).
#[derive(Debug)]
pub struct MasterOwn(pub(crate) MasterOwnMsg);

/// See [`MasterOwn`].
#[derive(Debug)]
pub(crate) enum MasterOwnMsg {
    /// An observer's judgement of its agent.
    AgentHealth {
        /// The agent.
        agent: AgentId,
        /// Whether it is heard from.
        reachable: bool,
        /// Why, in words.
        reason: String,
    },
    /// The allocator's decisions.
    Offers {
        /// The new offers: framework, agent, resources, reservation.
        offers: Vec<(FrameworkId, AgentId, Resources, Option<String>)>,
    },
    /// A connected framework's driver stopped or its node went away.
    FrameworkDown {
        /// Which framework.
        framework: FrameworkId,
        /// The driver's path it was connected through.
        driver: String,
    },
    /// Periodic upkeep: offer timeouts, framework failover timeouts, agents gone for good.
    Tick,
}

impl MasterMsg {
    /// A message of the master core's own node.
    pub(crate) fn own(message: MasterOwnMsg) -> MasterMsg {
        MasterMsg::Own(MasterOwn(message))
    }
}

/// What the agent sends itself (see [`AgentMsg::Own`]).
#[derive(Debug)]
pub struct AgentOwn(pub(crate) AgentOwnMsg);

/// See [`AgentOwn`].
#[derive(Debug)]
pub(crate) enum AgentOwnMsg {
    /// A task's process started, or could not, and why (from the agent's own start of it,
    /// which runs beside the agent's other work).
    Started {
        /// The task.
        task: TaskId,
        /// Its main process's pid, or the reason it did not start.
        result: Result<Option<i32>, String>,
    },
    /// A task's process ended (from the agent's own watchers).
    Exited {
        /// The task.
        task: TaskId,
        /// How.
        reason: troupe_os::ExitReason,
    },
    /// Periodic upkeep: heartbeats, retries of unacknowledged updates.
    Tick,
}

impl AgentMsg {
    /// A message the agent sends itself.
    pub(crate) fn own(message: AgentOwnMsg) -> AgentMsg {
        AgentMsg::Own(AgentOwn(message))
    }
}

/// What a framework's driver sends itself (see [`SchedulerMsg::Own`]).
#[derive(Debug)]
pub struct DriverOwn(pub(crate) DriverOwnMsg);

/// See [`DriverOwn`].
#[derive(Debug)]
pub(crate) enum DriverOwnMsg {
    /// Its timer: subscribe if not subscribed.
    Reconnect,
    /// Its monitor of the master fired.
    MasterDown,
}

impl SchedulerMsg {
    /// A message the driver sends itself.
    pub(crate) fn own(message: DriverOwnMsg) -> SchedulerMsg {
        SchedulerMsg::Own(DriverOwn(message))
    }
}
