//! The master's event stream: task state changes, agents registered, unreachable and
//! removed, frameworks subscribed, disconnected and removed. Subscribers (the REPL's `watch`,
//! applications) name an [`EventMsg`] receiver on any node; each gets its own outbox, so a
//! slow one never stalls the core, and a monitor ends its subscription when it stops.
//!
//! The stream starts when the subscription does: it replays nothing. A subscriber that needs
//! the whole picture asks for `State` after subscribing and applies events on top.

use troupe_runtime::Addr;

use super::CoreState;
use crate::outbox::Outbox;
use crate::protocol::{ClusterEvent, EventMsg, MasterMsg, TaskId, now_ms};

/// One subscriber of the event stream.
pub(super) struct Subscriber {
    outbox: Outbox<EventMsg>,
    watch: Option<troupe_runtime::Ref>,
}

/// The most subscribers one master serves; each costs an outbox and a monitor.
const MAX_SUBSCRIBERS: usize = 1_000;

impl CoreState {
    pub(super) async fn subscribe_events(
        &mut self,
        to: String,
        node: Option<String>,
    ) -> Result<(), String> {
        if !troupe_runtime::addr::valid_path(&to) {
            return Err(format!("{to:?} is not a valid path"));
        }
        if self.subscribers.len() >= MAX_SUBSCRIBERS && !self.subscribers.contains_key(&to) {
            return Err(format!(
                "the master already serves {MAX_SUBSCRIBERS} event subscribers"
            ));
        }
        let addr = match &node {
            Some(node) => Addr::<EventMsg>::on(node.clone(), to.clone()),
            None => Addr::<EventMsg>::new(to.clone()),
        };
        let myself = self.myself.clone();
        let path = to.clone();
        let watch = troupe_runtime::monitor_with(&addr, move |_down| {
            let _ = myself.cast(MasterMsg::UnsubscribeEvents { to: path });
        })
        .await
        .ok();
        if let Some(old) = self.subscribers.insert(
            to,
            Subscriber {
                outbox: Outbox::new(addr),
                watch,
            },
        ) {
            if let Some(watch) = old.watch {
                troupe_runtime::demonitor(&watch);
            }
        }
        Ok(())
    }

    pub(super) fn unsubscribe_events(&mut self, to: &str) {
        if let Some(sub) = self.subscribers.remove(to) {
            if let Some(watch) = sub.watch {
                troupe_runtime::demonitor(&watch);
            }
        }
    }

    /// Tells every subscriber.
    pub(super) fn publish(&mut self, event: ClusterEvent) {
        self.event_seq += 1;
        if self.subscribers.is_empty() {
            return;
        }
        let message = EventMsg::Event {
            seq: self.event_seq,
            at_ms: now_ms(),
            event,
        };
        for sub in self.subscribers.values() {
            sub.outbox.send(message.clone());
        }
    }

    /// Tells every subscriber how a task is now.
    pub(super) fn publish_task(&mut self, id: &TaskId) {
        if let Some(task) = self.tasks.get(id) {
            let task = super::view(id, task);
            self.publish(ClusterEvent::Task { task });
        }
    }

    pub(super) fn drop_subscribers(&mut self) {
        for (_, sub) in std::mem::take(&mut self.subscribers) {
            if let Some(watch) = sub.watch {
                troupe_runtime::demonitor(&watch);
            }
        }
    }
}
