//! The agent registry: registrations (and the tasks they bring back), observers, health
//! judgements, status updates from agents, and agents removed for good.

use std::collections::HashSet;
use std::time::Instant;

use troupe_runtime::supervisor::{ChildSpec, Restart};
use troupe_runtime::{Addr, Child, Node};

use super::{AgentEntry, CoreState, TaskEntry, master_status};
use crate::master::allocator::AllocatorMsg;
use crate::master::observer::{Observer, ObserverArgs};
use crate::outbox::Outbox;
use crate::protocol::{
    AgentId, AgentInfo, AgentMsg, ClusterEvent, FrameworkId, RegistrationRefused, ReportedTask,
    Resources, SchedulerMsg, TaskId, TaskState,
};

impl CoreState {
    pub(super) async fn register_agent(
        &mut self,
        info: AgentInfo,
        reported: Vec<ReportedTask>,
    ) -> Result<(), RegistrationRefused> {
        if self.registry.facts.removed_agents.contains(&info.id) {
            // A new life of a removed agent, with nothing running, is a new agent; the
            // removed life itself (or an agent that predates lives) never comes back.
            let removed_life = self.registry.facts.removed_lives.get(&info.id);
            let fresh = info.life != 0 && removed_life != Some(&info.life) && reported.is_empty();
            if !fresh {
                return Err(RegistrationRefused::Removed {
                    agent: info.id.clone(),
                });
            }
            tracing::warn!(agent = %info.id, "a removed agent registers again as a new life, with no tasks");
            self.registry.facts.removed_agents.retain(|a| a != &info.id);
            self.registry.facts.removed_lives.remove(&info.id);
            self.save_registry();
        }
        if !info.resources.is_valid() {
            return Err(RegistrationRefused::InvalidResources {
                resources: info.resources.to_string(),
            });
        }
        // A name held by a connected agent is not taken over by another one: that would
        // make the live agent's tasks `Gone` while they run, and count its resources free.
        // The same agent again (same host and work directory: restarted, or registering
        // again) is the recovery case and is let in.
        if let Some(live) = self.agents.get(&info.id).filter(|a| a.reachable) {
            let same = live.info.hostname == info.hostname && live.info.work_dir == info.work_dir;
            if !same {
                tracing::warn!(agent = %info.id, live = %live.info.addr, newcomer = %info.addr, "registration refused: the name is held by a connected agent");
                return Err(RegistrationRefused::NameTaken {
                    agent: info.id.clone(),
                    addr: live.info.addr.clone(),
                    host: live.info.hostname.clone(),
                    work_dir: live.info.work_dir.clone(),
                });
            }
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
        self.publish(ClusterEvent::AgentRegistered {
            agent: info.clone(),
        });
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
        for report in reported {
            let ReportedTask {
                framework,
                status,
                resources,
                name,
                command,
                launched_ms,
            } = report;
            seen.insert(status.task.clone());
            let task = status.task.clone();
            self.recover_framework(&framework);
            if !self.tasks.contains_key(&task) {
                let launched_ms = if launched_ms == 0 {
                    status.timestamp_ms
                } else {
                    launched_ms
                };
                self.tasks.insert(
                    task.clone(),
                    TaskEntry {
                        framework: framework.clone(),
                        agent: Some(id.clone()),
                        name,
                        command,
                        resources,
                        holdings: Vec::new(),
                        status: status.clone(),
                        launched_ms,
                        kill_requested: false,
                        reached_agent: true,
                        pid: status.pid,
                    },
                );
            }
            if let Some(t) = self.tasks.get_mut(&task) {
                t.reached_agent = true;
            }
            self.apply_status(status, None).await;
            self.track(&task).await;
            // A kill asked for while the agent was away (or before a master restart, kept
            // in the registry) is delivered now.
            let pending = self.registry.facts.pending_kills.contains(&task);
            if let Some(t) = self.tasks.get_mut(&task) {
                t.kill_requested |= pending;
                if t.kill_requested && !t.status.state.is_terminal() {
                    tracing::info!(agent = %id, task = %task, "delivering a kill recorded while the agent was away");
                    if let Some(a) = self.agents.get(&id) {
                        a.outbox.send(AgentMsg::Kill {
                            task: task.clone(),
                            grace: None,
                        });
                    }
                }
            }
        }
        // The tasks placed there that it does not report: those it had are gone with its
        // previous life; those it never spoke of may have been lost on the way (launched
        // while it was stopped, restarting or cut off) or may still be on the way. The
        // agent is asked, through the same ordered outbox as the launches: what it does not
        // have by then it never runs, and the master calls it `Dropped`.
        let mut unconfirmed = Vec::new();
        let mut lost = Vec::new();
        for (t, e) in &self.tasks {
            if e.agent.as_ref() != Some(&id) || e.status.state.is_terminal() || seen.contains(t) {
                continue;
            }
            if e.reached_agent {
                lost.push(t.clone());
            } else {
                unconfirmed.push((t.clone(), e.launched_ms));
            }
        }
        for task in lost {
            let status = master_status(
                &task,
                TaskState::Gone,
                "its agent registered again without it",
            );
            self.apply_status(status, None).await;
        }
        if !unconfirmed.is_empty() {
            if let Some(a) = self.agents.get(&id) {
                tracing::info!(agent = %id, tasks = unconfirmed.len(), "asking the agent about launches it did not report");
                a.outbox.send(AgentMsg::Confirm {
                    launches: unconfirmed,
                });
            }
        }
        self.start_observer(&info).await;
        Ok(())
    }

    /// The agent's answer to [`AgentMsg::Confirm`]: these launches never reached it and
    /// never will. Each task still waiting for that launch ends `Dropped`, and its
    /// framework may launch it again.
    pub(super) async fn launches_lost(&mut self, agent: &AgentId, launches: Vec<(TaskId, u64)>) {
        for (task, launched_ms) in launches {
            let waiting = self.tasks.get(&task).is_some_and(|t| {
                t.agent.as_ref() == Some(agent)
                    && t.launched_ms == launched_ms
                    && !t.reached_agent
                    && !t.status.state.is_terminal()
            });
            if !waiting {
                continue;
            }
            tracing::info!(agent = %agent, task = %task, "launch lost on the way to its agent: dropped");
            let mut status = master_status(
                &task,
                TaskState::Dropped,
                format!(
                    "its launch never reached agent {agent} (the agent restarted or was cut off before it arrived); it never ran"
                ),
            );
            status.agent = Some(agent.clone());
            self.apply_status(status, None).await;
        }
    }

    /// Has the allocator count a live task's resources, once both its agent and its
    /// framework are known to it.
    pub(super) async fn track(&mut self, id: &TaskId) {
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

    pub(super) async fn start_observer(&mut self, info: &AgentInfo) {
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

    pub(super) async fn stop_observer(&mut self, agent: &AgentId) {
        if let Some(observers) = self.observers().await {
            let child_id = format!("agent/{agent}");
            let _ = observers.terminate_child(&child_id).await;
            let _ = observers.delete_child(&child_id).await;
        }
    }

    pub(super) async fn status_from_agent(
        &mut self,
        agent: AgentId,
        update: crate::protocol::Update,
    ) {
        let crate::protocol::Update {
            id,
            framework,
            status,
        } = update;
        if self.registry.facts.removed_frameworks.contains(&framework) {
            // Its framework was removed: nobody will acknowledge, so the master does (as
            // Mesos does for completed frameworks), or the agent's stream for the task
            // would wait forever behind this update.
            if let Some(a) = self.agents.get(&agent) {
                a.outbox.send(AgentMsg::Acknowledge {
                    task: status.task.clone(),
                    update: id,
                });
            }
            self.apply_status(status, None).await;
            return;
        }
        self.recover_framework(&framework);
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
                    kill_requested: false,
                    reached_agent: true,
                    pid: status.pid,
                },
            );
        }
        self.apply_status(status, Some(id)).await;
    }

    pub(super) async fn agent_health(&mut self, id: AgentId, reachable: bool, reason: String) {
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
        self.publish(ClusterEvent::AgentUnreachable {
            agent: id.clone(),
            reason: reason.clone(),
        });
        self.rescind_agent_offers(&id).await;
        self.tell_allocator(AllocatorMsg::RemoveAgent { agent: id.clone() })
            .await;
        // Frameworks hear that the agent is lost, then what that means for each task.
        let frameworks: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
        for fw in frameworks {
            self.send_framework(&fw, SchedulerMsg::AgentLost { agent: id.clone() });
        }
        let tasks =
            self.task_ids(|t| t.agent.as_ref() == Some(&id) && !t.status.state.is_terminal());
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

    pub(super) async fn remove_agent(&mut self, id: &AgentId) {
        tracing::warn!(agent = %id, "agent removed: unreachable for too long; its tasks are gone");
        if let Some(agent) = self.agents.get(id) {
            let life = agent.info.life;
            self.registry.facts.removed_lives.insert(id.clone(), life);
            // Heard when the partition heals, should its connection outlive it; otherwise
            // its next registration is refused as removed, which says the same.
            agent.outbox.send(AgentMsg::Removed { life });
        }
        self.agents.remove(id);
        self.publish(ClusterEvent::AgentRemoved { agent: id.clone() });
        self.stop_observer(id).await;
        self.registry.facts.agents.remove(id);
        self.registry.facts.removed_agents.push(id.clone());
        self.save_registry();
        let tasks =
            self.task_ids(|t| t.agent.as_ref() == Some(id) && !t.status.state.is_terminal());
        for task in tasks {
            let status = master_status(&task, TaskState::Gone, format!("agent {id} was removed"));
            self.apply_status(status, None).await;
        }
    }

    pub(super) async fn rescind_agent_offers(&mut self, agent: &AgentId) {
        let ids = self.offer_ids(|o| &o.agent == agent);
        for id in ids {
            if let Some(offer) = self.offers.remove(&id) {
                self.send_framework(&offer.framework, SchedulerMsg::Rescind { offer: id });
            }
        }
    }
}
