//! An inbox: an actor registered at a path that hands every message it receives to a
//! channel, for code that wants messages from the cluster without writing an actor (a
//! command's log receiver, an event subscription, a test).

use ractor::{Actor, ActorProcessingErr, ActorRef, Message};
use tokio::sync::mpsc;

/// Starts an inbox at `path`: messages sent there come out of the returned channel. The
/// actor stops when it is stopped, or when the channel's receiver is dropped and the next
/// message arrives.
pub async fn inbox<M: Message>(
    path: &str,
) -> Result<(ActorRef<M>, mpsc::UnboundedReceiver<M>), ractor::SpawnErr> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _) = Actor::spawn(
        None,
        Inbox(std::marker::PhantomData),
        (path.to_string(), tx),
    )
    .await?;
    Ok((actor, rx))
}

struct Inbox<M>(std::marker::PhantomData<fn() -> M>);

impl<M: Message> Actor for Inbox<M> {
    type Msg = M;
    type State = mpsc::UnboundedSender<M>;
    type Arguments = (String, mpsc::UnboundedSender<M>);

    async fn pre_start(
        &self,
        myself: ActorRef<M>,
        (path, tx): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        crate::addr::register(&path, &myself)?;
        Ok(tx)
    }

    async fn handle(
        &self,
        myself: ActorRef<M>,
        message: M,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if tx.send(message).is_err() {
            myself.stop(None);
        }
        Ok(())
    }
}
