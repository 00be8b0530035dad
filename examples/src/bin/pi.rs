//! A framework that estimates pi by Monte Carlo: it runs `--tasks` tasks across the
//! cluster's agents, each throwing `--samples` darts at the unit square, collects what each
//! printed (read from its agent, wherever it ran), and prints the estimate.
//!
//! ```text
//! $ troupe dev &
//! $ cargo run -p troupe-examples --bin pi -- --tasks 8 --samples 2000000
//! pi ≈ 3.14159 from 16000000 samples in 8 tasks
//! ```
//!
//! Each task runs this same binary with `--worker SAMPLES SEED` (so the agents must see the
//! binary at the same path, as they do on one host or with a shared install).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use troupe_actors::framework::{Driver, FrameworkSettings, Scheduler};
use troupe_actors::master::MASTER_PATH;
use troupe_actors::protocol::{
    AgentMsg, MasterMsg, OfferInfo, Resources, TaskId, TaskInfo, TaskState, TaskStatus,
};
use troupe_os::actor::{LogMsg, Stream};
use troupe_runtime::{Addr, Cookie, Node, NodeConfig};

/// One task's darts: how many of `samples` fell inside the quarter circle.
fn worker(samples: u64, seed: u64) -> u64 {
    // xorshift64*: small, fast and good enough for darts.
    let mut x = seed.max(1);
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..samples)
        .filter(|_| {
            let (a, b) = (next(), next());
            a * a + b * b <= 1.0
        })
        .count() as u64
}

/// The scheduler: one task per slot of each offer until all are launched.
struct Pi {
    next: u32,
    tasks: u32,
    samples: u64,
    exe: String,
    statuses: mpsc::UnboundedSender<TaskStatus>,
}

impl Scheduler for Pi {
    fn offers(&mut self, driver: &Driver, offers: Vec<OfferInfo>) {
        let need = Resources::new(0.1, 32.0);
        for offer in offers {
            let mut left = offer.resources;
            let mut launch = Vec::new();
            while self.next < self.tasks && left.contains(&need) {
                left = left.minus(need);
                let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(self.next) + 1);
                launch.push(TaskInfo {
                    id: TaskId(format!("pi-{}-{}", std::process::id(), self.next)),
                    name: "pi".into(),
                    command: troupe_os::ProcessSpec::new([
                        self.exe.clone(),
                        "--worker".into(),
                        self.samples.to_string(),
                        seed.to_string(),
                    ]),
                    resources: need,
                });
                self.next += 1;
            }
            if launch.is_empty() {
                driver.decline(&[offer.id], Duration::from_secs(5));
            } else {
                driver.launch(&[offer.id], launch);
            }
        }
        if self.next >= self.tasks {
            driver.suppress();
        }
    }

    fn status(&mut self, _driver: &Driver, status: &TaskStatus) {
        let _ = self.statuses.send(status.clone());
    }
}

struct Args {
    tasks: u32,
    samples: u64,
    master: SocketAddr,
    cookie: Option<String>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        tasks: 8,
        samples: 2_000_000,
        master: std::env::var("TROUPE_MASTER")
            .unwrap_or_else(|_| "127.0.0.1:5050".into())
            .parse()
            .context("TROUPE_MASTER is not HOST:PORT")?,
        cookie: None,
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tasks" => args.tasks = value()?.parse()?,
            "--samples" => args.samples = value()?.parse()?,
            "--master" => args.master = value()?.parse()?,
            "--cookie" => args.cookie = Some(value()?),
            other => {
                bail!("unknown argument {other:?} (try --tasks N --samples M --master HOST:PORT)")
            }
        }
    }
    if args.tasks == 0 || args.samples == 0 {
        bail!("--tasks and --samples must be at least 1");
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("--worker") {
        let samples: u64 = argv.nth(1).context("--worker SAMPLES SEED")?.parse()?;
        let seed: u64 = argv.next().context("--worker SAMPLES SEED")?.parse()?;
        println!("{} {samples}", worker(samples, seed));
        return Ok(());
    }
    let args = parse(argv)?;
    let cookie = Cookie::resolve(args.cookie.as_deref(), None)?;
    let node = Node::start(NodeConfig::new(
        format!("pi-{}", std::process::id()),
        "127.0.0.1:0".parse()?,
        cookie,
    ))
    .await?;
    let (tx, mut statuses) = mpsc::unbounded_channel();
    let scheduler = Pi {
        next: 0,
        tasks: args.tasks,
        samples: args.samples,
        exe: std::env::current_exe()?.display().to_string(),
        statuses: tx,
    };
    let driver = Driver::start(FrameworkSettings::new("pi"), Some(args.master), scheduler)
        .await
        .context("cannot subscribe to the master")?;
    let master = Addr::<MasterMsg>::new(MASTER_PATH);
    let results = format!("pi/{}/results", node.name());
    // Tasks' output comes here from their agents.
    let (_collector, mut logs) = troupe_runtime::inbox::inbox::<LogMsg>(&results).await?;

    // As each task finishes, ask its agent for its output.
    let mut finished = 0;
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    while finished < args.tasks {
        let status = tokio::time::timeout(Duration::from_secs(120), statuses.recv())
            .await
            .context("no task finished within 2 minutes")?
            .context("the driver stopped")?;
        match status.state {
            TaskState::Finished => {
                finished += 1;
                let task = status.task.clone();
                let location = master
                    .call(
                        |reply| MasterMsg::Locate { task, reply },
                        Duration::from_secs(10),
                    )
                    .await?
                    .map_err(anyhow::Error::msg)?;
                let agent = location.agent.context("a finished task has an agent")?;
                if let Ok(addr) = agent.addr.parse() {
                    node.add_peer(&agent.node, addr);
                }
                Addr::<AgentMsg>::on(agent.node.clone(), format!("agent/{}", agent.id))
                    .send(AgentMsg::StreamLog {
                        task: status.task.clone(),
                        stream: Stream::Stdout,
                        from: 0,
                        follow: false,
                        to: results.clone(),
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot reach agent {}: {}", agent.id, e.error))?;
            }
            s if s.is_terminal() => bail!("task {} ended {s}: {}", status.task, status.reason),
            _ => {}
        }
    }
    let mut ended = 0;
    while ended < args.tasks {
        let msg = tokio::time::timeout(Duration::from_secs(30), logs.recv())
            .await
            .context("a task's output did not arrive")?
            .context("the collector stopped")?;
        match msg {
            LogMsg::Chunk { task, chunk, .. } => outputs
                .entry(task)
                .or_default()
                .push_str(&String::from_utf8_lossy(&chunk.bytes)),
            LogMsg::End { .. } => ended += 1,
            LogMsg::Gone { task, why, .. } => bail!("the output of task {task} is gone: {why}"),
        }
    }
    driver.stop();
    let (mut inside, mut total) = (0u64, 0u64);
    for (task, out) in &outputs {
        let mut words = out.split_whitespace().map(str::parse::<u64>);
        match (words.next(), words.next()) {
            (Some(Ok(i)), Some(Ok(n))) => {
                inside += i;
                total += n;
            }
            _ => bail!("task {task} printed {out:?}, not `INSIDE TOTAL`"),
        }
    }
    let estimate = 4.0 * inside as f64 / total as f64;
    println!(
        "pi ≈ {estimate:.5} from {total} samples in {} tasks",
        outputs.len()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.stop().await;
    Ok(())
}
