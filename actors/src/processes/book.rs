//! The process service's book: the spawns waiting for a place, the processes launched and
//! running, who monitors each, and how each ended. It decides; the service acts (answers,
//! launches, tells monitors), which keeps this part testable alone.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_runtime::supervisor::Restart;

use crate::protocol::{AgentId, OfferInfo, PortRange, TaskId, TaskInfo, TaskState, TaskStatus};

/// When a process is started again, and how often at most: OTP's restart type, intensity
/// and period, and how long its agent may be unreachable before it is started elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// `temporary`: never; `transient`: when it ended abnormally; `permanent`: always.
    pub restart: Restart,
    /// At most this many restarts within `period`; one more and the service gives up.
    pub intensity: u32,
    /// See `intensity`.
    #[serde(with = "troupe_runtime::codec::millis")]
    pub period: Duration,
    /// How long its agent may be unreachable before it is started on another one (the copy
    /// left there is killed when that agent comes back).
    #[serde(with = "troupe_runtime::codec::millis")]
    pub move_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            restart: Restart::Temporary,
            intensity: 3,
            period: Duration::from_secs(5),
            move_after: Duration::from_secs(3),
        }
    }
}

impl RestartPolicy {
    /// A policy of this restart type, with the default intensity, period and move time.
    pub fn of(restart: Restart) -> RestartPolicy {
        RestartPolicy {
            restart,
            ..RestartPolicy::default()
        }
    }
}

/// How long a process restarted after a crash waits for its own agent before it takes
/// another.
const SAME_AGENT_FOR_MS: u64 = 2_000;

/// How long a process moved off a lost agent keeps off it (the agent is not offered while
/// unreachable anyway; once back, the copy left there is killed first). After that, the
/// agent is a place like any other (it may be the only one).
const AVOID_LOST_AGENT_FOR_MS: u64 = 10_000;

/// Where a process may run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// On any agent with room.
    #[default]
    Any,
    /// On this agent only.
    Agent(AgentId),
    /// On an agent whose attributes (and `host`, its host name) meet every constraint.
    Constraints(Vec<Constraint>),
}

/// One placement constraint: an agent attribute (or `host`) compared with a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// The attribute (`rack`), or `host`.
    pub key: String,
    /// Equal (`=`) or not (`!=`).
    pub equal: bool,
    /// The value.
    pub value: String,
}

impl Constraint {
    /// Reads `KEY = VALUE` or `KEY != VALUE` (spaces optional).
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let (key, equal, value) = if let Some((k, v)) = text.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = text.split_once('=') {
            (k, true, v)
        } else {
            return Err(format!(
                "{text:?} is not a constraint: write KEY = VALUE or KEY != VALUE"
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(format!("{text:?} needs a key and a value"));
        }
        Ok(Constraint {
            key: key.to_string(),
            equal,
            value: value.to_string(),
        })
    }

    /// Whether an agent of this host and these attributes meets it.
    pub fn holds(&self, hostname: &str, attributes: &BTreeMap<String, String>) -> bool {
        let actual = if self.key == "host" {
            Some(hostname)
        } else {
            attributes.get(&self.key).map(String::as_str)
        };
        (actual == Some(self.value.as_str())) == self.equal
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = if self.equal { "=" } else { "!=" };
        write!(f, "{} {op} {}", self.key, self.value)
    }
}

impl Placement {
    /// Whether an offer's agent is a place for it.
    pub fn allows(&self, offer: &OfferInfo) -> bool {
        self.allows_agent(&offer.agent, &offer.hostname, &offer.attributes)
    }

    /// Whether an agent (its id, host and attributes) is a place for it.
    pub fn allows_agent(
        &self,
        agent: &AgentId,
        hostname: &str,
        attributes: &BTreeMap<String, String>,
    ) -> bool {
        match self {
            Placement::Any => true,
            Placement::Agent(id) => agent == id,
            Placement::Constraints(all) => all.iter().all(|c| c.holds(hostname, attributes)),
        }
    }
}

/// Where a spawn would rather run, beyond where it may (its placement): what a supervisor
/// of processes asks of the service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// An agent it waits for first, a short while (its own, after a crash).
    #[serde(default)]
    pub prefer: Option<AgentId>,
    /// Agents it takes only when no other came for a short while (its replicas' agents:
    /// replicas spread over agents).
    #[serde(default)]
    pub spread_from: Vec<AgentId>,
    /// An agent it keeps off for a while (the one it was lost with).
    #[serde(default)]
    pub avoid: Option<AgentId>,
    /// Supervised from outside: when its agent stays unreachable past its policy's
    /// `move_after`, it ends (its end: the agent lost) for its supervisor to start it
    /// elsewhere, and the copy left there is killed when the agent comes back.
    #[serde(default)]
    pub supervised: bool,
}

/// What a spawn asks for besides its task: where, how it restarts, what it would rather,
/// and how many ports.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Asked {
    pub(crate) placement: Placement,
    pub(crate) policy: RestartPolicy,
    pub(crate) prefs: Preferences,
    pub(crate) ports: u16,
}

/// Where a process is in its life, as the book knows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    /// Waiting for an offer it fits in, until the deadline (ms since the Unix epoch).
    Waiting { deadline_ms: u64 },
    /// Launched on an agent, not yet running.
    Launched { agent: AgentId },
    /// Running there.
    Running { agent: AgentId, pid: Option<i32> },
    /// Ended: its last status.
    Ended { status: Box<TaskStatus> },
}

/// One process of the book; `R` answers its spawn, `W` reaches a monitor.
#[derive(Debug)]
pub(crate) struct Proc<R, W> {
    /// What runs: its id is the current incarnation's task id.
    pub(crate) task: TaskInfo,
    pub(crate) placement: Placement,
    pub(crate) phase: Phase,
    /// The process's own id (its first incarnation's task id), which stays.
    pub(crate) id: TaskId,
    pub(crate) policy: RestartPolicy,
    /// 1 for the first run, and one more for each restart.
    pub(crate) incarnation: u32,
    /// When it was restarted (ms), within the policy's period.
    pub(crate) recent_restarts: VecDeque<u64>,
    /// Asked to stop: its end is its end.
    pub(crate) stopping: bool,
    /// The agent a restart waits for first, until when (ms): its own, after a crash.
    pub(crate) prefer: Option<(AgentId, u64)>,
    /// An agent a restart does not take, until when (ms): the one it was lost with, while
    /// the copy left there is being killed on its return.
    pub(crate) avoid: Option<(AgentId, u64)>,
    /// Since when (ms) its agent is unreachable.
    pub(crate) unreachable_since: Option<u64>,
    /// Why it was last restarted, for people.
    pub(crate) last_restart: Option<String>,
    /// Whom to answer once it runs (or could not be placed or started).
    pub(crate) reply: Option<R>,
    /// Who hears of its end, once each.
    pub(crate) monitors: Vec<W>,
    /// When it was spawned (ms since the Unix epoch).
    pub(crate) spawned_ms: u64,
    /// The command as asked (`{port0}`... not yet replaced): each run gets its own ports.
    pub(crate) template: troupe_os::ProcessSpec,
    /// How many ports it asks for.
    pub(crate) ports_wanted: u16,
    /// The ports of its current run, from its agent's range.
    pub(crate) ports: Vec<u16>,
    /// Agents it takes only when no other came, until when (ms).
    pub(crate) spread_from: Option<(Vec<AgentId>, u64)>,
    /// Ended by the service when its agent is lost, for its supervisor to decide.
    pub(crate) supervised: bool,
}

impl<R, W> Proc<R, W> {
    /// A process of `task` as asked, in `phase`, with no one to answer yet.
    fn new(task: TaskInfo, asked: Asked, phase: Phase, now_ms: u64) -> Proc<R, W> {
        let Asked {
            placement,
            policy,
            prefs,
            ports,
        } = asked;
        let a_while = now_ms + SAME_AGENT_FOR_MS;
        Proc {
            id: task.id.clone(),
            template: task.command.clone(),
            task,
            placement,
            phase,
            reply: None,
            monitors: Vec::new(),
            spawned_ms: now_ms,
            policy,
            incarnation: 1,
            recent_restarts: VecDeque::new(),
            stopping: false,
            prefer: prefs.prefer.map(|agent| (agent, a_while)),
            avoid: prefs
                .avoid
                .map(|agent| (agent, now_ms + AVOID_LOST_AGENT_FOR_MS)),
            unreachable_since: None,
            last_restart: None,
            ports_wanted: ports,
            ports: Vec::new(),
            spread_from: (!prefs.spread_from.is_empty()).then_some((prefs.spread_from, a_while)),
            supervised: prefs.supervised,
        }
    }
}

/// A spawn that waited past its deadline, ended.
#[derive(Debug)]
pub(crate) struct Overdue<R, W> {
    pub(crate) reply: Option<R>,
    pub(crate) task: TaskInfo,
    pub(crate) placement: Placement,
    pub(crate) monitors: Vec<W>,
    pub(crate) status: TaskStatus,
}

/// What a status means for the service to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Heard<R, W> {
    /// It runs: answer the spawn (with the process's id and agent).
    Running(Option<R>, TaskId, AgentId),
    /// It ended for good: answer the spawn if it never ran, and tell the monitors (the
    /// process's id, and its last status).
    Ended(Option<R>, Vec<W>, TaskId),
    /// It ended and is started again (a new incarnation waits for a place).
    Restarted,
    /// A copy of an earlier incarnation runs (its agent came back after the process was
    /// started elsewhere): kill that task.
    Fence(TaskId),
    /// Nothing to do.
    Nothing,
}

/// What asking a process to stop does.
#[derive(Debug)]
pub(crate) enum Stopped<R, W> {
    /// Kill this task (its current run).
    Kill(TaskId),
    /// It waited for a place and ended now: tell as for any end.
    Ended(Heard<R, W>, Box<TaskStatus>),
    /// It ended already, or is unknown.
    Nothing,
}

/// What [`Book::move_lost`] decided: tasks to kill (left behind on unreachable agents),
/// and supervised processes ended (to tell as for any end).
#[derive(Debug)]
pub(crate) struct Lost<R, W> {
    pub(crate) kill: Vec<TaskId>,
    pub(crate) ended: Vec<(Heard<R, W>, TaskStatus)>,
}

/// `n` ports of `range` not in `held`, starting at a place the task's id picks (so that a
/// process started again is likely to get other ports than a stray binder holds), or none
/// if the range has not that many free.
fn free_ports(
    range: PortRange,
    held: &std::collections::BTreeSet<u16>,
    n: u16,
    task: &TaskId,
) -> Option<Vec<u16>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let len = range.len() as u64;
    // FNV-1a of the id: a stable, spread-out start.
    let start = task.0.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) % len;
    let ports: Vec<u16> = (0..len)
        .map(|i| range.first + ((start + i) % len) as u16)
        .filter(|port| !held.contains(port))
        .take(usize::from(n))
        .collect();
    (ports.len() == usize::from(n)).then_some(ports)
}

/// The command with its ports: `{port0}`... in its arguments, `PORT0`... in its environment.
fn with_ports(template: &troupe_os::ProcessSpec, ports: &[u16]) -> troupe_os::ProcessSpec {
    let mut spec = template.clone();
    if ports.is_empty() {
        return spec;
    }
    for arg in &mut spec.argv {
        for (i, port) in ports.iter().enumerate() {
            *arg = arg.replace(&format!("{{port{i}}}"), &port.to_string());
        }
    }
    for (i, port) in ports.iter().enumerate() {
        spec.env.insert(format!("PORT{i}"), port.to_string());
    }
    spec
}

/// The book.
#[derive(Debug)]
pub(crate) struct Book<R, W> {
    procs: BTreeMap<TaskId, Proc<R, W>>,
    /// Every incarnation's task id, to its process's id.
    tasks: BTreeMap<TaskId, TaskId>,
    /// The waiting ones, in spawn order.
    queue: VecDeque<TaskId>,
    /// Ended processes kept for `get` and `list`, oldest first, at most [`ENDED_KEPT`].
    ended: VecDeque<TaskId>,
    /// The latest status of each task of the service's framework that the book does not
    /// know (run by an earlier life of the service, before a master restart), until it is
    /// adopted; at most [`ENDED_KEPT`], oldest forgotten first.
    orphans: BTreeMap<TaskId, TaskStatus>,
}

/// How many ended processes the book keeps.
pub(crate) const ENDED_KEPT: usize = 1_000;

impl<R, W> Default for Book<R, W> {
    fn default() -> Self {
        Book {
            procs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            queue: VecDeque::new(),
            ended: VecDeque::new(),
            orphans: BTreeMap::new(),
        }
    }
}

impl<R, W> Book<R, W> {
    /// A spawn, waiting for a place until `deadline_ms`.
    pub(crate) fn spawn(
        &mut self,
        task: TaskInfo,
        asked: Asked,
        now_ms: u64,
        deadline_ms: u64,
        reply: R,
    ) {
        self.queue.push_back(task.id.clone());
        self.tasks.insert(task.id.clone(), task.id.clone());
        let p = Proc::new(task, asked, Phase::Waiting { deadline_ms }, now_ms);
        let p = Proc {
            reply: Some(reply),
            ..p
        };
        self.procs.insert(p.id.clone(), p);
    }

    /// Takes in a process an earlier life of the service started (found running through
    /// the master's books after a restart): it runs on `agent` with `ports`, under its
    /// task's id. `Err` with its last status when it has ended since (or the id is taken).
    pub(crate) fn adopt(
        &mut self,
        task: TaskInfo,
        agent: AgentId,
        pid: Option<i32>,
        asked: Asked,
        now_ms: u64,
    ) -> Result<(), Option<Box<TaskStatus>>> {
        if self.procs.contains_key(&task.id) {
            return Err(None);
        }
        let heard = self.orphans.remove(&task.id);
        if let Some(status) = heard.as_ref().filter(|s| s.state.is_terminal()) {
            return Err(Some(Box::new(status.clone())));
        }
        let pid = heard.and_then(|s| s.pid).or(pid);
        self.tasks.insert(task.id.clone(), task.id.clone());
        let p = Proc::new(task, asked, Phase::Running { agent, pid }, now_ms);
        let p = Proc {
            last_restart: Some("adopted after a restart of the master".into()),
            ..p
        };
        self.procs.insert(p.id.clone(), p);
        Ok(())
    }

    /// Sets the ports of an adopted process (read back from its command line).
    pub(crate) fn set_ports(&mut self, id: &TaskId, ports: Vec<u16>) {
        if let Some(p) = self.procs.get_mut(id) {
            p.ports = ports;
        }
    }

    /// The ports held by the live processes on `agent`.
    fn ports_held(&self, agent: &AgentId) -> std::collections::BTreeSet<u16> {
        self.procs
            .values()
            .filter(|p| match &p.phase {
                Phase::Launched { agent: a } | Phase::Running { agent: a, .. } => a == agent,
                _ => false,
            })
            .flat_map(|p| p.ports.iter().copied())
            .collect()
    }

    /// Starts `id` again as its next incarnation (a new task id), waiting for a place with
    /// no deadline, preferring `prefer` for a while, never on `avoid`.
    fn restart(
        &mut self,
        id: &TaskId,
        why: String,
        now_ms: u64,
        prefer: Option<AgentId>,
        avoid: Option<AgentId>,
    ) {
        let Some(p) = self.procs.get_mut(id) else {
            return;
        };
        p.incarnation += 1;
        p.recent_restarts.push_back(now_ms);
        let task_id = TaskId(format!("{}.{}", p.id, p.incarnation));
        p.task.id = task_id.clone();
        p.phase = Phase::Waiting {
            deadline_ms: u64::MAX,
        };
        p.prefer = prefer.map(|agent| (agent, now_ms + SAME_AGENT_FOR_MS));
        p.avoid = avoid.map(|agent| (agent, now_ms + AVOID_LOST_AGENT_FOR_MS));
        p.unreachable_since = None;
        p.ports.clear();
        p.last_restart = Some(why);
        self.tasks.insert(task_id, id.clone());
        self.queue.push_back(id.clone());
    }

    /// Whether the policy lets `p` start again now, within its intensity.
    fn may_restart(p: &mut Proc<R, W>, now_ms: u64) -> bool {
        let period = p.policy.period.as_millis() as u64;
        while p
            .recent_restarts
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) > period)
        {
            p.recent_restarts.pop_front();
        }
        (p.recent_restarts.len() as u32) < p.policy.intensity
    }

    /// Asks `id` to stop for good: its end, when it comes, is its end. One that runs (or
    /// was launched) gives the task to kill; one that waits for a place ends now, killed.
    pub(crate) fn stop(&mut self, id: &TaskId, now_ms: u64) -> Stopped<R, W> {
        let Some(p) = self.procs.get_mut(id) else {
            return Stopped::Nothing;
        };
        p.stopping = true;
        match &p.phase {
            Phase::Ended { .. } => Stopped::Nothing,
            Phase::Waiting { .. } => {
                let mut status = TaskStatus::new(
                    p.task.id.clone(),
                    TaskState::Killed,
                    crate::protocol::Source::Master,
                    now_ms,
                );
                status.reason = "killed while it waited for a place".into();
                status.exit = Some(troupe_os::ExitReason::Killed);
                let heard = self.end(id, status.clone());
                Stopped::Ended(heard, Box::new(status))
            }
            _ => Stopped::Kill(p.task.id.clone()),
        }
    }

    /// The processes whose agent has been unreachable longer than their `move_after`,
    /// started again elsewhere (with restarts left): the tasks left behind, to kill (the
    /// kill waits for their agent: the master delivers it when the agent comes back).
    pub(crate) fn move_lost(&mut self, now_ms: u64) -> Lost<R, W> {
        let mut out = Lost {
            kill: Vec::new(),
            ended: Vec::new(),
        };
        let overdue = |p: &Proc<R, W>| {
            let since = p.unreachable_since?;
            let agent = match &p.phase {
                Phase::Running { agent, .. } | Phase::Launched { agent } => agent.clone(),
                _ => return None,
            };
            (now_ms.saturating_sub(since) >= p.policy.move_after.as_millis() as u64)
                .then_some(agent)
        };
        // A supervised process ends: its supervisor decides where it goes next.
        let ended: Vec<(TaskId, TaskId, AgentId)> = self
            .procs
            .values()
            .filter(|p| p.supervised && p.reply.is_none() && !p.stopping)
            .filter_map(|p| Some((p.id.clone(), p.task.id.clone(), overdue(p)?)))
            .collect();
        for (id, task, agent) in ended {
            let mut status = TaskStatus::new(
                task.clone(),
                TaskState::Gone,
                crate::protocol::Source::Master,
                now_ms,
            );
            status.agent = Some(agent.clone());
            status.reason = format!(
                "its agent {agent} was unreachable too long: the copy there is killed when the agent comes back"
            );
            let heard = self.end(&id, status.clone());
            out.kill.push(task);
            out.ended.push((heard, status));
        }
        let lost: Vec<(TaskId, TaskId, AgentId)> = self
            .procs
            .values()
            .filter_map(|p| {
                let agent = overdue(p)?;
                // A spawn not answered yet is not moved (its caller holds no id yet), nor
                // one that may run on that agent only.
                let movable = p.reply.is_none() && !matches!(p.placement, Placement::Agent(_));
                (movable && !p.stopping && p.policy.restart != Restart::Temporary)
                    .then(|| (p.id.clone(), p.task.id.clone(), agent))
            })
            .collect();
        for (id, task, agent) in lost {
            let allowed = self
                .procs
                .get_mut(&id)
                .is_some_and(|p| Self::may_restart(p, now_ms));
            if !allowed {
                continue;
            }
            let why = format!("its agent {agent} was unreachable: started elsewhere");
            self.restart(&id, why, now_ms, None, Some(agent));
            out.kill.push(task);
        }
        out
    }

    /// Whether any spawn waits.
    pub(crate) fn waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Takes, in spawn order, the waiting processes the offer's agent is a place for and
    /// that fit together in it.
    pub(crate) fn fill(&mut self, offer: &OfferInfo, now_ms: u64) -> Vec<TaskInfo> {
        let mut left = offer.resources;
        let mut held = self.ports_held(&offer.agent);
        let mut launch = Vec::new();
        let mut keep = VecDeque::new();
        while let Some(id) = self.queue.pop_front() {
            let Some(p) = self.procs.get_mut(&id) else {
                continue;
            };
            let preferred = match &p.prefer {
                Some((agent, until)) if now_ms < *until => agent == &offer.agent,
                _ => true,
            };
            let avoided = matches!(&p.avoid, Some((agent, until)) if agent == &offer.agent && now_ms < *until);
            let spread = match &p.spread_from {
                Some((agents, until)) if now_ms < *until => !agents.contains(&offer.agent),
                _ => true,
            };
            if !(p.placement.allows(offer)
                && preferred
                && !avoided
                && spread
                && left.contains(&p.task.resources))
            {
                keep.push_back(id);
                continue;
            }
            let Some(ports) = free_ports(offer.ports, &held, p.ports_wanted, &p.task.id) else {
                keep.push_back(id);
                continue;
            };
            held.extend(ports.iter().copied());
            left = left.minus(p.task.resources);
            p.task.command = with_ports(&p.template, &ports);
            p.ports = ports;
            p.phase = Phase::Launched {
                agent: offer.agent.clone(),
            };
            launch.push(p.task.clone());
        }
        self.queue = keep;
        launch
    }

    /// The waiting spawns past their deadline, ended (never ran): their replies, tasks and
    /// placements, and their monitors with the end to tell them.
    pub(crate) fn overdue(&mut self, now_ms: u64) -> Vec<Overdue<R, W>> {
        let late: Vec<TaskId> = self
            .queue
            .iter()
            .filter(|id| {
                self.procs.get(*id).is_some_and(
                    |p| matches!(p.phase, Phase::Waiting { deadline_ms } if deadline_ms <= now_ms),
                )
            })
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in late {
            let Some(p) = self.procs.get(&id) else {
                continue;
            };
            let (task, placement) = (p.task.clone(), p.placement.clone());
            let mut status = TaskStatus::new(
                task.id.clone(),
                TaskState::Dropped,
                crate::protocol::Source::Master,
                now_ms,
            );
            status.reason = "no agent took it in time".into();
            if let Heard::Ended(reply, monitors, _) = self.end(&id, status.clone()) {
                out.push(Overdue {
                    reply,
                    task,
                    placement,
                    monitors,
                    status,
                });
            }
        }
        out
    }

    /// Books a status of one of its processes' tasks.
    pub(crate) fn heard(&mut self, status: &TaskStatus, now_ms: u64) -> Heard<R, W> {
        let Some(id) = self.tasks.get(&status.task).cloned() else {
            // Not one of this life's: kept, for an adoption to come.
            if !self.procs.contains_key(&status.task) {
                self.orphans.insert(status.task.clone(), status.clone());
                while self.orphans.len() > ENDED_KEPT {
                    let oldest = self
                        .orphans
                        .iter()
                        .min_by_key(|(_, s)| s.timestamp_ms)
                        .map(|(id, _)| id.clone());
                    if let Some(oldest) = oldest {
                        self.orphans.remove(&oldest);
                    }
                }
            }
            return Heard::Nothing;
        };
        let Some(p) = self.procs.get_mut(&id) else {
            return Heard::Nothing;
        };
        if p.task.id != status.task {
            // An earlier incarnation: if it runs (its agent came back), it must not.
            return match status.state {
                s if s.is_terminal() => {
                    self.tasks.remove(&status.task);
                    Heard::Nothing
                }
                TaskState::Running | TaskState::Starting | TaskState::Staging => {
                    Heard::Fence(status.task.clone())
                }
                _ => Heard::Nothing,
            };
        }
        if matches!(p.phase, Phase::Ended { .. }) {
            return Heard::Nothing;
        }
        if status.state == TaskState::Unreachable {
            p.unreachable_since.get_or_insert(now_ms);
            return Heard::Nothing;
        }
        if status.state == TaskState::Running {
            p.unreachable_since = None;
            let agent = match (&p.phase, &status.agent) {
                (_, Some(agent)) => agent.clone(),
                (Phase::Launched { agent } | Phase::Running { agent, .. }, None) => agent.clone(),
                _ => return Heard::Nothing,
            };
            let pid = status.pid.or(match &p.phase {
                Phase::Running { pid, .. } => *pid,
                _ => None,
            });
            p.phase = Phase::Running {
                agent: agent.clone(),
                pid,
            };
            return Heard::Running(p.reply.take(), p.id.clone(), agent);
        }
        if !status.state.is_terminal() {
            return Heard::Nothing;
        }
        // Started again, by its policy, if it ran (a spawn that never ran is answered with
        // why instead) and was not asked to stop, within its intensity.
        let normal = matches!(status.exit, Some(troupe_os::ExitReason::Exited(0)))
            || status.state == TaskState::Finished;
        let wanted = match p.policy.restart {
            Restart::Temporary => false,
            Restart::Transient => !normal,
            Restart::Permanent => true,
        };
        if wanted && !p.stopping && p.reply.is_none() {
            if Self::may_restart(p, now_ms) {
                let lost = status.state == TaskState::Gone;
                let agent = status.agent.clone();
                let why = format!(
                    "{}: {}",
                    status.state.to_string().to_lowercase(),
                    status.reason
                );
                let (prefer, avoid) = if lost { (None, agent) } else { (agent, None) };
                self.restart(&id, why, now_ms, prefer, avoid);
                self.tasks.remove(&status.task);
                return Heard::Restarted;
            }
            let mut gave_up = status.clone();
            gave_up.reason = format!(
                "gave up after {} restarts within {:?}; the last end: {}",
                p.policy.intensity, p.policy.period, status.reason
            );
            return self.end(&id, gave_up);
        }
        self.end(&id, status.clone())
    }

    /// Ends `id` for good with `status`: answers and monitors to tell.
    fn end(&mut self, id: &TaskId, status: TaskStatus) -> Heard<R, W> {
        let Some(p) = self.procs.get_mut(id) else {
            return Heard::Nothing;
        };
        let task = status.task.clone();
        p.phase = Phase::Ended {
            status: Box::new(status),
        };
        let (reply, monitors) = (p.reply.take(), std::mem::take(&mut p.monitors));
        self.queue.retain(|q| q != id);
        self.tasks.remove(&task);
        self.ended.push_back(id.clone());
        while self.ended.len() > ENDED_KEPT {
            if let Some(old) = self.ended.pop_front() {
                self.procs.remove(&old);
                self.tasks.retain(|_, p| p != &old);
            }
        }
        Heard::Ended(reply, monitors, id.clone())
    }

    /// Adds a monitor of `id`: `Ok(None)` once placed, `Ok(Some(end))` when it ended already
    /// (the monitor fires at once), `Err` when the book does not know it.
    pub(crate) fn monitor(&mut self, id: &TaskId, watcher: W) -> Result<Option<TaskStatus>, W> {
        match self.procs.get_mut(id) {
            None => Err(watcher),
            Some(p) => match &p.phase {
                Phase::Ended { status } => Ok(Some((**status).clone())),
                _ => {
                    p.monitors.push(watcher);
                    Ok(None)
                }
            },
        }
    }

    /// Removes the monitors of `id` that `gone` selects: they will not fire.
    pub(crate) fn demonitor(&mut self, id: &TaskId, gone: impl Fn(&W) -> bool) {
        if let Some(p) = self.procs.get_mut(id) {
            p.monitors.retain(|w| !gone(w));
        }
    }

    /// One process.
    pub(crate) fn get(&self, id: &TaskId) -> Option<&Proc<R, W>> {
        self.procs.get(id)
    }

    /// Every process it keeps, in id order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Proc<R, W>> {
        self.procs.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Resources, Source};

    fn task(id: &str, cpus: f64) -> TaskInfo {
        TaskInfo {
            id: TaskId(id.into()),
            name: id.into(),
            command: troupe_os::ProcessSpec::new(["true"]),
            resources: Resources::new(cpus, 64.0),
        }
    }

    fn offer(agent: &str, rack: &str, cpus: f64) -> OfferInfo {
        OfferInfo {
            id: crate::protocol::OfferId(format!("o-{agent}")),
            agent: AgentId(agent.into()),
            hostname: format!("{agent}.host"),
            attributes: [("rack".to_string(), rack.to_string())].into(),
            resources: Resources::new(cpus, 1024.0),
            reservation: None,
            ports: crate::protocol::PortRange {
                first: 31_000,
                last: 31_002,
            },
        }
    }

    fn status(id: &str, state: TaskState, agent: &str) -> TaskStatus {
        let mut s = TaskStatus::new(TaskId(id.into()), state, Source::Agent, 0);
        s.agent = Some(AgentId(agent.into()));
        s
    }

    #[test]
    fn constraints_read_and_place_by_attribute_and_host() {
        let c = Constraint::parse("rack = r1").unwrap();
        assert!(c.equal && c.key == "rack" && c.value == "r1");
        let not_host = Constraint::parse("host!=a1.host").unwrap();
        assert!(!not_host.equal);
        assert!(Constraint::parse("rack").is_err());
        assert!(Constraint::parse(" = r1").is_err());
        let r1 = Placement::Constraints(vec![c.clone()]);
        assert!(r1.allows(&offer("a1", "r1", 1.0)));
        assert!(!r1.allows(&offer("a2", "r2", 1.0)));
        let elsewhere = Placement::Constraints(vec![not_host]);
        assert!(!elsewhere.allows(&offer("a1", "r1", 1.0)));
        assert!(elsewhere.allows(&offer("a2", "r1", 1.0)));
        assert!(Placement::Agent(AgentId("a2".into())).allows(&offer("a2", "r2", 1.0)));
    }

    #[test]
    fn a_spawn_waits_for_a_place_it_fits_and_is_answered_when_it_runs() {
        let mut book: Book<&str, &str> = Book::default();
        let rack = Placement::Constraints(vec![Constraint::parse("rack = r2").unwrap()]);
        book.spawn(
            task("p1", 1.0),
            Asked {
                placement: rack,
                policy: RestartPolicy::default(),
                ..Asked::default()
            },
            0,
            10_000,
            "reply",
        );
        assert!(book.fill(&offer("a1", "r1", 4.0), 0).is_empty(), "not r2");
        assert!(
            book.fill(&offer("a2", "r2", 0.5), 0).is_empty(),
            "too small"
        );
        assert_eq!(book.fill(&offer("a2", "r2", 2.0), 0).len(), 1);
        assert!(!book.waiting());
        assert_eq!(
            book.heard(&status("p1", TaskState::Running, "a2"), 0),
            Heard::Running(Some("reply"), TaskId("p1".into()), AgentId("a2".into()))
        );
        assert_eq!(book.monitor(&TaskId("p1".into()), "w"), Ok(None));
        assert_eq!(
            book.heard(&status("p1", TaskState::Failed, "a2"), 0),
            Heard::Ended(None, vec!["w"], TaskId("p1".into()))
        );
        // Its end is kept: a late monitor fires at once.
        assert!(matches!(
            book.monitor(&TaskId("p1".into()), "late"),
            Ok(Some(_))
        ));
        assert_eq!(book.monitor(&TaskId("nope".into()), "w"), Err("w"));
    }

    #[test]
    fn a_spawn_with_no_place_by_its_deadline_is_answered_and_its_monitors_told() {
        let mut book: Book<&str, &str> = Book::default();
        book.spawn(
            task("p1", 1.0),
            Asked {
                placement: Placement::Any,
                policy: RestartPolicy::default(),
                ..Asked::default()
            },
            0,
            100,
            "r1",
        );
        book.spawn(
            task("p2", 1.0),
            Asked {
                placement: Placement::Any,
                policy: RestartPolicy::default(),
                ..Asked::default()
            },
            0,
            500,
            "r2",
        );
        assert_eq!(book.monitor(&TaskId("p1".into()), "w"), Ok(None));
        let late = book.overdue(200);
        assert_eq!(late.len(), 1);
        assert_eq!(
            (late[0].reply, late[0].monitors.clone()),
            (Some("r1"), vec!["w"])
        );
        assert_eq!(late[0].status.state, TaskState::Dropped);
        assert!(matches!(
            book.get(&TaskId("p1".into())).unwrap().phase,
            Phase::Ended { .. }
        ));
        assert!(book.waiting(), "the other still waits");
    }

    #[test]
    fn a_process_that_ends_before_it_ran_answers_its_spawn() {
        let mut book: Book<&str, &str> = Book::default();
        book.spawn(
            task("p1", 1.0),
            Asked {
                placement: Placement::Any,
                policy: RestartPolicy::default(),
                ..Asked::default()
            },
            0,
            10_000,
            "reply",
        );
        book.fill(&offer("a1", "r1", 1.0), 0);
        assert_eq!(
            book.heard(&status("p1", TaskState::Failed, "a1"), 0),
            Heard::Ended(Some("reply"), vec![], TaskId("p1".into()))
        );
    }

    fn ended(id: &str, state: TaskState, agent: &str, exit: troupe_os::ExitReason) -> TaskStatus {
        let mut s = status(id, state, agent);
        s.exit = Some(exit);
        s
    }

    /// A running permanent process: spawned, placed on a1, running, its spawn answered.
    fn running(policy: RestartPolicy) -> Book<&'static str, &'static str> {
        let mut book = Book::default();
        book.spawn(
            task("p", 1.0),
            Asked {
                placement: Placement::Any,
                policy,
                ..Asked::default()
            },
            0,
            10_000,
            "reply",
        );
        book.fill(&offer("a1", "r1", 4.0), 0);
        assert!(matches!(
            book.heard(&status("p", TaskState::Running, "a1"), 0),
            Heard::Running(Some(_), _, _)
        ));
        book
    }

    #[test]
    fn a_crashed_permanent_process_starts_again_on_its_own_agent_first_under_a_new_task() {
        let mut book = running(RestartPolicy::of(Restart::Permanent));
        let crash = ended(
            "p",
            TaskState::Failed,
            "a1",
            troupe_os::ExitReason::Exited(1),
        );
        assert_eq!(book.heard(&crash, 100), Heard::Restarted);
        let p = book.get(&TaskId("p".into())).unwrap();
        assert_eq!((p.incarnation, p.task.id.0.as_str()), (2, "p.2"));
        // Its own agent first, for a while.
        assert!(book.fill(&offer("a2", "r1", 4.0), 200).is_empty());
        assert_eq!(book.fill(&offer("a1", "r1", 4.0), 300)[0].id.0, "p.2");
        assert_eq!(
            book.heard(&status("p.2", TaskState::Running, "a1"), 300),
            Heard::Running(None, TaskId("p".into()), AgentId("a1".into()))
        );
    }

    #[test]
    fn transient_restarts_only_abnormal_ends_and_temporary_never() {
        let mut book = running(RestartPolicy::of(Restart::Transient));
        let fine = ended(
            "p",
            TaskState::Finished,
            "a1",
            troupe_os::ExitReason::Exited(0),
        );
        assert!(matches!(book.heard(&fine, 10), Heard::Ended(None, _, _)));
        let mut book = running(RestartPolicy::of(Restart::Temporary));
        let crash = ended(
            "p",
            TaskState::Failed,
            "a1",
            troupe_os::ExitReason::Exited(1),
        );
        assert!(matches!(book.heard(&crash, 10), Heard::Ended(None, _, _)));
    }

    #[test]
    fn past_its_intensity_a_process_is_given_up_and_its_monitors_told_why() {
        let policy = RestartPolicy {
            intensity: 2,
            ..RestartPolicy::of(Restart::Permanent)
        };
        let mut book = running(policy);
        assert_eq!(book.monitor(&TaskId("p".into()), "w"), Ok(None));
        let mut task = "p".to_string();
        for n in 2..=3 {
            let crash = ended(
                &task,
                TaskState::Failed,
                "a1",
                troupe_os::ExitReason::Exited(1),
            );
            assert_eq!(book.heard(&crash, n * 10), Heard::Restarted, "restart {n}");
            task = format!("p.{n}");
            book.fill(&offer("a1", "r1", 4.0), n * 10);
            book.heard(&status(&task, TaskState::Running, "a1"), n * 10);
        }
        let crash = ended(
            &task,
            TaskState::Failed,
            "a1",
            troupe_os::ExitReason::Exited(1),
        );
        assert_eq!(
            book.heard(&crash, 40),
            Heard::Ended(None, vec!["w"], TaskId("p".into()))
        );
        let Phase::Ended { status } = &book.get(&TaskId("p".into())).unwrap().phase else {
            panic!("ended")
        };
        assert!(
            status.reason.contains("gave up after 2 restarts"),
            "{}",
            status.reason
        );
    }

    #[test]
    fn a_process_whose_agent_stays_unreachable_moves_and_the_copy_left_behind_is_fenced() {
        let mut book = running(RestartPolicy::of(Restart::Permanent));
        book.heard(&status("p", TaskState::Unreachable, "a1"), 1_000);
        assert!(book.move_lost(2_000).kill.is_empty(), "not yet");
        assert_eq!(book.move_lost(4_000).kill, vec![TaskId("p".into())]);
        // Not back on the lost agent; anywhere else at once.
        assert!(book.fill(&offer("a1", "r1", 4.0), 4_000).is_empty());
        assert_eq!(book.fill(&offer("a2", "r1", 4.0), 4_000)[0].id.0, "p.2");
        book.heard(&status("p.2", TaskState::Running, "a2"), 4_100);
        // The lost agent comes back with the old copy running: it is killed.
        assert_eq!(
            book.heard(&status("p", TaskState::Running, "a1"), 5_000),
            Heard::Fence(TaskId("p".into()))
        );
        // Its end is no end of the process.
        let killed = ended("p", TaskState::Killed, "a1", troupe_os::ExitReason::Killed);
        assert_eq!(book.heard(&killed, 5_100), Heard::Nothing);
        assert!(matches!(
            book.get(&TaskId("p".into())).unwrap().phase,
            Phase::Running { .. }
        ));
    }

    #[test]
    fn a_process_asked_to_stop_is_not_started_again() {
        let mut book = running(RestartPolicy::of(Restart::Permanent));
        assert!(matches!(book.stop(&TaskId("p".into()), 5), Stopped::Kill(t) if t.0 == "p"));
        let killed = ended("p", TaskState::Killed, "a1", troupe_os::ExitReason::Killed);
        assert!(matches!(book.heard(&killed, 10), Heard::Ended(None, _, _)));
    }

    #[test]
    fn ports_come_from_the_agents_range_unused_by_its_other_processes_and_fill_the_command() {
        let mut book: Book<&str, &str> = Book::default();
        let mut t = task("p1", 0.5);
        t.command = troupe_os::ProcessSpec::new(["server", "--port", "{port0}", "{port1}"]);
        let asked = Asked {
            ports: 2,
            ..Asked::default()
        };
        book.spawn(t, asked.clone(), 0, 10_000, "r1");
        let first = book.fill(&offer("a1", "r1", 4.0), 0);
        let p1 = book.get(&TaskId("p1".into())).unwrap().ports.clone();
        assert_eq!(p1.len(), 2);
        assert!(p1.iter().all(|p| (31_000..=31_002).contains(p)));
        assert_eq!(
            first[0].command.argv[2..],
            [p1[0].to_string(), p1[1].to_string()]
        );
        assert_eq!(first[0].command.env["PORT0"], p1[0].to_string());
        // The range has three: a second process asking two does not fit beside it, one
        // asking one gets the last.
        book.spawn(task("p2", 0.5), asked, 0, 10_000, "r2");
        let one = Asked {
            ports: 1,
            ..Asked::default()
        };
        book.spawn(task("p3", 0.5), one, 0, 10_000, "r3");
        let next = book.fill(&offer("a1", "r1", 4.0), 0);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].id.0, "p3");
        let p3 = book.get(&TaskId("p3".into())).unwrap().ports.clone();
        assert!(!p1.contains(&p3[0]));
        // Another agent's range is its own.
        assert_eq!(book.fill(&offer("a2", "r1", 4.0), 0)[0].id.0, "p2");
    }

    #[test]
    fn replicas_spread_over_agents_first_and_share_one_when_no_other_comes() {
        let mut book: Book<&str, &str> = Book::default();
        let spread = Asked {
            prefs: Preferences {
                spread_from: vec![AgentId("a1".into())],
                ..Preferences::default()
            },
            ..Asked::default()
        };
        book.spawn(task("p", 0.5), spread, 0, 10_000, "r");
        assert!(
            book.fill(&offer("a1", "r1", 4.0), 0).is_empty(),
            "away from a1 first"
        );
        assert_eq!(
            book.fill(&offer("a1", "r1", 4.0), 3_000).len(),
            1,
            "a1 when no other came"
        );
    }

    #[test]
    fn a_supervised_process_whose_agent_is_lost_ends_with_the_agent_lost_and_its_copy_is_fenced() {
        let mut book: Book<&str, &str> = Book::default();
        let supervised = Asked {
            policy: RestartPolicy::of(Restart::Temporary),
            prefs: Preferences {
                supervised: true,
                ..Preferences::default()
            },
            ..Asked::default()
        };
        book.spawn(task("p", 1.0), supervised, 0, 10_000, "reply");
        book.fill(&offer("a1", "r1", 4.0), 0);
        book.heard(&status("p", TaskState::Running, "a1"), 0);
        book.monitor(&TaskId("p".into()), "w").unwrap();
        book.heard(&status("p", TaskState::Unreachable, "a1"), 1_000);
        assert!(book.move_lost(2_000).ended.is_empty(), "not yet");
        let lost = book.move_lost(4_000);
        assert_eq!(lost.kill, vec![TaskId("p".into())]);
        let [(Heard::Ended(None, monitors, id), status)] = &lost.ended[..] else {
            panic!("{:?}", lost.ended)
        };
        assert_eq!((monitors.clone(), id.0.as_str()), (vec!["w"], "p"));
        assert_eq!(status.state, TaskState::Gone);
        assert!(matches!(
            crate::processes::ProcessEnd::of(status),
            crate::processes::ProcessEnd::AgentLost(_)
        ));
        // Nothing is started again by the service: its supervisor decides.
        assert!(!book.waiting());
    }

    #[test]
    fn a_process_of_an_earlier_life_is_adopted_running_or_refused_when_it_ended_meanwhile() {
        let mut book: Book<&str, &str> = Book::default();
        // Statuses of tasks it does not know are kept for an adoption.
        book.heard(&status("old-1", TaskState::Running, "a1"), 0);
        book.heard(
            &ended(
                "old-2",
                TaskState::Failed,
                "a1",
                troupe_os::ExitReason::Exited(1),
            ),
            0,
        );
        let adopted = book.adopt(
            task("old-1", 0.5),
            AgentId("a1".into()),
            Some(42),
            Asked::default(),
            5,
        );
        assert_eq!(adopted, Ok(()));
        assert!(matches!(
            book.get(&TaskId("old-1".into())).unwrap().phase,
            Phase::Running { .. }
        ));
        book.monitor(&TaskId("old-1".into()), "w").unwrap();
        let end = ended(
            "old-1",
            TaskState::Killed,
            "a1",
            troupe_os::ExitReason::Killed,
        );
        assert_eq!(
            book.heard(&end, 10),
            Heard::Ended(None, vec!["w"], TaskId("old-1".into()))
        );
        let refused = book.adopt(
            task("old-2", 0.5),
            AgentId("a1".into()),
            None,
            Asked::default(),
            5,
        );
        assert!(matches!(refused, Err(Some(s)) if s.state == TaskState::Failed));
    }
}
