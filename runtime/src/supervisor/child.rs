//! Children: what a supervisor starts and how ([`Child`], [`ChildFactory`], [`StartCtx`]),
//! including children that are supervisors and children on other nodes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, SpawnErr};

use super::spec::{self, ChildSpec, ChildType};
use super::{Supervisor, SupervisorSpec};

pub use crate::lifecycle::BoxFuture;

/// What a child's start produced.
#[derive(Debug)]
pub enum StartOutcome {
    /// It runs; the cell should be linked to the supervisor ([`StartCtx::spawn`] does that).
    Started(ActorCell),
    /// It chose not to run (OTP's `ignore`); the spec is kept unless the child is temporary.
    Ignore,
    /// It runs on another node, registered under `path` there (see [`Child::remote`]). The
    /// supervisor watches it with a remote monitor and stops it through that node's spawner.
    Remote {
        /// The node.
        node: String,
        /// Its path.
        path: String,
    },
    /// It could not start, and why.
    Failed(String),
}

/// What a factory gets to start one child.
#[derive(Debug, Clone)]
pub struct StartCtx {
    pub(super) supervisor: ActorCell,
    pub(super) spec: ChildSpec,
    /// The actors [`StartCtx::spawn`] linked to the supervisor: their exits are sure to
    /// reach it, however soon they come.
    pub(super) linked: std::sync::Arc<std::sync::Mutex<Vec<ractor::ActorId>>>,
}

impl StartCtx {
    /// The child's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The start arguments from the spec (for a dynamic child: those it was started with).
    pub fn args(&self) -> &spec::Args {
        &self.spec.start.args
    }

    /// The child's spec.
    pub fn spec(&self) -> &ChildSpec {
        &self.spec
    }

    /// The supervisor, to link the child to.
    pub fn supervisor(&self) -> &ActorCell {
        &self.supervisor
    }

    /// Spawns `actor` linked to the supervisor. A failing `pre_start` is a failed start.
    pub async fn spawn<A: Actor>(&self, actor: A, args: A::Arguments) -> StartOutcome {
        match Actor::spawn_linked(None, actor, args, self.supervisor.clone()).await {
            Ok((actor, _)) => {
                self.linked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(actor.get_id());
                StartOutcome::Started(actor.get_cell())
            }
            Err(err) => StartOutcome::Failed(spawn_error_text(err)),
        }
    }
}

fn spawn_error_text(err: SpawnErr) -> String {
    match err {
        SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// Starts one child. Any `Fn(StartCtx) -> impl Future<Output = StartOutcome>` is one.
pub trait ChildFactory: Send + Sync + 'static {
    /// Starts the child described by `ctx`.
    fn start(&self, ctx: StartCtx) -> BoxFuture<StartOutcome>;
}

impl<F, Fut> ChildFactory for F
where
    F: Fn(StartCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = StartOutcome> + Send + 'static,
{
    fn start(&self, ctx: StartCtx) -> BoxFuture<StartOutcome> {
        Box::pin(self(ctx))
    }
}

/// A child: its spec and the factory that starts it.
#[derive(Clone)]
pub struct Child {
    /// The plain-data spec.
    pub spec: ChildSpec,
    /// What starts it.
    pub factory: Arc<dyn ChildFactory>,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child").field("spec", &self.spec).finish()
    }
}

impl Child {
    /// A child started by `factory`.
    pub fn new(spec: ChildSpec, factory: impl ChildFactory) -> Child {
        Child {
            spec,
            factory: Arc::new(factory),
        }
    }

    /// A child that is itself a supervisor of `tree`. Its type is set to supervisor.
    pub fn supervisor(mut spec: ChildSpec, tree: SupervisorSpec) -> Child {
        spec.child_type = ChildType::Supervisor;
        if spec.start.kind.is_empty() {
            spec.start.kind = "supervisor".into();
        }
        Child::new(spec, move |ctx: StartCtx| {
            let tree = tree.clone();
            async move {
                match Actor::spawn_linked(None, Supervisor, tree, ctx.supervisor.clone()).await {
                    Ok((actor, _)) => {
                        ctx.linked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(actor.get_id());
                        StartOutcome::Started(actor.get_cell())
                    }
                    Err(err) => StartOutcome::Failed(spawn_error_text(err)),
                }
            }
        })
    }
}

/// How long a remote child's start keeps trying its nodes before it fails.
pub const REMOTE_START_PATIENCE: Duration = Duration::from_secs(10);

impl Child {
    /// A child that runs on one of `nodes`, started there by the node's spawner from the
    /// spawnable kind named in `spec.start` (see [`crate::spawn`]).
    ///
    /// Placement: a restart goes back to the node the child last ran on while that node is
    /// connected (a crash of the actor alone), and otherwise to the next node of the list
    /// that can be reached, in order, wrapping around. When none can, the start keeps trying
    /// for [`REMOTE_START_PATIENCE`], so a child whose only node restarts comes back on it;
    /// after that the start fails and the usual restart rules apply.
    pub fn remote(spec: ChildSpec, nodes: Vec<String>) -> Child {
        let last: Arc<std::sync::Mutex<Option<usize>>> = Arc::default();
        Child::new(spec, move |ctx: StartCtx| {
            let nodes = nodes.clone();
            let last = last.clone();
            async move {
                if nodes.is_empty() {
                    return StartOutcome::Failed("a remote child needs at least one node".into());
                }
                let deadline = tokio::time::Instant::now() + REMOTE_START_PATIENCE;
                let mut errors = Vec::new();
                loop {
                    let previous = *last.lock().unwrap_or_else(|p| p.into_inner());
                    for i in placement_order(&nodes, previous) {
                        let node = &nodes[i];
                        let kind = &ctx.spec.start.kind;
                        match crate::spawn::spawn_on::<()>(node, kind, ctx.args().clone()).await {
                            Ok(addr) => {
                                *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(i);
                                return StartOutcome::Remote {
                                    node: node.clone(),
                                    path: addr.path().to_string(),
                                };
                            }
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        errors.dedup();
                        return StartOutcome::Failed(format!(
                            "no node of {nodes:?} could start it: {}",
                            errors.join("; ")
                        ));
                    }
                    errors.clear();
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        })
    }
}

/// The order to try a remote child's nodes in: the last one first while it is connected,
/// then the ones after it, wrapping around.
fn placement_order(nodes: &[String], last: Option<usize>) -> Vec<usize> {
    let n = nodes.len();
    let connected =
        |i: usize| crate::node::Node::current().is_some_and(|node| node.is_connected(&nodes[i]));
    match last {
        Some(l) if l < n && connected(l) => (0..n).map(|k| (l + k) % n).collect(),
        Some(l) if l < n => (1..=n).map(|k| (l + k) % n).collect(),
        _ => (0..n).collect(),
    }
}
