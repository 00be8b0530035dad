//! Crash to restarted: a supervised process actor whose binary exits at once, restarted by
//! its supervisor, vs a bare loop that spawns and waits for the same binary. Both run it
//! the same number of times; the time per restart is compared. troupe's path includes what
//! makes it a task: the shim, the cgroup (as root), the sandbox, the pidfd watch, the
//! actor and the supervisor's bookkeeping.

use std::time::{Duration, Instant};

use troupe_os::process::TaskContext;
use troupe_os::{ProcessSpec, process_child};
use troupe_runtime::supervisor::{ChildSpec, Strategy};
use troupe_runtime::{SupFlags, SupervisorRef, SupervisorSpec};

use crate::report::{Figure, Goal};

const BINARY: &str = "/bin/true";

pub(crate) async fn run(quick: bool) -> anyhow::Result<Figure> {
    let n: u32 = if quick { 100 } else { 1_000 };
    let root = std::env::temp_dir().join(format!("troupe-bench-{}", std::process::id()));
    let flags = SupFlags::new(Strategy::OneForOne).intensity(n * 2, Duration::from_secs(3600));
    let t = Instant::now();
    let sup = SupervisorRef::start(SupervisorSpec::new(flags).child(process_child(
        ChildSpec::worker("crasher"),
        ProcessSpec::new([BINARY]),
        TaskContext::new("bench", "crasher", &root),
    )))
    .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let restarts = sup.which_children().await?[0].restarts;
        if restarts >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {restarts} restarts in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let troupe = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    sup.stop().await;
    let _ = std::fs::remove_dir_all(&root);

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

/// The supervisord comparison: not written yet; says whether supervisord is installed.
pub(crate) fn supervisord() -> crate::report::Skipped {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("supervisord").is_file()))
        .unwrap_or(false);
    crate::report::Skipped {
        name: "crash to restarted vs supervisord".into(),
        why: if found {
            "supervisord is installed, but its side of this measure is not written yet".into()
        } else {
            "supervisord is not installed (Debian package supervisor)".into()
        },
    }
}
