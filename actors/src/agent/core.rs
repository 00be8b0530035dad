//! The agent core, at `agent/<id>`: registration and heartbeats, launching and killing
//! tasks, the status-update manager and the checkpoint.
//!
//! * Until registered, it tries every second: it connects to the master's node, and
//!   registers with its resources and the latest status of every task it still has. It
//!   monitors the master core, and registers again when that goes (or when asked).
//! * Registered, it sends its observer on the master a heartbeat every 200 ms.
//! * Each task's updates go through [`StatusUpdates`]: in order, retried with backoff until
//!   the framework acknowledges them. The manager and the task table are checkpointed to
//!   `<work-dir>/agent.json` at the next tick after a change. A launched task must be on
//!   disk before its process starts, and rewriting the whole checkpoint for each launch
//!   costs in proportion to the tasks the agent has: so a launch appends the tasks it
//!   admits to `<work-dir>/agent.journal`, which the next checkpoint supersedes (see
//!   [`load_checkpoint`]).
//! * A task runs as a process actor under the executors supervisor; the core monitors it,
//!   and its `Down` (or, when the process ended before the monitor was placed, the outcome
//!   the process actor recorded in the sandbox) says how it ended.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use troupe_os::actor::{ProcessArgs, ProcessMsg, Stream};
use troupe_os::{ExitReason, ProcessActor, TaskContext};
use troupe_runtime::supervisor::{ChildSpec, Restart, Shutdown, StartCtx};
use troupe_runtime::{Addr, Child, DownReason, Node, SupervisorRef};

use super::AgentConfig;
use crate::master::{AGENT_HEARTBEAT, MASTER_PATH, observer_path};
use crate::outbox::Outbox;
use crate::protocol::{
    AgentId, AgentInfo, AgentMsg, AgentOwn, AgentOwnMsg, FrameworkId, MasterMsg, ObserverMsg,
    RegistrationRefused, ReportedTask, Resources, Source, TaskId, TaskInfo, TaskState, TaskStatus,
    TaskUsage, now_ms,
};
use crate::status_updates::StatusUpdates;

/// How long a registration may take before it is tried again.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// The time between registration attempts.
const REGISTER_EVERY: Duration = Duration::from_secs(1);
/// How many refused launches an agent remembers (see `AgentState::refused`).
const REFUSED_KEPT: usize = 1024;

/// What the core starts from.
#[derive(Debug, Clone)]
pub struct AgentArgs {
    /// The agent's settings.
    pub config: AgentConfig,
    /// The agent's supervisor, to find the executors by.
    pub parent: ActorCell,
}

/// The agent core actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentCore;

/// One task as the agent keeps it (and checkpoints it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentTask {
    framework: FrameworkId,
    info: TaskInfo,
    status: TaskStatus,
    /// When it was launched (ms since the Unix epoch; 0 in checkpoints that predate it).
    #[serde(default)]
    launched_ms: u64,
}

/// The checkpoint: the task table and the status-update manager.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    tasks: BTreeMap<TaskId, AgentTask>,
    updates: StatusUpdates,
    /// Counts the checkpoints written; the journal's entries of the same generation came
    /// after this checkpoint, older ones are in it.
    #[serde(default)]
    generation: u64,
    /// The agent's life (see [`AgentInfo::life`]); 0 in checkpoints that predate lives.
    #[serde(default)]
    life: u64,
}

/// One entry of the journal: the tasks one launch admitted.
#[derive(Debug, Serialize, Deserialize)]
struct Admitted {
    generation: u64,
    tasks: Vec<(TaskId, AgentTask)>,
}

/// The core's state.
pub struct AgentState {
    counter: troupe_runtime::inspector::MessageCounter,
    config: AgentConfig,
    parent: ActorCell,
    info: AgentInfo,
    book: Checkpoint,
    executors: Option<SupervisorRef>,
    /// Tasks of the checkpoint still to be found again.
    to_adopt: Vec<TaskId>,
    /// This agent's launch machinery (launchers, spare shims, warm pools), handed to every
    /// task's context.
    executor: troupe_os::Executor,
    /// Launches this agent told the master it never had (task and launch time, newest
    /// last, bounded): should one still arrive, it is ignored, since the master has called
    /// it dropped and its framework may have launched it elsewhere.
    refused: VecDeque<(TaskId, u64)>,
    registered: bool,
    last_attempt: Option<Instant>,
    /// Since when (last said) the checkpoint cannot be written, while it cannot.
    checkpoint_failing: Option<Instant>,
    /// When ended tasks' sandboxes were last looked at, and whether a collection runs.
    last_gc: Instant,
    collecting: Arc<AtomicBool>,
    /// When the agent last said (as a warning) that it cannot reach the master: said at
    /// the first failure and every 30 s while it lasts, and cleared once registered.
    unreachable_said: Option<Instant>,
    master: Addr<MasterMsg>,
    master_outbox: Outbox<MasterMsg>,
    master_watch: Option<troupe_runtime::Ref>,
    /// The checkpoint is behind the book.
    dirty: bool,
    /// Whether the heartbeat task beats (while registered).
    beating: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
    start: Instant,
    myself: ActorRef<AgentMsg>,
    /// `<work-dir>/agent.lock`, locked while this core runs: two agents never share a work
    /// directory (they would adopt each other's tasks).
    _work_dir_lock: std::fs::File,
}

fn checkpoint_path(config: &AgentConfig) -> PathBuf {
    config.work_dir.join("agent.json")
}

fn journal_path(config: &AgentConfig) -> PathBuf {
    config.work_dir.join("agent.journal")
}

/// The checkpoint, with the tasks the journal admitted after it was written. A journal entry
/// of an older generation is already in the checkpoint; one cut short by a crash was being
/// written before its tasks' processes started, so nothing ran of it.
fn load_checkpoint(config: &AgentConfig) -> Result<Checkpoint, String> {
    let mut book: Checkpoint = match std::fs::read(checkpoint_path(config)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "the checkpoint {} is not valid ({e}); move it away to start afresh",
                checkpoint_path(config).display()
            )
        })?,
        Err(_) => Checkpoint::default(),
    };
    let journal = std::fs::read(journal_path(config)).unwrap_or_default();
    for line in journal.split(|b| *b == b'\n') {
        let Ok(entry) = serde_json::from_slice::<Admitted>(line) else {
            continue;
        };
        if entry.generation != book.generation {
            continue;
        }
        for (id, task) in entry.tasks {
            book.tasks.entry(id).or_insert(task);
        }
    }
    Ok(book)
}

impl Actor for AgentCore {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        let config = args.config;
        let node = Node::current().ok_or("the agent needs a running node")?;
        let work_dir_lock = super::work_dir::lock(&config)?;
        // A few descriptors a task: the soft limit a service starts with would stop the
        // agent at about a hundred (tasks get the limit it started with back).
        match troupe_os::fd_limit::raise_for_owner() {
            Ok(troupe_os::fd_limit::Raised::From(before, after)) => {
                tracing::info!(before, after, "open-file limit raised to the hard limit")
            }
            Ok(troupe_os::fd_limit::Raised::AlreadyAtMost) => {}
            Err(e) => tracing::warn!(cause = %e, "cannot raise the open-file limit"),
        }
        let host = troupe_os::host::host_resources(&config.sandbox_root(), BTreeMap::new());
        let resources = config.resources.unwrap_or(Resources {
            cpus: host.cpus,
            mem_mib: (host.memory_bytes / (1024 * 1024)) as f64,
            disk_mib: (host.disk_free_bytes / (1024 * 1024)) as f64,
        });
        let info = AgentInfo {
            id: config.id.clone(),
            hostname: host.hostname,
            node: node.name().to_string(),
            addr: node.advertise_addr().to_string(),
            resources,
            attributes: config.attributes.clone(),
            work_dir: std::path::absolute(&config.work_dir)
                .unwrap_or_else(|_| config.work_dir.clone())
                .display()
                .to_string(),
            ports: config.ports,
            life: 0,
        };
        let mut book = load_checkpoint(&config)?;
        if book.life == 0 {
            book.life = crate::ids::unique_number();
        }
        let info = AgentInfo {
            life: book.life,
            ..info
        };
        let to_adopt = book
            .tasks
            .iter()
            .filter(|(_, t)| !t.status.state.is_terminal())
            .map(|(id, _)| id.clone())
            .collect();
        troupe_runtime::register(&format!("agent/{}", config.id), &myself)?;
        myself.send_interval(AGENT_HEARTBEAT, || AgentMsg::own(AgentOwnMsg::Tick));
        let master = Addr::<MasterMsg>::new(MASTER_PATH);
        // Heartbeats go from a task of their own: a mailbox busy launching tasks must not
        // look like a dead agent.
        let beating = Arc::new(AtomicBool::new(false));
        let observer = Outbox::new(Addr::<ObserverMsg>::new(observer_path(&config.id)));
        let heartbeat = {
            let beating = beating.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(AGENT_HEARTBEAT);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    if beating.load(Ordering::Relaxed) {
                        observer.send(ObserverMsg::Heartbeat);
                    }
                }
            })
        };
        let mut state = AgentState {
            counter: troupe_runtime::inspector::MessageCounter::new(&myself.get_cell()),
            dirty: false,
            beating,
            heartbeat,
            master_outbox: Outbox::new(master.clone()),
            master,
            config,
            parent: args.parent,
            info,
            book,
            executors: None,
            to_adopt,
            executor: troupe_os::Executor::new(),
            refused: VecDeque::new(),
            registered: false,
            last_attempt: None,
            last_gc: Instant::now(),
            checkpoint_failing: None,
            collecting: Arc::default(),
            unreachable_said: None,
            master_watch: None,
            start: Instant::now(),
            myself: myself.clone(),
            _work_dir_lock: work_dir_lock,
        };
        let now = state.now();
        state.book.updates.resume(now);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(watch) = state.master_watch.take() {
            troupe_runtime::demonitor(&watch);
        }
        state.heartbeat.abort();
        if state.dirty {
            state.flush();
        }
        // The warm sandboxes and cgroups go; the agent's cgroup directory goes when no task
        // is left in it (running tasks outlive the agent, and keep it).
        let agent = state.id().to_string();
        let root = state.config.sandbox_root();
        let executor = state.executor.clone();
        // Awaited: whoever stops the agent may remove its work directory next.
        let _ = tokio::task::spawn_blocking(move || {
            executor.drain(&root, &agent);
            troupe_os::cgroup::remove_owner_if_empty(&agent)
        })
        .await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        state.counter.handled();
        match message {
            AgentMsg::Launch {
                framework,
                tasks,
                launched_ms,
            } => {
                tracing::trace!(agent = %state.id(), tasks = tasks.len(), "launch received");
                let launched_ms = if launched_ms == 0 {
                    now_ms()
                } else {
                    launched_ms
                };
                let admitted = state.admit(framework, tasks, launched_ms);
                // A task is on disk before its process runs, so that a restarted agent never
                // has a process it does not know of.
                state.journal(&admitted);
                for (id, spec) in admitted {
                    state.launch_process(&id, spec).await;
                }
                state.save();
            }
            AgentMsg::Kill { task, grace } => state.kill(task, grace),
            AgentMsg::Confirm { launches } => state.confirm(launches),
            AgentMsg::Acknowledge { task, update } => {
                let now = state.now();
                match state.book.updates.ack(&task, update, now) {
                    Ok(()) => {
                        let done = state.book.updates.pending(&task) == 0
                            && state
                                .book
                                .tasks
                                .get(&task)
                                .is_some_and(|t| t.status.state.is_terminal());
                        if done {
                            state.book.tasks.remove(&task);
                        }
                        state.save();
                    }
                    Err(e) => tracing::debug!(cause = %e, "acknowledgement ignored"),
                }
                state.send_due();
            }
            AgentMsg::ResendUpdates { framework } => {
                let now = state.now();
                state.book.updates.hurry(&framework, now);
                state.send_due();
            }
            AgentMsg::Removed { life } if life == state.info.life => state.start_afresh(),
            AgentMsg::Removed { .. } => {}
            AgentMsg::Reregister => {
                state.set_registered(false);
                state.last_attempt = None;
                state.register().await;
            }
            AgentMsg::StreamLog {
                task,
                stream,
                from,
                follow,
                to,
            } => state.stream_log(task, stream, from, follow, to),
            AgentMsg::Usage { reply } => {
                let running = state.live_tasks();
                tokio::spawn(async move {
                    let mut usage = Vec::new();
                    for task in running {
                        let actor = Addr::<ProcessMsg>::new(format!("task/{task}"));
                        if let Ok(stats) = actor
                            .call(|reply| ProcessMsg::Stats { reply }, Duration::from_secs(2))
                            .await
                        {
                            usage.push(TaskUsage {
                                task,
                                pid: stats.pid,
                                cpu_ns: stats.usage.cpu_ns,
                                memory_bytes: stats.usage.memory_bytes,
                            });
                        }
                    }
                    reply.send(usage);
                });
            }
            AgentMsg::Own(AgentOwn(AgentOwnMsg::Started { task, result })) => {
                state.started(&task, result, false).await;
                state.save();
            }
            AgentMsg::Own(AgentOwn(AgentOwnMsg::Exited { task, reason })) => {
                state.exited(task, reason);
                state.save();
            }
            AgentMsg::Own(AgentOwn(AgentOwnMsg::Tick)) => {
                if state.dirty {
                    state.flush();
                }
                if !state.to_adopt.is_empty() {
                    state.adopt_all().await;
                }
                if !state.registered {
                    let due = state
                        .last_attempt
                        .is_none_or(|t| t.elapsed() >= REGISTER_EVERY);
                    if due {
                        state.register().await;
                    }
                } else {
                    state.send_due();
                }
                // By age, every so often; over the disk watermark, within a second.
                let since = state.last_gc.elapsed();
                let over = || {
                    super::gc::disk_used(&state.config.sandbox_root())
                        .is_some_and(|u| u > state.config.gc.disk_watermark)
                };
                if since >= state.config.gc.interval()
                    || (since >= Duration::from_secs(1) && over())
                {
                    state.collect_garbage();
                }
            }
        }
        Ok(())
    }
}

/// The status an exit makes of a task.
fn exit_status(task: &AgentTask, reason: &ExitReason) -> (TaskState, String, Option<i32>) {
    match reason {
        ExitReason::Exited(0) => (TaskState::Finished, reason.to_string(), Some(0)),
        ExitReason::Exited(code) => (TaskState::Failed, reason.to_string(), Some(*code)),
        ExitReason::OomKilled => {
            let limit = task
                .info
                .command
                .resources
                .memory_bytes
                .map(|b| b / (1024 * 1024))
                .unwrap_or(task.info.resources.mem_mib as u64);
            (
                TaskState::Failed,
                format!("killed: out of memory (limit {limit} MiB)"),
                None,
            )
        }
        ExitReason::Killed => (TaskState::Killed, "killed on request".into(), None),
        other => (TaskState::Failed, other.to_string(), None),
    }
}

impl AgentState {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn set_registered(&mut self, registered: bool) {
        self.registered = registered;
        self.beating.store(registered, Ordering::Relaxed);
    }

    fn id(&self) -> &AgentId {
        &self.config.id
    }

    /// Marks the checkpoint out of date; it is written at the next tick (200 ms at most).
    /// Losing that much to a crash loses nothing: a restarted agent finds each task again
    /// from the task's own records, and updates not yet acknowledged are sent again.
    fn save(&mut self) {
        self.dirty = true;
    }

    /// Writes the checkpoint now (written beside it and renamed over it), which supersedes
    /// the journal.
    fn flush(&mut self) {
        self.dirty = false;
        let previous = self.book.generation;
        self.book.generation += 1;
        let path = checkpoint_path(&self.config);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let bytes = serde_json::to_vec(&self.book).map_err(std::io::Error::other)?;
            // Whole on disk before it replaces the last good one: a crash or a full disk
            // leaves one or the other, never half of one.
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // Emptied, not removed: the next launch appends to it without making a file.
            if std::fs::metadata(journal_path(&self.config)).is_ok_and(|m| m.len() > 0) {
                std::fs::File::create(journal_path(&self.config))?;
            }
            Ok(())
        };
        match write() {
            Ok(()) => {
                if self.checkpoint_failing.take().is_some() {
                    tracing::warn!(agent = %self.id(), path = %path.display(), "the checkpoint is written again");
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                // The journal's entries go on counting from the checkpoint on disk.
                self.book.generation = previous;
                self.dirty = true;
                // Said at once and every 30 s while it lasts (a full disk), not every tick.
                let due = self
                    .checkpoint_failing
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
                if due {
                    self.checkpoint_failing = Some(Instant::now());
                    tracing::error!(agent = %self.id(), path = %path.display(), cause = %e, "cannot write the checkpoint; the last one written stays, and the agent tries again");
                }
            }
        }
    }

    /// Appends the tasks just admitted to the journal, in one write; the checkpoint is
    /// written at the next tick. If the journal cannot be written, the checkpoint is, now.
    fn journal(&mut self, admitted: &[(TaskId, troupe_os::ProcessSpec)]) {
        if admitted.is_empty() {
            return;
        }
        let entry = Admitted {
            generation: self.book.generation,
            tasks: admitted
                .iter()
                .filter_map(|(id, _)| Some((id.clone(), self.book.tasks.get(id)?.clone())))
                .collect(),
        };
        let append = || -> std::io::Result<()> {
            use std::io::Write;
            let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
            line.insert(0, b'\n');
            line.push(b'\n');
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(journal_path(&self.config))?
                .write_all(&line)
        };
        match append() {
            Ok(()) => self.save(),
            Err(e) => {
                tracing::warn!(agent = %self.id(), cause = %e, "cannot append to the journal; writing the checkpoint");
                self.flush();
            }
        }
    }

    /// Records a task's new status and queues the update for its framework.
    fn update(&mut self, task: &TaskId, state: TaskState, reason: String, exit_code: Option<i32>) {
        self.update_with(task, state, reason, exit_code, Detail::default());
    }

    /// [`AgentState::update`], with what the status carries as data: the main process's
    /// pid (on `Running`), how it ended (on its end).
    fn update_with(
        &mut self,
        task: &TaskId,
        state: TaskState,
        reason: String,
        exit_code: Option<i32>,
        detail: Detail,
    ) {
        let Some(t) = self.book.tasks.get_mut(task) else {
            return;
        };
        if !t.status.state.may_become(state) {
            return;
        }
        let source = if exit_code.is_some() || state.is_terminal() {
            Source::Executor
        } else {
            Source::Agent
        };
        let mut status = TaskStatus::new(task.clone(), state, source, now_ms());
        status.reason = reason;
        status.agent = Some(self.config.id.clone());
        status.exit_code = exit_code;
        status.pid = detail.pid;
        status.exit = detail.exit;
        t.status = status.clone();
        let framework = t.framework.clone();
        let now = self.now();
        self.book.updates.push(framework, status, now);
        self.send_due();
    }

    /// Sends what the update manager says is due, when registered.
    fn send_due(&mut self) {
        if !self.registered {
            return;
        }
        let now = self.now();
        for send in self.book.updates.due(now) {
            self.master_outbox.send(MasterMsg::StatusUpdate {
                agent: self.config.id.clone(),
                update: send.update,
            });
        }
    }

    fn context(&self, task: &TaskId) -> TaskContext {
        TaskContext::new(
            &self.executor,
            &self.config.id.0,
            &task.0,
            self.config.sandbox_root(),
        )
        .warming()
    }

    async fn executors(&mut self) -> Option<SupervisorRef> {
        if let Some(e) = self.executors.as_ref().filter(|e| e.is_running()) {
            return Some(e.clone());
        }
        let cell = crate::tree::sibling(&self.parent, "executors").await?;
        self.executors = SupervisorRef::from_cell(cell);
        self.executors.clone()
    }

    /// Takes the tasks of a launch into the book (as `Staging`), with the specs to run:
    /// their resources become their cgroup's limits, unless their command sets its own.
    fn admit(
        &mut self,
        framework: FrameworkId,
        tasks: Vec<TaskInfo>,
        launched_ms: u64,
    ) -> Vec<(TaskId, troupe_os::ProcessSpec)> {
        let mut admitted = Vec::new();
        let mut room = troupe_os::fd_limit::Room::now();
        let mut disk = super::gc::DiskRoom::now(&self.config.work_dir);
        for info in tasks {
            let id = info.id.clone();
            if self.refused.contains(&(id.clone(), launched_ms)) {
                tracing::info!(task = %id, "launch that arrived after the master was told it never would: ignored");
                continue;
            }
            if self.book.tasks.contains_key(&id) {
                tracing::warn!(task = %id, "launch of a task this agent already has: ignored");
                continue;
            }
            let mut spec = info.command.clone();
            if spec.resources.cpus.is_none() && info.resources.cpus > 0.0 {
                spec.resources.cpus = Some(info.resources.cpus);
            }
            if spec.resources.memory_bytes.is_none() && info.resources.mem_mib > 0.0 {
                spec.resources.memory_bytes =
                    Some((info.resources.mem_mib * 1024.0 * 1024.0) as u64);
            }
            // No separate `Starting` update: starting a process takes milliseconds, and each
            // update is a round trip to the framework before the next may go (`Running`
            // would wait for `Starting`'s acknowledgement). The task goes from `Staging` to
            // `Running`, or to `Failed` when its process cannot start.
            let disk_need_mib = info.resources.disk_mib;
            let staging = TaskStatus::new(id.clone(), TaskState::Staging, Source::Agent, now_ms());
            self.book.tasks.insert(
                id.clone(),
                AgentTask {
                    framework: framework.clone(),
                    info,
                    status: staging,
                    launched_ms,
                },
            );
            // Refused whole, before anything of it is made, near the open-file limit or
            // with the disk of the sandboxes full.
            if let Err(why) = room.take().and_then(|()| disk.take(disk_need_mib)) {
                tracing::warn!(agent = %self.id(), task = %id, %why, "launch refused");
                let detail = Detail {
                    pid: None,
                    exit: Some(ExitReason::FailedToStart(why.clone())),
                };
                self.update_with(&id, TaskState::Failed, why, None, detail);
                continue;
            }
            admitted.push((id, spec));
        }
        admitted
    }

    /// Starts (or adopts) a task's process actor and watches it, before anything else the
    /// agent does: for finding tasks again after a restart, one after another.
    async fn start_process(&mut self, id: &TaskId, spec: troupe_os::ProcessSpec, adopt: bool) {
        let Some(executors) = self.executors().await else {
            self.not_started(id);
            return;
        };
        let child = self.process_child(id, spec, adopt);
        let result = match executors.start_child(child).await {
            Ok(cell) => Ok(pid_of(cell).await),
            Err(e) => Err(start_failure(e)),
        };
        self.started(id, result, adopt).await;
    }

    /// Starts a launched task's process actor beside the agent's other work: a start takes
    /// the agent's sandbox and cgroup work, the shim's and the task's exec (about a
    /// millisecond), and a launch of many tasks, a kill or an acknowledgement would wait
    /// behind each. The outcome comes back as `AgentOwnMsg::Started`.
    async fn launch_process(&mut self, id: &TaskId, spec: troupe_os::ProcessSpec) {
        let Some(executors) = self.executors().await else {
            self.not_started(id);
            return;
        };
        let child = self.process_child(id, spec, false);
        let me = self.myself.clone();
        let task = id.clone();
        tokio::spawn(async move {
            let result = match executors.start_child(child).await {
                Ok(cell) => Ok(pid_of(cell).await),
                Err(e) => Err(start_failure(e)),
            };
            let _ = me.cast(AgentMsg::own(AgentOwnMsg::Started { task, result }));
        });
    }

    fn not_started(&mut self, id: &TaskId) {
        self.update(
            id,
            TaskState::Failed,
            "the agent's executors are not running".into(),
            None,
        );
    }

    /// The supervisor child that runs (or, with `adopt`, finds again) a task's process.
    fn process_child(&mut self, id: &TaskId, spec: troupe_os::ProcessSpec, adopt: bool) -> Child {
        let grace = spec.grace;
        let args = ProcessArgs {
            spec,
            ctx: self.context(id),
            path: None,
            adopt,
        };
        Child::new(
            ChildSpec::worker(id.0.clone())
                .restart(Restart::Temporary)
                .shutdown(Shutdown::Timeout(grace + Duration::from_secs(5)))
                .start("process", Default::default()),
            move |start: StartCtx| {
                let args = args.clone();
                async move { start.spawn(ProcessActor, args).await }
            },
        )
    }

    /// What follows a task's start: `Running` and a watch, or `Failed` with the reason. A
    /// task killed while it started is stopped now (the kill found no process to stop).
    async fn started(&mut self, id: &TaskId, result: Result<Option<i32>, String>, adopt: bool) {
        let killing = self
            .book
            .tasks
            .get(id)
            .is_some_and(|t| t.status.state == TaskState::Killing);
        match result {
            Ok(pid) => {
                if killing {
                    if let Some(grace) = self.book.tasks.get(id).map(|t| t.info.command.grace) {
                        stop_process(id, grace);
                    }
                } else {
                    // After a restart too: the checkpoint may predate the task's `Running`
                    // (a no-op when it does not).
                    let reason = if adopt {
                        "its process runs (found again after the agent restarted)"
                    } else {
                        "its process runs"
                    };
                    let detail = Detail {
                        pid,
                        ..Detail::default()
                    };
                    self.update_with(id, TaskState::Running, reason.into(), None, detail);
                    tracing::trace!(agent = %self.id(), task = %id, "running, and the update sent");
                }
                self.watch(id, self.context(id)).await;
            }
            Err(text) => {
                let (state, reason, exit) = if killing {
                    let reason = format!("killed while it started, and it did not start: {text}");
                    (TaskState::Killed, reason, ExitReason::Killed)
                } else if adopt {
                    let reason = format!("not found again after the agent restarted: {text}");
                    (TaskState::Failed, reason.clone(), ExitReason::Gone(reason))
                } else {
                    let why = text
                        .strip_prefix("failed to start: ")
                        .unwrap_or(&text)
                        .to_string();
                    (TaskState::Failed, text, ExitReason::FailedToStart(why))
                };
                let detail = Detail {
                    exit: Some(exit),
                    ..Detail::default()
                };
                self.update_with(id, state, reason, None, detail);
            }
        }
    }

    /// Monitors a task's process actor; its end comes back as `AgentOwnMsg::Exited`.
    async fn watch(&mut self, id: &TaskId, ctx: TaskContext) {
        watch_task(self.myself.clone(), id.clone(), ctx).await;
    }

    fn exited(&mut self, task: TaskId, reason: ExitReason) {
        let Some(t) = self.book.tasks.get(&task) else {
            return;
        };
        if t.status.state.is_terminal() {
            return;
        }
        let (state, mut text, code) = exit_status(t, &reason);
        let left = self.context(&task).left_running();
        if !left.is_empty() {
            text = format!(
                "{text}; still running in its cgroup when it ended, and killed with it: {}",
                left.join(", ")
            );
        }
        tracing::debug!(agent = %self.id(), task = %task, %state, reason = %text, "task ended");
        let detail = Detail {
            exit: Some(reason),
            ..Detail::default()
        };
        self.update_with(&task, state, text, code, detail);
    }

    fn kill(&mut self, task: TaskId, grace: Option<Duration>) {
        let Some(t) = self.book.tasks.get(&task) else {
            tracing::info!(task = %task, "kill of a task this agent does not have");
            return;
        };
        if t.status.state.is_terminal() || t.status.state == TaskState::Killing {
            return;
        }
        let grace = grace.unwrap_or(t.info.command.grace);
        self.update(
            &task,
            TaskState::Killing,
            format!(
                "stopping: {} then SIGKILL after {grace:?}",
                t.info.command.stop_signal
            ),
            None,
        );
        self.save();
        // A task still starting has no process actor yet: its start stops it once done.
        stop_process(&task, grace);
    }

    /// Answers [`AgentMsg::Confirm`]: the launches this agent does not have are refused for
    /// good and reported lost.
    fn confirm(&mut self, launches: Vec<(TaskId, u64)>) {
        let lost: Vec<(TaskId, u64)> = launches
            .into_iter()
            .filter(|(task, launched_ms)| {
                self.book
                    .tasks
                    .get(task)
                    .is_none_or(|t| t.launched_ms != *launched_ms)
            })
            .collect();
        if lost.is_empty() {
            return;
        }
        for launch in &lost {
            if self.refused.len() >= REFUSED_KEPT {
                self.refused.pop_front();
            }
            self.refused.push_back(launch.clone());
        }
        tracing::info!(agent = %self.id(), tasks = lost.len(), "launches the master sent never arrived; they will not run here");
        self.master_outbox.send(MasterMsg::LaunchesLost {
            agent: self.config.id.clone(),
            launches: lost,
        });
    }

    /// Forgets a task whose launch was recorded but whose process never started (the agent
    /// stopped in between): the master, not finding it in the agent's report, calls it
    /// dropped. Whatever the start had made (a cgroup, a sandbox) goes.
    async fn forget_unstarted(&mut self, id: &TaskId) {
        tracing::info!(agent = %self.id(), task = %id, "a task launched but never started before the restart: forgotten, for the master to drop");
        self.book.tasks.remove(id);
        if let Some(cgroup) = troupe_os::cgroup::TaskCgroup::open(&self.config.id.0, &id.0) {
            cgroup.remove(Duration::from_secs(5)).await;
        }
        let _ = std::fs::remove_dir_all(self.context(id).sandbox());
    }

    async fn adopt_all(&mut self) {
        for id in std::mem::take(&mut self.to_adopt) {
            let Some(spec) = self.book.tasks.get(&id).map(|t| t.info.command.clone()) else {
                continue;
            };
            let alive = Addr::<ProcessMsg>::new(format!("task/{id}"))
                .resolve()
                .await
                .is_ok();
            // A process writes its checkpoint as soon as it runs: a task still staging
            // without one never ran, or died at birth with the agent (its cgroup goes).
            let unstarted = !alive
                && self
                    .book
                    .tasks
                    .get(&id)
                    .is_some_and(|t| t.status.state == TaskState::Staging)
                && troupe_os::Checkpoint::read(&self.context(&id).status_dir()).is_none();
            if alive {
                // The core restarted, not the agent: the process actor still runs.
                self.watch(&id, self.context(&id)).await;
            } else if unstarted {
                self.forget_unstarted(&id).await;
            } else {
                tracing::info!(agent = %self.id(), task = %id, "finding a task again after a restart");
                self.start_process(&id, spec, true).await;
            }
        }
        self.save();
    }

    async fn register(&mut self) {
        self.last_attempt = Some(Instant::now());
        let Some(node) = Node::current() else {
            return;
        };
        if let Some(addr) = self.config.master {
            match tokio::time::timeout(REGISTER_TIMEOUT, node.connect(addr)).await {
                Ok(Ok(name)) => {
                    self.master = Addr::on(name, MASTER_PATH);
                    self.master_outbox = Outbox::new(self.master.clone());
                }
                Ok(Err(e)) => {
                    self.cannot_reach(&e.to_string());
                    return;
                }
                Err(_) => {
                    self.cannot_reach(&format!("no answer within {REGISTER_TIMEOUT:?}"));
                    return;
                }
            }
        }
        // Every task it still keeps: the ended ones too, until their end is acknowledged,
        // or the master would take them for lost.
        let tasks: Vec<ReportedTask> = self
            .book
            .tasks
            .values()
            .map(|t| ReportedTask {
                framework: t.framework.clone(),
                status: t.status.clone(),
                resources: t.info.resources,
                name: t.info.name.clone(),
                command: t.info.command.argv.clone(),
                launched_ms: t.launched_ms,
            })
            .collect();
        let info = self.info.clone();
        let answer = self
            .master
            .call(
                |reply| MasterMsg::RegisterAgent { info, tasks, reply },
                REGISTER_TIMEOUT,
            )
            .await;
        match answer {
            Ok(Ok(())) => {
                if self.unreachable_said.take().is_some() {
                    // The warning that it could not is answered where it was seen.
                    tracing::warn!(agent = %self.id(), master = %self.master_place(), "reached the master: registered");
                } else {
                    tracing::info!(agent = %self.id(), "registered with the master");
                }
                self.set_registered(true);
                if let Some(watch) = self.master_watch.take() {
                    troupe_runtime::demonitor(&watch);
                }
                let me = self.myself.clone();
                self.master_watch = troupe_runtime::monitor_with(&self.master, move |_| {
                    let _ = me.cast(AgentMsg::Reregister);
                })
                .await
                .ok();
                let now = self.now();
                self.book.updates.resume(now);
                self.send_due();
            }
            Ok(Err(RegistrationRefused::Removed { .. })) => self.start_afresh(),
            Ok(Err(reason)) => {
                tracing::error!(agent = %self.id(), %reason, "the master refused the registration");
            }
            Err(e) => self.cannot_reach(&format!("registration failed: {e}")),
        }
    }

    /// Removes ended tasks' sandboxes past their time (`super::gc`), beside the agent's
    /// work: a removal of many files takes a while. Tasks still in the book (not yet
    /// acknowledged, or running) keep theirs.
    fn collect_garbage(&mut self) {
        self.last_gc = Instant::now();
        if self.collecting.swap(true, Ordering::SeqCst) {
            return;
        }
        let keep: std::collections::BTreeSet<String> =
            self.book.tasks.keys().map(|t| t.0.clone()).collect();
        let (root, policy, busy) = (
            self.config.sandbox_root(),
            self.config.gc,
            self.collecting.clone(),
        );
        let agent = self.id().clone();
        tokio::task::spawn_blocking(move || {
            let removed = super::gc::collect(&root, &keep, policy);
            if !removed.is_empty() {
                tracing::info!(%agent, sandboxes = removed.len(), "removed ended tasks' sandboxes past their time");
            }
            busy.store(false, Ordering::SeqCst);
        });
    }

    /// The tasks that have not ended.
    fn live_tasks(&self) -> Vec<TaskId> {
        self.book
            .tasks
            .iter()
            .filter(|(_, t)| !t.status.state.is_terminal())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The master removed this agent while it was cut off (unreachable past
    /// `agent_gone_after`): its tasks are gone for the cluster, and their frameworks may run
    /// them elsewhere, so no task of this life may run on. Each is killed at once (no
    /// grace: a copy may already run elsewhere), the checkpoint starts empty under a new
    /// life, and the agent registers again as that life.
    fn start_afresh(&mut self) {
        let live = self.live_tasks();
        tracing::warn!(agent = %self.id(), tasks = live.len(), "the master removed this agent while it was cut off: its tasks are killed, and it starts afresh");
        for task in &live {
            stop_process(task, Duration::ZERO);
        }
        self.book = Checkpoint {
            life: crate::ids::unique_number(),
            generation: self.book.generation + 1,
            ..Checkpoint::default()
        };
        self.info.life = self.book.life;
        self.to_adopt.clear();
        self.save();
        // Registered again at once, not a retry period later.
        let _ = self.myself.cast(AgentMsg::Reregister);
    }

    /// Where the master is, for people: its address, or its node.
    fn master_place(&self) -> String {
        match self.config.master {
            Some(addr) => addr.to_string(),
            None => "this node".into(),
        }
    }

    /// Says (at the first failure, then every 30 s) that the master cannot be reached,
    /// where it is looked for, and that the agent keeps trying: an agent started before
    /// its master, or cut off from it, is not silent about it.
    fn cannot_reach(&mut self, cause: &str) {
        let due = self
            .unreachable_said
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
        if due {
            tracing::warn!(agent = %self.id(), master = %self.master_place(), %cause, "cannot reach the master; retrying every {REGISTER_EVERY:?}");
            self.unreachable_said = Some(Instant::now());
        } else {
            tracing::debug!(agent = %self.id(), %cause, "master still not reachable");
        }
    }

    fn stream_log(&self, task: TaskId, stream: Stream, from: u64, follow: bool, to: String) {
        let running = self
            .book
            .tasks
            .get(&task)
            .is_some_and(|t| !t.status.state.is_terminal());
        let max_files = self
            .book
            .tasks
            .get(&task)
            .map_or(troupe_os::LogPolicy::default().max_files, |t| {
                t.info.command.logs.max_files
            });
        let sandbox = self.context(&task).sandbox();
        let gc_delay = self.config.gc.delay;
        tokio::spawn(async move {
            let sink = Addr::<troupe_os::actor::LogMsg>::new(to.clone());
            if !sandbox.exists() {
                let why = format!(
                    "its sandbox was removed: this agent keeps an ended task's sandbox for {} (--gc-delay), or less when its disk is full",
                    super::gc::for_people(gc_delay)
                );
                let gone = troupe_os::actor::LogMsg::Gone {
                    task: task.0.clone(),
                    stream,
                    why,
                };
                let _ = sink.send(gone).await;
                return;
            }
            if follow && running {
                let actor = Addr::<ProcessMsg>::new(format!("task/{task}"));
                let subscribe = ProcessMsg::Subscribe {
                    stream,
                    from,
                    to: to.clone(),
                };
                if actor.send(subscribe).await.is_ok() {
                    return;
                }
            }
            let (stdout, stderr) = troupe_os::process::log_paths(&sandbox);
            let path = match stream {
                Stream::Stdout => stdout,
                Stream::Stderr => stderr,
            };
            let chunks = tokio::task::spawn_blocking(move || {
                troupe_os::logs::read_kept(&path, max_files, from)
            })
            .await
            .unwrap_or_default();
            for chunk in chunks {
                let msg = troupe_os::actor::LogMsg::Chunk {
                    task: task.0.clone(),
                    stream,
                    chunk,
                };
                if sink.send(msg).await.is_err() {
                    return;
                }
            }
            let _ = sink
                .send(troupe_os::actor::LogMsg::End {
                    task: task.0,
                    stream,
                })
                .await;
        });
    }
}

/// Asks task `task`'s process actor to stop its process gracefully (the `Down` that follows
/// reports the end); nothing when there is no such actor (yet).
fn stop_process(task: &TaskId, grace: Duration) {
    let actor = Addr::<ProcessMsg>::new(format!("task/{task}"));
    tokio::spawn(async move {
        let _ = actor
            .call(
                |reply| ProcessMsg::StopWithin { grace, reply },
                grace + Duration::from_secs(15),
            )
            .await;
    });
}

/// Monitors task `task`'s process actor for the agent `me`: its end comes back as
/// `AgentOwnMsg::Exited`. A monitor lost with the node's kernel (the process may still run)
/// is placed again.
fn watch_task(
    me: ActorRef<AgentMsg>,
    task: TaskId,
    ctx: TaskContext,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let target = Addr::<ProcessMsg>::new(format!("task/{task}"));
        let (again_me, again_task, again_ctx) = (me.clone(), task.clone(), ctx.clone());
        let id = task.clone();
        let placed = troupe_runtime::monitor_with(&target, move |down| {
            if let DownReason::Lost(why) = &down.reason {
                tracing::warn!(task = %again_task, %why, "the watch of a task was lost; watching it again");
                tokio::spawn(watch_task(again_me, again_task, again_ctx));
                return;
            }
            // The outcome the process actor recorded is exact; the Down reason is its text.
            let reason = ctx.outcome().unwrap_or_else(|| match down.reason {
                DownReason::Normal => ExitReason::Exited(0),
                DownReason::Shutdown => ExitReason::Killed,
                DownReason::Error(text) => {
                    ExitReason::Gone(format!("its process actor stopped: {text}"))
                }
                DownReason::Killed => ExitReason::Gone("its process actor was killed".into()),
                DownReason::NoSuchActor | DownReason::NodeDown | DownReason::Lost(_) => {
                    ExitReason::Gone("it ended and its outcome was not recorded".into())
                }
            });
            let _ = me.cast(AgentMsg::own(AgentOwnMsg::Exited { task, reason }));
        })
        .await;
        if let Err(e) = placed {
            tracing::error!(task = %id, cause = %e, "cannot watch the task's process");
        }
    })
}

/// What a status carries beyond its state and words.
#[derive(Default)]
struct Detail {
    pid: Option<i32>,
    exit: Option<ExitReason>,
}

/// The pid of a just-started process actor's main process (it is known once the actor
/// started), asked of the actor itself; `None` if it does not answer at once.
async fn pid_of(cell: Option<ractor::ActorCell>) -> Option<i32> {
    let actor: ActorRef<ProcessMsg> = cell?.into();
    let (reply, answer) = troupe_runtime::Reply::channel();
    actor.cast(ProcessMsg::Info { reply }).ok()?;
    let info = tokio::time::timeout(Duration::from_secs(2), answer.recv())
        .await
        .ok()?
        .ok()?;
    Some(info.pid)
}
/// The reason a supervisor gives for a child that did not start.
fn start_failure(e: troupe_runtime::supervisor::ChildError) -> String {
    match e {
        troupe_runtime::supervisor::ChildError::StartFailed { reason, .. } => reason,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> (TaskId, AgentTask) {
        let id = TaskId(id.into());
        let task = AgentTask {
            framework: FrameworkId("f".into()),
            info: TaskInfo {
                id: id.clone(),
                name: String::new(),
                command: troupe_os::ProcessSpec::new(["true"]),
                resources: Resources::new(0.1, 1.0),
            },
            status: TaskStatus::new(id.clone(), TaskState::Staging, Source::Agent, 0),
            launched_ms: 0,
        };
        (id, task)
    }

    fn entry(generation: u64, ids: &[&str]) -> Vec<u8> {
        let mut line = serde_json::to_vec(&Admitted {
            generation,
            tasks: ids.iter().map(|id| task(id)).collect(),
        })
        .unwrap();
        line.insert(0, b'\n');
        line.push(b'\n');
        line
    }

    #[test]
    fn the_journal_adds_what_was_admitted_after_the_checkpoint_and_nothing_older() {
        let dir = std::env::temp_dir().join(format!("troupe-agent-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = AgentConfig::new("a", &dir);
        // No checkpoint yet: the journal alone (generation 0).
        std::fs::write(journal_path(&config), entry(0, &["t0"])).unwrap();
        let book = load_checkpoint(&config).unwrap();
        assert_eq!(
            book.tasks.keys().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            ["t0"]
        );

        // A checkpoint of generation 3 holding t1; t0 ended and was dropped from it.
        let mut book = Checkpoint {
            generation: 3,
            ..Checkpoint::default()
        };
        let (id, t1) = task("t1");
        book.tasks.insert(id, t1);
        std::fs::write(checkpoint_path(&config), serde_json::to_vec(&book).unwrap()).unwrap();
        let mut journal = entry(2, &["t0"]); // before the checkpoint: in it, or gone
        journal.extend(entry(3, &["t2", "t3"]));
        journal.extend(b"\n{\"generation\":3,\"tasks\":[[\"t4\""); // cut short by a crash
        std::fs::write(journal_path(&config), journal).unwrap();
        let book = load_checkpoint(&config).unwrap();
        assert_eq!(
            book.tasks.keys().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            ["t1", "t2", "t3"]
        );
        assert_eq!(book.generation, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
