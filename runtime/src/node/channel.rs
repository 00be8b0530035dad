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
//! └── Channels                         this module; no actor, nothing restarts it
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use ractor::message::SerializedMessage;
use ractor::{ActorCell, ActorId, ActorStatus, MessagingErr, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::addr::{Addr, Target};
use crate::codec::Reply;
use crate::kernel::{KernelMsg, KernelWire, kernel_path};
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
/// The prefix of the metadata that marks a message as a call made over a channel.
pub(crate) const ANSWER_TAG: &[u8; 8] = b"troupe-c";

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

/// One frame, as read.
#[derive(Debug, PartialEq)]
enum Frame<'a> {
    Message {
        call: Option<u64>,
        pid: u64,
        variant: &'a str,
        args: &'a [u8],
    },
    Answer {
        call: u64,
        bytes: &'a [u8],
    },
    NoAnswer {
        call: u64,
    },
}

/// Writes a frame: a 4-byte length, the kind, the numbers, the type name for messages, the
/// payload.
fn encode_frame(kind: u8, numbers: &[u64], variant: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let variant_len = variant.map_or(0, |v| 2 + v.len());
    let len = 1 + 8 * numbers.len() + variant_len + payload.len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(kind);
    for n in numbers {
        out.extend_from_slice(&n.to_be_bytes());
    }
    if let Some(v) = variant {
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Reads a frame's body (after the length), saying what is wrong with it if anything.
fn parse_frame(body: &[u8]) -> Result<Frame<'_>, &'static str> {
    fn number(bytes: &mut &[u8]) -> Result<u64, &'static str> {
        let (head, rest) = bytes.split_first_chunk::<8>().ok_or("truncated number")?;
        *bytes = rest;
        Ok(u64::from_be_bytes(*head))
    }
    fn variant<'a>(bytes: &mut &'a [u8]) -> Result<&'a str, &'static str> {
        let (head, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or("truncated type name")?;
        let len = usize::from(u16::from_be_bytes(*head));
        if rest.len() < len {
            return Err("truncated type name");
        }
        let (name, rest) = rest.split_at(len);
        *bytes = rest;
        std::str::from_utf8(name).map_err(|_| "type name is not UTF-8")
    }
    let (&kind, mut rest) = body.split_first().ok_or("empty frame")?;
    match kind {
        CAST | CALL => {
            let call = if kind == CALL {
                Some(number(&mut rest)?)
            } else {
                None
            };
            let pid = number(&mut rest)?;
            let variant = variant(&mut rest)?;
            Ok(Frame::Message {
                call,
                pid,
                variant,
                args: rest,
            })
        }
        ANSWER => Ok(Frame::Answer {
            call: number(&mut rest)?,
            bytes: rest,
        }),
        NO_ANSWER => Ok(Frame::NoAnswer {
            call: number(&mut rest)?,
        }),
        _ => Err("unknown frame kind"),
    }
}

/// Every open connection by number, for the answers of calls made over them: the reply
/// port inside a decoded message finds its connection here.
static CONNECTIONS: LazyLock<RwLock<HashMap<u64, Weak<Conn>>>> = LazyLock::new(RwLock::default);
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// What a frame's sender could not write at once, in order.
#[derive(Default)]
struct Backlog {
    bytes: Vec<u8>,
    /// The flusher has bytes in hand: later frames queue behind them.
    flushing: bool,
}

/// One channel connection, either way.
pub(crate) struct Conn {
    id: u64,
    /// Random, in every answer tag of this connection: a tag is not guessed from the
    /// connection's number (which any peer could send in a message's metadata).
    nonce: u64,
    peer: String,
    stream: Arc<TcpStream>,
    backlog: Mutex<Backlog>,
    flush: Notify,
    closed: AtomicBool,
    /// Calls made over this connection that wait for their answer.
    calls: Mutex<HashMap<u64, RpcReplyPort<Vec<u8>>>>,
    next_call: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
    node: Weak<Shared>,
}

impl Conn {
    /// Starts the reader and flusher of an authenticated connection.
    fn start(stream: TcpStream, peer: &str, node: &Node) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
            nonce: random_u64(),
            peer: peer.to_string(),
            stream: Arc::new(stream),
            backlog: Mutex::default(),
            flush: Notify::new(),
            closed: AtomicBool::new(false),
            calls: Mutex::default(),
            next_call: AtomicU64::new(1),
            tasks: Mutex::default(),
            node: Arc::downgrade(&node.shared),
        });
        CONNECTIONS
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn.id, Arc::downgrade(&conn));
        {
            let mut tasks = conn.tasks.lock().unwrap_or_else(|p| p.into_inner());
            let reader = tokio::spawn(read_loop(conn.clone()));
            let flusher = tokio::spawn(flush_loop(conn.clone()));
            tasks.extend([reader.abort_handle(), flusher.abort_handle()]);
        }
        // Closed while the tasks started (the reader met the end at once): `close` found
        // no tasks to stop.
        if conn.closed.load(Ordering::Acquire) {
            abort_all(&conn.tasks);
        }
        conn
    }

    /// Writes a frame, or queues it behind what is waiting. `false` once the connection is
    /// closed.
    fn write(&self, frame: &[u8]) -> bool {
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        if backlog.flushing || !backlog.bytes.is_empty() {
            backlog.bytes.extend_from_slice(frame);
            return true;
        }
        let written = match self.stream.try_write(frame) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // The connection broke or the peer closed it: the reader, which sees which,
            // ends it (a clean close is no failure of the session's).
            Err(e) => {
                tracing::debug!(peer = %self.peer, cause = %e, "message channel write failed");
                return false;
            }
        };
        if written < frame.len() {
            backlog.bytes.extend_from_slice(&frame[written..]);
            backlog.flushing = true;
            drop(backlog);
            self.flush.notify_one();
        }
        true
    }

    /// Sends a message to the actor `pid` of the peer. A message the peer would refuse
    /// for its size is dropped here (a call's caller hears there is no answer), not sent
    /// to break the channel.
    fn send(&self, pid: u64, message: SerializedMessage) {
        let size = match &message {
            SerializedMessage::Cast { variant, args, .. }
            | SerializedMessage::Call { variant, args, .. } => {
                1 + 16 + 2 + variant.len() + args.len()
            }
            SerializedMessage::CallReply(..) => 0,
        };
        if size > MAX_FRAME || variant_too_long(&message) {
            tracing::warn!(peer = %self.peer, size, "a message too large for the channel dropped");
            return;
        }
        match message {
            SerializedMessage::Cast { variant, args, .. } => {
                self.write(&encode_frame(CAST, &[pid], Some(&variant), &args));
            }
            SerializedMessage::Call {
                variant,
                args,
                reply,
                ..
            } => {
                let call = self.next_call.fetch_add(1, Ordering::Relaxed);
                {
                    let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
                    // Callers that gave up (timed out) leave their ports behind; answers to
                    // them would be dropped anyway.
                    if call % 256 == 0 {
                        calls.retain(|_, port| !port.is_closed());
                    }
                    calls.insert(call, reply);
                }
                if !self.write(&encode_frame(CALL, &[call, pid], Some(&variant), &args)) {
                    self.calls
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&call);
                }
            }
            SerializedMessage::CallReply(..) => {}
        }
    }

    /// Handles one frame from the peer.
    fn receive(self: &Arc<Self>, frame: Frame<'_>) {
        match frame {
            Frame::Message {
                call,
                pid,
                variant,
                args,
            } => {
                let (variant, args) = (variant.to_string(), args.to_vec());
                // A call carries, beside its answer tag, a port that only tells whether
                // the message was ever decoded: dropped unused (the actor stopped with the
                // call in its mailbox), the caller hears at once there will be no answer.
                let (message, undecoded) = match call {
                    None => (
                        SerializedMessage::Cast {
                            variant,
                            args,
                            metadata: None,
                        },
                        None,
                    ),
                    Some(call) => {
                        let (decoded, undecoded) = tokio::sync::oneshot::channel();
                        let message = SerializedMessage::Call {
                            variant,
                            args,
                            reply: RpcReplyPort::from(decoded),
                            metadata: Some(answer_tag(self.id, self.nonce, call)),
                        };
                        (message, Some((call, undecoded)))
                    }
                };
                let delivered = ractor::registry::where_is_pid(ActorId::Local(pid))
                    .is_some_and(|cell| cell.send_serialized(message).is_ok());
                match (delivered, undecoded) {
                    (false, Some((call, _))) => {
                        self.write(&encode_frame(NO_ANSWER, &[call], None, &[]));
                    }
                    (true, Some((call, undecoded))) => {
                        let conn = Arc::downgrade(self);
                        tokio::spawn(async move {
                            if undecoded.await.is_err()
                                && let Some(conn) = conn.upgrade()
                            {
                                conn.write(&encode_frame(NO_ANSWER, &[call], None, &[]));
                            }
                        });
                    }
                    _ => {}
                }
            }
            Frame::Answer { call, bytes } => {
                let port = self
                    .calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&call);
                if let Some(port) = port {
                    let _ = port.send(bytes.to_vec());
                }
            }
            Frame::NoAnswer { call } => {
                self.calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&call);
            }
        }
    }

    /// Closes the connection: the tasks stop, waiting calls end with no answer, the socket
    /// shuts. Leaves the session alone.
    fn close(&self) {
        self.shut();
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// [`Conn::close`] but for the waiting calls. `false` if it was closed already.
    fn shut(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        CONNECTIONS
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        abort_all(&self.tasks);
        let _ = socket2::SockRef::from(self.stream.as_ref()).shutdown(std::net::Shutdown::Both);
        true
    }

    /// The connection broke: close it and, if it is still the peer's channel, disconnect
    /// the peer's session, so that its monitors fire as for any lost connection. (The check
    /// and the disconnection run in a task of their own: this may be called by a sender
    /// that holds its route.)
    fn fail(self: &Arc<Self>, why: &str) {
        if !self.shut() {
            return;
        }
        let (Some(shared), Ok(runtime)) =
            (self.node.upgrade(), tokio::runtime::Handle::try_current())
        else {
            self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
            return;
        };
        let (conn, why) = (self.clone(), why.to_string());
        runtime.spawn(async move {
            let (id, peer) = (conn.id, conn.peer.clone());
            let current = shared
                .channels
                .current(&peer)
                .is_some_and(|ids| ids.contains(&id));
            // Forgotten either way: the next message opens another channel rather than
            // going to this closed one.
            shared.channels.forget(&peer, id);
            if current {
                tracing::warn!(%peer, cause = %why, "message channel failed; disconnecting the peer");
                Node { shared }.disconnect(&peer).await;
            }
            // The calls waiting on it end once the peer counts as disconnected, so that
            // their callers hear the node is unreachable, not that nobody answered.
            conn.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
    }
}

impl Conn {
    /// The peer closed the connection cleanly: it stops, or its session with this node
    /// closed. That is no failure of the session's, which closes by itself if it is going;
    /// the connection is only forgotten, so that a later message opens another.
    fn ended(&self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        self.close();
        tracing::debug!(peer = %self.peer, "message channel closed by the peer");
        if let Some(shared) = self.node.upgrade() {
            shared.channels.forget(&self.peer, self.id);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

async fn read_loop(conn: Arc<Conn>) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        if let Err(e) = conn.stream.readable().await {
            conn.fail(&format!("cannot read: {e}"));
            return;
        }
        match conn.stream.try_read(&mut chunk) {
            Ok(0) => {
                conn.ended();
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                conn.fail(&format!("cannot read: {e}"));
                return;
            }
        }
        let mut start = 0;
        while let Some(head) = buf[start..].first_chunk::<4>() {
            let len = u32::from_be_bytes(*head) as usize;
            if len > MAX_FRAME {
                conn.fail(&format!(
                    "a frame of {len} bytes, over the limit of {MAX_FRAME}"
                ));
                return;
            }
            let Some(body) = buf.get(start + 4..start + 4 + len) else {
                break;
            };
            match parse_frame(body) {
                Ok(frame) => conn.receive(frame),
                Err(why) => {
                    conn.fail(&format!("malformed frame: {why}"));
                    return;
                }
            }
            start += 4 + len;
        }
        buf.drain(..start);
    }
}

async fn flush_loop(conn: Arc<Conn>) {
    loop {
        conn.flush.notified().await;
        if conn.closed.load(Ordering::Acquire) {
            return;
        }
        loop {
            let bytes = {
                let mut backlog = conn.backlog.lock().unwrap_or_else(|p| p.into_inner());
                if backlog.bytes.is_empty() {
                    backlog.flushing = false;
                    break;
                }
                std::mem::take(&mut backlog.bytes)
            };
            let mut written = 0;
            while written < bytes.len() {
                let step = match conn.stream.writable().await {
                    Ok(()) => conn.stream.try_write(&bytes[written..]),
                    Err(e) => Err(e),
                };
                match step {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // As for a sender's write: the reader sees how the connection ended.
                    Err(e) => {
                        tracing::debug!(peer = %conn.peer, cause = %e, "message channel write failed");
                        return;
                    }
                }
            }
        }
    }
}

/// Stops the tasks.
fn abort_all(tasks: &Mutex<Vec<AbortHandle>>) {
    for task in tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        task.abort();
    }
}

/// The metadata that marks a message as a call over connection `conn`.
fn answer_tag(conn: u64, nonce: u64, call: u64) -> Vec<u8> {
    let mut tag = Vec::with_capacity(32);
    tag.extend_from_slice(ANSWER_TAG);
    tag.extend_from_slice(&conn.to_be_bytes());
    tag.extend_from_slice(&nonce.to_be_bytes());
    tag.extend_from_slice(&call.to_be_bytes());
    tag
}

/// 64 random bits from the system; a clock-and-address mix if it has none to give.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u64::from_ne_bytes(bytes),
        Err(_) => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            h.finish()
        }
    }
}

/// Whether a message's type name is too long for a frame's 16-bit length.
fn variant_too_long(message: &SerializedMessage) -> bool {
    match message {
        SerializedMessage::Cast { variant, .. } | SerializedMessage::Call { variant, .. } => {
            variant.len() > usize::from(u16::MAX)
        }
        SerializedMessage::CallReply(..) => false,
    }
}

/// Where the answer of a call that came over a channel goes. Dropped unanswered, it tells
/// the caller there will be no answer.
pub(crate) struct Answer {
    conn: Weak<Conn>,
    call: u64,
    answered: bool,
    /// Told (with nothing) once the answer or its refusal is written: the message was
    /// decoded (see `Conn::receive`).
    decoded: Option<RpcReplyPort<Vec<u8>>>,
}

impl Answer {
    /// The answer port a call's metadata names, if it names one; `decoded` is the call's
    /// own port, told once the answer is written.
    pub(crate) fn from_call(metadata: &[u8], decoded: RpcReplyPort<Vec<u8>>) -> Option<Answer> {
        let mut answer = Answer::from_metadata(metadata)?;
        answer.decoded = Some(decoded);
        Some(answer)
    }

    /// The answer port a message's metadata names, if it names one.
    fn from_metadata(metadata: &[u8]) -> Option<Answer> {
        let rest = metadata.strip_prefix(ANSWER_TAG)?;
        let (conn, rest) = rest.split_first_chunk::<8>()?;
        let (nonce, rest) = rest.split_first_chunk::<8>()?;
        let call = rest.first_chunk::<8>()?;
        let conn = CONNECTIONS
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&u64::from_be_bytes(*conn))
            .cloned()
            .unwrap_or_default();
        // A tag with the wrong nonce answers nothing (the port is still a reply port, so
        // the message decodes, but its answer goes nowhere).
        let conn = match conn.upgrade() {
            Some(c) if c.nonce == u64::from_be_bytes(*nonce) => conn,
            _ => Weak::new(),
        };
        Some(Answer {
            conn,
            call: u64::from_be_bytes(*call),
            answered: false,
            decoded: None,
        })
    }

    /// Writes the encoded answer back to the caller's node. `false` when the connection is
    /// gone.
    pub(crate) fn send(mut self, bytes: &[u8]) -> bool {
        self.answered = true;
        let sent = self
            .conn
            .upgrade()
            .is_some_and(|conn| conn.write(&encode_frame(ANSWER, &[self.call], None, bytes)));
        if let Some(decoded) = self.decoded.take() {
            let _ = decoded.send(Vec::new());
        }
        sent
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if !self.answered
            && let Some(conn) = self.conn.upgrade()
        {
            conn.write(&encode_frame(NO_ANSWER, &[self.call], None, &[]));
        }
        if let Some(decoded) = self.decoded.take() {
            let _ = decoded.send(Vec::new());
        }
    }
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
    /// Outbound channels opened and fallen back to the session, for tests and metrics.
    pub(crate) stats: ChannelStats,
}

/// Counters of a node's channels.
#[derive(Debug, Default)]
pub(crate) struct ChannelStats {
    pub(crate) opened: AtomicU64,
    pub(crate) on_session: AtomicU64,
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
        tokio::spawn(async move {
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

/// Asks the peer's kernel, over the session, for a ticket. `None` when the peer has its
/// channel off, or does not answer in time (a troupe without channels).
async fn ask_offer(node: &Node, peer: &str) -> Result<Option<ChannelOffer>, String> {
    let kernel = Addr::<KernelMsg>::on(peer, kernel_path(peer));
    let deadline = Instant::now() + TICKET_WAIT;
    // The kernel's process group may reach this node a moment after the actor that a
    // message was sent to.
    let target = loop {
        match kernel.lookup() {
            Ok(target) => break target,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => return Err(format!("cannot find its kernel: {e}")),
        }
    };
    let (reply, answer) = Reply::channel();
    let request = KernelMsg::Wire(KernelWire::OpenChannel {
        node: node.name().to_string(),
        reply,
    });
    target
        .cell
        .send_message(request)
        .map_err(|_| "its kernel stopped".to_string())?;
    match tokio::time::timeout_at(deadline.into(), answer.recv()).await {
        Ok(Ok(offer)) => Ok(offer),
        Ok(Err(e)) => Err(format!("no ticket: {e}")),
        Err(_) => Ok(None),
    }
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
        match ask_offer(&node, &peer).await? {
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
    let stats = &node.shared.channels.stats;
    match tokio::time::timeout(node.shared.connect_timeout, attempt).await {
        Ok(Ok(Some(conn))) => {
            stats.opened.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "message channel open");
            out.opened(Route::Open(conn));
        }
        Ok(Ok(None)) => {
            stats.on_session.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "the peer has no message channel; its messages go through the session");
            out.opened(Route::Session);
        }
        Ok(Err(why)) => {
            stats.on_session.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, cause = %why, "cannot open a message channel; messages go through the session");
            out.opened(Route::Session);
        }
        Err(_) => {
            stats.on_session.fetch_add(1, Ordering::Relaxed);
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

    #[test]
    fn frames_read_back_as_written() {
        let cast = encode_frame(CAST, &[7], Some("a::Msg"), b"payload");
        assert_eq!(
            parse_frame(&cast[4..]).unwrap(),
            Frame::Message {
                call: None,
                pid: 7,
                variant: "a::Msg",
                args: b"payload"
            }
        );
        let call = encode_frame(CALL, &[3, 9], Some(""), b"");
        assert_eq!(
            parse_frame(&call[4..]).unwrap(),
            Frame::Message {
                call: Some(3),
                pid: 9,
                variant: "",
                args: b""
            }
        );
        let answer = encode_frame(ANSWER, &[3], None, b"yes");
        assert_eq!(
            parse_frame(&answer[4..]).unwrap(),
            Frame::Answer {
                call: 3,
                bytes: b"yes"
            }
        );
        let none = encode_frame(NO_ANSWER, &[3], None, b"");
        assert_eq!(
            parse_frame(&none[4..]).unwrap(),
            Frame::NoAnswer { call: 3 }
        );
        assert_eq!(
            u32::from_be_bytes(*cast.first_chunk::<4>().unwrap()) as usize,
            cast.len() - 4
        );
    }

    #[test]
    fn every_truncation_and_garble_of_a_frame_is_an_error_not_a_panic() {
        let frame = encode_frame(CALL, &[3, 9], Some("a::Msg"), b"payload");
        let body = &frame[4..];
        for cut in 0..body.len() {
            // A cut inside the payload still parses (the payload is the rest); anything
            // shorter says what is missing.
            let _ = parse_frame(&body[..cut]);
        }
        assert!(parse_frame(&[]).is_err());
        assert!(parse_frame(&[99, 1, 2]).is_err());
        assert!(parse_frame(&body[..10]).is_err());
        let mut bad_name = encode_frame(CAST, &[1], Some("ab"), b"")[4..].to_vec();
        bad_name[11] = 0xff;
        assert_eq!(parse_frame(&bad_name), Err("type name is not UTF-8"));
        let mut long_name = encode_frame(CAST, &[1], Some("ab"), b"")[4..].to_vec();
        long_name[9..11].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(parse_frame(&long_name), Err("truncated type name"));
    }

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

    #[test]
    fn an_answer_tag_names_its_connection_and_call_and_nothing_else_does() {
        let tag = answer_tag(5, 77, 11);
        let answer = Answer::from_metadata(&tag).unwrap();
        assert_eq!(answer.call, 11);
        assert!(answer.conn.upgrade().is_none(), "no connection 5 is open");
        assert!(Answer::from_metadata(b"something else entirely").is_none());
        assert!(Answer::from_metadata(&tag[..28]).is_none());
    }
}
