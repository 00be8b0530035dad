//! The node kernel: the actor behind monitors and links, one per node at
//! `node/<name>/kernel` (Erlang's net kernel plays this part).
//!
//! It watches local actors with ractor monitors and keeps four tables:
//!
//! * local monitors: a watcher on this node, a target on this node;
//! * served monitors: a watcher on another node, a target on this node; when the target
//!   stops, a `Down` goes to the watcher's kernel;
//! * remote monitors: a watcher on this node, a target on another node; fired by the
//!   target's kernel, or with `NodeDown` when that node disconnects;
//! * link ends: a local actor linked to a peer here or on another node.
//!
//! Every entry is removed when it fires, which is what makes a `Down` arrive exactly once:
//! whichever of "the target's kernel reported it" and "its node went down" comes first
//! wins, and the other finds nothing.

use std::collections::HashMap;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::addr::{Addr, Target};
use crate::codec::{self, Reply};
use crate::node::{Node, NodeEvent};
use crate::signal::{Down, DownReason, DownSink, Exit, Ref};

mod place;

pub(crate) use place::{establish_link, place_remote_monitor};

/// The path of a node's kernel.
pub(crate) fn kernel_path(node: &str) -> String {
    format!("node/{node}/kernel")
}

/// What kernels say to each other.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum KernelWire {
    /// Watch the local actor at `path` for the kernel of `watcher`.
    Monitor {
        /// The monitor.
        id: Ref,
        /// The path to watch.
        path: String,
        /// The watcher's node.
        watcher: String,
        /// Answered once the monitor is in place (`true`) or the path found empty (`false`,
        /// and a `Down` with `NoSuchActor` is on its way).
        reply: Reply<bool>,
    },
    /// Forget a served monitor.
    Demonitor {
        /// The monitor.
        id: Ref,
    },
    /// A served monitor fired.
    Down {
        /// The monitor.
        id: Ref,
        /// The path that was watched.
        path: String,
        /// The node it lived on.
        node: String,
        /// Why it is gone.
        reason: DownReason,
    },
    /// Link the local actor at `path` with `peer_path` on `peer_node`; answers whether the
    /// actor exists.
    Link {
        /// The link.
        id: Ref,
        /// The local end's path.
        path: String,
        /// The initiating end's node.
        peer_node: String,
        /// The initiating end's path.
        peer_path: String,
        /// `true` when linked, `false` when there is no actor at `path`.
        reply: Reply<bool>,
    },
    /// The other end of a link stopped.
    LinkExit {
        /// The link.
        id: Ref,
        /// Whether the end that stopped is the link's initiator.
        from_initiator: bool,
        /// Its path.
        path: String,
        /// Its node.
        node: String,
        /// Why it stopped.
        reason: DownReason,
    },
    /// Remove a link.
    Unlink {
        /// The link.
        id: Ref,
    },
    /// The kernel of `node` restarted after a failure: the monitors and links this node
    /// holds through it are lost.
    Restarted {
        /// The node.
        node: String,
    },
}

/// A callback that receives exit signals for an actor that traps exits.
pub(crate) type ExitSink = Box<dyn Fn(Exit) + Send>;

/// Requests from this node.
pub(crate) enum LocalReq {
    /// Monitor a local actor for a local watcher; `placed` is answered once it is.
    Watch {
        id: Ref,
        cell: ActorCell,
        path: String,
        sink: DownSink,
        placed: oneshot::Sender<()>,
    },
    /// Record a monitor of an actor on another node for a local watcher; `recorded` answers
    /// whether the node is connected (when not, the `Down` has fired already).
    WatchRemote {
        id: Ref,
        node: String,
        path: String,
        sink: DownSink,
        recorded: oneshot::Sender<bool>,
    },
    /// Remove a monitor made here.
    Unwatch { id: Ref },
    /// Deliver exit signals to this actor as messages.
    TrapExit { cell: ActorCell, sink: ExitSink },
    /// Record the local end of a link with an actor on another node, then ask that node's
    /// kernel for the other end (answering `reply`): the request leaves after the end is
    /// recorded and before any exit of the end can, so the peer never hears of an exit
    /// before the link. `placed` answers `false` when the local actor is gone already.
    LinkEnd {
        key: LinkKey,
        cell: ActorCell,
        path: String,
        peer: Remote,
        reply: Reply<bool>,
        placed: oneshot::Sender<bool>,
    },
    /// Record both ends of a link between two actors of this node at once; `placed` is
    /// answered with what was found.
    LinkHere {
        id: Ref,
        initiator: (ActorCell, String),
        other: (ActorCell, String),
        placed: oneshot::Sender<LinkedHere>,
    },
    /// Remove a link at both ends.
    Unlink { id: Ref },
    /// A peer node disconnected.
    PeerDown { node: String },
    /// Events were lost: check every remote entry against the connected peers.
    Resync,
    /// A watched actor that was already stopping when its monitor went in has now stopped.
    /// If its event did not come (it may have read its monitors before this kernel was
    /// among them), it is down as if it had been gone at once.
    Settle { id: ActorId },
}

/// The other end of a link, on another node.
pub(crate) struct Remote {
    pub(crate) node: String,
    pub(crate) path: String,
}

/// What linking two actors of this node found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkedHere {
    /// Both ends are recorded.
    Both,
    /// The initiating actor is gone; nothing is recorded.
    InitiatorGone,
    /// The other actor is gone; nothing is recorded.
    OtherGone,
}

/// What watching a local actor found.
#[derive(Debug, PartialEq, Eq)]
enum Watched {
    /// Its stop will come as a supervision event (or, if it was already stopping, as a
    /// `Settle` once it has stopped).
    Live,
    /// It had stopped, or was stopping, before the monitor went in: it is gone now.
    Gone,
}

/// The kernel's message: from other kernels, or from this node.
pub(crate) enum KernelMsg {
    Wire(KernelWire),
    Local(LocalReq),
}

impl ractor::Message for KernelMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            KernelMsg::Wire(wire) => codec::encode_message(&wire),
            KernelMsg::Local(_) => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        codec::decode_message(bytes).map(KernelMsg::Wire)
    }
}

/// One end of a link: which link, and which end of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LinkKey {
    pub(crate) id: Ref,
    pub(crate) initiator: bool,
}

/// Where the other end of a link is.
pub(crate) enum PeerEnd {
    /// On this node, under the opposite key.
    Here,
    /// On another node.
    Remote { node: String, path: String },
}

struct LinkEnd {
    cell: ActorCell,
    path: String,
    peer: PeerEnd,
}

struct LocalWatch {
    target: ActorId,
    path: String,
    sink: DownSink,
}

struct ServedWatch {
    target: ActorId,
    path: String,
    watcher: String,
}

struct RemoteWatch {
    node: String,
    path: String,
    sink: DownSink,
}

pub(crate) struct KernelState {
    node: Node,
    /// This kernel's own id (a restart's next kernel has another).
    me: ActorId,
    watched: HashMap<ActorId, ActorCell>,
    local: HashMap<Ref, LocalWatch>,
    served: HashMap<Ref, ServedWatch>,
    remote: HashMap<Ref, RemoteWatch>,
    links: HashMap<LinkKey, LinkEnd>,
    traps: HashMap<ActorId, ExitSink>,
}

/// A kernel that stops while its node runs (it failed, or was killed, and its supervisor
/// starts another) takes its tables with it. Every holder on this node is told, rather
/// than left waiting: each monitor fires `Lost`, and each linked actor that traps exits
/// gets an `Exit` with `Lost` (one that does not is left running: the link is lost, not
/// its peer). A clean stop of the node tells no one.
impl Drop for KernelState {
    fn drop(&mut self) {
        if self.node.is_stopping() {
            return;
        }
        let here = self.here();
        let reason = DownReason::Lost(format!("the kernel of node {here} restarted"));
        let mut downs: Vec<(DownSink, Down)> = Vec::new();
        for (monitor, w) in self.local.drain() {
            let down = Down {
                monitor,
                path: w.path,
                node: here.clone(),
                reason: reason.clone(),
            };
            downs.push((w.sink, down));
        }
        for (monitor, w) in self.remote.drain() {
            let down = Down {
                monitor,
                path: w.path,
                node: w.node,
                reason: reason.clone(),
            };
            downs.push((w.sink, down));
        }
        let mut exits: Vec<(ExitSink, Exit)> = Vec::new();
        let ends: Vec<(ActorId, Exit)> = self
            .links
            .iter()
            .map(|(key, end)| {
                let (path, node) = match &end.peer {
                    PeerEnd::Remote { node, path } => (path.clone(), node.clone()),
                    PeerEnd::Here => {
                        let other = LinkKey {
                            id: key.id.clone(),
                            initiator: !key.initiator,
                        };
                        let path = self.links.get(&other).map(|e| e.path.clone());
                        (path.unwrap_or_default(), here.clone())
                    }
                };
                let exit = Exit {
                    link: key.id.clone(),
                    path,
                    node,
                    reason: reason.clone(),
                };
                (end.cell.get_id(), exit)
            })
            .collect();
        for (actor, exit) in ends {
            if let Some(sink) = self.traps.remove(&actor) {
                exits.push((sink, exit));
            }
        }
        if downs.is_empty() && exits.is_empty() {
            return;
        }
        // Told once the next kernel is in place, so that a holder that monitors again at
        // once (as the documented answer is) reaches it, not this one (at most 5 s).
        let (node, gone) = (self.node.clone(), self.me);
        let tell = async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while tokio::time::Instant::now() < deadline {
                let next = node
                    .kernel()
                    .filter(|k| k.get_id() != gone && k.get_status() == ActorStatus::Running);
                if next.is_some() || node.is_stopping() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            for (sink, down) in downs {
                sink(down);
            }
            for (sink, exit) in exits {
                sink(exit);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(tell);
            }
            Err(_) => tracing::warn!("the kernel's holders cannot be told: no runtime"),
        }
    }
}

/// The kernel actor.
pub(crate) struct Kernel;

impl Node {
    /// This node's kernel, as last started.
    pub(crate) fn kernel(&self) -> Option<ActorRef<KernelMsg>> {
        self.service("kernel").map(ActorRef::from)
    }
}

/// Everything [`establish_link`] needs.
pub(crate) struct LinkPlan {
    pub(crate) id: Ref,
    pub(crate) local: ActorCell,
    pub(crate) local_path: String,
    pub(crate) peer_path: String,
    pub(crate) peer: Target,
}

/// Sends a message to another node's kernel, if it is connected. A kernel never waits for
/// a connection: when the peer is gone, its own side fires `NodeDown`. The message takes the
/// message channel, behind every message this node sent the peer before it (a `Down` comes
/// after the dead actor's last messages).
pub(crate) fn to_kernel(node: &str, wire: KernelWire) {
    let addr = Addr::<KernelMsg>::on(node, kernel_path(node));
    match addr.lookup() {
        Ok(target) => {
            if crate::node::channel::deliver(&target, KernelMsg::Wire(wire)).is_err() {
                tracing::debug!(peer = %node, "kernel message to a stopping peer dropped");
            }
        }
        Err(e) => {
            tracing::debug!(peer = %node, cause = %e, "kernel message to an unreachable peer dropped")
        }
    }
}

fn reason_of(event: &SupervisionEvent) -> Option<(ActorId, DownReason)> {
    match event {
        SupervisionEvent::ActorTerminated(cell, _, reason) => Some((
            cell.get_id(),
            DownReason::from_stop_reason(reason.as_deref()),
        )),
        SupervisionEvent::ActorFailed(cell, err) => {
            Some((cell.get_id(), DownReason::Error(err.to_string())))
        }
        _ => None,
    }
}

impl KernelState {
    /// Starts watching a local actor.
    ///
    /// ractor has no "monitor, or tell me it is gone" in one step: an actor sends its stop
    /// event to the monitors it has when it stops, so a monitor that goes in while the actor
    /// stops may or may not be among them. An actor already stopping is gone; one that
    /// started stopping while its monitor went in is watched until it has stopped, and
    /// settled then (`LocalReq::Settle`): by that time its event, if it sent one, is ahead
    /// of the `Settle` (supervision events come before messages).
    fn watch(&mut self, myself: &ActorRef<KernelMsg>, cell: &ActorCell) -> Watched {
        let id = cell.get_id();
        if self.watched.contains_key(&id) {
            return Watched::Live;
        }
        if cell.get_status() >= ActorStatus::Stopping {
            return Watched::Gone;
        }
        myself.get_cell().monitor(cell.clone());
        self.watched.insert(id, cell.clone());
        if cell.get_status() >= ActorStatus::Stopping {
            let (cell, kernel) = (cell.clone(), myself.clone());
            tokio::spawn(async move {
                let _ = cell.wait(None).await;
                let _ = kernel.cast(KernelMsg::Local(LocalReq::Settle { id }));
            });
        }
        Watched::Live
    }

    fn here(&self) -> String {
        self.node.name().to_string()
    }

    fn local_path(path: &str) -> Option<ActorCell> {
        ractor::pg::get_scoped_local_members(&crate::node::SCOPE.to_string(), &path.to_string())
            .into_iter()
            .find(|c| c.get_status() < ActorStatus::Draining)
    }

    /// Delivers an exit signal to the local end of a link.
    fn exit_signal(&self, end: &LinkEnd, exit: Exit) {
        if let Some(sink) = self.traps.get(&end.cell.get_id()) {
            sink(exit);
        } else if let DownReason::Lost(why) = &exit.reason {
            // The link is lost, not its other end: no reason to stop.
            tracing::warn!(actor = %end.path, peer = %exit.path, %why, "link lost");
        } else if !exit.reason.is_normal() {
            tracing::debug!(actor = %end.path, peer = %exit.path, reason = %exit.reason, "linked actor stopped: stopping with it");
            end.cell.stop(Some(exit.reason.to_stop_reason()));
        }
    }

    /// A local actor stopped: fire everything that watched it.
    fn actor_down(&mut self, id: ActorId, reason: DownReason) {
        if let Some(cell) = self.watched.remove(&id) {
            drop(cell);
        }
        self.traps.remove(&id);
        let here = self.here();
        let fired: Vec<Ref> = self
            .local
            .iter()
            .filter(|(_, w)| w.target == id)
            .map(|(r, _)| r.clone())
            .collect();
        for r in fired {
            if let Some(w) = self.local.remove(&r) {
                (w.sink)(Down {
                    monitor: r,
                    path: w.path,
                    node: here.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let served: Vec<Ref> = self
            .served
            .iter()
            .filter(|(_, w)| w.target == id)
            .map(|(r, _)| r.clone())
            .collect();
        for r in served {
            if let Some(w) = self.served.remove(&r) {
                to_kernel(
                    &w.watcher,
                    KernelWire::Down {
                        id: r,
                        path: w.path,
                        node: here.clone(),
                        reason: reason.clone(),
                    },
                );
            }
        }
        let ends: Vec<LinkKey> = self
            .links
            .iter()
            .filter(|(_, e)| e.cell.get_id() == id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in ends {
            let Some(end) = self.links.remove(&key) else {
                continue;
            };
            match end.peer {
                PeerEnd::Here => {
                    let other = LinkKey {
                        id: key.id.clone(),
                        initiator: !key.initiator,
                    };
                    if let Some(peer) = self.links.remove(&other) {
                        let exit = Exit {
                            link: key.id.clone(),
                            path: end.path.clone(),
                            node: here.clone(),
                            reason: reason.clone(),
                        };
                        self.exit_signal(&peer, exit);
                    }
                }
                PeerEnd::Remote { node, .. } => to_kernel(
                    &node,
                    KernelWire::LinkExit {
                        id: key.id.clone(),
                        from_initiator: key.initiator,
                        path: end.path.clone(),
                        node: here.clone(),
                        reason: reason.clone(),
                    },
                ),
            }
        }
    }

    /// Records the local end of a link with another node's actor and sends that node's
    /// kernel the request for the other end; `false` when the local actor is gone already.
    /// When the peer's node is not connected, the end fires at once with `noconnection` and
    /// the request is dropped unanswered.
    fn link_end(
        &mut self,
        myself: &ActorRef<KernelMsg>,
        key: LinkKey,
        cell: ActorCell,
        path: String,
        peer: Remote,
        reply: Reply<bool>,
    ) -> bool {
        let end = LinkEnd {
            cell,
            path,
            peer: PeerEnd::Remote {
                node: peer.node.clone(),
                path: peer.path.clone(),
            },
        };
        if !self.node.is_connected(&peer.node) {
            let exit = Exit {
                link: key.id.clone(),
                path: peer.path,
                node: peer.node,
                reason: DownReason::NodeDown,
            };
            self.exit_signal(&end, exit);
            return true;
        }
        if self.watch(myself, &end.cell) == Watched::Gone {
            return false;
        }
        let request = KernelWire::Link {
            id: key.id.clone(),
            path: peer.path,
            peer_node: self.here(),
            peer_path: end.path.clone(),
            reply,
        };
        self.links.insert(key, end);
        to_kernel(&peer.node, request);
        true
    }

    /// Records both ends of a link between two actors of this node, unless one is gone
    /// already: then nothing is recorded, as with a peer that is gone on another node.
    fn link_here(
        &mut self,
        myself: &ActorRef<KernelMsg>,
        id: Ref,
        initiator: (ActorCell, String),
        other: (ActorCell, String),
    ) -> LinkedHere {
        if self.watch(myself, &initiator.0) == Watched::Gone {
            return LinkedHere::InitiatorGone;
        }
        if self.watch(myself, &other.0) == Watched::Gone {
            return LinkedHere::OtherGone;
        }
        for (initiator, (cell, path)) in [(true, initiator), (false, other)] {
            let key = LinkKey {
                id: id.clone(),
                initiator,
            };
            let end = LinkEnd {
                cell,
                path,
                peer: PeerEnd::Here,
            };
            self.links.insert(key, end);
        }
        LinkedHere::Both
    }

    /// A peer node is gone: fire every remote monitor and link end that pointed at it.
    fn peer_down(&mut self, node: &str) {
        self.peer_gone(node, &DownReason::NodeDown);
    }

    /// Fires, with `reason`, every monitor of actors on `node` and every link with one,
    /// and forgets what `node`'s watchers monitor here.
    fn peer_gone(&mut self, node: &str, reason: &DownReason) {
        let fired: Vec<Ref> = self
            .remote
            .iter()
            .filter(|(_, w)| w.node == node)
            .map(|(r, _)| r.clone())
            .collect();
        for r in fired {
            if let Some(w) = self.remote.remove(&r) {
                (w.sink)(Down {
                    monitor: r,
                    path: w.path,
                    node: w.node,
                    reason: reason.clone(),
                });
            }
        }
        self.served.retain(|_, w| w.watcher != node);
        let ends: Vec<LinkKey> = self
            .links
            .iter()
            .filter(|(_, e)| matches!(&e.peer, PeerEnd::Remote { node: n, .. } if n == node))
            .map(|(k, _)| k.clone())
            .collect();
        for key in ends {
            if let Some(end) = self.links.remove(&key) {
                let PeerEnd::Remote { node, path } = &end.peer else {
                    continue;
                };
                let exit = Exit {
                    link: key.id.clone(),
                    path: path.clone(),
                    node: node.clone(),
                    reason: reason.clone(),
                };
                self.exit_signal(&end, exit);
            }
        }
    }

    fn handle_local(&mut self, myself: &ActorRef<KernelMsg>, req: LocalReq) {
        match req {
            LocalReq::Watch {
                id,
                cell,
                path,
                sink,
                placed,
            } => {
                let _ = placed.send(());
                if self.watch(myself, &cell) == Watched::Live {
                    self.local.insert(
                        id,
                        LocalWatch {
                            target: cell.get_id(),
                            path,
                            sink,
                        },
                    );
                } else {
                    sink(Down {
                        monitor: id,
                        path,
                        node: self.here(),
                        reason: DownReason::NoSuchActor,
                    });
                }
            }
            LocalReq::WatchRemote {
                id,
                node,
                path,
                sink,
                recorded,
            } => {
                let connected = self.node.is_connected(&node);
                if connected {
                    self.remote.insert(id, RemoteWatch { node, path, sink });
                } else {
                    sink(Down {
                        monitor: id,
                        path,
                        node,
                        reason: DownReason::NodeDown,
                    });
                }
                let _ = recorded.send(connected);
            }
            LocalReq::Unwatch { id } => {
                self.local.remove(&id);
                if let Some(w) = self.remote.remove(&id) {
                    to_kernel(&w.node, KernelWire::Demonitor { id });
                }
            }
            LocalReq::TrapExit { cell, sink } => {
                if self.watch(myself, &cell) == Watched::Live {
                    self.traps.insert(cell.get_id(), sink);
                }
            }
            LocalReq::LinkEnd {
                key,
                cell,
                path,
                peer,
                reply,
                placed,
            } => {
                let _ = placed.send(self.link_end(myself, key, cell, path, peer, reply));
            }
            LocalReq::LinkHere {
                id,
                initiator,
                other,
                placed,
            } => {
                let _ = placed.send(self.link_here(myself, id, initiator, other));
            }
            LocalReq::Unlink { id } => {
                for initiator in [true, false] {
                    let key = LinkKey {
                        id: id.clone(),
                        initiator,
                    };
                    if let Some(LinkEnd {
                        peer: PeerEnd::Remote { node, .. },
                        ..
                    }) = self.links.remove(&key)
                    {
                        to_kernel(&node, KernelWire::Unlink { id: id.clone() });
                    }
                }
            }
            LocalReq::PeerDown { node } => self.peer_down(&node),
            LocalReq::Settle { id } => {
                if self.watched.contains_key(&id) {
                    tracing::debug!(actor = %id, "stopped while its monitor went in: down as gone");
                    self.actor_down(id, DownReason::NoSuchActor);
                }
            }
            LocalReq::Resync => {
                let mut gone: Vec<String> = self
                    .remote
                    .values()
                    .map(|w| w.node.clone())
                    .chain(self.links.values().filter_map(|e| match &e.peer {
                        PeerEnd::Remote { node, .. } => Some(node.clone()),
                        PeerEnd::Here => None,
                    }))
                    .filter(|n| !self.node.is_connected(n))
                    .collect();
                gone.sort();
                gone.dedup();
                for node in gone {
                    self.peer_down(&node);
                }
            }
        }
    }

    fn handle_wire(&mut self, myself: &ActorRef<KernelMsg>, wire: KernelWire) {
        match wire {
            KernelWire::Monitor {
                id,
                path,
                watcher,
                reply,
            } => {
                let target = Self::local_path(&path)
                    .filter(|cell| self.watch(myself, cell) == Watched::Live);
                reply.send(target.is_some());
                match target {
                    Some(cell) => {
                        self.served.insert(
                            id,
                            ServedWatch {
                                target: cell.get_id(),
                                path,
                                watcher,
                            },
                        );
                    }
                    None => to_kernel(
                        &watcher,
                        KernelWire::Down {
                            id,
                            path,
                            node: self.here(),
                            reason: DownReason::NoSuchActor,
                        },
                    ),
                }
            }
            KernelWire::Demonitor { id } => {
                self.served.remove(&id);
            }
            KernelWire::Down {
                id,
                path,
                node,
                reason,
            } => {
                if let Some(w) = self.remote.remove(&id) {
                    (w.sink)(Down {
                        monitor: id,
                        path,
                        node,
                        reason,
                    });
                }
            }
            KernelWire::Link {
                id,
                path,
                peer_node,
                peer_path,
                reply,
            } => {
                let target = Self::local_path(&path)
                    .filter(|cell| self.watch(myself, cell) == Watched::Live);
                let linked = target.is_some();
                if let Some(cell) = target {
                    self.links.insert(
                        LinkKey {
                            id,
                            initiator: false,
                        },
                        LinkEnd {
                            cell,
                            path,
                            peer: PeerEnd::Remote {
                                node: peer_node,
                                path: peer_path,
                            },
                        },
                    );
                }
                reply.send(linked);
            }
            KernelWire::LinkExit {
                id,
                from_initiator,
                path,
                node,
                reason,
            } => {
                let key = LinkKey {
                    id: id.clone(),
                    initiator: !from_initiator,
                };
                if let Some(end) = self.links.remove(&key) {
                    let exit = Exit {
                        link: id,
                        path,
                        node,
                        reason,
                    };
                    self.exit_signal(&end, exit);
                }
            }
            KernelWire::Unlink { id } => {
                for initiator in [true, false] {
                    self.links.remove(&LinkKey {
                        id: id.clone(),
                        initiator,
                    });
                }
            }
            KernelWire::Restarted { node } => {
                let why = format!("the kernel of node {node} restarted");
                self.peer_gone(&node, &DownReason::Lost(why));
            }
        }
    }
}

impl Actor for Kernel {
    type Msg = KernelMsg;
    type State = KernelState;
    type Arguments = Node;

    async fn pre_start(
        &self,
        myself: ActorRef<KernelMsg>,
        node: Node,
    ) -> Result<KernelState, ActorProcessingErr> {
        // Registered, slotted and fed here, so that a restart by the node supervisor does it
        // all again.
        crate::addr::register(&kernel_path(node.name()), &myself)?;
        let earlier = node.service("kernel");
        node.set_service("kernel", myself.get_cell());
        let mut events = node.subscribe();
        let forward = myself.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let req = match events.recv().await {
                    Ok(NodeEvent::Down { node, .. }) => LocalReq::PeerDown { node },
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => LocalReq::Resync,
                    Err(RecvError::Closed) => break,
                };
                if forward.cast(KernelMsg::Local(req)).is_err() {
                    break;
                }
            }
        });
        if earlier.is_some_and(|e| e.get_id() != myself.get_id()) {
            // A restart: what the earlier kernel held is gone (its state told this node's
            // holders as it went). The peers hold the other halves: monitors they placed
            // here, links to actors here. They are told, and give their holders a `Down`.
            tracing::warn!(node = %node.name(), "the kernel restarted: its monitors and links are lost, and their holders told");
            for peer in node.connected_peers() {
                to_kernel(
                    &peer,
                    KernelWire::Restarted {
                        node: node.name().to_string(),
                    },
                );
            }
        }
        Ok(KernelState {
            node,
            me: myself.get_id(),
            watched: HashMap::new(),
            local: HashMap::new(),
            served: HashMap::new(),
            remote: HashMap::new(),
            links: HashMap::new(),
            traps: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<KernelMsg>,
        message: KernelMsg,
        state: &mut KernelState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            KernelMsg::Local(req) => state.handle_local(&myself, req),
            KernelMsg::Wire(wire) => state.handle_wire(&myself, wire),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<KernelMsg>,
        event: SupervisionEvent,
        state: &mut KernelState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((id, reason)) = reason_of(&event) {
            state.actor_down(id, reason);
        }
        Ok(())
    }
}
