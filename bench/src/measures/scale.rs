//! The master at scale, with simulated agents: in-process actors at `agent/<id>` that
//! register like agents, heartbeat their observers, and answer every launch with `Running`
//! at once (no process is started), so that what is measured is the master: offers,
//! validation, task tracking, status forwarding and acknowledgements, and the allocator.
//!
//! * placements per minute: a framework packs tasks into every offer until all are
//!   `Running`; baseline: the same placements by the allocation engine alone in a loop (no
//!   actors, no messages): the decision ceiling;
//! * allocator decision time: the engine's cycles inside the master's allocator actor,
//!   p50 and p99; baseline: the same engine's cycles in that loop;
//! * master memory per task: the growth of this process's resident memory from before the
//!   launches to all tasks running, per task (the framework driver's per-task record is in
//!   it too); baseline, for reference: the task's launch and status as encoded on the wire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_actors::allocator::Engine;
use troupe_actors::framework::{Driver, FrameworkSettings, Scheduler};
use troupe_actors::master::{self, ALLOCATOR_PATH, AllocatorMsg, MASTER_PATH, MasterConfig};
use troupe_actors::protocol::{
    AgentId, AgentInfo, AgentMsg, MasterMsg, ObserverMsg, OfferInfo, Resources, Source, TaskId,
    TaskInfo, TaskState, TaskStatus, now_ms,
};
use troupe_actors::status_updates::Update;
use troupe_runtime::{Addr, Cookie, Node, NodeConfig};

use super::percentiles;
use crate::report::{Figure, Goal};

const COOKIE: &str = "troupe-bench";

fn agent_resources() -> Resources {
    Resources::new(64.0, 65_536.0)
}

fn task_resources() -> Resources {
    Resources::new(0.1, 64.0)
}

/// A simulated agent: every launched task is running at once.
struct SimAgent;

struct SimState {
    id: AgentId,
    master: Addr<MasterMsg>,
    next_update: u64,
}

impl Actor for SimAgent {
    type Msg = AgentMsg;
    type State = SimState;
    type Arguments = AgentId;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        id: AgentId,
    ) -> Result<SimState, ActorProcessingErr> {
        troupe_runtime::register(&format!("agent/{id}"), &myself)?;
        Ok(SimState {
            id,
            master: Addr::new(MASTER_PATH),
            next_update: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut SimState,
    ) -> Result<(), ActorProcessingErr> {
        if let AgentMsg::Launch {
            framework, tasks, ..
        } = message
        {
            for task in tasks {
                state.next_update += 1;
                let mut status =
                    TaskStatus::new(task.id, TaskState::Running, Source::Agent, now_ms());
                status.agent = Some(state.id.clone());
                let update = Update {
                    id: state.next_update,
                    framework: framework.clone(),
                    status,
                };
                let _ = state
                    .master
                    .send(MasterMsg::StatusUpdate {
                        agent: state.id.clone(),
                        update,
                    })
                    .await;
            }
        }
        Ok(())
    }
}

/// A framework that packs numbered tasks into every offer.
struct Packer {
    left: Arc<AtomicU64>,
    next: u64,
    running: Arc<AtomicU64>,
}

fn sim_task(n: u64) -> TaskInfo {
    TaskInfo {
        id: TaskId(format!("s{n}")),
        name: String::new(),
        command: troupe_os::ProcessSpec::new(["true"]),
        resources: task_resources(),
    }
}

impl Scheduler for Packer {
    fn offers(&mut self, driver: &Driver, offers: Vec<OfferInfo>) {
        for offer in offers {
            let mut room = offer.resources;
            let mut launch = Vec::new();
            while self.left.load(Ordering::Relaxed) > 0 && room.contains(&task_resources()) {
                room = room.minus(task_resources());
                self.left.fetch_sub(1, Ordering::Relaxed);
                launch.push(sim_task(self.next));
                self.next += 1;
            }
            driver.launch(&[offer.id], launch);
        }
    }

    fn status(&mut self, _driver: &Driver, status: &TaskStatus) {
        if status.state == TaskState::Running {
            self.running.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

/// Full cycles of the engine alone: every agent free, offered, and given back, 20 times.
fn engine_full_cycles(agents: usize) -> Vec<f64> {
    let mut engine = Engine::new();
    for i in 0..agents {
        engine.add_agent(AgentId(format!("e{i}")), agent_resources());
    }
    engine.add_framework("f".into(), "*");
    let mut cycles = Vec::new();
    for round in 1..=20 {
        let t = Instant::now();
        let offers = engine.allocate(Duration::from_millis(round));
        cycles.push(t.elapsed().as_secs_f64() * 1e3);
        for offer in offers {
            engine.recover(&offer.framework, &offer.agent, offer.resources, None);
        }
    }
    cycles
}

/// The same placements by the engine alone: allocate, pack, give the rest back.
fn engine_ceiling(agents: usize, tasks: u64) -> Duration {
    let mut engine = Engine::new();
    for i in 0..agents {
        engine.add_agent(AgentId(format!("e{i}")), agent_resources());
    }
    engine.add_framework("f".into(), "*");
    let started = Instant::now();
    let mut placed = 0;
    let mut now = Duration::ZERO;
    while placed < tasks {
        now += Duration::from_millis(1);
        let offers = engine.allocate(now);
        if offers.is_empty() {
            break;
        }
        for offer in offers {
            let mut room = offer.resources;
            while placed < tasks && room.contains(&task_resources()) {
                room = room.minus(task_resources());
                placed += 1;
            }
            engine.recover(&offer.framework, &offer.agent, room, None);
        }
    }
    started.elapsed()
}

pub(crate) async fn run(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let (agents, tasks): (usize, u64) = if quick {
        (1_000, 100_000)
    } else {
        (10_000, 1_000_000)
    };
    let node = Node::start(NodeConfig::new(
        "bench-scale",
        "127.0.0.1:0".parse()?,
        Cookie::new(COOKIE)?,
    ))
    .await?;
    let master_tree = master::start(MasterConfig {
        allocation_interval: Duration::from_millis(100),
        completed_tasks_kept: 0,
        ..MasterConfig::default()
    })
    .await?;
    let master = Addr::<MasterMsg>::new(MASTER_PATH);
    let mut sims = Vec::with_capacity(agents);
    let mut observers = Vec::with_capacity(agents);
    for i in 0..agents {
        let id = AgentId(format!("sim-{i}"));
        let (sim, _) = Actor::spawn(None, SimAgent, id.clone()).await?;
        sims.push(sim);
        let info = AgentInfo {
            id: id.clone(),
            hostname: "sim".into(),
            node: node.name().to_string(),
            addr: node.advertise_addr().to_string(),
            resources: agent_resources(),
            attributes: BTreeMap::new(),
            work_dir: format!("/sim/{i}"),
            ports: Default::default(),
            life: 1 + i as u64,
        };
        master
            .call(
                |reply| MasterMsg::RegisterAgent {
                    info,
                    tasks: Vec::new(),
                    reply,
                },
                Duration::from_secs(30),
            )
            .await?
            .map_err(anyhow::Error::msg)?;
        observers.push(
            Addr::<ObserverMsg>::new(master::observer_path(&id))
                .resolve()
                .await?,
        );
    }
    // The simulated agents' heartbeats, as real agents send them.
    let beats = tokio::spawn(async move {
        let mut every = tokio::time::interval(master::AGENT_HEARTBEAT);
        loop {
            every.tick().await;
            for o in &observers {
                let _ = o.cast(ObserverMsg::Heartbeat);
            }
        }
    });
    let before = resident_bytes();
    let left = Arc::new(AtomicU64::new(tasks));
    let running = Arc::new(AtomicU64::new(0));
    let packer = Packer {
        left: left.clone(),
        next: 0,
        running: running.clone(),
    };
    let started = Instant::now();
    let driver = Driver::start(FrameworkSettings::new("packer"), None, packer).await?;
    let deadline = Instant::now() + Duration::from_secs(if quick { 300 } else { 1800 });
    while running.load(Ordering::Relaxed) < tasks {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {tasks} tasks running in time",
            running.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let per_task = resident_bytes().saturating_sub(before) as f64 / tasks as f64;
    let allocator = Addr::<AllocatorMsg>::new(ALLOCATOR_PATH).resolve().await?;
    let cycles: Vec<f64> = match allocator
        .call(
            |reply| AllocatorMsg::Cycles { reply },
            Some(Duration::from_secs(10)),
        )
        .await?
    {
        ractor::rpc::CallResult::Success(c) => c.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        _ => anyhow::bail!("the allocator did not answer"),
    };
    beats.abort();
    driver.abandon();
    master_tree.stop().await;
    for sim in sims {
        sim.stop(None);
    }
    node.stop().await;

    let ceiling = engine_ceiling(agents, tasks);
    let engine_cycles = engine_full_cycles(agents);
    let per_minute = tasks as f64 / took.as_secs_f64() * 60.0;
    let ceiling_per_minute = tasks as f64 / ceiling.as_secs_f64() * 60.0;
    let (c50, c99) = percentiles(cycles);
    let (e50, e99) = percentiles(engine_cycles);
    let wire = {
        let task = sim_task(0);
        let status = TaskStatus::new(task.id.clone(), TaskState::Running, Source::Agent, 0);
        (troupe_runtime::codec::encode(&task)?.len()
            + troupe_runtime::codec::encode(&status)?.len()) as f64
    };
    Ok(vec![
        Figure::new(
            "placements per minute",
            per_minute,
            ceiling_per_minute,
            "tasks/min",
            Goal::AtLeast(1_000_000.0),
            format!(
                "{tasks} tasks placed on {agents} simulated agents through the master (offers, validation, tracking, Running updates and acknowledgements), first offer to the last Running at the framework; baseline: the engine alone placing as many (the goal is set for 10,000 agents, the full run)"
            ),
        ),
        Figure::new(
            "allocator cycle p99",
            c99,
            e99,
            "ms",
            Goal::RatioAtMost(1.5),
            format!(
                "the engine's cycles inside the master's allocator during the placements, p99 (p50 {c50:.3} ms: most cycles find little free); baseline: full cycles of the engine alone over {agents} free agents, p99 (p50 {e50:.2} ms)"
            ),
        ),
        Figure::new(
            "master memory per task",
            per_task,
            wire,
            "bytes",
            Goal::AtMost(2048.0),
            format!(
                "resident memory growth over {tasks} running tasks, per task (the framework driver's record of each task included); baseline: the task's launch and status as encoded on the wire"
            ),
        ),
    ])
}
