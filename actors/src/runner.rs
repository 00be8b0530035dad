//! The one-shot runner: the built-in framework behind `troupe run`. It runs on the master's
//! node at [`RUNNER_PATH`]; anyone submits commands to it, and it launches each once, on
//! the first offer it fits in, and tells the submitter's watcher every state change.
//!
//! It asks for offers only while it has commands waiting (it suppresses them otherwise), and
//! declines an offer it cannot use for one second, so that other frameworks get it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use troupe_runtime::{Addr, Reply};

use crate::framework::{Driver, DriverError, FrameworkSettings, Scheduler};
use crate::master::MASTER_PATH;
use crate::outbox::Outbox;
use crate::protocol::{FrameworkId, MasterMsg, OfferInfo, Resources, TaskId, TaskInfo, TaskStatus};

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
    /// [`RunnerEvent`] receiver's path), if given.
    Submit {
        /// The commands.
        requests: Vec<RunRequest>,
        /// Who hears of their states.
        watcher: Option<String>,
        /// Their task ids, in order, or why they were refused.
        reply: Reply<Result<Vec<TaskId>, String>>,
    },
}

/// What a watcher hears.
#[derive(Debug, Clone, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum RunnerEvent {
    /// A task's new state.
    Status {
        /// The status.
        status: TaskStatus,
    },
}

struct Waiting {
    task: TaskInfo,
}

#[derive(Default)]
struct Book {
    waiting: VecDeque<Waiting>,
    watchers: BTreeMap<TaskId, Arc<Outbox<RunnerEvent>>>,
    suppressed: bool,
}

struct RunScheduler {
    book: Arc<Mutex<Book>>,
}

fn lock(book: &Mutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler for RunScheduler {
    fn offers(&mut self, driver: &Driver, offers: Vec<OfferInfo>) {
        let mut book = lock(&self.book);
        for offer in offers {
            let mut left = offer.resources;
            let mut launch = Vec::new();
            let mut keep = VecDeque::new();
            while let Some(w) = book.waiting.pop_front() {
                if left.contains(&w.task.resources) {
                    left = left.minus(w.task.resources);
                    launch.push(w.task);
                } else {
                    keep.push_back(w);
                }
            }
            book.waiting = keep;
            if launch.is_empty() {
                driver.decline(&[offer.id], Duration::from_secs(1));
            } else {
                driver.launch(&[offer.id], launch);
            }
        }
        if book.waiting.is_empty() && !book.suppressed {
            book.suppressed = true;
            driver.suppress();
        }
    }

    fn status(&mut self, _driver: &Driver, status: &TaskStatus) {
        let mut book = lock(&self.book);
        if let Some(watcher) = book.watchers.get(&status.task) {
            watcher.send(RunnerEvent::Status {
                status: status.clone(),
            });
        }
        if status.state.is_terminal() {
            book.watchers.remove(&status.task);
        }
    }

    fn rescinded(&mut self, _driver: &Driver, _offer: &crate::protocol::OfferId) {}
}

/// The runner actor (the submission desk; its scheduler runs in its driver).
struct RunnerActor;

struct RunnerState {
    book: Arc<Mutex<Book>>,
    driver: Driver,
    counter: troupe_runtime::inspector::MessageCounter,
}

static SUBMITTED: AtomicU64 = AtomicU64::new(0);

/// A task id that is unique across the cluster and its restarts, and short enough to type:
/// the name, then 8 hex digits.
fn task_id(name: &str) -> TaskId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SUBMITTED.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let prefix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    let prefix = if prefix.trim_matches('-').is_empty() {
        "task".to_string()
    } else {
        prefix
    };
    TaskId(format!("{prefix}-{:08x}", h.finish() as u32))
}

impl Actor for RunnerActor {
    type Msg = RunnerMsg;
    type State = RunnerState;
    type Arguments = (Arc<Mutex<Book>>, Driver);

    async fn pre_start(
        &self,
        myself: ActorRef<RunnerMsg>,
        (book, driver): (Arc<Mutex<Book>>, Driver),
    ) -> Result<RunnerState, ActorProcessingErr> {
        troupe_runtime::register(RUNNER_PATH, &myself)?;
        Ok(RunnerState {
            book,
            driver,
            counter: troupe_runtime::inspector::MessageCounter::new(&myself.get_cell()),
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
                let checked: Result<Vec<TaskInfo>, String> = requests
                    .into_iter()
                    .map(|r| {
                        r.command
                            .validate()
                            .map_err(|e| format!("{}: {e}", r.name))?;
                        if !r.resources.is_valid() {
                            return Err(format!("{}: invalid resources {}", r.name, r.resources));
                        }
                        // Nothing allocated would mean no cgroup limit and nothing counted
                        // against the agent: an over-commit nobody asked for.
                        if r.resources.cpus <= 0.0 || r.resources.mem_mib <= 0.0 {
                            return Err(format!(
                                "{}: a task needs more than 0 cpus and more than 0 MiB of memory, not {}",
                                r.name, r.resources
                            ));
                        }
                        Ok(TaskInfo {
                            id: task_id(&r.name),
                            name: r.name,
                            command: r.command,
                            resources: r.resources,
                        })
                    })
                    .collect();
                let tasks = match checked {
                    Ok(tasks) if tasks.is_empty() => Err("nothing to run".to_string()),
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
                {
                    let mut book = lock(&state.book);
                    let watcher = watcher.map(|w| Arc::new(Outbox::new(Addr::new(w))));
                    for task in tasks {
                        if let Some(w) = &watcher {
                            book.watchers.insert(task.id.clone(), w.clone());
                        }
                        book.waiting.push_back(Waiting { task });
                    }
                    book.suppressed = false;
                }
                state.driver.revive();
                reply.send(Ok(ids));
            }
        }
        Ok(())
    }
}

/// Refuses at once what no registered agent could ever hold (it would wait forever).
async fn fits_somewhere(tasks: &[TaskInfo]) -> Result<(), String> {
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
            return Err(format!(
                "{} needs {}, more than any agent has (the largest: {largest})",
                task.name, task.resources
            ));
        }
    }
    Ok(())
}

/// Starts the runner on this node: its framework (subscribed to the master at `master`, or
/// on this node) and its submission desk.
pub async fn start(master: Option<SocketAddr>) -> Result<Driver, DriverError> {
    let book = Arc::new(Mutex::new(Book::default()));
    let scheduler = RunScheduler { book: book.clone() };
    let mut settings = FrameworkSettings::new(RUNNER_NAME);
    settings.failover_timeout = Duration::from_secs(3600);
    // One id for every life of the runner: the updates that agents hold for its tasks from
    // before a master restart are addressed to it, and the runner of the new master
    // acknowledges them (with a new id every start, they would wait behind an update
    // nobody can acknowledge, and the task's end would never reach the master's books).
    settings.id = Some(FrameworkId(RUNNER_NAME.to_string()));
    let driver = Driver::start(settings, master, scheduler).await?;
    Actor::spawn(None, RunnerActor, (book, driver.clone()))
        .await
        .map_err(|e| DriverError::Spawn(e.to_string()))?;
    Ok(driver)
}
