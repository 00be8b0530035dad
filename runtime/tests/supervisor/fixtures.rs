//! The children and observers the ported OTP cases use, after `supervisor_1`, `supervisor_2`,
//! `supervisor_3` and `supervisor_deadlock` of OTP's test directory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use troupe_runtime::supervisor::{Args, ChildCounts, Shutdown, StartCtx, StartOutcome, Strategy};
use troupe_runtime::{Child, ChildSpec, SupFlags, SupervisorRef};

/// How long a test waits for something that must happen.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for something that must not happen (OTP's `check_exit(.., 1000)`).
pub(crate) const QUIET: Duration = Duration::from_millis(500);

/// OTP's favourite period: an hour, so that only intensity matters.
pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// Flags with `intensity` restarts an hour.
pub(crate) fn flags(strategy: Strategy, intensity: u32) -> SupFlags {
    SupFlags::new(strategy).intensity(intensity, HOUR)
}

/// A permanent `supervisor_1` worker spec with a 1 s shutdown.
pub(crate) fn spec1(id: &str) -> ChildSpec {
    ChildSpec::worker(id)
        .shutdown(Shutdown::Timeout(Duration::from_millis(1000)))
        .start("supervisor_1", Args::none())
}

/// What a worker does, from its start arguments (a dynamic child's come from `start_dynamic`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Behaviour {
    /// How long its stop takes (OTP's `supervisor_2`).
    pub(crate) stop_delay_ms: u64,
    /// A tag it records, to tell which arguments a restart used.
    pub(crate) tag: String,
}

impl Behaviour {
    pub(crate) fn args(&self) -> Args {
        Args::encode(self).expect("encodable")
    }
}

/// Messages to a worker, as `supervisor_1` takes them.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    /// Stop with reason normal (`stop`).
    Stop,
    /// Fail with reason "died" (`die`).
    Die,
    /// Stop with this reason (`exit(Pid, shutdown)` / `{shutdown, T}` as the child sees it).
    ExitWith(String),
    /// Block the handler, so a stop request is never read (`{sleep, T}`).
    Sleep(Duration),
}

impl ractor::Message for WorkerMsg {}

/// A start or stop seen by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Started {
        id: String,
        actor: ActorId,
        tag: String,
    },
    Stopped {
        id: String,
        actor: ActorId,
    },
    /// It began to block in a handler.
    Sleeping {
        id: String,
    },
}

/// The order of starts and stops, across all workers of a test.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Event>>>);

impl Log {
    pub(crate) fn push(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
    pub(crate) fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    /// The ids of the workers that stopped, in order.
    pub(crate) fn stops(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Stopped { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }
    /// The ids of the workers that started, in order.
    pub(crate) fn starts(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Started { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }
    /// Waits until the log holds `event`.
    pub(crate) async fn wait_for(&self, event: &Event) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.events().contains(event) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never logged {event:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

pub(crate) struct Worker;

pub(crate) struct WorkerArgs {
    pub(crate) id: String,
    pub(crate) log: Log,
    pub(crate) behaviour: Behaviour,
}

pub(crate) struct WorkerState {
    id: String,
    log: Log,
    behaviour: Behaviour,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        args.log.push(Event::Started {
            id: args.id.clone(),
            actor: myself.get_id(),
            tag: args.behaviour.tag.clone(),
        });
        Ok(WorkerState {
            id: args.id,
            log: args.log,
            behaviour: args.behaviour,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.behaviour.stop_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(state.behaviour.stop_delay_ms)).await;
        }
        state.log.push(Event::Stopped {
            id: state.id.clone(),
            actor: myself.get_id(),
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Stop => myself.stop(None),
            WorkerMsg::Die => return Err("died".into()),
            WorkerMsg::ExitWith(reason) => myself.stop(Some(reason)),
            WorkerMsg::Sleep(d) => {
                state.log.push(Event::Sleeping {
                    id: state.id.clone(),
                });
                tokio::time::sleep(d).await
            }
        }
        Ok(())
    }
}

/// Starts a worker for `ctx`, with the behaviour in its arguments (or the default).
pub(crate) async fn spawn_worker(ctx: StartCtx, log: Log) -> StartOutcome {
    let behaviour = if ctx.args().is_empty() {
        Behaviour::default()
    } else {
        ctx.args().decode().expect("behaviour args")
    };
    let args = WorkerArgs {
        id: ctx.id().to_string(),
        log,
        behaviour,
    };
    ctx.spawn(Worker, args).await
}

/// A plain `supervisor_1` child.
pub(crate) fn worker(spec: ChildSpec, log: &Log) -> Child {
    let log = log.clone();
    Child::new(spec, move |ctx: StartCtx| spawn_worker(ctx, log.clone()))
}

/// `supervisor_1:start_child(ignore)`: the first start under this factory is ignored, later
/// ones start (OTP keeps the flag per supervisor; here it is per factory, shared by clones).
pub(crate) fn ignore_first(spec: ChildSpec, log: &Log) -> Child {
    let log = log.clone();
    let ignored = Arc::new(AtomicBool::new(false));
    Child::new(spec, move |ctx: StartCtx| {
        let log = log.clone();
        let first = !ignored.swap(true, Ordering::SeqCst);
        async move {
            if first {
                StartOutcome::Ignore
            } else {
                spawn_worker(ctx, log).await
            }
        }
    })
}

/// `supervisor_1:start_child(error)`: the first start works, every later one fails.
pub(crate) fn error_after_first(spec: ChildSpec, log: &Log) -> Child {
    let log = log.clone();
    let started = Arc::new(AtomicBool::new(false));
    Child::new(spec, move |ctx: StartCtx| {
        let log = log.clone();
        let again = started.swap(true, Ordering::SeqCst);
        async move {
            if again {
                StartOutcome::Failed("function_clause".into())
            } else {
                spawn_worker(ctx, log).await
            }
        }
    })
}

/// `supervisor_deadlock`: while `fail` is set, a start takes a while and then fails.
pub(crate) fn slow_failing(
    spec: ChildSpec,
    log: &Log,
    fail: Arc<AtomicBool>,
    takes: Duration,
) -> Child {
    let log = log.clone();
    Child::new(spec, move |ctx: StartCtx| {
        let log = log.clone();
        let fail = fail.load(Ordering::SeqCst);
        async move {
            if fail {
                tokio::time::sleep(takes).await;
                StartOutcome::Failed("error".into())
            } else {
                spawn_worker(ctx, log).await
            }
        }
    })
}

/// What the test answers a `supervisor_3` child that asks whether to start.
#[derive(Debug)]
pub(crate) enum Answer {
    Start,
    Fail,
}

/// `supervisor_3`: each start asks the test over `asks` and waits for its answer.
pub(crate) fn handshake(
    spec: ChildSpec,
    log: &Log,
    asks: mpsc::UnboundedSender<(String, tokio::sync::oneshot::Sender<Answer>)>,
) -> Child {
    let log = log.clone();
    Child::new(spec, move |ctx: StartCtx| {
        let log = log.clone();
        let asks = asks.clone();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if asks.send((ctx.id().to_string(), tx)).is_err() {
                return StartOutcome::Failed("the test is gone".into());
            }
            match rx.await {
                Ok(Answer::Start) => spawn_worker(ctx, log).await,
                _ => StartOutcome::Failed("normal".into()),
            }
        }
    })
}

/// Watches actors and reports how each one exited: "normal", "shutdown", "killed", "died"...
pub(crate) struct Watch {
    actor: ActorRef<()>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(ActorId, String)>>,
    seen: Mutex<HashMap<ActorId, String>>,
}

struct Watcher;

impl Actor for Watcher {
    type Msg = ();
    type State = mpsc::UnboundedSender<(ActorId, String)>;
    type Arguments = mpsc::UnboundedSender<(ActorId, String)>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let exit = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell.get_id(), reason.unwrap_or_else(|| "normal".into()))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), err.to_string()),
            _ => return Ok(()),
        };
        let _ = tx.send(exit);
        Ok(())
    }
}

impl Watch {
    pub(crate) async fn new() -> Watch {
        let (tx, rx) = mpsc::unbounded_channel();
        let (actor, _) = Actor::spawn(None, Watcher, tx).await.expect("watcher");
        Watch {
            actor,
            rx: tokio::sync::Mutex::new(rx),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The watcher's own actor: a parent to link supervisors to, whose exits it then sees.
    pub(crate) fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Starts watching `cell` (a child, or a supervisor).
    pub(crate) fn add(&self, cell: &ActorCell) {
        self.actor.get_cell().monitor(cell.clone());
    }

    /// Watches several.
    pub(crate) fn add_all<'a>(&self, cells: impl IntoIterator<Item = &'a ActorCell>) {
        for cell in cells {
            self.add(cell);
        }
    }

    /// The exit reason of `cell`, waiting at most `within` for it.
    pub(crate) async fn exit(&self, cell: &ActorCell, within: Duration) -> Option<String> {
        let id = cell.get_id();
        let deadline = tokio::time::Instant::now() + within;
        let mut rx = self.rx.lock().await;
        loop {
            if let Some(reason) = self.seen.lock().unwrap().get(&id) {
                return Some(reason.clone());
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((who, reason))) => {
                    self.seen.lock().unwrap().insert(who, reason);
                }
                _ => return None,
            }
        }
    }

    /// The exit reason of `cell`, which must come (OTP's `check_exit_reason`).
    pub(crate) async fn exited(&self, cell: &ActorCell) -> String {
        self.exit(cell, WAIT)
            .await
            .unwrap_or_else(|| panic!("{} did not exit", cell.get_id()))
    }

    /// Asserts that `cell` does not exit for a while (OTP's `error = check_exit([P], 1000)`).
    pub(crate) async fn stays(&self, cell: &ActorCell) {
        if let Some(reason) = self.exit(cell, QUIET).await {
            panic!("{} exited ({reason}) but should have stayed", cell.get_id());
        }
    }
}

/// OTP's `get_child_counts`: [specs, active, supervisors, workers].
pub(crate) async fn counts(sup: &SupervisorRef) -> [usize; 4] {
    let ChildCounts {
        specs,
        active,
        supervisors,
        workers,
    } = sup.count_children().await.expect("supervisor alive");
    [specs, active, supervisors, workers]
}

/// The running actor of each child, in start order (None when not running).
pub(crate) async fn actors(sup: &SupervisorRef) -> Vec<(String, Option<ActorCell>)> {
    sup.which_children()
        .await
        .expect("supervisor alive")
        .into_iter()
        .map(|c| (c.id, c.actor))
        .collect()
}

/// The running actor of child `id`.
pub(crate) async fn actor_of(sup: &SupervisorRef, id: &str) -> ActorCell {
    actors(sup)
        .await
        .into_iter()
        .find(|(c, _)| c == id)
        .and_then(|(_, a)| a)
        .unwrap_or_else(|| panic!("child {id} is not running"))
}

/// Sends a worker message to a child's actor.
pub(crate) fn tell(cell: &ActorCell, msg: WorkerMsg) {
    let actor: ActorRef<WorkerMsg> = cell.clone().into();
    actor.send_message(msg).expect("child alive");
}

/// OTP's `terminate(Sup, Pid, Id, How)` for How in normal | abnormal | shutdown | kill:
/// makes the child exit that way and waits until it has.
pub(crate) async fn end(watch: &Watch, cell: &ActorCell, how: &str) {
    watch.add(cell);
    match how {
        "normal" => tell(cell, WorkerMsg::Stop),
        "abnormal" => tell(cell, WorkerMsg::Die),
        "kill" => cell.kill(),
        other => tell(cell, WorkerMsg::ExitWith(other.to_string())),
    }
    let reason = watch.exited(cell).await;
    let expected = match how {
        "normal" => "normal",
        "abnormal" => "died",
        "kill" => "killed",
        other => other,
    };
    assert_eq!(reason, expected, "exit reason");
}
