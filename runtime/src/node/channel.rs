//! The message channel: the direct path a message takes to an actor on another node.
//!
//! ractor_cluster carries a message through a chain of tasks: the `RemoteActor`, the
//! `NodeSession` actor, the session actor and its writer task on the way out, and a reader
//! actor, the session actor and the `NodeSession` again on the way in. A call's round trip
//! is a dozen task hand-offs, twice what an Erlang distribution round trip costs. So beside
//! its ractor_cluster session with a peer, a node opens one TCP connection of its own to it,
//! the *channel*, and every message it sends to an actor on that peer goes there:
//!
//! * the sending task writes the frame to the socket itself (a task of the channel takes
//!   over only when the socket's buffer is full);
//! * one task on the other side reads frames and puts each message straight into the
//!   receiving actor's mailbox, where the actor decodes it as it would a session's;
//! * a call's answer is written back on the same connection by the answering actor itself,
//!   and the reader on the calling side hands it to the waiting caller.
//!
//! ```text
//! Node (node.rs)
//! └── Channels                         this module (a connection's own work: conn.rs);
//!                                      no actor, nothing restarts it
//!     ├── listener task                accepts peers' channels, each with a ticket
//!     ├── outbound channel per peer    opened by the first message to the peer
//!     │   ├── reader task              answers to the calls made on it
//!     │   └── flusher task             what the senders could not write at once
//!     └── inbound channel per peer     the peer's outbound channel
//!         ├── reader task              messages into mailboxes
//!         └── flusher task             answers that did not fit the socket at once
//! ```
//!
//! The session keeps the rest: the cookie handshake, the process groups that addresses
//! resolve through, node up and down, heartbeats.
//!
//! **Order.** Every message from this node to a peer goes through its one outbound channel,
//! so messages between two actors arrive in the order they were sent, and a kernel's `Down`
//! for an actor arrives after the actor's last messages, as Erlang promises. Messages sent
//! while the channel opens wait in it, never on the session, which could overtake them.
//!
//! **Failure.** A channel that fails (a read or write error, a frame that does not parse)
//! disconnects the peer's session, so monitors fire `NodeDown` as for any lost connection,
//! and calls waiting on it end at once. When the session closes, for whatever reason, its
//! channels close with it; a channel the peer closes cleanly (it stops, or its side of the
//! session closed) is only forgotten. A later message opens both again.
//!
//! **Authentication.** The listener accepts a connection only with a ticket: 32 random bytes
//! that the connecting node's kernel obtained from this node's kernel over the session the
//! cookie authenticated, good once, for the node it was issued to, for ten seconds.
//!
//! **Older peers.** A peer that does not answer the ticket request (a troupe without
//! channels), or whose channel cannot be opened, gets the session path: messages waiting in
//! the channel go to the session in order and later ones follow them there.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ractor::message::SerializedMessage;
use ractor::{ActorCell, ActorStatus, MessagingErr};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

mod conn;

use conn::{Conn, abort_all};

use super::Target;
use crate::node::{ChannelConfig, Node, NodeEvent, Shared};

/// The largest frame a channel accepts; a larger length prefix is a broken peer.
const MAX_FRAME: usize = 64 << 20;
/// How long a ticket is good for.
const TICKET_LIFE: Duration = Duration::from_secs(10);
/// How long a peer has to answer the ticket request before it gets the session path.
const TICKET_WAIT: Duration = Duration::from_secs(2);
/// How long connecting to a peer's channel and its handshake may take before the messages
/// waiting for it take the session instead.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// How long a connecting peer has to present its ticket.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);
/// What a channel connection starts with, before the node name and the ticket.
const PREAMBLE: &[u8; 8] = b"troupe/1";
/// The listener's answer to a good ticket.
const ACCEPTED: &[u8; 2] = b"ok";
/// A message: `pid`, then the type name and the payload.
const CAST: u8 = 1;
/// A call: the call number, `pid`, then the type name and the payload.
const CALL: u8 = 2;
/// The answer to a call: the call number, then the encoded answer.
const ANSWER: u8 = 3;
/// A call that will get no answer (no such actor, or it dropped its reply port).
const NO_ANSWER: u8 = 4;

/// What a node tells a peer that asks to open a channel to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChannelOffer {
    /// Where the channel listener is.
    pub(crate) addr: SocketAddr,
    /// The one-time ticket to present there.
    pub(crate) ticket: Vec<u8>,
}

/// One open message channel, as [`Node::message_channels`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The peer node.
    pub peer: String,
    /// `true` for this node's channel to the peer (its messages), `false` for the peer's
    /// channel to this node.
    pub outbound: bool,
    /// This end's socket address.
    pub local: SocketAddr,
    /// The other end's socket address.
    pub remote: SocketAddr,
}

/// Where this node's messages to one peer go now.
enum Route {
    /// The channel is being opened; messages wait here in order.
    Opening(Vec<(ActorCell, SerializedMessage)>),
    Open(Arc<Conn>),
    /// The peer has no channel: messages go through the ractor_cluster session.
    Session,
    /// The peer's session closed: messages are dropped, as on a lost connection.
    Closed,
}

/// This node's messages to one peer.
pub(crate) struct Outbound {
    peer: String,
    route: Mutex<Route>,
}

impl Outbound {
    fn send(&self, cell: &ActorCell, message: SerializedMessage) {
        let mut route = self.route.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *route {
            Route::Opening(waiting) => waiting.push((cell.clone(), message)),
            Route::Open(conn) => conn.send(cell.get_id().pid(), message),
            Route::Session => {
                let _ = cell.send_serialized(message);
            }
            Route::Closed => {}
        }
    }

    /// Ends the opening: the waiting messages go `route`'s way, in order, ahead of any later.
    fn opened(&self, route: Route) {
        let mut current = self.route.lock().unwrap_or_else(|p| p.into_inner());
        let Route::Opening(waiting) = std::mem::replace(&mut *current, Route::Closed) else {
            // Closed while it opened.
            if let Route::Open(conn) = route {
                conn.close();
            }
            return;
        };
        for (cell, message) in waiting {
            match &route {
                Route::Open(conn) => conn.send(cell.get_id().pid(), message),
                Route::Session => {
                    let _ = cell.send_serialized(message);
                }
                Route::Opening(_) | Route::Closed => {}
            }
        }
        *current = route;
    }

    fn close(&self) {
        let route = std::mem::replace(
            &mut *self.route.lock().unwrap_or_else(|p| p.into_inner()),
            Route::Closed,
        );
        if let Route::Open(conn) = route {
            conn.close();
        }
    }

    fn conn_id(&self) -> Option<u64> {
        match &*self.route.lock().unwrap_or_else(|p| p.into_inner()) {
            Route::Open(conn) => Some(conn.id),
            _ => None,
        }
    }
}

/// A node's channels: its listener, its outbound channel to each peer and each peer's
/// inbound one.
pub(crate) struct Channels {
    /// Where peers connect; `None` when the node has its channel off.
    addr: Option<SocketAddr>,
    outbound: Mutex<HashMap<String, Arc<Outbound>>>,
    inbound: Mutex<HashMap<String, Arc<Conn>>>,
    tickets: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// What it counted (`Node::channel_refusals`).
    pub(crate) stats: ChannelStats,
}

/// Counters of a node's channels.
#[derive(Debug, Default)]
pub(crate) struct ChannelStats {
    /// Connections to the listener refused for want of a good ticket.
    pub(crate) refused: AtomicU64,
}

impl Channels {
    /// Binds the channel listener on `ip` and the port `config` asks for; peers are told
    /// `advertise_ip` and that port. No listener when the channel is off.
    pub(crate) async fn bind(
        config: ChannelConfig,
        ip: std::net::IpAddr,
        advertise_ip: std::net::IpAddr,
    ) -> io::Result<(Channels, Option<TcpListener>)> {
        let listener = match config {
            ChannelConfig::AnyPort => Some(TcpListener::bind(SocketAddr::new(ip, 0)).await?),
            ChannelConfig::Port(port) => Some(TcpListener::bind(SocketAddr::new(ip, port)).await?),
            ChannelConfig::Off => None,
        };
        let addr = match &listener {
            Some(listener) => Some(SocketAddr::new(advertise_ip, listener.local_addr()?.port())),
            None => None,
        };
        Ok((
            Channels {
                addr,
                outbound: Mutex::default(),
                inbound: Mutex::default(),
                tickets: Mutex::default(),
                tasks: Mutex::default(),
                stats: ChannelStats::default(),
            },
            listener,
        ))
    }

    /// Starts accepting peers' channels and closing channels whose session closed.
    pub(crate) fn start(node: &Node, listener: Option<TcpListener>) {
        // Calls that come over a channel name their answer port in their metadata; the
        // codec finds it through the connection table here.
        crate::codec::answers_through(conn::ChannelAnswer::from_call);
        let Some(listener) = listener else { return };
        let accept = tokio::spawn(accept_loop(Arc::downgrade(&node.shared), listener));
        let mut events = node.subscribe();
        let weak = Arc::downgrade(&node.shared);
        let follow = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let event = events.recv().await;
                let Some(shared) = weak.upgrade() else { return };
                let node = Node { shared };
                match event {
                    Ok(NodeEvent::Down { node: peer, .. }) => {
                        if !node.is_connected(&peer) {
                            node.shared.channels.peer_down(&peer);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        let peers = node.shared.channels.peers();
                        for peer in peers.iter().filter(|p| !node.is_connected(p)) {
                            node.shared.channels.peer_down(peer);
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        node.shared
            .channels
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([accept.abort_handle(), follow.abort_handle()]);
    }

    /// The numbers of the connections that are `peer`'s channels now.
    fn current(&self, peer: &str) -> Option<Vec<u64>> {
        let mut ids = Vec::new();
        if let Some(out) = self
            .outbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .and_then(|o| o.conn_id())
        {
            ids.push(out);
        }
        if let Some(conn) = self
            .inbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
        {
            ids.push(conn.id);
        }
        (!ids.is_empty()).then_some(ids)
    }

    /// The peer's session closed: so do its channels.
    fn peer_down(&self, peer: &str) {
        let out = self
            .outbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
        if let Some(out) = out {
            out.close();
        }
        let inbound = self
            .inbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
        if let Some(conn) = inbound {
            conn.close();
        }
    }

    /// Forgets connection `id` if it is one of `peer`'s channels.
    fn forget(&self, peer: &str, id: u64) {
        let mut outbound = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        if outbound.get(peer).and_then(|out| out.conn_id()) == Some(id) {
            outbound.remove(peer);
        }
        drop(outbound);
        let mut inbound = self.inbound.lock().unwrap_or_else(|p| p.into_inner());
        if inbound.get(peer).map(|conn| conn.id) == Some(id) {
            inbound.remove(peer);
        }
    }

    /// Closes everything: the node stops.
    pub(crate) fn stop(&self) {
        abort_all(&self.tasks);
        for peer in self.peers() {
            self.peer_down(&peer);
        }
    }

    /// The peers with a channel either way.
    fn peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self
            .outbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        peers.extend(
            self.inbound
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
        peers.sort();
        peers.dedup();
        peers
    }

    /// A ticket for `peer` to open its channel to this node with; `None` when the channel
    /// is off.
    pub(crate) fn offer(&self, peer: &str) -> io::Result<Option<ChannelOffer>> {
        let Some(addr) = self.addr else {
            return Ok(None);
        };
        let mut ticket = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut ticket)?;
        let now = Instant::now();
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.retain(|_, (_, issued)| now.duration_since(*issued) < TICKET_LIFE);
        tickets.insert(ticket, (peer.to_string(), now));
        Ok(Some(ChannelOffer {
            addr,
            ticket: ticket.to_vec(),
        }))
    }

    /// The open channels.
    pub(crate) fn list(&self) -> Vec<ChannelInfo> {
        fn info(conn: &Conn, outbound: bool) -> Option<ChannelInfo> {
            Some(ChannelInfo {
                peer: conn.peer.clone(),
                outbound,
                local: conn.stream.local_addr().ok()?,
                remote: conn.stream.peer_addr().ok()?,
            })
        }
        let outbound: Vec<Arc<Outbound>> = self
            .outbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut list: Vec<ChannelInfo> = outbound
            .iter()
            .filter_map(
                |out| match &*out.route.lock().unwrap_or_else(|p| p.into_inner()) {
                    Route::Open(conn) if !conn.closed.load(Ordering::Acquire) => info(conn, true),
                    _ => None,
                },
            )
            .collect();
        list.extend(
            self.inbound
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .filter(|conn| !conn.closed.load(Ordering::Acquire))
                .filter_map(|conn| info(conn, false)),
        );
        list
    }

    /// Where peers open their channels to this node; `None` when the channel is off.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Takes `ticket` if it was issued to `peer` and is still good.
    fn redeem(&self, peer: &str, ticket: &[u8; 32]) -> bool {
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        match tickets.remove(ticket) {
            Some((issued_to, at)) => issued_to == peer && at.elapsed() < TICKET_LIFE,
            None => false,
        }
    }
}

async fn accept_loop(node: Weak<Shared>, listener: TcpListener) {
    // Connections still in their handshake, at most `MAX_HANDSHAKING`: a flood of idle
    // connections costs a bounded number of tasks and descriptors.
    let handshaking = Arc::new(tokio::sync::Semaphore::new(super::MAX_HANDSHAKING));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(cause = %e, "message channel listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(shared) = node.upgrade() else { return };
        let node = Node { shared };
        let Ok(slot) = handshaking.clone().try_acquire_owned() else {
            node.shared
                .channels
                .stats
                .refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%from, limit = super::MAX_HANDSHAKING, "refused a message channel: too many connections in their handshake");
            drop(stream);
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_WAIT, accept(&node, stream)).await {
                Ok(Ok(peer)) => tracing::debug!(%peer, %from, "message channel accepted"),
                Ok(Err(why)) => {
                    node.shared
                        .channels
                        .stats
                        .refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, cause = %why, "refused a message channel");
                }
                Err(_) => {
                    node.shared
                        .channels
                        .stats
                        .refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, "refused a message channel: no ticket in time");
                }
            }
        });
    }
}

/// Reads a connecting peer's name and ticket, and takes the connection as its inbound
/// channel if the ticket is good.
async fn accept(node: &Node, mut stream: TcpStream) -> Result<String, String> {
    let mut preamble = [0u8; 8];
    stream
        .read_exact(&mut preamble)
        .await
        .map_err(|e| e.to_string())?;
    if &preamble != PREAMBLE {
        return Err("not a troupe message channel".into());
    }
    let len = usize::from(stream.read_u16().await.map_err(|e| e.to_string())?);
    if len > 255 {
        return Err(format!("a node name of {len} bytes"));
    }
    let mut name = vec![0u8; len];
    stream
        .read_exact(&mut name)
        .await
        .map_err(|e| e.to_string())?;
    let peer = String::from_utf8(name).map_err(|_| "a node name that is not UTF-8")?;
    let mut ticket = [0u8; 32];
    stream
        .read_exact(&mut ticket)
        .await
        .map_err(|e| e.to_string())?;
    let channels = &node.shared.channels;
    if !channels.redeem(&peer, &ticket) {
        return Err(format!("no good ticket for {peer:?}"));
    }
    stream
        .write_all(ACCEPTED)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let conn = Conn::start(stream, &peer, node);
    let older = channels
        .inbound
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(peer.clone(), conn);
    if let Some(older) = older {
        older.close();
    }
    Ok(peer)
}

/// Opens this node's channel to `peer`.
async fn connect(node: &Node, peer: &str, offer: ChannelOffer) -> Result<Arc<Conn>, String> {
    let mut stream = TcpStream::connect(offer.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", offer.addr))?;
    let _ = stream.set_nodelay(true);
    let name = node.name().as_bytes();
    let mut hello = Vec::with_capacity(8 + 2 + name.len() + offer.ticket.len());
    hello.extend_from_slice(PREAMBLE);
    hello.extend_from_slice(&(name.len() as u16).to_be_bytes());
    hello.extend_from_slice(name);
    hello.extend_from_slice(&offer.ticket);
    stream.write_all(&hello).await.map_err(|e| e.to_string())?;
    let mut answer = [0u8; 2];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(|_| "the ticket was refused".to_string())?;
    if &answer != ACCEPTED {
        return Err("the ticket was refused".into());
    }
    Ok(Conn::start(stream, peer, node))
}

/// Opens the outbound channel `out` and lets its waiting messages go.
async fn open(node: Node, out: Arc<Outbound>) {
    let peer = out.peer.clone();
    let attempt = async {
        match super::endpoint::ask_offer(&node, &peer, Instant::now() + TICKET_WAIT).await? {
            Some(offer) => {
                let addr = offer.addr;
                tokio::time::timeout(CONNECT_WAIT, connect(&node, &peer, offer))
                    .await
                    .map_err(|_| format!("no channel at {addr} within {CONNECT_WAIT:?}"))?
                    .map(Some)
            }
            None => Ok(None),
        }
    };
    match tokio::time::timeout(node.shared.connect_timeout, attempt).await {
        Ok(Ok(Some(conn))) => {
            tracing::debug!(%peer, "message channel open");
            out.opened(Route::Open(conn));
        }
        Ok(Ok(None)) => {
            tracing::info!(%peer, "the peer has no message channel; its messages go through the session");
            out.opened(Route::Session);
        }
        Ok(Err(why)) => {
            tracing::warn!(%peer, cause = %why, "cannot open a message channel; messages go through the session");
            out.opened(Route::Session);
        }
        Err(_) => {
            tracing::warn!(%peer, "opening a message channel timed out; messages go through the session");
            out.opened(Route::Session);
        }
    }
}

fn alive(cell: &ActorCell) -> bool {
    cell.get_status() < ActorStatus::Draining
}

/// Sends `message` to the actor `target` resolved to: into its mailbox when it is on this
/// node, through the peer's channel when it is not (opening the channel if this is the
/// first message to the peer).
pub(crate) fn deliver<M: ractor::Message>(
    target: &Target,
    message: M,
) -> Result<(), MessagingErr<M>> {
    if target.cell.get_id().is_local() {
        return target.cell.send_message(message);
    }
    let Some(node) = Node::current().filter(|n| n.shared.channels.addr.is_some()) else {
        return target.cell.send_message(message);
    };
    if !alive(&target.cell) {
        return Err(MessagingErr::SendErr(message));
    }
    if !M::serializable() {
        return Err(MessagingErr::InvalidActorType);
    }
    let serialized = message
        .serialize()
        .map_err(|_| MessagingErr::InvalidActorType)?;
    node.shared
        .channels
        .outbound_to(&node, &target.node)
        .send(&target.cell, serialized);
    Ok(())
}

impl Channels {
    /// This node's outbound channel to `peer`, opening it if there is none.
    fn outbound_to(&self, node: &Node, peer: &str) -> Arc<Outbound> {
        let mut all = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(out) = all.get(peer) {
            return out.clone();
        }
        let out = Arc::new(Outbound {
            peer: peer.to_string(),
            route: Mutex::new(Route::Opening(Vec::new())),
        });
        all.insert(peer.to_string(), out.clone());
        tokio::spawn(open(node.clone(), out.clone()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ticket_is_good_once_for_the_node_it_was_issued_to() {
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let (channels, listener) = Channels::bind(ChannelConfig::AnyPort, ip, ip)
            .await
            .unwrap();
        assert_eq!(
            channels.addr(),
            Some(listener.unwrap().local_addr().unwrap())
        );
        let offer = channels.offer("b").unwrap().unwrap();
        let ticket: [u8; 32] = offer.ticket.as_slice().try_into().unwrap();
        assert!(!channels.redeem("c", &ticket), "issued to b, not c");
        let offer = channels.offer("b").unwrap().unwrap();
        let ticket: [u8; 32] = offer.ticket.as_slice().try_into().unwrap();
        assert!(channels.redeem("b", &ticket));
        assert!(!channels.redeem("b", &ticket), "good once");
        let other = channels.offer("b").unwrap().unwrap();
        assert_ne!(other.ticket, offer.ticket);
        let (off, listener) = Channels::bind(ChannelConfig::Off, ip, ip).await.unwrap();
        assert!(listener.is_none() && off.addr().is_none());
        assert!(
            off.offer("b").unwrap().is_none(),
            "no tickets with the channel off"
        );
    }
}
