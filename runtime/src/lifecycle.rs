//! How actors are started and stopped, below both supervisors and the spawner: the start
//! arguments of a child, how it is stopped, and the boxed futures factories return. A leaf,
//! so that the spawner (which starts and stops actors for other nodes) and supervisors
//! (which use the spawner for remote children) do not depend on each other.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ractor::ActorCell;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How a child is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shutdown {
    /// Killed at once, without running its stop hook.
    BrutalKill,
    /// Asked to stop with reason `shutdown`, and killed if it has not stopped in time.
    #[serde(rename = "timeout_ms", with = "crate::codec::millis")]
    Timeout(Duration),
    /// Asked to stop with reason `shutdown`, and waited for as long as it takes.
    Infinity,
}

/// Serialized start arguments of a child (MessagePack).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Args(#[serde(with = "serde_bytes_compat")] pub Vec<u8>);

impl Args {
    /// No arguments.
    pub fn none() -> Args {
        Args::default()
    }

    /// Encodes a value as arguments.
    pub fn encode<T: Serialize>(value: &T) -> Result<Args, crate::codec::CodecError> {
        crate::codec::encode(value).map(Args)
    }

    /// Decodes the arguments as a value.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, crate::codec::CodecError> {
        crate::codec::decode(&self.0)
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Stops an actor: kill, or ask with reason `shutdown` and kill when it is late.
pub(crate) async fn stop_cell(cell: ActorCell, shutdown: Shutdown) {
    match shutdown {
        Shutdown::BrutalKill => {
            let _ = cell.kill_and_wait(None).await;
        }
        Shutdown::Timeout(limit) => {
            if let Err(ractor::RactorErr::Timeout) = cell
                .stop_and_wait(Some("shutdown".into()), Some(limit))
                .await
            {
                warn!(actor = %cell.get_id(), ?limit, "child did not stop in time; killing it");
                let _ = cell.kill_and_wait(None).await;
            }
        }
        Shutdown::Infinity => {
            let _ = cell.stop_and_wait(Some("shutdown".into()), None).await;
        }
    }
}

/// Bytes as a MessagePack bin (not an array of integers).
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}
