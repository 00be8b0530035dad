//! The framework API: a framework author implements [`Scheduler`] (decisions only), and the
//! driver actor does the protocol: subscription (and subscribing again, with the same id,
//! after a master failover), acknowledgements, declines with filters, and reconciliation.
//!
//! ```no_run
//! # use troupe_actors::framework::*;
//! # use troupe_actors::protocol::*;
//! struct Hello;
//! impl Scheduler for Hello {
//!     fn offers(&mut self, driver: &Driver, offers: Vec<OfferInfo>) {
//!         for offer in offers {
//!             let task = TaskInfo {
//!                 id: TaskId(format!("hello-{}", offer.id)),
//!                 name: "hello".into(),
//!                 command: troupe_os::ProcessSpec::new(["echo", "hello"]),
//!                 resources: Resources::new(0.1, 32.0),
//!             };
//!             driver.launch(&[offer.id], vec![task]);
//!         }
//!     }
//!     fn status(&mut self, _driver: &Driver, status: &TaskStatus) {
//!         println!("{} is {}", status.task, status.state);
//!     }
//! }
//! # async fn run() {
//! let driver = Driver::start(FrameworkSettings::new("hello"), None, Hello).await.unwrap();
//! # }
//! ```
//!
//! The driver gives each task state to the scheduler once: a retried update of a state it
//! already delivered is acknowledged again without a second callback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use troupe_runtime::{Addr, Node};

use crate::master::MASTER_PATH;
use crate::outbox::Outbox;
use crate::protocol::{
    AgentId, FrameworkId, FrameworkInfo, MasterMsg, OfferId, OfferInfo, SchedulerMsg, TaskId,
    TaskInfo, TaskState, TaskStatus,
};
use crate::protocol::{DriverOwn, DriverOwnMsg};

/// What a framework decides. Every callback runs in the driver actor, one at a time; use
/// the [`Driver`] to act.
pub trait Scheduler: Send + 'static {
    /// Subscribed (again, after a failover) with this id.
    fn subscribed(&mut self, _driver: &Driver, _id: &FrameworkId) {}
    /// New offers: launch on them, or decline them (unanswered offers stay held).
    fn offers(&mut self, driver: &Driver, offers: Vec<OfferInfo>);
    /// An offer is void (its agent left, or it timed out).
    fn rescinded(&mut self, _driver: &Driver, _offer: &OfferId) {}
    /// A task's new state. The driver acknowledges it after this returns.
    fn status(&mut self, driver: &Driver, status: &TaskStatus);
    /// An agent is unreachable or gone (its tasks' states follow).
    fn agent_lost(&mut self, _driver: &Driver, _agent: &AgentId) {}
    /// The master refused something, or the subscription.
    fn error(&mut self, _driver: &Driver, _message: &str) {}
    /// The master went away; the driver subscribes again as soon as it can.
    fn disconnected(&mut self, _driver: &Driver) {}
}

/// A framework's settings.
#[derive(Debug, Clone)]
pub struct FrameworkSettings {
    /// Its name.
    pub name: String,
    /// Its role (`*` by default).
    pub role: String,
    /// How long the master keeps its tasks when it disconnects.
    pub failover_timeout: Duration,
    /// Its id, to take over a framework that already exists (after a restart).
    pub id: Option<FrameworkId>,
}

impl FrameworkSettings {
    /// The settings of a framework built into the master's node (the runner, the process
    /// service): one id for every life of it, its name, and an hour to come back. With a
    /// new id every start, the updates agents hold for its tasks from before a master
    /// restart, addressed to the old id, would wait behind one nobody can acknowledge, and
    /// the tasks' ends would never reach the master's books; with the same id, the new
    /// life acknowledges them.
    pub fn built_in(name: &str) -> FrameworkSettings {
        let mut settings = FrameworkSettings::new(name);
        settings.failover_timeout = Duration::from_secs(3600);
        settings.id = Some(FrameworkId(name.to_string()));
        settings
    }

    /// A framework called `name` in role `*`, with a failover timeout of one minute.
    pub fn new(name: impl Into<String>) -> FrameworkSettings {
        FrameworkSettings {
            name: name.into(),
            role: "*".into(),
            failover_timeout: Duration::from_secs(60),
            id: None,
        }
    }

    /// In this role.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }
}

/// Why a driver could not start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// There is no running node in this process.
    #[error("no troupe node runs in this process")]
    NoNode,
    /// The driver actor did not start.
    #[error("the driver did not start: {0}")]
    Spawn(String),
    /// The master refused the subscription.
    #[error("the master refused the subscription: {0}")]
    Refused(String),
    /// The master did not answer in time.
    #[error("the master did not answer within {0:?}")]
    Timeout(Duration),
}

struct Shared {
    framework: Mutex<Option<FrameworkId>>,
    master: Mutex<Option<Outbox<MasterMsg>>>,
    actor: Mutex<Option<ActorRef<SchedulerMsg>>>,
    subscribed: watch::Sender<Option<Result<FrameworkId, String>>>,
}

/// The handle a scheduler acts through (cheap to clone, usable from any task).
#[derive(Clone)]
pub struct Driver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("framework", &self.framework())
            .finish()
    }
}

static DRIVERS: AtomicU64 = AtomicU64::new(0);

impl Driver {
    /// Starts a driver for `scheduler` and subscribes it: with the master on another node
    /// at `master`, or on this node when `None`. Returns once subscribed (10 s at most).
    pub async fn start<S: Scheduler>(
        settings: FrameworkSettings,
        master: Option<SocketAddr>,
        scheduler: S,
    ) -> Result<Driver, DriverError> {
        let node = Node::current().ok_or(DriverError::NoNode)?;
        let (subscribed, mut answer) = watch::channel(None);
        let driver = Driver {
            shared: Arc::new(Shared {
                framework: Mutex::new(settings.id.clone()),
                master: Mutex::new(None),
                actor: Mutex::new(None),
                subscribed,
            }),
        };
        let path = format!(
            "framework/{}/{}-{}",
            node.name(),
            std::process::id(),
            DRIVERS.fetch_add(1, Ordering::Relaxed)
        );
        let args = DriverArgs {
            settings,
            master,
            path,
            driver: driver.clone(),
            scheduler: Box::new(scheduler),
        };
        let (actor, _) = Actor::spawn(None, DriverActor, args)
            .await
            .map_err(|e| DriverError::Spawn(e.to_string()))?;
        *lock(&driver.shared.actor) = Some(actor);
        let limit = Duration::from_secs(10);
        let outcome = tokio::time::timeout(limit, answer.wait_for(Option::is_some))
            .await
            .map_err(|_| DriverError::Timeout(limit))
            .and_then(|r| {
                r.map(|v| v.clone())
                    .map_err(|_| DriverError::Timeout(limit))
            });
        match outcome {
            Ok(Some(Ok(_))) => Ok(driver),
            Ok(Some(Err(reason))) => {
                driver.abandon();
                Err(DriverError::Refused(reason))
            }
            Ok(None) | Err(_) => {
                driver.abandon();
                Err(DriverError::Timeout(limit))
            }
        }
    }

    /// The framework's id, once subscribed.
    pub fn framework(&self) -> Option<FrameworkId> {
        lock(&self.shared.framework).clone()
    }

    fn tell(&self, make: impl FnOnce(FrameworkId) -> MasterMsg) {
        let Some(framework) = self.framework() else {
            tracing::warn!("a framework command before the subscription: dropped");
            return;
        };
        if let Some(master) = lock(&self.shared.master).as_ref() {
            master.send(make(framework));
        }
    }

    /// Launches `tasks` on `offers` (all of one agent). What they leave of the offers goes
    /// back to the pool at once. Launching no task declines the offers, as in Mesos, for
    /// the default 5 s.
    pub fn launch(&self, offers: &[OfferId], tasks: Vec<TaskInfo>) {
        self.tell(|framework| MasterMsg::Accept {
            framework,
            offers: offers.to_vec(),
            tasks,
            refuse_ms: None,
        });
    }

    /// Declines offers: no more than what they hold (from the same agent and pool) is
    /// offered to this framework for `refuse` (Mesos' `refuse_seconds`;
    /// [`crate::allocator::engine::DEFAULT_REFUSE`] is 5 s).
    pub fn decline(&self, offers: &[OfferId], refuse: Duration) {
        self.tell(|framework| MasterMsg::Decline {
            framework,
            offers: offers.to_vec(),
            refuse_ms: refuse.as_millis() as u64,
        });
    }

    /// Asks for offers again: suppression ends and decline filters are cleared.
    pub fn revive(&self) {
        self.tell(|framework| MasterMsg::Revive { framework });
    }

    /// Asks for no offers until [`Driver::revive`].
    pub fn suppress(&self) {
        self.tell(|framework| MasterMsg::Suppress { framework });
    }

    /// Kills a task (its stop signal, grace period, then SIGKILL); its `Killed` state
    /// follows.
    pub fn kill(&self, task: &TaskId) {
        self.kill_within(task, None);
    }

    /// Kills a task with another grace than its own between its stop signal and SIGKILL
    /// (`None`: its own; zero: SIGKILL at once).
    pub fn kill_within(&self, task: &TaskId, grace: Option<Duration>) {
        let task = task.clone();
        if let Some(master) = lock(&self.shared.master).as_ref() {
            let (reply, _) = troupe_runtime::Reply::channel();
            master.send(MasterMsg::Kill { task, grace, reply });
        }
    }

    /// Asks for the latest state of these tasks (of all the framework's live tasks when
    /// empty); the answers come as [`Scheduler::status`] calls.
    pub fn reconcile(&self, tasks: Vec<TaskId>) {
        self.tell(|framework| MasterMsg::Reconcile { framework, tasks });
    }

    /// Ends the framework: the master kills its tasks and forgets it; the driver stops.
    pub fn stop(&self) {
        self.tell(|framework| MasterMsg::Teardown { framework });
        self.abandon();
    }

    /// Stops the driver without ending the framework: its tasks keep running for its
    /// failover timeout, for a new driver with the same id to take over.
    pub fn abandon(&self) {
        if let Some(actor) = lock(&self.shared.actor).take() {
            // After what is queued for the master went out.
            let outbox = lock(&self.shared.master).take();
            tokio::spawn(async move {
                drop(outbox);
                tokio::time::sleep(Duration::from_millis(50)).await;
                actor.stop(None);
            });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct DriverArgs {
    settings: FrameworkSettings,
    master: Option<SocketAddr>,
    path: String,
    driver: Driver,
    scheduler: Box<dyn Scheduler>,
}

struct DriverActor;

struct DriverState {
    settings: FrameworkSettings,
    master_at: Option<SocketAddr>,
    path: String,
    driver: Driver,
    scheduler: Box<dyn Scheduler>,
    master: Addr<MasterMsg>,
    subscribed: bool,
    watch: Option<troupe_runtime::Ref>,
    /// The last state given to the scheduler, per task, so a retried update is not given
    /// twice.
    delivered: BTreeMap<TaskId, TaskState>,
}

/// How often an unsubscribed driver tries again.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(500);

impl Actor for DriverActor {
    type Msg = SchedulerMsg;
    type State = DriverState;
    type Arguments = DriverArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: DriverArgs,
    ) -> Result<DriverState, ActorProcessingErr> {
        troupe_runtime::register(&args.path, &myself)?;
        myself.send_interval(RESUBSCRIBE_EVERY, || {
            SchedulerMsg::own(DriverOwnMsg::Reconnect)
        });
        let _ = myself.cast(SchedulerMsg::own(DriverOwnMsg::Reconnect));
        Ok(DriverState {
            settings: args.settings,
            master_at: args.master,
            path: args.path,
            driver: args.driver,
            scheduler: args.scheduler,
            master: Addr::new(MASTER_PATH),
            subscribed: false,
            watch: None,
            delivered: BTreeMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        state: &mut DriverState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(watch) = state.watch.take() {
            troupe_runtime::demonitor(&watch);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut DriverState,
    ) -> Result<(), ActorProcessingErr> {
        let driver = state.driver.clone();
        match message {
            SchedulerMsg::Own(DriverOwn(DriverOwnMsg::Reconnect)) => {
                if !state.subscribed {
                    state.subscribe(&myself).await;
                }
            }
            SchedulerMsg::Own(DriverOwn(DriverOwnMsg::MasterDown)) => {
                if state.subscribed {
                    tracing::info!(framework = ?driver.framework(), "the master went away; subscribing again");
                    state.subscribed = false;
                    state.scheduler.disconnected(&driver);
                    state.subscribe(&myself).await;
                }
            }
            SchedulerMsg::Offers { offers } => state.scheduler.offers(&driver, offers),
            SchedulerMsg::Rescind { offer } => state.scheduler.rescinded(&driver, &offer),
            SchedulerMsg::Update { status, ack } => {
                // The agent retries its updates until acknowledged: a state already given
                // is not given twice. The master's own updates (refusals, reconciliation,
                // agent loss) are answers, given as they come; a refusal is not the task's
                // state (a duplicate id is refused while the task with it runs).
                let seen = state.delivered.get(&status.task).copied();
                let fresh = ack.is_none()
                    || match seen {
                        None => true,
                        Some(prev) => prev != status.state && !prev.is_terminal(),
                    };
                if fresh {
                    if !matches!(status.state, TaskState::Error | TaskState::Dropped) {
                        state.delivered.insert(status.task.clone(), status.state);
                    }
                    state.scheduler.status(&driver, &status);
                }
                if let (Some(update), Some(agent)) = (ack, status.agent.clone()) {
                    driver.tell(|framework| MasterMsg::Acknowledge {
                        framework,
                        agent,
                        task: status.task.clone(),
                        update,
                    });
                }
            }
            SchedulerMsg::AgentLost { agent } => state.scheduler.agent_lost(&driver, &agent),
            SchedulerMsg::Error { message } => state.scheduler.error(&driver, &message),
        }
        Ok(())
    }
}

impl DriverState {
    async fn subscribe(&mut self, myself: &ActorRef<SchedulerMsg>) {
        let Some(node) = Node::current() else {
            return;
        };
        if let Some(addr) = self.master_at {
            match tokio::time::timeout(Duration::from_secs(5), node.connect(addr)).await {
                Ok(Ok(name)) => self.master = Addr::on(name, MASTER_PATH),
                Ok(Err(e)) => {
                    tracing::debug!(master = %addr, cause = %e, "master not reachable");
                    return;
                }
                Err(_) => return,
            }
        }
        let info = FrameworkInfo {
            id: self.driver.framework(),
            name: self.settings.name.clone(),
            role: self.settings.role.clone(),
            failover_timeout: self.settings.failover_timeout,
            driver: self.path.clone(),
        };
        let answer = self
            .master
            .call(
                |reply| MasterMsg::Subscribe { info, reply },
                Duration::from_secs(5),
            )
            .await;
        match answer {
            Ok(Ok(id)) => {
                self.subscribed = true;
                *lock(&self.driver.shared.framework) = Some(id.clone());
                *lock(&self.driver.shared.master) = Some(Outbox::new(self.master.clone()));
                if let Some(watch) = self.watch.take() {
                    troupe_runtime::demonitor(&watch);
                }
                let me = myself.clone();
                self.watch = troupe_runtime::monitor_with(&self.master, move |_| {
                    let _ = me.cast(SchedulerMsg::own(DriverOwnMsg::MasterDown));
                })
                .await
                .ok();
                let _ = self.driver.shared.subscribed.send(Some(Ok(id.clone())));
                let driver = self.driver.clone();
                self.scheduler.subscribed(&driver, &id);
                // Implicit reconciliation: the latest state of every live task.
                driver.reconcile(Vec::new());
            }
            Ok(Err(refused)) => {
                let reason = refused.to_string();
                let driver = self.driver.clone();
                self.scheduler.error(&driver, &reason);
                let _ = self.driver.shared.subscribed.send(Some(Err(reason)));
            }
            Err(e) => tracing::debug!(cause = %e, "subscription failed; trying again"),
        }
    }
}
