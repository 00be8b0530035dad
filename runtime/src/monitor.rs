//! Remote monitors and links: the Erlang contract across nodes.
//!
//! * [`monitor`] delivers exactly one [`Down`] when the monitored actor stops, whatever the
//!   cause: its exit (normal, shutdown, error, killed), a monitor placed on a path with no
//!   actor (answered at once, like Erlang's `noproc`), or its node going away.
//! * [`link`] ties two actors together: when one stops abnormally the other is stopped with
//!   the same reason, unless it traps exits ([`trap_exit`]), in which case it receives an
//!   [`Exit`] message instead. A normal exit does not propagate.
//!
//! The bookkeeping lives in each node's kernel actor (`crate::kernel`); this module is the
//! public face.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{ActorRef, Message};
use serde::{Deserialize, Serialize};

use crate::addr::{Addr, AddrError};
use crate::kernel::{self, LocalReq};
use crate::node::Node;

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

/// Monitors the actor at `target`; `on_down` runs exactly once when it is gone. Returns once
/// the monitor is in place, so a message sent afterwards cannot stop the target unobserved.
pub async fn monitor_with<M: Message>(
    target: &Addr<M>,
    on_down: impl FnOnce(Down) + Send + 'static,
) -> Result<Ref, LinkError> {
    let node = Node::current().ok_or(LinkError::NoNode)?;
    let kernel = node.kernel().ok_or(LinkError::NoNode)?;
    let id = Ref::new(node.name());
    let path = target.path().to_string();
    let sink: DownSink = Box::new(on_down);
    let fire_now = |reason: DownReason, on: String, sink: DownSink| {
        sink(Down {
            monitor: id.clone(),
            path: path.clone(),
            node: on,
            reason,
        })
    };
    match target.locate().await {
        Ok(t) if t.node == node.name() => {
            let (placed, done) = tokio::sync::oneshot::channel();
            let _ = kernel.cast(kernel::KernelMsg::Local(LocalReq::Watch {
                id: id.clone(),
                cell: t.cell,
                path,
                sink,
                placed,
            }));
            let _ = done.await;
        }
        Ok(t) => {
            node.session_settled(&t.node, SESSION_SETTLES_WITHIN).await;
            kernel::place_remote_monitor(&node, &kernel, id.clone(), t.node, path, sink).await;
        }
        Err(AddrError::NoSuchActor { .. }) => {
            let on = target.node().unwrap_or(node.name()).to_string();
            fire_now(DownReason::NoSuchActor, on, sink);
        }
        Err(
            AddrError::NodeUnreachable { .. }
            | AddrError::CookieRefused { .. }
            | AddrError::Timeout { .. },
        ) => {
            let on = target.node().unwrap_or("?").to_string();
            fire_now(DownReason::NodeDown, on, sink);
        }
        Err(other) => return Err(other.into()),
    }
    Ok(id)
}

/// Monitors the actor at `target`; the watcher receives one [`Down`] as a message.
pub async fn monitor<M: Message, W: Message + From<Down>>(
    target: &Addr<M>,
    watcher: &ActorRef<W>,
) -> Result<Ref, LinkError> {
    let watcher = watcher.clone();
    monitor_with(target, move |down| {
        let _ = watcher.cast(W::from(down));
    })
    .await
}

/// Monitors the actor at `target`; the returned channel receives its [`Down`].
pub async fn monitor_channel<M: Message>(
    target: &Addr<M>,
) -> Result<(Ref, tokio::sync::oneshot::Receiver<Down>), LinkError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let id = monitor_with(target, move |down| {
        let _ = tx.send(down);
    })
    .await?;
    Ok((id, rx))
}

/// Removes a monitor; its `Down` will not be delivered.
pub fn demonitor(monitor: &Ref) {
    if let Some(kernel) = Node::current().and_then(|n| n.kernel()) {
        let _ = kernel.cast(kernel::KernelMsg::Local(LocalReq::Unwatch {
            id: monitor.clone(),
        }));
    }
}

/// Makes `actor` receive an [`Exit`] message when a linked actor stops, instead of being
/// stopped with it.
pub fn trap_exit<M: Message + From<Exit>>(actor: &ActorRef<M>) -> Result<(), LinkError> {
    let kernel = Node::current()
        .and_then(|n| n.kernel())
        .ok_or(LinkError::NoNode)?;
    let target = actor.clone();
    let _ = kernel.cast(kernel::KernelMsg::Local(LocalReq::TrapExit {
        cell: actor.get_cell(),
        sink: Box::new(move |exit| {
            let _ = target.cast(M::from(exit));
        }),
    }));
    Ok(())
}

/// How long a watch or link of an actor found on a peer waits for that peer's session to
/// be recorded as up (it can be found a moment before), before taking the peer for down.
const SESSION_SETTLES_WITHIN: Duration = Duration::from_secs(1);

/// How long [`link`] waits for the peer's node to confirm.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// Links the local actor `local`, registered under `local_path` (or any label for it), with
/// the actor at `peer`. Fails with `NoSuchActor` when there is none.
pub async fn link<A: Message, B: Message>(
    local: &ActorRef<A>,
    local_path: &str,
    peer: &Addr<B>,
) -> Result<Ref, LinkError> {
    let node = Node::current().ok_or(LinkError::NoNode)?;
    let kernel = node.kernel().ok_or(LinkError::NoNode)?;
    let target = peer.locate().await?;
    if target.node != node.name() {
        node.session_settled(&target.node, SESSION_SETTLES_WITHIN)
            .await;
    }
    let id = Ref::new(node.name());
    kernel::establish_link(
        &node,
        &kernel,
        kernel::LinkPlan {
            id: id.clone(),
            local: local.get_cell(),
            local_path: local_path.to_string(),
            peer_path: peer.path().to_string(),
            peer: target,
        },
    )
    .await?;
    Ok(id)
}

/// Removes a link at both ends.
pub fn unlink(link: &Ref) {
    if let Some(kernel) = Node::current().and_then(|n| n.kernel()) {
        let _ = kernel.cast(kernel::KernelMsg::Local(LocalReq::Unlink {
            id: link.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_round_trip() {
        for r in [
            DownReason::Normal,
            DownReason::Shutdown,
            DownReason::Error("boom".into()),
            DownReason::Killed,
            DownReason::NoSuchActor,
            DownReason::NodeDown,
        ] {
            assert_eq!(DownReason::from_stop_reason(Some(&r.to_stop_reason())), r);
        }
        assert_eq!(DownReason::from_stop_reason(None), DownReason::Normal);
    }
}
