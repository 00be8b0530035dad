//! The one-shot runner: the built-in framework behind `troupe run`. It runs on the master's
//! node at [`RUNNER_PATH`]; anyone submits commands to it, and it launches each once, on
//! the first offer it fits in, and tells the submitter's watcher every state change.
//!
//! It asks for offers only while it has commands waiting (it suppresses them otherwise), and
//! declines an offer it cannot use for one second, so that other frameworks get it.
//!
//! A waiting command is the submitter's intent only while the submitter is there: the runner
//! monitors each watcher, and when one goes (the CLI was killed, its node disconnected),
//! its commands that still wait are cancelled; those launched keep running. `troupe run
//! --detach` submits without a watcher, so nothing of it is cancelled that way. A launch
//! that never reached its agent (`Dropped`) is queued again, under the same id, up to
//! [`MAX_LAUNCHES`] launches.

mod book;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use troupe_runtime::{Addr, Reply};

pub use book::MAX_LAUNCHES;
pub(crate) use book::why_waiting;
use book::{Book, Heard};

use crate::framework::{Driver, DriverError, FrameworkSettings, Scheduler};
use crate::master::MASTER_PATH;
use crate::outbox::Outbox;
use crate::protocol::{
    MasterMsg, OfferInfo, Resources, Source, TaskId, TaskInfo, TaskState, TaskStatus, now_ms,
};

/// The runner's path.
pub const RUNNER_PATH: &str = "runner";

/// The runner framework's name.
pub const RUNNER_NAME: &str = "troupe-run";

/// One command to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// A name for people (and the prefix of the task's id).
    pub name: String,
    /// What to run.
    pub command: troupe_os::ProcessSpec,
    /// What it needs.
    pub resources: Resources,
}

/// What the runner accepts.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum RunnerMsg {
    /// Run these commands; every state change of their tasks goes to `watcher` (a
    /// [`RunnerEvent`] receiver's path), if given. While they wait for resources, they are
    /// cancelled if the watcher goes away.
    Submit {
        /// The commands.
        requests: Vec<RunRequest>,
        /// Who hears of their states.
        watcher: Option<String>,
        /// Their task ids, in order, or why they were refused.
        reply: Reply<Result<Vec<TaskId>, SubmitRefused>>,
    },
    /// Cancel these tasks if they still wait for resources (their watcher hears them end
    /// `Killed`). Launched ones are not touched: the master kills those.
    Cancel {
        /// The tasks.
        tasks: Vec<TaskId>,
        /// The ones that were waiting and are now cancelled.
        reply: Reply<Vec<TaskId>>,
    },
    /// The commands waiting for resources, in queue order, each with why it waits.
    Queued {
        /// The answer.
        reply: Reply<Vec<QueuedTask>>,
    },
}

/// Why the runner refused a submission (all of it: nothing of a refused one runs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SubmitRefused {
    /// There was nothing to run.
    #[error("nothing to run")]
    Nothing,
    /// A command is not valid (no program, a bad signal or limit, bad or no resources).
    #[error("{name}: {why}")]
    Invalid {
        /// The command's name.
        name: String,
        /// Why.
        why: String,
    },
    /// A command needs more than any agent has: it would wait forever.
    #[error("{name} needs {needs}, more than any agent has (the largest: {largest})")]
    TooBig {
        /// The command's name.
        name: String,
        /// What it needs.
        needs: String,
        /// The largest agent's resources.
        largest: String,
    },
}

/// A command waiting in the runner's queue (a row of `troupe ps` in state `queued`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedTask {
    /// The id it will run under.
    pub id: TaskId,
    /// Its name.
    pub name: String,
    /// Its command line.
    pub command: Vec<String>,
    /// What it needs.
    pub resources: Resources,
    /// When it was submitted (ms since the Unix epoch).
    pub submitted_ms: u64,
    /// How many launches of it were dropped before it ran.
    pub dropped_launches: u32,
    /// Why it waits, in words ("waiting for 2 cpus; the largest free is 1.5 on a1").
    pub reason: String,
}

/// What a watcher hears.
#[derive(Debug, Clone, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum RunnerEvent {
    /// A task's new state.
    Status {
        /// The status.
        status: TaskStatus,
    },
    /// A launch of the task was dropped before it ran (`status` says why), and the task is
    /// queued again for its launch number `launch`.
    Requeued {
        /// The drop.
        status: TaskStatus,
        /// The launch it waits for now (2 for the second).
        launch: u32,
    },
}

/// A watcher of submitted tasks: its path (to know it again) and an outbox to it.
#[derive(Clone)]
struct Watcher {
    path: String,
    outbox: Arc<Outbox<RunnerEvent>>,
}

type SharedBook = Arc<Mutex<Book<Watcher>>>;

struct RunScheduler {
    book: SharedBook,
}

fn lock(book: &Mutex<Book<Watcher>>) -> std::sync::MutexGuard<'_, Book<Watcher>> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler for RunScheduler {
    fn offers(&mut self, driver: &Driver, offers: Vec<OfferInfo>) {
        let mut book = lock(&self.book);
        for offer in offers {
            let launch = book.fill(offer.resources);
            if launch.is_empty() {
                driver.decline(&[offer.id], Duration::from_secs(1));
            } else {
                driver.launch(&[offer.id], launch);
            }
        }
        if book.nothing_waits() && !book.suppressed {
            book.suppressed = true;
            driver.suppress();
        }
    }

    fn status(&mut self, driver: &Driver, status: &TaskStatus) {
        let mut book = lock(&self.book);
        match book.heard(status) {
            Heard::Tell(Some(watcher)) => watcher.outbox.send(RunnerEvent::Status {
                status: status.clone(),
            }),
            Heard::Requeued(watcher, launch) => {
                tracing::info!(task = %status.task, reason = %status.reason, launch, "launch dropped before it ran: queued again");
                if let Some(watcher) = watcher {
                    watcher.outbox.send(RunnerEvent::Requeued {
                        status: status.clone(),
                        launch,
                    });
                }
                drop(book);
                driver.revive();
            }
            Heard::Tell(None) | Heard::Unknown => {}
        }
    }

    fn rescinded(&mut self, _driver: &Driver, _offer: &crate::protocol::OfferId) {}
}

/// The runner actor (the submission desk; its scheduler runs in its driver).
struct RunnerActor;

struct RunnerState {
    book: SharedBook,
    driver: Driver,
    counter: troupe_runtime::inspector::MessageCounter,
    /// Watchers monitored, by path: their commands still waiting are cancelled when they
    /// go (and they leave this set).
    monitored: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

/// A task id that is unique across the cluster and its restarts, and short enough to type:
/// the name, then 8 hex digits.
fn task_id(name: &str) -> TaskId {
    crate::ids::unique_id("", name, "task")
}

/// Checks submitted commands and makes them tasks with fresh ids.
fn tasks_of(requests: Vec<RunRequest>) -> Result<Vec<TaskInfo>, SubmitRefused> {
    requests
        .into_iter()
        .map(|r| {
            let invalid = |why: String| SubmitRefused::Invalid {
                name: r.name.clone(),
                why,
            };
            r.command.validate().map_err(|e| invalid(e.to_string()))?;
            if !r.resources.is_valid() {
                return Err(invalid(format!("invalid resources {}", r.resources)));
            }
            // Nothing allocated would mean no cgroup limit and nothing counted against the
            // agent: an over-commit nobody asked for.
            if r.resources.cpus <= 0.0 || r.resources.mem_mib <= 0.0 {
                return Err(invalid(format!(
                    "a task needs more than 0 cpus and more than 0 MiB of memory, not {}",
                    r.resources
                )));
            }
            Ok(TaskInfo {
                id: task_id(&r.name),
                name: r.name,
                command: r.command,
                resources: r.resources,
            })
        })
        .collect()
}

impl Actor for RunnerActor {
    type Msg = RunnerMsg;
    type State = RunnerState;
    type Arguments = (SharedBook, Driver);

    async fn pre_start(
        &self,
        myself: ActorRef<RunnerMsg>,
        (book, driver): (SharedBook, Driver),
    ) -> Result<RunnerState, ActorProcessingErr> {
        troupe_runtime::register(RUNNER_PATH, &myself)?;
        Ok(RunnerState {
            book,
            driver,
            counter: troupe_runtime::inspector::MessageCounter::new(&myself.get_cell()),
            monitored: Default::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RunnerMsg>,
        message: RunnerMsg,
        state: &mut RunnerState,
    ) -> Result<(), ActorProcessingErr> {
        state.counter.handled();
        match message {
            RunnerMsg::Submit {
                requests,
                watcher,
                reply,
            } => {
                let tasks = match tasks_of(requests) {
                    Ok(tasks) if tasks.is_empty() => Err(SubmitRefused::Nothing),
                    Ok(tasks) => fits_somewhere(&tasks).await.map(|()| tasks),
                    other => other,
                };
                let tasks = match tasks {
                    Ok(tasks) => tasks,
                    Err(e) => {
                        reply.send(Err(e));
                        return Ok(());
                    }
                };
                let ids: Vec<TaskId> = tasks.iter().map(|t| t.id.clone()).collect();
                let watcher = match watcher {
                    Some(path) => Some(state.watch(path).await),
                    None => None,
                };
                lock(&state.book).submit(tasks, watcher, now_ms());
                state.driver.revive();
                reply.send(Ok(ids));
            }
            RunnerMsg::Cancel { tasks, reply } => {
                let cancelled = lock(&state.book).cancel(&tasks);
                let ids = cancelled.iter().map(|e| e.task.id.clone()).collect();
                for entry in cancelled {
                    tracing::info!(task = %entry.task.id, "cancelled while it waited for resources");
                    if let Some(watcher) = entry.watcher {
                        let mut status = TaskStatus::new(
                            entry.task.id,
                            TaskState::Killed,
                            Source::Master,
                            now_ms(),
                        );
                        status.reason =
                            "cancelled while it waited for resources; it never ran".into();
                        watcher.outbox.send(RunnerEvent::Status { status });
                    }
                }
                reply.send(ids);
            }
            RunnerMsg::Queued { reply } => {
                let agents = cluster_agents().await;
                let queued = lock(&state.book)
                    .waiting()
                    .map(|e| QueuedTask {
                        id: e.task.id.clone(),
                        name: e.task.name.clone(),
                        command: e.task.command.argv.clone(),
                        resources: e.task.resources,
                        submitted_ms: e.submitted_ms,
                        dropped_launches: e.launches,
                        reason: book::why_waiting(&e.task.resources, &agents),
                    })
                    .collect();
                reply.send(queued);
            }
        }
        Ok(())
    }
}

impl RunnerState {
    /// The watcher at `path`, monitored from its first submission on: when it goes, its
    /// commands that still wait are cancelled (nobody would see them run).
    async fn watch(&mut self, path: String) -> Watcher {
        let watcher = Watcher {
            outbox: Arc::new(Outbox::new(Addr::new(path.clone()))),
            path: path.clone(),
        };
        let first = self
            .monitored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.clone());
        if first {
            monitor_watcher(self.book.clone(), self.monitored.clone(), path).await;
        }
        watcher
    }
}

/// Monitors the watcher at `path`: when it goes, its commands that still wait are
/// cancelled. A monitor lost with the node's kernel (the watcher may still be there) is
/// placed again.
fn monitor_watcher(
    book: SharedBook,
    monitored: Arc<Mutex<std::collections::BTreeSet<String>>>,
    path: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let target = Addr::<RunnerEvent>::new(path.clone());
        let again = (book.clone(), monitored.clone(), path.clone());
        let placed = troupe_runtime::monitor_with(&target, move |down| {
            if let troupe_runtime::DownReason::Lost(_) = down.reason {
                let (book, monitored, path) = again;
                tokio::spawn(monitor_watcher(book, monitored, path));
                return;
            }
            monitored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&down.path);
            let gone = lock(&book)
                .cancel_where(|e| e.watcher.as_ref().is_some_and(|w| w.path == down.path));
            if !gone.is_empty() {
                tracing::info!(watcher = %down.path, reason = %down.reason, tasks = gone.len(), "the submitter went away: its waiting commands are cancelled");
            }
        })
        .await;
        if let Err(e) = placed {
            tracing::warn!(watcher = %path, cause = %e, "cannot monitor the submitter; its commands are not cancelled if it goes");
        }
    })
}

/// The master's agents, as it sees them now (none if it does not answer).
async fn cluster_agents() -> Vec<crate::protocol::AgentView> {
    Addr::<MasterMsg>::new(MASTER_PATH)
        .call(
            |reply| MasterMsg::State { all: false, reply },
            Duration::from_secs(2),
        )
        .await
        .map(|s| s.agents)
        .unwrap_or_default()
}

/// Refuses at once what no registered agent could ever hold (it would wait forever).
async fn fits_somewhere(tasks: &[TaskInfo]) -> Result<(), SubmitRefused> {
    let master = Addr::<MasterMsg>::new(MASTER_PATH);
    let Ok(state) = master
        .call(
            |reply| MasterMsg::State { all: false, reply },
            Duration::from_secs(2),
        )
        .await
    else {
        return Ok(());
    };
    if state.agents.is_empty() {
        return Ok(());
    }
    for task in tasks {
        if !state
            .agents
            .iter()
            .any(|a| a.info.resources.contains(&task.resources))
        {
            let largest = state
                .agents
                .iter()
                .map(|a| a.info.resources)
                .max_by(|a, b| a.cpus.total_cmp(&b.cpus))
                .unwrap_or_default();
            return Err(SubmitRefused::TooBig {
                name: task.name.clone(),
                needs: task.resources.to_string(),
                largest: largest.to_string(),
            });
        }
    }
    Ok(())
}

/// Starts the runner on this node: its framework (subscribed to the master at `master`, or
/// on this node) and its submission desk.
pub async fn start(master: Option<SocketAddr>) -> Result<Driver, DriverError> {
    let book: SharedBook = Arc::new(Mutex::new(Book::default()));
    let scheduler = RunScheduler { book: book.clone() };
    let settings = FrameworkSettings::built_in(RUNNER_NAME);
    let driver = Driver::start(settings, master, scheduler).await?;
    Actor::spawn(None, RunnerActor, (book, driver.clone()))
        .await
        .map_err(|e| DriverError::Spawn(e.to_string()))?;
    Ok(driver)
}
