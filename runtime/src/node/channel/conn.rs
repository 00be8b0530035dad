//! One channel connection, either way: its frames, its writer and reader, and the answer
//! ports of the calls that came over it. (`super` opens, admits and routes.)

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};

use ractor::message::SerializedMessage;
use ractor::{ActorId, RpcReplyPort};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::{ANSWER, CALL, CAST, MAX_FRAME, NO_ANSWER};
use crate::codec::ANSWER_TAG;
use crate::node::{Node, Shared};

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
    pub(super) id: u64,
    /// Random, in every answer tag of this connection: a tag is not guessed from the
    /// connection's number (which any peer could send in a message's metadata).
    nonce: u64,
    pub(super) peer: String,
    pub(super) stream: Arc<TcpStream>,
    backlog: Mutex<Backlog>,
    flush: Notify,
    pub(super) closed: AtomicBool,
    /// Calls made over this connection that wait for their answer.
    calls: Mutex<HashMap<u64, RpcReplyPort<Vec<u8>>>>,
    next_call: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
    node: Weak<Shared>,
}

impl Conn {
    /// Starts the reader and flusher of an authenticated connection.
    pub(super) fn start(stream: TcpStream, peer: &str, node: &Node) -> Arc<Conn> {
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
    pub(super) fn send(&self, pid: u64, message: SerializedMessage) {
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
    pub(super) fn close(&self) {
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
pub(super) fn abort_all(tasks: &Mutex<Vec<AbortHandle>>) {
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
pub(crate) struct ChannelAnswer {
    conn: Weak<Conn>,
    call: u64,
    answered: bool,
    /// Told (with nothing) once the answer or its refusal is written: the message was
    /// decoded (see `Conn::receive`).
    decoded: Option<RpcReplyPort<Vec<u8>>>,
}

impl ChannelAnswer {
    /// The answer port a call's metadata names, if it names one; `decoded` is the call's
    /// own port, told once the answer is written. (The codec's [`crate::codec::FindAnswer`].)
    pub(crate) fn from_call(
        metadata: &[u8],
        decoded: RpcReplyPort<Vec<u8>>,
    ) -> Option<Box<dyn crate::codec::Answer>> {
        let mut answer = ChannelAnswer::from_metadata(metadata)?;
        answer.decoded = Some(decoded);
        Some(Box::new(answer))
    }

    /// The answer port a message's metadata names, if it names one.
    fn from_metadata(metadata: &[u8]) -> Option<ChannelAnswer> {
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
        Some(ChannelAnswer {
            conn,
            call: u64::from_be_bytes(*call),
            answered: false,
            decoded: None,
        })
    }
}

impl crate::codec::Answer for ChannelAnswer {
    fn send(mut self: Box<Self>, bytes: &[u8]) -> bool {
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

impl Drop for ChannelAnswer {
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

    #[test]
    fn an_answer_tag_names_its_connection_and_call_and_nothing_else_does() {
        let tag = answer_tag(5, 77, 11);
        let answer = ChannelAnswer::from_metadata(&tag).unwrap();
        assert_eq!(answer.call, 11);
        assert!(answer.conn.upgrade().is_none(), "no connection 5 is open");
        assert!(ChannelAnswer::from_metadata(b"something else entirely").is_none());
        assert!(ChannelAnswer::from_metadata(&tag[..28]).is_none());
    }
}
