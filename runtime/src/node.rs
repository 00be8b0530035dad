//! Nodes: one OS process in the cluster, reachable by name. This module is the transport,
//! the lowest floor of the runtime above the codec: it imports no node service.
//!
//! ```text
//! Node (this module; one per OS process, as ractor's pg and registry are process-global)
//! ├── ractor_cluster NodeServer      listener + one NodeSession per peer (Isolated mode)
//! ├── message channels               one TCP connection each way per peer for messages
//! │                                  (node/channel.rs; tasks, not actors)
//! ├── the peer table                 (node/peers.rs)
//! └── the endpoint actor             node/<name>/endpoint: barriers, channel tickets,
//!                                    peers leaving (node/endpoint.rs)
//! ```
//!
//! The node's services (the kernel, ping, the spawner, the inspector, heartbeat, and the
//! endpoint) run under the node supervisor that `crate::system` starts with
//! [`Node::start`]; the transport knows them only as cells by name
//! (`Node::set_service`). A node learns of its peers from configuration, from
//! [`Node::add_peer`], and from every peer that connects to it; the first message sent to
//! a known but unconnected node opens the connection ([`Node::ensure_connected`]).

pub(crate) mod channel;
pub(crate) mod endpoint;
mod peers;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::broadcast;

use crate::cookie::Cookie;
use crate::detector::HeartbeatConfig;
use peers::Peers;

/// How long [`Node::connect`] waits for a handshake by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How nodes protect their connections.
///
/// Only plain TCP is offered today. TLS plugs in here: ractor_cluster takes a rustls acceptor
/// (`IncomingEncryptionMode::Tls`) for the listener and a connector (`client_connect_enc`)
/// for outgoing sessions, and [`Node::start`] and [`Node::connect`] are the two places that
/// choose between them; the message channel (`node/channel.rs`) would wrap its connections
/// in the same acceptor and connector, in `accept` and `connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Plain TCP, authenticated by the cookie's challenge–response handshake.
    #[default]
    Plain,
}

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name, unique in the cluster: letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// Where to listen. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The address peers should use to reach this node; defaults to `listen`.
    pub advertise: Option<SocketAddr>,
    /// The cluster cookie.
    pub cookie: Cookie,
    /// Plain TCP or (later) TLS.
    pub transport: Transport,
    /// Peers known from the start, by name and address.
    pub peers: Vec<(String, SocketAddr)>,
    /// How long a connection attempt may take, handshake included.
    pub connect_timeout: Duration,
    /// How peers are watched for silence; `None` turns heartbeats off (a closed connection
    /// is still noticed at once).
    pub heartbeat: Option<HeartbeatConfig>,
    /// The message channel (`node/channel.rs`): where it listens, or off.
    pub channel: ChannelConfig,
}

/// Where a node's message channel listens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChannelConfig {
    /// On the listen address's host, a port of the system's choosing (told to peers over
    /// the session).
    #[default]
    AnyPort,
    /// On the listen address's host and this port: for firewalls.
    Port(u16),
    /// No channel: this node's messages go through the ractor_cluster sessions, and so do
    /// its peers' messages to it.
    Off,
}

impl NodeConfig {
    /// A configuration with defaults for everything but name, address and cookie.
    pub fn new(name: impl Into<String>, listen: SocketAddr, cookie: Cookie) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            listen,
            advertise: None,
            cookie,
            transport: Transport::Plain,
            peers: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            heartbeat: Some(HeartbeatConfig::default()),
            channel: ChannelConfig::AnyPort,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The name is empty or has characters that cannot be part of a path.
    #[error("invalid node name {name:?}: use letters, digits, '-', '_' and '.'")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// Another node already runs in this OS process.
    #[error("node {running} already runs in this process (one node per OS process)")]
    AlreadyRunning {
        /// The running node's name.
        running: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        cause: String,
    },
    /// One of the node's own actors failed to start.
    #[error("cannot start the node's {what}: {cause}")]
    Spawn {
        /// Which actor.
        what: &'static str,
        /// Why.
        cause: String,
    },
}

/// Why a connection to a peer failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConnectError {
    /// Nothing accepted the TCP connection.
    #[error("cannot reach {addr}: {cause}")]
    Unreachable {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        cause: String,
    },
    /// The peer answered but refused our cookie, or we refused its.
    #[error(
        "{addr} refused the connection: the cookies differ (check --cookie, TROUPE_COOKIE or the cookie file)"
    )]
    CookieRefused {
        /// The address tried.
        addr: SocketAddr,
        /// The peer's name, when the handshake got far enough to tell it.
        node: Option<String>,
    },
    /// The peer closed the connection before the handshake began: not a troupe node, or an
    /// incompatible version.
    #[error(
        "{addr} closed the connection during the handshake: is it a troupe node of this version?"
    )]
    Handshake {
        /// The address tried.
        addr: SocketAddr,
    },
    /// The handshake did not finish in time.
    #[error("no handshake with {addr} within {after:?}")]
    Timeout {
        /// The address tried.
        addr: SocketAddr,
        /// The time waited.
        after: Duration,
    },
    /// The node name is not in the peer table, so there is no address to connect to.
    #[error("node {node} is unknown: no address to connect to")]
    UnknownNode {
        /// The name.
        node: String,
    },
    /// This node has stopped.
    #[error("this node has stopped")]
    Stopped,
}

/// A change in the set of connected peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A peer connected and finished its handshake.
    Up {
        /// Its name.
        node: String,
        /// The socket address of the session.
        addr: String,
    },
    /// The last session with a peer closed.
    Down {
        /// Its name.
        node: String,
        /// The socket address of the session.
        addr: String,
    },
    /// A connection closed before its handshake finished (most often: the cookies differ).
    HandshakeFailed {
        /// The peer's name, when the handshake told it.
        node: Option<String>,
        /// The socket address of the session.
        addr: String,
    },
}

pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) listen: SocketAddr,
    pub(crate) advertise: SocketAddr,
    pub(crate) connect_timeout: Duration,
    pub(crate) started: std::time::Instant,
    server: ActorRef<NodeServerMessage>,
    pub(crate) peers: Mutex<Peers>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    /// Connections closed before their handshake finished: wrong cookies, and anything that
    /// is not a troupe node sending bytes to the port (garbage, truncated or oversized
    /// frames, which ractor_cluster refuses by closing the session).
    handshake_failures: std::sync::atomic::AtomicU64,
    /// The node's own services by name, each recorded by the service as it starts (again),
    /// and the node supervisor over them under `supervisor` (see `crate::system`). The
    /// transport knows them only as cells: each service's module gives its typed handle.
    services: Mutex<std::collections::HashMap<&'static str, ActorCell>>,
    /// Set once the node stops: a service that goes then is no failure.
    stopping: std::sync::atomic::AtomicBool,
    pub(crate) channels: channel::Channels,
}

/// The actor an address resolved to, and the node it lives on.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) cell: ActorCell,
    pub(crate) node: String,
}

/// A handle to the running node of this OS process. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.shared.name)
            .field("advertise", &self.shared.advertise)
            .finish()
    }
}

static CURRENT: RwLock<Option<Node>> = RwLock::new(None);

/// The scope of troupe's process groups in ractor's `pg`.
pub(crate) const SCOPE: &str = "troupe";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Resolves port 0 to a concrete free port, so that the node can tell peers where it is.
/// A fixed port is bound once here too, so that a port in use is reported as such (the
/// node server's own bind failure only surfaces as a failed actor start).
fn concrete_listen(listen: SocketAddr) -> Result<SocketAddr, NodeError> {
    let probe = TcpListener::bind(listen).map_err(|e| NodeError::Listen {
        addr: listen,
        cause: listen_cause(&e),
    })?;
    if listen.port() != 0 {
        return Ok(listen);
    }
    probe.local_addr().map_err(|e| NodeError::Listen {
        addr: listen,
        cause: e.to_string(),
    })
}

/// Why a listener could not bind, in words an operator acts on.
fn listen_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address already in use".into(),
        std::io::ErrorKind::AddrNotAvailable => "no such address on this host".into(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need root)".into()
        }
        _ => e.to_string(),
    }
}

impl Node {
    /// Starts this process's node's transport: binds the listener and the message channel,
    /// and makes it the current node. (`Node::start`, in `crate::system`, then starts the
    /// node's services.)
    pub(crate) async fn start_transport(config: NodeConfig) -> Result<Node, NodeError> {
        if !valid_name(&config.name) {
            return Err(NodeError::InvalidName { name: config.name });
        }
        if let Some(running) = Node::current() {
            return Err(NodeError::AlreadyRunning {
                running: running.name().to_string(),
            });
        }
        let listen = concrete_listen(config.listen)?;
        let advertise = match config.advertise {
            Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), listen.port()),
            Some(a) => a,
            None if listen.ip().is_unspecified() => {
                SocketAddr::new(IpAddr::from([127, 0, 0, 1]), listen.port())
            }
            None => listen,
        };
        let Transport::Plain = config.transport;
        let server = NodeServer::new(
            advertise.port(),
            config.cookie.expose().to_string(),
            config.name.clone(),
            advertise.ip().to_string(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen.ip());
        // The listener binds `listen.ip()` on the advertised port; they must agree.
        if advertise.port() != listen.port() {
            return Err(NodeError::Listen {
                addr: listen,
                cause: format!(
                    "the advertised port {} differs from the listen port",
                    advertise.port()
                ),
            });
        }
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| NodeError::Listen {
                addr: listen,
                cause: e.to_string(),
            })?;
        let (channels, channel_listener) =
            channel::Channels::bind(config.channel, listen.ip(), advertise.ip())
                .await
                .map_err(|e| {
                    server.stop(None);
                    NodeError::Listen {
                        addr: SocketAddr::new(listen.ip(), 0),
                        cause: format!("message channel listener: {e}"),
                    }
                })?;
        let (events, _) = broadcast::channel(1024);
        let mut peers = Peers::default();
        for (name, addr) in &config.peers {
            peers.add_known(name, *addr);
        }
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            listen,
            advertise,
            connect_timeout: config.connect_timeout,
            started: std::time::Instant::now(),
            server: server.clone(),
            peers: Mutex::new(peers),
            events,
            handshake_failures: std::sync::atomic::AtomicU64::new(0),
            services: Mutex::new(std::collections::HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            channels,
        });
        let node = Node { shared };
        channel::Channels::start(&node, channel_listener);
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: "troupe-peers".into(),
            subscription: Box::new(Subscription {
                shared: Arc::downgrade(&node.shared),
            }),
        });
        {
            let mut current = CURRENT.write().unwrap_or_else(|p| p.into_inner());
            if let Some(running) = current.as_ref() {
                server.stop(None);
                return Err(NodeError::AlreadyRunning {
                    running: running.name().to_string(),
                });
            }
            *current = Some(node.clone());
        }
        tracing::info!(node = %node.name(), listen = %listen, advertise = %advertise, "node transport started");
        Ok(node)
    }

    /// Records the running actor of the node's service `name` (each service does, as it
    /// starts).
    pub(crate) fn set_service(&self, name: &'static str, cell: ActorCell) {
        self.shared
            .services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, cell);
    }

    /// The actor of the node's service `name`, as last recorded (it may have stopped).
    pub(crate) fn service(&self, name: &str) -> Option<ActorCell> {
        self.shared
            .services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Takes the record of service `name` (to stop it).
    pub(crate) fn take_service(&self, name: &str) -> Option<ActorCell> {
        self.shared
            .services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }

    /// Whether the node is stopping (its services going is then no failure).
    pub(crate) fn is_stopping(&self) -> bool {
        self.shared
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The node running in this OS process, if any.
    pub fn current() -> Option<Node> {
        CURRENT.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn clear_current(&self) {
        let mut current = CURRENT.write().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .is_some_and(|n| Arc::ptr_eq(&n.shared, &self.shared))
        {
            *current = None;
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The address the node listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// The address peers reach this node on.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.shared.advertise
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// How many connections closed before their handshake finished since the node started:
    /// refused cookies, and bytes from anything that is not a troupe node.
    pub fn handshake_failures(&self) -> u64 {
        self.shared
            .handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where peers open their message channels to this node (`node/channel.rs`): the
    /// advertised address's host and the port [`ChannelConfig`] asked for; `None` when the
    /// channel is off.
    pub fn channel_addr(&self) -> Option<SocketAddr> {
        self.shared.channels.addr()
    }

    /// Connections to the message channel listener refused for want of a good ticket.
    pub fn channel_refusals(&self) -> u64 {
        self.shared
            .channels
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The message channels open now, both ways.
    pub fn message_channels(&self) -> Vec<channel::ChannelInfo> {
        self.shared.channels.list()
    }

    /// Subscribes to peers coming up and going down.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.subscribe()
    }

    /// Records where a peer can be reached, so that the first message to it connects.
    pub fn add_peer(&self, name: &str, addr: SocketAddr) {
        self.peers().add_known(name, addr);
    }

    /// Names of the peers connected now.
    pub fn connected_peers(&self) -> Vec<String> {
        self.peers().connected()
    }

    /// Whether a peer is connected now.
    pub fn is_connected(&self, node: &str) -> bool {
        node == self.name() || self.peers().is_connected(node)
    }

    /// Waits, up to `within`, until `peer`'s session is recorded as up; returns whether it
    /// is. A peer's actors can be known here (its process groups arrive over its session) a
    /// moment before ractor_cluster reports the session, so a watch placed on one in that
    /// moment would take the peer for down.
    pub(crate) async fn session_settled(&self, peer: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.is_connected(peer) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(crate) fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.shared.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects to the node listening at `addr` and returns its name once the handshake
    /// finished and the process groups are in sync. Returns at once if already connected.
    pub async fn connect(&self, addr: SocketAddr) -> Result<String, ConnectError> {
        if let Some(name) = self.peers().connected_at(addr) {
            return Ok(name);
        }
        let timeout = self.shared.connect_timeout;
        let mut events = self.subscribe();
        let target = addr.to_string();
        match tokio::time::timeout(
            timeout,
            ractor_cluster::client_connect(&self.shared.server, addr),
        )
        .await
        {
            Err(_) => {
                return Err(ConnectError::Timeout {
                    addr,
                    after: timeout,
                });
            }
            Ok(Err(ractor_cluster::ClientConnectErr::Socket(e))) => {
                return Err(ConnectError::Unreachable {
                    addr,
                    cause: e.to_string(),
                });
            }
            Ok(Err(_)) => return Err(ConnectError::Stopped),
            Ok(Ok(())) => {}
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Up { node, addr: a }) if a == target => return Ok(node),
                    Ok(NodeEvent::HandshakeFailed { node, addr: a }) if a == target => {
                        // Lost a simultaneous-connect election: the other session stands.
                        if let Some(name) = self.peers().connected_at(addr) {
                            return Ok(name);
                        }
                        return Err(match node {
                            Some(node) => ConnectError::CookieRefused {
                                addr,
                                node: Some(node),
                            },
                            None => ConnectError::Handshake { addr },
                        });
                    }
                    Ok(NodeEvent::Down { addr: a, .. }) if a == target => {
                        return Err(ConnectError::Unreachable {
                            addr,
                            cause: "the connection closed".into(),
                        });
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(name) = self.peers().connected_at(addr) {
                            return Ok(name);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(ConnectError::Stopped),
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout {
                addr,
                after: timeout,
            }),
        }
    }

    /// Makes sure a session with the named node exists, connecting to its known address
    /// if needed: this is what makes the first message to a node open the connection.
    pub async fn ensure_connected(&self, node: &str) -> Result<(), ConnectError> {
        if self.is_connected(node) {
            return Ok(());
        }
        let addr = self
            .peers()
            .known_addr(node)
            .ok_or_else(|| ConnectError::UnknownNode {
                node: node.to_string(),
            })?;
        self.connect(addr).await.map(|_| ())
    }

    /// Connects to every known peer that is not connected, in parallel. Errors are logged;
    /// returns how many connections succeeded.
    pub async fn connect_known(&self) -> usize {
        let targets = self.peers().unconnected();
        let attempts = targets.into_iter().map(|(name, addr)| {
            let node = self.clone();
            tokio::spawn(async move {
                let result = node.connect(addr).await;
                if let Err(e) = &result {
                    tracing::debug!(peer = %name, cause = %e, "cannot connect to a known peer");
                }
                result.is_ok()
            })
        });
        let mut connected = 0;
        for attempt in attempts.collect::<Vec<_>>() {
            if matches!(attempt.await, Ok(true)) {
                connected += 1;
            }
        }
        connected
    }

    /// Closes every session with `peer`, as if its connection had dropped: monitors on its
    /// actors fire `NodeDown`. The failure detector does this to a silent peer. Returns once
    /// the peer counts as disconnected (or after 5 s); a later message connects again.
    pub async fn disconnect(&self, peer: &str) {
        let sessions =
            match ractor::call_t!(self.shared.server, NodeServerMessage::GetSessions, 5_000) {
                Ok(sessions) => sessions,
                Err(e) => {
                    tracing::warn!(%peer, cause = %e, "could not list sessions to disconnect");
                    return;
                }
            };
        for session in sessions.values() {
            let name = session.peer_name.as_ref().map(|n| n.name.as_str());
            if name.map(peers::node_name) == Some(peer) {
                let _ = session
                    .actor
                    .stop_and_wait(
                        Some(format!("disconnected from {peer}")),
                        Some(Duration::from_secs(5)),
                    )
                    .await;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.is_connected(peer) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Tells every connected peer that this node stops on purpose, and waits (briefly) until
    /// each has heard. The news travels on the sessions about to close, not on a message
    /// channel, which the close could overtake; and the stop waits for a round trip on each
    /// session behind it, since stopping the server would otherwise end a session with the
    /// news still in its mailbox.
    pub(crate) async fn announce_leaving(&self) {
        let peers = self.connected_peers();
        for peer in &peers {
            endpoint::tell(
                peer,
                endpoint::EndpointMsg::Leaving {
                    node: self.name().to_string(),
                },
            );
        }
        let mut heard = tokio::task::JoinSet::new();
        for peer in peers {
            heard.spawn(async move {
                endpoint::session_barrier(&peer, LEAVING_HEARD_WITHIN).await;
            });
        }
        heard.join_all().await;
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops the transport: the message channels, every session and the listener.
    pub(crate) async fn stop_transport(&self) {
        let shared = &self.shared;
        shared.channels.stop();
        let _ = self
            .shared
            .server
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        self.clear_current();
        tracing::info!(node = %self.name(), "node stopped");
    }
}

/// How long a stopping node waits for its peers to have heard that it leaves.
const LEAVING_HEARD_WITHIN: Duration = Duration::from_millis(500);

/// How long an incoming connection may take to authenticate (the cookie handshake) before
/// it is closed: a peer that connects and says nothing holds no session for long.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// How many incoming connections may be in their handshake at once, on the node port and
/// on the message channel's each; more are closed at once (as sshd's `MaxStartups`).
pub const MAX_HANDSHAKING: usize = 64;

/// Feeds ractor_cluster's session callbacks into the peer table and the event stream.
struct Subscription {
    shared: std::sync::Weak<Shared>,
}

impl Subscription {
    fn with(&self, f: impl FnOnce(&mut Peers) -> Option<NodeEvent>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let (event, left) = {
            let mut peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
            let event = f(&mut peers);
            let left = match &event {
                Some(NodeEvent::Down { node, .. }) => peers.left(node),
                _ => false,
            };
            (event, left)
        };
        if let Some(event) = event {
            match &event {
                NodeEvent::Up { node, addr } => tracing::info!(peer = %node, %addr, "node up"),
                // A peer that said it was stopping (a command's node, say) is no alarm.
                NodeEvent::Down { node, addr } if left => {
                    tracing::info!(peer = %node, %addr, "node left")
                }
                NodeEvent::Down { node, addr } => tracing::warn!(peer = %node, %addr, "node down"),
                NodeEvent::HandshakeFailed { node, addr } => {
                    shared
                        .handshake_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match node {
                        Some(peer) => tracing::warn!(
                            %peer,
                            %addr,
                            "refused a connection in its handshake: the cookies differ"
                        ),
                        None => tracing::warn!(
                            %addr,
                            "dropped a connection that sent no valid handshake"
                        ),
                    }
                }
            }
            let _ = shared.events.send(event);
        }
    }
}

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let mut handshaking = 0;
        self.with(|p| {
            p.opened(ses.node_id, ses.peer_addr.clone(), ses.is_server);
            handshaking = p.incoming_handshaking();
            None
        });
        if !ses.is_server {
            return;
        }
        // Bounded in number and in time: an idle or slow connection never finishing its
        // handshake is closed, and a flood of them is refused at once.
        if handshaking > MAX_HANDSHAKING {
            tracing::debug!(addr = %ses.peer_addr, limit = MAX_HANDSHAKING, "closed a connection: too many connections in their handshake");
            ses.actor
                .stop(Some("too many connections in their handshake".into()));
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(HANDSHAKE_LIMIT).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let stale = shared
                .peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .handshaking(ses.node_id);
            if stale {
                tracing::debug!(addr = %ses.peer_addr, limit = ?HANDSHAKE_LIMIT, "closed a connection that did not finish its handshake in time");
                ses.actor.stop(Some("no handshake in time".into()));
            }
        });
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let name = ses.peer_name.as_ref().map(|n| n.name.clone());
        self.with(|p| p.closed(ses.node_id, name.as_deref()));
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let name = ses.peer_name.as_ref().map(|n| n.name.clone());
        self.with(|p| {
            p.authenticated(ses.node_id, name.as_deref());
            None
        });
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let name = ses.peer_name.as_ref().map(|n| n.name.clone());
        let advertised = ses.peer_name.as_ref().map(|n| n.connection_string.clone());
        self.with(|p| p.ready(ses.node_id, name.as_deref(), advertised.as_deref()));
    }
}
