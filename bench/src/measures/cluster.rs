//! The cluster's figures, on the embedded cluster (master and agents as actors of this
//! process, tasks as real processes in real cgroups when root):
//! * launch latency: a framework's launch on a held offer to `Running` seen by the
//!   framework, one task at a time, vs spawning the same command directly (fork to exec:
//!   `Command::spawn` returns once the exec succeeded);
//! * sustained tasks per minute through the whole path (offers, launches, processes, status
//!   updates and acknowledgements) with 16 tasks at a time, vs a raw spawn-and-wait loop of
//!   the same command with the same 16 at a time;
//! * agent failure: an agent in another OS process killed (SIGKILL), or silenced (SIGSTOP),
//!   to the framework being told the agent is lost, against the agents' heartbeat interval.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use troupe_actors::agent::{self, AgentConfig};
use troupe_actors::dev::{self, DevCluster, DevConfig};
use troupe_actors::framework::{Driver, FrameworkSettings, Scheduler};
use troupe_actors::master::{
    self, AGENT_HEARTBEAT, ALLOCATOR_PATH, AllocatorMsg, MASTER_PATH, MasterConfig,
};
use troupe_actors::protocol::{
    AgentId, ClusterState, MasterMsg, OfferInfo, Resources, TaskId, TaskInfo, TaskState, TaskStatus,
};
use troupe_runtime::{Addr, Cookie, Node, NodeConfig};

use super::percentiles;
use crate::report::{Figure, Goal};

const COOKIE: &str = "troupe-bench";
const COMMAND: &str = "/bin/true";

/// What the bench framework hears.
enum Heard {
    Status(TaskStatus),
    Lost(AgentId, Instant),
}

/// A framework that keeps its offers for the measure to use, or launches a queue itself.
struct BenchFramework {
    offers: Arc<Mutex<VecDeque<OfferInfo>>>,
    queue: Arc<Mutex<VecDeque<TaskInfo>>>,
    heard: mpsc::UnboundedSender<Heard>,
}

/// Launches on `offer` as many tasks from the front of `queue` as it fits, as a framework
/// with work waiting does with an offer it gets or holds.
fn launch_from(driver: &Driver, queue: &mut VecDeque<TaskInfo>, offer: OfferInfo) {
    let mut left = offer.resources;
    let mut launch = Vec::new();
    while queue.front().is_some_and(|t| left.contains(&t.resources)) {
        let task = queue.pop_front().expect("checked");
        left = left.minus(task.resources);
        launch.push(task);
    }
    driver.launch(&[offer.id], launch);
}

impl Scheduler for BenchFramework {
    fn offers(&mut self, driver: &Driver, offers: Vec<OfferInfo>) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for offer in offers {
            if queue.is_empty() {
                self.offers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(offer);
                continue;
            }
            launch_from(driver, &mut queue, offer);
        }
    }

    fn status(&mut self, _driver: &Driver, status: &TaskStatus) {
        let _ = self.heard.send(Heard::Status(status.clone()));
    }

    fn agent_lost(&mut self, _driver: &Driver, agent: &AgentId) {
        let _ = self.heard.send(Heard::Lost(agent.clone(), Instant::now()));
    }
}

struct Bench {
    node: Node,
    cluster: Option<DevCluster>,
    driver: Driver,
    offers: Arc<Mutex<VecDeque<OfferInfo>>>,
    queue: Arc<Mutex<VecDeque<TaskInfo>>>,
    heard: mpsc::UnboundedReceiver<Heard>,
    work: std::path::PathBuf,
}

fn task(n: usize, cpus: f64) -> TaskInfo {
    TaskInfo {
        id: TaskId(format!("b{}-{n}", std::process::id())),
        name: "bench".into(),
        command: troupe_os::ProcessSpec::new([COMMAND]),
        resources: Resources::new(cpus, 4.0),
    }
}

impl Bench {
    /// A node, the embedded cluster with two agents of `per_agent`, and the framework.
    async fn start(tag: &str, per_agent: Resources) -> anyhow::Result<Bench> {
        let node = Node::start(NodeConfig::new(
            format!("bench-{tag}"),
            "127.0.0.1:0".parse()?,
            Cookie::new(COOKIE)?,
        ))
        .await?;
        let work = std::env::temp_dir().join(format!("troupe-bench-{tag}-{}", std::process::id()));
        let cluster = dev::start(DevConfig {
            agents: 2,
            work_dir: work.clone(),
            master: MasterConfig {
                allocation_interval: Duration::from_millis(100),
                ..MasterConfig::default()
            },
            agent_resources: Some(per_agent),
        })
        .await
        .map_err(anyhow::Error::msg)?;
        let (tx, heard) = mpsc::unbounded_channel();
        let offers = Arc::new(Mutex::new(VecDeque::new()));
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let framework = BenchFramework {
            offers: offers.clone(),
            queue: queue.clone(),
            heard: tx,
        };
        let driver = Driver::start(FrameworkSettings::new("bench"), None, framework).await?;
        Ok(Bench {
            node,
            cluster: Some(cluster),
            driver,
            offers,
            queue,
            heard,
            work,
        })
    }

    async fn stop(mut self) {
        self.driver.stop();
        if let Some(cluster) = self.cluster.take() {
            cluster.stop().await;
        }
        self.node.stop().await;
        super::remove_at_the_end(self.work.clone());
    }

    async fn next_offer(&self) -> anyhow::Result<OfferInfo> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(offer) = self
                .offers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front()
            {
                return Ok(offer);
            }
            anyhow::ensure!(Instant::now() < deadline, "no offer in 30 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Waits until the framework holds offers from `agents` agents: the cluster is up and
    /// the framework has what it needs to start work. A sustained rate is timed from here,
    /// not from the cluster's start or the first allocation after the framework came.
    async fn holding_offers_from(&self, agents: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held: std::collections::BTreeSet<AgentId> = self
                .offers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|o| o.agent.clone())
                .collect();
            if held.len() >= agents {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no offers from {agents} agents in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn until(&mut self, mut done: impl FnMut(&TaskStatus) -> bool) -> anyhow::Result<()> {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), self.heard.recv()).await {
                Ok(Some(Heard::Status(s))) => {
                    anyhow::ensure!(
                        !matches!(s.state, TaskState::Error | TaskState::Dropped),
                        "task {} {}: {}",
                        s.task,
                        s.state,
                        s.reason
                    );
                    if done(&s) {
                        return Ok(());
                    }
                }
                Ok(Some(Heard::Lost(..))) => {}
                _ => anyhow::bail!("no news from the cluster in 60 s"),
            }
        }
    }
}

/// Launch latency, p50 and p99.
pub(crate) async fn launch(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let n = if quick { 300 } else { 1_000 };
    let mut bench = Bench::start("launch", Resources::new(8.0, 4096.0)).await?;
    // From a task of the runtime, as a framework's own actor would launch and hear, not
    // from the thread blocked on the whole run.
    let (bench, troupe) = tokio::spawn(async move {
        let mut troupe = Vec::with_capacity(n);
        for i in 0..n {
            let offer = bench.next_offer().await?;
            let t = task(i, 0.1);
            let id = t.id.clone();
            let started = Instant::now();
            bench.driver.launch(&[offer.id], vec![t]);
            bench
                .until(|s| s.task == id && s.state == TaskState::Running)
                .await?;
            troupe.push(started.elapsed().as_secs_f64() * 1e3);
        }
        anyhow::Ok((bench, troupe))
    })
    .await??;
    bench.stop().await;
    let mut raw = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut child = Command::new(COMMAND).spawn()?;
        raw.push(started.elapsed().as_secs_f64() * 1e3);
        child.wait()?;
    }
    let (t50, t99) = percentiles(troupe);
    let (r50, r99) = percentiles(raw);
    Ok(vec![
        Figure::new(
            "launch p50",
            t50,
            r50,
            "ms",
            Goal::RatioAtMost(3.0),
            format!(
                "{n} tasks of {COMMAND}, one at a time, from the framework's launch on a held offer to Running at the framework (master, agent, shim, cgroup, status update); baseline: Command::spawn of {COMMAND} (fork to exec)"
            ),
        ),
        Figure::new(
            "launch p99",
            t99,
            r99,
            "ms",
            Goal::AtMost(15.0),
            format!("the same {n} launches; the goal is absolute, the baseline for reference"),
        ),
    ])
}

/// Sustained tasks per minute.
pub(crate) async fn tasks_per_minute(quick: bool) -> anyhow::Result<Figure> {
    let n = if quick { 400 } else { 2_000 };
    const AT_ONCE: usize = 16;
    // Two agents of 0.8 cpus, tasks of 0.1: 16 at a time.
    let mut bench = Bench::start("tpm", Resources::new(0.8, 4096.0)).await?;
    let tasks: Vec<TaskInfo> = (0..n).map(|i| task(i, 0.1)).collect();
    bench.holding_offers_from(2).await?;
    let started = Instant::now();
    {
        // The offers held before the work came are used at once, as the baseline's
        // threads start at once; later offers are used as they come (none are declined
        // and waited for again).
        let mut queue = bench.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.extend(tasks);
        let held: Vec<OfferInfo> = bench
            .offers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for offer in held {
            launch_from(&bench.driver, &mut queue, offer);
        }
    }
    let mut ended = 0;
    bench
        .until(|s| {
            if s.state.is_terminal() {
                ended += 1;
            }
            ended == n
        })
        .await?;
    let troupe = n as f64 / started.elapsed().as_secs_f64() * 60.0;
    // Allocation cycles per task: a cycle runs on every change that may free something,
    // so a framework offered what it cannot use, again and again, shows here.
    let cycles = match Addr::<AllocatorMsg>::new(ALLOCATOR_PATH)
        .resolve()
        .await?
        .call(
            |reply| AllocatorMsg::Stats { reply },
            Some(Duration::from_secs(10)),
        )
        .await?
    {
        ractor::rpc::CallResult::Success(stats) => stats.cycles,
        _ => anyhow::bail!("the allocator did not answer"),
    };
    bench.stop().await;
    // The ceiling: the same command spawned and waited for, 16 at a time.
    let started = Instant::now();
    let per_thread = n / AT_ONCE;
    let threads: Vec<_> = (0..AT_ONCE)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<()> {
                for _ in 0..per_thread {
                    Command::new(COMMAND).status()?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a spawning thread panicked"))??;
    }
    let raw = (per_thread * AT_ONCE) as f64 / started.elapsed().as_secs_f64() * 60.0;
    Ok(Figure::new(
        "tasks per minute",
        troupe,
        raw,
        "tasks/min",
        Goal::RatioAtLeast(0.5),
        format!(
            "{n} tasks of {COMMAND} through offers, launches, processes and acknowledged updates, {AT_ONCE} at a time on 2 agents ({:.2} allocation cycles a task); baseline: spawn-and-wait of {COMMAND} on {AT_ONCE} threads",
            cycles as f64 / n as f64
        ),
    ))
}

/// Serves as an agent of the failure measure (a child process of the bench).
pub(crate) async fn serve_agent(name: &str, master: &str, work: &str) -> anyhow::Result<()> {
    let node = Node::start(NodeConfig::new(
        name,
        "127.0.0.1:0".parse()?,
        Cookie::new(COOKIE)?,
    ))
    .await?;
    let mut config = AgentConfig::new(name, work);
    config.master = Some(master.parse()?);
    config.resources = Some(Resources::new(1.0, 256.0));
    let _agent = agent::start(config).await?;
    println!("ready");
    // Until killed.
    std::future::pending::<()>().await;
    node.stop().await;
    Ok(())
}

fn spawn_agent(name: &str, master: &str, work: &std::path::Path) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["--serve-agent", name, "--master", master, "--work-dir"])
        .arg(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?)
}

async fn registered(name: &str) -> bool {
    let state: Result<ClusterState, _> = Addr::<MasterMsg>::new(MASTER_PATH)
        .call(
            |reply| MasterMsg::State { all: false, reply },
            Duration::from_secs(2),
        )
        .await;
    state.is_ok_and(|s| s.agents.iter().any(|a| a.info.id.0 == name && a.reachable))
}

/// Agent crash and silent agent, to the framework told the agent is lost.
pub(crate) async fn agent_failure(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let repeats = if quick { 5 } else { 20 };
    let node = Node::start(NodeConfig::new(
        "bench-failure",
        "127.0.0.1:0".parse()?,
        Cookie::new(COOKIE)?,
    ))
    .await?;
    let master_tree = master::start(MasterConfig::default()).await?;
    let (tx, mut heard) = mpsc::unbounded_channel();
    let framework = BenchFramework {
        offers: Arc::default(),
        queue: Arc::default(),
        heard: tx,
    };
    let driver = Driver::start(FrameworkSettings::new("watch"), None, framework).await?;
    let work = std::env::temp_dir().join(format!("troupe-bench-failure-{}", std::process::id()));
    let master_addr = node.advertise_addr().to_string();
    let mut crash = Vec::new();
    let mut silent = Vec::new();
    for round in 0..repeats * 2 {
        let stop_it = round % 2 == 1;
        let name = format!("bench-agent-{}-{round}", std::process::id());
        let mut child = spawn_agent(&name, &master_addr, &work.join(&name))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registered(&name).await {
            anyhow::ensure!(Instant::now() < deadline, "agent {name} did not register");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let a few heartbeats set the detector's rhythm, as in a running cluster.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while heard.try_recv().is_ok() {}
        let signal = if stop_it { "-STOP" } else { "-KILL" };
        let started = Instant::now();
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        let lost_at = loop {
            match tokio::time::timeout(Duration::from_secs(30), heard.recv()).await {
                Ok(Some(Heard::Lost(agent, at))) if agent.0 == name => break at,
                Ok(Some(_)) => {}
                _ => anyhow::bail!("agent {name} was not declared lost in 30 s"),
            }
        };
        let ms = lost_at.duration_since(started).as_secs_f64() * 1e3;
        if stop_it { &mut silent } else { &mut crash }.push(ms);
        let _ = child.kill();
        let _ = child.wait();
    }
    driver.stop();
    master_tree.stop().await;
    node.stop().await;
    super::remove_at_the_end(work);
    let interval = AGENT_HEARTBEAT.as_secs_f64() * 1e3;
    let (c50, c99) = percentiles(crash);
    let (s50, s99) = percentiles(silent);
    Ok(vec![
        Figure::new(
            "agent crash noticed",
            c50,
            interval,
            "ms",
            Goal::AtMost(50.0),
            format!(
                "p50 over {repeats} SIGKILLs of an agent process, to the framework's agent_lost (p99 {c99:.1} ms); baseline: the agents' heartbeat interval, for reference"
            ),
        ),
        Figure::new(
            "silent agent unreachable",
            s50,
            interval,
            "ms",
            Goal::AtMost(1500.0),
            format!(
                "p50 over {repeats} SIGSTOPs of an agent process, to the framework's agent_lost (p99 {s99:.1} ms); baseline: the heartbeat interval; phi-accrual threshold 8"
            ),
        ),
    ])
}
