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
