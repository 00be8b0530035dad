//! One task's process, from its owner's side: start it (through the shim), watch it through
//! a pidfd, signal it, stop it gracefully, read its stats, and find it again after the owner
//! restarted.
//!
//! A task is its cgroup: when its main process ends, whatever it left behind in the cgroup
//! (daemonised grandchildren included) is killed, and the cgroup removed. Without root
//! there is no cgroup; the process group stands in for it, with one warning per owner.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::cgroup::{CgroupError, CgroupStats, TaskCgroup};
use crate::executor::Executor;
use crate::keeper::RunKeeper;
use crate::logs::LogStream;
use crate::procfs;
pub use crate::sandbox::log_paths;
use crate::sandbox::status_dir_in;
use crate::shim::{self, CHECKPOINT, Exit, LaunchPlan, OUTCOME};
pub use crate::shim_link::StartError;
use crate::shim_link::{IdleShim, Reporting, ShimStart, start_run};
use crate::spec::{ExitReason, ProcessSpec, signal_number};

/// Where a task lives on this host.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The owner's id (an agent's), which scopes cgroups: `troupe/<agent>/<task>`.
    pub agent: String,
    /// The task's id.
    pub task: String,
    /// The directory sandboxes are made in; the task's is `<root>/<task>`.
    pub sandbox_root: PathBuf,
    /// The shim program: the `troupe-shim` binary, or a program that runs the shim when
    /// given [`crate::entry::SHIM_FLAG`] (see [`crate::main_if_shim`]).
    pub shim: PathBuf,
    /// Arguments that come before the launch file on the shim's command line.
    pub shim_args: Vec<String>,
    /// Where the task's emptied cgroup and idle shim wait for its next run, when it has
    /// runs to come (a supervised process); without one, the cgroup is removed and the shim
    /// exits when the task ends.
    pub keeper: Option<RunKeeper>,
    /// Whether launches in this context take sandboxes and cgroups made ahead, and keep
    /// some ready (see [`crate::warm`]): for an owner of many launches, such as an agent.
    pub warm: bool,
    /// The owner's launch machinery: its launchers, spare shims, kept cgroups and warm
    /// pools (see [`Executor`]).
    pub executor: Executor,
}

impl TaskContext {
    /// A context of `executor`'s owner, with the shim found by [`default_shim`].
    pub fn new(
        executor: &Executor,
        agent: &str,
        task: &str,
        sandbox_root: impl Into<PathBuf>,
    ) -> TaskContext {
        let (shim, shim_args) = default_shim();
        TaskContext {
            agent: agent.into(),
            task: task.into(),
            sandbox_root: sandbox_root.into(),
            shim,
            shim_args,
            keeper: None,
            warm: false,
            executor: executor.clone(),
        }
    }

    /// This context, taking a sandbox and a cgroup made ahead when one is ready, and
    /// keeping some ready for the next launches (see [`crate::warm`]).
    pub fn warming(mut self) -> TaskContext {
        self.warm = true;
        self
    }

    /// This context, keeping the task's emptied cgroup and idle shim for its next run (see
    /// [`RunKeeper`]).
    pub fn keeping_between_runs(mut self) -> TaskContext {
        self.keeper = Some(self.executor.keeper());
        self
    }

    /// This context with the `troupe-shim` binary at `path` as its shim.
    pub fn with_shim(mut self, path: impl Into<PathBuf>) -> TaskContext {
        self.shim = path.into();
        self.shim_args.clear();
        self
    }

    /// The task's sandbox directory.
    pub fn sandbox(&self) -> PathBuf {
        self.sandbox_root.join(&self.task)
    }

    /// Where the task's own records (start, exit, checkpoint) are kept.
    pub fn status_dir(&self) -> PathBuf {
        status_dir_in(&self.sandbox())
    }

    /// How the task's last run ended, once its owner concluded it (the record outlives
    /// the process actor, so an owner that learns of the end late still knows how).
    pub fn outcome(&self) -> Option<ExitReason> {
        shim::read_record(&self.status_dir(), OUTCOME)
    }

    /// The processes its last run left running in its cgroup when its main process ended,
    /// killed with the cgroup (`redis-server (pid 812)`); empty if none.
    pub fn left_running(&self) -> Vec<String> {
        shim::read_record(&self.status_dir(), shim::LEFT_RUNNING).unwrap_or_default()
    }
}

/// The shim command: `$TROUPE_SHIM`, else a `troupe-shim` binary beside the running
/// executable, else the running executable itself with [`crate::entry::SHIM_FLAG`] (which works when
/// its `main` starts with [`crate::main_if_shim`], as `troupe`'s does).
pub fn default_shim() -> (PathBuf, Vec<String>) {
    if let Some(path) = std::env::var_os("TROUPE_SHIM") {
        return (PathBuf::from(path), Vec::new());
    }
    // Found once per process: every task's context asks, and the answer (a `readlink` of
    // `/proc/self/exe` and a look beside it) does not change while it runs.
    static BESIDE_EXE: std::sync::OnceLock<(PathBuf, Vec<String>)> = std::sync::OnceLock::new();
    BESIDE_EXE.get_or_init(shim_beside_exe).clone()
}

fn shim_beside_exe() -> (PathBuf, Vec<String>) {
    let exe = std::env::current_exe().ok();
    let beside = exe.as_ref().and_then(|exe| {
        // Test binaries live one level below the binaries (`target/debug/deps`).
        let dir = exe.parent()?;
        [dir.join("troupe-shim"), dir.parent()?.join("troupe-shim")]
            .into_iter()
            .find(|p| p.is_file())
    });
    match (beside, exe) {
        (Some(shim), _) => (shim, Vec::new()),
        (None, Some(exe)) => (exe, vec![crate::entry::SHIM_FLAG.to_string()]),
        (None, None) => (PathBuf::from("troupe-shim"), Vec::new()),
    }
}

/// What a new owner needs to find a task again, kept in the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The owner's id.
    pub agent: String,
    /// The task's id.
    pub task: String,
    /// The task's pid.
    pub pid: i32,
    /// Its start time (ticks since boot), to refuse a reused pid.
    pub start_time: u64,
    /// The shim's pid.
    pub shim_pid: i32,
    /// Its cgroup path, if it has one.
    pub cgroup: Option<String>,
    /// What it runs.
    pub spec: ProcessSpec,
    /// Its sandbox.
    pub sandbox: PathBuf,
    /// Its log files (standard output, standard error).
    pub logs: [PathBuf; 2],
}

impl Checkpoint {
    /// The checkpoint recorded in a task's status directory ([`TaskContext::status_dir`]).
    pub fn read(status_dir: &Path) -> Option<Checkpoint> {
        shim::read_record(status_dir, CHECKPOINT)
    }
}

/// Resource use of a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// The main process's pid.
    pub pid: i32,
    /// From its cgroup, or from `/proc` of the main process without one.
    pub usage: CgroupStats,
    /// Whether the numbers come from a cgroup (all its processes) or the main process only.
    pub from_cgroup: bool,
}

struct Inner {
    ctx: TaskContext,
    spec: ProcessSpec,
    pid: i32,
    start_time: u64,
    cgroup: Option<Arc<TaskCgroup>>,
    /// The cgroup's OOM kills before this run (a kept cgroup has its earlier runs').
    oom_baseline: u64,
    stop_requested: AtomicBool,
    exit: watch::Receiver<Option<ExitReason>>,
    logs: [LogStream; 2],
}

/// A running (or finished) task process. Cheap to clone.
#[derive(Clone)]
pub struct Process {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("task", &self.inner.ctx.task)
            .field("pid", &self.inner.pid)
            .finish()
    }
}

/// Warned once per process, not per task: that tasks run without cgroups is a fact of the
/// host and its user (a documented exception to "no process-wide state": it holds no
/// state of any owner).
static NO_CGROUP_WARNING: Once = Once::new();

/// The cgroup of a new run of `ctx.task`: a kept one of its path is claimed from its keeper
/// (the run makes it anew); with warm pools, one made ahead, renamed and given the limits;
/// else a new one.
fn task_cgroup(
    ctx: &TaskContext,
    resources: &crate::spec::Resources,
) -> Result<TaskCgroup, CgroupError> {
    ctx.executor
        .keepers()
        .claim(&crate::cgroup::task_path(&ctx.agent, &ctx.task));
    if ctx.warm {
        if let Some(warm) = crate::warm::take_cgroup(ctx.executor.warm(), &ctx.agent, &ctx.task) {
            match warm.apply(resources) {
                Ok(()) => return Ok(warm),
                Err(_) => {
                    warm.remove_empty();
                }
            }
        }
    }
    TaskCgroup::create(&ctx.agent, &ctx.task, resources)
}

impl Process {
    /// Starts `spec` as task `ctx.task`: makes its sandbox and cgroup, starts the shim, and
    /// returns once the task runs (or could not).
    pub async fn spawn(spec: ProcessSpec, ctx: TaskContext) -> Result<Process, StartError> {
        spec.validate()?;
        crate::warm::check_task_name(&ctx.task).map_err(StartError::Setup)?;
        let sandbox = ctx.sandbox();
        let status_dir = ctx.status_dir();
        let setup = |what: &str, e: std::io::Error| StartError::Setup(format!("{what}: {e}"));
        // A relative working directory is inside the sandbox, and the task's own: checked
        // before anything is made for the task.
        let cwd_inside = match &spec.cwd {
            Some(dir) if !dir.is_absolute() => {
                if dir.components().any(|c| c.as_os_str() == "..") {
                    return Err(StartError::Setup(format!(
                        "the working directory {} leaves the sandbox",
                        dir.display()
                    )));
                }
                Some(dir.clone())
            }
            _ => None,
        };
        // A warm sandbox comes with empty records; one of an earlier run is cleared.
        if !(ctx.warm
            && crate::warm::take_sandbox(ctx.executor.warm(), &ctx.sandbox_root, &sandbox))
        {
            // A sandbox of an earlier run (a restart's) is there: its records are cleared.
            if shim::clear_records(&status_dir).is_err() {
                std::fs::create_dir_all(&status_dir).map_err(|e| setup("sandbox", e))?;
                shim::clear_records(&status_dir).map_err(|e| setup("records", e))?;
            }
        }
        if let Some(dir) = &cwd_inside {
            std::fs::create_dir_all(sandbox.join(dir))
                .map_err(|e| setup("working directory", e))?;
        }
        if let Some(uid) = spec.uid {
            give_to_user(&sandbox, cwd_inside.as_deref(), uid, spec.gid)
                .map_err(|e| setup("sandbox owner", e))?;
        }
        let kept = ctx
            .keeper
            .as_ref()
            .and_then(|keeper| keeper.take_cgroup(&spec.resources));
        // A cgroup that served an earlier run (kept, or recycled into the warm pool) has
        // that run's OOM kills on its counter, which the kernel cannot reset.
        let reused_kept = kept.is_some();
        let reused = reused_kept || ctx.warm;
        let cgroup = match kept {
            Some(cg) => Some(cg),
            None => match task_cgroup(&ctx, &spec.resources) {
                Ok(cg) => Some(Arc::new(cg)),
                Err(e @ CgroupError::NotRoot { .. }) => {
                    NO_CGROUP_WARNING.call_once(|| warn!(cause = %e, "tasks run without cgroups"));
                    None
                }
                Err(e) => return Err(StartError::Setup(e.to_string())),
            },
        };
        let oom_baseline = match &cgroup {
            Some(cg) if reused => cg.oom_kills(),
            _ => 0,
        };
        let cwd = match (&spec.cwd, &cwd_inside) {
            (_, Some(dir)) => sandbox.join(dir),
            (Some(dir), None) => dir.clone(),
            (None, None) => sandbox.clone(),
        };
        let (stdout, stderr) = log_paths(&sandbox);
        let plan = LaunchPlan {
            argv: spec.argv.clone(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd,
            uid: spec.uid,
            gid: spec.gid,
            rlimits: crate::fd_limit::with_task_default(spec.rlimits.clone()),
            cgroup_procs: cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default(),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            status_dir: status_dir.clone(),
            // The shim stays after the task, for the task's next run or another task's
            // (see crate::keeper).
            stay: true,
            same_cgroup: false,
            stdin_pipe: spec.stdin == crate::spec::StdinMode::Pipe,
        };
        async fn cleanup(cgroup: &Option<Arc<TaskCgroup>>) {
            if let Some(cg) = cgroup {
                cg.remove(Duration::from_secs(5)).await;
            }
        }
        tracing::trace!(task = %ctx.task, "sandbox and cgroup ready");
        let kept_shim = ctx.keeper.as_ref().and_then(RunKeeper::take_shim);
        // The kept shim of a run whose kept cgroup this run took may join it through the
        // files it kept open.
        let plan = LaunchPlan {
            same_cgroup: kept_shim.is_some() && reused_kept,
            ..plan
        };
        let idle = kept_shim.or_else(|| {
            ctx.executor
                .keepers()
                .take_spare(&(ctx.shim.clone(), ctx.shim_args.clone()))
        });
        let starting = ShimStart {
            task: &ctx.task,
            shim: &ctx.shim,
            shim_args: &ctx.shim_args,
            launchers: ctx.executor.launchers(),
        };
        let (shim, reports, started) = match start_run(&starting, &plan, &status_dir, idle).await {
            Ok(run) => run,
            Err(e) => {
                cleanup(&cgroup).await;
                return Err(e);
            }
        };
        let reporting = Reporting {
            shim,
            reports,
            stays: plan.stay,
            command: (ctx.shim.clone(), ctx.shim_args.clone()),
        };
        let checkpoint = Checkpoint {
            agent: ctx.agent.clone(),
            task: ctx.task.clone(),
            pid: started.pid,
            start_time: started.start_time,
            shim_pid: started.shim_pid,
            cgroup: cgroup.as_ref().map(|c| c.path().to_string()),
            spec: spec.clone(),
            sandbox: sandbox.clone(),
            logs: [stdout, stderr],
        };
        if let Err(e) = shim::append_record(&status_dir, CHECKPOINT, &checkpoint) {
            warn!(task = %ctx.task, cause = %e, "cannot write the checkpoint; a new owner will not find this task");
        }
        debug!(task = %ctx.task, pid = started.pid, "task started");
        Ok(Process::watch(
            ctx,
            spec,
            started.pid,
            started.start_time,
            (cgroup, oom_baseline),
            Some(reporting),
        ))
    }

    /// Finds task `ctx.task` again from its checkpoint, after its owner restarted. A task
    /// that ended meanwhile reports its real exit; a pid that now belongs to another process
    /// is refused, and the task reported gone.
    pub async fn adopt(ctx: TaskContext) -> Result<Process, AdoptError> {
        let status_dir = ctx.status_dir();
        let checkpoint = Checkpoint::read(&status_dir).ok_or_else(|| AdoptError::NoCheckpoint {
            task: ctx.task.clone(),
        })?;
        Process::adopt_checkpoint(ctx, checkpoint).await
    }

    /// [`Process::adopt`] from a checkpoint already read.
    pub async fn adopt_checkpoint(
        ctx: TaskContext,
        checkpoint: Checkpoint,
    ) -> Result<Process, AdoptError> {
        let cgroup = checkpoint
            .cgroup
            .as_ref()
            .and_then(|_| TaskCgroup::open(&checkpoint.agent, &checkpoint.task))
            .map(Arc::new);
        let ended = shim::read_record::<Exit>(&ctx.status_dir(), shim::EXIT).is_some();
        let same = procfs::start_time(checkpoint.pid) == Some(checkpoint.start_time);
        if !ended && !same {
            if let Some(cg) = &cgroup {
                cg.remove(Duration::from_secs(5)).await;
            }
            return Err(AdoptError::Gone {
                task: ctx.task.clone(),
                pid: checkpoint.pid,
                reason: ExitReason::Gone(format!(
                    "pid {} no longer runs this task (its start time differs), and no exit was recorded",
                    checkpoint.pid
                )),
            });
        }
        Ok(Process::watch(
            ctx,
            checkpoint.spec,
            checkpoint.pid,
            checkpoint.start_time,
            (cgroup, 0),
            None,
        ))
    }

    /// Starts the watcher: the exit is known when the shim reports it (when this owner
    /// started the task), or once the pidfd says the process ended and the shim's record
    /// is on disk (after an adoption).
    fn watch(
        ctx: TaskContext,
        spec: ProcessSpec,
        pid: i32,
        start_time: u64,
        (cgroup, oom_baseline): (Option<Arc<TaskCgroup>>, u64),
        reporting: Option<Reporting>,
    ) -> Process {
        let (tx, rx) = watch::channel(None);
        let (stdout, stderr) = log_paths(&ctx.sandbox());
        let ended = |rx: &watch::Receiver<Option<ExitReason>>| {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(Option::is_some).await;
            }
        };
        let logs = [
            LogStream::start(stdout, spec.logs.clone(), ended(&rx)),
            LogStream::start(stderr, spec.logs.clone(), ended(&rx)),
        ];
        let inner = Arc::new(Inner {
            ctx,
            spec,
            pid,
            start_time,
            cgroup,
            oom_baseline,
            stop_requested: AtomicBool::new(false),
            exit: rx,
            logs,
        });
        // An adopted task is watched through a pidfd from now; a task this owner started,
        // through its shim's reports, and through a pidfd only if the shim goes silent (the
        // start time, checked after opening it, keeps a reused pid out either way).
        let pidfd = reporting
            .is_none()
            .then(|| open_pidfd(pid, start_time))
            .flatten();
        let watched = inner.clone();
        tokio::spawn(async move {
            let (mut exit, mut idle, mut pidfd, mut shim_gone) = (None, None, pidfd, false);
            if let Some(reporting) = reporting {
                (exit, idle) = reporting.exit().await;
                if exit.is_none() {
                    shim_gone = true;
                    pidfd = open_pidfd(pid, start_time);
                }
            }
            if exit.is_none() {
                if let Some(fd) = pidfd {
                    wait_readable(fd).await;
                }
            }
            let reason = watched.conclude(exit, idle, shim_gone).await;
            let _ = tx.send(Some(reason));
        });
        Process { inner }
    }

    /// The task's id.
    pub fn task(&self) -> &str {
        &self.inner.ctx.task
    }

    /// The main process's pid.
    pub fn pid(&self) -> i32 {
        self.inner.pid
    }

    /// The spec it runs.
    pub fn spec(&self) -> &ProcessSpec {
        &self.inner.spec
    }

    /// The task's sandbox.
    pub fn sandbox(&self) -> PathBuf {
        self.inner.ctx.sandbox()
    }

    /// Its standard output and standard error files.
    pub fn log_paths(&self) -> (PathBuf, PathBuf) {
        log_paths(&self.inner.ctx.sandbox())
    }

    /// Its standard output's keeper: rotation, live tail, last lines.
    pub fn stdout(&self) -> &LogStream {
        &self.inner.logs[0]
    }

    /// Its standard error's keeper.
    pub fn stderr(&self) -> &LogStream {
        &self.inner.logs[1]
    }

    /// The directories of its cgroup (none without one).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.inner
            .cgroup
            .as_ref()
            .map(|cg| cg.directories())
            .unwrap_or_default()
    }

    /// How it ended, if it has.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.inner.exit.borrow().clone()
    }

    /// Waits until it has ended, and says how.
    pub async fn wait(&self) -> ExitReason {
        let mut rx = self.inner.exit.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return ExitReason::Gone("its watcher stopped".into());
            }
        }
    }

    /// Sends signal `sig` to the main process (through its pidfd: never to a stranger that
    /// reused the pid).
    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        let signal = Signal::from_named_raw(sig)
            .ok_or_else(|| std::io::Error::other(format!("unknown signal {sig}")))?;
        let fd = open_pidfd(self.inner.pid, self.inner.start_time)
            .ok_or_else(|| std::io::Error::other("the process has ended"))?;
        rustix::process::pidfd_send_signal(fd.as_fd(), signal).map_err(std::io::Error::from)
    }

    /// Stops the task: its stop signal to its whole process group, then, after the grace
    /// period, SIGKILL to everything left in its cgroup (or group). Returns once the task
    /// has ended and its cgroup is empty and removed (or kept, see
    /// [`TaskContext::keeper`]).
    pub async fn stop(&self) -> ExitReason {
        self.stop_within(self.inner.spec.grace).await
    }

    /// [`Process::stop`] with this grace rather than the spec's: zero kills at once.
    pub async fn stop_within(&self, grace: Duration) -> ExitReason {
        if let Some(reason) = self.exit_reason() {
            return reason;
        }
        self.inner.stop_requested.store(true, Ordering::SeqCst);
        if grace.is_zero() {
            self.inner.kill_everything().await;
            return self.wait().await;
        }
        let sig = signal_number(&self.inner.spec.stop_signal).unwrap_or(15);
        self.inner.signal_group(sig);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(reason) => reason,
            Err(_) => {
                debug!(task = %self.task(), "grace period over; killing what is left");
                self.inner.kill_everything().await;
                self.wait().await
            }
        }
    }

    /// Resource use now.
    pub fn stats(&self) -> ProcessStats {
        match &self.inner.cgroup {
            Some(cg) => ProcessStats {
                pid: self.inner.pid,
                usage: cg.stats(),
                from_cgroup: true,
            },
            None => ProcessStats {
                pid: self.inner.pid,
                usage: procfs_stats(self.inner.pid),
                from_cgroup: false,
            },
        }
    }
}

/// Why a task could not be adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// There is no checkpoint for it.
    #[error("no checkpoint for task {task}")]
    NoCheckpoint {
        /// The task.
        task: String,
    },
    /// Its process is gone without a recorded exit, or its pid belongs to another process.
    #[error("task {task} (pid {pid}) is gone: {reason}")]
    Gone {
        /// The task.
        task: String,
        /// Its former pid.
        pid: i32,
        /// How to report it.
        reason: ExitReason,
    },
}

impl Inner {
    fn signal_group(&self, sig: i32) {
        if let (Some(pid), Some(signal)) = (Pid::from_raw(self.pid), Signal::from_named_raw(sig)) {
            // The task leads its own session and process group; its pid names the group.
            // Only while it is still the task: a reused pid is no one's to signal.
            if procfs::start_time(self.pid) == Some(self.start_time) {
                let _ = rustix::process::kill_process_group(pid, signal);
            }
        }
    }

    async fn kill_everything(&self) {
        self.signal_group(9);
        if let Some(cg) = &self.cgroup {
            if !cg.kill_all(Duration::from_secs(10)).await {
                warn!(task = %self.ctx.task, "processes are left in the cgroup after SIGKILL");
            }
        }
    }

    /// Works out how the task ended (from the shim's report, or its record), then kills
    /// what it left behind and removes its cgroup; or, with runs to come, keeps the emptied
    /// cgroup and the `idle` shim for the next.
    ///
    /// Without a report, the shim's record is waited for (the shim writes it right after
    /// reaping the task), unless `shim_gone`: its report channel ended without the exit,
    /// so whatever it recorded is there already.
    async fn conclude(
        &self,
        reported: Option<Exit>,
        idle: Option<IdleShim>,
        shim_gone: bool,
    ) -> ExitReason {
        let status_dir = self.ctx.status_dir();
        let wait = if shim_gone { 0 } else { 10 };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let exit = loop {
            if reported.is_some() {
                break reported;
            }
            if let Some(exit) = shim::read_record::<Exit>(&status_dir, shim::EXIT) {
                break Some(exit);
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        // An OOM kill is a SIGKILL: the counter is read only then.
        let oom_kills = || self.cgroup.as_ref().map_or(0, |c| c.oom_kills());
        let reason = match exit {
            None => ExitReason::Gone(
                "the task ended but its exit was not recorded (its shim died)".into(),
            ),
            Some(_) if self.stop_requested.load(Ordering::SeqCst) => ExitReason::Killed,
            Some(Exit {
                signal: Some(9), ..
            }) if oom_kills() > self.oom_baseline => ExitReason::OomKilled,
            Some(Exit {
                signal: Some(sig), ..
            }) => ExitReason::Signaled(sig),
            Some(Exit {
                code: Some(code), ..
            }) => ExitReason::Exited(code),
            Some(_) => ExitReason::Gone("the recorded exit has neither code nor signal".into()),
        };
        // A task is its cgroup: nothing it started outlives it. What it left running when it
        // ended on its own (a daemon that forked away) is named for its end, so that the
        // kill is no silent surprise.
        if let Some(cg) = &self.cgroup {
            if !self.stop_requested.load(Ordering::SeqCst) {
                let left: Vec<String> = cg
                    .pids()
                    .into_iter()
                    .filter(|pid| procfs::is_running(*pid))
                    .map(|pid| match procfs::comm(pid) {
                        Some(name) => format!("{name} (pid {pid})"),
                        None => format!("pid {pid}"),
                    })
                    .collect();
                if !left.is_empty() {
                    debug!(task = %self.ctx.task, left = ?left, "the task left processes running; they are killed with its cgroup");
                    let _ = shim::append_record(&status_dir, shim::LEFT_RUNNING, &left);
                }
            }
        }
        // An emptied cgroup with runs
        // to come is kept for the next, with the shim; one that cannot be emptied is not,
        // and the next run starts afresh.
        let keeper = self.ctx.keeper.as_ref();
        let mut idle = idle;
        if let Some(cg) = &self.cgroup {
            match keeper {
                Some(keeper) if cg.kill_all(Duration::from_secs(10)).await => {
                    keeper.keep(Some((cg.clone(), self.spec.resources.clone())), idle.take());
                }
                _ => {
                    // An owner of many launches takes it back for the next launch instead.
                    let recycled = self.ctx.warm
                        && cg.kill_all(Duration::from_secs(10)).await
                        && crate::warm::recycle(self.ctx.executor.warm(), &self.ctx.agent, cg);
                    if !recycled && !cg.remove(Duration::from_secs(10)).await {
                        warn!(task = %self.ctx.task, cgroup = %cg.path(), "cannot remove the cgroup");
                    }
                }
            }
        } else {
            self.signal_group(9);
            if let Some(keeper) = keeper {
                keeper.keep(None, idle.take());
            }
        }
        // A shim no next run of this task was kept for serves another task's launch.
        if let Some(idle) = idle {
            self.ctx.executor.keepers().spare(idle);
        }
        // The outcome outlives the actor, for an owner that learns of the end late.
        let _ = shim::append_record(&status_dir, OUTCOME, &reason);
        debug!(task = %self.ctx.task, %reason, "task ended");
        reason
    }
}

/// Waits until a pidfd is readable: its process has ended.
#[allow(unsafe_code)]
async fn wait_readable(fd: OwnedFd) {
    // SAFETY: `OwnedFd` is a valid open descriptor that stays open, and names the same
    // pidfd, for as long as the `AsyncFd` owns it; `as_raw_fd` returns that descriptor.
    match unsafe { AsyncFd::register(fd) } {
        Ok(fd) => {
            let _ = fd.readable().await;
        }
        Err(e) => warn!(cause = %e, "cannot watch a pidfd"),
    }
}

/// A pidfd for `pid`, if it still names the process that started at `start_time`.
fn open_pidfd(pid: i32, start_time: u64) -> Option<OwnedFd> {
    let fd = rustix::process::pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()).ok()?;
    // Checked after opening: if the start time still matches, the fd names our process.
    (procfs::start_time(pid) == Some(start_time)).then_some(fd)
}

/// Makes the sandbox, and the working directory made inside it, the task's user's (`uid`,
/// and `gid` when given), as Mesos gives a sandbox to its task's user: a task run as
/// another user can make files where it runs. Its records and logs stay root's.
fn give_to_user(
    sandbox: &Path,
    cwd_inside: Option<&Path>,
    uid: u32,
    gid: Option<u32>,
) -> std::io::Result<()> {
    let owner = Some(rustix::fs::Uid::from_raw(uid));
    let group = gid.map(rustix::fs::Gid::from_raw);
    rustix::fs::chown(sandbox, owner, group)?;
    let mut dir = sandbox.to_path_buf();
    for part in cwd_inside.into_iter().flat_map(Path::components) {
        dir.push(part);
        rustix::fs::chown(&dir, owner, group)?;
    }
    Ok(())
}

/// What `/proc` tells of one process, for a task without a cgroup.
fn procfs_stats(pid: i32) -> CgroupStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks: u64 = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .map(|rest| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let hz = rustix::param::clock_ticks_per_second().max(1);
    CgroupStats {
        cpu_ns: ticks * 1_000_000_000 / hz,
        memory_bytes: kb("VmRSS:"),
        memory_peak_bytes: kb("VmHWM:"),
        oom_kills: 0,
        processes: u64::from(procfs::is_running(pid)),
    }
}
