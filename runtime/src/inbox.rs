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
    let sink: Sink<M> = Box::new(move |message| tx.send(message).map_err(|_| Closed));
    Ok((start(path, sink).await?, rx))
}

/// An inbox that holds at most `capacity` messages not yet taken: a message that finds it
/// full is dropped, for a sender that may run far ahead of the reader (an event stream,
/// whose numbers then show the gap). Otherwise as [`inbox`].
pub async fn bounded_inbox<M: Message>(
    path: &str,
    capacity: usize,
) -> Result<(ActorRef<M>, mpsc::Receiver<M>), ractor::SpawnErr> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let sink: Sink<M> = Box::new(move |message| match tx.try_send(message) {
        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
    });
    Ok((start(path, sink).await?, rx))
}

/// The reader is gone.
struct Closed;

/// Where an inbox puts a message.
type Sink<M> = Box<dyn FnMut(M) -> Result<(), Closed> + Send>;

async fn start<M: Message>(path: &str, sink: Sink<M>) -> Result<ActorRef<M>, ractor::SpawnErr> {
    let (actor, _) = Actor::spawn(
        None,
        Inbox(std::marker::PhantomData),
        (path.to_string(), sink),
    )
    .await?;
    Ok(actor)
}

struct Inbox<M>(std::marker::PhantomData<fn() -> M>);

impl<M: Message> Actor for Inbox<M> {
    type Msg = M;
    type State = Sink<M>;
    type Arguments = (String, Sink<M>);

    async fn pre_start(
        &self,
        myself: ActorRef<M>,
        (path, sink): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        crate::addr::register(&path, &myself)?;
        Ok(sink)
    }

    async fn handle(
        &self,
        myself: ActorRef<M>,
        message: M,
        sink: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if sink(message).is_err() {
            myself.stop(None);
        }
        Ok(())
    }
}
