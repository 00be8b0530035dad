//! Real processes in real cgroups (as root): exit reasons, limits, graceful stop, cleanup and
//! re-adoption. Several cases port Nomad's executor tests (`executor_test.go`,
//! `executor_linux_test.go`); their names are given beside each.
//!
//! Without root these tests skip with a reason, and fail when `TROUPE_REQUIRE_ROOT=1`.

mod actor;
mod launcher;
mod logs;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use troupe_os::process::{AdoptError, TaskContext};
use troupe_os::{ExitReason, Process, ProcessSpec, Resources, StartError};

/// A sandbox root removed when the test ends, and an agent id of its own.
struct Fixture {
    root: PathBuf,
    agent: String,
    /// The test's launch machinery, as an agent has one.
    executor: troupe_os::Executor,
}

impl Fixture {
    /// `None` (after saying why) when not root and root is not required.
    fn new() -> Option<Fixture> {
        if rustix::process::geteuid().as_raw() != 0 {
            assert!(
                std::env::var("TROUPE_REQUIRE_ROOT").as_deref() != Ok("1"),
                "TROUPE_REQUIRE_ROOT=1 but not running as root"
            );
            eprintln!("skipped: cgroup tests need root");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let root = std::env::temp_dir().join(format!("troupe-os-{id}"));
        std::fs::create_dir_all(&root).unwrap();
        Some(Fixture {
            root,
            agent: format!("test-{id}"),
            executor: troupe_os::Executor::new(),
        })
    }

    fn ctx(&self, task: &str) -> TaskContext {
        TaskContext {
            agent: self.agent.clone(),
            task: task.into(),
            sandbox_root: self.root.clone(),
            shim: PathBuf::from(env!("CARGO_BIN_EXE_troupe-shim")),
            shim_args: Vec::new(),
            keeper: None,
            warm: false,
            executor: self.executor.clone(),
        }
    }

    async fn spawn(&self, task: &str, spec: ProcessSpec) -> Process {
        Process::spawn(spec, self.ctx(task))
            .await
            .expect("the task starts")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Whatever a failed test left: kill it, remove its cgroups and sandbox (the warm
        // ones first, so that none is made after).
        self.executor.drain(&self.root, &self.agent);
        troupe_os::cgroup::remove_owner(&self.agent, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new(["/bin/sh", "-c", script])
}

async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.expect("in time")
}

/// Waits until `cond` holds, polling.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn alive(pid: i32) -> bool {
    troupe_os::procfs::is_running(pid)
}

/// The pid of the shim that runs (or ran) `p`, from its checkpoint.
pub(crate) fn shim_of(p: &Process) -> i32 {
    troupe_os::Checkpoint::read(&p.sandbox().join(".troupe"))
        .expect("a checkpoint")
        .shim_pid
}

/// Nomad: TestExecutor_Start_Wait_Failure_Code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_exit_code_is_reported() {
    let Some(fx) = Fixture::new() else { return };
    let p = fx.spawn("exit7", sh("exit 7")).await;
    assert_eq!(
        within(Duration::from_secs(10), p.wait()).await,
        ExitReason::Exited(7)
    );
    assert!(
        p.cgroup_dirs().iter().all(|d| !d.exists()),
        "the cgroup is removed"
    );
}

/// Nomad: TestExecutor_Start_Wait (and output capture).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_exit_is_reported_with_its_output() {
    let Some(fx) = Fixture::new() else { return };
    let p = fx
        .spawn("hello", sh("echo hello; echo oops >&2").env("A", "1"))
        .await;
    assert_eq!(
        within(Duration::from_secs(10), p.wait()).await,
        ExitReason::Exited(0)
    );
    let (out, err) = p.log_paths();
    assert_eq!(std::fs::read_to_string(out).unwrap(), "hello\n");
    assert_eq!(std::fs::read_to_string(err).unwrap(), "oops\n");
}

/// The environment is the spec's, and nothing of the owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_is_exactly_the_specs() {
    let Some(fx) = Fixture::new() else { return };
    let p = fx
        .spawn(
            "env",
            ProcessSpec::new(["/usr/bin/env"]).env("ONLY", "this"),
        )
        .await;
    assert_eq!(
        within(Duration::from_secs(10), p.wait()).await,
        ExitReason::Exited(0)
    );
    assert_eq!(
        std::fs::read_to_string(p.log_paths().0).unwrap(),
        "ONLY=this\n"
    );
}

/// Nomad: TestExecutor_WaitExitSignal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_by_signal_is_reported() {
    let Some(fx) = Fixture::new() else { return };
    let p = fx.spawn("sig", ProcessSpec::new(["sleep", "100"])).await;
    p.signal(10).unwrap();
    assert_eq!(
        within(Duration::from_secs(10), p.wait()).await,
        ExitReason::Signaled(10)
    );
}

/// Nomad: TestExecutor_Start_Invalid and TestExecutor_Start_NonExecutableBinaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_start_says_why() {
    let Some(fx) = Fixture::new() else { return };
    let missing = Process::spawn(ProcessSpec::new(["/no/such/binary"]), fx.ctx("missing")).await;
    assert!(
        matches!(&missing, Err(StartError::FailedToStart(e)) if e.contains("No such file")),
        "{missing:?}"
    );
    let not_in_path = Process::spawn(ProcessSpec::new(["no-such-program"]), fx.ctx("nopath")).await;
    assert!(matches!(not_in_path, Err(StartError::FailedToStart(_))));
    let script = fx.root.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let not_exec = Process::spawn(
        ProcessSpec::new([script.to_str().unwrap()]),
        fx.ctx("noexec"),
    )
    .await;
    assert!(
        matches!(&not_exec, Err(StartError::FailedToStart(e)) if e.contains("Permission denied")),
        "{not_exec:?}"
    );
    let mut bad_cwd = ProcessSpec::new(["true"]);
    bad_cwd.cwd = Some("/no/such/dir".into());
    let bad = Process::spawn(bad_cwd, fx.ctx("badcwd")).await;
    assert!(matches!(bad, Err(StartError::FailedToStart(_))), "{bad:?}");
    assert_eq!(
        missing.unwrap_err().exit_reason(),
        ExitReason::FailedToStart("No such file or directory (os error 2)".into())
    );
}

/// What a task finds when it starts: its own session and process group, in its cgroup
/// (every hierarchy), with its limits, no signal blocked or ignored (the shim ignores
/// SIGPIPE, and an ignored signal would stay so across exec), standard input empty and its
/// output in the sandbox's logs. And a working directory it cannot enter is refused, saying
/// so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_starts_in_its_session_cgroup_and_limits_with_default_signals() {
    let Some(fx) = Fixture::new() else { return };
    let mut spec = sh("read line; echo \"read: $line\"; exec sleep 30");
    spec.rlimits = vec![troupe_os::spec::Rlimit {
        resource: "nofile".into(),
        soft: Some(100),
        hard: Some(200),
    }];
    let p = fx.spawn("state", spec).await;
    let pid = p.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("SigBlk:"), "0000000000000000", "{status}");
    assert_eq!(field("SigIgn:"), "0000000000000000", "{status}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // Fields 5 and 6 of stat: the process group and the session.
    assert_eq!(after_comm[2], pid.to_string(), "its own group: {stat}");
    assert_eq!(after_comm[3], pid.to_string(), "its own session: {stat}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(nofile, ["100", "200"], "{limits}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let inside = format!("/troupe/{}/state", fx.agent);
    for dir in p.cgroup_dirs() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{} holds the task; /proc says {cgroups}",
            dir.display()
        );
    }
    assert!(cgroups.contains(&inside), "{cgroups}");
    // Standard input is empty: `read` got end-of-file at once, and said so in the log.
    let stdout = p.log_paths().0;
    assert!(
        until(Duration::from_secs(10), || std::fs::read_to_string(&stdout)
            .is_ok_and(|s| s.contains("read: \n")))
        .await
    );
    within(Duration::from_secs(10), p.stop()).await;

    let mut spec = ProcessSpec::new(["true"]);
    spec.cwd = Some(fx.root.join("no-such-dir"));
    let refused = Process::spawn(spec, fx.ctx("nocwd")).await;
    assert!(
        matches!(&refused, Err(StartError::FailedToStart(e)) if e.contains("working directory") && e.contains("No such file")),
        "{refused:?}"
    );
}

/// An owner raises its soft open-file limit to the hard one; its tasks get the limit it
/// started with back, unless their spec sets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_raises_its_open_file_limit_and_its_tasks_keep_the_one_it_started_with() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Some(fx) = Fixture::new() else { return };
    let hard = getrlimit(Resource::Nofile).maximum;
    if hard.is_some_and(|h| h <= 4096) {
        eprintln!("skipped: the hard open-file limit is too low for the limits tried here");
        return;
    }
    // This test is a process of its own: the service soft limit, then the owner's raise.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(256),
            maximum: hard,
        },
    )
    .unwrap();
    assert_eq!(
        troupe_os::fd_limit::raise_for_owner().unwrap(),
        troupe_os::fd_limit::Raised::From(256, hard.unwrap_or(u64::MAX))
    );
    assert_eq!(getrlimit(Resource::Nofile).current, hard);
    assert_eq!(
        troupe_os::fd_limit::raise_for_owner().unwrap(),
        troupe_os::fd_limit::Raised::AlreadyAtMost,
        "once raised, it stays"
    );

    let soft_of = |p: &Process| {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        line.split_whitespace().nth(3).unwrap().to_string()
    };
    let plain = fx.spawn("plain", sh("exec sleep 30")).await;
    assert_eq!(
        soft_of(&plain),
        "256",
        "a task gets the limit its owner started with"
    );
    let mut spec = sh("exec sleep 30");
    spec.rlimits = vec![troupe_os::spec::Rlimit {
        resource: "nofile".into(),
        soft: Some(4096),
        hard,
    }];
    let own = fx.spawn("own", spec).await;
    assert_eq!(soft_of(&own), "4096", "a task's own limit wins");
    within(Duration::from_secs(10), plain.stop()).await;
    within(Duration::from_secs(10), own.stop()).await;
}

/// A shim killed while its task runs: the task runs on, its owner watches it through a
/// pidfd from then on, and once it ends reports it gone, since no exit was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_shim_dies_is_watched_to_its_end_and_reported_gone() {
    let Some(fx) = Fixture::new() else { return };
    let p = fx.spawn("orphan", ProcessSpec::new(["sleep", "1"])).await;
    let shim = shim_of(&p);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(shim).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(alive(p.pid()), "the task outlives its shim");
    assert!(p.exit_reason().is_none(), "not ended while it runs");
    let reason = within(Duration::from_secs(10), p.wait()).await;
    assert!(
        matches!(&reason, ExitReason::Gone(why) if why.contains("shim died")),
        "{reason:?}"
    );
    assert!(!alive(p.pid()));
}

/// Nomad: TestExecutor_OOMKilled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_over_its_limit_is_oom_killed() {
    let Some(fx) = Fixture::new() else { return };
    let limits = Resources {
        memory_bytes: Some(64 * 1024 * 1024),
        ..Resources::default()
    };
    // `tail` keeps the one endless line of /dev/zero in memory.
    let p = fx
        .spawn(
            "hog",
            ProcessSpec::new(["tail", "/dev/zero"]).resources(limits),
        )
        .await;
    assert_eq!(
        within(Duration::from_secs(30), p.wait()).await,
        ExitReason::OomKilled
    );
}

/// Nomad: TestExecutor_IsolationAndConstraints (pids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_held_at_its_pids_limit() {
    let Some(fx) = Fixture::new() else { return };
    let limits = Resources {
        pids: Some(20),
        ..Resources::default()
    };
    // A fork bomb that survives its failed forks (a shell would give up at the first).
    let bomb = ProcessSpec::new([
        "/usr/bin/python3",
        "-c",
        "import os, time\n\
         for _ in range(200):\n\
         \x20   try:\n\
         \x20       if os.fork() == 0:\n\
         \x20           time.sleep(30); os._exit(0)\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         time.sleep(30)\n",
    ])
    .grace(Duration::from_millis(200));
    let p = fx.spawn("bomb", bomb.resources(limits)).await;
    // Wait until the bomb is going (a loaded machine may take a moment), then watch it
    // for a second.
    assert!(until(Duration::from_secs(20), || p.stats().usage.processes >= 10).await);
    let mut most = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        most = most.max(p.stats().usage.processes);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most > 1 && most <= 20, "processes: {most}");
    // The host is fine: this process can still start others.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
    // The shell may give up by itself once fork fails ("Cannot fork"), or be stopped here.
    let reason = within(Duration::from_secs(20), p.stop()).await;
    assert!(
        matches!(reason, ExitReason::Killed | ExitReason::Exited(_)),
        "{reason:?}"
    );
    assert!(p.cgroup_dirs().iter().all(|d| !d.exists()));
}

/// Nomad: TestExecutor_IsolationAndConstraints (cpu).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_hog_is_held_at_its_quota() {
    let Some(fx) = Fixture::new() else { return };
    let limits = Resources {
        cpus: Some(0.2),
        ..Resources::default()
    };
    let p = fx
        .spawn("spin", sh("while :; do :; done").resources(limits))
        .await;
    let before = p.stats().usage.cpu_ns;
    let t = Instant::now();
    // The measuring window itself: cpu time used over two seconds of wall time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = (p.stats().usage.cpu_ns - before) as f64 / t.elapsed().as_nanos() as f64;
    assert!(used < 0.5, "used {:.0}% of a cpu", used * 100.0);
    assert!(used > 0.02, "the hog did not run: {used}");
    assert_eq!(
        within(Duration::from_secs(20), p.stop()).await,
        ExitReason::Killed
    );
}

/// Starts `script` (which touches `ready` once its traps are set), stops it, and returns
/// the process and how long the stop took.
async fn stop_once_ready(
    fx: &Fixture,
    task: &str,
    script: &str,
    grace: Duration,
) -> (Process, Duration) {
    let p = fx.spawn(task, sh(script).grace(grace)).await;
    let ready = p.sandbox().join("ready");
    assert!(until(Duration::from_secs(10), || ready.exists()).await);
    let t = Instant::now();
    let reason = within(Duration::from_secs(20), p.stop()).await;
    assert_eq!(reason, ExitReason::Killed);
    (p, t.elapsed())
}

/// Nomad: TestExecutor_SignalCatching / kill with grace: the stop signal comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_a_trapping_process_finish() {
    let Some(fx) = Fixture::new() else { return };
    let script = "trap 'echo bye > done; exit 0' TERM; touch ready; while :; do sleep 0.05; done";
    let (p, took) = stop_once_ready(&fx, "trap", script, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_secs(5),
        "it did not need the grace period"
    );
    assert_eq!(
        std::fs::read_to_string(p.sandbox().join("done")).unwrap(),
        "bye\n"
    );
}

/// Nomad: TestExecutor_Start_Kill_Immediately_WithGrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_ignores_the_stop_signal_is_killed_after_the_grace_period() {
    let Some(fx) = Fixture::new() else { return };
    let script = "trap '' TERM; touch ready; while :; do sleep 0.05; done";
    let (p, took) = stop_once_ready(&fx, "deaf", script, Duration::from_millis(500)).await;
    assert!(
        took >= Duration::from_millis(500),
        "killed before its grace period"
    );
    assert!(!alive(p.pid()));
}

/// Nomad: TestExecutor_Start_Wait_Children, TestExecutor_ClientCleanup,
/// TestExecutor_EscapeContainer: nothing the task started survives its stop, not even a
/// grandchild that left the process group and the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_setsid_grandchild_is_gone_after_a_stop() {
    let Some(fx) = Fixture::new() else { return };
    let script = "setsid sh -c 'sleep 1000 & echo $! > grandchild; wait' & sleep 1000";
    let p = fx
        .spawn("daemon", sh(script).grace(Duration::from_millis(300)))
        .await;
    let pidfile = p.sandbox().join("grandchild");
    assert!(until(Duration::from_secs(10), || pidfile.exists()).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(grandchild));
    let dirs = p.cgroup_dirs();
    assert!(!dirs.is_empty() && dirs.iter().all(|d| d.exists()));
    assert_eq!(
        within(Duration::from_secs(20), p.stop()).await,
        ExitReason::Killed
    );
    assert!(
        until(Duration::from_secs(5), || !alive(grandchild)).await,
        "the grandchild survived"
    );
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "the cgroup directory is gone"
    );
}

/// Nomad: TestExecutor_Start_Kill_Immediately_NoGrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_without_grace_kills_at_once() {
    let Some(fx) = Fixture::new() else { return };
    let deaf = sh("trap '' TERM; exec sleep 1000").grace(Duration::ZERO);
    let p = fx.spawn("nograce", deaf).await;
    assert_eq!(
        within(Duration::from_secs(10), p.stop()).await,
        ExitReason::Killed
    );
    assert!(!alive(p.pid()));
}

/// Nomad: TestExecutor_UserEnv and TestExecutor_WorkDir, with the user set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_as_its_user_in_its_working_directory() {
    let Some(fx) = Fixture::new() else { return };
    // It can make files where it runs, and in its sandbox (Mesos gives a sandbox to its
    // task's user).
    let mut spec = sh("id -u; id -g; pwd; touch here ../../top").env("PATH", "/usr/bin:/bin");
    spec.uid = Some(65534);
    spec.gid = Some(65534);
    spec.cwd = Some("work/dir".into());
    let p = fx.spawn("nobody", spec).await;
    assert_eq!(
        within(Duration::from_secs(10), p.wait()).await,
        ExitReason::Exited(0)
    );
    let out = std::fs::read_to_string(p.log_paths().0).unwrap();
    let expected = format!("65534\n65534\n{}\n", p.sandbox().join("work/dir").display());
    assert_eq!(out, expected);
    assert!(p.sandbox().join("work/dir/here").exists());
    assert!(p.sandbox().join("top").exists());
    // A working directory that leaves the sandbox is refused before anything is made.
    let mut escape = ProcessSpec::new(["true"]);
    escape.cwd = Some("../..".into());
    assert!(matches!(
        Process::spawn(escape, fx.ctx("escape")).await,
        Err(StartError::Setup(_))
    ));
    assert!(!fx.root.join("escape").exists(), "no sandbox was made");
    assert!(
        !troupe_os::cgroup::task_names(&fx.agent).contains("escape"),
        "no cgroup was made"
    );
}

/// A task whose main process exits leaves nothing behind either (Nomad:
/// TestExecutor_Start_Wait_Children, where a grandchild keeps the output open: the wait
/// still ends with the main process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_task_leaves_behind_when_it_exits_is_killed() {
    let Some(fx) = Fixture::new() else { return };
    let p = fx
        .spawn("leaver", sh("setsid sleep 1000 & echo $! > orphan; exit 0"))
        .await;
    assert_eq!(
        within(Duration::from_secs(10), p.wait()).await,
        ExitReason::Exited(0)
    );
    let orphan: i32 = std::fs::read_to_string(p.sandbox().join("orphan"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(until(Duration::from_secs(5), || !alive(orphan)).await);
}

/// A checkpoint whose pid is right but whose start time is not names another process: the
/// new owner refuses it and reports the task gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faked_checkpoint_with_a_reused_pid_is_refused() {
    let Some(fx) = Fixture::new() else { return };
    let p = fx.spawn("victim", ProcessSpec::new(["sleep", "100"])).await;
    let mut checkpoint = troupe_os::Checkpoint::read(&fx.ctx("victim").status_dir()).unwrap();
    checkpoint.start_time += 1;
    let adopted = Process::adopt_checkpoint(fx.ctx("victim"), checkpoint).await;
    assert!(
        matches!(
            &adopted,
            Err(AdoptError::Gone {
                reason: ExitReason::Gone(_),
                ..
            })
        ),
        "{adopted:?}"
    );
    // The task counts as gone: whatever is left in its cgroup is killed with it.
    within(Duration::from_secs(20), p.wait()).await;
    assert!(!alive(p.pid()));
}

/// The limits a process sees from its cgroup, as an agent reads its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_of_a_cgroup_are_read_back() {
    let Some(fx) = Fixture::new() else { return };
    let limits = Resources {
        cpus: Some(0.5),
        memory_bytes: Some(256 * 1024 * 1024),
        ..Resources::default()
    };
    let p = fx
        .spawn(
            "limited",
            ProcessSpec::new(["sleep", "1000"]).resources(limits),
        )
        .await;
    let seen = troupe_os::host::limits_of(p.pid());
    assert_eq!(seen.cpus, Some(0.5));
    assert_eq!(seen.memory_bytes, Some(256 * 1024 * 1024));
    within(Duration::from_secs(20), p.stop()).await;
}

/// A launch takes a sandbox (and, on cgroup v1, a cgroup) made ahead, renamed into place,
/// instead of making them; the pool fills again, and a drain leaves nothing warm behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_takes_a_warm_sandbox_and_cgroup_and_a_drain_leaves_none() {
    use std::os::unix::fs::MetadataExt;
    use troupe_os::warm::WARM;
    let Some(fx) = Fixture::new() else { return };
    let warming = |task: &str| fx.ctx(task).warming();
    let first = Process::spawn(sh("exit 0"), warming("first"))
        .await
        .unwrap();
    within(Duration::from_secs(10), first.wait()).await;
    let v1 = !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let filled = until(Duration::from_secs(10), || {
        let (sandboxes, cgroups) = fx.executor.warm_ready(&fx.root, &fx.agent);
        // (The first task's cgroup may be back in the pool too, recycled.)
        sandboxes == WARM && (!v1 || cgroups >= WARM)
    })
    .await;
    assert!(
        filled,
        "the pools fill: {:?}",
        fx.executor.warm_ready(&fx.root, &fx.agent)
    );
    let inodes = |dirs: Vec<PathBuf>| -> Vec<u64> {
        dirs.iter()
            .filter_map(|d| std::fs::metadata(d).ok())
            .map(|m| m.ino())
            .collect()
    };
    let warm_dir = fx.root.join(".troupe-warm");
    let warm_sandboxes = inodes(
        std::fs::read_dir(&warm_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect(),
    );
    let pids_dir = PathBuf::from("/sys/fs/cgroup/pids/troupe").join(&fx.agent);
    let warm_cgroups = inodes(
        troupe_os::cgroup::task_names(&fx.agent)
            .into_iter()
            .filter(|n| n.starts_with(".troupe-warm"))
            .map(|n| pids_dir.join(n))
            .collect(),
    );
    // It runs until stopped, so that its cgroup is there to look at.
    let second = Process::spawn(sh("echo warm; exec sleep 30"), warming("second"))
        .await
        .unwrap();
    let sandbox = inodes(vec![fx.root.join("second")]);
    assert!(
        warm_sandboxes.contains(&sandbox[0]),
        "the sandbox is a warm one, renamed"
    );
    if v1 {
        let cgroup = inodes(vec![pids_dir.join("second")]);
        assert!(
            warm_cgroups.contains(&cgroup[0]),
            "the cgroup is a warm one, renamed"
        );
    }
    let out = second.log_paths().0;
    let logged = until(Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|text| text == "warm\n")
    })
    .await;
    assert!(logged, "its output goes to the warm sandbox's log");
    assert_eq!(
        within(Duration::from_secs(10), second.stop()).await,
        ExitReason::Killed
    );
    fx.executor.drain(&fx.root, &fx.agent);
    assert_eq!(fx.executor.warm_ready(&fx.root, &fx.agent), (0, 0));
    assert!(!warm_dir.exists(), "no warm sandbox is left");
    let left: Vec<String> = troupe_os::cgroup::task_names(&fx.agent)
        .into_iter()
        .filter(|n| n.starts_with(".troupe-warm"))
        .collect();
    assert!(left.is_empty(), "warm cgroups left: {left:?}");
}

/// An ended task's cgroup goes back to its agent's pool with every limit reset, and a new
/// task of the same name, even on the shim that ran the first, joins its own new cgroup,
/// never the recycled one. A cgroup the task made inside its own is not recycled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_tasks_cgroup_is_recycled_reset_and_never_joined_by_its_old_name() {
    use std::os::unix::fs::MetadataExt;
    let Some(fx) = Fixture::new() else { return };
    let pids_root = PathBuf::from("/sys/fs/cgroup/pids/troupe").join(&fx.agent);
    if !std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
        eprintln!("skipped: cgroups are recycled on v1 hierarchies only");
        return;
    }
    let warming = |task: &str| fx.ctx(task).warming();
    // As root, it turns its own cgroup's OOM killer off and sets a soft limit: neither may
    // reach the next task.
    let mut spec = sh(
        "d=/sys/fs/cgroup/memory$(grep ':memory:' /proc/self/cgroup | cut -d: -f3); \
         echo 1 > $d/memory.oom_control && echo 1048576 > $d/memory.soft_limit_in_bytes && sleep 0.3",
    );
    spec.resources = Resources {
        cpus: Some(0.5),
        cpu_shares: Some(512),
        memory_bytes: Some(64 << 20),
        pids: Some(50),
    };
    let first = Process::spawn(spec, warming("limited")).await.unwrap();
    let inode = std::fs::metadata(pids_root.join("limited")).unwrap().ino();
    let first_shim = shim_of(&first);
    assert_eq!(
        within(Duration::from_secs(10), first.wait()).await,
        ExitReason::Exited(0)
    );
    let recycled = troupe_os::cgroup::task_names(&fx.agent)
        .into_iter()
        .filter(|n| n.starts_with(".troupe-warm"))
        .find(|n| std::fs::metadata(pids_root.join(n)).is_ok_and(|m| m.ino() == inode))
        .expect("the ended task's cgroup is a warm one now");
    let read = |controller: &str, file: &str| {
        let dir = PathBuf::from("/sys/fs/cgroup")
            .join(controller)
            .join("troupe")
            .join(&fx.agent)
            .join(&recycled);
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "-1");
    assert_eq!(read("cpu", "cpu.shares"), "1024");
    assert_eq!(read("pids", "pids.max"), "max");
    assert_eq!(read("pids", "cgroup.procs"), "");
    let unlimited = read("memory", "memory.limit_in_bytes")
        .parse::<u64>()
        .unwrap();
    assert!(unlimited > 1 << 60, "memory limit {unlimited}");
    let soft = read("memory", "memory.soft_limit_in_bytes")
        .parse::<u64>()
        .unwrap();
    assert!(soft > 1 << 60, "soft limit {soft}");
    assert!(
        read("memory", "memory.oom_control").contains("oom_kill_disable 0"),
        "the OOM killer is on again"
    );

    // Another task takes the recycled cgroup: started through another shim program (a
    // link to the same binary), so that the spare shim is left for what follows.
    let link = fx.root.join("other-shim");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_troupe-shim"), &link).unwrap();
    let mut others = Vec::new();
    for i in 0..troupe_os::warm::RECYCLED + troupe_os::warm::WARM + 1 {
        let name = format!("other-{i}");
        let ctx = warming(&name).with_shim(&link);
        others.push(Process::spawn(sh("exec sleep 30"), ctx).await.unwrap());
        if std::fs::metadata(pids_root.join(&name)).is_ok_and(|m| m.ino() == inode) {
            break;
        }
    }
    let holder = others.last().unwrap().task().to_string();
    assert_eq!(
        std::fs::metadata(pids_root.join(&holder)).unwrap().ino(),
        inode,
        "another task runs in the recycled cgroup"
    );
    // The same task again, on the shim that ran it (the only spare): in a cgroup of its
    // own name, not in the recycled one its shim once joined under that name.
    let again = Process::spawn(sh("exec sleep 30"), warming("limited"))
        .await
        .unwrap();
    assert_eq!(shim_of(&again), first_shim, "on the same shim");
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", again.pid())).unwrap();
    let pids_line = cgroups.lines().find(|l| l.contains(":pids:")).unwrap();
    assert!(
        pids_line.ends_with(&format!("/troupe/{}/limited", fx.agent)),
        "{pids_line}"
    );
    assert_eq!(
        within(Duration::from_secs(10), again.stop()).await,
        ExitReason::Killed
    );
    for other in &others {
        within(Duration::from_secs(10), other.stop()).await;
    }

    // A task that made a cgroup inside its own: removed with it, not recycled.
    let nester = Process::spawn(
        sh("mkdir /sys/fs/cgroup/pids$(grep ':pids:' /proc/self/cgroup | cut -d: -f3)/inner"),
        warming("nester"),
    )
    .await
    .unwrap();
    let nester_inode = std::fs::metadata(pids_root.join("nester")).map(|m| m.ino());
    assert_eq!(
        within(Duration::from_secs(10), nester.wait()).await,
        ExitReason::Exited(0)
    );
    let warm_inodes: Vec<u64> = troupe_os::cgroup::task_names(&fx.agent)
        .into_iter()
        .filter_map(|n| std::fs::metadata(pids_root.join(n)).ok())
        .map(|m| m.ino())
        .collect();
    if let Ok(nester_inode) = nester_inode {
        assert!(!warm_inodes.contains(&nester_inode), "not recycled");
    }
    assert!(nester.cgroup_dirs().iter().all(|d| !d.exists()));
}

/// A task name that is not a plain directory name is refused before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_name_that_would_leave_the_sandbox_root_is_refused() {
    let Some(fx) = Fixture::new() else { return };
    for name in ["../escape", "a/b", "..", ".troupe-warm"] {
        match Process::spawn(sh("true"), fx.ctx(name)).await {
            Err(StartError::Setup(why)) => assert!(why.contains("task name"), "{name}: {why}"),
            other => panic!("{name}: {:?}", other.map(|_| ())),
        }
    }
    assert!(!fx.root.parent().unwrap().join("escape").exists());
}

/// A cgroup the task made inside its own goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_the_task_made_inside_its_own_is_removed_with_it() {
    let Some(fx) = Fixture::new() else { return };
    if !std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
        eprintln!("skipped: no v1 pids hierarchy");
        return;
    }
    let p = fx
        .spawn(
            "nester",
            sh("mkdir /sys/fs/cgroup/pids$(grep ':pids:' /proc/self/cgroup | cut -d: -f3)/inner"),
        )
        .await;
    assert_eq!(
        within(Duration::from_secs(20), p.wait()).await,
        ExitReason::Exited(0),
        "the task made its inner cgroup"
    );
    let dirs = p.cgroup_dirs();
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "left: {:?}",
        dirs.iter().filter(|d| d.exists()).collect::<Vec<_>>()
    );
}

/// A process the task put in cgroups it made inside its own, out of its process group, is
/// still the task's: killed when the task ends, and its cgroups removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_hidden_in_an_inner_cgroup_is_killed_with_the_task() {
    let Some(fx) = Fixture::new() else { return };
    if !std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
        eprintln!("skipped: no v1 hierarchies");
        return;
    }
    let script = r#"
        setsid sleep 300 &
        s=$!
        for h in cpu cpuacct memory pids freezer; do
            d=/sys/fs/cgroup/$h$(grep ":$h:" /proc/self/cgroup | cut -d: -f3)/inner
            mkdir $d && echo $s > $d/cgroup.procs || exit 1
        done
        echo $s
    "#;
    let p = fx.spawn("hider", sh(script)).await;
    assert_eq!(
        within(Duration::from_secs(20), p.wait()).await,
        ExitReason::Exited(0),
        "it hid its process"
    );
    let out = std::fs::read_to_string(p.log_paths().0).unwrap();
    let hidden: i32 = out.trim().parse().expect("the hidden pid");
    let dead = until(Duration::from_secs(10), || !alive(hidden)).await;
    if !dead {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(hidden).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    assert!(dead, "the hidden process {hidden} outlived its task");
    assert!(
        p.cgroup_dirs().iter().all(|d| !d.exists()),
        "the cgroups are removed"
    );
}
