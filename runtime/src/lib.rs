//! troupe-runtime: the Erlang-like core every troupe entity stands on.
//!
//! Layout:
//! * [`node`]: one node per OS process; ractor_cluster's `NodeServer` in Isolated mode, the
//!   peer table, on-demand connection, node up/down events.
//! * [`addr`]: location-transparent, typed addresses ([`Addr`]) over paths registered in
//!   ractor's process groups.
//! * [`monitor`]: remote monitors (exactly one [`Down`]) and links with exit trapping.
//! * [`codec`]: the wire form of messages (MessagePack with named fields), the [`Reply`]
//!   port of calls, and decoding that never panics on foreign bytes.
//! * [`cookie`]: the cluster cookie, from a flag, the environment or a cookie file.
//! * [`detector`]: the phi-accrual failure detector, pure; nodes judge their peers' heartbeats
//!   with it, and the master its agents'.
//! * [`ping`]: the ping server every node runs.
//! * [`heartbeat`]: heartbeats between connected nodes; a silent peer is declared down.
//! * [`inbox`]: an actor at a path whose messages come out of a channel.
//! * [`inspector`]: the per-node inspector and its snapshot of the actor tree.
//! * [`spawn`]: spawnable kinds of actors, and starting one on any node.
//! * [`supervisor`]: OTP supervisors; the decisions in a pure core, carried out by an actor.
//! * [`text`]: the text form of messages, for the REPL's `send` and `call`.
//! * `kernel` (private): the per-node actor that carries monitors and links across nodes.
//! * [`signal`]: what monitors and links deliver ([`Down`], [`Exit`]) and why.
//! * [`lifecycle`]: start arguments, shutdown, and stopping an actor, below supervisors and
//!   the spawner.
//! * [`system`]: the node's services under the node supervisor; `Node::start` and
//!   `Node::stop`.
//!
//! Floors, each importing only those below it (`../shared/tools/modcycles .` checks that no
//! module imports one above it):
//!
//! ```text
//! system                        starts and stops the node services (Node::start, ::stop)
//! inspector                     snapshots, stop/kill/text by path
//! supervisor                    OTP supervisors (remote children through the spawner)
//! spawn  ping  heartbeat        node services
//! monitor                       the public face of monitors and links
//! kernel                        monitors and links across nodes
//! signal  inbox  text           what monitors deliver; inboxes; messages as text
//! addr  lifecycle               paths, resolution, sends and calls; how actors stop
//! node                          the transport: server, sessions, channels, peers, endpoint
//! codec  cookie  detector       the wire form, the cookie, the phi-accrual detector
//! ```
//!
//! Making a message type remote takes one derive:
//!
//! ```ignore
//! #[derive(serde::Serialize, serde::Deserialize, troupe_runtime::RemoteMessage)]
//! enum EchoMsg {
//!     Echo { text: String, reply: troupe_runtime::Reply<String> },
//! }
//! ```
//!
//! The guarantees (ordering, delivery, what a `Down` promises, what a timeout means) are
//! written down in `docs/runtime-semantics.md`.

// Lets `#[derive(RemoteMessage)]` name this crate from inside it, too.
extern crate self as troupe_runtime;

pub mod addr;
pub mod codec;
pub mod cookie;
pub mod detector;
pub mod heartbeat;
pub mod inbox;
pub mod inspector;
mod kernel;
pub mod lifecycle;
pub mod monitor;
pub mod node;
pub mod ping;
pub mod signal;
pub mod spawn;
pub mod supervisor;
pub mod system;
pub mod text;

pub use addr::{Addr, AddrError, SendError, register, register_cell, unregister, unregister_cell};
pub use codec::{DecodeStats, Reply, ReplyReceiver, decode_stats};
pub use cookie::Cookie;
pub use heartbeat::HeartbeatConfig;
pub use monitor::{
    Down, DownReason, Exit, LinkError, Ref, demonitor, link, monitor, monitor_cell,
    monitor_channel, monitor_with, trap_exit, unlink,
};
pub use node::channel::ChannelInfo;
pub use node::{ChannelConfig, ConnectError, Node, NodeConfig, NodeError, NodeEvent, Transport};
pub use ping::{PingMsg, Pong, ping_path};
pub use supervisor::{
    Child, ChildSpec, StartCtx, StartOutcome, SupFlags, SupervisorRef, SupervisorSpec,
};
pub use troupe_macros::RemoteMessage;

/// Re-exported so that `#[derive(RemoteMessage)]` and users agree on one ractor.
pub use ractor;
