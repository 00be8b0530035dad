//! The wire codec: how a message crosses nodes, and why foreign bytes never panic.
//!
//! A remote message is a serde type encoded with MessagePack with *named* fields
//! (`rmp_serde::to_vec_named`), so a field added later with `#[serde(default)]` stays
//! compatible with peers that do not know it. `#[derive(RemoteMessage)]` wires a type to this
//! module through `ractor::Message::{serialize, deserialize}`.
//!
//! Every frame carries the Rust type name of its message in the `variant` slot of ractor's
//! `SerializedMessage`; a frame addressed to an actor of another type is counted as a wrong
//! type and dropped before any decoding. Decoding is fallible all the way down: a truncated,
//! garbled or hostile payload becomes a [`CodecError`], is logged, counted in
//! [`DecodeStats`] and dropped. No actor and no node dies of it. (ractor's
//! `BytesConvertable::from_bytes` may panic, which is why it is never used here.)
//!
//! Calls carry a [`Reply`] port inside the message. On the sending side the port is turned
//! into ractor's byte-level reply channel while the message is encoded; on the receiving side
//! it is rebuilt from that channel while the message is decoded. Both hand-overs go through a
//! thread-local slot that lives only for the duration of one synchronous encode or decode.

use std::cell::RefCell;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::RpcReplyPort;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::oneshot;

/// Why bytes could not be turned into a value, or a value into bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload is not valid MessagePack for the expected type.
    #[error("malformed payload for {expected}: {cause}")]
    Malformed {
        /// The Rust type the payload was decoded as.
        expected: &'static str,
        /// The decoder's own account of the problem.
        cause: String,
    },
    /// The frame was addressed to an actor whose message type differs.
    #[error("frame of type {found:?} sent to an actor that accepts {expected}")]
    WrongType {
        /// The type the receiving actor accepts.
        expected: &'static str,
        /// The type named in the frame.
        found: String,
    },
    /// A call's reply port could not be matched with the frame's reply channel.
    #[error("reply port mismatch in {expected}: {cause}")]
    ReplyPort {
        /// The type being encoded or decoded.
        expected: &'static str,
        /// What went wrong.
        cause: &'static str,
    },
    /// The value could not be encoded.
    #[error("cannot encode {ty}: {cause}")]
    Encode {
        /// The type being encoded.
        ty: &'static str,
        /// The encoder's account.
        cause: String,
    },
}

static DECODED: AtomicU64 = AtomicU64::new(0);
static MALFORMED: AtomicU64 = AtomicU64::new(0);
static WRONG_TYPE: AtomicU64 = AtomicU64::new(0);
static REPLY_PORT: AtomicU64 = AtomicU64::new(0);

/// Counters of what the decoder saw on this node, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeStats {
    /// Frames decoded into messages.
    pub decoded: u64,
    /// Frames dropped because their payload was malformed.
    pub malformed: u64,
    /// Frames dropped because they named another message type.
    pub wrong_type: u64,
    /// Frames dropped because a reply port was missing or doubled.
    pub reply_port: u64,
}

impl DecodeStats {
    /// All frames dropped, whatever the cause.
    pub fn errors(&self) -> u64 {
        self.malformed + self.wrong_type + self.reply_port
    }
}

/// The decoder's counters since this process started.
pub fn decode_stats() -> DecodeStats {
    DecodeStats {
        decoded: DECODED.load(Ordering::Relaxed),
        malformed: MALFORMED.load(Ordering::Relaxed),
        wrong_type: WRONG_TYPE.load(Ordering::Relaxed),
        reply_port: REPLY_PORT.load(Ordering::Relaxed),
    }
}

fn count(err: &CodecError) {
    let counter = match err {
        CodecError::Malformed { .. } => &MALFORMED,
        CodecError::WrongType { .. } => &WRONG_TYPE,
        CodecError::ReplyPort { .. } => &REPLY_PORT,
        CodecError::Encode { .. } => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Encodes a value as MessagePack with named fields.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode {
        ty: std::any::type_name::<T>(),
        cause: e.to_string(),
    })
}

/// Decodes a value from MessagePack. Never panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed {
        expected: std::any::type_name::<T>(),
        cause: e.to_string(),
    })
}

/// Durations as whole milliseconds, for `#[serde(with = "troupe_runtime::codec::millis")]`:
/// they read well in spec files and travel as one integer.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the duration as milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads milliseconds as a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

thread_local! {
    /// The byte-level reply channel produced while encoding a call.
    static OUTGOING_REPLY: RefCell<Option<RpcReplyPort<Vec<u8>>>> = const { RefCell::new(None) };
    /// Where the answer of the call being decoded goes.
    static INCOMING_REPLY: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

/// The metadata prefix of a call whose answer goes back over a message channel; the rest
/// of the metadata names the connection and the call.
pub(crate) const ANSWER_TAG: &[u8; 8] = b"troupe-c";

/// Where the answer of a call that came over a message channel goes: written back once,
/// as bytes; dropped unanswered, it tells the caller that no answer will come. The message
/// channel implements it; the codec only holds it (the transport sits above the codec).
pub(crate) trait Answer: Send {
    /// Writes the encoded answer back to the caller's node; `false` when the connection is
    /// gone.
    fn send(self: Box<Self>, bytes: &[u8]) -> bool;
}

/// Finds the answer port a call's metadata names (or `None` when it names none). The
/// message channel registers it when a node first binds one; until then no call can have
/// come over a channel.
pub(crate) type FindAnswer = fn(&[u8], RpcReplyPort<Vec<u8>>) -> Option<Box<dyn Answer>>;

/// Where [`FindAnswer`] is: set once, by the message channel.
static FIND_ANSWER: std::sync::OnceLock<FindAnswer> = std::sync::OnceLock::new();

/// Tells the codec how to find a channel call's answer port.
pub(crate) fn answers_through(find: FindAnswer) {
    let _ = FIND_ANSWER.set(find);
}

/// Where a call that came from another node is answered.
enum Incoming {
    /// Through ractor_cluster's session: its byte-level reply channel.
    Session(RpcReplyPort<Vec<u8>>),
    /// Back on the message channel the call came over.
    Channel(Box<dyn Answer>),
}

/// Encodes a message into ractor's frame: a cast, or a call when the message carries a
/// [`Reply`]. Used by `#[derive(RemoteMessage)]`.
pub fn encode_message<M: Serialize>(msg: &M) -> Result<SerializedMessage, BoxedDowncastErr> {
    OUTGOING_REPLY.with(|slot| slot.borrow_mut().take());
    let args = encode(msg).map_err(|e| {
        tracing::warn!(cause = %e, "cannot encode message");
        BoxedDowncastErr
    })?;
    let variant = std::any::type_name::<M>().to_string();
    Ok(match OUTGOING_REPLY.with(|slot| slot.borrow_mut().take()) {
        Some(reply) => SerializedMessage::Call {
            variant,
            args,
            reply,
            metadata: None,
        },
        None => SerializedMessage::Cast {
            variant,
            args,
            metadata: None,
        },
    })
}

/// Decodes a frame into a message, counting and logging whatever is wrong with it. Used by
/// `#[derive(RemoteMessage)]`; see [`decode_frame`] for the error itself.
pub fn decode_message<M: DeserializeOwned>(
    frame: SerializedMessage,
) -> Result<M, BoxedDowncastErr> {
    decode_frame(frame).map_err(|e| {
        tracing::warn!(cause = %e, "dropped an undecodable frame");
        BoxedDowncastErr
    })
}

/// Decodes a frame into a message of type `M`, returning why it cannot.
pub fn decode_frame<M: DeserializeOwned>(frame: SerializedMessage) -> Result<M, CodecError> {
    let expected = std::any::type_name::<M>();
    let (variant, args, reply) = match frame {
        SerializedMessage::Cast { variant, args, .. } => (variant, args, None),
        // A call over a message channel names its answer port in its metadata; the port is
        // made first, so that a frame dropped below still tells the caller that no answer
        // will come.
        SerializedMessage::Call {
            variant,
            args,
            reply,
            metadata: Some(metadata),
        } if metadata.starts_with(ANSWER_TAG) => {
            let incoming = FIND_ANSWER
                .get()
                .and_then(|find| find(&metadata, reply))
                .map(Incoming::Channel);
            (variant, args, incoming)
        }
        SerializedMessage::Call {
            variant,
            args,
            reply,
            ..
        } => (variant, args, Some(Incoming::Session(reply))),
        SerializedMessage::CallReply(..) => {
            let err = CodecError::WrongType {
                expected,
                found: "call reply".into(),
            };
            count(&err);
            return Err(err);
        }
    };
    let result = if variant != expected {
        Err(CodecError::WrongType {
            expected,
            found: variant,
        })
    } else {
        let had_reply = reply.is_some();
        INCOMING_REPLY.with(|slot| *slot.borrow_mut() = reply);
        let decoded = decode::<M>(&args);
        let unused = INCOMING_REPLY
            .with(|slot| slot.borrow_mut().take())
            .is_some();
        match decoded {
            Ok(_) if had_reply && unused => Err(CodecError::ReplyPort {
                expected,
                cause: "a call frame whose message has no reply port",
            }),
            other => other,
        }
    };
    match &result {
        Ok(_) => {
            DECODED.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => count(e),
    }
    result
}

/// The reply port of a call: the receiver of a request answers through it exactly once.
///
/// A `Reply` travels inside the request message. When the request stays on this node it is a
/// plain channel; when it crosses nodes the answer is encoded with this module and goes back
/// on the message channel the request came over (or through ractor's byte-level reply
/// channel, from a peer without message channels). A message may carry at most one `Reply`.
pub struct Reply<T> {
    port: Mutex<Option<Port<T>>>,
}

enum Port<T> {
    /// The caller is on this node and has not handed the port to the wire.
    Local {
        answer: oneshot::Sender<T>,
        handoff: oneshot::Sender<oneshot::Receiver<Vec<u8>>>,
    },
    /// The caller is on another node and called through the session.
    Wire(RpcReplyPort<Vec<u8>>),
    /// The caller is on another node and called over its message channel.
    Channel(Box<dyn Answer>),
}

impl<T> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply")
    }
}

/// What a caller waits on: the other half of a [`Reply`].
#[derive(Debug)]
pub struct ReplyReceiver<T> {
    answer: oneshot::Receiver<T>,
    handoff: oneshot::Receiver<oneshot::Receiver<Vec<u8>>>,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The receiver dropped the reply port without answering (it stopped, or chose not to).
    #[error("the reply port was dropped without an answer")]
    Dropped,
    /// The answer arrived but could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Reply<T> {
    /// A new reply port and the receiver its answer arrives on.
    pub fn channel() -> (Reply<T>, ReplyReceiver<T>) {
        let (answer_tx, answer_rx) = oneshot::channel();
        let (handoff_tx, handoff_rx) = oneshot::channel();
        let reply = Reply {
            port: Mutex::new(Some(Port::Local {
                answer: answer_tx,
                handoff: handoff_tx,
            })),
        };
        (
            reply,
            ReplyReceiver {
                answer: answer_rx,
                handoff: handoff_rx,
            },
        )
    }

    /// Answers the call. Returns `false` when the caller is gone (it timed out, stopped, or its
    /// node is unreachable); the answer is then dropped.
    pub fn send(self, value: T) -> bool {
        let port = self.port.into_inner().unwrap_or_else(|p| p.into_inner());
        match port {
            Some(Port::Local { answer, .. }) => answer.send(value).is_ok(),
            Some(Port::Wire(port)) => match encode(&value) {
                Ok(bytes) => port.send(bytes).is_ok(),
                Err(e) => {
                    tracing::warn!(cause = %e, "cannot encode a reply");
                    false
                }
            },
            Some(Port::Channel(answer)) => match encode(&value) {
                Ok(bytes) => answer.send(&bytes),
                Err(e) => {
                    tracing::warn!(cause = %e, "cannot encode a reply");
                    false
                }
            },
            None => false,
        }
    }
}

impl<T: DeserializeOwned> ReplyReceiver<T> {
    /// Waits for the answer. Wrap it in a timeout: a receiver that never answers and never
    /// drops the port keeps this waiting.
    pub async fn recv(self) -> Result<T, ReplyError> {
        let ReplyReceiver {
            answer,
            mut handoff,
        } = self;
        match answer.await {
            Ok(value) => Ok(value),
            // The local sender is dropped either because the port was handed to the wire
            // (the hand-off is sent first) or because nobody answered.
            Err(_) => match handoff.try_recv() {
                Ok(bytes) => {
                    let bytes = bytes.await.map_err(|_| ReplyError::Dropped)?;
                    let value = decode::<T>(&bytes);
                    if let Err(e) = &value {
                        count(e);
                    }
                    Ok(value?)
                }
                Err(_) => Err(ReplyError::Dropped),
            },
        }
    }
}

impl<T> Serialize for Reply<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut guard = self.port.lock().unwrap_or_else(|p| p.into_inner());
        match guard.take() {
            Some(Port::Local { answer, handoff }) => {
                let (tx, rx) = oneshot::channel();
                if OUTGOING_REPLY.with(|slot| slot.borrow().is_some()) {
                    *guard = Some(Port::Local { answer, handoff });
                    return Err(S::Error::custom("a message may carry only one reply port"));
                }
                // Hand the byte receiver over before the typed sender is dropped: the caller
                // looks for the hand-off when it sees the typed channel close.
                let _ = handoff.send(rx);
                drop(answer);
                OUTGOING_REPLY.with(|slot| *slot.borrow_mut() = Some(RpcReplyPort::from(tx)));
                serializer.serialize_unit()
            }
            Some(port @ (Port::Wire(_) | Port::Channel(_))) => {
                *guard = Some(port);
                Err(S::Error::custom(
                    "a reply port received from another node cannot be forwarded",
                ))
            }
            None => Err(S::Error::custom("this reply port was already used")),
        }
    }
}

impl<'de, T> Deserialize<'de> for Reply<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        <()>::deserialize(deserializer)?;
        match INCOMING_REPLY.with(|slot| slot.borrow_mut().take()) {
            Some(Incoming::Session(port)) => Ok(Reply {
                port: Mutex::new(Some(Port::Wire(port))),
            }),
            Some(Incoming::Channel(answer)) => Ok(Reply {
                port: Mutex::new(Some(Port::Channel(answer))),
            }),
            None => Err(D::Error::custom(
                "a reply port without a reply channel (a cast, or a second port)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        a: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        a: u32,
        #[serde(default)]
        b: Option<String>,
    }

    #[test]
    fn adding_an_optional_field_stays_compatible_both_ways() {
        let old = encode(&V1 { a: 7 }).unwrap();
        assert_eq!(decode::<V2>(&old).unwrap(), V2 { a: 7, b: None });
        let new = encode(&V2 {
            a: 7,
            b: Some("x".into()),
        })
        .unwrap();
        assert_eq!(decode::<V1>(&new).unwrap(), V1 { a: 7 });
    }

    #[test]
    fn wrong_type_is_refused_before_decoding() {
        let frame = encode_message(&V1 { a: 1 }).unwrap();
        let err = decode_frame::<V2>(frame).unwrap_err();
        assert!(matches!(err, CodecError::WrongType { .. }), "{err}");
    }

    #[derive(Serialize, Deserialize)]
    struct Ask {
        q: u32,
        reply: Reply<u32>,
    }

    #[tokio::test]
    async fn a_reply_port_survives_the_wire() {
        let (reply, rx) = Reply::<u32>::channel();
        let frame = encode_message(&Ask { q: 20, reply }).unwrap();
        assert!(matches!(frame, SerializedMessage::Call { .. }));
        // What the remote NodeSession does: split the reply channel off the frame.
        let ask: Ask = decode_frame(frame).unwrap();
        assert!(ask.reply.send(ask.q + 1));
        assert_eq!(rx.recv().await.unwrap(), 21);
    }

    #[tokio::test]
    async fn a_dropped_reply_is_reported() {
        let (reply, rx) = Reply::<u32>::channel();
        drop(reply);
        assert!(matches!(rx.recv().await, Err(ReplyError::Dropped)));
    }

    #[derive(Serialize, Deserialize)]
    enum Asks {
        Try {
            what: String,
            reply: Reply<Result<(), String>>,
        },
        Count {
            reply: Reply<u64>,
        },
    }

    #[tokio::test]
    async fn a_result_reply_leaves_the_next_call_unharmed() {
        for _ in 0..2 {
            let (reply, rx) = Reply::channel();
            let frame = encode_message(&Asks::Try {
                what: "x".into(),
                reply,
            })
            .unwrap();
            let Asks::Try { reply, .. } = decode_frame(frame).unwrap() else {
                panic!()
            };
            assert!(reply.send(Err("no".into())));
            assert_eq!(rx.recv().await.unwrap(), Err("no".to_string()));
            let (reply, rx) = Reply::channel();
            let frame = encode_message(&Asks::Count { reply }).unwrap();
            let Asks::Count { reply } = decode_frame(frame).unwrap() else {
                panic!()
            };
            assert!(reply.send(7));
            assert_eq!(rx.recv().await.unwrap(), 7);
        }
    }

    #[test]
    fn a_call_frame_without_a_port_in_its_message_is_refused() {
        let (tx, _rx) = oneshot::channel();
        let frame = SerializedMessage::Call {
            variant: std::any::type_name::<V1>().to_string(),
            args: encode(&V1 { a: 1 }).unwrap(),
            reply: RpcReplyPort::from(tx),
            metadata: None,
        };
        assert!(matches!(
            decode_frame::<V1>(frame),
            Err(CodecError::ReplyPort { .. })
        ));
    }
}

/// Feeds the decoder random and mutated frames: it must answer each with a value or an
/// error, never a panic, and never accept a frame of another type.
#[cfg(test)]
mod fuzz {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    enum Msg {
        Cast {
            a: u64,
            text: String,
            items: Vec<(u32, Option<String>)>,
        },
        Ask {
            q: Vec<u8>,
            reply: Reply<Vec<String>>,
        },
        Unit,
    }

    /// A small deterministic generator (xorshift64*), so that a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn valid(rng: &mut Rng) -> Vec<u8> {
        let msg = match rng.below(3) {
            0 => Msg::Cast {
                a: rng.next(),
                text: "x".repeat(rng.below(40)),
                items: (0..rng.below(6))
                    .map(|i| (i as u32, (i % 2 == 0).then(|| "y".into())))
                    .collect(),
            },
            1 => Msg::Unit,
            _ => Msg::Cast {
                a: 0,
                text: String::new(),
                items: vec![],
            },
        };
        encode(&msg).expect("encodes")
    }

    fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
        for _ in 0..=rng.below(4) {
            match rng.below(6) {
                0 if !bytes.is_empty() => {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 if !bytes.is_empty() => {
                    let cut = rng.below(bytes.len());
                    bytes.truncate(cut);
                }
                2 => {
                    let i = rng.below(bytes.len() + 1);
                    let n = rng.below(8) + 1;
                    let extra = rng.bytes(n);
                    bytes.splice(i..i, extra);
                }
                3 if !bytes.is_empty() => {
                    // Absurd lengths: array, map, str and bin headers claiming 4 GiB.
                    let i = rng.below(bytes.len());
                    let header = [[0xdd], [0xdf], [0xdb], [0xc6]][rng.below(4)];
                    bytes.splice(i..i, header.iter().copied().chain([0xff, 0xff, 0xff, 0xff]));
                }
                4 if !bytes.is_empty() => {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next() as u8;
                }
                _ => {
                    let n = rng.below(16);
                    bytes.extend(rng.bytes(n));
                }
            }
        }
        bytes
    }

    #[test]
    fn a_hundred_thousand_hostile_frames_never_panic() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let expected = std::any::type_name::<Msg>();
        let mut decoded = 0;
        for round in 0..100_000 {
            let args = match round % 3 {
                0 => {
                    let n = rng.below(256);
                    rng.bytes(n)
                }
                _ => {
                    let v = valid(&mut rng);
                    mutate(&mut rng, v)
                }
            };
            let variant = if round % 50 == 0 {
                "other::Type".to_string()
            } else {
                expected.to_string()
            };
            let frame = if round % 7 == 0 {
                let (tx, _rx) = oneshot::channel();
                SerializedMessage::Call {
                    variant: variant.clone(),
                    args,
                    reply: RpcReplyPort::from(tx),
                    metadata: None,
                }
            } else {
                SerializedMessage::Cast {
                    variant: variant.clone(),
                    args,
                    metadata: None,
                }
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decode_frame::<Msg>(frame)
            }));
            let result = result.unwrap_or_else(|_| panic!("the decoder panicked on round {round}"));
            if variant != expected {
                assert!(matches!(result, Err(CodecError::WrongType { .. })));
            }
            if result.is_ok() {
                decoded += 1;
            }
        }
        // Mutations leave some frames valid: the decoder is exercised on both sides.
        assert!(decoded > 0);
    }
}
