//! Remote spawn: starting an actor of a named kind on any node.
//!
//! A node makes kinds of actors spawnable by name ([`register_kind`]); [`spawn_on`] asks a
//! node's spawner (`node/<name>/spawner`) to start one with serialized arguments and returns
//! its [`Addr`]. The spawner registers the new actor under a path and keeps it until it
//! stops, is stopped through [`stop_on`], or its owner's node goes down: an actor spawned
//! for another node does not outlive that node's connection (a link to its owner, in
//! Erlang's terms), so a supervisor that loses its node leaves no orphans behind.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::addr::{Addr, AddrError};
use crate::codec::Reply;
use crate::lifecycle::{Args, BoxFuture, Shutdown, stop_cell};
use crate::node::{Node, NodeEvent};

/// Starts one actor of a kind from its arguments, or says why not.
pub type KindFactory = Arc<dyn Fn(Args) -> BoxFuture<Result<ActorCell, String>> + Send + Sync>;

static KINDS: Mutex<Option<HashMap<String, KindFactory>>> = Mutex::new(None);

/// Makes actors of kind `name` spawnable on this node (by [`spawn_on`] from any node, and by
/// supervisors whose child specs name the kind). A second registration replaces the first.
pub fn register_kind<F, Fut>(name: &str, factory: F)
where
    F: Fn(Args) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ActorCell, String>> + Send + 'static,
{
    let factory: KindFactory = Arc::new(move |args| Box::pin(factory(args)));
    KINDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(name.to_string(), factory);
}

/// The factory of a registered kind.
pub fn kind(name: &str) -> Option<KindFactory> {
    KINDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|kinds| kinds.get(name).cloned())
}

/// The kinds registered on this node, sorted.
pub fn kinds() -> Vec<String> {
    let mut names: Vec<String> = KINDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|kinds| kinds.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The path of a node's spawner.
pub fn spawner_path(node: &str) -> String {
    format!("node/{node}/spawner")
}

/// Why a remote spawn or stop failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The node could not be asked.
    #[error(transparent)]
    Unreachable(#[from] AddrError),
    /// The node has no such kind.
    #[error("node {node} has no spawnable kind {kind}")]
    UnknownKind {
        /// The node.
        node: String,
        /// The kind.
        kind: String,
    },
    /// The kind's factory failed.
    #[error("{kind} failed to start on {node}: {reason}")]
    Failed {
        /// The node.
        node: String,
        /// The kind.
        kind: String,
        /// Why.
        reason: String,
    },
}

/// What a spawner answers a spawn with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpawnReply {
    /// Started and registered under this path.
    Started {
        /// The path.
        path: String,
    },
    /// No such kind here.
    UnknownKind,
    /// The kind's factory failed.
    Failed {
        /// Why.
        reason: String,
    },
}

/// What a spawner accepts.
#[derive(Debug, Serialize, Deserialize, troupe_macros::RemoteMessage)]
pub enum SpawnerMsg {
    /// Starts an actor of `kind` and registers it under `path` (or a generated one).
    Spawn {
        /// The kind.
        kind: String,
        /// Its arguments.
        args: Args,
        /// Where to register it; `None` picks `spawned/<node>/<kind>/<n>`.
        path: Option<String>,
        /// The node it is spawned for: when that node goes down, the actor is stopped.
        owner: Option<String>,
        /// The answer.
        reply: Reply<SpawnReply>,
    },
    /// Stops an actor this spawner started, as a supervisor stops a child; answers once it
    /// is gone (or was not there).
    Stop {
        /// Its path.
        path: String,
        /// How.
        shutdown: Shutdown,
        /// The answer: whether there was such an actor.
        reply: Reply<bool>,
    },
    /// A node went down (sent by this node's own event stream).
    NodeDown {
        /// The node.
        node: String,
    },
}

struct Spawned {
    cell: ActorCell,
    owner: Option<String>,
}

pub(crate) struct Spawner;

pub(crate) struct SpawnerState {
    node: Node,
    spawned: HashMap<String, Spawned>,
    next: u64,
    events: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for Spawner {
    type Msg = SpawnerMsg;
    type State = SpawnerState;
    type Arguments = Node;

    async fn pre_start(
        &self,
        myself: ActorRef<SpawnerMsg>,
        node: Node,
    ) -> Result<SpawnerState, ActorProcessingErr> {
        crate::addr::register(&spawner_path(node.name()), &myself)?;
        node.set_service("spawner", myself.get_cell());
        let mut events = node.subscribe();
        let me = myself.clone();
        let forward = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Down { node, .. }) => {
                        let _ = me.cast(SpawnerMsg::NodeDown { node });
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(SpawnerState {
            node,
            spawned: HashMap::new(),
            next: 1,
            events: Some(forward),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SpawnerMsg>,
        state: &mut SpawnerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(events) = state.events.take() {
            events.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SpawnerMsg>,
        message: SpawnerMsg,
        state: &mut SpawnerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SpawnerMsg::Spawn {
                kind: name,
                args,
                path,
                owner,
                reply,
            } => {
                let Some(factory) = kind(&name) else {
                    reply.send(SpawnReply::UnknownKind);
                    return Ok(());
                };
                let path = path.unwrap_or_else(|| {
                    let n = state.next;
                    state.next += 1;
                    format!("spawned/{}/{name}/{n}", state.node.name())
                });
                if !crate::addr::valid_path(&path) {
                    reply.send(SpawnReply::Failed {
                        reason: format!("invalid path {path:?}"),
                    });
                    return Ok(());
                }
                // On its own task, so that a panicking factory is a failed spawn.
                let answer = match tokio::spawn(factory(args)).await {
                    Ok(Ok(cell)) => {
                        ractor::pg::join_scoped(
                            crate::node::SCOPE.to_string(),
                            path.clone(),
                            vec![cell.clone()],
                        );
                        myself.get_cell().monitor(cell.clone());
                        debug!(%path, kind = %name, ?owner, "spawned");
                        state.spawned.insert(path.clone(), Spawned { cell, owner });
                        SpawnReply::Started { path }
                    }
                    Ok(Err(reason)) => SpawnReply::Failed { reason },
                    Err(e) => SpawnReply::Failed {
                        reason: format!("the factory panicked: {e}"),
                    },
                };
                reply.send(answer);
            }
            SpawnerMsg::Stop {
                path,
                shutdown,
                reply,
            } => match state.spawned.remove(&path) {
                Some(spawned) => {
                    tokio::spawn(async move {
                        stop_cell(spawned.cell, shutdown).await;
                        reply.send(true);
                    });
                }
                None => {
                    reply.send(false);
                }
            },
            SpawnerMsg::NodeDown { node } => {
                let orphans: Vec<String> = state
                    .spawned
                    .iter()
                    .filter(|(_, s)| s.owner.as_deref() == Some(node.as_str()))
                    .map(|(path, _)| path.clone())
                    .collect();
                for path in orphans {
                    if let Some(spawned) = state.spawned.remove(&path) {
                        info!(%path, owner = %node, "stopping an actor whose owner's node went down");
                        tokio::spawn(stop_cell(
                            spawned.cell,
                            Shutdown::Timeout(Duration::from_secs(5)),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SpawnerMsg>,
        event: SupervisionEvent,
        state: &mut SpawnerState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(cell, ..)
        | SupervisionEvent::ActorFailed(cell, _) = event
        {
            let id = cell.get_id();
            state.spawned.retain(|_, s| s.cell.get_id() != id);
        }
        Ok(())
    }
}

/// How long a spawn may take, the factory included.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts an actor of `kind` on `node` with `args`, and returns its address. The actor lives
/// until it stops, is stopped, or this node's connection to `node` goes down.
pub async fn spawn_on<M: ractor::Message>(
    node: &str,
    kind: &str,
    args: Args,
) -> Result<Addr<M>, SpawnError> {
    spawn_at(node, kind, args, None).await
}

/// [`spawn_on`], registering the actor under `path` (or a generated path).
pub async fn spawn_at<M: ractor::Message>(
    node: &str,
    kind: &str,
    args: Args,
    path: Option<String>,
) -> Result<Addr<M>, SpawnError> {
    let owner = Node::current().map(|n| n.name().to_string());
    let answer = Addr::<SpawnerMsg>::on(node, spawner_path(node))
        .call(
            |reply| SpawnerMsg::Spawn {
                kind: kind.to_string(),
                args,
                path,
                owner,
                reply,
            },
            SPAWN_TIMEOUT,
        )
        .await?;
    match answer {
        SpawnReply::Started { path } => Ok(Addr::on(node, path)),
        SpawnReply::UnknownKind => Err(SpawnError::UnknownKind {
            node: node.into(),
            kind: kind.into(),
        }),
        SpawnReply::Failed { reason } => Err(SpawnError::Failed {
            node: node.into(),
            kind: kind.into(),
            reason,
        }),
    }
}

/// Stops an actor that `node`'s spawner started, by `shutdown`; returns whether it was
/// there. Waits until it is gone.
pub async fn stop_on(node: &str, path: &str, shutdown: Shutdown) -> Result<bool, SpawnError> {
    let limit = match shutdown {
        Shutdown::Timeout(t) => t + Duration::from_secs(10),
        Shutdown::BrutalKill => Duration::from_secs(10),
        Shutdown::Infinity => Duration::from_secs(24 * 3600),
    };
    Ok(Addr::<SpawnerMsg>::on(node, spawner_path(node))
        .call(
            |reply| SpawnerMsg::Stop {
                path: path.to_string(),
                shutdown,
                reply,
            },
            limit,
        )
        .await?)
}
