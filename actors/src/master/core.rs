//! The master core, at `master`: the agent and framework registries, the offers, the task
//! tracker and the registry file. It decides nothing about who gets what (the allocator
//! does) and runs nothing (agents do); it keeps the books and forwards.
//!
//! * Agents register with their resources and the tasks they still run. A registration
//!   (re)starts the agent's observer and gives its resources to the allocator.
//! * Frameworks subscribe; the core watches their driver and, when it goes, deactivates the
//!   framework until it subscribes again or its failover timeout passes (then its tasks are
//!   killed and it is removed).
//! * Offers get ids here. Accepting one validates each task on its own
//!   ([`crate::validation`]); refused tasks end in `Error` or `Dropped`, the rest go to the
//!   agent, and what they leave of the offer goes back to the allocator.
//! * Status updates pass through on their way from agents to frameworks, and
//!   acknowledgements on their way back.
//! * An unreachable agent's offers are rescinded and its tasks become `Unreachable`; they
//!   come back when it registers again, or become `Gone` after `agent_gone_after`.
//!
//! Messages out go through [`Outbox`]es, one per peer, so a slow peer never stalls the core.
//!
//! The core's handlers live by concern: `core/agents.rs` (registrations, observers,
//! health), `core/frameworks.rs` (subscriptions, failover, reconciliation) and
//! `core/offers.rs` (offers, launches, kills); this file keeps the books, applies statuses,
//! answers for the state and does the upkeep.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use troupe_runtime::{Addr, Node, SupervisorRef};

use super::allocator::{ALLOCATOR_PATH, AllocatorMsg};
use super::registry::Registry;
use super::{MASTER_PATH, MasterConfig};
use crate::outbox::Outbox;
use crate::protocol::{
    AgentId, AgentInfo, AgentMsg, AgentView, ClusterState, FrameworkId, FrameworkInfo,
    FrameworkView, MasterHealth, MasterMsg, OfferId, OfferInfo, Resources, SchedulerMsg, Source,
    TaskId, TaskLocation, TaskState, TaskStatus, TaskView, now_ms,
};
use crate::protocol::{MasterOwn, MasterOwnMsg};

mod agents;
mod events;
mod frameworks;
mod offers;

/// How often the core does its upkeep (offer and failover timeouts, gone agents).
const TICK: Duration = Duration::from_millis(250);

/// What the core starts from.
#[derive(Debug, Clone)]
pub struct CoreArgs {
    /// The master's settings.
    pub config: MasterConfig,
    /// The master's supervisor, to find the observers' supervisor by.
    pub parent: ActorCell,
}

/// The master core actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct MasterCore;

struct AgentEntry {
    info: AgentInfo,
    reachable: bool,
    unreachable_since: Option<Instant>,
    outbox: Outbox<AgentMsg>,
}

struct FrameworkEntry {
    info: FrameworkInfo,
    connected: bool,
    disconnected_at: Option<Instant>,
    outbox: Option<Outbox<SchedulerMsg>>,
    watch: Option<troupe_runtime::Ref>,
    /// Whether the allocator knows it (it subscribed in this master's life).
    allocated: bool,
}

struct OfferEntry {
    framework: FrameworkId,
    agent: AgentId,
    resources: Resources,
    reservation: Option<String>,
    created: Instant,
}

struct TaskEntry {
    framework: FrameworkId,
    agent: Option<AgentId>,
    name: String,
    command: Vec<String>,
    resources: Resources,
    /// What the allocator counts against the framework for it, by pool; empty when the
    /// allocator does not count it (not launched, or its agent or framework left it).
    holdings: Vec<(Option<String>, Resources)>,
    /// Its latest status.
    status: TaskStatus,
    launched_ms: u64,
    /// Someone asked for it to be killed: the kill goes to its agent again whenever the
    /// agent registers, until the task ends.
    kill_requested: bool,
    /// Its agent has spoken of it (a status, or a report at registration): until then, its
    /// launch may still be on the way, or lost with the agent's previous life.
    reached_agent: bool,
    /// Its main process's pid, from its agent's `Running`.
    pid: Option<i32>,
}

/// The core's state.
pub struct CoreState {
    counter: troupe_runtime::inspector::MessageCounter,
    config: MasterConfig,
    parent: ActorCell,
    registry: Registry,
    allocator: Addr<AllocatorMsg>,
    observers: Option<SupervisorRef>,
    agents: BTreeMap<AgentId, AgentEntry>,
    frameworks: BTreeMap<FrameworkId, FrameworkEntry>,
    offers: BTreeMap<OfferId, OfferEntry>,
    tasks: BTreeMap<TaskId, TaskEntry>,
    /// Terminal tasks, oldest first, to forget the oldest past `completed_tasks_kept`.
    completed: VecDeque<TaskId>,
    /// Tasks that ended since the history was last written (at the next tick).
    history_due: Vec<TaskId>,
    next_offer: u64,
    node: String,
    myself: ActorRef<MasterMsg>,
    /// Who receives the event stream, by path.
    subscribers: BTreeMap<String, events::Subscriber>,
    /// The number of the latest event.
    event_seq: u64,
}

impl Actor for MasterCore {
    type Msg = MasterMsg;
    type State = CoreState;
    type Arguments = CoreArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MasterMsg>,
        args: CoreArgs,
    ) -> Result<CoreState, ActorProcessingErr> {
        let registry = Registry::open(args.config.registry.as_deref())?;
        troupe_runtime::register(MASTER_PATH, &myself)?;
        troupe_runtime::text::serve::<MasterMsg>();
        let allocator = Addr::<AllocatorMsg>::new(ALLOCATOR_PATH);
        if let Err(e) = allocator.send(AllocatorMsg::Reset).await {
            return Err(format!("the allocator is not running: {}", e.error).into());
        }
        let node = Node::current();
        let now = Instant::now();
        let mut state = CoreState {
            counter: troupe_runtime::inspector::MessageCounter::new(&myself.get_cell()),
            config: args.config,
            parent: args.parent,
            registry,
            allocator,
            observers: None,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            offers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            completed: VecDeque::new(),
            history_due: Vec::new(),
            next_offer: 0,
            node: node
                .as_ref()
                .map(|n| n.name().to_string())
                .unwrap_or_default(),
            myself: myself.clone(),
            subscribers: BTreeMap::new(),
            event_seq: 0,
        };
        // Tasks that ended before the restart: their fate stays known.
        match state.registry.history(state.config.completed_tasks_kept) {
            Ok(ended) => {
                for view in ended {
                    state.completed.push_back(view.id.clone());
                    state
                        .tasks
                        .insert(view.id.clone(), TaskEntry::from_view(view));
                }
            }
            Err(e) => {
                tracing::error!(cause = %e, "cannot read the task history; tasks that ended before the restart are not listed");
            }
        }
        // Frameworks known from before wait for their failover timeout to subscribe again.
        for (id, info) in state.registry.facts.frameworks.clone() {
            state.frameworks.insert(
                id,
                FrameworkEntry {
                    info,
                    connected: false,
                    disconnected_at: Some(now),
                    outbox: None,
                    watch: None,
                    allocated: false,
                },
            );
        }
        // Admitted agents are asked to register again: that rebuilds the task books.
        for info in state.registry.facts.agents.values() {
            if let (Some(node), Ok(addr)) = (&node, info.addr.parse()) {
                if info.node != node.name() {
                    node.add_peer(&info.node, addr);
                }
            }
            let agent = Addr::<AgentMsg>::on(info.node.clone(), format!("agent/{}", info.id));
            tokio::spawn(async move {
                let _ = agent.send(AgentMsg::Reregister).await;
            });
        }
        myself.send_interval(TICK, || MasterMsg::own(MasterOwnMsg::Tick));
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MasterMsg>,
        state: &mut CoreState,
    ) -> Result<(), ActorProcessingErr> {
        for fw in state.frameworks.values_mut() {
            if let Some(watch) = fw.watch.take() {
                troupe_runtime::demonitor(&watch);
            }
        }
        state.drop_subscribers();
        state.write_history();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<MasterMsg>,
        message: MasterMsg,
        state: &mut CoreState,
    ) -> Result<(), ActorProcessingErr> {
        state.counter.handled();
        match message {
            MasterMsg::RegisterAgent { info, tasks, reply } => {
                let result = state.register_agent(info, tasks).await;
                reply.send(result);
            }
            MasterMsg::LaunchesLost { agent, launches } => {
                state.launches_lost(&agent, launches).await;
            }
            MasterMsg::StatusUpdate { agent, update } => {
                state.status_from_agent(agent, update).await;
            }
            MasterMsg::Subscribe { info, reply } => {
                let result = state.subscribe(info).await;
                reply.send(result);
            }
            MasterMsg::Teardown { framework } => {
                state.remove_framework(&framework, "torn down").await
            }
            MasterMsg::Accept {
                framework,
                offers,
                tasks,
                refuse_ms,
            } => {
                let refuse = refuse_ms.map(Duration::from_millis);
                state.accept(framework, offers, tasks, refuse).await;
            }
            MasterMsg::Decline {
                framework,
                offers,
                refuse_ms,
            } => {
                for id in offers {
                    if state
                        .offers
                        .get(&id)
                        .is_some_and(|o| o.framework == framework)
                    {
                        let refuse = Some(Duration::from_millis(refuse_ms));
                        state.return_offer(&id, refuse).await;
                    }
                }
            }
            MasterMsg::Revive { framework } => {
                state
                    .tell_allocator(AllocatorMsg::SetSuppressed {
                        framework,
                        suppressed: false,
                    })
                    .await;
            }
            MasterMsg::Suppress { framework } => {
                state
                    .tell_allocator(AllocatorMsg::SetSuppressed {
                        framework,
                        suppressed: true,
                    })
                    .await;
            }
            MasterMsg::Kill { task, grace, reply } => {
                reply.send(state.kill_within(&task, grace));
            }
            MasterMsg::Acknowledge {
                framework,
                agent,
                task,
                update,
            } => {
                let owned = state
                    .tasks
                    .get(&task)
                    .is_none_or(|t| t.framework == framework);
                // The agent forgets an ended task once its end is acknowledged: the
                // history has it on disk before that, or a master restart now would lose it.
                if state.history_due.contains(&task) {
                    state.write_history();
                }
                if let Some(a) = state.agents.get(&agent).filter(|_| owned) {
                    a.outbox.send(AgentMsg::Acknowledge { task, update });
                }
            }
            MasterMsg::Reconcile { framework, tasks } => state.reconcile(&framework, tasks),
            MasterMsg::State { all, reply } => {
                reply.send(state.cluster_state(all).await);
            }
            MasterMsg::Locate { task, reply } => {
                let answer = state
                    .tasks
                    .get(&task)
                    .map(|t| TaskLocation {
                        task: view(&task, t),
                        agent: t
                            .agent
                            .as_ref()
                            .and_then(|a| state.agents.get(a))
                            .map(|a| a.info.clone()),
                    })
                    .ok_or_else(|| crate::protocol::TaskRefused::Unknown { task: task.clone() });
                reply.send(answer);
            }
            MasterMsg::Own(MasterOwn(own)) => match own {
                MasterOwnMsg::AgentHealth {
                    agent,
                    reachable,
                    reason,
                } => state.agent_health(agent, reachable, reason).await,
                MasterOwnMsg::Offers { offers } => state.hand_out(offers).await,
                MasterOwnMsg::FrameworkDown { framework, driver } => {
                    state.framework_down(framework, driver).await;
                }
                MasterOwnMsg::Tick => state.tick().await,
            },
            MasterMsg::Health { reply } => {
                reply.send(MasterHealth {
                    node: state.node.clone(),
                    agents: state.agents.len(),
                    agents_reachable: state.agents.values().filter(|a| a.reachable).count(),
                    agents_admitted: state.registry.facts.agents.len(),
                    frameworks: state.frameworks.len(),
                    frameworks_connected: state.frameworks.values().filter(|f| f.connected).count(),
                    active_tasks: state
                        .tasks
                        .values()
                        .filter(|t| !t.status.state.is_terminal())
                        .count(),
                    offers: state.offers.len(),
                    event_subscribers: state.subscribers.len(),
                });
            }
            MasterMsg::SubscribeEvents { to, node, reply } => {
                reply.send(state.subscribe_events(to, node).await);
            }
            MasterMsg::UnsubscribeEvents { to } => state.unsubscribe_events(&to),
            MasterMsg::PutSpec { name, text, reply } => {
                let before = state.registry.facts.specs.insert(name.clone(), text);
                let saved = state.registry.save().map_err(|e| e.to_string());
                if saved.is_err() {
                    // Not durable: not kept either, so what is answered is what holds.
                    match before {
                        Some(old) => state.registry.facts.specs.insert(name, old),
                        None => state.registry.facts.specs.remove(&name),
                    };
                }
                reply.send(saved);
            }
            MasterMsg::DeleteSpec { name, reply } => {
                let before = state.registry.facts.specs.remove(&name);
                let saved = state.registry.save().map_err(|e| e.to_string());
                if let (Err(_), Some(old)) = (&saved, before) {
                    state.registry.facts.specs.insert(name, old);
                }
                reply.send(saved);
            }
            MasterMsg::Specs { reply } => {
                reply.send(state.registry.facts.specs.clone());
            }
        }
        Ok(())
    }
}

fn view(id: &TaskId, t: &TaskEntry) -> TaskView {
    TaskView {
        id: id.clone(),
        name: t.name.clone(),
        framework: t.framework.clone(),
        agent: t.agent.clone(),
        status: t.status.clone(),
        resources: t.resources,
        command: t.command.clone(),
        launched_ms: t.launched_ms,
        pid: t.pid,
    }
}

impl TaskEntry {
    /// A task known from the history: ended, holding nothing.
    fn from_view(view: TaskView) -> TaskEntry {
        TaskEntry {
            framework: view.framework,
            agent: view.agent,
            name: view.name,
            command: view.command,
            resources: view.resources,
            holdings: Vec::new(),
            status: view.status,
            launched_ms: view.launched_ms,
            kill_requested: false,
            reached_agent: true,
            pid: view.pid,
        }
    }
}

fn master_status(task: &TaskId, state: TaskState, reason: impl Into<String>) -> TaskStatus {
    let mut status = TaskStatus::new(task.clone(), state, Source::Master, now_ms());
    status.reason = reason.into();
    status
}

impl CoreState {
    /// The ids of the outstanding offers that `keep` selects.
    fn offer_ids(&self, keep: impl Fn(&OfferEntry) -> bool) -> Vec<OfferId> {
        self.offers
            .iter()
            .filter(|(_, o)| keep(o))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The ids of the tracked tasks that `keep` selects.
    fn task_ids(&self, keep: impl Fn(&TaskEntry) -> bool) -> Vec<TaskId> {
        self.tasks
            .iter()
            .filter(|(_, t)| keep(t))
            .map(|(id, _)| id.clone())
            .collect()
    }

    async fn tell_allocator(&self, message: AllocatorMsg) {
        if let Err(e) = self.allocator.send(message).await {
            // The allocator restarts with the core after it (rest_for_one), so this is
            // only seen while the tree is restarting.
            tracing::warn!(cause = %e.error, "the allocator is not running");
        }
    }

    /// The observers' supervisor, found through the master's supervisor the first time.
    async fn observers(&mut self) -> Option<SupervisorRef> {
        if let Some(o) = self.observers.as_ref().filter(|o| o.is_running()) {
            return Some(o.clone());
        }
        let cell = crate::tree::sibling(&self.parent, "observers").await?;
        self.observers = SupervisorRef::from_cell(cell);
        self.observers.clone()
    }

    fn save_registry(&self) {
        if let Err(e) = self.registry.save() {
            tracing::error!(cause = %e, "cannot write the registry; the master keeps running on what it knows");
        }
    }

    fn send_framework(&self, framework: &FrameworkId, message: SchedulerMsg) -> bool {
        match self
            .frameworks
            .get(framework)
            .and_then(|f| f.outbox.as_ref())
        {
            Some(outbox) => {
                outbox.send(message);
                true
            }
            None => false,
        }
    }

    /// Applies a status to a task the core tracks; sends it to the framework with `ack`
    /// if it changed the task (or repeats the latest, which the agent may be retrying);
    /// gives back the task's resources when it ended.
    async fn apply_status(&mut self, status: TaskStatus, ack: Option<u64>) {
        let id = status.task.clone();
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if status.source != Source::Master {
            task.reached_agent = true;
        }
        if status.pid.is_some() {
            task.pid = status.pid;
        }
        let changed = match task.status.advance(status.clone()) {
            Ok(crate::protocol::Applied::Changed) => true,
            Ok(crate::protocol::Applied::Duplicate) => false,
            Err(e) => {
                tracing::debug!(cause = %e, "status update refused");
                // The agent still waits for its acknowledgement: let the framework see and
                // acknowledge what it is sent, or the agent retries forever.
                if let Some(ack) = ack {
                    let framework = task.framework.clone();
                    self.send_framework(
                        &framework,
                        SchedulerMsg::Update {
                            status,
                            ack: Some(ack),
                        },
                    );
                }
                return;
            }
        };
        let framework = task.framework.clone();
        let ended = task.status.state.is_terminal();
        if changed {
            self.publish_task(&id);
        }
        if changed || ack.is_some() {
            self.send_framework(&framework, SchedulerMsg::Update { status, ack });
        }
        if changed && ended {
            self.release(&id).await;
            if self.registry.facts.pending_kills.remove(&id) {
                self.save_registry();
            }
            self.history_due.push(id.clone());
            self.completed.push_back(id);
            while self.completed.len() > self.config.completed_tasks_kept {
                if let Some(old) = self.completed.pop_front() {
                    self.tasks.remove(&old);
                }
            }
        }
    }

    /// Appends the tasks that ended since the last tick to the registry's history.
    fn write_history(&mut self) {
        if self.history_due.is_empty() {
            return;
        }
        let ended: Vec<TaskView> = std::mem::take(&mut self.history_due)
            .into_iter()
            .filter_map(|id| self.tasks.get(&id).map(|t| view(&id, t)))
            // A dropped task launched again since is not ended.
            .filter(|v| v.status.state.is_terminal())
            .collect();
        let kept = self.config.completed_tasks_kept;
        if let Err(e) = self.registry.append_history(&ended, kept) {
            tracing::error!(cause = %e, tasks = ended.len(), "cannot write the task history; these tasks' ends are not kept across a restart");
        }
    }

    /// Gives back to the allocator what it counts for a task.
    async fn release(&mut self, id: &TaskId) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        let holdings = std::mem::take(&mut task.holdings);
        let (framework, agent) = (task.framework.clone(), task.agent.clone());
        if let Some(agent) = agent {
            for (reservation, resources) in holdings {
                self.tell_allocator(AllocatorMsg::Recover {
                    framework: framework.clone(),
                    agent: agent.clone(),
                    resources,
                    reservation,
                    refuse: None,
                })
                .await;
            }
        }
    }

    async fn tick(&mut self) {
        self.write_history();
        let now = Instant::now();
        if let Some(timeout) = self.config.offer_timeout {
            let expired: Vec<(OfferId, FrameworkId)> = self
                .offers
                .iter()
                .filter(|(_, o)| now.duration_since(o.created) >= timeout)
                .map(|(id, o)| (id.clone(), o.framework.clone()))
                .collect();
            for (id, framework) in expired {
                self.send_framework(&framework, SchedulerMsg::Rescind { offer: id.clone() });
                self.return_offer(&id, None).await;
            }
        }
        let failed_over: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|(_, f)| {
                f.disconnected_at
                    .is_some_and(|t| now.duration_since(t) >= f.info.failover_timeout)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for fw in failed_over {
            self.remove_framework(&fw, "its failover timeout passed")
                .await;
        }
        let gone: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| {
                a.unreachable_since
                    .is_some_and(|t| now.duration_since(t) >= self.config.agent_gone_after)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for agent in gone {
            self.remove_agent(&agent).await;
        }
    }

    async fn cluster_state(&self, all: bool) -> ClusterState {
        let mut allocated: BTreeMap<&AgentId, Resources> = BTreeMap::new();
        for t in self
            .tasks
            .values()
            .filter(|t| !t.status.state.is_terminal())
        {
            if let Some(a) = &t.agent {
                let r = allocated.entry(a).or_default();
                *r = r.plus(t.resources);
            }
        }
        for o in self.offers.values() {
            let r = allocated.entry(&o.agent).or_default();
            *r = r.plus(o.resources);
        }
        let mut frameworks = Vec::new();
        for (id, f) in &self.frameworks {
            let (share, why) = if f.allocated {
                self.explain(id).await
            } else {
                (
                    0.0,
                    vec!["not subscribed since the master started".to_string()],
                )
            };
            frameworks.push(FrameworkView {
                id: id.clone(),
                info: f.info.clone(),
                connected: f.connected,
                share,
                not_offered: why,
            });
        }
        ClusterState {
            master: self.node.clone(),
            agents: self
                .agents
                .values()
                .map(|a| AgentView {
                    info: a.info.clone(),
                    reachable: a.reachable,
                    allocated: allocated.get(&a.info.id).copied().unwrap_or_default(),
                })
                .collect(),
            frameworks,
            tasks: self
                .tasks
                .iter()
                .filter(|(_, t)| all || !t.status.state.is_terminal())
                .map(|(id, t)| view(id, t))
                .collect(),
            offers: self
                .offers
                .iter()
                .map(|(id, o)| OfferInfo {
                    id: id.clone(),
                    agent: o.agent.clone(),
                    hostname: self
                        .agents
                        .get(&o.agent)
                        .map(|a| a.info.hostname.clone())
                        .unwrap_or_default(),
                    attributes: BTreeMap::new(),
                    resources: o.resources,
                    reservation: o.reservation.clone(),
                    ports: self
                        .agents
                        .get(&o.agent)
                        .map(|a| a.info.ports)
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    async fn explain(&self, framework: &FrameworkId) -> (f64, Vec<String>) {
        let Ok(allocator) = self.allocator.resolve().await else {
            return (0.0, Vec::new());
        };
        match allocator
            .call(
                |reply| AllocatorMsg::Explain {
                    framework: framework.clone(),
                    reply,
                },
                Some(Duration::from_secs(2)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success((share, why))) => {
                (share, why.iter().map(describe_not_offered).collect())
            }
            _ => (0.0, Vec::new()),
        }
    }
}

/// A reason for no offer, in words.
pub fn describe_not_offered(why: &crate::allocator::NotOffered) -> String {
    use crate::allocator::NotOffered::*;
    match why {
        UnknownFramework => "the allocator does not know the framework".into(),
        Inactive => "the framework is disconnected".into(),
        Suppressed => "the framework suppressed offers".into(),
        NoAgents => "no agent is registered".into(),
        NothingFree => "every agent's resources are in use or offered to others".into(),
        AllReserved { roles } => format!(
            "what is free is reserved for other roles ({})",
            roles.join(", ")
        ),
        HeldForGuarantees => "what is free is held for other roles' quota guarantees".into(),
        QuotaLimitReached { role, limit } => {
            format!("role {role} holds all its quota limit ({limit}) allows")
        }
        Filtered { agent, .. } => format!("it declined agent {agent} and the filter holds"),
    }
}

/// Whether a role name is valid: `*`, or path segments of letters, digits, `-`, `_`, `.`.
pub fn valid_role(role: &str) -> bool {
    role == "*"
        || (!role.is_empty()
            && role.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            }))
}
