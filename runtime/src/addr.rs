//! Location-transparent addresses.
//!
//! An actor becomes addressable by [`register`]ing under a path (`master`, `agent/a1`,
//! `task/t7`, `node/n1/ping`, or any application name). Registration joins a process group
//! of that path in ractor's `pg`, which ractor_cluster keeps in sync between connected nodes,
//! so a member on another node appears here as a ractor `RemoteActor` shim.
//!
//! [`Addr<M>`] is the typed handle to a path. It resolves lazily, caches the actor it found,
//! and resolves again when that actor has stopped, so a handle keeps working across restarts
//! of its target. A handle may be qualified by node ([`Addr::on`]); an unqualified handle
//! prefers a local member, then any connected node's. The first message to a known but
//! unconnected node opens the connection.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorRef, ActorStatus, Message, MessagingErr};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{CodecError, Reply, ReplyError};
pub(crate) use crate::node::Target;
use crate::node::{ConnectError, Node, SCOPE};

/// How long a path not found waits for the news of its registration from a connected node
/// (`crate::node::endpoint::session_barrier`): a session round trip, unless the peer is stuck.
const BARRIER_WAIT: Duration = Duration::from_secs(2);

/// Why an address could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    /// No actor is registered under the path (on the given node, when qualified).
    #[error("no actor at {path}{}", on_node(.node))]
    NoSuchActor {
        /// The path.
        path: String,
        /// The node it was looked up on, when qualified.
        node: Option<String>,
    },
    /// A call got no answer in time. The request may still be handled later.
    #[error("{path} did not answer within {after:?}")]
    Timeout {
        /// The path.
        path: String,
        /// The time waited.
        after: Duration,
    },
    /// The node of the path could not be reached.
    #[error("{path}: node {node} is unreachable: {cause}")]
    NodeUnreachable {
        /// The path.
        path: String,
        /// The node.
        node: String,
        /// Why.
        cause: String,
    },
    /// The node of the path refused this node's cookie, or presented a different one.
    #[error("{path}: node at {addr} refused the connection: the cookies differ")]
    CookieRefused {
        /// The path.
        path: String,
        /// The node's address.
        addr: std::net::SocketAddr,
    },
    /// The actor at the path accepts another message type.
    #[error("the actor at {path} does not accept {expected}")]
    WrongType {
        /// The path.
        path: String,
        /// The message type sent.
        expected: &'static str,
    },
    /// The actor dropped the call's reply port without answering (it stopped, or its node
    /// went away during the call).
    #[error("{path} dropped the call without answering")]
    NoReply {
        /// The path.
        path: String,
    },
    /// The answer could not be decoded.
    #[error("{path}: {cause}")]
    Codec {
        /// The path.
        path: String,
        /// The decoding error.
        cause: CodecError,
    },
    /// The path is empty or malformed.
    #[error("invalid path {path:?}: use non-empty '/'-separated segments without spaces")]
    InvalidPath {
        /// The path.
        path: String,
    },
}

fn on_node(node: &Option<String>) -> String {
    node.as_ref()
        .map(|n| format!(" on node {n}"))
        .unwrap_or_default()
}

/// A failed send: the error, and the message when it could be handed back.
pub struct SendError<M> {
    /// Why the send failed.
    pub error: AddrError,
    /// The message, unless it was consumed on its way to the wire.
    pub message: Option<M>,
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendError({:?})", self.error)
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<M> std::error::Error for SendError<M> {}

/// Checks a path: non-empty segments separated by `/`, no whitespace.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 512
        && path.split('/').all(|seg| !seg.is_empty())
        && !path.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Makes `actor` reachable under `path`, from this node and every connected node. Several
/// actors may share a path; an address then picks a local one first. Registration ends when
/// the actor stops.
pub fn register<M: Message>(path: &str, actor: &ActorRef<M>) -> Result<(), AddrError> {
    if !valid_path(path) {
        return Err(AddrError::InvalidPath { path: path.into() });
    }
    ractor::pg::join_scoped(SCOPE.to_string(), path.to_string(), vec![actor.get_cell()]);
    Ok(())
}

/// [`register`] for an untyped actor cell (a supervisor's child, say).
pub fn register_cell(path: &str, actor: &ActorCell) -> Result<(), AddrError> {
    if !valid_path(path) {
        return Err(AddrError::InvalidPath { path: path.into() });
    }
    ractor::pg::join_scoped(SCOPE.to_string(), path.to_string(), vec![actor.clone()]);
    Ok(())
}

/// Removes `actor` from `path`.
pub fn unregister<M: Message>(path: &str, actor: &ActorRef<M>) {
    ractor::pg::leave_scoped(SCOPE.to_string(), path.to_string(), vec![actor.get_cell()]);
}

/// [`unregister`] for an untyped actor cell.
pub fn unregister_cell(path: &str, actor: &ActorCell) {
    ractor::pg::leave_scoped(SCOPE.to_string(), path.to_string(), vec![actor.clone()]);
}

/// A typed, location-transparent handle to the actor(s) registered under a path.
pub struct Addr<M> {
    path: Arc<str>,
    node: Option<Arc<str>>,
    cached: Arc<Mutex<Option<Target>>>,
    _message: PhantomData<fn() -> M>,
}

impl<M> Clone for Addr<M> {
    fn clone(&self) -> Self {
        Addr {
            path: self.path.clone(),
            node: self.node.clone(),
            cached: self.cached.clone(),
            _message: PhantomData,
        }
    }
}

impl<M> fmt::Debug for Addr<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({self})")
    }
}

impl<M> fmt::Display for Addr<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{node}:{}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

fn alive(cell: &ActorCell) -> bool {
    cell.get_status() < ActorStatus::Draining
}

impl<M: Message> Addr<M> {
    /// A handle to `path` wherever it is registered.
    pub fn new(path: impl Into<String>) -> Addr<M> {
        Addr {
            path: path.into().into(),
            node: None,
            cached: Arc::default(),
            _message: PhantomData,
        }
    }

    /// A handle to `path` on the named node only.
    pub fn on(node: impl Into<String>, path: impl Into<String>) -> Addr<M> {
        Addr {
            node: Some(node.into().into()),
            ..Addr::new(path)
        }
    }

    /// The path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The node the handle is bound to, when qualified.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    fn no_such_actor(&self) -> AddrError {
        AddrError::NoSuchActor {
            path: self.path.to_string(),
            node: self.node.as_deref().map(str::to_string),
        }
    }

    /// Looks the path up among the members known now, without connecting anywhere.
    pub(crate) fn lookup(&self) -> Result<Target, AddrError> {
        if !valid_path(&self.path) {
            return Err(AddrError::InvalidPath {
                path: self.path.to_string(),
            });
        }
        if let Some(target) = self
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|t| alive(&t.cell))
        {
            return Ok(target.clone());
        }
        let node = Node::current();
        let here = node
            .as_ref()
            .map(|n| n.name().to_string())
            .unwrap_or_default();
        let members = ractor::pg::get_scoped_members(&SCOPE.to_string(), &self.path.to_string());
        let mut found: Option<Target> = None;
        for cell in members.into_iter().filter(alive) {
            let owner = match cell.get_id() {
                ractor::ActorId::Local(_) => here.clone(),
                ractor::ActorId::Remote { node_id, .. } => {
                    match node
                        .as_ref()
                        .and_then(|n| n.peers().name_of_session(node_id))
                    {
                        Some(name) => name,
                        None => continue,
                    }
                }
            };
            if self.node.as_deref().is_some_and(|want| want != owner) {
                continue;
            }
            let local = cell.get_id().is_local();
            if found.is_none() || local {
                found = Some(Target { cell, node: owner });
                if local {
                    break;
                }
            }
        }
        let target = found.ok_or_else(|| self.no_such_actor())?;
        if target.cell.is_message_type_of::<M>() == Some(false) {
            return Err(AddrError::WrongType {
                path: self.path.to_string(),
                expected: std::any::type_name::<M>(),
            });
        }
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(target.clone());
        Ok(target)
    }

    /// Resolves the path, connecting to the path's node (or to every known node, when the
    /// handle is unqualified) if the path is not found among connected nodes.
    pub(crate) async fn locate(&self) -> Result<Target, AddrError> {
        match self.lookup() {
            Err(AddrError::NoSuchActor { .. }) => {}
            other => return other,
        }
        let Some(node) = Node::current() else {
            return Err(self.no_such_actor());
        };
        match self.node.as_deref() {
            Some(peer) if !node.is_connected(peer) => {
                if let Err(e) = node.ensure_connected(peer).await {
                    return Err(self.connect_error(peer, e));
                }
            }
            // The path may be registered already and its news still on the way: the
            // message channel that told the caller about it overtakes the session.
            Some(peer) => {
                crate::node::endpoint::session_barrier(peer, BARRIER_WAIT).await;
            }
            None => {
                node.connect_known().await;
                let barriers: Vec<_> = node
                    .connected_peers()
                    .into_iter()
                    .map(|peer| {
                        tokio::spawn(async move {
                            crate::node::endpoint::session_barrier(&peer, BARRIER_WAIT).await
                        })
                    })
                    .collect();
                for barrier in barriers {
                    let _ = barrier.await;
                }
            }
        }
        self.lookup()
    }

    fn connect_error(&self, peer: &str, e: ConnectError) -> AddrError {
        match e {
            ConnectError::UnknownNode { .. } => self.no_such_actor(),
            ConnectError::CookieRefused { addr, .. } => AddrError::CookieRefused {
                path: self.path.to_string(),
                addr,
            },
            other => AddrError::NodeUnreachable {
                path: self.path.to_string(),
                node: peer.to_string(),
                cause: other.to_string(),
            },
        }
    }

    /// Resolves the handle to an actor reference, connecting if needed.
    pub async fn resolve(&self) -> Result<ActorRef<M>, AddrError> {
        Ok(self.locate().await?.cell.into())
    }

    /// The node the path lives on now, connecting if needed.
    pub async fn resolve_node(&self) -> Result<String, AddrError> {
        Ok(self.locate().await?.node)
    }

    /// Sends a message without waiting for an answer (a cast). Delivery is at most once and
    /// in order between one sender and one receiver.
    pub async fn send(&self, message: M) -> Result<(), SendError<M>> {
        let mut message = message;
        // The common case: the cached actor, still alive, takes it as it is (no lookup, no
        // allocation, no reference count touched). The lock is not held across an await.
        {
            let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(target) = cached.as_ref().filter(|t| alive(&t.cell)) {
                match crate::node::channel::deliver(target, message) {
                    Ok(()) => return Ok(()),
                    // It stopped since it was cached: look again below.
                    Err(MessagingErr::SendErr(back)) => {
                        *cached = None;
                        message = back;
                    }
                    Err(e) => return Err(self.send_failed(e)),
                }
            }
        }
        // One retry: the actor found may stop before the message reaches it.
        for attempt in 0..2 {
            let target = match self.locate().await {
                Ok(t) => t,
                Err(error) => {
                    return Err(SendError {
                        error,
                        message: Some(message),
                    });
                }
            };
            match crate::node::channel::deliver(&target, message) {
                Ok(()) => return Ok(()),
                Err(MessagingErr::SendErr(back)) if attempt == 0 => {
                    self.cached.lock().unwrap_or_else(|p| p.into_inner()).take();
                    message = back;
                }
                Err(MessagingErr::SendErr(back)) => {
                    return Err(SendError {
                        error: self.no_such_actor(),
                        message: Some(back),
                    });
                }
                Err(e) => return Err(self.send_failed(e)),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// The error of a send that cannot be retried.
    fn send_failed(&self, e: MessagingErr<M>) -> SendError<M> {
        let error = match e {
            MessagingErr::InvalidActorType => AddrError::WrongType {
                path: self.path.to_string(),
                expected: std::any::type_name::<M>(),
            },
            MessagingErr::SendErr(_) | MessagingErr::ChannelClosed => self.no_such_actor(),
        };
        SendError {
            error,
            message: None,
        }
    }

    /// Sends a request built around a [`Reply`] port and waits up to `timeout` (connection
    /// included) for the answer.
    pub async fn call<T, F>(&self, make: F, timeout: Duration) -> Result<T, AddrError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(Reply<T>) -> M,
    {
        let deadline = Instant::now() + timeout;
        let path = || self.path.to_string();
        let target = tokio::time::timeout(timeout, self.locate())
            .await
            .map_err(|_| AddrError::Timeout {
                path: path(),
                after: timeout,
            })??;
        let (reply, answer) = Reply::channel();
        if let Err(e) = self.send(make(reply)).await {
            return Err(e.error);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, answer.recv()).await {
            Ok(Ok(value)) => Ok(value),
            Err(_) => Err(AddrError::Timeout {
                path: path(),
                after: timeout,
            }),
            Ok(Err(ReplyError::Codec(cause))) => Err(AddrError::Codec {
                path: path(),
                cause,
            }),
            Ok(Err(ReplyError::Dropped)) => match Node::current() {
                Some(node) if !node.is_connected(&target.node) => Err(AddrError::NodeUnreachable {
                    path: path(),
                    node: target.node,
                    cause: "the connection closed during the call".into(),
                }),
                _ => Err(AddrError::NoReply { path: path() }),
            },
        }
    }
}
