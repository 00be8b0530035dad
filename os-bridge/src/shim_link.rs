//! The owner's side of a task's shim: starting a run on it (on the idle shim a run left, a
//! spare, or one the launcher forks), reading its reports, and keeping it idle for the
//! next run once its task has ended (see [`crate::keeper`]).
//!
//! ```text
//!   start_run ──plan──▶ idle shim (kept or spare) ──or──▶ launcher ──fork──▶ new shim
//!       │                                                        (or an exec'd shim)
//!       ▼
//!   first_report: Started | Failed | silent (the records say the rest)
//!       ▼
//!   Reporting::exit: the exit report, and the shim, idle again, when it stays
//! ```

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, Lines};
use tracing::{debug, warn};

use crate::launcher::Launchers;
use crate::shim::{self, Exit, Failed, LaunchPlan, Started};
use crate::spec::{ExitReason, SpecError};

const LAUNCH: &str = "launch.json";

/// Why a process could not be started (it did not run).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The task ran into an OS error before exec: missing binary, not executable, bad
    /// directory. This is the `FailedToStart` exit reason.
    #[error("failed to start: {0}")]
    FailedToStart(String),
    /// The sandbox, the cgroup or the shim could not be set up.
    #[error("cannot set up the task: {0}")]
    Setup(String),
}

impl StartError {
    /// The exit reason a monitor of the task reports.
    pub fn exit_reason(&self) -> ExitReason {
        ExitReason::FailedToStart(match self {
            StartError::FailedToStart(e) => e.clone(),
            other => other.to_string(),
        })
    }
}

/// How a run's shim is started: the task (for what it says), the shim program, and the
/// owner's launchers.
pub(crate) struct ShimStart<'a> {
    pub(crate) task: &'a str,
    pub(crate) shim: &'a Path,
    pub(crate) shim_args: &'a [String],
    pub(crate) launchers: &'a Arc<Launchers>,
}

/// The shim's report lines.
pub(crate) type Reports = Lines<BufReader<Box<dyn AsyncRead + Send + Unpin>>>;

/// Starts a run of the task: on the `idle` shim its last run left, when there is one and it
/// takes the plan, else on a new shim. Returns once the task runs, with the shim and its
/// reports.
pub(crate) async fn start_run(
    ctx: &ShimStart<'_>,
    plan: &LaunchPlan,
    status_dir: &Path,
    idle: Option<IdleShim>,
) -> Result<(ShimHandle, Reports, Started), StartError> {
    if let Some(idle) = idle {
        match idle.run(plan).await {
            Ok((mut shim, mut reports)) => {
                match first_report(&mut shim, &mut reports, status_dir).await {
                    FirstReport::Started(started) => return Ok((shim, reports, started)),
                    FirstReport::Refused(e) => return Err(e),
                    // It was gone before it could take the plan: a new shim will.
                    FirstReport::Silent => {}
                }
            }
            Err(e) => {
                debug!(task = %ctx.task, cause = %e, "the kept shim is gone; starting a new one")
            }
        }
    }
    let (mut shim, mut reports) = ShimHandle::start(ctx, plan, status_dir)
        .await
        .map_err(|e| StartError::Setup(format!("shim {}: {e}", ctx.shim.display())))?;
    match first_report(&mut shim, &mut reports, status_dir).await {
        FirstReport::Started(started) => Ok((shim, reports, started)),
        FirstReport::Refused(e) => Err(e),
        FirstReport::Silent => Err(StartError::Setup(
            "the shim exited before the task started".into(),
        )),
    }
}

/// A started run's shim and its reports, which end with the task's exit.
pub(crate) struct Reporting {
    pub(crate) shim: ShimHandle,
    pub(crate) reports: Reports,
    /// Whether the shim stays for the next run.
    pub(crate) stays: bool,
    /// The shim's program.
    pub(crate) command: crate::launcher::ShimCommand,
}

impl Reporting {
    /// The task's exit as the shim reports it (`None` if the shim goes silent first), and
    /// the shim when it stays for the next run. A shim that does not is reaped while this
    /// owner lives.
    pub(crate) async fn exit(mut self) -> (Option<Exit>, Option<IdleShim>) {
        let exit = loop {
            match self.shim.next_report(&mut self.reports).await {
                Some(shim::Report::Exit(exit)) => break Some(exit),
                Some(_) => continue,
                None => break None,
            }
        };
        if exit.is_some() && self.stays {
            return (exit, IdleShim::of(self.shim, self.reports, self.command));
        }
        let mut shim = self.shim;
        if matches!(shim, ShimHandle::Exec(_)) {
            tokio::spawn(async move { shim.reap().await });
        }
        (exit, None)
    }
}

/// What a shim said first of a run.
enum FirstReport {
    /// The task runs.
    Started(Started),
    /// It never ran, and why.
    Refused(StartError),
    /// The shim ended without a report or a record of the run.
    Silent,
}

/// Waits for the shim's first report of a run (up to 30 s); without one (the shim died
/// early, or could not write), the records say the rest.
async fn first_report(
    shim: &mut ShimHandle,
    reports: &mut Reports,
    status_dir: &Path,
) -> FirstReport {
    match tokio::time::timeout(Duration::from_secs(30), shim.next_report(reports)).await {
        Ok(Some(shim::Report::Started(started))) => FirstReport::Started(started),
        Ok(Some(shim::Report::Failed(failed))) => {
            shim.reap().await;
            FirstReport::Refused(StartError::FailedToStart(failed.error))
        }
        Ok(_) => {
            shim.reap().await;
            match (
                shim::read_record::<Started>(status_dir, shim::STARTED),
                shim::read_record::<Failed>(status_dir, shim::FAILED),
            ) {
                (Some(started), _) => FirstReport::Started(started),
                (None, Some(failed)) => {
                    FirstReport::Refused(StartError::FailedToStart(failed.error))
                }
                (None, None) => FirstReport::Silent,
            }
        }
        Err(_) => {
            shim.kill().await;
            FirstReport::Refused(StartError::Setup(
                "the shim did not report within 30 s".into(),
            ))
        }
    }
}

/// A shim whose task has ended, waiting for the plan of the task's next run (see
/// [`crate::keeper`]). Dropping it closes its socket, and the shim exits.
pub(crate) struct IdleShim {
    shim: ShimHandle,
    reports: Reports,
    /// Its program, which a launch must ask for to be given this shim.
    pub(crate) command: crate::launcher::ShimCommand,
}

impl IdleShim {
    /// The shim of a run that has ended, if it can take another (a forked shim: it reads
    /// plans on the socket it reports on).
    fn of(
        shim: ShimHandle,
        reports: Reports,
        command: crate::launcher::ShimCommand,
    ) -> Option<IdleShim> {
        matches!(
            shim,
            ShimHandle::Forked {
                requests: Some(_),
                ..
            }
        )
        .then_some(IdleShim {
            shim,
            reports,
            command,
        })
    }

    /// Hands the shim the plan of the next run: one line of JSON.
    async fn run(mut self, plan: &LaunchPlan) -> std::io::Result<(ShimHandle, Reports)> {
        let ShimHandle::Forked {
            requests: Some(requests),
            ..
        } = &mut self.shim
        else {
            return Err(std::io::Error::other("the shim takes no plans"));
        };
        let mut line = serde_json::to_vec(plan).map_err(std::io::Error::other)?;
        line.push(b'\n');
        requests.write_all(&line).await?;
        Ok((self.shim, self.reports))
    }
}

/// A task's shim, as its owner holds it.
pub(crate) enum ShimHandle {
    /// Forked by this owner's launcher (see [`crate::launcher`]), which reaps it: a pidfd
    /// once the shim has told its pid, and the socket's writing half, on which a shim that
    /// stays after its task takes the next run's plan.
    Forked {
        pidfd: Option<OwnedFd>,
        requests: Option<tokio::net::unix::OwnedWriteHalf>,
    },
    /// Exec'd by this owner (the shim program is not a launcher): its child.
    Exec(tokio::process::Child),
}

impl ShimHandle {
    /// Starts the shim of `plan`: through the launcher when there is one, else by exec
    /// with the plan in a file.
    async fn start(
        ctx: &ShimStart<'_>,
        plan: &LaunchPlan,
        status_dir: &Path,
    ) -> std::io::Result<(ShimHandle, Reports)> {
        // A running launcher takes the request at once, on this thread; its start, and a
        // request it does not take at once, block: not on a runtime worker.
        // A shim forked by the launcher reports on the socket sent with the request, and
        // takes the plans of further runs on it.
        let forked = |socket: OwnedFd| -> std::io::Result<(ShimHandle, Reports)> {
            let socket = std::os::unix::net::UnixStream::from(socket);
            socket.set_nonblocking(true)?;
            let (reads, writes) = tokio::net::UnixStream::from_std(socket)?.into_split();
            let reader: Box<dyn AsyncRead + Send + Unpin> = Box::new(reads);
            let shim = ShimHandle::Forked {
                pidfd: None,
                requests: Some(writes),
            };
            Ok((shim, BufReader::new(reader).lines()))
        };
        if let Some(socket) =
            crate::launcher::launch_now(ctx.launchers, ctx.shim, ctx.shim_args, plan)
        {
            return forked(socket);
        }
        let launched = {
            let (launchers, shim, args, plan) = (
                ctx.launchers.clone(),
                ctx.shim.to_path_buf(),
                ctx.shim_args.to_vec(),
                plan.clone(),
            );
            tokio::task::spawn_blocking(move || {
                crate::launcher::launch(&launchers, &shim, &args, &plan)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        match launched {
            Ok(Some(socket)) => return forked(socket),
            Ok(None) => {}
            Err(e) => {
                warn!(task = %ctx.task, cause = %e, "the launcher failed; exec'ing a shim");
            }
        }
        shim::write_status(status_dir, LAUNCH, plan)?;
        let mut child = tokio::process::Command::new(ctx.shim)
            .args(ctx.shim_args)
            .arg(status_dir.join(LAUNCH))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the shim has no standard output"))?;
        let reader: Box<dyn AsyncRead + Send + Unpin> = Box::new(stdout);
        Ok((ShimHandle::Exec(child), BufReader::new(reader).lines()))
    }

    /// The next report of the shim, `None` once it has no more to say. The forked shim's
    /// pid is taken in passing.
    async fn next_report(&mut self, reports: &mut Reports) -> Option<shim::Report> {
        loop {
            let line = reports.next_line().await.ok()??;
            match shim::Report::parse(&line)? {
                shim::Report::Shim(shim::ShimPid { pid }) => {
                    if let ShimHandle::Forked { pidfd, .. } = self {
                        *pidfd = Pid::from_raw(pid)
                            .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok());
                    }
                }
                report => return Some(report),
            }
        }
    }

    /// Reaps an exec'd shim (the launcher reaps those it forked).
    async fn reap(&mut self) {
        if let ShimHandle::Exec(child) = self {
            let _ = child.wait().await;
        }
    }

    /// Kills the shim (it is stuck).
    async fn kill(&mut self) {
        match self {
            ShimHandle::Exec(child) => {
                let _ = child.kill().await;
            }
            ShimHandle::Forked {
                pidfd: Some(pidfd), ..
            } => {
                let _ = rustix::process::pidfd_send_signal(pidfd.as_fd(), Signal::KILL);
            }
            ShimHandle::Forked { pidfd: None, .. } => {}
        }
    }
}
