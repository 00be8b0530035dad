//! The transport's own actor on each node, `node/<name>/endpoint`: what two nodes'
//! transports tell each other over their session, below every node service.
//!
//! * `Sync`: answered at once, through the session it came by. Once the answer is in, every
//!   process-group change the answering node sent before it has reached the asker (the
//!   session carries both in order): the barrier an address waits behind before it says a
//!   path has no actor.
//! * `OpenChannel`: a peer asks for a ticket to open its message channel to this node.
//! * `Leaving`: the sending node stops on purpose; its going is no failure.
//!
//! It keeps no state of its own; the node supervisor starts it first (see
//! `crate::system`), and a restart loses nothing.

use std::time::{Duration, Instant};

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

use super::channel::ChannelOffer;
use super::{Node, SCOPE};
use crate::codec::{self, Reply};

/// The path of a node's endpoint.
pub(crate) fn endpoint_path(node: &str) -> String {
    format!("node/{node}/endpoint")
}

/// What endpoints say to each other.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum EndpointMsg {
    /// Answered at once, through the session it came by.
    Sync {
        /// The answer.
        reply: Reply<()>,
    },
    /// The node `node` asks for a ticket to open its message channel to this node; `None`
    /// when none can be issued.
    OpenChannel {
        /// The asking node.
        node: String,
        /// The offer.
        reply: Reply<Option<ChannelOffer>>,
    },
    /// The sending node is stopping on purpose: when its sessions close, that is no failure.
    Leaving {
        /// The node.
        node: String,
    },
}

impl ractor::Message for EndpointMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        codec::encode_message(&self)
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        codec::decode_message(bytes)
    }
}

/// The endpoint actor.
pub(crate) struct Endpoint;

impl Actor for Endpoint {
    type Msg = EndpointMsg;
    type State = Node;
    type Arguments = Node;

    async fn pre_start(
        &self,
        myself: ActorRef<EndpointMsg>,
        node: Node,
    ) -> Result<Node, ActorProcessingErr> {
        ractor::pg::join_scoped(
            SCOPE.to_string(),
            endpoint_path(node.name()),
            vec![myself.get_cell()],
        );
        Ok(node)
    }

    async fn handle(
        &self,
        _myself: ActorRef<EndpointMsg>,
        message: EndpointMsg,
        node: &mut Node,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EndpointMsg::Sync { reply } => {
                reply.send(());
            }
            EndpointMsg::OpenChannel { node: peer, reply } => {
                let offer = node.shared.channels.offer(&peer);
                if let Err(e) = &offer {
                    tracing::warn!(%peer, cause = %e, "cannot issue a message channel ticket");
                }
                reply.send(offer.ok().flatten());
            }
            EndpointMsg::Leaving { node: peer } => {
                node.peers().leaving(&peer);
            }
        }
        Ok(())
    }
}

/// The endpoint of `peer`, as this node's process groups know it (through the session).
fn endpoint_of(peer: &str) -> Option<ActorCell> {
    ractor::pg::get_scoped_members(&SCOPE.to_string(), &endpoint_path(peer))
        .into_iter()
        .find(|cell| !cell.get_id().is_local())
}

/// Sends `message` to `peer`'s endpoint through the session; `false` when it is not known
/// (yet) or stopped.
pub(crate) fn tell(peer: &str, message: EndpointMsg) -> bool {
    endpoint_of(peer).is_some_and(|cell| cell.send_message(message).is_ok())
}

/// Waits until the process-group changes `peer` made before now have reached this node: a
/// round trip through the ractor_cluster session, which carries them in order. A message
/// channel is faster than the session, so an answer that says "registered" can arrive
/// before the registration; an address that does not find a path asks this before it says
/// there is no such actor. `false` when the peer did not answer within `within`.
pub(crate) async fn session_barrier(peer: &str, within: Duration) -> bool {
    let (reply, answer) = Reply::channel();
    if !tell(peer, EndpointMsg::Sync { reply }) {
        return false;
    }
    matches!(
        tokio::time::timeout(within, answer.recv()).await,
        Ok(Ok(()))
    )
}

/// Asks `peer`'s endpoint, over the session, for a ticket to open this node's channel to
/// it. `None` when the peer has its channel off, or does not answer by `deadline`.
pub(crate) async fn ask_offer(
    node: &Node,
    peer: &str,
    deadline: Instant,
) -> Result<Option<ChannelOffer>, String> {
    // The endpoint's process group may reach this node a moment after the session is up.
    let endpoint = loop {
        match endpoint_of(peer) {
            Some(cell) => break cell,
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
            None => return Err(format!("cannot find the endpoint of {peer}")),
        }
    };
    let (reply, answer) = Reply::channel();
    let request = EndpointMsg::OpenChannel {
        node: node.name().to_string(),
        reply,
    };
    endpoint
        .send_message(request)
        .map_err(|_| "its endpoint stopped".to_string())?;
    match tokio::time::timeout_at(deadline.into(), answer.recv()).await {
        Ok(Ok(offer)) => Ok(offer),
        Ok(Err(e)) => Err(format!("no ticket: {e}")),
        Err(_) => Ok(None),
    }
}
