//! `troupe tree [--node HOST:PORT] [--json] [--depth N]`: the cluster's actor tree. It asks
//! the master for its agents, asks every node's inspector for a snapshot (the master's,
//! each agent's), and draws node → supervisors → actors and process actors. A node that
//! does not answer is shown as unreachable, not left out. The applied specs follow, each
//! as the supervisor it is, with its children on their agents.

use std::net::SocketAddr;

use clap::Args;
use serde::Serialize;
use troupe_actors::client::{ClusterTree, cluster_tree, node_tree};
use troupe_runtime::inspector::{ActorKind, ActorSnapshot};
use troupe_specs::service::{SpecView, Specs};

use super::Failure;
use super::client::{Client, ClusterArgs, command_node, connect_failure};

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

/// What `troupe tree --json` prints: every node, and the applied specs.
#[derive(Serialize)]
struct Tree {
    #[serde(flatten)]
    cluster: ClusterTree,
    /// The specs (none when one node was asked for).
    specs: Vec<SpecView>,
}

pub(crate) async fn run(args: TreeArgs) -> Result<(), Failure> {
    let tree = match args.node {
        Some(addr) => Tree {
            cluster: one_node(&args, addr).await?,
            specs: Vec::new(),
        },
        None => whole_cluster(&args).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tree)?);
    } else {
        print!("{}", draw(&tree.cluster, args.depth));
        if args.depth != Some(0) {
            print!("{}", draw_specs(&tree.specs));
        }
    }
    Ok(())
}

/// The specs as supervisors: each child with its state, agent, process and restarts; a
/// nested supervisor's children under its path.
fn draw_specs(specs: &[SpecView]) -> String {
    let mut out = String::new();
    if specs.is_empty() {
        return out;
    }
    out.push_str("specs (the spec service, on the master's node)\n");
    for (i, spec) in specs.iter().enumerate() {
        let last = i + 1 == specs.len();
        let failure = spec
            .failure
            .as_deref()
            .map(|f| format!(": {f}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}{}  [spec supervisor] {}{failure}, {}/{} running, restarts {}\n",
            if last { "└── " } else { "├── " },
            spec.name,
            spec.health,
            spec.running,
            spec.desired,
            spec.restarts
        ));
        let prefix = if last { "    " } else { "│   " };
        for (j, child) in spec.children.iter().enumerate() {
            let branch = if j + 1 == spec.children.len() {
                "└── "
            } else {
                "├── "
            };
            let state = child.state.to_string();
            let mut parts = vec![format!("{}  [process] {state}", child.path)];
            if let Some(agent) = &child.agent {
                parts.push(format!("on {agent}"));
            }
            if let Some(process) = &child.process {
                parts.push(process.to_string());
            }
            if !child.ports.is_empty() {
                let ports: Vec<String> = child.ports.iter().map(u16::to_string).collect();
                parts.push(format!("ports {}", ports.join(",")));
            }
            if child.restarts > 0 {
                parts.push(format!("restarts {}", child.restarts));
            }
            out.push_str(&format!("{prefix}{branch}{}\n", parts.join(", ")));
        }
    }
    out
}

async fn one_node(args: &TreeArgs, addr: SocketAddr) -> Result<ClusterTree, Failure> {
    let (node, owned) = command_node(&args.cluster.cookie, addr, None).await?;
    let result = match node.connect(addr).await {
        Ok(name) => Ok(ClusterTree {
            nodes: vec![node_tree(&name, Vec::new(), Some(addr.to_string())).await],
        }),
        Err(e) => Err(connect_failure(e, &format!("a node at {addr}"))),
    };
    if owned {
        node.stop().await;
    }
    result
}

async fn whole_cluster(args: &TreeArgs) -> Result<Tree, Failure> {
    let client = Client::connect(&args.cluster).await?;
    let result = match client.state(false).await {
        Ok(state) => {
            let cluster =
                cluster_tree(&client.node, &state, Some(args.cluster.master.to_string())).await;
            // A master without the spec service (an older one) has no specs to show.
            let specs = Specs::on(client.master_node.clone())
                .list()
                .await
                .unwrap_or_default();
            Ok(Tree { cluster, specs })
        }
        Err(e) => Err(e),
    };
    client.close().await;
    result
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
