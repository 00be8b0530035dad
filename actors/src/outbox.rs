//! An outbox: messages to one address, sent in order by a task of their own, so that an
//! actor never waits on a slow or unreachable peer while it handles its mailbox.

use tokio::sync::mpsc;
use troupe_runtime::Addr;

/// The sending half; dropping it ends the sender once what is queued went out.
#[derive(Debug)]
pub struct Outbox<M> {
    tx: mpsc::UnboundedSender<M>,
}

impl<M: ractor::Message> Outbox<M> {
    /// An outbox to `addr`.
    pub fn new(addr: Addr<M>) -> Outbox<M> {
        let (tx, mut rx) = mpsc::unbounded_channel::<M>();
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if let Err(e) = addr.send(message).await {
                    tracing::debug!(to = %addr, cause = %e.error, "message not delivered");
                }
            }
        });
        Outbox { tx }
    }

    /// Queues a message.
    pub fn send(&self, message: M) {
        let _ = self.tx.send(message);
    }
}

/// An outbox that holds at most `capacity` messages: for a receiver that may fall behind
/// for good (an event subscriber), where memory must stay bounded and a dropped message is
/// better than a master that swells. Dropping it drops what is still queued: the receiver
/// it was for is gone or unwanted.
#[derive(Debug)]
pub struct BoundedOutbox<M> {
    tx: mpsc::Sender<M>,
    sender: tokio::task::JoinHandle<()>,
}

impl<M> Drop for BoundedOutbox<M> {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

impl<M: ractor::Message> BoundedOutbox<M> {
    /// An outbox to `addr` holding at most `capacity` messages.
    pub fn new(addr: Addr<M>, capacity: usize) -> BoundedOutbox<M> {
        let (tx, mut rx) = mpsc::channel::<M>(capacity.max(1));
        let sender = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if let Err(e) = addr.send(message).await {
                    tracing::debug!(to = %addr, cause = %e.error, "message not delivered");
                }
            }
        });
        BoundedOutbox { tx, sender }
    }

    /// Queues a message; `false` when the outbox is full and the message was dropped.
    pub fn send(&self, message: M) -> bool {
        self.tx.try_send(message).is_ok()
    }
}
