//! Why the cluster's actors refuse a request, as data: each reply that can be refused
//! carries one of these (thiserror for the words, serde for the wire), so that a caller
//! tells the cases apart without reading the words.

use serde::{Deserialize, Serialize};

use super::{AgentId, FrameworkId, TaskId, TaskState};

/// Why the master refused a request about a task (a kill, where it runs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TaskRefused {
    /// The master does not know it (it may still wait in its framework, say the runner's
    /// queue).
    #[error("no task {task} is known to the master")]
    Unknown {
        /// The task.
        task: TaskId,
    },
    /// It ended already.
    #[error("task {task} already ended: {state}")]
    Ended {
        /// The task.
        task: TaskId,
        /// How.
        state: TaskState,
    },
    /// It never reached an agent, so nothing can be killed.
    #[error("task {task} has no agent to kill it")]
    NoAgent {
        /// The task.
        task: TaskId,
    },
}

/// Why the master refused an agent's registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RegistrationRefused {
    /// It was removed for good (unreachable too long).
    #[error("agent {agent} was removed from the cluster; start it with a fresh id")]
    Removed {
        /// The agent.
        agent: AgentId,
    },
    /// Its resources are not valid (negative, not numbers).
    #[error("invalid resources {resources}")]
    InvalidResources {
        /// What it offered, in words.
        resources: String,
    },
    /// Another agent, connected, has its name.
    #[error(
        "the name {agent} is taken by a connected agent at {addr} (host {host}, work directory {work_dir}); stop that agent first or give this one another --name"
    )]
    NameTaken {
        /// The name.
        agent: AgentId,
        /// The connected agent's address.
        addr: String,
        /// Its host.
        host: String,
        /// Its work directory.
        work_dir: String,
    },
}

/// Why the master refused a framework's subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SubscribeRefused {
    /// It has no name.
    #[error("a framework needs a name")]
    NoName,
    /// Its role is not a role name.
    #[error(
        "invalid role {role:?}: use `*` or names of letters, digits, `-`, `_` and `.` joined by `/`"
    )]
    InvalidRole {
        /// The role.
        role: String,
    },
    /// Its driver's path is not a path.
    #[error("invalid driver path {path:?}")]
    InvalidDriver {
        /// The path.
        path: String,
    },
    /// Its id is not one an actor path can hold.
    #[error("invalid framework id {id:?}")]
    InvalidId {
        /// The id.
        id: String,
    },
    /// Its id is of a removed framework.
    #[error(
        "framework {framework} was removed (torn down, or its failover timeout passed); subscribe without an id"
    )]
    Removed {
        /// The framework.
        framework: FrameworkId,
    },
    /// It subscribed again with another role.
    #[error("a framework cannot change its role when it subscribes again")]
    RoleChanged,
}

/// Why the master refused an event subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum EventsRefused {
    /// The subscriber's path is not a path.
    #[error("{path:?} is not a valid path")]
    InvalidPath {
        /// The path.
        path: String,
    },
    /// The master serves as many subscribers as it will.
    #[error("the master already serves {limit} event subscribers")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// The subscriber could not be watched (without a watch, nothing would end it).
    #[error("cannot watch the subscriber {path}: {cause}")]
    CannotWatch {
        /// The path.
        path: String,
        /// Why.
        cause: String,
    },
}
