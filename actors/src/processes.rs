//! The process service: spawn a process anywhere in the cluster, list it, get it, monitor
//! it, kill it. A built-in framework on the master's node at [`PROCESSES_PATH`], beside the
//! one-shot runner; reached from any node through the [`crate::client::Processes`] handle.
//!
//! A spawn names what to run and what it needs: resources and a placement (any agent, a
//! named one, or constraints on the agents' attributes and host). It waits for an offer it
//! fits, at most [`PLACE_WITHIN`], and is answered once the process runs, with where: a
//! spawn no agent could ever hold, or none took in time, fails with the reason, not a hang.
//! A monitor hears of the process's end exactly once, as data ([`ProcessEnd`]: the exit
//! code, the signal, out of memory, failed to start, the agent lost).
//!
//! Restarts, ports, standard input and adoption after a master restart are here too; the
//! spec service (`troupe-specs`) builds supervision trees across agents on it (see
//! `docs/processes.md` and `docs/specs.md`).

mod book;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use troupe_runtime::{Addr, Reply};

use crate::framework::{Driver, DriverError, FrameworkSettings, Scheduler};
use crate::master::MASTER_PATH;
use crate::outbox::Outbox;
use crate::protocol::{
    AgentId, AgentInfo, MasterMsg, OfferInfo, Resources, TaskId, TaskInfo, TaskState, TaskStatus,
    now_ms,
};
use book::{Asked, Book, Heard, Phase};
pub use book::{Constraint, Placement, Preferences, RestartPolicy};

/// The service's path.
pub const PROCESSES_PATH: &str = "processes";

/// The service's framework name (and id: one id for every life of it).
pub const PROCESSES_NAME: &str = "troupe-processes";

/// How long a spawn waits for a place before it fails with the reason.
pub const PLACE_WITHIN: Duration = Duration::from_secs(10);

/// What a process needs: resources, and where it may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Needs {
    /// Cpus, memory, disk (also its cgroup's limits).
    pub resources: Resources,
    /// Where it may run.
    pub placement: Placement,
    /// How many ports it is given from its agent's range: `{port0}`... in its arguments,
    /// `PORT0`... in its environment.
    #[serde(default)]
    pub ports: u16,
}

/// A running process: its id, and the agent (and node) it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRef {
    /// Its id (a task id of the service's framework).
    pub id: TaskId,
    /// Its agent.
    pub agent: AgentId,
    /// Its agent's node and address, to reach its process actor (`task/<id>`) and logs.
    pub location: Option<AgentInfo>,
    /// The ports it was given (`{port0}`...), on its agent's host.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// How a process ended, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProcessEnd {
    /// It ended on its agent: how (an exit code, a signal, out of memory, failed to start,
    /// stopped by its owner).
    Exited(troupe_os::ExitReason),
    /// Its agent was lost for good, and it with it.
    AgentLost(String),
    /// It never reached an agent (its launch was dropped or refused).
    NeverRan(String),
}

impl ProcessEnd {
    /// The end a task's last status tells.
    pub fn of(status: &TaskStatus) -> ProcessEnd {
        match (&status.exit, status.state) {
            (Some(exit), _) => ProcessEnd::Exited(exit.clone()),
            (None, TaskState::Killed) => ProcessEnd::Exited(troupe_os::ExitReason::Killed),
            (None, TaskState::Gone) => ProcessEnd::AgentLost(status.reason.clone()),
            (None, _) => ProcessEnd::NeverRan(status.reason.clone()),
        }
    }
}

/// A process as the service knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessView {
    /// Its id.
    pub id: TaskId,
    /// Its name.
    pub name: String,
    /// `queued` while it waits for a place, then the task's states.
    pub state: TaskState,
    /// Its agent, once placed.
    pub agent: Option<AgentId>,
    /// Its main process's pid, once it runs.
    pub pid: Option<i32>,
    /// What it holds.
    pub resources: Resources,
    /// Its command line.
    pub command: Vec<String>,
    /// When it was spawned (ms since the Unix epoch).
    pub spawned_ms: u64,
    /// How it ended, once it did.
    pub end: Option<ProcessEnd>,
    /// Its run: 1, then one more for each restart.
    pub incarnation: u32,
    /// The task of its current run (its id for the first; `ID.N` for the Nth).
    pub task: TaskId,
    /// Why it was last started again, if it was.
    pub last_restart: Option<String>,
    /// The ports of its current run.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Its resource use now (cpu time, memory), asked of its agent by
    /// [`crate::client::Processes::get`]; not in lists.
    #[serde(default)]
    pub usage: Option<crate::protocol::TaskUsage>,
}

/// Which processes a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFilter {
    /// Only those not ended (running, launched or waiting for a place).
    #[serde(default)]
    pub live: bool,
    /// Only those on this agent (now, or when they ended).
    #[serde(default)]
    pub agent: Option<AgentId>,
    /// Only those whose name starts with this.
    #[serde(default)]
    pub name: Option<String>,
}

impl ProcessFilter {
    /// Whether it lets `view` through.
    pub fn lets(&self, view: &ProcessView) -> bool {
        (!self.live || view.end.is_none())
            && self
                .agent
                .as_ref()
                .is_none_or(|a| view.agent.as_ref() == Some(a))
            && self
                .name
                .as_ref()
                .is_none_or(|n| view.name.starts_with(n.as_str()))
    }
}

/// A process an earlier life of the service started, to take in again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adoption {
    /// Its task, as the master's books show it (its id is the process's id).
    pub task: TaskInfo,
    /// Where it runs.
    pub agent: AgentId,
    /// Its pid, if known.
    pub pid: Option<i32>,
    /// What it was spawned with.
    pub needs: Needs,
    /// The ports it holds (read back from its command line).
    pub ports: Vec<u16>,
    /// How it restarts.
    pub policy: RestartPolicy,
    /// Its preferences (whether it is supervised from outside).
    pub prefs: Preferences,
}

/// Why the service refused a spawn, or could not place or start it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SpawnRefused {
    /// What to run is not valid.
    #[error("invalid process: {why}")]
    Invalid {
        /// Why.
        why: String,
    },
    /// No agent took it within the time a spawn waits: why, as the allocator sees it.
    #[error("not placed within {seconds} s: {why}")]
    NotPlaced {
        /// How long it waited.
        seconds: u64,
        /// Why not.
        why: String,
    },
    /// It was placed, and ended before it ran (failed to start, dropped).
    #[error("it did not start: {why}")]
    DidNotStart {
        /// Why.
        why: String,
    },
}

/// Why the service refused a request about a process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProcessRefused {
    /// It does not know it (never spawned, or ended long ago).
    #[error("no process {id} is known to the process service")]
    Unknown {
        /// The id.
        id: TaskId,
    },
    /// It ended already.
    #[error("process {id} already ended")]
    Ended {
        /// The id.
        id: TaskId,
    },
    /// It runs nowhere now (it waits for a place).
    #[error("process {id} is not running now (it waits for a place)")]
    NotRunning {
        /// The id.
        id: TaskId,
    },
    /// It is known already (an adoption of a process the service has).
    #[error("process {id} is known to the process service already")]
    Known {
        /// The id.
        id: TaskId,
    },
}

/// What a monitor of a process receives, exactly once.
#[derive(Debug, Clone, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum ProcessEvent {
    /// The process ended.
    Down {
        /// Which.
        id: TaskId,
        /// How.
        end: ProcessEnd,
    },
}

/// What the process service accepts.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum ProcessesMsg {
    /// Spawns a process; answered once it runs, or why it cannot.
    Spawn {
        /// A name for people (and the prefix of its id).
        name: String,
        /// What to run.
        spec: Box<troupe_os::ProcessSpec>,
        /// What it needs.
        needs: Needs,
        /// When it is started again (by default, never).
        #[serde(default)]
        policy: RestartPolicy,
        /// Where it would rather run, and whether a supervisor outside decides its fate.
        #[serde(default)]
        prefs: Preferences,
        /// Where it runs, or why not.
        reply: Reply<Result<ProcessRef, SpawnRefused>>,
    },
    /// The processes it keeps (the running, and the ended it still remembers) that the
    /// filter lets through.
    List {
        /// Which (by default, all).
        #[serde(default)]
        filter: ProcessFilter,
        /// The answer.
        reply: Reply<Vec<ProcessView>>,
    },
    /// One process.
    Get {
        /// Which.
        id: TaskId,
        /// The answer.
        reply: Reply<Result<ProcessView, ProcessRefused>>,
    },
    /// Sends one [`ProcessEvent::Down`] to the receiver at `watcher` (a path on any node)
    /// when the process ends, or at once if it has.
    Monitor {
        /// Which.
        id: TaskId,
        /// The receiver's path.
        watcher: String,
        /// `Ok` once the monitor is in place.
        reply: Reply<Result<(), ProcessRefused>>,
    },
    /// Removes a monitor placed with [`ProcessesMsg::Monitor`]: it will not fire.
    Demonitor {
        /// Which process.
        id: TaskId,
        /// The receiver's path it was placed with.
        watcher: String,
    },
    /// Takes in a process an earlier life of the service started, found running in the
    /// master's books after a master restart (its task of the service's framework):
    /// answered with where it runs, or why not (it ended meanwhile, or is known already).
    Adopt {
        /// The process.
        adoption: Box<Adoption>,
        /// Where it runs, or why it was not taken in.
        reply: Reply<Result<ProcessRef, ProcessRefused>>,
    },
    /// Stops a process for good: its stop signal, its grace (or `grace`), then SIGKILL; its
    /// end comes to its monitors, and it is not started again.
    Kill {
        /// Which.
        id: TaskId,
        /// How long between the stop signal and SIGKILL; `None`: its own grace.
        #[serde(default)]
        grace: Option<Duration>,
        /// `Ok` once the kill is under way.
        reply: Reply<Result<(), ProcessRefused>>,
    },
}

/// A pending spawn's answer: the reply port.
type SpawnReply = Reply<Result<ProcessRef, SpawnRefused>>;
type SharedBook = Arc<Mutex<Book<SpawnReply, Addr<ProcessEvent>>>>;

fn lock(
    book: &Mutex<Book<SpawnReply, Addr<ProcessEvent>>>,
) -> std::sync::MutexGuard<'_, Book<SpawnReply, Addr<ProcessEvent>>> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tells a monitor, in order behind anything else sent to it from here.
fn tell(watcher: &Addr<ProcessEvent>, id: &TaskId, end: &ProcessEnd) {
    let outbox = Outbox::new(watcher.clone());
    outbox.send(ProcessEvent::Down {
        id: id.clone(),
        end: end.clone(),
    });
}

struct ProcessScheduler {
    book: SharedBook,
}

impl Scheduler for ProcessScheduler {
    fn offers(&mut self, driver: &Driver, offers: Vec<OfferInfo>) {
        let mut book = lock(&self.book);
        for offer in offers {
            let launch = book.fill(&offer, now_ms());
            if launch.is_empty() {
                driver.decline(&[offer.id], Duration::from_secs(1));
            } else {
                driver.launch(&[offer.id], launch);
            }
        }
        if !book.waiting() {
            driver.suppress();
        }
    }

    fn status(&mut self, driver: &Driver, status: &TaskStatus) {
        let heard = lock(&self.book).heard(status, now_ms());
        match heard {
            Heard::Restarted => {
                tracing::info!(task = %status.task, reason = %status.reason, "process ended: started again by its policy");
                driver.revive();
            }
            Heard::Fence(task) => {
                tracing::warn!(%task, "a copy of an earlier run of a process runs (its agent came back): killed");
                driver.kill(&task);
            }
            Heard::Running(Some(reply), id, agent) => {
                let ports = lock(&self.book)
                    .get(&id)
                    .map(|p| p.ports.clone())
                    .unwrap_or_default();
                tokio::spawn(async move {
                    let location = locate(&agent).await;
                    reply.send(Ok(ProcessRef {
                        id,
                        agent,
                        location,
                        ports,
                    }));
                });
            }
            heard @ Heard::Ended(..) => carry_out(heard, status),
            Heard::Running(None, _, _) | Heard::Nothing => {}
        }
    }
}

/// Tells what a book decision asks for: answers and monitors.
fn carry_out(heard: Heard<SpawnReply, Addr<ProcessEvent>>, status: &TaskStatus) {
    if let Heard::Ended(reply, monitors, id) = heard {
        let end = ProcessEnd::of(status);
        if let Some(reply) = reply {
            let why = if status.reason.is_empty() {
                status.state.to_string()
            } else {
                status.reason.clone()
            };
            reply.send(Err(SpawnRefused::DidNotStart { why }));
        }
        // Monitors hear the process's id, whichever run ended.
        for watcher in &monitors {
            tell(watcher, &id, &end);
        }
    }
}

/// Where an agent is (its node and address), as the master knows it.
async fn locate(agent: &AgentId) -> Option<AgentInfo> {
    let state = Addr::<MasterMsg>::new(MASTER_PATH)
        .call(
            |reply| MasterMsg::State { all: false, reply },
            Duration::from_secs(2),
        )
        .await
        .ok()?;
    state
        .agents
        .into_iter()
        .find(|a| &a.info.id == agent)
        .map(|a| a.info)
}

/// The service actor (its scheduler runs in its driver).
struct ProcessesActor;

struct ProcessesState {
    book: SharedBook,
    driver: Driver,
    counter: troupe_runtime::inspector::MessageCounter,
}

/// A process id: `p-`, the name, and 8 hex digits unique across the cluster's lives.
fn process_id(name: &str) -> TaskId {
    crate::ids::unique_id("p-", name, "process")
}

impl ProcessesState {
    /// A view of a process.
    fn view(p: &book::Proc<SpawnReply, Addr<ProcessEvent>>) -> ProcessView {
        let (incarnation, task, last_restart) =
            (p.incarnation, p.task.id.clone(), p.last_restart.clone());
        let (state, agent, pid, end) = match &p.phase {
            Phase::Waiting { .. } => (TaskState::Queued, None, None, None),
            Phase::Launched { agent } => (TaskState::Staging, Some(agent.clone()), None, None),
            Phase::Running { agent, pid } => (TaskState::Running, Some(agent.clone()), *pid, None),
            Phase::Ended { status } => (
                status.state,
                status.agent.clone(),
                None,
                Some(ProcessEnd::of(status)),
            ),
        };
        ProcessView {
            id: p.id.clone(),
            incarnation,
            task,
            last_restart,
            ports: p.ports.clone(),
            usage: None,
            name: p.task.name.clone(),
            state,
            agent,
            pid,
            resources: p.task.resources,
            command: p.task.command.argv.clone(),
            spawned_ms: p.spawned_ms,
            end,
        }
    }
}

/// Refuses at once what no registered agent could ever hold, by its placement and its
/// whole resources (with no agent registered yet, a spawn waits for one).
async fn could_ever_run(needs: &Needs) -> Result<(), String> {
    let Ok(state) = Addr::<MasterMsg>::new(MASTER_PATH)
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
    let places: Vec<_> = state
        .agents
        .iter()
        .filter(|a| {
            needs
                .placement
                .allows_agent(&a.info.id, &a.info.hostname, &a.info.attributes)
        })
        .collect();
    if places.is_empty() {
        return Err(match &needs.placement {
            Placement::Agent(id) => format!("no agent {id} is registered"),
            Placement::Constraints(all) => format!(
                "no agent meets the placement {}",
                all.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Placement::Any => "no agent is registered".into(),
        });
    }
    if !places
        .iter()
        .any(|a| a.info.resources.contains(&needs.resources))
    {
        return Err(format!(
            "it needs {}, more than any agent it may run on has",
            needs.resources
        ));
    }
    Ok(())
}

/// Answers the spawns that waited too long, with why they were not placed.
async fn expire(book: &SharedBook) {
    {
        let late = lock(book).overdue(now_ms());
        if late.is_empty() {
            return;
        }
        let agents = Addr::<MasterMsg>::new(MASTER_PATH)
            .call(
                |reply| MasterMsg::State { all: false, reply },
                Duration::from_secs(2),
            )
            .await
            .map(|s| s.agents)
            .unwrap_or_default();
        for overdue in late {
            let book::Overdue {
                reply,
                task,
                placement,
                monitors,
                status,
            } = overdue;
            let end = ProcessEnd::of(&status);
            for watcher in &monitors {
                tell(watcher, &task.id, &end);
            }
            let Some(reply) = reply else {
                continue;
            };
            let places: Vec<_> = agents
                .iter()
                .filter(|a| {
                    placement.allows_agent(&a.info.id, &a.info.hostname, &a.info.attributes)
                })
                .cloned()
                .collect();
            let why = match &placement {
                Placement::Agent(id) if places.is_empty() => {
                    format!("no agent {id} is registered")
                }
                Placement::Constraints(all) if places.is_empty() => format!(
                    "no agent meets the placement {}",
                    all.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => crate::runner::why_waiting(&task.resources, &places),
            };
            reply.send(Err(SpawnRefused::NotPlaced {
                seconds: PLACE_WITHIN.as_secs(),
                why,
            }));
        }
    }
}

impl Actor for ProcessesActor {
    type Msg = ProcessesMsg;
    type State = ProcessesState;
    type Arguments = (SharedBook, Driver);

    async fn pre_start(
        &self,
        myself: ActorRef<ProcessesMsg>,
        (book, driver): (SharedBook, Driver),
    ) -> Result<ProcessesState, ActorProcessingErr> {
        troupe_runtime::register(PROCESSES_PATH, &myself)?;
        // The spawns' deadlines are kept by a timer task of the service's own, on the book
        // itself: a late spawn is answered within half a second of its deadline.
        // Processes whose agent stays unreachable are started elsewhere by the same timer.
        let (timer_book, me, timer_driver) = (book.clone(), myself.clone(), driver.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                if me.get_status() > ractor::ActorStatus::Running {
                    return;
                }
                expire(&timer_book).await;
                let lost = lock(&timer_book).move_lost(now_ms());
                for task in &lost.kill {
                    tracing::warn!(%task, "its agent is unreachable: the process starts elsewhere (or ends, when supervised), and this copy is killed when the agent comes back");
                    timer_driver.kill(task);
                }
                for (heard, status) in lost.ended {
                    carry_out(heard, &status);
                }
                if !lost.kill.is_empty() {
                    timer_driver.revive();
                }
            }
        });
        Ok(ProcessesState {
            book,
            driver,
            counter: troupe_runtime::inspector::MessageCounter::new(&myself.get_cell()),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ProcessesMsg>,
        message: ProcessesMsg,
        state: &mut ProcessesState,
    ) -> Result<(), ActorProcessingErr> {
        state.counter.handled();
        match message {
            ProcessesMsg::Spawn {
                name,
                spec,
                needs,
                policy,
                prefs,
                reply,
            } => {
                if let Err(e) = spec.validate() {
                    reply.send(Err(SpawnRefused::Invalid { why: e.to_string() }));
                    return Ok(());
                }
                let r = needs.resources;
                if !r.is_valid() || r.cpus <= 0.0 || r.mem_mib <= 0.0 {
                    reply.send(Err(SpawnRefused::Invalid {
                        why: format!(
                            "a process needs more than 0 cpus and more than 0 MiB of memory, not {r}"
                        ),
                    }));
                    return Ok(());
                }
                // What no agent could ever hold would wait its whole time for nothing.
                if let Err(why) = could_ever_run(&needs).await {
                    reply.send(Err(SpawnRefused::NotPlaced { seconds: 0, why }));
                    return Ok(());
                }
                let task = TaskInfo {
                    id: process_id(&name),
                    name,
                    command: *spec,
                    resources: needs.resources,
                };
                let now = now_ms();
                let deadline = now + PLACE_WITHIN.as_millis() as u64;
                let asked = Asked {
                    placement: needs.placement,
                    policy,
                    prefs,
                    ports: needs.ports,
                };
                lock(&state.book).spawn(task, asked, now, deadline, reply);
                state.driver.revive();
            }
            ProcessesMsg::Adopt { adoption, reply } => {
                let Adoption {
                    task,
                    agent,
                    pid,
                    needs,
                    ports,
                    policy,
                    prefs,
                } = *adoption;
                let id = task.id.clone();
                let asked = Asked {
                    placement: needs.placement,
                    policy,
                    prefs,
                    ports: needs.ports,
                };
                let adopted = lock(&state.book).adopt(task, agent.clone(), pid, asked, now_ms());
                match adopted {
                    Ok(()) => {
                        lock(&state.book).set_ports(&id, ports.clone());
                        tracing::info!(process = %id, %agent, "adopted a process of an earlier life");
                        let location = locate(&agent).await;
                        reply.send(Ok(ProcessRef {
                            id,
                            agent,
                            location,
                            ports,
                        }));
                    }
                    Err(Some(_)) => {
                        reply.send(Err(ProcessRefused::Ended { id }));
                    }
                    Err(None) => {
                        reply.send(Err(ProcessRefused::Known { id }));
                    }
                }
            }
            ProcessesMsg::List { filter, reply } => {
                let views = lock(&state.book)
                    .all()
                    .map(ProcessesState::view)
                    .filter(|v| filter.lets(v))
                    .collect();
                reply.send(views);
            }
            ProcessesMsg::Get { id, reply } => {
                let view = lock(&state.book)
                    .get(&id)
                    .map(ProcessesState::view)
                    .ok_or(ProcessRefused::Unknown { id });
                reply.send(view);
            }
            ProcessesMsg::Monitor { id, watcher, reply } => {
                let addr = Addr::<ProcessEvent>::new(watcher);
                let placed = lock(&state.book).monitor(&id, addr.clone());
                match placed {
                    Ok(None) => {
                        reply.send(Ok(()));
                    }
                    Ok(Some(status)) => {
                        reply.send(Ok(()));
                        tell(&addr, &id, &ProcessEnd::of(&status));
                    }
                    Err(_) => {
                        reply.send(Err(ProcessRefused::Unknown { id }));
                    }
                }
            }
            ProcessesMsg::Demonitor { id, watcher } => {
                lock(&state.book).demonitor(&id, |w| w.path() == watcher);
            }
            ProcessesMsg::Kill { id, grace, reply } => {
                let phase = lock(&state.book).get(&id).map(|p| p.phase.clone());
                match phase {
                    None => {
                        reply.send(Err(ProcessRefused::Unknown { id }));
                    }
                    Some(Phase::Ended { .. }) => {
                        reply.send(Err(ProcessRefused::Ended { id }));
                    }
                    Some(_) => {
                        // Asked to stop: not started again, whatever its policy.
                        let stopped = lock(&state.book).stop(&id, now_ms());
                        match stopped {
                            book::Stopped::Kill(task) => state.driver.kill_within(&task, grace),
                            book::Stopped::Ended(heard, status) => carry_out(heard, &status),
                            book::Stopped::Nothing => {}
                        }
                        reply.send(Ok(()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Starts the process service on this node: its framework (subscribed to the master at
/// `master`, or on this node) and its desk at [`PROCESSES_PATH`].
pub async fn start(master: Option<SocketAddr>) -> Result<Driver, DriverError> {
    let book: SharedBook = Arc::new(Mutex::new(Book::default()));
    let scheduler = ProcessScheduler { book: book.clone() };
    let settings = FrameworkSettings::built_in(PROCESSES_NAME);
    let driver = Driver::start(settings, master, scheduler).await?;
    Actor::spawn(None, ProcessesActor, (book, driver.clone()))
        .await
        .map_err(|e| DriverError::Spawn(e.to_string()))?;
    Ok(driver)
}
