//! The commands that run the cluster: `troupe master`, `troupe agent` and `troupe dev` (the
//! embedded cluster: master, runner and agents in one process).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use troupe_actors::agent::{self, AgentConfig};
use troupe_actors::dev::{self, DevConfig};
use troupe_actors::master::{self, MasterConfig};
use troupe_actors::protocol::Resources;
use troupe_actors::runner;
use troupe_runtime::Node;

use super::node::{ANY_LOOPBACK_PORT, NodeFlags, shutdown_signals};
use super::{Failure, parse_key_value};
use crate::http::Role;

/// 32 bits that differ from one process to the next (std's hasher keys are random per
/// process).
fn process_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// The default of `--task-history`: the master's own default.
const DEFAULT_TASK_HISTORY: usize = 10_000;

/// Arguments of `troupe master`.
#[derive(Debug, Args)]
pub(crate) struct MasterArgs {
    /// The node's name.
    #[arg(long, default_value = "master")]
    name: String,
    /// The registry file (admitted agents, frameworks, pending kills; the ended tasks in
    /// PATH.history); default: in memory only.
    #[arg(long, value_name = "PATH")]
    registry: Option<PathBuf>,
    /// How many ended tasks the master keeps (for `ps --all` and reconciliation; in the
    /// registry's history across restarts).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TASK_HISTORY)]
    task_history: usize,
    /// Milliseconds between allocation cycles (a cycle also follows any change).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    allocation_interval_ms: u64,
    /// Rescind offers not used within this many milliseconds (default: never).
    #[arg(long, value_name = "MS")]
    offer_timeout_ms: Option<u64>,
    /// Seconds an unreachable agent's tasks stay Unreachable before they are Gone.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    agent_gone_after: u64,
    /// Serve /health, /state, /tree and /metrics over HTTP here (port 0 picks one).
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<SocketAddr>,
    #[command(flatten)]
    node: NodeFlags,
}

impl MasterArgs {
    fn config(&self) -> Result<MasterConfig, Failure> {
        let mut config = MasterConfig {
            registry: self.registry.clone(),
            allocation_interval: Duration::from_millis(self.allocation_interval_ms.max(10)),
            offer_timeout: self.offer_timeout_ms.map(Duration::from_millis),
            agent_gone_after: Duration::from_secs(self.agent_gone_after),
            completed_tasks_kept: self.task_history,
            ..MasterConfig::default()
        };
        if let Some(heartbeat) = self.node.detector()? {
            config.detector = heartbeat.detector;
        }
        Ok(config)
    }
}

/// Where `troupe master` and `troupe dev` listen by default (where commands look).
fn default_master() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5050))
}

async fn serve_until_stopped(
    node: Node,
    shutdown: impl std::future::Future<Output = ()>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Failure> {
    shutdown.await;
    tracing::info!(node = %node.name(), "shutting down");
    let all = async {
        stop.await;
        node.stop().await;
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .map_err(|_| Failure::from("did not stop within 30 s"))
}

/// Serves HTTP when asked to, and says where (`http on http://HOST:PORT`, for scripts).
async fn start_http(listen: Option<SocketAddr>, node: &Node, role: Role) -> Result<(), Failure> {
    if let Some(listen) = listen {
        let addr = crate::http::serve(listen, node.clone(), role)
            .await
            .map_err(Failure::from)?;
        println!("http on http://{addr}");
    }
    Ok(())
}

pub(crate) async fn master(args: MasterArgs) -> Result<(), Failure> {
    let shutdown = shutdown_signals()?;
    let config = args.config()?;
    let node = args
        .node
        .start(&args.name, default_master(), Vec::new())
        .await?;
    let tree = master::start(config).await?;
    let runner = runner::start(None).await?;
    let processes = troupe_actors::processes::start(None).await?;
    troupe_specs::service::start()
        .await
        .map_err(Failure::from)?;
    println!(
        "master {} listening on {}",
        node.name(),
        node.advertise_addr()
    );
    start_http(args.http, &node, Role::Master).await?;
    serve_until_stopped(node, shutdown, async move {
        runner.abandon();
        processes.abandon();
        tree.stop().await;
    })
    .await
}

/// What an agent offers and how it is known.
#[derive(Debug, Args)]
pub(crate) struct AgentResourceArgs {
    /// Cpus to offer (default: the host's, within the agent's own cgroup).
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::cpus)]
    cpus: Option<f64>,
    /// Memory to offer, in MiB (default: the host's, within the agent's own cgroup).
    #[arg(long, value_name = "MiB", allow_negative_numbers = true, value_parser = super::values::mib)]
    mem: Option<f64>,
    /// Disk to offer, in MiB (default: what is free where the sandboxes are).
    #[arg(long, value_name = "MiB", allow_negative_numbers = true, value_parser = super::values::mib_or_zero)]
    disk: Option<f64>,
}

impl AgentResourceArgs {
    fn resources(
        &self,
        work_dir: &std::path::Path,
        share: f64,
    ) -> Result<Option<Resources>, Failure> {
        if self.cpus.is_none() && self.mem.is_none() && self.disk.is_none() {
            return Ok(None);
        }
        let host = troupe_os::host::host_resources(work_dir, BTreeMap::new());
        let r = Resources {
            cpus: self.cpus.unwrap_or(host.cpus / share),
            mem_mib: self
                .mem
                .unwrap_or((host.memory_bytes / (1024 * 1024)) as f64 / share),
            disk_mib: self
                .disk
                .unwrap_or((host.disk_free_bytes / (1024 * 1024)) as f64 / share),
        };
        if !r.is_valid() {
            return Err(Failure::from(format!(
                "invalid resources {r}: none may be negative"
            )));
        }
        Ok(Some(r))
    }
}

/// How an agent may tune the host for its tasks.
#[derive(Debug, Args)]
pub(crate) struct HostTuningArgs {
    /// Remount the host's cgroup2 hierarchy with favordynmods, so that a task joins its
    /// cgroup in microseconds instead of waiting for an RCU grace period (4 to 15 ms per
    /// launch). Host-wide; recent kernels cannot undo it until the host restarts.
    #[arg(long)]
    cgroup_favordynmods: bool,
}

impl HostTuningArgs {
    /// Applies what was asked for; without it, says once what it would save.
    fn apply(&self) -> Result<(), Failure> {
        if troupe_os::cgroup::favors_dynmods() {
            tracing::info!(
                "cgroups favour dynamic changes (favordynmods): tasks join theirs at once"
            );
        } else if self.cgroup_favordynmods {
            troupe_os::cgroup::favor_dynmods()
                .map_err(|e| Failure::from(format!("--cgroup-favordynmods: {e}")))?;
            tracing::info!("remounted the cgroup2 hierarchy with favordynmods");
        } else if troupe_os::cgroup::available() {
            tracing::info!(
                "each task waits 4-15 ms for an RCU grace period to join its cgroup; --cgroup-favordynmods removes the wait (host-wide)"
            );
        }
        Ok(())
    }
}

/// The default place an agent keeps its work: `$TROUPE_WORK_DIR/<name>`, else
/// `~/.troupe/work/<name>`.
fn default_work_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("TROUPE_WORK_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".troupe/work")))
        .unwrap_or_else(|| std::env::temp_dir().join("troupe-work"));
    base.join(name)
}

/// Arguments of `troupe agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The master's address.
    #[arg(long, env = "TROUPE_MASTER", default_value = super::client::DEFAULT_MASTER, value_name = "HOST:PORT", value_parser = super::values::host_port)]
    master: SocketAddr,
    /// The agent's name: its id (its node is named NAME-XXXXXXXX, one per process).
    #[arg(long)]
    name: String,
    /// Where to keep the checkpoint and the tasks' sandboxes.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// An attribute given with its offers, KEY=VALUE (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    attributes: Vec<(String, String)>,
    /// Serve /health, /tree and /metrics over HTTP here (port 0 picks one).
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<SocketAddr>,
    /// The ports its processes may be given, FIRST-LAST (agents on one host need ranges
    /// of their own).
    #[arg(long, value_name = "FIRST-LAST", default_value = "31000-32000", value_parser = troupe_actors::protocol::PortRange::parse)]
    ports: troupe_actors::protocol::PortRange,
    /// Seconds after its end a task's sandbox (and its logs) is removed (Mesos' gc_delay;
    /// default a week).
    #[arg(long, value_name = "SECONDS", default_value = "604800", allow_negative_numbers = true, value_parser = super::values::seconds)]
    gc_delay: Duration,
    /// Percent of the work directory's disk in use past which ended tasks' sandboxes are
    /// removed sooner, oldest first.
    #[arg(long, value_name = "PERCENT", default_value = "90", value_parser = clap::value_parser!(u8).range(1..=100))]
    gc_disk_watermark: u8,
    #[command(flatten)]
    resources: AgentResourceArgs,
    #[command(flatten)]
    tuning: HostTuningArgs,
    #[command(flatten)]
    node: NodeFlags,
}

pub(crate) async fn agent(args: AgentArgs) -> Result<(), Failure> {
    let shutdown = shutdown_signals()?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&args.name));
    args.tuning.apply()?;
    let mut config = AgentConfig::new(args.name.clone(), work_dir.clone());
    config.master = Some(args.master);
    config.attributes = args.attributes.iter().cloned().collect();
    config.ports = args.ports;
    config.gc = troupe_actors::agent::gc::GcPolicy {
        delay: args.gc_delay,
        disk_watermark: f64::from(args.gc_disk_watermark) / 100.0,
    };
    config.resources = args.resources.resources(&work_dir, 1.0)?;
    // The node's name is the agent's id and a random suffix, one per process: two
    // processes that claim one agent id then meet as two nodes, and the master refuses the
    // second's registration while the first is connected. Under one node name, the
    // second's connection would replace the first's, and it would take over silently.
    let node_name = format!("{}-{:08x}", args.name, process_suffix());
    let node = args
        .node
        .start(&node_name, ANY_LOOPBACK_PORT, Vec::new())
        .await?;
    let tree = agent::start(config).await?;
    println!("agent {} listening on {}", args.name, node.advertise_addr());
    start_http(
        args.http,
        &node,
        Role::Agent {
            id: args.name.clone(),
        },
    )
    .await?;
    serve_until_stopped(node, shutdown, async move { tree.stop().await }).await
}

/// Arguments of `troupe dev`.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// How many agents.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// The node's name (agents are NAME-a1, NAME-a2, ...).
    #[arg(long, default_value = "dev")]
    name: String,
    /// Where agents keep checkpoints and sandboxes (default: $TROUPE_WORK_DIR or
    /// ~/.troupe/work, then NAME).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// The master's registry file (default: in memory only).
    #[arg(long, value_name = "PATH")]
    registry: Option<PathBuf>,
    /// How many ended tasks the master keeps (in the registry's history across restarts).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TASK_HISTORY)]
    task_history: usize,
    /// Serve /health, /state, /tree and /metrics over HTTP here (port 0 picks one).
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<SocketAddr>,
    #[command(flatten)]
    resources: AgentResourceArgs,
    #[command(flatten)]
    tuning: HostTuningArgs,
    #[command(flatten)]
    node: NodeFlags,
}

pub(crate) async fn dev(args: DevArgs) -> Result<(), Failure> {
    if args.agents == 0 {
        return Err(Failure::from("--agents must be at least 1"));
    }
    let shutdown = shutdown_signals()?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&args.name));
    args.tuning.apply()?;
    let node = args
        .node
        .start(&args.name, default_master(), Vec::new())
        .await?;
    let mut master = MasterConfig {
        registry: args.registry.clone(),
        allocation_interval: Duration::from_millis(100),
        completed_tasks_kept: args.task_history,
        ..MasterConfig::default()
    };
    if let Some(heartbeat) = args.node.detector()? {
        master.detector = heartbeat.detector;
    }
    let cluster = dev::start(DevConfig {
        agents: args.agents,
        work_dir: work_dir.clone(),
        master,
        agent_resources: args.resources.resources(&work_dir, args.agents as f64)?,
    })
    .await
    .map_err(Failure::from)?;
    troupe_specs::service::start()
        .await
        .map_err(Failure::from)?;
    let addr = node.advertise_addr();
    eprintln!(
        "troupe dev: a master and {} agents ({}) in one process; work in {}",
        cluster.agents.len(),
        cluster.agent_ids.join(", "),
        work_dir.display()
    );
    eprintln!("  other commands find it with: export TROUPE_MASTER={addr}");
    eprintln!("  try: troupe run -- echo hello; troupe ps --all");
    println!("dev cluster listening on {addr}");
    start_http(args.http, &node, Role::Master).await?;
    serve_until_stopped(node, shutdown, cluster.stop()).await
}
