//! troupe-actors: the cluster's entities, built from actors: master, agents, frameworks.
//!
//! Layout (growing with the cluster-core work):
//! * [`protocol`]: the wire types: ids, resources, tasks, their states and legal
//!   transitions.
//! * [`allocator`]: the pure allocation engine: Dominant Resource Fairness between roles
//!   and frameworks, and the offer cycle.
//! * [`status_updates`]: an agent's status-update manager: in order, retried with backoff
//!   until acknowledged, checkpointed.
//! * [`validation`]: the master's judgement of a launch, task by task.
//! * [`events`]: the master's event stream, for applications and the REPL's `watch`.
//! * [`client`]: typed client handles (`MasterClient`, `AgentClient`, `Runner`): the one way
//!   tools and applications talk to the cluster.

pub mod agent;
pub mod allocator;
pub mod client;
pub mod dev;
pub mod events;
pub mod framework;
mod ids;
pub mod master;
pub mod outbox;
pub mod processes;
pub mod protocol;
pub mod runner;
pub mod status_updates;
pub mod validation;

mod tree;
