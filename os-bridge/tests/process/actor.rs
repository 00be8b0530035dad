//! The process actor: addressable, monitorable with the exit as the Down reason, and a
//! supervisor child whose crashing binary is restarted within the intensity and given up
//! on beyond it.

use std::time::Duration;

use troupe_os::actor::{ProcessArgs, Stream};
use troupe_os::{ExitReason, ProcessActor, ProcessMsg, process_child};
use troupe_runtime::supervisor::{ChildSpec, Strategy};
use troupe_runtime::{
    Addr, Cookie, DownReason, Node, NodeConfig, SupFlags, SupervisorRef, SupervisorSpec, ractor,
};

use super::{Fixture, sh, shim_of, within};

async fn node() -> Node {
    let mut config = NodeConfig::new(
        "procs",
        "127.0.0.1:0".parse().unwrap(),
        Cookie::new("process-actor-tests").unwrap(),
    );
    config.heartbeat = None;
    Node::start(config).await.unwrap()
}

const CALL: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_actor_answers_and_its_down_carries_the_exit() {
    let Some(fx) = Fixture::new() else { return };
    let node = node().await;
    let script = "echo one; echo two; while [ ! -e stop ]; do sleep 0.02; done; exit 3";
    let args = ProcessArgs {
        spec: sh(script),
        ctx: fx.ctx("p1"),
        path: None,
        adopt: false,
    };
    let (actor, _) = ractor::Actor::spawn(None, ProcessActor, args)
        .await
        .unwrap();
    let addr = Addr::<ProcessMsg>::new("task/p1");
    let (_, down) = troupe_runtime::monitor_channel(&addr).await.unwrap();
    let info = addr
        .call(|reply| ProcessMsg::Info { reply }, CALL)
        .await
        .unwrap();
    assert_eq!(info.task, "p1");
    assert!(info.pid > 0 && !info.cgroup.is_empty());
    let deadline = std::time::Instant::now() + CALL;
    loop {
        let lines = addr
            .call(
                |reply| ProcessMsg::Tail {
                    stream: Stream::Stdout,
                    lines: 5,
                    reply,
                },
                CALL,
            )
            .await
            .unwrap();
        if lines == ["one", "two"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = addr
        .call(|reply| ProcessMsg::Stats { reply }, CALL)
        .await
        .unwrap();
    assert!(stats.from_cgroup && stats.usage.processes >= 1);
    let bad = addr
        .call(
            |reply| ProcessMsg::Signal {
                signal: "NOPE".into(),
                reply,
            },
            CALL,
        )
        .await
        .unwrap();
    assert!(bad.is_err());
    std::fs::write(fx.root.join("p1").join("stop"), "").unwrap();
    let down = within(CALL, down).await.unwrap();
    assert_eq!(
        down.reason,
        DownReason::Error(ExitReason::Exited(3).to_string())
    );
    within(CALL, actor.get_cell().wait(None)).await.unwrap();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_actor_stops_its_process_gracefully() {
    let Some(fx) = Fixture::new() else { return };
    let node = node().await;
    let args = ProcessArgs {
        spec: troupe_os::ProcessSpec::new(["sleep", "1000"]),
        ctx: fx.ctx("p2"),
        path: Some("apps/sleeper".into()),
        adopt: false,
    };
    ractor::Actor::spawn(None, ProcessActor, args)
        .await
        .unwrap();
    let addr = Addr::<ProcessMsg>::new("apps/sleeper");
    let pid = addr
        .call(|reply| ProcessMsg::Info { reply }, CALL)
        .await
        .unwrap()
        .pid;
    let (_, down) = troupe_runtime::monitor_channel(&addr).await.unwrap();
    let reason = addr
        .call(|reply| ProcessMsg::Stop { reply }, CALL)
        .await
        .unwrap();
    assert_eq!(reason, ExitReason::Killed);
    assert_eq!(
        within(CALL, down).await.unwrap().reason,
        DownReason::Shutdown
    );
    assert!(!troupe_os::procfs::is_running(pid));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_restarts_a_crashing_binary_and_gives_up_beyond_its_intensity() {
    let Some(fx) = Fixture::new() else { return };
    let _node = node().await;
    // Crashes on its first two runs, then stays up: within an intensity of 3.
    let flaky = "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; \
                 [ $n -ge 3 ] && exec sleep 1000; exit 1";
    let flags = SupFlags::new(Strategy::OneForOne).intensity(3, Duration::from_secs(30));
    let sup = SupervisorRef::start(SupervisorSpec::new(flags.clone()).child(process_child(
        ChildSpec::worker("flaky"),
        sh(flaky).grace(Duration::from_millis(200)),
        fx.ctx("flaky"),
    )))
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + CALL;
    while std::fs::read_to_string(fx.root.join("flaky").join("n"))
        .unwrap_or_default()
        .trim()
        != "3"
    {
        assert!(std::time::Instant::now() < deadline, "never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = &sup.which_children().await.unwrap()[0];
    assert_eq!(info.restarts, 2);
    assert!(info.actor.is_some());
    assert!(
        info.last_exit
            .as_deref()
            .unwrap_or("")
            .contains("exited with code 1")
    );
    sup.stop().await;

    // Always crashing: three restarts, then the supervisor gives up.
    let sup = SupervisorRef::start(SupervisorSpec::new(flags).child(process_child(
        ChildSpec::worker("crasher"),
        sh("echo run >> runs; exit 1"),
        fx.ctx("crasher"),
    )))
    .await
    .unwrap_or_else(|e| panic!("the crasher's supervisor did not start: {e}"));
    assert!(
        sup.wait(Duration::from_secs(20)).await,
        "the supervisor never gave up"
    );
    let runs = std::fs::read_to_string(fx.root.join("crasher").join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 4, "the first run and three restarts");
}

/// systemd keeps a service's cgroup across its restarts; so does a supervised process: the
/// same directory serves every run (its inode does not change), and it goes once no run
/// follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_keeps_its_cgroup_which_goes_once_no_run_follows() {
    let Some(fx) = Fixture::new() else { return };
    let _node = node().await;
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    let base = if v1 {
        "/sys/fs/cgroup/memory"
    } else {
        "/sys/fs/cgroup"
    };
    // Each run notes its memory cgroup's directory and inode; the third stays up.
    let script = format!(
        "cg=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3); \
         [ -z \"$cg\" ] && cg=$(grep '^0::' /proc/self/cgroup | cut -d: -f3); \
         echo {base}$cg > dir; stat -c %i {base}$cg >> inodes; \
         [ $(wc -l < inodes) -ge 3 ] && exec sleep 1000; exit 1"
    );
    let flags = SupFlags::new(Strategy::OneForOne).intensity(5, Duration::from_secs(30));
    let sup = SupervisorRef::start(SupervisorSpec::new(flags).child(process_child(
        ChildSpec::worker("keeper"),
        sh(&script).grace(Duration::from_millis(200)),
        fx.ctx("keeper"),
    )))
    .await
    .unwrap();
    let sandbox = fx.root.join("keeper");
    let inodes = || std::fs::read_to_string(sandbox.join("inodes")).unwrap_or_default();
    assert!(
        super::until(CALL, || inodes().lines().count() >= 3).await,
        "three runs: {:?}",
        inodes()
    );
    let inodes: Vec<String> = inodes().lines().map(str::to_string).collect();
    assert!(
        inodes.iter().all(|i| *i == inodes[0]),
        "one cgroup for every run: {inodes:?}"
    );
    let dir =
        std::path::PathBuf::from(std::fs::read_to_string(sandbox.join("dir")).unwrap().trim());
    assert!(dir.ends_with("keeper"), "{}", dir.display());
    assert!(dir.is_dir());
    sup.stop().await;
    assert!(
        super::until(troupe_os::keeper::KEEP_FOR + Duration::from_secs(5), || {
            !dir.exists()
        })
        .await,
        "the kept cgroup {} is removed",
        dir.display()
    );
}

/// A restart runs on the shim the last run left (every run has the same parent), and that
/// shim serves other tasks once its supervisor stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_runs_on_the_shim_its_last_run_left_which_then_serves_other_tasks() {
    let Some(fx) = Fixture::new() else { return };
    let _node = node().await;
    let script = "echo $PPID >> shims; [ $(wc -l < shims) -ge 4 ] && exec sleep 1000; exit 3";
    let flags = SupFlags::new(Strategy::OneForOne).intensity(5, Duration::from_secs(30));
    let sup = SupervisorRef::start(SupervisorSpec::new(flags).child(process_child(
        ChildSpec::worker("rerun"),
        sh(script).grace(Duration::from_millis(200)),
        fx.ctx("rerun"),
    )))
    .await
    .unwrap();
    let shims_file = fx.root.join("rerun").join("shims");
    let shims = || std::fs::read_to_string(&shims_file).unwrap_or_default();
    assert!(
        super::until(CALL, || shims().lines().count() >= 4).await,
        "four runs: {:?}",
        shims()
    );
    let shims: Vec<i32> = shims().lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(
        shims.iter().all(|s| *s == shims[0]),
        "one shim for every run: {shims:?}"
    );
    assert!(troupe_os::procfs::is_running(shims[0]));
    sup.stop().await;
    assert!(
        super::until(troupe_os::keeper::KEEP_FOR + Duration::from_secs(5), || {
            fx.executor.spare_shims() == 1
        })
        .await,
        "a spare once its keeper lets it go"
    );
    let other = fx.spawn("other", sh("exit 0")).await;
    assert_eq!(shim_of(&other), shims[0], "another task runs on it");
    within(CALL, other.wait()).await;
}

/// Spare shims are kept up to their limit; the shims of more tasks ending at once exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_shims_are_kept_up_to_their_limit_and_the_rest_exit() {
    let Some(fx) = Fixture::new() else { return };
    let limit = troupe_os::keeper::SPARE_SHIMS;
    let mut runs = Vec::new();
    for i in 0..limit + 2 {
        runs.push(fx.spawn(&format!("t{i}"), sh("sleep 0.5")).await);
    }
    let mut shims = Vec::new();
    for p in &runs {
        shims.push(shim_of(p));
        assert_eq!(within(CALL, p.wait()).await, ExitReason::Exited(0));
    }
    shims.sort_unstable();
    shims.dedup();
    assert_eq!(
        shims.len(),
        limit + 2,
        "a shim each while they ran together"
    );
    assert_eq!(fx.executor.spare_shims(), limit);
    let running = || {
        shims
            .iter()
            .filter(|s| troupe_os::procfs::is_running(**s))
            .count()
    };
    assert!(
        super::until(CALL, || running() == limit).await,
        "{} shims run",
        running()
    );
}

/// A kept shim that died before the next run is replaced by a new one; a kept shim that no
/// run takes within the keeper's time becomes a spare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_kept_shim_is_replaced_and_an_untaken_one_becomes_a_spare() {
    let Some(fx) = Fixture::new() else { return };
    let ctx = fx.ctx("respawn").keeping_between_runs();
    let first = troupe_os::Process::spawn(sh("exit 0"), ctx.clone())
        .await
        .unwrap();
    within(CALL, first.wait()).await;
    let shim = shim_of(&first);
    assert!(troupe_os::procfs::is_running(shim), "kept after its run");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(shim).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(super::until(CALL, || !troupe_os::procfs::is_running(shim)).await);
    let second = troupe_os::Process::spawn(sh("exit 0"), ctx.clone())
        .await
        .expect("a new shim runs it");
    assert_eq!(within(CALL, second.wait()).await, ExitReason::Exited(0));
    let replacement = shim_of(&second);
    assert_ne!(replacement, shim);
    let third = troupe_os::Process::spawn(sh("exit 0"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        shim_of(&third),
        replacement,
        "the replacement is kept in turn"
    );
    within(CALL, third.wait()).await;
    assert_eq!(fx.executor.spare_shims(), 0, "kept, not spare");
    assert!(
        super::until(troupe_os::keeper::KEEP_FOR + Duration::from_secs(5), || {
            fx.executor.spare_shims() == 1
        })
        .await,
        "an untaken shim becomes a spare"
    );
    assert!(troupe_os::procfs::is_running(replacement));
}

/// A kept shim whose kept cgroup was claimed, and then removed, by another run of the task
/// runs the next run in the cgroup made anew (the files it kept open name the removed one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_shim_joins_the_cgroup_made_anew_after_its_own_was_removed() {
    let Some(fx) = Fixture::new() else { return };
    let ctx = fx.ctx("remade").keeping_between_runs();
    let first = troupe_os::Process::spawn(sh("exit 0"), ctx.clone())
        .await
        .unwrap();
    within(CALL, first.wait()).await;
    let claimed = fx.spawn("remade", sh("sleep 100")).await;
    assert_eq!(within(CALL, claimed.stop()).await, ExitReason::Killed);
    assert!(claimed.cgroup_dirs().iter().all(|d| !d.exists()), "removed");
    let second = troupe_os::Process::spawn(sh("sleep 100"), ctx.clone())
        .await
        .expect("the kept shim runs it");
    assert_eq!(shim_of(&second), shim_of(&first), "on the kept shim");
    for dir in second.cgroup_dirs() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == second.pid().to_string()),
            "in {}",
            dir.display()
        );
    }
    assert_eq!(within(CALL, second.stop()).await, ExitReason::Killed);
}

/// A kept cgroup that a new run of the same task claims (from another supervisor, without
/// the keeper) is the new run's: the old keeper's expiry neither kills nor removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_cgroup_claimed_by_a_new_run_is_left_to_it() {
    let Some(fx) = Fixture::new() else { return };
    let kept = troupe_os::Process::spawn(sh("exit 0"), fx.ctx("shared").keeping_between_runs())
        .await
        .unwrap();
    within(CALL, kept.wait()).await;
    let dirs = kept.cgroup_dirs();
    assert!(dirs.iter().all(|d| d.is_dir()), "kept after the run");

    let claimed = fx.spawn("shared", sh("sleep 100")).await;
    assert_eq!(claimed.cgroup_dirs(), dirs);
    tokio::time::sleep(troupe_os::keeper::KEEP_FOR + Duration::from_millis(500)).await;
    assert!(claimed.exit_reason().is_none(), "the new run was killed");
    assert!(dirs.iter().all(|d| d.is_dir()), "its cgroup was removed");
    assert_eq!(within(CALL, claimed.stop()).await, ExitReason::Killed);
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_standard_input_takes_what_is_sent_in_order_outlives_its_owner_and_ends_when_closed()
 {
    let Some(fx) = Fixture::new() else { return };
    let node = node().await;
    let script = "while read line; do echo \"got $line\"; done; echo eof; exit 7";
    let args = ProcessArgs {
        spec: sh(script).stdin_pipe(),
        ctx: fx.ctx("in1"),
        path: None,
        adopt: false,
    };
    let (actor, _) = ractor::Actor::spawn(None, ProcessActor, args.clone())
        .await
        .unwrap();
    let addr = Addr::<ProcessMsg>::new("task/in1");
    let send = |text: String| {
        let addr = addr.clone();
        async move {
            addr.call(
                |reply| ProcessMsg::SendStdin {
                    bytes: text.into_bytes(),
                    reply,
                },
                CALL,
            )
            .await
            .unwrap()
        }
    };
    let tail = |n: usize| {
        let addr = addr.clone();
        async move {
            addr.call(
                |reply| ProcessMsg::Tail {
                    stream: Stream::Stdout,
                    lines: n,
                    reply,
                },
                CALL,
            )
            .await
            .unwrap()
        }
    };
    let wait_for_line = |want: String, n: usize| async move {
        let deadline = std::time::Instant::now() + CALL;
        loop {
            let lines = tail(n).await;
            if lines.last() == Some(&want) {
                return lines;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{want:?} not in {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Nothing sent yet: it waits for input rather than reading the end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tail(5).await.is_empty(),
        "it read no end before anything was sent"
    );
    for i in 0..50 {
        assert_eq!(send(format!("line {i}\n")).await, Ok(()));
    }
    let lines = wait_for_line("got line 49".into(), 50).await;
    let want: Vec<String> = (0..50).map(|i| format!("got line {i}")).collect();
    assert_eq!(lines, want, "in the order sent");

    // Its owner killed outright (as an agent that dies) and a new one adopting it: the
    // input is still open, held by the shim.
    actor.kill();
    within(CALL, actor.get_cell().wait(None)).await.unwrap();
    let adopt = ProcessArgs {
        adopt: true,
        ..args
    };
    let (actor, _) = ractor::Actor::spawn(None, ProcessActor, adopt)
        .await
        .unwrap();
    assert_eq!(send("after\n".into()).await, Ok(()));
    wait_for_line("got after".into(), 3).await;

    // Closed: it reads the end after what was sent, and nothing more may be sent.
    let (_, down) = troupe_runtime::monitor_channel(&addr).await.unwrap();
    assert_eq!(send("last\n".into()).await, Ok(()));
    let closed = addr
        .call(|reply| ProcessMsg::CloseStdin { reply }, CALL)
        .await
        .unwrap();
    assert_eq!(closed, Ok(()));
    let down = within(CALL, down).await.unwrap();
    assert_eq!(
        down.reason,
        DownReason::Error(ExitReason::Exited(7).to_string())
    );
    let out = std::fs::read_to_string(fx.root.join("in1").join("stdout.log")).unwrap();
    assert!(out.ends_with("got after\ngot last\neof\n"), "{out}");
    within(CALL, actor.get_cell().wait(None)).await.unwrap();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_to_a_process_without_a_piped_stdin_is_refused_and_it_reads_nothing() {
    let Some(fx) = Fixture::new() else { return };
    let node = node().await;
    let args = ProcessArgs {
        spec: troupe_os::ProcessSpec::new(["sleep", "1000"]),
        ctx: fx.ctx("in2"),
        path: None,
        adopt: false,
    };
    ractor::Actor::spawn(None, ProcessActor, args)
        .await
        .unwrap();
    let addr = Addr::<ProcessMsg>::new("task/in2");
    let sent = addr
        .call(
            |reply| ProcessMsg::SendStdin {
                bytes: b"hello\n".to_vec(),
                reply,
            },
            CALL,
        )
        .await
        .unwrap();
    assert_eq!(sent, Err(troupe_os::stdin::StdinRefused::NotPiped));
    let closed = addr
        .call(|reply| ProcessMsg::CloseStdin { reply }, CALL)
        .await
        .unwrap();
    assert_eq!(closed, Err(troupe_os::stdin::StdinRefused::NotPiped));
    addr.call(|reply| ProcessMsg::Stop { reply }, CALL)
        .await
        .unwrap();
    node.stop().await;
}
