//! Typed client handles: the one way tools and applications talk to the cluster's actors.
//! The CLI, its HTTP server and its REPL use them and build no protocol message of their
//! own; an application written against this crate uses the same.
//!
//! * [`MasterClient`]: the master core: the cluster's state, where a task runs, kills.
//! * [`AgentClient`]: one agent: its tasks' resource use, their logs, signals to them.
//! * [`Runner`]: the one-shot runner behind `troupe run`: submit, cancel, the queue.
//! * [`Processes`]: the process service: spawn a process anywhere, list, get, monitor,
//!   signal, kill.
//! * [`cluster_tree`]: every node the master knows, with its inspector's snapshot.
//!
//! A handle is an address and a timeout: cheap to make and to clone, it connects nothing by
//! itself (the node's transport does, on first use). Every call waits at most its timeout,
//! and its error says whether the actor could not be reached ([`ClientError::Call`]) or
//! answered with a refusal ([`ClientError::Refused`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use troupe_os::actor::{LogMsg, ProcessMsg, Stream};
use troupe_runtime::inspector::{NodeSnapshot, inspect};
use troupe_runtime::{Addr, AddrError, Node};

use crate::master::MASTER_PATH;
use crate::processes::{
    Adoption, Needs, PLACE_WITHIN, PROCESSES_PATH, Preferences, ProcessEnd, ProcessEvent,
    ProcessFilter, ProcessRef, ProcessRefused, ProcessView, ProcessesMsg, RestartPolicy,
    SpawnRefused,
};
use crate::protocol::{
    AgentId, AgentInfo, AgentMsg, ClusterState, KillAccepted, MasterHealth, MasterMsg, TaskId,
    TaskLocation, TaskRefused, TaskUsage,
};
use crate::runner::{QueuedTask, RUNNER_PATH, RunRequest, RunnerMsg, SubmitRefused};

/// How long a call waits for its answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call through a client handle has no answer: the actor could not be reached, or
/// it answered no, and why (as data).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The actor could not be reached, or did not answer in time.
    #[error(transparent)]
    Call(#[from] AddrError),
    /// The master refused a request about a task.
    #[error(transparent)]
    Task(#[from] TaskRefused),
    /// The runner refused a submission.
    #[error(transparent)]
    Submit(#[from] SubmitRefused),
    /// A process refused a signal.
    #[error(transparent)]
    Signal(#[from] troupe_os::actor::SignalRefused),
    /// A process's standard input refused what was sent.
    #[error(transparent)]
    Stdin(#[from] troupe_os::stdin::StdinRefused),
    /// The process service refused a spawn, or could not place or start it.
    #[error(transparent)]
    Spawn(#[from] SpawnRefused),
    /// The process service refused a request about a process.
    #[error(transparent)]
    Process(#[from] ProcessRefused),
    /// Something of this node's own failed (a local receiver could not be started).
    #[error("{0}")]
    Local(String),
}

/// The master core of a cluster.
///
/// ```no_run
/// # async fn example() -> Result<(), troupe_actors::client::ClientError> {
/// use troupe_actors::client::MasterClient;
/// use troupe_actors::protocol::TaskId;
///
/// // The master whose node this node is connected to, as `troupe` commands find it.
/// let master = MasterClient::on("master-1");
/// let state = master.state(false).await?;
/// println!("{} agents, {} live tasks", state.agents.len(), state.tasks.len());
/// master.kill(&TaskId("sleep-1a2b3c4d".into())).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MasterClient {
    addr: Addr<MasterMsg>,
    timeout: Duration,
}

impl MasterClient {
    /// The master core on node `node`.
    pub fn on(node: impl Into<String>) -> MasterClient {
        MasterClient {
            addr: Addr::on(node, MASTER_PATH),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The master core wherever it is among the connected nodes (this node's own, in
    /// `troupe dev` and on the master's node).
    pub fn any() -> MasterClient {
        MasterClient {
            addr: Addr::new(MASTER_PATH),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same handle with another timeout per call.
    pub fn with_timeout(mut self, timeout: Duration) -> MasterClient {
        self.timeout = timeout;
        self
    }

    /// The cluster's state: agents, frameworks, offers, and the live tasks (`all`: the
    /// ended ones it keeps too).
    pub async fn state(&self, all: bool) -> Result<ClusterState, ClientError> {
        Ok(self
            .addr
            .call(|reply| MasterMsg::State { all, reply }, self.timeout)
            .await?)
    }

    /// The master's summary of itself, cheap enough for health checks.
    pub async fn health(&self) -> Result<MasterHealth, ClientError> {
        Ok(self
            .addr
            .call(|reply| MasterMsg::Health { reply }, self.timeout)
            .await?)
    }

    /// A task as the master sees it, and its agent's node and address.
    pub async fn locate(&self, task: &TaskId) -> Result<TaskLocation, ClientError> {
        let task = task.clone();
        self.addr
            .call(|reply| MasterMsg::Locate { task, reply }, self.timeout)
            .await?
            .map_err(ClientError::from)
    }

    /// Subscribes to the master's event stream (tasks, agents, frameworks as they change).
    pub async fn events(&self) -> Result<crate::events::Events, crate::events::EventsError> {
        crate::events::Events::subscribe(self.addr.clone()).await
    }

    /// Kills a task (its stop signal, its grace period, then SIGKILL): `Sent` to its
    /// agent, or `Deferred` until the agent comes back (the kill is recorded either way).
    /// Returns once the kill is under way; the task's end comes as its status.
    pub async fn kill(&self, task: &TaskId) -> Result<KillAccepted, ClientError> {
        let task = task.clone();
        self.addr
            .call(
                |reply| MasterMsg::Kill {
                    task,
                    grace: None,
                    reply,
                },
                self.timeout,
            )
            .await?
            .map_err(ClientError::from)
    }
}

/// One agent: reached on its node, at `agent/<id>`.
///
/// ```no_run
/// # async fn example() -> Result<(), troupe_actors::client::ClientError> {
/// use troupe_actors::client::{AgentClient, MasterClient};
/// use troupe_actors::protocol::TaskId;
///
/// let master = MasterClient::on("master-1");
/// let task = TaskId("web-1a2b3c4d".into());
/// let location = master.locate(&task).await?;
/// if let Some(agent) = location.agent {
///     let agent = AgentClient::of(&agent);
///     agent.signal(&task, "HUP").await?;
///     for usage in agent.usage().await? {
///         println!("{} pid {} uses {} bytes", usage.task, usage.pid, usage.memory_bytes);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AgentClient {
    node: String,
    addr: Addr<AgentMsg>,
    timeout: Duration,
}

impl AgentClient {
    /// The agent that registered with `info`; its node is made known to this one, so that
    /// the first call can connect to it.
    pub fn of(info: &AgentInfo) -> AgentClient {
        if let (Some(node), Ok(addr)) = (Node::current(), info.addr.parse()) {
            if node.name() != info.node && !node.is_connected(&info.node) {
                node.add_peer(&info.node, addr);
            }
        }
        AgentClient::on(info.node.clone(), &info.id)
    }

    /// Agent `id` on node `node` (already known to this node).
    pub fn on(node: impl Into<String>, id: &AgentId) -> AgentClient {
        let node = node.into();
        AgentClient {
            addr: Addr::on(node.clone(), format!("agent/{id}")),
            node,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same handle with another timeout per call.
    pub fn with_timeout(mut self, timeout: Duration) -> AgentClient {
        self.timeout = timeout;
        self
    }

    /// Resource use of every running task of the agent.
    pub async fn usage(&self) -> Result<Vec<TaskUsage>, ClientError> {
        Ok(self
            .addr
            .call(|reply| AgentMsg::Usage { reply }, self.timeout)
            .await?)
    }

    /// Asks for a task's log stream to be sent to `to` (the path of a
    /// `troupe_os::actor::LogMsg` receiver): from offset `from`, then, with `follow`, live
    /// until the task ends. Works for ended tasks too, while their sandbox is kept.
    pub async fn stream_log(
        &self,
        task: &TaskId,
        stream: Stream,
        from: u64,
        follow: bool,
        to: &str,
    ) -> Result<(), ClientError> {
        let message = AgentMsg::StreamLog {
            task: task.clone(),
            stream,
            from,
            follow,
            to: to.to_string(),
        };
        self.addr
            .send(message)
            .await
            .map_err(|e| ClientError::Call(e.error))
    }

    /// Sends a signal (a name, `TERM` or `SIGUSR1`, or a number) to a task's process on
    /// this agent.
    pub async fn signal(&self, task: &TaskId, signal: &str) -> Result<(), ClientError> {
        let process = Addr::<ProcessMsg>::on(self.node.clone(), format!("task/{task}"));
        let signal = signal.to_string();
        process
            .call(|reply| ProcessMsg::Signal { signal, reply }, self.timeout)
            .await?
            .map_err(ClientError::from)
    }

    /// Writes `bytes` to a task's standard input (one started with a piped stdin).
    pub async fn send_stdin(&self, task: &TaskId, bytes: Vec<u8>) -> Result<(), ClientError> {
        let process = Addr::<ProcessMsg>::on(self.node.clone(), format!("task/{task}"));
        // A send waits for room in the pipe for a while.
        let timeout = self.timeout + troupe_os::stdin::SEND_WITHIN;
        process
            .call(|reply| ProcessMsg::SendStdin { bytes, reply }, timeout)
            .await?
            .map_err(ClientError::from)
    }

    /// Closes a task's standard input.
    pub async fn close_stdin(&self, task: &TaskId) -> Result<(), ClientError> {
        let process = Addr::<ProcessMsg>::on(self.node.clone(), format!("task/{task}"));
        process
            .call(|reply| ProcessMsg::CloseStdin { reply }, self.timeout)
            .await?
            .map_err(ClientError::from)
    }
}

/// The one-shot runner behind `troupe run`, on the master's node.
///
/// ```no_run
/// # async fn example() -> Result<(), troupe_actors::client::ClientError> {
/// use troupe_actors::client::Runner;
/// use troupe_actors::protocol::Resources;
/// use troupe_actors::runner::RunRequest;
///
/// let runner = Runner::on("master-1");
/// let request = RunRequest {
///     name: "hello".into(),
///     command: troupe_os::ProcessSpec::new(["echo", "hello"]),
///     resources: Resources::new(0.1, 64.0),
/// };
/// // No watcher: it runs whether or not anyone follows it (as `troupe run --detach`).
/// let ids = runner.submit(vec![request], None).await?;
/// for queued in runner.queued().await? {
///     println!("{} waits: {}", queued.id, queued.reason);
/// }
/// runner.cancel(&ids).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Runner {
    addr: Addr<RunnerMsg>,
    timeout: Duration,
}

impl Runner {
    /// The runner on the master's node `node`.
    pub fn on(node: impl Into<String>) -> Runner {
        Runner {
            addr: Addr::on(node, RUNNER_PATH),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same handle with another timeout per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Runner {
        self.timeout = timeout;
        self
    }

    /// Submits commands; their task ids, in order. Every state change of their tasks goes
    /// to `watcher` (the path of a `RunnerEvent` receiver), if given, and those still
    /// waiting for resources are cancelled if the watcher goes away.
    pub async fn submit(
        &self,
        requests: Vec<RunRequest>,
        watcher: Option<String>,
    ) -> Result<Vec<TaskId>, ClientError> {
        self.addr
            .call(
                |reply| RunnerMsg::Submit {
                    requests,
                    watcher,
                    reply,
                },
                self.timeout,
            )
            .await?
            .map_err(ClientError::from)
    }

    /// Cancels these tasks if they still wait for resources; the ones cancelled.
    pub async fn cancel(&self, tasks: &[TaskId]) -> Result<Vec<TaskId>, ClientError> {
        let tasks = tasks.to_vec();
        Ok(self
            .addr
            .call(|reply| RunnerMsg::Cancel { tasks, reply }, self.timeout)
            .await?)
    }

    /// The commands waiting for resources, in queue order, each with why it waits.
    pub async fn queued(&self) -> Result<Vec<QueuedTask>, ClientError> {
        Ok(self
            .addr
            .call(|reply| RunnerMsg::Queued { reply }, self.timeout)
            .await?)
    }
}

/// The process service, on the master's node.
///
/// ```no_run
/// # async fn example() -> Result<(), troupe_actors::client::ClientError> {
/// use troupe_actors::client::Processes;
/// use troupe_actors::processes::{Constraint, Needs, Placement, ProcessEnd};
/// use troupe_actors::protocol::Resources;
///
/// let processes = Processes::on("master-1");
/// let needs = Needs {
///     resources: Resources::new(0.5, 128.0),
///     placement: Placement::Constraints(vec![Constraint::parse("rack = r1").unwrap()]),
///     ports: 1,
/// };
/// let web = processes
///     .spawn("web", troupe_os::ProcessSpec::new(["python3", "-m", "http.server", "{port0}"]), needs)
///     .await?;
/// let down = processes.monitor(&web.id).await?;
/// processes.signal(&web.id, "HUP").await?;
/// processes.kill(&web.id).await?;
/// if let Some(ProcessEnd::Exited(how)) = down.wait().await {
///     println!("{} ended: {how}", web.id);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Processes {
    addr: Addr<ProcessesMsg>,
    timeout: Duration,
}

/// A monitor of a process: its one [`ProcessEnd`] comes out of [`ProcessMonitor::wait`].
#[derive(Debug)]
pub struct ProcessMonitor {
    receiver: ractor::ActorRef<ProcessEvent>,
    events: tokio::sync::mpsc::UnboundedReceiver<ProcessEvent>,
    /// The service, the process and the receiver's path, to take the monitor back.
    service: Addr<ProcessesMsg>,
    id: TaskId,
    path: String,
    /// Its end came (nothing to take back).
    fired: bool,
}

impl ProcessMonitor {
    /// Takes the monitor back (the service forgets it); its end will not come.
    pub async fn demonitor(mut self) {
        let message = ProcessesMsg::Demonitor {
            id: self.id.clone(),
            watcher: self.path.clone(),
        };
        let _ = self.service.send(message).await;
        self.fired = true;
    }

    /// Waits for the process's end; `None` if the service went away first.
    pub async fn wait(mut self) -> Option<ProcessEnd> {
        while let Some(ProcessEvent::Down { id, end }) = self.events.recv().await {
            // Only this process's end (a receiver's path could be reused by a later one).
            if id == self.id {
                self.fired = true;
                return Some(end);
            }
        }
        None
    }
}

impl Drop for ProcessMonitor {
    /// A monitor dropped before its end is taken back, so that the service does not keep
    /// it for the process's life.
    fn drop(&mut self) {
        self.receiver.stop(None);
        if !self.fired {
            let message = ProcessesMsg::Demonitor {
                id: self.id.clone(),
                watcher: self.path.clone(),
            };
            let service = self.service.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = service.send(message).await;
                });
            }
        }
    }
}

impl Processes {
    /// The service on the master's node `node`.
    pub fn on(node: impl Into<String>) -> Processes {
        Processes {
            addr: Addr::on(node, PROCESSES_PATH),
            // A spawn waits for a place for up to `PLACE_WITHIN`.
            timeout: PLACE_WITHIN + DEFAULT_TIMEOUT,
        }
    }

    /// The same handle with another timeout per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Processes {
        self.timeout = timeout;
        self
    }

    /// Spawns a process where `needs` allows; answers once it runs, with where, or why it
    /// cannot (refused, not placed in time, did not start).
    pub async fn spawn(
        &self,
        name: &str,
        spec: troupe_os::ProcessSpec,
        needs: Needs,
    ) -> Result<ProcessRef, ClientError> {
        self.spawn_with(name, spec, needs, RestartPolicy::default())
            .await
    }

    /// [`Processes::spawn`], started again by `policy` (OTP's restart types, within its
    /// intensity; on another agent when its agent stays unreachable): its id stays, its
    /// monitors hear of its end only when it is not started again.
    pub async fn spawn_with(
        &self,
        name: &str,
        spec: troupe_os::ProcessSpec,
        needs: Needs,
        policy: RestartPolicy,
    ) -> Result<ProcessRef, ClientError> {
        self.spawn_preferring(name, spec, needs, policy, Preferences::default())
            .await
    }

    /// [`Processes::spawn_with`], with where it would rather run (an agent first, away
    /// from others, off one) and whether a supervisor outside the service decides its fate
    /// (`supervised`: it ends when its agent is lost, rather than being moved).
    pub async fn spawn_preferring(
        &self,
        name: &str,
        spec: troupe_os::ProcessSpec,
        needs: Needs,
        policy: RestartPolicy,
        prefs: Preferences,
    ) -> Result<ProcessRef, ClientError> {
        let name = name.to_string();
        Ok(self
            .addr
            .call(
                |reply| ProcessesMsg::Spawn {
                    name,
                    spec: Box::new(spec),
                    needs,
                    policy,
                    prefs,
                    reply,
                },
                self.timeout,
            )
            .await??)
    }

    /// Has the service take in a process an earlier life of it started (found running in
    /// the master's books after a master restart), under its task's id: answered with where
    /// it runs, or why not ([`ProcessRefused::Ended`] when it ended meanwhile).
    pub async fn adopt(&self, adoption: Adoption) -> Result<ProcessRef, ClientError> {
        Ok(self
            .addr
            .call(
                |reply| ProcessesMsg::Adopt {
                    adoption: Box::new(adoption),
                    reply,
                },
                DEFAULT_TIMEOUT,
            )
            .await??)
    }

    /// Every process the service keeps.
    pub async fn list(&self) -> Result<Vec<ProcessView>, ClientError> {
        self.list_where(ProcessFilter::default()).await
    }

    /// The processes the service keeps that `filter` lets through (the live ones, one
    /// agent's, by name).
    pub async fn list_where(&self, filter: ProcessFilter) -> Result<Vec<ProcessView>, ClientError> {
        Ok(self
            .addr
            .call(
                |reply| ProcessesMsg::List { filter, reply },
                DEFAULT_TIMEOUT,
            )
            .await?)
    }

    /// One process, with its resource use now when it runs (asked of its agent).
    pub async fn get(&self, id: &TaskId) -> Result<ProcessView, ClientError> {
        let mut view = self.view(id).await?;
        if view.state == crate::protocol::TaskState::Running
            && let Ok((task, info)) = self.run_of(id).await
        {
            let usage = AgentClient::of(&info)
                .with_timeout(DEFAULT_TIMEOUT)
                .usage()
                .await
                .unwrap_or_default();
            view.usage = usage.into_iter().find(|u| u.task == task);
        }
        Ok(view)
    }

    /// One process, as the service books it.
    async fn view(&self, id: &TaskId) -> Result<ProcessView, ClientError> {
        let id = id.clone();
        Ok(self
            .addr
            .call(|reply| ProcessesMsg::Get { id, reply }, DEFAULT_TIMEOUT)
            .await??)
    }

    /// Monitors a process: exactly one end comes out of the returned monitor (at once if
    /// it ended already).
    pub async fn monitor(&self, id: &TaskId) -> Result<ProcessMonitor, ClientError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let node = Node::current()
            .map(|n| n.name().to_string())
            .unwrap_or_default();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = format!("processes/monitor/{node}/{n}");
        let (receiver, events) = troupe_runtime::inbox::inbox::<ProcessEvent>(&path)
            .await
            .map_err(|e| ClientError::Local(format!("cannot start a local receiver: {e}")))?;
        let monitor = ProcessMonitor {
            receiver,
            events,
            service: self.addr.clone(),
            id: id.clone(),
            path: path.clone(),
            fired: false,
        };
        let id = id.clone();
        let placed = self
            .addr
            .call(
                |reply| ProcessesMsg::Monitor {
                    id,
                    watcher: path,
                    reply,
                },
                DEFAULT_TIMEOUT,
            )
            .await?;
        placed?;
        Ok(monitor)
    }

    /// Links the local actor `actor` with process `id`, both ways, as Erlang links: when
    /// the process ends for good other than with exit code 0, the actor is stopped with a
    /// reason that says how; when the actor stops abnormally (not `normal`, not
    /// `shutdown`), the process is killed. [`ProcessLink::unlink`] takes it back. (An actor
    /// that wants the end as a message, not a stop, monitors the process instead.)
    pub async fn link(
        &self,
        actor: &ractor::ActorCell,
        id: &TaskId,
    ) -> Result<ProcessLink, ClientError> {
        let process = self.monitor(id).await?;
        let (watch, actor_down) = watch_actor(actor).await?;
        let (processes, cell, pid) = (self.clone(), actor.clone(), id.clone());
        let watch_ref = std::sync::Arc::new(std::sync::Mutex::new(watch.clone()));
        let current_watch = watch_ref.clone();
        let task = tokio::spawn(async move {
            let ended = process.wait();
            tokio::pin!(ended);
            let mut actor_down = actor_down;
            loop {
                tokio::select! {
                    end = &mut ended => {
                        match end {
                            Some(ProcessEnd::Exited(troupe_os::ExitReason::Exited(0))) | None => {}
                            Some(end) => {
                                cell.stop(Some(format!("linked process {pid} ended: {end:?}")));
                            }
                        }
                        return;
                    }
                    down = &mut actor_down => {
                        let Ok(down) = down else { return };
                        match down.reason {
                            // The watch was lost with this node's kernel, not the actor:
                            // watch it again.
                            troupe_runtime::DownReason::Lost(_) => match watch_actor(&cell).await {
                                Ok((again, down)) => {
                                    *current_watch.lock().unwrap_or_else(|p| p.into_inner()) = again;
                                    actor_down = down;
                                }
                                Err(_) => return,
                            },
                            troupe_runtime::DownReason::Normal
                            | troupe_runtime::DownReason::Shutdown => return,
                            _ => {
                                let _ = processes.kill(&pid).await;
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(ProcessLink {
            task,
            watch: watch_ref,
        })
    }

    /// Kills a process for good (its stop signal, its own grace, then SIGKILL); returns
    /// once the kill is under way. Its end comes to its monitors; it is not started again.
    pub async fn kill(&self, id: &TaskId) -> Result<(), ClientError> {
        self.stop_within(id, None).await
    }

    /// Stops a process for good with this grace between its stop signal and SIGKILL
    /// (zero: SIGKILL at once), whatever its spec said; returns once the stop is under way.
    pub async fn stop(&self, id: &TaskId, grace: Duration) -> Result<(), ClientError> {
        self.stop_within(id, Some(grace)).await
    }

    async fn stop_within(&self, id: &TaskId, grace: Option<Duration>) -> Result<(), ClientError> {
        let id = id.clone();
        Ok(self
            .addr
            .call(
                |reply| ProcessesMsg::Kill { id, grace, reply },
                DEFAULT_TIMEOUT,
            )
            .await??)
    }

    /// A process's standard output or error, from offset `from`: what is there, then, with
    /// `follow`, live until it ends. Works for ended processes too, while their agent keeps
    /// the sandbox.
    pub async fn logs(
        &self,
        id: &TaskId,
        stream: Stream,
        from: u64,
        follow: bool,
    ) -> Result<ProcessLogs, ClientError> {
        let (task, info) = self.run_of(id).await?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let node = Node::current()
            .map(|n| n.name().to_string())
            .unwrap_or_default();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = format!("processes/logs/{node}/{n}");
        let (receiver, chunks) = troupe_runtime::inbox::inbox::<LogMsg>(&path)
            .await
            .map_err(|e| ClientError::Local(format!("cannot start a local receiver: {e}")))?;
        AgentClient::of(&info)
            .with_timeout(DEFAULT_TIMEOUT)
            .stream_log(&task, stream, from, follow, &path)
            .await?;
        Ok(ProcessLogs {
            receiver,
            chunks,
            next: from,
            ended: false,
        })
    }

    /// All a process wrote to `stream`, once it ended (or what is there so far).
    pub async fn output(&self, id: &TaskId, stream: Stream) -> Result<Vec<u8>, ClientError> {
        let mut logs = self.logs(id, stream, 0, false).await?;
        let mut out = Vec::new();
        while let Some(bytes) = logs.next(DEFAULT_TIMEOUT).await {
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    /// A process's current run (its task) and the agent it was placed on, where it is;
    /// refused while it waits for a place (it runs nowhere).
    async fn run_of(&self, id: &TaskId) -> Result<(TaskId, AgentInfo), ClientError> {
        let view = self.view(id).await?;
        let agent = view
            .agent
            .ok_or_else(|| ProcessRefused::NotRunning { id: id.clone() })?;
        let info = MasterClient::any()
            .state(false)
            .await?
            .agents
            .into_iter()
            .find(|a| a.info.id == agent)
            .map(|a| a.info)
            .ok_or_else(|| ProcessRefused::NotRunning { id: id.clone() })?;
        Ok((view.task, info))
    }

    /// The current run of a running process and its agent's handle; refused with
    /// `Ended` for one that ended.
    async fn running_run(&self, id: &TaskId) -> Result<(TaskId, AgentClient), ClientError> {
        if self.view(id).await?.end.is_some() {
            return Err(ProcessRefused::Ended { id: id.clone() }.into());
        }
        let (task, info) = self.run_of(id).await?;
        Ok((task, AgentClient::of(&info).with_timeout(DEFAULT_TIMEOUT)))
    }

    /// Writes `bytes` to a running process's standard input (spawned with
    /// `ProcessSpec::stdin_pipe`): a process's mailbox is its input. Sends arrive in order.
    pub async fn send(&self, id: &TaskId, bytes: Vec<u8>) -> Result<(), ClientError> {
        let (task, agent) = self.running_run(id).await?;
        agent.send_stdin(&task, bytes).await
    }

    /// Closes a running process's standard input: it reads the end after what was sent.
    pub async fn close_stdin(&self, id: &TaskId) -> Result<(), ClientError> {
        let (task, agent) = self.running_run(id).await?;
        agent.close_stdin(&task).await
    }

    /// Sends a signal (a name, `TERM`, or a number) to a running process's current run, on
    /// its agent.
    pub async fn signal(&self, id: &TaskId, signal: &str) -> Result<(), ClientError> {
        let (task, agent) = self.running_run(id).await?;
        agent.signal(&task, signal).await
    }
}

/// Monitors a local actor: the monitor, and where its `Down` comes.
async fn watch_actor(
    actor: &ractor::ActorCell,
) -> Result<
    (
        troupe_runtime::Ref,
        tokio::sync::oneshot::Receiver<troupe_runtime::Down>,
    ),
    ClientError,
> {
    let (gone, down) = tokio::sync::oneshot::channel();
    let watch = troupe_runtime::monitor_cell(actor, move |d| {
        let _ = gone.send(d);
    })
    .await
    .map_err(|e| ClientError::Local(format!("cannot watch the actor: {e}")))?;
    Ok((watch, down))
}

/// A link between a local actor and a process (see [`Processes::link`]). It lasts until
/// one end goes or [`ProcessLink::unlink`]; dropping the handle keeps it, as an Erlang link
/// outlives the call that made it.
#[derive(Debug)]
pub struct ProcessLink {
    task: tokio::task::JoinHandle<()>,
    /// The monitor of the actor now (placed again if the kernel restarted).
    watch: std::sync::Arc<std::sync::Mutex<troupe_runtime::Ref>>,
}

impl ProcessLink {
    /// Takes the link back at both ends: neither end's going touches the other.
    pub fn unlink(self) {
        self.task.abort();
        troupe_runtime::demonitor(&self.watch.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A process's log stream, as its agent sends it: the bytes in order, each once.
#[derive(Debug)]
pub struct ProcessLogs {
    receiver: ractor::ActorRef<LogMsg>,
    chunks: tokio::sync::mpsc::UnboundedReceiver<LogMsg>,
    /// The offset of the next byte wanted.
    next: u64,
    ended: bool,
}

impl ProcessLogs {
    /// The next bytes, or `None` once the stream ended (or nothing came within `wait`).
    pub async fn next(&mut self, wait: Duration) -> Option<Vec<u8>> {
        while !self.ended {
            let message = tokio::time::timeout(wait, self.chunks.recv())
                .await
                .ok()??;
            match message {
                LogMsg::Chunk { chunk, .. } => {
                    let end = chunk.offset + chunk.bytes.len() as u64;
                    if end <= self.next {
                        continue;
                    }
                    let skip = self.next.saturating_sub(chunk.offset) as usize;
                    self.next = end;
                    return Some(chunk.bytes[skip.min(chunk.bytes.len())..].to_vec());
                }
                LogMsg::End { .. } | LogMsg::Gone { .. } => self.ended = true,
            }
        }
        None
    }
}

impl Drop for ProcessLogs {
    fn drop(&mut self) {
        self.receiver.stop(None);
    }
}

/// How long a node has to answer for [`cluster_tree`].
const INSPECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The cluster's actor tree: one entry per node (what `troupe tree --json` prints).
#[derive(Debug, Serialize)]
pub struct ClusterTree {
    /// The nodes, the master's first.
    pub nodes: Vec<NodeTree>,
}

/// One node: what it is in the cluster, and its snapshot or why there is none.
#[derive(Debug, Serialize)]
pub struct NodeTree {
    /// Its name.
    pub node: String,
    /// Its address, when known.
    pub addr: Option<String>,
    /// What runs there: `master`, `agent <id>`...
    pub roles: Vec<String>,
    /// Whether it answered.
    pub reachable: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// What its inspector said.
    pub snapshot: Option<NodeSnapshot>,
}

/// One node's entry: its inspector's snapshot, or why it did not answer.
pub async fn node_tree(node: &str, roles: Vec<String>, addr: Option<String>) -> NodeTree {
    match inspect(node, INSPECT_TIMEOUT).await {
        Ok(snapshot) => NodeTree {
            node: node.to_string(),
            addr,
            roles,
            reachable: true,
            error: None,
            snapshot: Some(snapshot),
        },
        Err(e) => NodeTree {
            node: node.to_string(),
            addr,
            roles,
            reachable: false,
            error: Some(e.to_string()),
            snapshot: None,
        },
    }
}

/// Every node of the cluster the master knows (its own, each agent's) with its snapshot,
/// asked for all at once; `master_addr` is how the master was reached. A node that does
/// not answer is in it, unreachable, with the reason.
pub async fn cluster_tree(
    node: &Node,
    state: &ClusterState,
    master_addr: Option<String>,
) -> ClusterTree {
    // Node → its address and what runs there, the master first.
    let mut nodes: BTreeMap<String, (Option<String>, Vec<String>)> = BTreeMap::new();
    nodes
        .entry(state.master.clone())
        .or_insert((master_addr, Vec::new()))
        .1
        .push("master".into());
    for agent in &state.agents {
        if agent.info.node != state.master && agent.info.node != node.name() {
            if let Ok(addr) = agent.info.addr.parse() {
                node.add_peer(&agent.info.node, addr);
            }
        }
        let entry = nodes
            .entry(agent.info.node.clone())
            .or_insert((Some(agent.info.addr.clone()), Vec::new()));
        let note = if agent.reachable {
            ""
        } else {
            " (unreachable)"
        };
        entry.1.push(format!("agent {}{note}", agent.info.id));
    }
    let asks: Vec<_> = nodes
        .into_iter()
        .map(|(node, (addr, roles))| {
            tokio::spawn(async move { node_tree(&node, roles, addr).await })
        })
        .collect();
    let mut out = Vec::with_capacity(asks.len());
    for ask in asks {
        if let Ok(tree) = ask.await {
            out.push(tree);
        }
    }
    ClusterTree { nodes: out }
}
