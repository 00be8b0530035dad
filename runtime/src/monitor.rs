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

use std::time::Duration;

use ractor::{ActorRef, Message};

use crate::addr::{Addr, AddrError};
use crate::kernel::{self, LocalReq};
use crate::node::Node;
pub(crate) use crate::signal::DownSink;
pub use crate::signal::{Down, DownReason, Exit, LINK_TIMEOUT, LinkError, Ref};

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

/// Monitors an actor of this node by its cell, whatever its message type (an actor with
/// no path, say); `on_down` runs exactly once when it is gone. Returns once the monitor is
/// in place.
pub async fn monitor_cell(
    cell: &ractor::ActorCell,
    on_down: impl FnOnce(Down) + Send + 'static,
) -> Result<Ref, LinkError> {
    let node = Node::current().ok_or(LinkError::NoNode)?;
    let kernel = node.kernel().ok_or(LinkError::NoNode)?;
    let id = Ref::new(node.name());
    let sink: DownSink = Box::new(on_down);
    let (placed, done) = tokio::sync::oneshot::channel();
    let _ = kernel.cast(kernel::KernelMsg::Local(LocalReq::Watch {
        id: id.clone(),
        cell: cell.clone(),
        path: cell.get_id().to_string(),
        sink,
        placed,
    }));
    let _ = done.await;
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
