//! The cluster's wire types: ids, resources, tasks and their states.
//!
//! A task's life is a small state machine ([`TaskLifecycle`]): the master, the agent and the
//! framework driver all apply status updates through it, so an illegal transition (a
//! finished task reported running, two different terminal states) is refused in one place.
//!
//! ```text
//!  Staging ──► Starting ──► Running ──► Killing ──► Killed
//!     │            │           │           │
//!     │            └───────────┴───────────┴──► Finished | Failed | Killed | Gone
//!     ├──► Error | Dropped            (refused before it reached an agent)
//!     └──► ... Unreachable ◄──► Running (its agent came back) ... ──► terminal
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use troupe_runtime::Reply;

mod own;
mod refusals;
mod views;

pub use own::{AgentOwn, DriverOwn, MasterOwn, Own};
pub(crate) use own::{AgentOwnMsg, DriverOwnMsg, MasterOwnMsg};

pub use refusals::{EventsRefused, RegistrationRefused, SubscribeRefused, TaskRefused};

pub use views::{
    AgentView, ClusterEvent, ClusterState, EventMsg, FrameworkView, MasterHealth, TaskLocation,
    TaskView,
};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }
    };
}

id!(
    /// A task's id, unique within its framework.
    TaskId
);
id!(
    /// An agent's id.
    AgentId
);
id!(
    /// A framework's id.
    FrameworkId
);

/// Resources: cpus, memory and disk. Quantities are never negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Cpus, fractional.
    pub cpus: f64,
    /// Memory in MiB.
    pub mem_mib: f64,
    /// Disk in MiB.
    pub disk_mib: f64,
}

/// The resource kinds, for shares and explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Cpus.
    Cpus,
    /// Memory.
    Mem,
    /// Disk.
    Disk,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Cpus, Kind::Mem, Kind::Disk];
}

/// Quantities below this are taken as zero (float dust from additions).
const EPSILON: f64 = 1e-9;

impl Resources {
    /// Nothing.
    pub const ZERO: Resources = Resources {
        cpus: 0.0,
        mem_mib: 0.0,
        disk_mib: 0.0,
    };

    /// Cpus and memory, no disk.
    pub fn new(cpus: f64, mem_mib: f64) -> Resources {
        Resources {
            cpus,
            mem_mib,
            disk_mib: 0.0,
        }
    }

    /// One kind's quantity.
    pub fn get(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Cpus => self.cpus,
            Kind::Mem => self.mem_mib,
            Kind::Disk => self.disk_mib,
        }
    }

    fn map2(self, other: Resources, f: impl Fn(f64, f64) -> f64) -> Resources {
        Resources {
            cpus: f(self.cpus, other.cpus),
            mem_mib: f(self.mem_mib, other.mem_mib),
            disk_mib: f(self.disk_mib, other.disk_mib),
        }
    }

    /// The sum.
    pub fn plus(self, other: Resources) -> Resources {
        self.map2(other, |a, b| a + b)
    }

    /// The difference, never below zero.
    pub fn minus(self, other: Resources) -> Resources {
        self.map2(other, |a, b| {
            let d = a - b;
            if d < EPSILON { 0.0 } else { d }
        })
    }

    /// The smaller of each kind.
    pub fn min(self, other: Resources) -> Resources {
        self.map2(other, f64::min)
    }

    /// Whether every kind of `other` fits in `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        Kind::ALL
            .iter()
            .all(|k| other.get(*k) <= self.get(*k) + EPSILON)
    }

    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|k| self.get(*k) <= EPSILON)
    }

    /// Whether a quantity is negative or not a number.
    pub fn is_valid(&self) -> bool {
        Kind::ALL
            .iter()
            .all(|k| self.get(*k).is_finite() && self.get(*k) >= 0.0)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpus:{}; mem:{}MiB", self.cpus, self.mem_mib)?;
        if self.disk_mib > 0.0 {
            write!(f, "; disk:{}MiB", self.disk_mib)?;
        }
        Ok(())
    }
}

/// A task to launch: what to run, and with what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Its id, unique within its framework.
    pub id: TaskId,
    /// A name for people.
    #[serde(default)]
    pub name: String,
    /// What to run.
    pub command: troupe_os::ProcessSpec,
    /// What it may use (also its cgroup limits).
    pub resources: Resources,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting in its framework for resources: submitted, not yet launched (the runner's
    /// queue; the master never holds a task in this state).
    Queued,
    /// Accepted by the master, on its way to an agent.
    Staging,
    /// The agent is starting it.
    Starting,
    /// Its process runs.
    Running,
    /// A kill was asked for; it is stopping.
    Killing,
    /// It exited with code 0.
    Finished,
    /// It exited otherwise, or could not start on the agent.
    Failed,
    /// It was killed on request.
    Killed,
    /// Its launch was invalid (bad command, resources exceeding the offer...).
    Error,
    /// Its launch could not be carried out (unknown offer, agent gone before launch...).
    Dropped,
    /// Its agent cannot be reached; it may still run.
    Unreachable,
    /// Its agent is gone for good, and so is the task.
    Gone,
    /// Nobody knows it (the answer to reconciling an unknown task).
    Unknown,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 13] = [
        TaskState::Queued,
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::Unknown,
    ];

    /// Whether no further state can follow.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Dropped
                | TaskState::Gone
        )
    }

    /// Whether `next` may follow `self`.
    pub fn may_become(self, next: TaskState) -> bool {
        use TaskState::*;
        if self.is_terminal() {
            return false;
        }
        match (self, next) {
            (_, Queued) => false,
            (Queued, _) => true,
            (_, Staging) => false,
            (Staging, _) => true,
            // A launch whose agent became unreachable before it arrived: the agent, back,
            // does not have it.
            (Unreachable, Dropped) => true,
            (_, Error | Dropped) => false,
            (Starting, Starting) => false,
            (Starting, _) => true,
            (Running, Starting) => false,
            (Running, _) => true,
            (Killing, Starting | Running) => false,
            (Killing, _) => true,
            // A partitioned task may come back running (or still starting) with its agent.
            (Unreachable, _) => true,
            (Unknown, _) => true,
            _ => false,
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json_name(*self);
        f.write_str(text)
    }
}

fn serde_json_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Queued => "queued",
        TaskState::Staging => "staging",
        TaskState::Starting => "starting",
        TaskState::Running => "running",
        TaskState::Killing => "killing",
        TaskState::Finished => "finished",
        TaskState::Failed => "failed",
        TaskState::Killed => "killed",
        TaskState::Error => "error",
        TaskState::Dropped => "dropped",
        TaskState::Unreachable => "unreachable",
        TaskState::Gone => "gone",
        TaskState::Unknown => "unknown",
    }
}

/// Who said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The master (validation, agent loss).
    Master,
    /// The agent.
    Agent,
    /// The process itself (its exit).
    Executor,
}

/// One status update of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The task.
    pub task: TaskId,
    /// Its new state.
    pub state: TaskState,
    /// Why, in words.
    pub reason: String,
    /// Who says so.
    pub source: Source,
    /// When, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The agent it runs on, if any.
    #[serde(default)]
    pub agent: Option<AgentId>,
    /// Its exit code, once it exited on its own.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Its main process's pid, on the agent's `Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// How its process ended, as data (the code, the signal, out of memory, failed to
    /// start...), on the agent's end of a task whose process ran or tried to; `reason` says
    /// the same in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<troupe_os::ExitReason>,
}

impl TaskStatus {
    /// Moves this status on to `update` if the state machine allows it ([`TaskLifecycle`]
    /// without the history, for those who keep only the latest status, as the master does
    /// for every task it tracks).
    pub fn advance(&mut self, update: TaskStatus) -> Result<Applied, TransitionError> {
        let from = self.state;
        if update.state == from {
            return Ok(Applied::Duplicate);
        }
        if from.is_terminal() {
            return Err(TransitionError::AlreadyEnded {
                task: update.task,
                was: from,
                offered: update.state,
            });
        }
        if !from.may_become(update.state) {
            return Err(TransitionError::Illegal {
                task: update.task,
                from,
                to: update.state,
            });
        }
        *self = update;
        Ok(Applied::Changed)
    }

    /// A status saying `task` is now in `state`, with no reason, agent or exit code yet.
    pub fn new(task: TaskId, state: TaskState, source: Source, timestamp_ms: u64) -> TaskStatus {
        TaskStatus {
            task,
            state,
            reason: String::new(),
            source,
            timestamp_ms,
            agent: None,
            exit_code: None,
            pid: None,
            exit: None,
        }
    }
}

/// Why a status update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The task already ended, in another way.
    #[error("task {task} already ended as {was}; {offered} refused")]
    AlreadyEnded {
        /// The task.
        task: TaskId,
        /// Its terminal state.
        was: TaskState,
        /// The state offered.
        offered: TaskState,
    },
    /// The state cannot follow the current one.
    #[error("task {task}: {from} cannot become {to}")]
    Illegal {
        /// The task.
        task: TaskId,
        /// Its state.
        from: TaskState,
        /// The state offered.
        to: TaskState,
    },
}

/// What applying an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The state changed.
    Changed,
    /// The same state again (a retried update): nothing changed.
    Duplicate,
}

/// A task's life: its current status and how it got there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskLifecycle {
    /// The latest status.
    pub current: TaskStatus,
    /// Every status, oldest first.
    pub history: Vec<TaskStatus>,
}

impl TaskLifecycle {
    /// A task that starts its life with `first` (normally `Staging`).
    pub fn new(first: TaskStatus) -> TaskLifecycle {
        TaskLifecycle {
            history: vec![first.clone()],
            current: first,
        }
    }

    /// The state now.
    pub fn state(&self) -> TaskState {
        self.current.state
    }

    /// Applies an update: a legal transition changes the state, the same state again is a
    /// duplicate (status updates are retried until acknowledged), anything else is refused.
    pub fn apply(&mut self, update: TaskStatus) -> Result<Applied, TransitionError> {
        let applied = self.current.advance(update)?;
        if applied == Applied::Changed {
            self.history.push(self.current.clone());
        }
        Ok(applied)
    }
}

// ---------------------------------------------------------------------------------------
// Messages. The master is at `master`, an agent at `agent/<id>`, a framework's driver at
// `framework/<id>` (or any path it subscribes with), a task's process at `task/<id>`, and an
// agent's observer on the master at `master/observer/<agent-id>`.
// ---------------------------------------------------------------------------------------

id!(
    /// An offer's id, unique per master run.
    OfferId
);

/// The milliseconds since the Unix epoch now: the timestamp of status updates.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What an agent tells the master about itself when it registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its id (its name: stable across restarts, so that its tasks are recognised).
    pub id: AgentId,
    /// The host it runs on.
    pub hostname: String,
    /// The runtime node it lives on.
    pub node: String,
    /// Where that node listens, so that operators' tools can reach its tasks.
    pub addr: String,
    /// What it offers to tasks.
    pub resources: Resources,
    /// Its attributes (`rack=r1`, ...), given to frameworks with its offers.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Its work directory on `hostname`: with the host, what tells a restart of this agent
    /// (same host and directory, its tasks found again) from another agent that took its
    /// name.
    #[serde(default)]
    pub work_dir: String,
    /// The ports its tasks may be given (the process service hands them out).
    #[serde(default)]
    pub ports: PortRange,
    /// Its life: a number made when its work directory starts empty (or when the master
    /// removed it and it started afresh), kept in its checkpoint. A removed agent's life is
    /// refused for good; a new life of the same name, with no tasks, is let in. 0: an
    /// agent that predates lives.
    #[serde(default)]
    pub life: u64,
}

/// A range of ports an agent lets its tasks bind, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// The first.
    pub first: u16,
    /// The last.
    pub last: u16,
}

impl Default for PortRange {
    /// 31000-32000, Mesos' default.
    fn default() -> Self {
        PortRange {
            first: 31_000,
            last: 32_000,
        }
    }
}

impl PortRange {
    /// Reads `FIRST-LAST` (`31000-32000`).
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let bad = || format!("{text:?} is not a port range such as 31000-32000");
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(format!(
                "{text:?}: the first port must be 1 or more, and not above the last"
            ));
        }
        Ok(PortRange { first, last })
    }

    /// How many ports it holds.
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Whether it holds none (never: both ends are included).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A task an agent reports when it registers: its latest status and what it was launched
/// as, so that a restarted master's books keep its name, command and launch time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedTask {
    /// Its framework.
    pub framework: FrameworkId,
    /// Its latest status.
    pub status: TaskStatus,
    /// What it holds.
    pub resources: Resources,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its command line.
    #[serde(default)]
    pub command: Vec<String>,
    /// When it was launched (ms since the Unix epoch; 0 when the agent does not know).
    #[serde(default)]
    pub launched_ms: u64,
}

/// How the master took a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillAccepted {
    /// The kill went to the task's agent; the task's end follows.
    Sent,
    /// The task's agent cannot be reached: the kill is recorded (in the registry too, when
    /// there is one) and goes to the agent when it registers again.
    Deferred,
}

/// What a framework tells the master when it subscribes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    /// Its id when it subscribes again (after a failover of either side); `None` the
    /// first time, and the master gives it one.
    #[serde(default)]
    pub id: Option<FrameworkId>,
    /// A name for people.
    pub name: String,
    /// Its role, a path such as `eng/ml` (`*` when it has none).
    pub role: String,
    /// How long the master keeps its tasks running after it disconnected, waiting for it
    /// to subscribe again; past that, its tasks are killed and it is removed.
    #[serde(with = "troupe_runtime::codec::millis")]
    pub failover_timeout: std::time::Duration,
    /// Where its driver listens: the master sends it [`SchedulerMsg`]s there.
    pub driver: String,
}

/// An offer as a framework sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferInfo {
    /// Its id, to accept or decline it by.
    pub id: OfferId,
    /// The agent whose resources these are.
    pub agent: AgentId,
    /// That agent's host.
    pub hostname: String,
    /// That agent's attributes.
    pub attributes: BTreeMap<String, String>,
    /// What is offered.
    pub resources: Resources,
    /// The role they are reserved for, if they are.
    pub reservation: Option<String>,
    /// The agent's port range.
    #[serde(default)]
    pub ports: PortRange,
}

/// One status update of an agent and its id (acknowledgements name it); the agent's
/// update manager (`status_updates.rs`) keeps them in order until acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// Its id, unique per agent.
    pub id: u64,
    /// The framework it goes to.
    pub framework: FrameworkId,
    /// The status.
    pub status: TaskStatus,
}

/// What the master accepts.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum MasterMsg {
    /// An agent registers (again, after either side restarted), with the tasks it runs.
    RegisterAgent {
        /// Who it is.
        info: AgentInfo,
        /// Every task it still has: its latest status and what it was launched as.
        tasks: Vec<ReportedTask>,
        /// `Ok`, or why it was refused.
        reply: Reply<Result<(), RegistrationRefused>>,
    },
    /// An agent reports a task's status (the master forwards it to the framework).
    StatusUpdate {
        /// From which agent.
        agent: AgentId,
        /// The update, by id: the framework acknowledges it by that id.
        update: Update,
    },
    /// A framework subscribes (or subscribes again with its id).
    Subscribe {
        /// Who it is.
        info: FrameworkInfo,
        /// Its id, or why it was refused.
        reply: Reply<Result<FrameworkId, SubscribeRefused>>,
    },
    /// A framework leaves for good: its tasks are killed.
    Teardown {
        /// Which.
        framework: FrameworkId,
    },
    /// A framework launches tasks on offers (all on one agent); what the tasks leave of
    /// the offers comes back to the pool, filtered for `refuse` if it is given.
    Accept {
        /// Which framework.
        framework: FrameworkId,
        /// The offers used.
        offers: Vec<OfferId>,
        /// The tasks.
        tasks: Vec<TaskInfo>,
        /// How long the rest of the offers is not offered to it again: not at all when
        /// `None`, unless `tasks` is empty (a decline, for the default 5 s).
        #[serde(default)]
        refuse_ms: Option<u64>,
    },
    /// A framework declines offers; no more than they hold (on the same agent and pool) is
    /// offered to it for `refuse_ms`.
    Decline {
        /// Which framework.
        framework: FrameworkId,
        /// The offers.
        offers: Vec<OfferId>,
        /// The filter (Mesos' `refuse_seconds`, in ms).
        refuse_ms: u64,
    },
    /// A framework wants offers again (suppression ends, filters clear).
    Revive {
        /// Which framework.
        framework: FrameworkId,
    },
    /// A framework wants no offers for now.
    Suppress {
        /// Which framework.
        framework: FrameworkId,
    },
    /// Kill a task (from its framework or an operator).
    Kill {
        /// The task.
        task: TaskId,
        /// How long it has between its stop signal and SIGKILL; `None`: its own grace
        /// (the one a kill delivered again after an agent's restart always has).
        #[serde(default)]
        grace: Option<std::time::Duration>,
        /// Whether the kill went to the agent or waits for it, or why it cannot be.
        reply: Reply<Result<KillAccepted, TaskRefused>>,
    },
    /// A framework acknowledges a status update.
    Acknowledge {
        /// Which framework.
        framework: FrameworkId,
        /// The task's agent.
        agent: AgentId,
        /// The task.
        task: TaskId,
        /// The update's id.
        update: u64,
    },
    /// An agent's answer to [`AgentMsg::Confirm`]: these launches never reached it, and it
    /// will not run them.
    LaunchesLost {
        /// Which agent.
        agent: AgentId,
        /// Task ids and the launch times they were sent with.
        launches: Vec<(TaskId, u64)>,
    },
    /// A framework asks for the latest state of tasks (all of its tasks when empty).
    Reconcile {
        /// Which framework.
        framework: FrameworkId,
        /// The tasks, or none for all.
        tasks: Vec<TaskId>,
    },
    /// The cluster's state (`all`: terminal tasks too).
    State {
        /// Whether to include terminal tasks.
        all: bool,
        /// The answer.
        reply: Reply<ClusterState>,
    },
    /// Where a task is.
    Locate {
        /// The task.
        task: TaskId,
        /// The answer, or why not.
        reply: Reply<Result<TaskLocation, TaskRefused>>,
    },
    /// What the master core's own node sends it: its observers' judgements, its
    /// allocator's offers, its monitors' news, its timer. Not a message a peer can send: it
    /// cannot be made outside this crate, nor encoded, nor decoded.
    #[serde(skip)]
    Own(MasterOwn),
    /// A quick summary, cheap to compute: the master's health check.
    Health {
        /// The answer.
        reply: Reply<MasterHealth>,
    },
    /// Sends every [`ClusterEvent`] from now on to the [`EventMsg`] receiver at `to` (a path
    /// on any node), until it stops or unsubscribes. Answers once it is subscribed.
    SubscribeEvents {
        /// The subscriber's path.
        to: String,
        /// Its node, when it is not the master's.
        node: Option<String>,
        /// `Ok` once subscribed.
        reply: Reply<Result<(), EventsRefused>>,
    },
    /// Stops the events to `to`.
    UnsubscribeEvents {
        /// The subscriber's path.
        to: String,
    },
    /// Keeps a supervision spec in the registry (its text, as applied), replacing one of
    /// the same name. Answers once it is written (`Err`: why it could not be).
    PutSpec {
        /// Its name.
        name: String,
        /// Its text.
        text: String,
        /// `Ok` once durable.
        reply: Reply<Result<(), String>>,
    },
    /// Forgets a spec. Answers once it is written.
    DeleteSpec {
        /// Its name.
        name: String,
        /// `Ok` once durable.
        reply: Reply<Result<(), String>>,
    },
    /// Every spec the registry keeps, by name.
    Specs {
        /// Their texts, by name.
        reply: Reply<BTreeMap<String, String>>,
    },
}

/// What an agent accepts.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum AgentMsg {
    /// Run these tasks for a framework.
    Launch {
        /// Whose.
        framework: FrameworkId,
        /// The tasks.
        tasks: Vec<TaskInfo>,
        /// When the master accepted them (ms since the Unix epoch): the launch time the
        /// agent reports back, so that it reads the same after a master restart.
        #[serde(default)]
        launched_ms: u64,
    },
    /// Kill a task: its stop signal, its grace period, then SIGKILL.
    Kill {
        /// The task.
        task: TaskId,
        /// How long it has between its stop signal and SIGKILL; `None`: its own grace.
        #[serde(default)]
        grace: Option<std::time::Duration>,
    },
    /// A framework acknowledged an update.
    Acknowledge {
        /// The task.
        task: TaskId,
        /// The update's id.
        update: u64,
    },
    /// Resend the unacknowledged updates of a framework now: it subscribed again, or it
    /// was removed and the master acknowledges for it.
    ResendUpdates {
        /// The framework.
        framework: FrameworkId,
    },
    /// The master asks the agent to register again (the master restarted, or it had
    /// judged the agent unreachable and hears from it again).
    Reregister,
    /// The master removed this life of the agent (unreachable past `agent_gone_after`):
    /// its tasks are gone for the cluster. Sent when it is removed, so that an agent whose
    /// connection outlived the partition hears it when the partition heals; the agent kills
    /// its tasks and starts afresh as a new life. Ignored by any other life.
    Removed {
        /// The life removed.
        life: u64,
    },
    /// After a registration that did not report them: launches the master sent to this
    /// agent (task and launch time) that the agent never confirmed. The agent answers with
    /// [`MasterMsg::LaunchesLost`] for those it does not have, and from then on ignores
    /// them should they still arrive, so that the master may call them `Dropped` and their
    /// framework launch them again without the task ever running twice.
    Confirm {
        /// Task ids and the launch times they were sent with.
        launches: Vec<(TaskId, u64)>,
    },
    /// Sends a task's log to `to` (a `LogMsg` receiver on any node): from offset `from`,
    /// then, with `follow`, live until the task ends. Works for ended tasks too, while
    /// their sandbox is kept.
    StreamLog {
        /// The task.
        task: TaskId,
        /// Which stream.
        stream: troupe_os::actor::Stream,
        /// The first offset wanted.
        from: u64,
        /// Whether to keep following.
        follow: bool,
        /// The receiver's path.
        to: String,
    },
    /// Resource use of every running task.
    Usage {
        /// The answer.
        reply: Reply<Vec<TaskUsage>>,
    },
    /// What the agent sends itself: its processes' starts and ends, its timer. Not a
    /// message a peer can send: it cannot be made outside this crate, nor encoded, nor
    /// decoded.
    #[serde(skip)]
    Own(AgentOwn),
}

/// One task's resource use, as an agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUsage {
    /// The task.
    pub task: TaskId,
    /// Its main process.
    pub pid: i32,
    /// Cpu time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
}

/// What an agent's observer on the master accepts.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum ObserverMsg {
    /// The agent is alive.
    Heartbeat,
    /// Time to judge (the observer's own timer). Not a message a peer can send.
    #[serde(skip)]
    Check(Own),
}

/// What the master sends a framework's driver.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum SchedulerMsg {
    /// New offers.
    Offers {
        /// The offers.
        offers: Vec<OfferInfo>,
    },
    /// An offer is no longer valid (its agent left, or it timed out).
    Rescind {
        /// Which.
        offer: OfferId,
    },
    /// A task's status. `ack` is the update's id when the agent waits for an
    /// acknowledgement (the driver sends it after the scheduler saw the update); `None`
    /// for the master's own updates (refusals, reconciliation, agent loss).
    Update {
        /// The status.
        status: TaskStatus,
        /// The update id to acknowledge.
        ack: Option<u64>,
    },
    /// An agent is unreachable or gone.
    AgentLost {
        /// Which.
        agent: AgentId,
    },
    /// The master refuses something the framework did (it is removed, or its request
    /// was malformed).
    Error {
        /// What.
        message: String,
    },
    /// The driver's own timer (subscribe if not subscribed) and its monitor of the master.
    /// Not a message a peer can send: it cannot be made outside this crate, nor encoded,
    /// nor decoded.
    #[serde(skip)]
    Own(DriverOwn),
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    fn status(state: TaskState) -> TaskStatus {
        TaskStatus::new("t1".into(), state, Source::Agent, 0)
    }

    #[test]
    fn the_happy_path_and_a_kill() {
        let mut t = TaskLifecycle::new(status(Staging));
        for s in [Starting, Running, Killing, Killed] {
            assert_eq!(t.apply(status(s)), Ok(Applied::Changed));
        }
        assert_eq!(t.history.len(), 5);
    }

    #[test]
    fn a_retried_update_is_a_duplicate() {
        let mut t = TaskLifecycle::new(status(Staging));
        t.apply(status(Running)).unwrap();
        assert_eq!(t.apply(status(Running)), Ok(Applied::Duplicate));
        t.apply(status(Finished)).unwrap();
        assert_eq!(t.apply(status(Finished)), Ok(Applied::Duplicate));
        assert_eq!(t.history.len(), 3);
    }

    #[test]
    fn no_task_ends_twice_in_different_ways() {
        for end in TaskState::ALL.iter().filter(|s| s.is_terminal()) {
            for other in TaskState::ALL.iter().filter(|s| *s != end) {
                let mut t = TaskLifecycle::new(status(Staging));
                t.apply(status(*end)).unwrap();
                assert!(t.apply(status(*other)).is_err(), "{end} then {other}");
                assert_eq!(t.state(), *end);
            }
        }
    }

    #[test]
    fn error_and_dropped_come_only_before_an_agent() {
        for from in [Starting, Running, Killing, Unreachable] {
            assert!(!from.may_become(Error), "{from} -> error");
        }
        for from in [Starting, Running, Killing] {
            assert!(!from.may_become(Dropped), "{from} -> dropped");
        }
        assert!(Staging.may_become(Error) && Staging.may_become(Dropped));
        // Unreachable while its launch was on the way, and the agent never had it.
        assert!(Unreachable.may_become(Dropped));
    }

    #[test]
    fn what_an_actor_sends_itself_never_goes_on_the_wire() {
        use troupe_runtime::codec::{decode, encode};
        // It cannot be encoded...
        assert!(encode(&AgentMsg::own(AgentOwnMsg::Tick)).is_err());
        assert!(encode(&MasterMsg::own(MasterOwnMsg::Tick)).is_err());
        assert!(encode(&ObserverMsg::Check(Own(()))).is_err());
        assert!(encode(&SchedulerMsg::own(DriverOwnMsg::Reconnect)).is_err());
        // ...and a peer's frame that names it is refused.
        #[derive(serde::Serialize)]
        enum Forged {
            Own,
            Check,
        }
        let own = encode(&Forged::Own).unwrap();
        assert!(decode::<AgentMsg>(&own).is_err());
        assert!(decode::<MasterMsg>(&own).is_err());
        assert!(decode::<SchedulerMsg>(&own).is_err());
        assert!(decode::<ObserverMsg>(&encode(&Forged::Check).unwrap()).is_err());
        // What peers do send still goes.
        assert!(decode::<ObserverMsg>(&encode(&ObserverMsg::Heartbeat).unwrap()).is_ok());
    }

    #[test]
    fn queued_comes_before_everything_and_never_again() {
        for s in TaskState::ALL {
            assert!(!s.may_become(Queued), "{s} -> queued");
        }
        assert!(Queued.may_become(Staging) && !Queued.is_terminal());
    }

    #[test]
    fn an_unreachable_task_may_come_back_running() {
        let mut t = TaskLifecycle::new(status(Staging));
        for s in [Running, Unreachable, Running, Unreachable, Gone] {
            t.apply(status(s)).unwrap();
        }
        assert!(t.state().is_terminal());
    }

    #[test]
    fn nothing_goes_back() {
        assert!(!Running.may_become(Starting));
        assert!(!Killing.may_become(Running));
        // Only a queued task, launched, becomes staging.
        for s in TaskState::ALL.into_iter().filter(|s| *s != Queued) {
            assert!(!s.may_become(Staging), "{s} -> staging");
        }
    }

    #[test]
    fn resources_add_and_subtract_without_going_negative() {
        let a = Resources::new(2.0, 1024.0);
        let b = Resources::new(0.5, 2048.0);
        assert_eq!(a.plus(b), Resources::new(2.5, 3072.0));
        assert_eq!(a.minus(b), Resources::new(1.5, 0.0));
        assert!(a.contains(&Resources::new(2.0, 1024.0)));
        assert!(!a.contains(&b));
        assert!(!Resources::new(-1.0, 0.0).is_valid());
    }
}
