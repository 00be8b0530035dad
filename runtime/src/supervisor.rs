//! OTP supervisors.
//!
//! A supervisor starts its children in order, watches them, restarts them by its
//! [`Strategy`] and stops them in reverse order:
//!
//! ```text
//!   supervisor  (strategy; at most `intensity` restarts in `period`, else it stops itself)
//!    ├── child 1   started first, stopped last
//!    ├── child 2
//!    └── child 3   started last, stopped first
//! ```
//!
//! The decisions (what to restart, when to give up, what to stop) are made by the pure
//! [`core`](self::core) module; this actor carries them out. Children are linked to the
//! supervisor through ractor's supervision links, so an exit can never go unseen, and a child
//! started by [`StartCtx::spawn`] is linked before anyone can observe it.
//!
//! A child is described by a plain-data [`ChildSpec`] (the same type a spec file holds) and a
//! [`ChildFactory`] that starts it. A child can itself be a supervisor ([`Child::supervisor`]).

mod child;
mod core;
pub mod spec;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tracing::{debug, info, warn};

pub use self::child::{
    BoxFuture, Child, ChildFactory, REMOTE_START_PATIENCE, StartCtx, StartOutcome,
};
pub use self::core::{ChildCounts, ChildError, ChildState};
use self::core::{Core, Decision, Instance, Started};
pub use self::spec::{
    Args, AutoShutdown, ChildSpec, ChildType, Restart, Shutdown, SpecError, StartSpec, Strategy,
    SupFlags,
};
use crate::monitor::DownReason;

/// A supervisor's flags and children.
#[derive(Debug, Clone, Default)]
pub struct SupervisorSpec {
    /// The flags.
    pub flags: SupFlags,
    /// The children, in start order (for a dynamic supervisor: the one template).
    pub children: Vec<Child>,
}

impl SupervisorSpec {
    /// A spec with these flags and no children yet.
    pub fn new(flags: SupFlags) -> Self {
        SupervisorSpec {
            flags,
            children: Vec::new(),
        }
    }

    /// Adds a child at the end of the start order.
    pub fn child(mut self, child: Child) -> Self {
        self.children.push(child);
        self
    }
}

/// Why a supervisor did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Its flags or specs are invalid.
    #[error("invalid supervisor spec: {0}")]
    Spec(#[from] SpecError),
    /// A child failed to start; the children started before it were stopped again.
    #[error("shutdown: failed to start child {id}: {reason}")]
    ChildFailed {
        /// The child.
        id: String,
        /// Why.
        reason: String,
    },
    /// The actor could not be spawned.
    #[error("could not spawn the supervisor: {0}")]
    Spawn(String),
}

/// One child as `which_children` reports it.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// The kind it starts (`start.kind` of its spec).
    pub kind: String,
    /// The running actor, if any and if it is on this node.
    pub actor: Option<ActorCell>,
    /// Where a child on another node runs: its node and path.
    pub remote: Option<(String, String)>,
    /// Its state.
    pub state: ChildState,
    /// Worker or supervisor.
    pub child_type: ChildType,
    /// How often it was restarted.
    pub restarts: u32,
    /// Why it last stopped.
    pub last_exit: Option<String>,
}

/// Messages of the supervisor actor; use [`SupervisorRef`].
pub(crate) enum SupervisorMsg {
    /// Adds and starts a static child.
    StartChild(Child, RpcReplyPort<Result<Option<ActorCell>, ChildError>>),
    /// Starts a child of a dynamic supervisor from its template.
    StartDynamic(
        spec::Args,
        RpcReplyPort<Result<Option<ActorCell>, ChildError>>,
    ),
    /// Stops a child and keeps its spec (forgets it for temporary and dynamic children).
    TerminateChild(String, RpcReplyPort<Result<(), ChildError>>),
    /// Stops the dynamic child running (or restarting) as this actor.
    TerminateActor(ActorCell, RpcReplyPort<Result<(), ChildError>>),
    /// Starts a stopped child again.
    RestartChild(String, RpcReplyPort<Result<Option<ActorCell>, ChildError>>),
    /// Forgets a stopped child's spec.
    DeleteChild(String, RpcReplyPort<Result<(), ChildError>>),
    /// Lists the children.
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
    /// Counts the children.
    CountChildren(RpcReplyPort<ChildCounts>),
    /// A child's spec.
    GetChildSpec(String, RpcReplyPort<Result<ChildSpec, ChildError>>),
    /// The flags.
    GetFlags(RpcReplyPort<SupFlags>),
    /// A failed restart is due to be tried again.
    TryAgain(String),
    /// A child on another node is gone (from its remote monitor).
    RemoteDown(Instance, crate::monitor::Down),
    /// What the inspector shows.
    Report(RpcReplyPort<SupervisorReport>),
}

/// A supervisor as the inspector shows it.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorReport {
    pub(crate) flags: SupFlags,
    pub(crate) children: Vec<ChildInfo>,
    pub(crate) uptime: Duration,
    pub(crate) handled: u64,
}

/// The supervisors running in this process, for the inspector.
static LIVE: std::sync::Mutex<Option<HashMap<ActorId, ActorRef<SupervisorMsg>>>> =
    std::sync::Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashMap<ActorId, ActorRef<SupervisorMsg>>>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The supervisors running in this process.
pub(crate) fn live_supervisors() -> Vec<ActorRef<SupervisorMsg>> {
    let mut live = live();
    let map = live.get_or_insert_with(HashMap::new);
    map.retain(|_, s| s.get_status() < ActorStatus::Stopped);
    map.values().cloned().collect()
}

/// Asks a supervisor for its report, if it answers within `limit`.
pub(crate) async fn report(cell: &ActorCell, limit: Duration) -> Option<SupervisorReport> {
    let sup = SupervisorRef::from_cell(cell.clone())?;
    match sup.actor.call(SupervisorMsg::Report, Some(limit)).await {
        Ok(ractor::rpc::CallResult::Success(report)) => Some(report),
        _ => None,
    }
}

impl ractor::Message for SupervisorMsg {}

/// The supervisor actor.
pub(crate) struct Supervisor;

/// A child on another node.
pub(crate) struct RemoteChild {
    node: String,
    path: String,
    monitor: crate::monitor::Ref,
}

/// The supervisor's state: the pure core and the actors it maps to.
pub(crate) struct SupervisorState {
    core: Core,
    factories: HashMap<String, Arc<dyn ChildFactory>>,
    template: Option<Arc<dyn ChildFactory>>,
    cells: HashMap<Instance, ActorCell>,
    /// Children on other nodes: node, path and the monitor on them.
    remotes: HashMap<Instance, RemoteChild>,
    by_actor: HashMap<ActorId, Instance>,
    /// The last actor each child ran as, to find a restarting dynamic child by its old actor.
    last_actor: HashMap<String, ActorId>,
    started_at: tokio::time::Instant,
    /// Messages and exits handled, for the inspector.
    handled: u64,
}

impl SupervisorState {
    fn now(&self) -> Duration {
        self.started_at.elapsed()
    }

    fn factory(&self, id: &str) -> Option<Arc<dyn ChildFactory>> {
        self.factories.get(id).or(self.template.as_ref()).cloned()
    }

    fn instance_of(&self, id: &str) -> Option<Instance> {
        self.core
            .entry(id)
            .filter(|e| e.state == ChildState::Running)
            .and_then(|e| e.instance)
    }

    /// The dynamic child that runs as `actor`, or whose restart is pending after it ran as
    /// `actor`.
    fn dynamic_child_of(&self, actor: &ActorCell) -> Option<String> {
        if !self.core.is_dynamic() {
            return None;
        }
        let id = actor.get_id();
        if let Some(child) = self.by_actor.get(&id).and_then(|i| self.core.id_of(*i)) {
            return Some(child.to_string());
        }
        self.last_actor
            .iter()
            .find(|(child, last)| {
                **last == id
                    && self.core.entry(child).map(|e| e.state) == Some(ChildState::Restarting)
            })
            .map(|(child, _)| child.clone())
    }

    /// Forgets the actor of a running child and hands it back, so the exit the stop causes
    /// is not taken for a failure.
    fn detach(&mut self, id: &str) -> Option<Running> {
        let instance = self.instance_of(id)?;
        if let Some(remote) = self.remotes.remove(&instance) {
            crate::monitor::demonitor(&remote.monitor);
            return Some(Running::Remote(remote));
        }
        let cell = self.cells.remove(&instance)?;
        self.by_actor.remove(&cell.get_id());
        Some(Running::Local(cell))
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        spec: SupervisorSpec,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let specs: Vec<ChildSpec> = spec.children.iter().map(|c| c.spec.clone()).collect();
        let core = Core::new(spec.flags.clone(), &specs).map_err(StartError::from)?;
        let mut state = SupervisorState {
            template: core.is_dynamic().then(|| spec.children[0].factory.clone()),
            core,
            factories: HashMap::new(),
            cells: HashMap::new(),
            remotes: HashMap::new(),
            by_actor: HashMap::new(),
            last_actor: HashMap::new(),
            started_at: tokio::time::Instant::now(),
            handled: 0,
        };
        live()
            .get_or_insert_with(HashMap::new)
            .insert(myself.get_id(), myself.clone());
        if state.core.is_dynamic() {
            return Ok(state);
        }
        for child in spec.children {
            let outcome = start_one(&myself, &mut state, &child.spec, &child.factory).await;
            if let Started::Failed(reason) = &outcome {
                warn!(child = %child.spec.id, %reason, "supervisor start failed: child did not start");
                stop_all(&mut state).await;
                if let Some(map) = live().as_mut() {
                    map.remove(&myself.get_id());
                }
                return Err(StartError::ChildFailed {
                    id: child.spec.id.clone(),
                    reason: reason.clone(),
                }
                .into());
            }
            state.factories.insert(child.spec.id.clone(), child.factory);
            state.core.add(child.spec, &outcome);
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        stop_all(state).await;
        if let Some(map) = live().as_mut() {
            map.remove(&myself.get_id());
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.handled += 1;
        match msg {
            SupervisorMsg::StartChild(child, reply) => {
                let result = match state.core.check_new(&child.spec) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let outcome = start_one(&myself, state, &child.spec, &child.factory).await;
                        let id = child.spec.id.clone();
                        let cell = running_cell(state, &outcome);
                        if !matches!(outcome, Started::Failed(_)) {
                            state.factories.insert(id.clone(), child.factory);
                        }
                        state.core.add(child.spec, &outcome);
                        match outcome {
                            Started::Failed(reason) => Err(ChildError::StartFailed { id, reason }),
                            _ => Ok(cell),
                        }
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::StartDynamic(args, reply) => {
                let result = match (state.core.dynamic_spec(args), state.template.clone()) {
                    (Ok(spec), Some(factory)) => {
                        let outcome = start_one(&myself, state, &spec, &factory).await;
                        let cell = running_cell(state, &outcome);
                        let id = spec.id.clone();
                        state.core.add(spec, &outcome);
                        match outcome {
                            Started::Failed(reason) => Err(ChildError::StartFailed { id, reason }),
                            _ => Ok(cell),
                        }
                    }
                    (Err(e), _) => Err(e),
                    (Ok(_), None) => Err(ChildError::NotSimpleOneForOne),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let result = if state.core.is_dynamic() {
                    Err(ChildError::SimpleOneForOne)
                } else {
                    terminate(state, &id).await
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::TerminateActor(actor, reply) => {
                let result = match state.dynamic_child_of(&actor) {
                    Some(id) => terminate(state, &id).await,
                    // As OTP: a dead actor that is no child is no error; a live one is.
                    None if actor.get_status() >= ActorStatus::Stopping => Ok(()),
                    None => Err(ChildError::NotFound {
                        id: actor.get_id().to_string(),
                    }),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let result = match state.core.check_restart(&id) {
                    Err(e) => Err(e),
                    Ok(spec) => match state.factory(&id) {
                        None => Err(ChildError::NotFound { id }),
                        Some(factory) => {
                            let outcome = start_one(&myself, state, &spec, &factory).await;
                            let cell = running_cell(state, &outcome);
                            state.core.explicit_restart(&id, &outcome);
                            match outcome {
                                Started::Failed(reason) => {
                                    Err(ChildError::StartFailed { id, reason })
                                }
                                _ => Ok(cell),
                            }
                        }
                    },
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let result = state.core.delete(&id);
                if result.is_ok() {
                    state.factories.remove(&id);
                }
                let _ = reply.send(result);
            }
            SupervisorMsg::Report(reply) => {
                let _ = reply.send(SupervisorReport {
                    flags: state.core.flags().clone(),
                    children: which_children(state),
                    uptime: state.started_at.elapsed(),
                    handled: state.handled,
                });
            }
            SupervisorMsg::WhichChildren(reply) => {
                let _ = reply.send(which_children(state));
            }
            SupervisorMsg::CountChildren(reply) => {
                let _ = reply.send(state.core.counts());
            }
            SupervisorMsg::GetChildSpec(id, reply) => {
                let result = state
                    .core
                    .entry(&id)
                    .map(|e| e.spec.clone())
                    .ok_or(ChildError::NotFound { id });
                let _ = reply.send(result);
            }
            SupervisorMsg::GetFlags(reply) => {
                let _ = reply.send(state.core.flags().clone());
            }
            SupervisorMsg::RemoteDown(instance, down) => {
                if state.remotes.remove(&instance).is_some() {
                    let now = state.now();
                    let detail = format!("{} on {}: {}", down.path, down.node, down.reason);
                    debug!(child = %state.core.id_of(instance).unwrap_or("?"), reason = %detail, "remote child exited");
                    let decision = state
                        .core
                        .child_exited(instance, &down.reason, &detail, now);
                    execute(&myself, state, decision).await;
                }
            }
            SupervisorMsg::TryAgain(id) => {
                let now = state.now();
                let decision = state.core.try_again(&id, now);
                execute(&myself, state, decision).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.handled += 1;
        let (actor, reason, detail) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let detail = reason.clone().unwrap_or_else(|| "normal".into());
                (
                    cell.get_id(),
                    DownReason::from_stop_reason(reason.as_deref()),
                    detail,
                )
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let text = err.to_string();
                (cell.get_id(), DownReason::Error(text.clone()), text)
            }
            _ => return Ok(()),
        };
        let Some(instance) = state.by_actor.remove(&actor) else {
            return Ok(());
        };
        state.cells.remove(&instance);
        let now = state.now();
        let id = state.core.id_of(instance).unwrap_or("?").to_string();
        debug!(child = %id, reason = %detail, "child exited");
        let decision = state.core.child_exited(instance, &reason, &detail, now);
        execute(&myself, state, decision).await;
        Ok(())
    }
}

/// The children in start order, as `which_children` reports them.
fn which_children(state: &SupervisorState) -> Vec<ChildInfo> {
    state
        .core
        .children()
        .map(|e| {
            let running = e.instance.filter(|_| e.state == ChildState::Running);
            ChildInfo {
                id: e.spec.id.clone(),
                kind: e.spec.start.kind.clone(),
                actor: running.and_then(|i| state.cells.get(&i).cloned()),
                remote: running
                    .and_then(|i| state.remotes.get(&i))
                    .map(|r| (r.node.clone(), r.path.clone())),
                state: e.state,
                child_type: e.spec.child_type,
                restarts: e.restarts,
                last_exit: e.last_exit.clone(),
            }
        })
        .collect()
}

fn running_cell(state: &SupervisorState, outcome: &Started) -> Option<ActorCell> {
    match outcome {
        Started::Running(i) => state.cells.get(i).cloned(),
        _ => None,
    }
}

/// Runs a factory and records the actor it started.
async fn start_one(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    spec: &ChildSpec,
    factory: &Arc<dyn ChildFactory>,
) -> Started {
    let linked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ctx = StartCtx {
        supervisor: myself.get_cell(),
        spec: spec.clone(),
        linked: linked.clone(),
    };
    // On its own task, so that a panicking factory is a failed start, not a dead supervisor.
    let outcome = match tokio::spawn(factory.start(ctx)).await {
        Ok(outcome) => outcome,
        Err(err) => StartOutcome::Failed(format!("the start panicked: {err}")),
    };
    match outcome {
        StartOutcome::Started(cell) => {
            // A child spawned linked reports its exit to us even if it already stopped (a
            // process that ended at once): that is a start followed by an exit. A child
            // linked only now must still be running, or its exit would go unseen.
            let spawned_linked = linked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&cell.get_id());
            if !spawned_linked {
                if cell.try_get_supervisor().map(|s| s.get_id()) != Some(myself.get_id()) {
                    cell.link(myself.get_cell());
                }
                if cell.get_status() >= ActorStatus::Stopping {
                    return Started::Failed("the child stopped while it was being started".into());
                }
            }
            let instance = state.core.next_instance();
            state.by_actor.insert(cell.get_id(), instance);
            state.last_actor.insert(spec.id.clone(), cell.get_id());
            if state.last_actor.len() > 2 * state.core.len() + 64 {
                let core = &state.core;
                state
                    .last_actor
                    .retain(|child, _| core.entry(child).is_some());
            }
            state.cells.insert(instance, cell);
            Started::Running(instance)
        }
        StartOutcome::Remote { node, path } => {
            let instance = state.core.next_instance();
            let me = myself.clone();
            let addr = crate::addr::Addr::<()>::on(node.clone(), path.clone());
            let placed = crate::monitor::monitor_with(&addr, move |down| {
                let _ = me.send_message(SupervisorMsg::RemoteDown(instance, down));
            })
            .await;
            match placed {
                Ok(monitor) => {
                    state.remotes.insert(
                        instance,
                        RemoteChild {
                            node,
                            path,
                            monitor,
                        },
                    );
                    Started::Running(instance)
                }
                Err(e) => Started::Failed(format!("cannot monitor {path} on {node}: {e}")),
            }
        }
        StartOutcome::Ignore => Started::Ignored,
        StartOutcome::Failed(reason) => Started::Failed(reason),
    }
}

/// Carries out a decision of the core, and whatever follows from it.
async fn execute(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    mut decision: Decision,
) {
    loop {
        match decision {
            Decision::Nothing => return,
            Decision::TryAgain { id } => {
                // Through the mailbox, so that requests queued meanwhile (a shutdown, say)
                // are served between tries, as in OTP.
                let _ = myself.send_message(SupervisorMsg::TryAgain(id));
                return;
            }
            Decision::Shutdown { reason } => {
                info!(%reason, "supervisor stopping");
                stop_all(state).await;
                myself.stop(Some(reason));
                return;
            }
            Decision::Restart { stop, start } => {
                for id in &stop {
                    stop_child(state, id).await;
                    state.core.stopped_by_supervisor(id);
                }
                decision = Decision::Nothing;
                for id in &start {
                    let Some(spec) = state.core.restart_spec(id) else {
                        continue;
                    };
                    if state.instance_of(id).is_some() {
                        continue;
                    }
                    let Some(factory) = state.factory(id) else {
                        continue;
                    };
                    let outcome = start_one(myself, state, &spec, &factory).await;
                    let next = state.core.restarted(id, &outcome);
                    if next != Decision::Nothing {
                        decision = next;
                        break;
                    }
                }
            }
        }
    }
}

/// Stops a static or dynamic child on request.
async fn terminate(state: &mut SupervisorState, id: &str) -> Result<(), ChildError> {
    state.core.check_terminate(id)?;
    stop_child(state, id).await;
    state.core.stopped_by_supervisor(id);
    Ok(())
}

/// Stops one running child by its shutdown spec.
async fn stop_child(state: &mut SupervisorState, id: &str) {
    let Some(shutdown) = state.core.entry(id).map(|e| e.spec.effective_shutdown()) else {
        return;
    };
    if let Some(running) = state.detach(id) {
        running.stop(shutdown).await;
    }
}

/// Stops every running child: in reverse start order, or all at once for a dynamic
/// supervisor (whose children are alike and independent, as in OTP).
async fn stop_all(state: &mut SupervisorState) {
    let order = state.core.shutdown_order();
    if state.core.is_dynamic() {
        let mut stops = tokio::task::JoinSet::new();
        for id in &order {
            let shutdown = state.core.entry(id).map(|e| e.spec.effective_shutdown());
            if let (Some(running), Some(shutdown)) = (state.detach(id), shutdown) {
                stops.spawn(running.stop(shutdown));
            }
        }
        while stops.join_next().await.is_some() {}
        for id in &order {
            state.core.stopped_by_supervisor(id);
        }
    } else {
        for id in &order {
            stop_child(state, id).await;
            state.core.stopped_by_supervisor(id);
        }
    }
}

use crate::lifecycle::stop_cell;

/// A running child, detached for stopping.
enum Running {
    Local(ActorCell),
    Remote(RemoteChild),
}

impl Running {
    async fn stop(self, shutdown: Shutdown) {
        match self {
            Running::Local(cell) => stop_cell(cell, shutdown).await,
            Running::Remote(remote) => {
                if let Err(e) = crate::spawn::stop_on(&remote.node, &remote.path, shutdown).await {
                    // Its node is unreachable; its spawner stops it when it sees us go.
                    warn!(node = %remote.node, path = %remote.path, cause = %e, "could not stop a remote child");
                }
            }
        }
    }
}

/// A handle to a running supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorRef {
    actor: ActorRef<SupervisorMsg>,
}

/// How long a request to a supervisor may take: long, since a request waits behind restarts
/// and a child's stop may be `infinity`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

impl SupervisorRef {
    /// Starts a supervisor that no one supervises. Returns once every child has started;
    /// if one fails, those before it are stopped again and the error names it.
    pub async fn start(spec: SupervisorSpec) -> Result<SupervisorRef, StartError> {
        Self::spawn(None, spec).await
    }

    /// Starts a supervisor linked to `parent`, which sees its exit.
    pub async fn start_linked(
        spec: SupervisorSpec,
        parent: ActorCell,
    ) -> Result<SupervisorRef, StartError> {
        Self::spawn(Some(parent), spec).await
    }

    async fn spawn(
        parent: Option<ActorCell>,
        spec: SupervisorSpec,
    ) -> Result<SupervisorRef, StartError> {
        let spawned = match parent {
            Some(parent) => Actor::spawn_linked(None, Supervisor, spec, parent).await,
            None => Actor::spawn(None, Supervisor, spec).await,
        };
        match spawned {
            Ok((actor, _)) => Ok(SupervisorRef { actor }),
            Err(SpawnErr::StartupFailed(err)) => Err(match err.downcast::<StartError>() {
                Ok(start) => *start,
                Err(other) => StartError::Spawn(other.to_string()),
            }),
            Err(other) => Err(StartError::Spawn(other.to_string())),
        }
    }

    /// The supervisor running as `cell`, if it is one (a child started by
    /// [`Child::supervisor`], say).
    pub fn from_cell(cell: ActorCell) -> Option<SupervisorRef> {
        (cell.is_message_type_of::<SupervisorMsg>() == Some(true))
            .then(|| SupervisorRef { actor: cell.into() })
    }

    /// The supervisor's actor.
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
    ) -> Result<T, ChildError> {
        match self.actor.call(build, Some(REQUEST_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(value)) => Ok(value),
            _ => Err(ChildError::SupervisorGone),
        }
    }

    /// Adds a child and starts it (OTP's `start_child/2` with a spec). Returns its actor, or
    /// `None` when its start chose to ignore.
    pub async fn start_child(&self, child: Child) -> Result<Option<ActorCell>, ChildError> {
        self.ask(|r| SupervisorMsg::StartChild(child, r)).await?
    }

    /// Starts a child of a dynamic supervisor from its template, with these arguments.
    pub async fn start_dynamic(&self, args: spec::Args) -> Result<Option<ActorCell>, ChildError> {
        self.ask(|r| SupervisorMsg::StartDynamic(args, r)).await?
    }

    /// Stops a child by its id. A static child's spec is kept; a temporary or dynamic
    /// child's is forgotten.
    pub async fn terminate_child(&self, id: &str) -> Result<(), ChildError> {
        let id = id.to_string();
        self.ask(|r| SupervisorMsg::TerminateChild(id, r)).await?
    }

    /// Stops the dynamic child running as `actor` (OTP's `terminate_child` with a pid). A
    /// child whose restart is pending is found by the actor it last ran as.
    pub async fn terminate_actor(&self, actor: ActorCell) -> Result<(), ChildError> {
        self.ask(|r| SupervisorMsg::TerminateActor(actor, r))
            .await?
    }

    /// Starts a stopped static child again.
    pub async fn restart_child(&self, id: &str) -> Result<Option<ActorCell>, ChildError> {
        let id = id.to_string();
        self.ask(|r| SupervisorMsg::RestartChild(id, r)).await?
    }

    /// Forgets a stopped static child.
    pub async fn delete_child(&self, id: &str) -> Result<(), ChildError> {
        let id = id.to_string();
        self.ask(|r| SupervisorMsg::DeleteChild(id, r)).await?
    }

    /// The children in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, ChildError> {
        self.ask(SupervisorMsg::WhichChildren).await
    }

    /// OTP's `count_children`.
    pub async fn count_children(&self) -> Result<ChildCounts, ChildError> {
        self.ask(SupervisorMsg::CountChildren).await
    }

    /// A child's spec.
    pub async fn get_childspec(&self, id: &str) -> Result<ChildSpec, ChildError> {
        let id = id.to_string();
        self.ask(|r| SupervisorMsg::GetChildSpec(id, r)).await?
    }

    /// The supervisor's flags.
    pub async fn flags(&self) -> Result<SupFlags, ChildError> {
        self.ask(SupervisorMsg::GetFlags).await
    }

    /// Stops the supervisor: its children in reverse order, then itself, with reason
    /// `shutdown`. Waits until it is gone.
    pub async fn stop(&self) {
        let _ = self
            .actor
            .stop_and_wait(Some("shutdown".into()), None)
            .await;
    }

    /// Waits until the supervisor has stopped, for at most `limit`.
    pub async fn wait(&self, limit: Duration) -> bool {
        self.actor.wait(Some(limit)).await.is_ok()
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        self.actor.get_status() < ActorStatus::Stopping
    }
}
