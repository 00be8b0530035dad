//! The node's own services, started under the node supervisor when the node starts:
//!
//! ```text
//! node supervisor (one_for_one, 10 restarts in 10 s)   node/<name>/supervisor
//! ├── endpoint    node/<name>/endpoint    the transport's own: session barriers, channel
//! │                                       tickets, peers leaving (started first, stopped last)
//! ├── kernel      node/<name>/kernel      monitors and links
//! ├── ping        node/<name>/ping        liveness and version
//! ├── spawner     node/<name>/spawner     actors started here on other nodes' behalf
//! ├── inspector   node/<name>/inspector   snapshots, stop/kill/text by path
//! └── heartbeat   node/<name>/heartbeat   failure detection of peers (when heartbeats are on)
//! ```
//!
//! Each service registers its path and fills its slot in the node as it starts, so that a
//! restart makes it reachable again under the same path. A service that fails is restarted
//! alone: the others keep their state. What a restart loses is each service's own state;
//! for the kernel, that is the monitors and links held through it, and every holder is
//! told (see "The node's services" in `docs/runtime-semantics.md`). More than 10 restarts in
//! 10 s and the supervisor gives up: the node's services are gone, which is logged as an
//! error; the node's transport still runs, and the process should be restarted.

use std::time::Duration;

use crate::heartbeat::{Heartbeat, HeartbeatConfig};
use crate::inspector::Inspector;
use crate::kernel::Kernel;
use crate::node::endpoint::Endpoint;
use crate::node::{Node, NodeConfig, NodeError};
use crate::ping::PingServer;
use crate::spawn::Spawner;
use crate::supervisor::{
    Child, ChildSpec, StartCtx, Strategy, SupFlags, SupervisorRef, SupervisorSpec,
};

/// The most restarts of the node's services within [`RESTART_PERIOD`].
pub const RESTART_INTENSITY: u32 = 10;

/// See [`RESTART_INTENSITY`].
pub const RESTART_PERIOD: Duration = Duration::from_secs(10);

/// The path of a node's supervisor.
pub fn supervisor_path(node: &str) -> String {
    format!("node/{node}/supervisor")
}

/// Starts the node's services under the node supervisor (the node's transport runs).
pub(crate) async fn start(
    node: &Node,
    heartbeat: Option<HeartbeatConfig>,
) -> Result<SupervisorRef, NodeError> {
    let service = |id: &str| ChildSpec::worker(id).start(id, Default::default());
    let for_node = |node: &Node| {
        let node = node.clone();
        move || node.clone()
    };
    let (endpoint_node, kernel_node, ping_node, spawner_node, inspector_node) = (
        for_node(node),
        for_node(node),
        for_node(node),
        for_node(node),
        for_node(node),
    );
    let mut spec = SupervisorSpec::new(
        SupFlags::new(Strategy::OneForOne).intensity(RESTART_INTENSITY, RESTART_PERIOD),
    )
    .child(Child::new(service("endpoint"), move |ctx: StartCtx| {
        let node = endpoint_node();
        async move { ctx.spawn(Endpoint, node).await }
    }))
    .child(Child::new(service("kernel"), move |ctx: StartCtx| {
        let node = kernel_node();
        async move { ctx.spawn(Kernel, node).await }
    }))
    .child(Child::new(service("ping"), move |ctx: StartCtx| {
        let node = ping_node();
        async move { ctx.spawn(PingServer, node).await }
    }))
    .child(Child::new(service("spawner"), move |ctx: StartCtx| {
        let node = spawner_node();
        async move { ctx.spawn(Spawner, node).await }
    }))
    .child(Child::new(service("inspector"), move |ctx: StartCtx| {
        let node = inspector_node();
        async move { ctx.spawn(Inspector, node).await }
    }));
    if let Some(config) = heartbeat {
        let heartbeat_node = for_node(node);
        spec = spec.child(Child::new(service("heartbeat"), move |ctx: StartCtx| {
            let args = (heartbeat_node(), config.clone());
            async move { ctx.spawn(Heartbeat, args).await }
        }));
    }
    let system = SupervisorRef::start(spec)
        .await
        .map_err(|e| NodeError::Spawn {
            what: "services",
            cause: e.to_string(),
        })?;
    let _ = crate::addr::register_cell(&supervisor_path(node.name()), &system.cell());
    Ok(system)
}

impl Node {
    /// Starts this process's node: binds the listener and the message channel, then starts
    /// the node's services under the node supervisor (see the module's documentation).
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let heartbeat = config.heartbeat.clone();
        let node = Node::start_transport(config).await?;
        match start(&node, heartbeat).await {
            Ok(system) => node.set_service("supervisor", system.cell()),
            Err(e) => {
                node.stop_transport().await;
                return Err(e);
            }
        }
        tracing::info!(node = %node.name(), "node started");
        Ok(node)
    }

    /// Stops the node: tells its peers it leaves, stops its services (the kernel last, so
    /// that monitors still fire while everything else goes away), then every session and
    /// the listener.
    pub async fn stop(&self) {
        self.announce_leaving().await;
        if let Some(system) = self
            .take_service("supervisor")
            .and_then(SupervisorRef::from_cell)
        {
            system.stop().await;
        }
        self.stop_transport().await;
    }
}
