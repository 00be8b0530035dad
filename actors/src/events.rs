//! The master's event stream for applications: task state changes, agents registered,
//! unreachable and removed, frameworks subscribed, disconnected and removed.
//!
//! ```ignore
//! let mut events = Events::subscribe(Addr::on(master_node, MASTER_PATH)).await?;
//! while let Some(e) = events.next().await {
//!     println!("{} {:?}", e.seq, e.event);
//! }
//! // None: the master core went away (it restarted, or its node did); subscribe again.
//! ```
//!
//! An inbox of this process (at `events/<node>/<n>`) takes the master's [`EventMsg`]s and
//! hands them to the channel behind [`Events::next`], which holds 10,000 at most: a reader
//! further behind loses the newest, and sees the gap in their numbers (as it does when the
//! master's own outbox to it fills). The master drops a
//! subscriber that stops; dropping [`Events`] unsubscribes. The stream replays nothing:
//! ask the master for `State` after subscribing, and apply events on top.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::mpsc;
use troupe_runtime::{Addr, Node};

use crate::protocol::{ClusterEvent, EventMsg, MasterMsg};

/// How many events may wait for [`Events::next`]; beyond, new ones are dropped (the
/// numbers show the gap), so a slow reader's memory stays bounded.
const BACKLOG: usize = 10_000;

/// How long subscribing may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its number in the master's stream (a gap means events were lost).
    pub seq: u64,
    /// When it happened (ms since the Unix epoch).
    pub at_ms: u64,
    /// What happened.
    pub event: ClusterEvent,
}

/// Why subscribing failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// This process runs no node.
    #[error("this process runs no node")]
    NoNode,
    /// The receiver could not start.
    #[error("cannot start the event receiver: {0}")]
    Receiver(String),
    /// The master did not take the subscription.
    #[error("the master did not take the subscription: {0}")]
    Refused(String),
}

/// A subscription to the master's events.
pub struct Events {
    rx: mpsc::Receiver<EventMsg>,
    receiver: ActorRef<EventMsg>,
    path: String,
    master: Addr<MasterMsg>,
    watch: Option<troupe_runtime::Ref>,
}

impl Events {
    /// Subscribes to the events of the master at `master`.
    pub async fn subscribe(master: Addr<MasterMsg>) -> Result<Events, EventsError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let node = Node::current().ok_or(EventsError::NoNode)?;
        let path = format!(
            "events/{}/{}",
            node.name(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (receiver, rx) = troupe_runtime::inbox::bounded_inbox::<EventMsg>(&path, BACKLOG)
            .await
            .map_err(|e| EventsError::Receiver(e.to_string()))?;
        // The stream ends when the master core goes: its subscriptions went with it.
        let on_down = receiver.clone();
        let watch = troupe_runtime::monitor_with(&master, move |_| on_down.stop(None))
            .await
            .ok();
        let to = path.clone();
        let answer = master
            .call(
                |reply| MasterMsg::SubscribeEvents {
                    to,
                    node: Some(node.name().to_string()),
                    reply,
                },
                SUBSCRIBE_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|refused| refused.to_string()));
        let events = Events {
            rx,
            receiver,
            path,
            master,
            watch,
        };
        match answer {
            Ok(()) => Ok(events),
            Err(e) => Err(EventsError::Refused(e)),
        }
    }

    /// The next event; `None` once the master core is gone.
    pub async fn next(&mut self) -> Option<Event> {
        let EventMsg::Event { seq, at_ms, event } = self.rx.recv().await?;
        Some(Event { seq, at_ms, event })
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            troupe_runtime::demonitor(&watch);
        }
        let master = self.master.clone();
        let to = self.path.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = master.send(MasterMsg::UnsubscribeEvents { to }).await;
            });
        }
        self.receiver.stop(None);
    }
}
