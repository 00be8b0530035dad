//! HTTP for operators and monitoring: `--http HOST:PORT` on `troupe master`, `troupe dev`
//! and `troupe agent`.
//!
//! | route | master (and dev) | agent |
//! | --- | --- | --- |
//! | `/health` | 200 when the master core answers, else 503 | 200 when the agent core answers, else 503 |
//! | `/state` | the cluster's state, ended tasks too (like Mesos' `/state`) | — |
//! | `/tree` | the cluster's actor tree (what `troupe tree --json` prints) | this node's tree |
//! | `/metrics` | Prometheus text: tasks, offers, allocation, agents, frameworks, per node | Prometheus text: tasks, usage, this node |
//!
//! Every answer is computed when asked, from the actors themselves: nothing is cached, so
//! `/metrics` and `/state` agree when the cluster is still.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use troupe_actors::master::{ALLOCATOR_PATH, AllocatorMsg, AllocatorStats};
use troupe_actors::protocol::{AgentId, ClusterState, TaskState, TaskUsage};
use troupe_runtime::Addr;
use troupe_runtime::Node;
use troupe_runtime::inspector::NodeSnapshot;

use troupe_actors::client::{
    AgentClient, ClientError, ClusterTree, MasterClient, NodeTree, cluster_tree,
};

/// How long a route waits for the actors it asks.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server fronts.
#[derive(Clone)]
pub(crate) enum Role {
    /// The master (also `troupe dev`'s, whose agents share its node).
    Master,
    /// One agent.
    Agent {
        /// Its id.
        id: String,
    },
}

#[derive(Clone)]
struct Ctx {
    node: Node,
    role: Role,
}

/// Starts serving on `listen`; returns the address it listens on. The server runs until
/// the process ends.
pub(crate) async fn serve(
    listen: SocketAddr,
    node: Node,
    role: Role,
) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot serve HTTP on {listen}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot serve HTTP on {listen}: {e}"))?;
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/tree", get(tree));
    if matches!(role, Role::Master) {
        app = app.route("/state", get(state));
    }
    let app = app.with_state(Ctx { node, role });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(cause = %e, "the HTTP server stopped");
        }
    });
    Ok(local)
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn unavailable(why: impl std::fmt::Display) -> Response {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "status": "unavailable", "error": why.to_string() }),
    )
}

async fn health(State(ctx): State<Ctx>) -> Response {
    match &ctx.role {
        Role::Master => match MasterClient::any().with_timeout(ASK_TIMEOUT).health().await {
            Ok(h) => json(
                StatusCode::OK,
                &serde_json::json!({ "status": "ok", "master": h }),
            ),
            Err(e) => unavailable(format!("the master core does not answer: {e}")),
        },
        Role::Agent { id } => match agent_usage(&ctx, id).await {
            Ok(tasks) => json(
                StatusCode::OK,
                &serde_json::json!({ "status": "ok", "agent": id, "tasks": tasks.len() }),
            ),
            Err(e) => unavailable(format!("the agent core does not answer: {e}")),
        },
    }
}

/// The agent of this node: its tasks' resource use.
async fn agent_usage(ctx: &Ctx, id: &str) -> Result<Vec<TaskUsage>, ClientError> {
    AgentClient::on(ctx.node.name(), &AgentId(id.to_string()))
        .with_timeout(ASK_TIMEOUT)
        .usage()
        .await
}

async fn cluster_state() -> Result<ClusterState, ClientError> {
    MasterClient::any()
        .with_timeout(ASK_TIMEOUT)
        .state(true)
        .await
}

async fn state() -> Response {
    match cluster_state().await {
        Ok(s) => json(StatusCode::OK, &s),
        Err(e) => unavailable(format!("the master core does not answer: {e}")),
    }
}

async fn tree_of(ctx: &Ctx) -> Result<ClusterTree, String> {
    match &ctx.role {
        Role::Master => {
            let state = cluster_state()
                .await
                .map_err(|e| format!("the master core does not answer: {e}"))?;
            let addr = Some(ctx.node.advertise_addr().to_string());
            Ok(cluster_tree(&ctx.node, &state, addr).await)
        }
        Role::Agent { id } => {
            let snapshot = troupe_runtime::inspector::snapshot(&ctx.node).await;
            Ok(ClusterTree {
                nodes: vec![NodeTree {
                    node: ctx.node.name().to_string(),
                    addr: Some(ctx.node.advertise_addr().to_string()),
                    roles: vec![format!("agent {id}")],
                    reachable: true,
                    error: None,
                    snapshot: Some(snapshot),
                }],
            })
        }
    }
}

async fn tree(State(ctx): State<Ctx>) -> Response {
    match tree_of(&ctx).await {
        Ok(t) => json(StatusCode::OK, &t),
        Err(e) => unavailable(e),
    }
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let mut out = Metrics::default();
    let result = match &ctx.role {
        Role::Master => master_metrics(&ctx, &mut out).await,
        Role::Agent { id } => agent_metrics(&ctx, id, &mut out).await,
    };
    match result {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            out.text,
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

async fn master_metrics(ctx: &Ctx, out: &mut Metrics) -> Result<(), String> {
    let state = cluster_state()
        .await
        .map_err(|e| format!("the master core does not answer: {e}"))?;
    // Every state is listed, so that a count going to zero is seen as zero, not as gone.
    let mut by_state: BTreeMap<String, u64> =
        TaskState::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    for t in &state.tasks {
        *by_state.entry(t.status.state.to_string()).or_default() += 1;
    }
    out.family(
        "troupe_tasks",
        "gauge",
        "Tasks the master tracks, by state (ended ones as far as it keeps them).",
    );
    for (s, n) in &by_state {
        out.sample("troupe_tasks", &[("state", s)], *n as f64);
    }
    out.family("troupe_offers", "gauge", "Outstanding offers.");
    out.sample("troupe_offers", &[], state.offers.len() as f64);
    out.family(
        "troupe_agents",
        "gauge",
        "Registered agents, by reachability.",
    );
    let up = state.agents.iter().filter(|a| a.reachable).count();
    out.sample("troupe_agents", &[("state", "reachable")], up as f64);
    out.sample(
        "troupe_agents",
        &[("state", "unreachable")],
        (state.agents.len() - up) as f64,
    );
    out.family(
        "troupe_frameworks",
        "gauge",
        "Known frameworks, by connection.",
    );
    let connected = state.frameworks.iter().filter(|f| f.connected).count();
    out.sample(
        "troupe_frameworks",
        &[("state", "connected")],
        connected as f64,
    );
    out.sample(
        "troupe_frameworks",
        &[("state", "disconnected")],
        (state.frameworks.len() - connected) as f64,
    );
    out.family(
        "troupe_framework_share",
        "gauge",
        "Each framework's dominant share, as the allocator counts it.",
    );
    for f in &state.frameworks {
        out.sample(
            "troupe_framework_share",
            &[("framework", &f.id.0), ("name", &f.info.name)],
            f.share,
        );
    }
    if let Some(stats) = allocator_stats().await {
        out.family(
            "troupe_allocation_seconds",
            "summary",
            "Time the allocator spends deciding, per allocation cycle.",
        );
        out.sample(
            "troupe_allocation_seconds",
            &[("quantile", "0.5")],
            stats.recent_p50,
        );
        out.sample(
            "troupe_allocation_seconds",
            &[("quantile", "0.99")],
            stats.recent_p99,
        );
        out.sample("troupe_allocation_seconds_sum", &[], stats.seconds);
        out.sample("troupe_allocation_seconds_count", &[], stats.cycles as f64);
    }
    let tree = cluster_tree(
        &ctx.node,
        &state,
        Some(ctx.node.advertise_addr().to_string()),
    )
    .await;
    node_metrics(&tree, out);
    Ok(())
}

async fn allocator_stats() -> Option<AllocatorStats> {
    let allocator = Addr::<AllocatorMsg>::new(ALLOCATOR_PATH)
        .resolve()
        .await
        .ok()?;
    ractor::call_t!(allocator, |reply| AllocatorMsg::Stats { reply }, 5_000).ok()
}

async fn agent_metrics(ctx: &Ctx, id: &str, out: &mut Metrics) -> Result<(), String> {
    let usage = agent_usage(ctx, id)
        .await
        .map_err(|e| format!("the agent core does not answer: {e}"))?;
    out.family(
        "troupe_agent_tasks",
        "gauge",
        "Tasks running on this agent.",
    );
    out.sample("troupe_agent_tasks", &[("agent", id)], usage.len() as f64);
    out.family(
        "troupe_agent_task_cpu_seconds_total",
        "counter",
        "Cpu time used by this agent's running tasks.",
    );
    out.family(
        "troupe_agent_task_memory_bytes",
        "gauge",
        "Memory in use by this agent's running tasks.",
    );
    for t in &usage {
        let labels = [("agent", id), ("task", t.task.0.as_str())];
        out.sample(
            "troupe_agent_task_cpu_seconds_total",
            &labels,
            t.cpu_ns as f64 / 1e9,
        );
        out.sample(
            "troupe_agent_task_memory_bytes",
            &labels,
            t.memory_bytes as f64,
        );
    }
    let tree = tree_of(ctx).await?;
    node_metrics(&tree, out);
    Ok(())
}

/// What every node tells of itself: up or not, messages, decode errors, restarts, actors.
fn node_metrics(tree: &ClusterTree, out: &mut Metrics) {
    out.family(
        "troupe_node_up",
        "gauge",
        "1 when the node's inspector answered, else 0.",
    );
    for n in &tree.nodes {
        out.sample(
            "troupe_node_up",
            &[("node", &n.node)],
            if n.reachable { 1.0 } else { 0.0 },
        );
    }
    let snapshots: Vec<&NodeSnapshot> = tree
        .nodes
        .iter()
        .filter_map(|n| n.snapshot.as_ref())
        .collect();
    out.family(
        "troupe_node_messages_received_total",
        "counter",
        "Messages from other nodes decoded on this node.",
    );
    for s in &snapshots {
        out.sample(
            "troupe_node_messages_received_total",
            &[("node", &s.node)],
            s.decode.decoded as f64,
        );
    }
    out.family(
        "troupe_node_decode_errors_total",
        "counter",
        "Frames from other nodes dropped because they could not be decoded, by cause.",
    );
    for s in &snapshots {
        for (cause, n) in [
            ("malformed", s.decode.malformed),
            ("wrong_type", s.decode.wrong_type),
            ("reply_port", s.decode.reply_port),
        ] {
            out.sample(
                "troupe_node_decode_errors_total",
                &[("node", &s.node), ("cause", cause)],
                n as f64,
            );
        }
    }
    // One family at a time: the format wants a family's samples together.
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&NodeSnapshot) -> f64,
    );
    let families: [Family; 4] = [
        (
            "troupe_node_handshake_failures_total",
            "counter",
            "Connections refused at the handshake (wrong cookie, bad frames).",
            |s| s.handshake_failures as f64,
        ),
        (
            "troupe_node_restarts_total",
            "counter",
            "Restarts of the children of the node's live supervisors.",
            |s| {
                s.all()
                    .iter()
                    .filter_map(|a| a.supervisor.as_ref())
                    .flat_map(|sup| sup.children.iter())
                    .map(|c| f64::from(c.restarts))
                    .sum()
            },
        ),
        (
            "troupe_node_actors",
            "gauge",
            "Actors in the node's tree.",
            |s| s.all().len() as f64,
        ),
        (
            "troupe_node_uptime_seconds",
            "gauge",
            "Seconds since the node started.",
            |s| s.uptime_ms as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, value) in families {
        out.family(name, kind, help);
        for s in &snapshots {
            out.sample(name, &[("node", &s.node)], value(s));
        }
    }
}

/// A page of the Prometheus text format (0.0.4).
#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.text, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn samples_escape_their_labels() {
        let mut m = Metrics::default();
        m.family("x_total", "counter", "A \\ help\nline.");
        m.sample("x_total", &[("a", "q\"uote\\\n")], 1.5);
        m.sample("x_total", &[], f64::INFINITY);
        assert_eq!(
            m.text,
            "# HELP x_total A \\\\ help\\nline.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"uote\\\\\\n\"} 1.5\nx_total +Inf\n"
        );
    }
}
