//! The inspector every node runs at `node/<name>/inspector`: a snapshot of the node's actor
//! tree, for `troupe tree`, the REPL and anyone who asks.
//!
//! ractor keeps no list of all actors, so the inspector starts from every actor it can name
//! (those registered under a path, running supervisors, actors with a registered name) and
//! walks ractor's supervision links up to the roots and down to every child. Supervisors add
//! what only they know: strategy, child ids, restart counts and the last exit of each child.
//!
//! What ractor cannot tell (how many messages an arbitrary actor handled, how deep its
//! mailbox is) is left empty rather than guessed; troupe's own actors fill it in where they
//! count.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

use crate::addr::{Addr, AddrError};
use crate::codec::Reply;
use crate::node::{Node, SCOPE};
use crate::supervisor::{self, ChildState, ChildType, SupFlags, SupervisorReport};

/// The path of a node's inspector.
pub fn inspector_path(node: &str) -> String {
    format!("node/{node}/inspector")
}

/// One node's actor tree at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// The node.
    pub node: String,
    /// The troupe version it runs.
    pub version: String,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// The peers it is connected to.
    pub peers: Vec<String>,
    /// The roots of its actor tree (actors no one supervises), each with its subtree.
    pub actors: Vec<ActorSnapshot>,
    /// What its decoder saw: messages from other nodes, and frames dropped and why.
    #[serde(default)]
    pub decode: crate::codec::DecodeStats,
    /// Connections refused at the handshake (wrong cookie, bad frames).
    #[serde(default)]
    pub handshake_failures: u64,
}

/// What an actor is, as far as the inspector can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A troupe supervisor.
    Supervisor,
    /// Part of the node itself (kernel, ping, heartbeat, spawner, inspector).
    System,
    /// An OS process (a process actor of troupe-os).
    Process,
    /// Any other actor.
    Worker,
}

/// One actor in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorSnapshot {
    /// Its ractor id.
    pub id: String,
    /// Its registered name, if any.
    pub name: Option<String>,
    /// The paths it is registered under.
    pub paths: Vec<String>,
    /// What it is.
    pub kind: ActorKind,
    /// Its id under its supervisor, and the kind its spec starts.
    pub child: Option<ChildSnapshot>,
    /// ractor's status: starting, running, stopping...
    pub status: String,
    /// For a supervisor: its flags and children.
    pub supervisor: Option<SupervisorSnapshot>,
    /// Messages handled, where the actor counts them (supervisors, and actors that keep a
    /// [`MessageCounter`]).
    pub messages_handled: Option<u64>,
    /// Messages waiting, where that can be measured (not for ractor actors today).
    pub mailbox_depth: Option<u64>,
    /// Milliseconds since it started, where known.
    pub uptime_ms: Option<u64>,
    /// Why the snapshot is incomplete for this actor (a supervisor busy restarting, say).
    pub note: Option<String>,
    /// What the actor's own kind tells of it (for a process: pid, command, cpu, memory,
    /// exit), from the describers registered with [`register_describer`].
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// The commands it accepts in text form (`send`/`call` at the REPL), if any.
    #[serde(default)]
    pub text_commands: Vec<String>,
    /// The actors it supervises.
    pub children: Vec<ActorSnapshot>,
}

/// An actor's place under its supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSnapshot {
    /// Its id among its siblings.
    pub id: String,
    /// The kind its spec starts.
    pub kind: String,
    /// How often it was restarted.
    pub restarts: u32,
    /// Why it last stopped.
    pub last_exit: Option<String>,
}

/// A supervisor's own view, in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorSnapshot {
    /// Its flags: strategy, intensity, period, auto-shutdown.
    pub flags: SupFlags,
    /// Every child it holds, running or not, in start order.
    pub children: Vec<ChildEntrySnapshot>,
}

/// One child spec a supervisor holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildEntrySnapshot {
    /// Its id.
    pub id: String,
    /// The kind it starts.
    pub kind: String,
    /// Running, restarting or stopped.
    pub state: ChildState,
    /// Worker or supervisor.
    pub child_type: ChildType,
    /// The running actor's id, when on this node.
    pub actor: Option<String>,
    /// Where it runs when on another node: node and path.
    pub remote: Option<(String, String)>,
    /// How often it was restarted.
    pub restarts: u32,
    /// Why it last stopped.
    pub last_exit: Option<String>,
}

/// A description an actor kind gives of one of its actors: its kind and details.
pub type Description = (ActorKind, BTreeMap<String, String>);

/// Describes an actor it knows the kind of, or says `None`.
pub type Describer =
    Arc<dyn Fn(ActorCell) -> crate::lifecycle::BoxFuture<Option<Description>> + Send + Sync>;

static DESCRIBERS: Mutex<Vec<Describer>> = Mutex::new(Vec::new());

/// Adds a describer: crates above the runtime (troupe-os for process actors) tell the
/// inspector about their actors this way, without the runtime knowing them.
pub fn register_describer<F, Fut>(describer: F)
where
    F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<Description>> + Send + 'static,
{
    DESCRIBERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::new(move |cell| Box::pin(describer(cell))));
}

async fn describe(cell: &ActorCell) -> Option<Description> {
    let describers: Vec<Describer> = DESCRIBERS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for describer in describers {
        if let Ok(Some(found)) = tokio::time::timeout(REPORT_TIMEOUT, describer(cell.clone())).await
        {
            return Some(found);
        }
    }
    None
}

/// The message counts of actors that keep one, by actor.
static COUNTERS: Mutex<Option<HashMap<ActorId, Arc<AtomicU64>>>> = Mutex::new(None);

/// Counts the messages one actor handles, for its snapshot (`messages_handled`) and the
/// REPL's `top`: ractor does not count them, so an actor that wants to be seen keeps one in
/// its state and calls [`MessageCounter::handled`] in its handler. Dropping it (with the
/// state, when the actor stops) forgets the actor.
#[derive(Debug)]
pub struct MessageCounter {
    id: ActorId,
    count: Arc<AtomicU64>,
}

impl MessageCounter {
    /// Starts counting for `actor`.
    pub fn new(actor: &ActorCell) -> MessageCounter {
        let count = Arc::new(AtomicU64::new(0));
        COUNTERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(actor.get_id(), count.clone());
        MessageCounter {
            id: actor.get_id(),
            count,
        }
    }

    /// One more message handled.
    pub fn handled(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for MessageCounter {
    fn drop(&mut self) {
        if let Some(counters) = COUNTERS.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            counters.remove(&self.id);
        }
    }
}

fn counted(id: &ActorId) -> Option<u64> {
    COUNTERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()?
        .get(id)
        .map(|c| c.load(Ordering::Relaxed))
}

/// What the inspector accepts.
///
/// Actors are named by a path registered on this node (`master/allocator`) or by their
/// actor id as snapshots show it (`0.42`), so that unregistered actors can be reached too.
#[derive(Debug, Serialize, Deserialize, troupe_macros::RemoteMessage)]
pub enum InspectorMsg {
    /// Answers with the node's snapshot.
    Snapshot {
        /// The answer.
        reply: Reply<NodeSnapshot>,
    },
    /// Stops an actor with a reason, as `ActorRef::stop` does: its supervisor sees an
    /// abnormal exit unless the reason is `normal` or `shutdown`, and restarts it as its
    /// restart type says. Answers with the actor id that was stopped.
    Stop {
        /// The actor: a path or an actor id.
        actor: String,
        /// The exit reason.
        reason: String,
        /// Its id, or why not.
        reply: Reply<Result<String, InspectRefused>>,
    },
    /// Kills an actor at once (Erlang's `exit(Pid, kill)`): no cleanup runs, and its
    /// supervisor sees reason `killed`. Answers with the actor id that was killed.
    Kill {
        /// The actor: a path or an actor id.
        actor: String,
        /// Its id, or why not.
        reply: Reply<Result<String, InspectRefused>>,
    },
    /// Delivers a message in its text form (see [`crate::text`]); answers with the text of
    /// the answer for a call, `None` for a cast once delivered.
    Text {
        /// The actor: a path or an actor id.
        actor: String,
        /// The message, as words.
        line: String,
        /// Whether to wait for an answer.
        call: bool,
        /// The answer, or why there is none.
        reply: Reply<Result<Option<String>, InspectRefused>>,
    },
}

/// Why the inspector did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum InspectRefused {
    /// No actor on this node goes by that path or id.
    #[error("no actor {actor} on this node")]
    NoSuchActor {
        /// The path or id asked for.
        actor: String,
    },
    /// A message in text form was not delivered or answered (the words say why: an
    /// unknown command, bad arguments, an actor without a text form...).
    #[error("{0}")]
    Text(String),
}

/// How long the inspector waits for one supervisor's report.
const REPORT_TIMEOUT: Duration = Duration::from_millis(500);
/// The most actors one snapshot lists, so that a snapshot stays a reasonable message.
const MAX_ACTORS: usize = 100_000;

pub(crate) struct Inspector;

impl Actor for Inspector {
    type Msg = InspectorMsg;
    type State = Node;
    type Arguments = Node;

    async fn pre_start(
        &self,
        myself: ActorRef<InspectorMsg>,
        node: Node,
    ) -> Result<Node, ActorProcessingErr> {
        crate::addr::register(&inspector_path(node.name()), &myself)?;
        node.set_service("inspector", myself.get_cell());
        Ok(node)
    }

    async fn handle(
        &self,
        _myself: ActorRef<InspectorMsg>,
        message: InspectorMsg,
        node: &mut Node,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            InspectorMsg::Snapshot { reply } => {
                let node = node.clone();
                // Supervisors may take a moment to answer; do not hold up the next request.
                tokio::spawn(async move {
                    reply.send(snapshot(&node).await);
                });
            }
            InspectorMsg::Stop {
                actor,
                reason,
                reply,
            } => {
                reply.send(find(&actor).map(|cell| {
                    cell.stop(Some(reason));
                    cell.get_id().to_string()
                }));
            }
            InspectorMsg::Kill { actor, reply } => {
                reply.send(find(&actor).map(|cell| {
                    cell.kill();
                    cell.get_id().to_string()
                }));
            }
            InspectorMsg::Text {
                actor,
                line,
                call,
                reply,
            } => match find(&actor) {
                Ok(cell) => {
                    // A call may take its time; the inspector stays free.
                    tokio::spawn(async move {
                        let answer = crate::text::deliver(cell, &line, call).await;
                        reply.send(answer.map_err(InspectRefused::Text));
                    });
                }
                Err(e) => {
                    reply.send(Err(e));
                }
            },
        }
        Ok(())
    }
}

/// Asks `node`'s inspector for its snapshot.
pub async fn inspect(node: &str, timeout: Duration) -> Result<NodeSnapshot, AddrError> {
    Addr::<InspectorMsg>::on(node, inspector_path(node))
        .call(|reply| InspectorMsg::Snapshot { reply }, timeout)
        .await
}

/// Every actor the inspector can name on this node (see the module's notes), with the paths
/// each is registered under.
fn named_actors() -> (HashMap<ActorId, Vec<String>>, HashMap<ActorId, ActorCell>) {
    let scope = SCOPE.to_string();
    let mut paths: HashMap<ActorId, Vec<String>> = HashMap::new();
    let mut known: HashMap<ActorId, ActorCell> = HashMap::new();
    for group in ractor::pg::which_scoped_groups(&scope) {
        for cell in ractor::pg::get_scoped_local_members(&scope, &group) {
            paths.entry(cell.get_id()).or_default().push(group.clone());
            known.insert(cell.get_id(), cell);
        }
    }
    for sup in supervisor::live_supervisors() {
        known.insert(sup.get_id(), sup.get_cell());
    }
    for name in ractor::registry::registered() {
        if let Some(cell) = ractor::registry::where_is(name) {
            known.insert(cell.get_id(), cell);
        }
    }
    (paths, known)
}

/// The local actor named by `actor`: a path registered on this node, or an actor id as
/// snapshots show it (which also reaches the unregistered children of named actors).
pub fn find(actor: &str) -> Result<ActorCell, InspectRefused> {
    let (paths, known) = named_actors();
    if let Some(cell) = known.values().find(|c| {
        paths
            .get(&c.get_id())
            .is_some_and(|p| p.iter().any(|p| p == actor))
    }) {
        return Ok(cell.clone());
    }
    let mut queue: Vec<ActorCell> = known.into_values().collect();
    let mut seen = HashSet::new();
    while let Some(cell) = queue.pop() {
        if !seen.insert(cell.get_id()) || seen.len() > MAX_ACTORS {
            continue;
        }
        if cell.get_id().to_string() == actor {
            return Ok(cell);
        }
        queue.extend(cell.get_children());
    }
    Err(InspectRefused::NoSuchActor {
        actor: actor.to_string(),
    })
}

/// Takes this node's snapshot.
pub async fn snapshot(node: &Node) -> NodeSnapshot {
    let (paths, known) = named_actors();
    // The roots: walk each known actor up its supervision links.
    let mut roots: Vec<ActorCell> = Vec::new();
    let mut seen_roots = HashSet::new();
    for cell in known.values() {
        let mut top = cell.clone();
        let mut hops = 0;
        while let Some(parent) = top.try_get_supervisor() {
            top = parent;
            hops += 1;
            if hops > 1_000 {
                break;
            }
        }
        if seen_roots.insert(top.get_id()) {
            roots.push(top);
        }
    }
    roots.sort_by_key(|c| c.get_id().pid());
    let system: HashSet<String> = ["kernel", "ping", "heartbeat", "spawner", "inspector"]
        .iter()
        .map(|what| format!("node/{}/{what}", node.name()))
        .collect();
    let mut walker = Walker {
        paths,
        system,
        budget: MAX_ACTORS,
    };
    let mut actors = Vec::new();
    for root in roots {
        if let Some(snapshot) = walker.walk(root, None).await {
            actors.push(snapshot);
        }
    }
    NodeSnapshot {
        node: node.name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: node.uptime().as_millis() as u64,
        peers: node.connected_peers(),
        actors,
        decode: crate::codec::decode_stats(),
        handshake_failures: node.handshake_failures(),
    }
}

struct Walker {
    paths: HashMap<ActorId, Vec<String>>,
    system: HashSet<String>,
    budget: usize,
}

impl Walker {
    /// The snapshot of `cell` and its subtree; `child` is what its supervisor says of it.
    async fn walk(
        &mut self,
        cell: ActorCell,
        child: Option<ChildSnapshot>,
    ) -> Option<ActorSnapshot> {
        if self.budget == 0 {
            return None;
        }
        self.budget -= 1;
        let id = cell.get_id();
        let mut paths = self.paths.get(&id).cloned().unwrap_or_default();
        paths.sort();
        let is_supervisor = supervisor::SupervisorRef::from_cell(cell.clone()).is_some();
        let report = if is_supervisor {
            supervisor::report(&cell, REPORT_TIMEOUT).await
        } else {
            None
        };
        let described = if is_supervisor {
            None
        } else {
            describe(&cell).await
        };
        let kind = if is_supervisor {
            ActorKind::Supervisor
        } else if let Some((kind, _)) = &described {
            *kind
        } else if paths.iter().any(|p| self.system.contains(p)) {
            ActorKind::System
        } else {
            ActorKind::Worker
        };
        // What the supervisor knows of each of its children, by actor.
        let mut by_actor: HashMap<ActorId, ChildSnapshot> = HashMap::new();
        if let Some(report) = &report {
            for c in &report.children {
                if let Some(actor) = &c.actor {
                    by_actor.insert(
                        actor.get_id(),
                        ChildSnapshot {
                            id: c.id.clone(),
                            kind: c.kind.clone(),
                            restarts: c.restarts,
                            last_exit: c.last_exit.clone(),
                        },
                    );
                }
            }
        }
        // A supervisor's children in its start order; anything else by age.
        let order: HashMap<ActorId, usize> = report
            .iter()
            .flat_map(|r| r.children.iter())
            .filter_map(|c| c.actor.as_ref().map(|a| a.get_id()))
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let mut children_cells = cell.get_children();
        children_cells.sort_by_key(|c| {
            (
                order.get(&c.get_id()).copied().unwrap_or(usize::MAX),
                c.get_id().pid(),
            )
        });
        let mut children = Vec::new();
        for c in children_cells {
            let info = by_actor.remove(&c.get_id());
            if let Some(snapshot) = Box::pin(self.walk(c, info)).await {
                children.push(snapshot);
            }
        }
        let note = (is_supervisor && report.is_none())
            .then(|| "the supervisor did not answer in time (busy restarting?)".to_string());
        Some(ActorSnapshot {
            id: id.to_string(),
            name: cell.get_name(),
            paths,
            kind,
            child,
            status: format!("{:?}", cell.get_status()).to_lowercase(),
            supervisor: report.as_ref().map(supervisor_snapshot),
            messages_handled: report.as_ref().map(|r| r.handled).or_else(|| counted(&id)),
            mailbox_depth: None,
            uptime_ms: report.as_ref().map(|r| r.uptime.as_millis() as u64),
            note,
            details: described.map(|(_, d)| d).unwrap_or_default(),
            text_commands: crate::text::commands_of(&cell)
                .map(|commands| {
                    commands
                        .iter()
                        .map(|(usage, _)| usage.to_string())
                        .collect()
                })
                .unwrap_or_default(),
            children,
        })
    }
}

fn supervisor_snapshot(report: &SupervisorReport) -> SupervisorSnapshot {
    SupervisorSnapshot {
        flags: report.flags.clone(),
        children: report
            .children
            .iter()
            .map(|c| ChildEntrySnapshot {
                id: c.id.clone(),
                kind: c.kind.clone(),
                state: c.state,
                child_type: c.child_type,
                actor: c.actor.as_ref().map(|a| a.get_id().to_string()),
                remote: c.remote.clone(),
                restarts: c.restarts,
                last_exit: c.last_exit.clone(),
            })
            .collect(),
    }
}

impl NodeSnapshot {
    /// Every actor in the snapshot, depth first.
    pub fn all(&self) -> Vec<&ActorSnapshot> {
        fn visit<'a>(a: &'a ActorSnapshot, out: &mut Vec<&'a ActorSnapshot>) {
            out.push(a);
            for c in &a.children {
                visit(c, out);
            }
        }
        let mut out = Vec::new();
        for a in &self.actors {
            visit(a, &mut out);
        }
        out
    }
}
