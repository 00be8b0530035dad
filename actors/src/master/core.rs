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

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use troupe_runtime::supervisor::{ChildSpec, Restart};
use troupe_runtime::{Addr, Child, Node, SupervisorRef};

use super::allocator::{ALLOCATOR_PATH, AllocatorMsg};
use super::observer::{Observer, ObserverArgs};
use super::registry::Registry;
use super::{MASTER_PATH, MasterConfig};
use crate::outbox::Outbox;
use crate::protocol::{
    AgentId, AgentInfo, AgentMsg, AgentView, ClusterState, FrameworkId, FrameworkInfo,
    FrameworkView, MasterMsg, OfferId, OfferInfo, Resources, SchedulerMsg, Source, TaskId,
    TaskInfo, TaskLocation, TaskState, TaskStatus, TaskView, now_ms,
};
use crate::validation::{Verdict, validate_launch};

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
}

/// The core's state.
pub struct CoreState {
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
    next_offer: u64,
    node: String,
    myself: ActorRef<MasterMsg>,
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
        let allocator = Addr::<AllocatorMsg>::new(ALLOCATOR_PATH);
        if let Err(e) = allocator.send(AllocatorMsg::Reset).await {
            return Err(format!("the allocator is not running: {}", e.error).into());
        }
        let node = Node::current();
        let now = Instant::now();
        let mut state = CoreState {
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
            next_offer: 0,
            node: node
                .as_ref()
                .map(|n| n.name().to_string())
                .unwrap_or_default(),
            myself: myself.clone(),
        };
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
        myself.send_interval(TICK, || MasterMsg::Tick);
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
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<MasterMsg>,
        message: MasterMsg,
        state: &mut CoreState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MasterMsg::RegisterAgent { info, tasks, reply } => {
                let result = state.register_agent(info, tasks).await;
                reply.send(result);
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
            MasterMsg::Kill { task, reply } => {
                reply.send(state.kill(&task));
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
                    .ok_or_else(|| format!("no task {task} is known to the master"));
                reply.send(answer);
            }
            MasterMsg::AgentHealth {
                agent,
                reachable,
                reason,
            } => state.agent_health(agent, reachable, reason).await,
            MasterMsg::Offers { offers } => state.hand_out(offers).await,
            MasterMsg::FrameworkDown { framework, driver } => {
                state.framework_down(framework, driver).await;
            }
            MasterMsg::Tick => state.tick().await,
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
    }
}

fn master_status(task: &TaskId, state: TaskState, reason: impl Into<String>) -> TaskStatus {
    let mut status = TaskStatus::new(task.clone(), state, Source::Master, now_ms());
    status.reason = reason.into();
    status
}

impl CoreState {
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
        if changed || ack.is_some() {
            self.send_framework(&framework, SchedulerMsg::Update { status, ack });
        }
        if changed && ended {
            self.release(&id).await;
            self.completed.push_back(id);
            while self.completed.len() > self.config.completed_tasks_kept {
                if let Some(old) = self.completed.pop_front() {
                    self.tasks.remove(&old);
                }
            }
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

    async fn register_agent(
        &mut self,
        info: AgentInfo,
        reported: Vec<(FrameworkId, TaskStatus, Resources)>,
    ) -> Result<(), String> {
        if self.registry.facts.removed_agents.contains(&info.id) {
            return Err(format!(
                "agent {} was removed from the cluster; start it with a fresh id",
                info.id
            ));
        }
        if !info.resources.is_valid() {
            return Err(format!("invalid resources {}", info.resources));
        }
        let id = info.id.clone();
        tracing::info!(agent = %id, node = %info.node, resources = %info.resources, tasks = reported.len(), "agent registers");
        if self.registry.facts.agents.get(&id) != Some(&info) {
            self.registry.facts.agents.insert(id.clone(), info.clone());
            self.save_registry();
        }
        if let (Some(node), Ok(addr)) = (Node::current(), info.addr.parse()) {
            if info.node != node.name() {
                node.add_peer(&info.node, addr);
            }
        }
        // Offers of its previous life are void.
        self.rescind_agent_offers(&id).await;
        let agent_addr = Addr::<AgentMsg>::on(info.node.clone(), format!("agent/{id}"));
        self.agents.insert(
            id.clone(),
            AgentEntry {
                info: info.clone(),
                reachable: true,
                unreachable_since: None,
                outbox: Outbox::new(agent_addr),
            },
        );
        self.tell_allocator(AllocatorMsg::AddAgent {
            agent: id.clone(),
            total: info.resources,
            reserved: Vec::new(),
        })
        .await;
        // The allocator forgot what this agent's tasks held when the agent was added anew.
        for task in self.tasks.values_mut() {
            if task.agent.as_ref() == Some(&id) {
                task.holdings.clear();
            }
        }
        // The tasks it reports are what runs there; tasks the core placed there that it
        // does not report are gone with its previous life.
        let mut seen = HashSet::new();
        for (framework, status, resources) in reported {
            seen.insert(status.task.clone());
            let task = status.task.clone();
            if !self.tasks.contains_key(&task) {
                self.tasks.insert(
                    task.clone(),
                    TaskEntry {
                        framework: framework.clone(),
                        agent: Some(id.clone()),
                        name: String::new(),
                        command: Vec::new(),
                        resources,
                        holdings: Vec::new(),
                        status: status.clone(),
                        launched_ms: status.timestamp_ms,
                    },
                );
            }
            self.apply_status(status, None).await;
            self.track(&task).await;
        }
        let lost: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(t, e)| {
                e.agent.as_ref() == Some(&id)
                    && !e.status.state.is_terminal()
                    && !seen.contains(*t)
                    && e.status.state != TaskState::Staging
            })
            .map(|(t, _)| t.clone())
            .collect();
        for task in lost {
            let status = master_status(
                &task,
                TaskState::Gone,
                "its agent registered again without it",
            );
            self.apply_status(status, None).await;
        }
        self.start_observer(&info).await;
        Ok(())
    }

    /// Has the allocator count a live task's resources, once both its agent and its
    /// framework are known to it.
    async fn track(&mut self, id: &TaskId) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        let framework_known = self
            .frameworks
            .get(&task.framework)
            .is_some_and(|f| f.allocated);
        let agent_known = task
            .agent
            .as_ref()
            .and_then(|a| self.agents.get(a))
            .is_some_and(|a| a.reachable);
        if task.status.state.is_terminal()
            || !task.holdings.is_empty()
            || !framework_known
            || !agent_known
        {
            return;
        }
        let (framework, agent, resources) = (
            task.framework.clone(),
            task.agent.clone().unwrap_or_else(|| "".into()),
            task.resources,
        );
        self.tell_allocator(AllocatorMsg::TrackUsed {
            framework,
            agent,
            resources,
            reservation: None,
        })
        .await;
        if let Some(task) = self.tasks.get_mut(id) {
            task.holdings = vec![(None, resources)];
        }
    }

    async fn start_observer(&mut self, info: &AgentInfo) {
        let Some(observers) = self.observers().await else {
            tracing::error!(agent = %info.id, "no observers' supervisor: the agent is not watched");
            return;
        };
        let child_id = format!("agent/{}", info.id);
        let _ = observers.terminate_child(&child_id).await;
        let _ = observers.delete_child(&child_id).await;
        let args = ObserverArgs {
            agent: info.id.clone(),
            node: info.node.clone(),
            detector: self.config.detector.clone(),
        };
        let child = Child::new(
            ChildSpec::worker(child_id)
                .restart(Restart::Transient)
                .start("observer", Default::default()),
            move |ctx: troupe_runtime::StartCtx| {
                let args = args.clone();
                async move { ctx.spawn(Observer, args).await }
            },
        );
        if let Err(e) = observers.start_child(child).await {
            tracing::error!(agent = %info.id, cause = %e, "cannot start the agent's observer");
        }
    }

    async fn stop_observer(&mut self, agent: &AgentId) {
        if let Some(observers) = self.observers().await {
            let child_id = format!("agent/{agent}");
            let _ = observers.terminate_child(&child_id).await;
            let _ = observers.delete_child(&child_id).await;
        }
    }

    async fn status_from_agent(&mut self, agent: AgentId, update: crate::status_updates::Update) {
        let crate::status_updates::Update {
            id,
            framework,
            status,
        } = update;
        if !self.frameworks.contains_key(&framework) {
            // Its framework was removed: nobody will acknowledge, so the master does, or
            // the agent would retry forever.
            if let Some(a) = self.agents.get(&agent) {
                a.outbox.send(AgentMsg::Acknowledge {
                    task: status.task.clone(),
                    update: id,
                });
            }
            if let Some(task) = self.tasks.get_mut(&status.task) {
                let _ = task.status.advance(status);
            }
            return;
        }
        if !self.tasks.contains_key(&status.task) {
            // The master restarted after the launch; the agent knows the task.
            self.tasks.insert(
                status.task.clone(),
                TaskEntry {
                    framework: framework.clone(),
                    agent: Some(agent.clone()),
                    name: String::new(),
                    command: Vec::new(),
                    resources: Resources::ZERO,
                    holdings: Vec::new(),
                    status: status.clone(),
                    launched_ms: status.timestamp_ms,
                },
            );
        }
        self.apply_status(status, Some(id)).await;
    }

    async fn subscribe(&mut self, mut info: FrameworkInfo) -> Result<FrameworkId, String> {
        if info.name.trim().is_empty() {
            return Err("a framework needs a name".into());
        }
        if !valid_role(&info.role) {
            return Err(format!(
                "invalid role {:?}: use `*` or names of letters, digits, `-`, `_` and `.` joined by `/`",
                info.role
            ));
        }
        if !troupe_runtime::addr::valid_path(&info.driver) {
            return Err(format!("invalid driver path {:?}", info.driver));
        }
        let id = match info.id.clone() {
            Some(id) if self.frameworks.contains_key(&id) => id,
            Some(id) => {
                return Err(format!(
                    "framework {id} is not known (removed after its failover timeout?); subscribe without an id"
                ));
            }
            None => FrameworkId(format!(
                "{}-{:x}-{}",
                info.name
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .take(24)
                    .collect::<String>(),
                now_ms(),
                self.frameworks.len()
            )),
        };
        info.id = Some(id.clone());
        tracing::info!(framework = %id, name = %info.name, role = %info.role, "framework subscribes");
        let (allocated, old_role) = match self.frameworks.get_mut(&id) {
            Some(old) => {
                if let Some(watch) = old.watch.take() {
                    troupe_runtime::demonitor(&watch);
                }
                (old.allocated, Some(old.info.role.clone()))
            }
            None => (false, None),
        };
        if allocated && old_role.as_deref() != Some(info.role.as_str()) {
            return Err("a framework cannot change its role when it subscribes again".into());
        }
        // Offers made to its previous connection are void.
        let stale: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework == id)
            .map(|(o, _)| o.clone())
            .collect();
        for offer in stale {
            self.return_offer(&offer, None).await;
        }
        let driver = Addr::<SchedulerMsg>::new(info.driver.clone());
        let core = self.myself.clone();
        let (fw, path) = (id.clone(), info.driver.clone());
        let watch = troupe_runtime::monitor_with(&driver, move |_| {
            let _ = core.cast(MasterMsg::FrameworkDown {
                framework: fw,
                driver: path,
            });
        })
        .await
        .ok();
        self.frameworks.insert(
            id.clone(),
            FrameworkEntry {
                info: info.clone(),
                connected: true,
                disconnected_at: None,
                outbox: Some(Outbox::new(driver)),
                watch,
                allocated: true,
            },
        );
        if self.registry.facts.frameworks.get(&id) != Some(&info) {
            self.registry
                .facts
                .frameworks
                .insert(id.clone(), info.clone());
            self.save_registry();
        }
        // What agents still hold for it need not wait out their backoff.
        self.hurry_updates(&id);
        if allocated {
            self.tell_allocator(AllocatorMsg::SetActive {
                framework: id.clone(),
                active: true,
            })
            .await;
        } else {
            self.tell_allocator(AllocatorMsg::AddFramework {
                framework: id.clone(),
                role: info.role.clone(),
            })
            .await;
            let mine: Vec<TaskId> = self
                .tasks
                .iter()
                .filter(|(_, t)| t.framework == id)
                .map(|(t, _)| t.clone())
                .collect();
            for task in mine {
                self.track(&task).await;
            }
        }
        Ok(id)
    }

    /// Has every agent with tasks of `framework` resend its unacknowledged updates now.
    fn hurry_updates(&self, framework: &FrameworkId) {
        let agents: std::collections::BTreeSet<&AgentId> = self
            .tasks
            .values()
            .filter(|t| &t.framework == framework)
            .filter_map(|t| t.agent.as_ref())
            .collect();
        for agent in agents {
            if let Some(a) = self.agents.get(agent) {
                a.outbox.send(AgentMsg::ResendUpdates {
                    framework: framework.clone(),
                });
            }
        }
    }

    async fn framework_down(&mut self, framework: FrameworkId, driver: String) {
        let Some(fw) = self.frameworks.get_mut(&framework) else {
            return;
        };
        if !fw.connected || fw.info.driver != driver {
            return;
        }
        tracing::info!(framework = %framework, "framework disconnected; waiting for its failover timeout");
        fw.connected = false;
        fw.disconnected_at = Some(Instant::now());
        fw.outbox = None;
        fw.watch = None;
        self.tell_allocator(AllocatorMsg::SetActive {
            framework: framework.clone(),
            active: false,
        })
        .await;
        let offers: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework == framework)
            .map(|(o, _)| o.clone())
            .collect();
        for offer in offers {
            self.return_offer(&offer, None).await;
        }
    }

    async fn remove_framework(&mut self, framework: &FrameworkId, why: &str) {
        let Some(mut fw) = self.frameworks.remove(framework) else {
            return;
        };
        tracing::info!(framework = %framework, why, "framework removed; its tasks are killed");
        if let Some(watch) = fw.watch.take() {
            troupe_runtime::demonitor(&watch);
        }
        let offers: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| &o.framework == framework)
            .map(|(o, _)| o.clone())
            .collect();
        for offer in offers {
            self.offers.remove(&offer);
        }
        let tasks: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| &t.framework == framework && !t.status.state.is_terminal())
            .map(|(t, _)| t.clone())
            .collect();
        for task in &tasks {
            let _ = self.kill(task);
            if let Some(t) = self.tasks.get_mut(task) {
                // The allocator forgets the framework's holdings with it.
                t.holdings.clear();
            }
        }
        if fw.allocated {
            self.tell_allocator(AllocatorMsg::RemoveFramework {
                framework: framework.clone(),
            })
            .await;
        }
        self.registry.facts.frameworks.remove(framework);
        self.save_registry();
        // From now on the master acknowledges for it: what agents hold for it goes now.
        self.hurry_updates(framework);
    }

    /// An offer goes back to the allocator unused (declined with a filter, rescinded, or
    /// timed out).
    async fn return_offer(&mut self, id: &OfferId, refuse: Option<Duration>) {
        let Some(offer) = self.offers.remove(id) else {
            return;
        };
        self.tell_allocator(AllocatorMsg::Recover {
            framework: offer.framework,
            agent: offer.agent,
            resources: offer.resources,
            reservation: offer.reservation,
            refuse,
        })
        .await;
    }

    async fn rescind_agent_offers(&mut self, agent: &AgentId) {
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| &o.agent == agent)
            .map(|(o, _)| o.clone())
            .collect();
        for id in ids {
            if let Some(offer) = self.offers.remove(&id) {
                self.send_framework(&offer.framework, SchedulerMsg::Rescind { offer: id });
            }
        }
    }

    async fn hand_out(&mut self, offers: Vec<(FrameworkId, AgentId, Resources, Option<String>)>) {
        let mut by_framework: BTreeMap<FrameworkId, Vec<OfferInfo>> = BTreeMap::new();
        for (framework, agent, resources, reservation) in offers {
            let connected = self.frameworks.get(&framework).is_some_and(|f| f.connected);
            let info = self
                .agents
                .get(&agent)
                .filter(|a| a.reachable)
                .map(|a| a.info.clone());
            let Some(info) = info.filter(|_| connected) else {
                // Things changed since the cycle: give them back.
                self.tell_allocator(AllocatorMsg::Recover {
                    framework,
                    agent,
                    resources,
                    reservation,
                    refuse: None,
                })
                .await;
                continue;
            };
            self.next_offer += 1;
            let id = OfferId(format!("{}-o{}", self.node, self.next_offer));
            self.offers.insert(
                id.clone(),
                OfferEntry {
                    framework: framework.clone(),
                    agent: agent.clone(),
                    resources,
                    reservation: reservation.clone(),
                    created: Instant::now(),
                },
            );
            by_framework.entry(framework).or_default().push(OfferInfo {
                id,
                agent,
                hostname: info.hostname,
                attributes: info.attributes,
                resources,
                reservation,
            });
        }
        for (framework, offers) in by_framework {
            self.send_framework(&framework, SchedulerMsg::Offers { offers });
        }
    }

    async fn accept(
        &mut self,
        framework: FrameworkId,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        refuse: Option<Duration>,
    ) {
        // Every offer must be outstanding, the framework's, and on one agent.
        let mut offers = Vec::new();
        let mut valid = !offer_ids.is_empty();
        for id in &offer_ids {
            match self.offers.get(id) {
                Some(o) if o.framework == framework => offers.push((id.clone(), o)),
                _ => valid = false,
            }
        }
        let agent = offers.first().map(|(_, o)| o.agent.clone());
        if offers.iter().any(|(_, o)| Some(&o.agent) != agent.as_ref()) {
            valid = false;
        }
        let total = valid.then(|| {
            offers
                .iter()
                .fold(Resources::ZERO, |t, (_, o)| t.plus(o.resources))
        });
        // Each offer's pool and what is left of it, to charge tasks against.
        let mut pools: Vec<(Option<String>, Resources)> = offers
            .iter()
            .map(|(_, o)| (o.reservation.clone(), o.resources))
            .collect();
        let verdicts = validate_launch(total, &tasks, |id| self.tasks.contains_key(id));
        if valid {
            for id in &offer_ids {
                self.offers.remove(id);
            }
        }
        let mut launch = Vec::new();
        for (task, verdict) in tasks.into_iter().zip(verdicts) {
            let entry = |state: TaskStatus, holdings| TaskEntry {
                framework: framework.clone(),
                agent: agent.clone(),
                name: task.name.clone(),
                command: task.command.argv.clone(),
                resources: task.resources,
                holdings,
                status: state,
                launched_ms: now_ms(),
            };
            match verdict {
                Verdict::Launch(id) => {
                    let mut holdings = Vec::new();
                    let mut need = task.resources;
                    for (pool, left) in pools.iter_mut() {
                        if need.is_empty() {
                            break;
                        }
                        let take = need.min(*left);
                        if !take.is_empty() {
                            *left = left.minus(take);
                            need = need.minus(take);
                            holdings.push((pool.clone(), take));
                        }
                    }
                    let mut staging =
                        TaskStatus::new(id.clone(), TaskState::Staging, Source::Master, now_ms());
                    staging.agent = agent.clone();
                    self.tasks.insert(id, entry(staging, holdings));
                    launch.push(task);
                }
                Verdict::Refused {
                    task: id,
                    state,
                    reason,
                } => {
                    tracing::info!(framework = %framework, task = %id, %state, %reason, "launch refused");
                    let staging =
                        TaskStatus::new(id.clone(), TaskState::Staging, Source::Master, now_ms());
                    // A refused task whose id is in use must not replace the task that
                    // uses it: the framework hears of it, the books do not change.
                    if self.tasks.contains_key(&id) {
                        self.send_framework(
                            &framework,
                            SchedulerMsg::Update {
                                status: master_status(&id, state, reason),
                                ack: None,
                            },
                        );
                        continue;
                    }
                    let mut e = entry(staging, Vec::new());
                    e.agent = None;
                    self.tasks.insert(id.clone(), e);
                    self.apply_status(master_status(&id, state, reason), None)
                        .await;
                }
            }
        }
        // What the tasks leave of the offers goes back.
        if let Some(agent) = &agent {
            for (reservation, left) in pools {
                if !left.is_empty() && valid {
                    self.tell_allocator(AllocatorMsg::Recover {
                        framework: framework.clone(),
                        agent: agent.clone(),
                        resources: left,
                        reservation,
                        refuse,
                    })
                    .await;
                }
            }
            if !launch.is_empty() {
                match self.agents.get(agent) {
                    Some(a) => a.outbox.send(AgentMsg::Launch {
                        framework: framework.clone(),
                        tasks: launch,
                    }),
                    None => {
                        for task in launch {
                            let status = master_status(
                                &task.id,
                                TaskState::Dropped,
                                "its agent left before the launch",
                            );
                            self.apply_status(status, None).await;
                        }
                    }
                }
            }
        }
    }

    fn kill(&mut self, id: &TaskId) -> Result<(), String> {
        let task = self
            .tasks
            .get(id)
            .ok_or_else(|| format!("no task {id} is known to the master"))?;
        let state = task.status.state;
        if state.is_terminal() {
            return Err(format!("task {id} already ended: {state}"));
        }
        let agent = task
            .agent
            .as_ref()
            .and_then(|a| self.agents.get(a))
            .ok_or_else(|| format!("task {id} has no agent to kill it"))?;
        if !agent.reachable {
            return Err(format!(
                "task {id}'s agent {} is unreachable; it is killed when the agent comes back",
                agent.info.id
            ));
        }
        agent.outbox.send(AgentMsg::Kill { task: id.clone() });
        Ok(())
    }

    fn reconcile(&self, framework: &FrameworkId, tasks: Vec<TaskId>) {
        let tasks: Vec<TaskId> = if tasks.is_empty() {
            self.tasks
                .iter()
                .filter(|(_, t)| &t.framework == framework && !t.status.state.is_terminal())
                .map(|(t, _)| t.clone())
                .collect()
        } else {
            tasks
        };
        for id in tasks {
            let status = match self.tasks.get(&id).filter(|t| &t.framework == framework) {
                Some(t) => t.status.clone(),
                None => master_status(
                    &id,
                    TaskState::Unknown,
                    "the master does not know this task",
                ),
            };
            self.send_framework(framework, SchedulerMsg::Update { status, ack: None });
        }
    }

    async fn agent_health(&mut self, id: AgentId, reachable: bool, reason: String) {
        let Some(agent) = self.agents.get_mut(&id) else {
            return;
        };
        if reachable {
            if !agent.reachable {
                tracing::info!(agent = %id, %reason, "agent heard from again; asking it to register");
                agent.outbox.send(AgentMsg::Reregister);
            }
            return;
        }
        if !agent.reachable {
            return;
        }
        tracing::warn!(agent = %id, %reason, "agent unreachable");
        agent.reachable = false;
        agent.unreachable_since = Some(Instant::now());
        self.rescind_agent_offers(&id).await;
        self.tell_allocator(AllocatorMsg::RemoveAgent { agent: id.clone() })
            .await;
        // Frameworks hear that the agent is lost, then what that means for each task.
        let frameworks: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
        for fw in frameworks {
            self.send_framework(&fw, SchedulerMsg::AgentLost { agent: id.clone() });
        }
        let tasks: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent.as_ref() == Some(&id) && !t.status.state.is_terminal())
            .map(|(t, _)| t.clone())
            .collect();
        for task in tasks {
            if let Some(t) = self.tasks.get_mut(&task) {
                t.holdings.clear();
            }
            let status = master_status(
                &task,
                TaskState::Unreachable,
                format!("agent {id} is unreachable: {reason}"),
            );
            self.apply_status(status, None).await;
        }
    }

    async fn tick(&mut self) {
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

    async fn remove_agent(&mut self, id: &AgentId) {
        tracing::warn!(agent = %id, "agent removed: unreachable for too long; its tasks are gone");
        self.agents.remove(id);
        self.stop_observer(id).await;
        self.registry.facts.agents.remove(id);
        self.registry.facts.removed_agents.push(id.clone());
        self.save_registry();
        let tasks: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent.as_ref() == Some(id) && !t.status.state.is_terminal())
            .map(|(t, _)| t.clone())
            .collect();
        for task in tasks {
            let status = master_status(&task, TaskState::Gone, format!("agent {id} was removed"));
            self.apply_status(status, None).await;
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
