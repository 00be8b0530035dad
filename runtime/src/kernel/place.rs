//! The caller's side of placing a monitor on another node's actor and of making a link:
//! the requests to this node's kernel and the peer's, and the waits that let `monitor` and
//! `link` return only once everything is in place.

use tokio::sync::oneshot;

use super::{KernelMsg, KernelWire, LinkKey, LinkPlan, LinkedHere, LocalReq, Remote, kernel_path};
use crate::addr::{Addr, AddrError};
use crate::codec::{Reply, ReplyError};
use crate::node::Node;
use crate::signal::{DownSink, LINK_TIMEOUT, LinkError, Ref};
use ractor::ActorRef;

/// Places a monitor on an actor of another node and returns once the target's kernel has it
/// in place, so that nothing the caller sends afterwards can stop the target unobserved.
pub(crate) async fn place_remote_monitor(
    node: &Node,
    kernel: &ActorRef<KernelMsg>,
    id: Ref,
    target_node: String,
    path: String,
    sink: DownSink,
) {
    let (recorded, connected) = oneshot::channel();
    let _ = kernel.cast(KernelMsg::Local(LocalReq::WatchRemote {
        id: id.clone(),
        node: target_node.clone(),
        path: path.clone(),
        sink,
        recorded,
    }));
    if !matches!(connected.await, Ok(true)) {
        return;
    }
    let remote = Addr::<KernelMsg>::on(target_node.clone(), kernel_path(&target_node));
    let placed = remote
        .call(
            |reply| {
                KernelMsg::Wire(KernelWire::Monitor {
                    id,
                    path,
                    watcher: node.name().to_string(),
                    reply,
                })
            },
            LINK_TIMEOUT,
        )
        .await;
    // On failure the node is gone or going: the recorded watch fires `NodeDown`.
    if let Err(e) = placed {
        tracing::debug!(peer = %target_node, cause = %e, "monitor placement unconfirmed");
    }
}

/// Links a local actor with a resolved peer. The local end is recorded first, so that an
/// exit racing the confirmation is not lost, and the kernel itself asks the peer's kernel for
/// the other end, so that the request goes ahead of any exit of the local end. Returns once
/// both ends are in place: the caller may stop either end at once and the other hears it.
pub(crate) async fn establish_link(
    node: &Node,
    kernel: &ActorRef<KernelMsg>,
    plan: LinkPlan,
) -> Result<(), LinkError> {
    let LinkPlan {
        id,
        local,
        local_path,
        peer_path,
        peer,
    } = plan;
    let cast = |req| {
        let _ = kernel.cast(KernelMsg::Local(req));
    };
    let local_gone = |path: String| {
        LinkError::Addr(AddrError::NoSuchActor {
            path,
            node: Some(node.name().to_string()),
        })
    };
    if peer.node == node.name() {
        let (placed, recorded) = oneshot::channel();
        cast(LocalReq::LinkHere {
            id,
            initiator: (local, local_path.clone()),
            other: (peer.cell, peer_path.clone()),
            placed,
        });
        return match recorded.await {
            Ok(LinkedHere::Both) => Ok(()),
            Ok(LinkedHere::OtherGone) => Err(local_gone(peer_path)),
            Ok(LinkedHere::InitiatorGone) => Err(local_gone(local_path)),
            Err(_) => Err(LinkError::NoNode),
        };
    }
    let (placed, recorded) = oneshot::channel();
    let (reply, answer) = Reply::channel();
    cast(LocalReq::LinkEnd {
        key: LinkKey {
            id: id.clone(),
            initiator: true,
        },
        cell: local,
        path: local_path.clone(),
        peer: Remote {
            node: peer.node.clone(),
            path: peer_path.clone(),
        },
        reply,
        placed,
    });
    match recorded.await {
        Ok(true) => {}
        Ok(false) => return Err(local_gone(local_path)),
        Err(_) => return Err(LinkError::NoNode),
    }
    let failed = match tokio::time::timeout(LINK_TIMEOUT, answer.recv()).await {
        Ok(Ok(true)) => return Ok(()),
        Ok(Ok(false)) => AddrError::NoSuchActor {
            path: peer_path,
            node: Some(peer.node),
        },
        Ok(Err(ReplyError::Codec(cause))) => AddrError::Codec {
            path: peer_path,
            cause,
        },
        Ok(Err(ReplyError::Dropped)) => AddrError::NodeUnreachable {
            path: peer_path,
            node: peer.node,
            cause: "the link request went unanswered: the node is gone or going".into(),
        },
        Err(_) => AddrError::Timeout {
            path: kernel_path(&peer.node),
            after: LINK_TIMEOUT,
        },
    };
    cast(LocalReq::Unlink { id });
    Err(LinkError::Addr(failed))
}
