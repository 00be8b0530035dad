//! Remote call round trip between two OS processes on loopback: troupe's `Addr::call` (our
//! codec, our reply port, path resolution, the message channel) vs a raw ractor_cluster RPC
//! (its own derive and byte encoding, its session) to an actor in the same other process.
//! Same payload, same number of calls, interleaved in batches; the median is compared.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use troupe_runtime::{Addr, Cookie, Node, NodeConfig, Reply};

use super::percentiles;
use crate::report::{Figure, Goal, Skipped};

const COOKIE: &str = "troupe-bench";
const PAYLOAD: &str = "a payload of sixty-four bytes, the same for both sides of it....";

/// troupe's echo.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub(crate) enum TroupeEcho {
    /// Answers with the text.
    Echo {
        /// The text.
        text: String,
        /// The answer.
        reply: Reply<String>,
    },
}

/// ractor_cluster's echo.
#[derive(ractor_cluster::RactorClusterMessage)]
pub(crate) enum RawEcho {
    /// Answers with the text.
    #[rpc]
    Echo(String, RpcReplyPort<String>),
}

struct TroupeEchoActor;

impl Actor for TroupeEchoActor {
    type Msg = TroupeEcho;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<TroupeEcho>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<TroupeEcho>,
        msg: TroupeEcho,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let TroupeEcho::Echo { text, reply } = msg;
        reply.send(text);
        Ok(())
    }
}

struct RawEchoActor;

impl Actor for RawEchoActor {
    type Msg = RawEcho;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<RawEcho>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<RawEcho>,
        msg: RawEcho,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let RawEcho::Echo(text, reply) = msg;
        let _ = reply.send(text);
        Ok(())
    }
}

/// The other process: `troupe-bench --serve NAME`. Serves both echoes until its standard
/// input closes.
pub(crate) async fn serve(name: &str) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(name, "127.0.0.1:0".parse()?, Cookie::new(COOKIE)?);
    config.heartbeat = None;
    let node = Node::start(config).await?;
    let (troupe, _) = Actor::spawn(None, TroupeEchoActor, ()).await?;
    troupe_runtime::register("bench/echo", &troupe)?;
    let (raw, _) = Actor::spawn(None, RawEchoActor, ()).await?;
    ractor::pg::join("bench/raw".to_string(), vec![raw.get_cell()]);
    println!("serving {}", node.advertise_addr());
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await?;
    node.stop().await;
    Ok(())
}

/// The other process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) async fn run(quick: bool) -> anyhow::Result<Figure> {
    let mut child = Server(
        Command::new(std::env::current_exe()?)
            .args(["--serve", "bench-b"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("serving ")
        .ok_or_else(|| anyhow::anyhow!("no address in {line:?}"))?
        .parse()?;
    let mut config = NodeConfig::new("bench-a", "127.0.0.1:0".parse()?, Cookie::new(COOKIE)?);
    config.heartbeat = None;
    let node = Node::start(config).await?;
    node.connect(addr).await?;
    let troupe = Addr::<TroupeEcho>::on("bench-b", "bench/echo");
    let raw: ActorRef<RawEcho> = loop {
        if let Some(cell) = ractor::pg::get_members(&"bench/raw".to_string())
            .into_iter()
            .next()
        {
            break cell.into();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let n = if quick { 2_000 } else { 20_000 };
    // The calls are made from a task of the runtime, as an actor makes them, not from the
    // thread that blocks on the whole run (whose every wake-up would be one more across
    // threads, for both sides alike).
    let (t_lat, r_lat) = tokio::spawn(async move {
        let (mut t_lat, mut r_lat) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let timeout = Duration::from_secs(5);
        for round in 0..(n / 100 + 2) {
            let warmup = round < 2;
            for _ in 0..100 {
                let t = Instant::now();
                let echo = troupe
                    .call(
                        |reply| TroupeEcho::Echo {
                            text: PAYLOAD.into(),
                            reply,
                        },
                        timeout,
                    )
                    .await?;
                anyhow::ensure!(echo == PAYLOAD, "troupe echo garbled");
                if !warmup {
                    t_lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                let t = Instant::now();
                let echo = ractor::call_t!(raw, RawEcho::Echo, 5_000, PAYLOAD.to_string())
                    .map_err(|e| anyhow::anyhow!("raw call: {e}"))?;
                anyhow::ensure!(echo == PAYLOAD, "raw echo garbled");
                if !warmup {
                    r_lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        anyhow::Ok((t_lat, r_lat))
    })
    .await??;
    node.stop().await;
    drop(child);
    let (t50, t99) = percentiles(t_lat);
    let (r50, r99) = percentiles(r_lat);
    Ok(Figure::new(
        "remote round trip p50",
        t50,
        r50,
        "us",
        Goal::RatioAtMost(1.1),
        format!(
            "{n} calls each with a 64-byte payload between two processes on loopback, \
             alternating in batches of 100; baseline: raw ractor_cluster RPC; p99 {t99:.0} vs {r99:.0} us"
        ),
    ))
}

/// Whether `program` is on the PATH.
pub(crate) fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// The Erlang distribution's side of the remote measure, when `erl` is installed: two `erl`
/// nodes on loopback (their own `epmd` on a free port, bound to 127.0.0.1), one echoing a
/// 64-byte binary back, the other timing `n` round trips (after as many to warm up) with
/// `erlang:monotonic_time`; compared with troupe's p50 from this run.
pub(crate) async fn erlang(troupe_p50: f64, quick: bool) -> Result<Figure, Skipped> {
    let name = "remote round trip p50 vs Erlang";
    let skipped = |why: String| Skipped {
        name: name.into(),
        why,
    };
    if !installed("erl") {
        return Err(skipped(
            "erl is not installed (Debian package erlang-base)".into(),
        ));
    }
    let n: u32 = if quick { 2_000 } else { 10_000 };
    let measured = tokio::task::spawn_blocking(move || erlang_round_trips(n))
        .await
        .map_err(|e| skipped(format!("the Erlang side panicked: {e}")))?
        .map_err(|e| skipped(format!("the Erlang side failed: {e:#}")))?;
    let (p50, p99) = measured;
    Ok(Figure::new(
        name,
        troupe_p50,
        p50,
        "us",
        // The remote round trip's goal, whichever runtime is the baseline.
        Goal::RatioAtMost(1.1),
        format!(
            "baseline: {n} Erlang distribution round trips (`!` and `receive`) of a 64-byte \
             binary between two erl nodes on loopback; Erlang p99 {p99:.0} us"
        ),
    ))
}

/// Runs the two Erlang nodes; returns the round trip's p50 and p99 in microseconds.
fn erlang_round_trips(n: u32) -> anyhow::Result<(f64, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let env = [
        ("ERL_EPMD_ADDRESS", "127.0.0.1".to_string()),
        ("ERL_EPMD_PORT", port.to_string()),
    ];
    let erl = |name: &str, eval: String| {
        let mut cmd = Command::new("erl");
        cmd.args(["-name", &format!("{name}@127.0.0.1"), "-setcookie", COOKIE])
            .args([
                "-noshell",
                "-kernel",
                "inet_dist_use_interface",
                "{127,0,0,1}",
            ])
            .args(["-eval", &eval])
            .envs(env.iter().map(|(k, v)| (k, v.as_str())))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        cmd
    };
    let echo = erl(
        "troupe_bench_echo",
        "register(echo, spawn(fun Loop() -> receive {From, P} -> From ! {reply, P}, Loop() end end)), \
         io:format(\"ready~n\"), receive stop -> ok end."
            .into(),
    )
    .stdout(Stdio::piped())
    .spawn()?;
    // The echo node, and the epmd it started, go away whatever happens below.
    struct Cleanup(Child, u16);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = Command::new("epmd")
                .args(["-port", &self.1.to_string(), "-kill"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let mut echo = Cleanup(echo, port);
    let stdout = echo
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "ready", "the echo node said {line:?}");
    let timer = erl(
        "troupe_bench_timer",
        format!(
            "Node = list_to_atom(\"troupe_bench_echo@127.0.0.1\"), \
             true = net_kernel:connect_node(Node), \
             P = list_to_binary(lists:duplicate(64, $a)), \
             Rt = fun() -> T0 = erlang:monotonic_time(nanosecond), {{echo, Node}} ! {{self(), P}}, \
                  receive {{reply, P}} -> ok end, erlang:monotonic_time(nanosecond) - T0 end, \
             [Rt() || _ <- lists:seq(1, {n})], \
             L = lists:sort([Rt() || _ <- lists:seq(1, {n})]), \
             io:format(\"~p ~p~n\", [lists:nth(max(1, round({n} * 0.5)), L), lists:nth(max(1, round({n} * 0.99)), L)]), \
             halt()."
        ),
    )
    .output()?;
    anyhow::ensure!(
        timer.status.success(),
        "the timing node failed: {}",
        timer.status
    );
    let text = String::from_utf8_lossy(&timer.stdout);
    let mut numbers = text.split_whitespace().map(|w| w.parse::<f64>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(p50)), Some(Ok(p99))) => Ok((p50 / 1e3, p99 / 1e3)),
        _ => anyhow::bail!("the timing node printed {text:?}"),
    }
}
