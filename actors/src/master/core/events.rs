//! The master's event stream: task state changes, agents registered, unreachable and
//! removed, frameworks subscribed, disconnected and removed. Subscribers (the REPL's `watch`,
//! applications) name an [`EventMsg`] receiver on any node; each gets its own outbox, so a
//! slow one never stalls the core, and a monitor ends its subscription when it stops. An
//! outbox holds 10,000 events at most: a subscriber further behind loses the newest ones,
//! and sees the gap in their numbers.
//!
//! The stream starts when the subscription does: it replays nothing. A subscriber that needs
//! the whole picture asks for `State` after subscribing and applies events on top.

use troupe_runtime::Addr;

use super::CoreState;
use crate::outbox::BoundedOutbox;
use crate::protocol::EventsRefused;
use crate::protocol::{ClusterEvent, EventMsg, MasterMsg, TaskId, now_ms};

/// One subscriber of the event stream.
pub(super) struct Subscriber {
    outbox: BoundedOutbox<EventMsg>,
    watch: troupe_runtime::Ref,
    /// Events it missed because it fell behind.
    dropped: u64,
}

/// How many events may wait for one subscriber; beyond, new ones are dropped for it (it
/// sees a gap in the numbers) rather than held in the master's memory.
const SUBSCRIBER_BACKLOG: usize = 10_000;

/// The most subscribers one master serves; each costs an outbox and a monitor.
const MAX_SUBSCRIBERS: usize = 1_000;

impl CoreState {
    pub(super) async fn subscribe_events(
        &mut self,
        to: String,
        node: Option<String>,
    ) -> Result<(), EventsRefused> {
        if !troupe_runtime::addr::valid_path(&to) {
            return Err(EventsRefused::InvalidPath { path: to });
        }
        if self.subscribers.len() >= MAX_SUBSCRIBERS && !self.subscribers.contains_key(&to) {
            return Err(EventsRefused::TooMany {
                limit: MAX_SUBSCRIBERS,
            });
        }
        let addr = match &node {
            Some(node) => Addr::<EventMsg>::on(node.clone(), to.clone()),
            None => Addr::<EventMsg>::new(to.clone()),
        };
        let myself = self.myself.clone();
        let path = to.clone();
        // Without a monitor, nothing would end the subscription: refuse it instead.
        let watch = troupe_runtime::monitor_with(&addr, move |down| {
            if let troupe_runtime::DownReason::Lost(why) = down.reason {
                // As for frameworks: the core starts again (and its subscribers, whose
                // stream ends with the core, subscribe again).
                myself.stop(Some(format!("its monitors were lost: {why}")));
                return;
            }
            let _ = myself.cast(MasterMsg::UnsubscribeEvents { to: path });
        })
        .await
        .map_err(|e| EventsRefused::CannotWatch {
            path: to.clone(),
            cause: e.to_string(),
        })?;
        if let Some(old) = self.subscribers.insert(
            to,
            Subscriber {
                outbox: BoundedOutbox::new(addr, SUBSCRIBER_BACKLOG),
                watch,
                dropped: 0,
            },
        ) {
            troupe_runtime::demonitor(&old.watch);
        }
        Ok(())
    }

    pub(super) fn unsubscribe_events(&mut self, to: &str) {
        if let Some(sub) = self.subscribers.remove(to) {
            troupe_runtime::demonitor(&sub.watch);
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
        for (path, sub) in self.subscribers.iter_mut() {
            if !sub.outbox.send(message.clone()) {
                sub.dropped += 1;
                if sub.dropped.is_power_of_two() {
                    tracing::warn!(subscriber = %path, dropped = sub.dropped, "an event subscriber falls behind; its events are dropped");
                }
            }
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
            troupe_runtime::demonitor(&sub.watch);
        }
    }
}
