//! Offers and launches: offers handed out and given back, launches validated task by task
//! and sent to agents, and kills.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{CoreState, OfferEntry, TaskEntry, master_status};
use crate::master::allocator::AllocatorMsg;
use crate::protocol::{
    AgentId, AgentMsg, FrameworkId, KillAccepted, OfferId, OfferInfo, Resources, SchedulerMsg,
    Source, TaskId, TaskInfo, TaskRefused, TaskState, TaskStatus, now_ms,
};
use crate::validation::{Verdict, validate_launch};

impl CoreState {
    /// An offer goes back to the allocator unused (declined with a filter, rescinded, or
    /// timed out).
    pub(super) async fn return_offer(&mut self, id: &OfferId, refuse: Option<Duration>) {
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

    pub(super) async fn hand_out(
        &mut self,
        offers: Vec<(FrameworkId, AgentId, Resources, Option<String>)>,
    ) {
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
                ports: info.ports,
            });
        }
        for (framework, offers) in by_framework {
            self.send_framework(&framework, SchedulerMsg::Offers { offers });
        }
    }

    pub(super) async fn accept(
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
        let launches_nothing = tasks.is_empty();
        // An id is free again once its task was dropped (it never ran), for the framework
        // that launched it: a launch lost on the way is launched again under the id its
        // submitter holds.
        let verdicts = validate_launch(total, &tasks, |id| {
            self.tasks.get(id).is_some_and(|t| {
                !(t.status.state == TaskState::Dropped && t.framework == framework)
            })
        });
        if valid {
            for id in &offer_ids {
                self.offers.remove(id);
            }
        }
        let mut launch = Vec::new();
        let launched_ms = now_ms();
        for (task, verdict) in tasks.into_iter().zip(verdicts) {
            let entry = |state: TaskStatus, holdings| TaskEntry {
                framework: framework.clone(),
                agent: agent.clone(),
                name: task.name.clone(),
                command: task.command.argv.clone(),
                resources: task.resources,
                holdings,
                status: state,
                launched_ms,
                kill_requested: false,
                reached_agent: false,
                pid: None,
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
                    if self
                        .tasks
                        .insert(id.clone(), entry(staging, holdings))
                        .is_some()
                    {
                        // A dropped task launched again: it is no longer among the ended.
                        self.completed.retain(|c| c != &id);
                    }
                    self.publish_task(&id);
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
        // What the tasks leave of the offers goes back: unfiltered, unless the framework
        // asked for a filter, so that a framework launching a task per offer is offered the
        // rest at once. A launch of nothing is a decline (as in Mesos), filtered for the
        // default time: a framework that cannot use what it was offered is not offered
        // exactly that again and again.
        let refuse = match refuse {
            None if launches_nothing => Some(crate::allocator::engine::DEFAULT_REFUSE),
            refuse => refuse,
        };
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
                        launched_ms,
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

    /// Kills a task, with another grace than its own between its stop signal and SIGKILL
    /// (`None`: its own). The intent is recorded before anything is sent (in the registry
    /// too, when there is one): an agent that cannot be reached now, or that restarts before
    /// the kill reaches it, is sent the kill again when it registers (with the task's own
    /// grace), until the task ends.
    pub(super) fn kill_within(
        &mut self,
        id: &TaskId,
        grace: Option<Duration>,
    ) -> Result<KillAccepted, TaskRefused> {
        self.kill_then_save(id, true, grace)
    }

    /// [`CoreState::kill_within`], leaving the registry's write to the caller when `save` is
    /// false: a framework's removal kills all its tasks and writes the registry once.
    pub(super) fn kill_then_save(
        &mut self,
        id: &TaskId,
        save: bool,
        grace: Option<Duration>,
    ) -> Result<KillAccepted, TaskRefused> {
        let task = self
            .tasks
            .get_mut(id)
            .ok_or_else(|| TaskRefused::Unknown { task: id.clone() })?;
        let state = task.status.state;
        if state.is_terminal() {
            return Err(TaskRefused::Ended {
                task: id.clone(),
                state,
            });
        }
        let Some(agent_id) = task.agent.clone() else {
            return Err(TaskRefused::NoAgent { task: id.clone() });
        };
        task.kill_requested = true;
        if self.registry.facts.pending_kills.insert(id.clone()) && save {
            self.save_registry();
        }
        match self.agents.get(&agent_id).filter(|a| a.reachable) {
            Some(agent) => {
                agent.outbox.send(AgentMsg::Kill {
                    task: id.clone(),
                    grace,
                });
                Ok(KillAccepted::Sent)
            }
            None => {
                tracing::info!(task = %id, agent = %agent_id, "kill recorded; it goes to the agent when it registers again");
                Ok(KillAccepted::Deferred)
            }
        }
    }
}
