//! The framework registry: subscriptions (again, after a failover), disconnections and
//! failover timeouts, removal, and reconciliation.

use std::time::{Duration, Instant};

use troupe_runtime::Addr;

use super::{CoreState, FrameworkEntry, master_status, valid_role};
use crate::master::allocator::AllocatorMsg;
use crate::outbox::Outbox;
use crate::protocol::SubscribeRefused;
use crate::protocol::{
    AgentId, AgentMsg, ClusterEvent, FrameworkId, FrameworkInfo, MasterMsg, SchedulerMsg, TaskId,
    TaskState, now_ms,
};

/// How long a framework known only from its agents' reports waits to subscribe again.
const RECOVERED_FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

impl CoreState {
    pub(super) async fn subscribe(
        &mut self,
        mut info: FrameworkInfo,
    ) -> Result<FrameworkId, SubscribeRefused> {
        if info.name.trim().is_empty() {
            return Err(SubscribeRefused::NoName);
        }
        if !valid_role(&info.role) {
            return Err(SubscribeRefused::InvalidRole {
                role: info.role.clone(),
            });
        }
        if !troupe_runtime::addr::valid_path(&info.driver) {
            return Err(SubscribeRefused::InvalidDriver {
                path: info.driver.clone(),
            });
        }
        // An id the master does not know is taken as it is (a framework that subscribed
        // to a master before a restart without a registry, or a built-in one with a fixed
        // id); only a removed framework's id is refused.
        let id = match info.id.clone() {
            Some(id) if self.registry.facts.removed_frameworks.contains(&id) => {
                return Err(SubscribeRefused::Removed { framework: id });
            }
            Some(id) if troupe_runtime::addr::valid_path(&format!("framework/{id}")) => id,
            Some(id) => return Err(SubscribeRefused::InvalidId { id: id.0 }),
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
            return Err(SubscribeRefused::RoleChanged);
        }
        // Offers made to its previous connection are void.
        let stale = self.offer_ids(|o| o.framework == id);
        for offer in stale {
            self.return_offer(&offer, None).await;
        }
        let driver = Addr::<SchedulerMsg>::new(info.driver.clone());
        let core = self.myself.clone();
        let (fw, path) = (id.clone(), info.driver.clone());
        let watch = troupe_runtime::monitor_with(&driver, move |down| {
            if let troupe_runtime::DownReason::Lost(why) = down.reason {
                // The core's monitors went with the node's kernel: it starts again, and
                // rebuilds them from registrations as after any restart.
                core.stop(Some(format!("its monitors were lost: {why}")));
                return;
            }
            let _ = core.cast(MasterMsg::own(
                crate::protocol::MasterOwnMsg::FrameworkDown {
                    framework: fw,
                    driver: path,
                },
            ));
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
        self.publish(ClusterEvent::FrameworkSubscribed {
            framework: id.clone(),
            name: info.name.clone(),
        });
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
            let mine = self.task_ids(|t| t.framework == id);
            for task in mine {
                self.track(&task).await;
            }
        }
        Ok(id)
    }

    /// Books a framework that agents report tasks of but that never subscribed to this
    /// master (it subscribed to the master before a restart without a registry) as
    /// disconnected: it has the default failover timeout to subscribe again, and its
    /// agents' updates wait for it meanwhile; after that it is removed like any other.
    pub(super) fn recover_framework(&mut self, id: &FrameworkId) {
        if self.frameworks.contains_key(id) || self.registry.facts.removed_frameworks.contains(id) {
            return;
        }
        tracing::info!(framework = %id, "a framework known only from its tasks; waiting for it to subscribe again");
        self.frameworks.insert(
            id.clone(),
            FrameworkEntry {
                info: FrameworkInfo {
                    id: Some(id.clone()),
                    name: id.to_string(),
                    role: "*".into(),
                    failover_timeout: RECOVERED_FAILOVER_TIMEOUT,
                    driver: String::new(),
                },
                connected: false,
                disconnected_at: Some(Instant::now()),
                outbox: None,
                watch: None,
                allocated: false,
            },
        );
    }

    /// Has every agent with tasks of `framework` resend its unacknowledged updates now.
    pub(super) fn hurry_updates(&self, framework: &FrameworkId) {
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

    pub(super) async fn framework_down(&mut self, framework: FrameworkId, driver: String) {
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
        self.publish(ClusterEvent::FrameworkDisconnected {
            framework: framework.clone(),
        });
        self.tell_allocator(AllocatorMsg::SetActive {
            framework: framework.clone(),
            active: false,
        })
        .await;
        let offers = self.offer_ids(|o| o.framework == framework);
        for offer in offers {
            self.return_offer(&offer, None).await;
        }
    }

    pub(super) async fn remove_framework(&mut self, framework: &FrameworkId, why: &str) {
        let Some(mut fw) = self.frameworks.remove(framework) else {
            return;
        };
        tracing::info!(framework = %framework, why, "framework removed; its tasks are killed");
        self.publish(ClusterEvent::FrameworkRemoved {
            framework: framework.clone(),
            reason: why.to_string(),
        });
        if let Some(watch) = fw.watch.take() {
            troupe_runtime::demonitor(&watch);
        }
        let offers = self.offer_ids(|o| &o.framework == framework);
        for offer in offers {
            self.offers.remove(&offer);
        }
        let tasks = self.task_ids(|t| &t.framework == framework && !t.status.state.is_terminal());
        // The kills are recorded in the registry with the framework's removal, in one write.
        for task in &tasks {
            let _ = self.kill_then_save(task, false, None);
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
        self.registry.facts.framework_removed(framework.clone());
        self.save_registry();
        // From now on the master acknowledges for it: what agents hold for it goes now.
        self.hurry_updates(framework);
    }

    pub(super) fn reconcile(&self, framework: &FrameworkId, tasks: Vec<TaskId>) {
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
}
