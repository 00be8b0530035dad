//! What the master tells those who look: its state and views of agents, frameworks and
//! tasks (`troupe ps`, `/state`), its health, and its event stream.

use serde::{Deserialize, Serialize};

use super::{
    AgentId, AgentInfo, FrameworkId, FrameworkInfo, OfferInfo, Resources, TaskId, TaskStatus,
};

/// A task as the master tracks it (what `troupe ps` lists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task.
    pub id: TaskId,
    /// Its name.
    pub name: String,
    /// Its framework.
    pub framework: FrameworkId,
    /// Its agent.
    pub agent: Option<AgentId>,
    /// Its state now, with reason, source and time.
    pub status: TaskStatus,
    /// What it holds.
    pub resources: Resources,
    /// Its command line.
    pub command: Vec<String>,
    /// When it was launched (ms since the Unix epoch).
    pub launched_ms: u64,
    /// Its main process's pid, once its agent said it runs.
    #[serde(default)]
    pub pid: Option<i32>,
}

/// An agent as the master sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// What it registered with.
    pub info: AgentInfo,
    /// Whether its observer hears from it.
    pub reachable: bool,
    /// What its tasks and outstanding offers hold.
    pub allocated: Resources,
}

/// A framework as the master sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkView {
    /// Its id.
    pub id: FrameworkId,
    /// What it subscribed with.
    pub info: FrameworkInfo,
    /// Whether it is connected.
    pub connected: bool,
    /// Its dominant share within its role.
    pub share: f64,
    /// Why it gets no offers now, if it does not (empty otherwise).
    pub not_offered: Vec<String>,
}

/// The master's state, as `troupe ps` and `/state` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The master's node.
    pub master: String,
    /// The agents.
    pub agents: Vec<AgentView>,
    /// The frameworks.
    pub frameworks: Vec<FrameworkView>,
    /// The tasks: every live one, and the most recent terminal ones.
    pub tasks: Vec<TaskView>,
    /// Outstanding offers.
    pub offers: Vec<OfferInfo>,
}

/// Where a task runs, for tools that talk to it directly (logs, signals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskLocation {
    /// The task as the master sees it.
    pub task: TaskView,
    /// Its agent's node name and address, when it reached one.
    pub agent: Option<AgentInfo>,
}

/// The master's summary of itself, cheap enough for health checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterHealth {
    /// The master's node.
    pub node: String,
    /// Agents registered, and how many of them are reachable.
    pub agents: usize,
    /// See `agents`.
    pub agents_reachable: usize,
    /// Agents admitted in the registry: after a master restart, until as many have
    /// registered again, the master's books are still being rebuilt.
    #[serde(default)]
    pub agents_admitted: usize,
    /// Frameworks known, and how many are connected.
    pub frameworks: usize,
    /// See `frameworks`.
    pub frameworks_connected: usize,
    /// Tasks not yet ended.
    pub active_tasks: usize,
    /// Outstanding offers.
    pub offers: usize,
    /// Subscribers of the event stream.
    pub event_subscribers: usize,
}

/// Something that happened in the cluster, as the master's event stream tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A task was launched or changed state.
    Task {
        /// The task as the master now sees it.
        task: TaskView,
    },
    /// An agent registered (first time or again).
    AgentRegistered {
        /// What it registered with.
        agent: AgentInfo,
    },
    /// An agent's observer stopped hearing from it.
    AgentUnreachable {
        /// The agent.
        agent: AgentId,
        /// Why, in words.
        reason: String,
    },
    /// An agent was removed for good.
    AgentRemoved {
        /// The agent.
        agent: AgentId,
    },
    /// A framework subscribed (first time or again).
    FrameworkSubscribed {
        /// The framework.
        framework: FrameworkId,
        /// Its name.
        name: String,
    },
    /// A framework's driver went away; it has its failover timeout to come back.
    FrameworkDisconnected {
        /// The framework.
        framework: FrameworkId,
    },
    /// A framework was removed and its tasks killed.
    FrameworkRemoved {
        /// The framework.
        framework: FrameworkId,
        /// Why.
        reason: String,
    },
}

/// What a subscriber of the master's event stream receives.
#[derive(Debug, Clone, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum EventMsg {
    /// One event.
    Event {
        /// Its number in this master's stream, from 1; a gap means events were lost to a
        /// subscriber that could not keep up, and a restart of the master starts again.
        seq: u64,
        /// When it happened (ms since the Unix epoch).
        at_ms: u64,
        /// What happened.
        event: ClusterEvent,
    },
}
