//! Heartbeats between connected nodes, judged by the phi-accrual detector.
//!
//! Every node runs a heartbeat actor at `node/<name>/heartbeat`. On each tick it sends a
//! beat to the heartbeat actor of every connected peer and asks its detectors whether a
//! peer has been silent for too long. A suspected peer is declared down: its session is
//! closed, so every monitor on it fires `NodeDown` (once) and its remote actors go away, and
//! a later message reconnects as usual.
//!
//! A closed TCP session is noticed without any of this; heartbeats are for the peer that is
//! there but silent (hung, stopped, partitioned).
//!
//! A node whose own scheduler stalls (or that was itself stopped) would see every peer as
//! silent when it wakes, with the beats still queued behind the tick. So a tick that comes
//! late does not judge; it restarts every peer's clock instead.

use std::collections::HashMap;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::warn;

use crate::addr::Addr;
pub use crate::detector::HeartbeatConfig;
use crate::detector::PhiAccrual;
use crate::node::Node;

/// The path of a node's heartbeat actor.
pub fn heartbeat_path(node: &str) -> String {
    format!("node/{node}/heartbeat")
}

/// What the heartbeat actor accepts.
#[derive(Debug, Serialize, Deserialize, troupe_macros::RemoteMessage)]
pub enum HeartbeatMsg {
    /// A peer is alive.
    Beat {
        /// The peer's name.
        from: String,
    },
    /// Time to beat and to judge (sent by the actor's own timer).
    Tick,
}

pub(crate) struct Heartbeat;

pub(crate) struct HeartbeatState {
    node: Node,
    config: HeartbeatConfig,
    detectors: HashMap<String, PhiAccrual>,
    handles: HashMap<String, Addr<HeartbeatMsg>>,
    last_tick: Instant,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for Heartbeat {
    type Msg = HeartbeatMsg;
    type State = HeartbeatState;
    type Arguments = (Node, HeartbeatConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<HeartbeatMsg>,
        (node, config): (Node, HeartbeatConfig),
    ) -> Result<HeartbeatState, ActorProcessingErr> {
        crate::addr::register(&heartbeat_path(node.name()), &myself)?;
        node.set_service("heartbeat", myself.get_cell());
        let timer = myself.send_interval(config.interval, || HeartbeatMsg::Tick);
        Ok(HeartbeatState {
            node,
            config,
            detectors: HashMap::new(),
            handles: HashMap::new(),
            last_tick: Instant::now(),
            timer: Some(timer),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<HeartbeatMsg>,
        state: &mut HeartbeatState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<HeartbeatMsg>,
        message: HeartbeatMsg,
        state: &mut HeartbeatState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match message {
            HeartbeatMsg::Beat { from } => {
                // Only connected peers are judged; a beat that raced a disconnection is
                // ignored rather than resurrecting a detector.
                if state.node.is_connected(&from) {
                    let config = &state.config.detector;
                    state
                        .detectors
                        .entry(from)
                        .or_insert_with(|| PhiAccrual::new(config.clone()))
                        .heartbeat(now);
                }
            }
            HeartbeatMsg::Tick => {
                let late =
                    now.saturating_duration_since(state.last_tick) > state.config.interval * 2;
                state.last_tick = now;
                let peers = state.node.connected_peers();
                state.detectors.retain(|peer, _| peers.contains(peer));
                state.handles.retain(|peer, _| peers.contains(peer));
                let me = state.node.name().to_string();
                for peer in &peers {
                    let handle = state
                        .handles
                        .entry(peer.clone())
                        .or_insert_with(|| Addr::on(peer.clone(), heartbeat_path(peer)));
                    if let Ok(target) = handle.lookup() {
                        let beat = HeartbeatMsg::Beat { from: me.clone() };
                        let _ = ActorRef::<HeartbeatMsg>::from(target.cell).cast(beat);
                    }
                }
                if late {
                    // This node was stalled, not its peers: restart their clocks.
                    for detector in state.detectors.values_mut() {
                        detector.forgive(now);
                    }
                    return Ok(());
                }
                let suspected: Vec<(String, f64)> = state
                    .detectors
                    .iter()
                    .filter(|(_, d)| d.is_suspected(now))
                    .map(|(peer, d)| (peer.clone(), d.phi(now)))
                    .collect();
                for (peer, phi) in suspected {
                    let silent = state.detectors[&peer]
                        .last_heartbeat()
                        .map(|t| now.saturating_duration_since(t))
                        .unwrap_or_default();
                    warn!(%peer, phi, ?silent, "peer declared down by the failure detector");
                    state.detectors.remove(&peer);
                    // In the background: the beats to every other peer must not wait for it.
                    let node = state.node.clone();
                    tokio::spawn(async move { node.disconnect(&peer).await });
                }
            }
        }
        Ok(())
    }
}
