//! The ping server every node runs at `node/<name>/ping`: the cheapest proof that a node is
//! up, reachable and shares our cookie. `troupe ping` calls it.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

use crate::codec::Reply;
use crate::node::Node;

/// The path of a node's ping server.
pub fn ping_path(node: &str) -> String {
    format!("node/{node}/ping")
}

/// What the ping server accepts.
#[derive(Debug, Serialize, Deserialize, troupe_macros::RemoteMessage)]
pub enum PingMsg {
    /// Answer with a [`Pong`].
    Ping {
        /// Where the answer goes.
        reply: Reply<Pong>,
    },
}

/// A ping's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The node's name.
    pub node: String,
    /// The troupe version it runs.
    pub version: String,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// Peers it is connected to.
    pub peers: Vec<String>,
}

pub(crate) struct PingServer;

impl Actor for PingServer {
    type Msg = PingMsg;
    type State = Node;
    type Arguments = Node;

    async fn pre_start(
        &self,
        myself: ActorRef<PingMsg>,
        node: Node,
    ) -> Result<Node, ActorProcessingErr> {
        // Registered and slotted here, so that a restart by the node supervisor does both
        // again.
        crate::addr::register(&ping_path(node.name()), &myself)?;
        node.set_service("ping", myself.get_cell());
        Ok(node)
    }

    async fn handle(
        &self,
        _myself: ActorRef<PingMsg>,
        message: PingMsg,
        node: &mut Node,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PingMsg::Ping { reply } => {
                reply.send(Pong {
                    node: node.name().to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    uptime_ms: node.uptime().as_millis() as u64,
                    peers: node.connected_peers(),
                });
            }
        }
        Ok(())
    }
}
