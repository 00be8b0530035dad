//! An actor program on the process service: it spawns workers across the cluster's agents,
//! monitors each, restarts a failed one itself, and gathers their results from their
//! output, wherever they ran.
//!
//! ```text
//! $ troupe dev &
//! $ cargo run -p troupe-examples --bin workers -- --workers 4 --upto 1000000
//! sum of 1..=1000000 = 500000500000 from 4 workers (1 restarted)
//! ```
//!
//! Each worker runs this same binary with `--worker FROM TO ATTEMPT CRASH` (so the agents
//! must see the binary at the same path, as they do on one host or with a shared install).
//! The first worker crashes on its first attempt, on purpose, to show a restart.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use troupe_actors::client::Processes;
use troupe_actors::processes::{Needs, Placement, ProcessEnd, ProcessRef};
use troupe_actors::protocol::Resources;
use troupe_os::actor::Stream;
use troupe_os::{ExitReason, ProcessSpec};
use troupe_runtime::{Cookie, Node, NodeConfig};

/// The most attempts of one worker.
const ATTEMPTS: u32 = 3;

struct Args {
    workers: u64,
    upto: u64,
    master: SocketAddr,
    cookie: Option<String>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        workers: 4,
        upto: 1_000_000,
        master: std::env::var("TROUPE_MASTER")
            .unwrap_or_else(|_| "127.0.0.1:5050".into())
            .parse()
            .context("TROUPE_MASTER is not HOST:PORT")?,
        cookie: None,
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--workers" => args.workers = value()?.parse()?,
            "--upto" => args.upto = value()?.parse()?,
            "--master" => args.master = value()?.parse()?,
            "--cookie" => args.cookie = Some(value()?),
            other => {
                bail!("unknown argument {other:?} (try --workers N --upto M --master HOST:PORT)")
            }
        }
    }
    if args.workers == 0 || args.upto < args.workers {
        bail!("--workers must be at least 1, and --upto at least --workers");
    }
    Ok(args)
}

/// One worker's share: the sum of `from..=to`, printed; or, asked to crash, exit 1.
fn worker(mut argv: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut number = || -> anyhow::Result<u64> {
        Ok(argv
            .next()
            .context("--worker FROM TO ATTEMPT CRASH")?
            .parse()?)
    };
    let (from, to, attempt, crash) = (number()?, number()?, number()?, number()?);
    if crash == 1 && attempt == 1 {
        eprintln!("worker {from}..={to}: crashing on purpose");
        std::process::exit(1);
    }
    println!("{}", (from..=to).sum::<u64>());
    Ok(())
}

/// Spawns the worker for `from..=to`, its `attempt`th time.
async fn spawn(
    processes: &Processes,
    (from, to): (u64, u64),
    attempt: u32,
    crash: bool,
) -> anyhow::Result<ProcessRef> {
    let exe = std::env::current_exe()?.display().to_string();
    let spec = ProcessSpec::new([
        exe,
        "--worker".into(),
        from.to_string(),
        to.to_string(),
        attempt.to_string(),
        u8::from(crash).to_string(),
    ]);
    let needs = Needs {
        resources: Resources::new(0.1, 32.0),
        placement: Placement::Any,
        ports: 0,
    };
    Ok(processes
        .spawn(&format!("worker-{from}"), spec, needs)
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("--worker") {
        return worker(argv.skip(1));
    }
    let args = parse(argv)?;
    let cookie = Cookie::resolve(args.cookie.as_deref(), None)?;
    let node = Node::start(NodeConfig::new(
        format!("workers-{}", std::process::id()),
        "127.0.0.1:0".parse()?,
        cookie,
    ))
    .await?;
    let master = node
        .connect(args.master)
        .await
        .context("cannot reach the master")?;
    let processes = Processes::on(master);

    // Shares of 1..=upto, one per worker.
    let per = args.upto / args.workers;
    let shares: Vec<(u64, u64)> = (0..args.workers)
        .map(|i| {
            let from = i * per + 1;
            let to = if i + 1 == args.workers {
                args.upto
            } else {
                (i + 1) * per
            };
            (from, to)
        })
        .collect();
    let mut total: u64 = 0;
    let mut restarted = 0;
    // Each worker watched in turn; the others run meanwhile.
    let mut running = Vec::new();
    for (i, share) in shares.iter().enumerate() {
        let process = spawn(&processes, *share, 1, i == 0).await?;
        let monitor = processes.monitor(&process.id).await?;
        running.push((*share, 1, process, monitor));
    }
    while let Some((share, attempt, process, monitor)) = running.pop() {
        let end = tokio::time::timeout(Duration::from_secs(60), monitor.wait())
            .await
            .context("a worker ran for more than a minute")?
            .context("the process service went away")?;
        match end {
            ProcessEnd::Exited(ExitReason::Exited(0)) => {
                let out = processes.output(&process.id, Stream::Stdout).await?;
                let text = String::from_utf8_lossy(&out);
                total += text
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("worker {} printed {text:?}", process.id))?;
            }
            end if attempt < ATTEMPTS => {
                eprintln!(
                    "worker {} on {} ended ({end:?}): starting it again",
                    process.id, process.agent
                );
                restarted += 1;
                let again = spawn(&processes, share, attempt + 1, false).await?;
                let monitor = processes.monitor(&again.id).await?;
                running.push((share, attempt + 1, again, monitor));
            }
            end => bail!(
                "worker {} failed {ATTEMPTS} times, the last: {end:?}",
                process.id
            ),
        }
    }
    println!(
        "sum of 1..={} = {total} from {} workers ({restarted} restarted)",
        args.upto, args.workers
    );
    node.stop().await;
    Ok(())
}
