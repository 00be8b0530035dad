//! What monitors and links deliver, and why: [`Down`], [`Exit`], their [`DownReason`], the
//! [`Ref`] that names each monitor and link. A leaf below the kernel (which keeps them)
//! and `monitor` (the public face, which re-exports them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::addr::AddrError;

/// Why a monitored actor is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownReason {
    /// It stopped on its own without a reason, or with reason `normal`.
    Normal,
    /// It was asked to stop with reason `shutdown` (as a supervisor does).
    Shutdown,
    /// It failed: a handler returned an error or panicked, or it stopped with another reason.
    Error(String),
    /// It was killed.
    Killed,
    /// There was no actor at the path when the monitor was placed.
    NoSuchActor,
    /// Its node disconnected or was declared failed.
    NodeDown,
    /// The monitor (or link) itself was lost, not the actor: the kernel that held it
    /// restarted after a failure. The actor may still run; monitor it again to watch it.
    Lost(String),
}

impl DownReason {
    /// Reads a ractor stop reason.
    pub fn from_stop_reason(reason: Option<&str>) -> DownReason {
        match reason {
            None | Some("normal") => DownReason::Normal,
            Some("killed") => DownReason::Killed,
            Some("noconnection") => DownReason::NodeDown,
            Some("noproc") => DownReason::NoSuchActor,
            Some(r) if r.starts_with("lost: ") => DownReason::Lost(r["lost: ".len()..].to_string()),
            Some(r) if r == "shutdown" || r.starts_with("shutdown:") => DownReason::Shutdown,
            Some(r) => DownReason::Error(r.to_string()),
        }
    }

    /// The ractor stop reason that reads back as this reason.
    pub fn to_stop_reason(&self) -> String {
        match self {
            DownReason::Normal => "normal".into(),
            DownReason::Shutdown => "shutdown".into(),
            DownReason::Error(text) => text.clone(),
            DownReason::Killed => "killed".into(),
            DownReason::NoSuchActor => "noproc".into(),
            DownReason::NodeDown => "noconnection".into(),
            DownReason::Lost(why) => format!("lost: {why}"),
        }
    }

    /// Whether this is a normal exit, which links do not propagate.
    pub fn is_normal(&self) -> bool {
        matches!(self, DownReason::Normal)
    }
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::Normal => f.write_str("normal"),
            DownReason::Shutdown => f.write_str("shutdown"),
            DownReason::Error(text) => write!(f, "error: {text}"),
            DownReason::Killed => f.write_str("killed"),
            DownReason::NoSuchActor => f.write_str("no such actor"),
            DownReason::NodeDown => f.write_str("node down"),
            DownReason::Lost(why) => write!(f, "monitor lost: {why}"),
        }
    }
}

/// Identifies one monitor or link, unique in the cluster: the node that made it and a
/// sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ref {
    /// The node that created the reference.
    pub node: String,
    /// Its sequence number on that node.
    pub seq: u64,
}

static NEXT_REF: AtomicU64 = AtomicU64::new(1);

impl Ref {
    pub(crate) fn new(node: &str) -> Ref {
        Ref {
            node: node.to_string(),
            seq: NEXT_REF.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// The one message a monitor delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Down {
    /// The monitor that fired.
    pub monitor: Ref,
    /// The monitored path.
    pub path: String,
    /// The node the actor lived on.
    pub node: String,
    /// Why it is gone.
    pub reason: DownReason,
}

/// The message a linked actor that traps exits receives when its peer stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The link.
    pub link: Ref,
    /// The peer's path.
    pub path: String,
    /// The peer's node.
    pub node: String,
    /// Why the peer stopped.
    pub reason: DownReason,
}

/// Why a monitor or link could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No node runs in this process.
    #[error("no node runs in this process: start one with Node::start")]
    NoNode,
    /// The peer could not be reached or does not exist.
    #[error(transparent)]
    Addr(#[from] AddrError),
}

/// A callback that receives a monitor's `Down`, exactly once.
pub(crate) type DownSink = Box<dyn FnOnce(Down) + Send>;

/// How long [`crate::monitor::link`] waits for the peer's node to confirm.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(5);
