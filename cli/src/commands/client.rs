//! How operator commands reach the cluster: a short-lived node of their own, connected to
//! the master (`--master`, else `TROUPE_MASTER`, else 127.0.0.1:5050), and local actors that
//! receive what the cluster streams back (task events, log chunks).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use ractor::ActorRef;
use tokio::sync::mpsc;
use troupe_actors::client::{AgentClient, ClientError, MasterClient, Runner};
use troupe_actors::protocol::{AgentInfo, ClusterState, TaskId, TaskLocation};
use troupe_runtime::{AddrError, ConnectError, Node, NodeConfig};

use super::{CookieArgs, Failure};
use crate::exit;

/// The default master address.
pub(crate) const DEFAULT_MASTER: &str = "127.0.0.1:5050";

/// How long a request to the master may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the cluster is.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// The master's address.
    #[arg(long, env = "TROUPE_MASTER", default_value = DEFAULT_MASTER, value_name = "HOST:PORT", value_parser = super::values::host_port)]
    pub(crate) master: SocketAddr,
    #[command(flatten)]
    pub(crate) cookie: CookieArgs,
}

/// A connection to the master, with the client handles of its master core and runner.
pub(crate) struct Client {
    pub(crate) node: Node,
    pub(crate) master_node: String,
    pub(crate) master: MasterClient,
    pub(crate) runner: Runner,
    /// Whether the node is this command's own (else the REPL's session node).
    owned: bool,
}

/// The REPL's node, which the commands it runs share instead of starting their own: one
/// process runs one node.
static SESSION_NODE: std::sync::Mutex<Option<Node>> = std::sync::Mutex::new(None);

/// Makes `node` the node every later command of this process talks through.
pub(crate) fn set_session_node(node: Option<Node>) {
    *SESSION_NODE.lock().unwrap_or_else(|p| p.into_inner()) = node;
}

/// Whether this process is a REPL session.
pub(crate) fn in_session() -> bool {
    SESSION_NODE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some()
}

/// The node a command talks through, towards a peer at `peer`: the session node when there
/// is one (`false`: not the command's to stop), else a new one of its own (`true`).
pub(crate) async fn command_node(
    cookie: &CookieArgs,
    peer: SocketAddr,
    connect_timeout: Option<Duration>,
) -> Result<(Node, bool), Failure> {
    if let Some(node) = SESSION_NODE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        return Ok((node, false));
    }
    let cookie = cookie.resolve()?;
    let local = SocketAddr::new(
        if peer.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        },
        0,
    );
    let mut config = NodeConfig::new(format!("cli-{}", std::process::id()), local, cookie);
    if let Some(timeout) = connect_timeout {
        config.connect_timeout = timeout;
    }
    Ok((Node::start(config).await?, true))
}

/// The exit code and message of a connection failure.
pub(crate) fn connect_failure(e: ConnectError, what: &str) -> Failure {
    let hint = format!("{e} (is {what} running? see --master and TROUPE_MASTER)");
    match e {
        ConnectError::CookieRefused { .. } => Failure::new(exit::COOKIE_REFUSED, e.to_string()),
        ConnectError::Timeout { .. } => Failure::new(exit::TIMEOUT, hint),
        ConnectError::Unreachable { .. } | ConnectError::Handshake { .. } => {
            Failure::new(exit::UNREACHABLE, hint)
        }
        other => Failure::from(other),
    }
}

/// The exit code and message of a failed call through a client handle: the actor's own
/// refusal is a plain failure, with its words. (Not a `From`: `Failure`'s blanket one
/// would give every failed call exit 1; use `.map_err(client_failure)`.)
pub(crate) fn client_failure(e: ClientError) -> Failure {
    match e {
        ClientError::Call(e) => call_failure(e),
        refused => Failure::from(refused.to_string()),
    }
}

/// The exit code and message of a failed call.
pub(crate) fn call_failure(e: AddrError) -> Failure {
    match e {
        AddrError::Timeout { .. } => Failure::new(exit::TIMEOUT, e.to_string()),
        AddrError::CookieRefused { .. } => Failure::new(exit::COOKIE_REFUSED, e.to_string()),
        AddrError::NodeUnreachable { .. } => Failure::new(exit::UNREACHABLE, e.to_string()),
        other => Failure::from(other),
    }
}

impl Client {
    /// Starts this command's node and connects to the master.
    pub(crate) async fn connect(args: &ClusterArgs) -> Result<Client, Failure> {
        let (node, owned) = command_node(&args.cookie, args.master, None).await?;
        let master_node = match node.connect(args.master).await {
            Ok(name) => name,
            Err(e) => {
                if owned {
                    node.stop().await;
                }
                return Err(connect_failure(e, &format!("a master at {}", args.master)));
            }
        };
        Ok(Client {
            master: MasterClient::on(master_node.clone()).with_timeout(REQUEST_TIMEOUT),
            runner: Runner::on(master_node.clone()).with_timeout(REQUEST_TIMEOUT),
            master_node,
            node,
            owned,
        })
    }

    /// The cluster's state.
    pub(crate) async fn state(&self, all: bool) -> Result<ClusterState, Failure> {
        self.master.state(all).await.map_err(client_failure)
    }

    /// Where a task runs.
    pub(crate) async fn locate(&self, task: &TaskId) -> Result<TaskLocation, Failure> {
        self.master.locate(task).await.map_err(client_failure)
    }

    /// The handle of `agent`, its node made known to this one.
    pub(crate) fn agent(&self, agent: &AgentInfo) -> AgentClient {
        AgentClient::of(agent).with_timeout(REQUEST_TIMEOUT)
    }

    /// The path of a local receiver of this command, unique in this process (commands
    /// that share the session node must not share receivers).
    pub(crate) fn local_path(&self, what: &str) -> String {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("cli/{}/{what}-{n}", self.node.name())
    }

    /// Stops this command's node, if it is its own.
    pub(crate) async fn close(self) {
        if self.owned {
            self.node.stop().await;
        }
    }
}

/// A local actor at `path` that hands every message it gets to a channel.
pub(crate) struct Forward<M>(std::marker::PhantomData<fn() -> M>);

impl<M: ractor::Message> Forward<M> {
    /// Starts one at `path`; its messages come out of the returned channel.
    pub(crate) async fn start(
        path: &str,
    ) -> Result<(ActorRef<M>, mpsc::UnboundedReceiver<M>), Failure> {
        troupe_runtime::inbox::inbox(path)
            .await
            .map_err(|e| Failure::from(format!("cannot start a local receiver: {e}")))
    }
}
