//! Crash to restarted: a supervised process actor whose binary exits at once, restarted by
//! its supervisor, vs a bare loop that spawns and waits for the same binary. Both run it
//! at least the same number of times; the time per run is compared. troupe's path includes what
//! makes it a task: the shim, the cgroup (as root), the sandbox, the pidfd watch, the
//! actor and the supervisor's bookkeeping.

use std::time::{Duration, Instant};

use troupe_os::process::TaskContext;
use troupe_os::{ProcessSpec, process_child};
use troupe_runtime::supervisor::{ChildSpec, Strategy};
use troupe_runtime::{SupFlags, SupervisorRef, SupervisorSpec};

use crate::report::{Figure, Goal, Skipped};

const BINARY: &str = "/bin/true";

pub(crate) async fn run(quick: bool) -> anyhow::Result<Figure> {
    let n: u32 = if quick { 100 } else { 1_000 };
    let root = std::env::temp_dir().join(format!("troupe-bench-{}", std::process::id()));
    let flags = SupFlags::new(Strategy::OneForOne).intensity(n * 4, Duration::from_secs(3600));
    let sup = SupervisorRef::start(SupervisorSpec::new(flags).child(process_child(
        ChildSpec::worker("crasher"),
        ProcessSpec::new([BINARY]),
        TaskContext::new(&troupe_os::Executor::new(), "bench", "crasher", &root),
    )))
    .await?;
    // Timed from the first restart seen to the first count at least `n` later, over the
    // restarts counted between: the first start (the launcher's own, the supervisor's) is
    // not a restart, and the count is read every 2 ms, so neither end is guessed.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, u32)> = None;
    let troupe = loop {
        let restarts = sup.which_children().await?[0].restarts;
        let now = Instant::now();
        match first {
            None if restarts >= 1 => first = Some((now, restarts)),
            Some((t0, r0)) if restarts >= r0 + n => {
                break (now - t0).as_secs_f64() * 1e6 / f64::from(restarts - r0);
            }
            _ => {}
        }
        anyhow::ensure!(now < deadline, "only {restarts} restarts in 10 minutes");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    sup.stop().await;
    super::remove_at_the_end(root);
    tokio::task::spawn_blocking(|| {
        troupe_os::cgroup::remove_owner("bench", Duration::from_secs(5))
    })
    .await?;

    let t = Instant::now();
    for _ in 0..n {
        std::process::Command::new(BINARY).status()?;
    }
    let bare = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    Ok(Figure::new(
        "crash to restarted",
        troupe,
        bare,
        "us/restart",
        Goal::RatioAtMost(1.5),
        format!(
            "{n} runs of {BINARY} restarted by a one_for_one supervisor; baseline: a bare spawn-and-wait loop"
        ),
    ))
}

/// The supervisord side, when supervisord is installed: a `[program]` of the same binary with
/// `autorestart=true` and `startsecs=0` (so that an exit at once counts as a run, not a
/// failure to start), under `supervisord -n` for a few seconds; the time per restart is the
/// span between its first and last `spawned:` log lines over the restarts between them.
pub(crate) async fn supervisord(troupe_us: f64, quick: bool) -> Result<Figure, Skipped> {
    let name = "crash to restarted vs supervisord";
    let skipped = |why: String| Skipped {
        name: name.into(),
        why,
    };
    if !crate::measures::remote::installed("supervisord") {
        return Err(skipped(
            "supervisord is not installed (Debian package supervisor)".into(),
        ));
    }
    let run_for = Duration::from_secs(if quick { 4 } else { 12 });
    let dir = std::env::temp_dir().join(format!("troupe-bench-supervisord-{}", std::process::id()));
    let measured = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || supervisord_restarts(&dir, run_for)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let (per_restart, restarts) = measured
        .map_err(|e| skipped(format!("the supervisord side panicked: {e}")))?
        .map_err(|e| skipped(format!("the supervisord side failed: {e:#}")))?;
    Ok(Figure::new(
        name,
        troupe_us,
        per_restart,
        "us/restart",
        Goal::RatioAtMost(1.0),
        format!(
            "baseline: supervisord restarting {BINARY} (autorestart, startsecs=0), {restarts} restarts in {run_for:?}"
        ),
    ))
}

/// Runs supervisord in `dir` for `run_for`; returns microseconds per restart and restarts.
fn supervisord_restarts(dir: &std::path::Path, run_for: Duration) -> anyhow::Result<(f64, usize)> {
    std::fs::create_dir_all(dir)?;
    let log = dir.join("supervisord.log");
    let conf = dir.join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[supervisord]\nnodaemon=true\nlogfile={log}\npidfile={pid}\nloglevel=info\n\n\
             [program:crasher]\ncommand={BINARY}\nautorestart=true\nstartsecs=0\nstartretries=1000000\n",
            log = log.display(),
            pid = dir.join("supervisord.pid").display(),
        ),
    )?;
    let mut child = std::process::Command::new("supervisord")
        .arg("-n")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(run_for);
    // SIGTERM: supervisord stops its program and exits.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log)?;
    // "2026-11-24 00:34:52,581 INFO spawned: 'crasher' with pid 18919"
    let stamps: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(" spawned: 'crasher'"))
        .filter_map(|l| {
            let time = l.split_whitespace().nth(1)?;
            let (hms, ms) = time.split_once(',')?;
            let mut parts = hms.split(':').map(|p| p.parse::<f64>().ok());
            let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
            Some(((h * 60.0 + m) * 60.0 + s) * 1e3 + ms.parse::<f64>().ok()?)
        })
        .collect();
    anyhow::ensure!(
        stamps.len() >= 2,
        "supervisord restarted {BINARY} {} times in {run_for:?}",
        stamps.len().saturating_sub(1)
    );
    let restarts = stamps.len() - 1;
    let span_ms = stamps[restarts] - stamps[0];
    Ok((span_ms * 1e3 / restarts as f64, restarts))
}
