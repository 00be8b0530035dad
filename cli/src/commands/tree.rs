//! `troupe tree [--node HOST:PORT] [--json] [--depth N]`: the cluster's actor tree. It asks
//! the master for its agents, asks every node's inspector for a snapshot (the master's,
//! each agent's), and draws node → supervisors → actors and process actors. A node that
//! does not answer is shown as unreachable, not left out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use troupe_actors::protocol::ClusterState;
use troupe_runtime::Node;
use troupe_runtime::inspector::{ActorKind, ActorSnapshot, NodeSnapshot, inspect};

use super::Failure;
use super::client::{Client, ClusterArgs, command_node, connect_failure};

/// How long a node has to answer.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Arguments of `troupe tree`.
#[derive(Debug, Args)]
pub(crate) struct TreeArgs {
    /// One node only, by its address, instead of the whole cluster.
    #[arg(long, value_name = "HOST:PORT", value_parser = super::values::host_port)]
    node: Option<SocketAddr>,
    /// JSON for scripts: every node with its snapshot.
    #[arg(long)]
    json: bool,
    /// How many levels of actors to draw under each node.
    #[arg(long, value_name = "N")]
    depth: Option<usize>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// The cluster's tree: one entry per node.
#[derive(Debug, Serialize)]
pub(crate) struct ClusterTree {
    pub(crate) nodes: Vec<NodeTree>,
}

/// One node: what it is in the cluster, and its snapshot or why there is none.
#[derive(Debug, Serialize)]
pub(crate) struct NodeTree {
    pub(crate) node: String,
    pub(crate) addr: Option<String>,
    /// What runs there: `master`, `agent <id>`...
    pub(crate) roles: Vec<String>,
    pub(crate) reachable: bool,
    pub(crate) error: Option<String>,
    pub(crate) snapshot: Option<NodeSnapshot>,
}

/// One node's entry: its snapshot, or why it did not answer.
pub(crate) async fn snapshot_of(node: &str, roles: Vec<String>, addr: Option<String>) -> NodeTree {
    match inspect(node, INSPECT_TIMEOUT).await {
        Ok(snapshot) => NodeTree {
            node: node.to_string(),
            addr,
            roles,
            reachable: true,
            error: None,
            snapshot: Some(snapshot),
        },
        Err(e) => NodeTree {
            node: node.to_string(),
            addr,
            roles,
            reachable: false,
            error: Some(e.to_string()),
            snapshot: None,
        },
    }
}

pub(crate) async fn run(args: TreeArgs) -> Result<(), Failure> {
    let tree = match args.node {
        Some(addr) => one_node(&args, addr).await?,
        None => whole_cluster(&args).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tree)?);
    } else {
        print!("{}", draw(&tree, args.depth));
    }
    Ok(())
}

async fn one_node(args: &TreeArgs, addr: SocketAddr) -> Result<ClusterTree, Failure> {
    let (node, owned) = command_node(&args.cluster.cookie, addr, None).await?;
    let result = match node.connect(addr).await {
        Ok(name) => Ok(ClusterTree {
            nodes: vec![snapshot_of(&name, Vec::new(), Some(addr.to_string())).await],
        }),
        Err(e) => Err(connect_failure(e, &format!("a node at {addr}"))),
    };
    if owned {
        node.stop().await;
    }
    result
}

async fn whole_cluster(args: &TreeArgs) -> Result<ClusterTree, Failure> {
    let client = Client::connect(&args.cluster).await?;
    let result = match client.state(false).await {
        Ok(state) => Ok(gather(&client.node, &state, Some(args.cluster.master.to_string())).await),
        Err(e) => Err(e),
    };
    client.close().await;
    result
}

/// Every node of the cluster the master knows (its own, each agent's) with its snapshot,
/// asked for all at once; `master_addr` is how the master was reached.
pub(crate) async fn gather(
    node: &Node,
    state: &ClusterState,
    master_addr: Option<String>,
) -> ClusterTree {
    // Node → its address and what runs there, the master first.
    let mut nodes: BTreeMap<String, (Option<String>, Vec<String>)> = BTreeMap::new();
    nodes
        .entry(state.master.clone())
        .or_insert((master_addr, Vec::new()))
        .1
        .push("master".into());
    for agent in &state.agents {
        if agent.info.node != state.master && agent.info.node != node.name() {
            if let Ok(addr) = agent.info.addr.parse() {
                node.add_peer(&agent.info.node, addr);
            }
        }
        let entry = nodes
            .entry(agent.info.node.clone())
            .or_insert((Some(agent.info.addr.clone()), Vec::new()));
        let note = if agent.reachable {
            ""
        } else {
            " (unreachable)"
        };
        entry.1.push(format!("agent {}{note}", agent.info.id));
    }
    let asks = nodes
        .into_iter()
        .map(|(node, (addr, roles))| async move { snapshot_of(&node, roles, addr).await });
    ClusterTree {
        nodes: join_all(asks).await,
    }
}

/// Runs the futures together; the answers in their order.
async fn join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

fn label(a: &ActorSnapshot) -> String {
    let name = a
        .paths
        .first()
        .cloned()
        .or_else(|| a.name.clone())
        .or_else(|| a.child.as_ref().map(|c| c.id.clone()))
        .unwrap_or_else(|| a.id.clone());
    let kind = match a.kind {
        ActorKind::Supervisor => {
            let strategy = a
                .supervisor
                .as_ref()
                .and_then(|s| serde_json::to_value(s.flags.strategy).ok())
                .and_then(|v| v.as_str().map(|s| format!(" {s}")))
                .unwrap_or_default();
            format!("supervisor{strategy}")
        }
        ActorKind::System => "system".into(),
        ActorKind::Process => "process".into(),
        ActorKind::Worker => "actor".into(),
    };
    let mut parts = vec![format!("{name}  [{kind}] {}", a.status.to_lowercase())];
    if let Some(child) = a.child.as_ref().filter(|c| c.restarts > 0) {
        parts.push(format!("restarts {}", child.restarts));
    }
    if let Some(depth) = a.mailbox_depth {
        parts.push(format!("mailbox {depth}"));
    }
    if a.kind == ActorKind::Process {
        for key in ["pid", "command", "cpu_ms", "memory_bytes"] {
            if let Some(v) = a.details.get(key) {
                parts.push(format!("{key} {v}"));
            }
        }
    }
    parts.join(", ")
}

fn draw_actor(
    a: &ActorSnapshot,
    prefix: &str,
    last: bool,
    depth: usize,
    max: Option<usize>,
    out: &mut String,
) {
    let branch = if last { "└── " } else { "├── " };
    out.push_str(&format!("{prefix}{branch}{}\n", label(a)));
    if max.is_some_and(|m| depth + 1 >= m) {
        if !a.children.is_empty() {
            let more = if last { "    " } else { "│   " };
            out.push_str(&format!("{prefix}{more}… {} more\n", a.children.len()));
        }
        return;
    }
    let next = format!("{prefix}{}", if last { "    " } else { "│   " });
    for (i, c) in a.children.iter().enumerate() {
        draw_actor(c, &next, i + 1 == a.children.len(), depth + 1, max, out);
    }
}

fn draw(tree: &ClusterTree, depth: Option<usize>) -> String {
    let mut out = String::new();
    for n in &tree.nodes {
        let addr = n
            .addr
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default();
        let roles = if n.roles.is_empty() {
            String::new()
        } else {
            format!("  {}", n.roles.join(", "))
        };
        out.push_str(&format!("node {}{addr}{roles}\n", n.node));
        match &n.snapshot {
            Some(s) if depth != Some(0) => {
                for (i, a) in s.actors.iter().enumerate() {
                    draw_actor(a, "", i + 1 == s.actors.len(), 0, depth, &mut out);
                }
            }
            Some(_) => {}
            None => out.push_str(&format!(
                "└── unreachable: {}\n",
                n.error.as_deref().unwrap_or("no answer")
            )),
        }
    }
    out
}
