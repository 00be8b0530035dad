//! The embedded cluster of `troupe dev`: a master, its one-shot runner, its process service
//! and N agents as actors of one node. It is the same code as a real cluster (the addresses are
//! location-transparent), so what works here works across machines.

use std::path::PathBuf;

use troupe_runtime::{Node, SupervisorRef};

use crate::agent::{self, AgentConfig};
use crate::framework::Driver;
use crate::master::{self, MasterConfig};
use crate::protocol::Resources;
use crate::runner;

/// What the embedded cluster is made of.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// How many agents.
    pub agents: usize,
    /// Where agents keep their checkpoints and sandboxes (`<work_dir>/<agent-id>`).
    pub work_dir: PathBuf,
    /// The master's settings (its registry file among them).
    pub master: MasterConfig,
    /// What each agent offers; `None`: the host's resources shared evenly between them.
    pub agent_resources: Option<Resources>,
}

/// A running embedded cluster.
#[derive(Debug)]
pub struct DevCluster {
    /// The master's supervision tree.
    pub master: SupervisorRef,
    /// Each agent's supervision tree.
    pub agents: Vec<SupervisorRef>,
    /// The ids of the agents, in order.
    pub agent_ids: Vec<String>,
    /// The runner's driver.
    pub runner: Driver,
    /// The process service's driver.
    pub processes: Driver,
}

impl DevCluster {
    /// Stops the agents (their tasks first), the runner and the master.
    pub async fn stop(self) {
        self.runner.abandon();
        self.processes.abandon();
        for agent in &self.agents {
            agent.stop().await;
        }
        self.master.stop().await;
    }
}

/// Starts master, runner and agents on this node (which must be started). Agent ids are
/// `<node>-a1`, `<node>-a2`, ...
pub async fn start(config: DevConfig) -> Result<DevCluster, String> {
    let node = Node::current().ok_or("no troupe node runs in this process")?;
    let master = master::start(config.master.clone())
        .await
        .map_err(|e| format!("the master did not start: {e}"))?;
    let runner = runner::start(None)
        .await
        .map_err(|e| format!("the runner did not start: {e}"))?;
    let processes = crate::processes::start(None)
        .await
        .map_err(|e| format!("the process service did not start: {e}"))?;
    let share = config.agent_resources.unwrap_or_else(|| {
        let host = troupe_os::host::host_resources(&config.work_dir, Default::default());
        let n = config.agents.max(1) as f64;
        Resources {
            cpus: (host.cpus / n * 100.0).floor() / 100.0,
            mem_mib: ((host.memory_bytes / (1024 * 1024)) as f64 / n).floor(),
            disk_mib: ((host.disk_free_bytes / (1024 * 1024)) as f64 / n).floor(),
        }
    });
    let mut agents = Vec::new();
    let mut agent_ids = Vec::new();
    for i in 1..=config.agents {
        let id = format!("{}-a{i}", node.name());
        let mut agent = AgentConfig::new(id.clone(), config.work_dir.join(&id));
        agent.resources = Some(share);
        // The agents share one host: each gets its own slice of the default range, so
        // that no two tasks are ever given one port.
        let whole = crate::protocol::PortRange::default();
        let slice = (whole.len() / config.agents.max(1)).max(1) as u16;
        let first = whole
            .first
            .saturating_add(slice.saturating_mul(i as u16 - 1));
        agent.ports = crate::protocol::PortRange {
            first,
            last: first.saturating_add(slice - 1).min(whole.last).max(first),
        };
        let tree = agent::start(agent)
            .await
            .map_err(|e| format!("agent {id} did not start: {e}"))?;
        agents.push(tree);
        agent_ids.push(id);
    }
    Ok(DevCluster {
        master,
        agents,
        agent_ids,
        runner,
        processes,
    })
}
