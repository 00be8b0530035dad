//! Declarative supervision trees of processes across the cluster.
//!
//! - [`format`]: the spec, one set of serde types that is both the Rust builder and the
//!   TOML file;
//! - [`validate`]: reading a file, every problem at once with its line and column;
//! - [`engine`]: the supervisor of a spec across agents, a pure decision engine (OTP's
//!   strategies, intensity, shutdown order) tested alone;
//! - [`service`]: the spec service on the master's node, which keeps specs running through
//!   the process service, and the [`service::Specs`] handle that reaches it from any node.

pub mod engine;
pub mod format;
pub mod service;
pub mod validate;

pub use format::{Child, Needs, ProcessChild, Shutdown, Spec, SupervisorChild};
pub use validate::{Invalid, Problem, read};
