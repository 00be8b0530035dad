//! `troupe node`: a bare node, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use troupe_runtime::{ChannelConfig, HeartbeatConfig, Node, NodeConfig};

use super::{CookieArgs, Failure};

/// Arguments of `troupe node`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The node's name, unique in the cluster.
    #[arg(long)]
    name: String,
    /// A peer to know from the start, as NAME=HOST:PORT (repeatable).
    #[arg(long = "peer", value_name = "NAME=HOST:PORT", value_parser = parse_peer)]
    peers: Vec<(String, SocketAddr)>,
    #[command(flatten)]
    node: NodeFlags,
}

/// The flags of every command that runs a node (`node`, `master`, `agent`, `dev`), in one
/// place: where it listens and is reached, its cookie, how it watches its peers, and its
/// message channel.
#[derive(Debug, Args)]
pub(crate) struct NodeFlags {
    /// Where to listen, HOST:PORT (port 0 picks a free one). Default: 127.0.0.1:5050 for
    /// `master` and `dev`, 127.0.0.1:0 for `agent` and `node`.
    #[arg(long, value_name = "HOST:PORT", value_parser = super::values::host_port)]
    listen: Option<SocketAddr>,
    /// The address peers use to reach this node (default: the listen address).
    #[arg(long, value_name = "HOST:PORT", value_parser = super::values::host_port)]
    advertise: Option<SocketAddr>,
    #[command(flatten)]
    pub(crate) cookie: CookieArgs,
    #[command(flatten)]
    detector: DetectorArgs,
    #[command(flatten)]
    channel: ChannelArgs,
}

/// Where `troupe agent` and `troupe node` listen by default: a free port on loopback.
pub(crate) const ANY_LOOPBACK_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl NodeFlags {
    /// The heartbeat configuration the detector flags ask for (the master's observers of
    /// agents use it too).
    pub(crate) fn detector(&self) -> Result<Option<HeartbeatConfig>, Failure> {
        self.detector.config()
    }

    /// Where the node listens: `--listen`, or the command's default.
    pub(crate) fn listen_or(&self, default: SocketAddr) -> SocketAddr {
        self.listen.unwrap_or(default)
    }

    /// The node's configuration: these flags, its name, and its peers known from the start.
    pub(crate) fn config(
        &self,
        name: &str,
        default_listen: SocketAddr,
        peers: Vec<(String, SocketAddr)>,
    ) -> Result<NodeConfig, Failure> {
        let mut config =
            NodeConfig::new(name, self.listen_or(default_listen), self.cookie.resolve()?);
        config.advertise = self.advertise;
        config.peers = peers;
        config.heartbeat = self.detector.config()?;
        config.channel = self.channel.config();
        Ok(config)
    }

    /// Starts this process's node as `name`.
    pub(crate) async fn start(
        &self,
        name: &str,
        default_listen: SocketAddr,
        peers: Vec<(String, SocketAddr)>,
    ) -> Result<Node, Failure> {
        let config = self.config(name, default_listen, peers)?;
        let listen = config.listen;
        Node::start(config).await.map_err(|e| match e {
            // Already says where and why: `cannot listen on ADDR: address already in use`.
            troupe_runtime::NodeError::Listen { .. } => Failure::from(e.to_string()),
            e => Failure::from(format!("cannot start the node on {listen}: {e}")),
        })
    }
}

/// Where a node's message channel listens (shared by every command that runs a node).
#[derive(Debug, Args)]
pub(crate) struct ChannelArgs {
    /// The port of the message channel, the connection that carries messages to this node
    /// beside the session (default: one of the system's choosing, told to peers over the
    /// session). Set it where a firewall must know the port.
    #[arg(long, value_name = "PORT")]
    channel_port: Option<u16>,
    /// Carry messages over the ractor_cluster sessions only, as troupe before the message
    /// channel did (slower; for a network that lets no second port through).
    #[arg(long, conflicts_with = "channel_port")]
    no_message_channel: bool,
}

impl ChannelArgs {
    /// The channel configuration these flags ask for.
    pub(crate) fn config(&self) -> ChannelConfig {
        match (self.no_message_channel, self.channel_port) {
            (true, _) => ChannelConfig::Off,
            (false, Some(port)) => ChannelConfig::Port(port),
            (false, None) => ChannelConfig::AnyPort,
        }
    }
}

/// How a node watches its peers for silence (shared by every command that runs a node).
#[derive(Debug, Args)]
pub(crate) struct DetectorArgs {
    /// Milliseconds between heartbeats to each connected peer; 0 turns heartbeats off.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    heartbeat_ms: u64,
    /// The phi-accrual threshold above which a silent peer is declared down. Higher is
    /// slower to suspect and less likely to be wrong.
    #[arg(long, value_name = "PHI", default_value = "8", allow_negative_numbers = true, value_parser = super::values::phi)]
    phi_threshold: f64,
}

impl DetectorArgs {
    /// The heartbeat configuration these flags ask for.
    pub(crate) fn config(&self) -> Result<Option<HeartbeatConfig>, Failure> {
        if self.heartbeat_ms == 0 {
            return Ok(None);
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            return Err(Failure::from(format!(
                "--phi-threshold must be a positive number, got {}",
                self.phi_threshold
            )));
        }
        let mut config = HeartbeatConfig::every(Duration::from_millis(self.heartbeat_ms));
        config.detector.threshold = self.phi_threshold;
        Ok(Some(config))
    }
}

pub(crate) fn parse_peer(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=HOST:PORT, got {s:?}"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    Ok((name.to_string(), addr))
}

pub(crate) async fn run(args: NodeArgs) -> Result<(), Failure> {
    // Install the handlers before announcing the node: a SIGTERM right after the
    // "listening" line must stop the node cleanly, not kill the process.
    let shutdown = shutdown_signals()?;
    let node = args
        .node
        .start(&args.name, ANY_LOOPBACK_PORT, args.peers)
        .await?;
    // Scripts and tests wait for this line: print it once the listener is bound.
    println!(
        "node {} listening on {}",
        node.name(),
        node.advertise_addr()
    );
    shutdown.await;
    tracing::info!(node = %node.name(), "shutting down");
    tokio::time::timeout(Duration::from_secs(10), node.stop())
        .await
        .map_err(|_| Failure::from("the node did not stop within 10 s"))?;
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now; the returned future resolves on either.
pub(crate) fn shutdown_signals() -> Result<impl std::future::Future<Output = ()>, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
