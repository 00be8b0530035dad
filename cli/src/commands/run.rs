//! `troupe run [--cpus C] [--mem MiB] [--count N] [--name NAME] [--detach] -- CMD ARGS...`:
//! submits a command to the one-shot runner. Attached, it streams the task's output, shows
//! its state changes on stderr and exits with its exit code; with `--count N` it shows
//! progress and exits 0 only if every copy succeeded; `--detach` prints the task ids.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use troupe_actors::protocol::{Resources, TaskId, TaskState, TaskStatus};
use troupe_actors::runner::{RunRequest, RunnerEvent};
use troupe_os::actor::Stream;

use super::client::{Client, ClusterArgs, Forward, client_failure};
use super::follow::Follower;
use super::{Failure, parse_key_value};
use crate::exit;

/// Arguments of `troupe run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Cpus per copy, more than 0 (fractional; also its cgroup's cpu quota).
    #[arg(long, default_value = "0.1", allow_negative_numbers = true, value_parser = super::values::cpus)]
    cpus: f64,
    /// Memory per copy in MiB, more than 0 (also its cgroup's memory limit).
    #[arg(long, value_name = "MiB", default_value = "64", allow_negative_numbers = true, value_parser = super::values::mib)]
    mem: f64,
    /// How many copies to run.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// A name for the task (the prefix of its id); default: the program's name.
    #[arg(long)]
    name: Option<String>,
    /// Print the task ids and return at once.
    #[arg(long)]
    detach: bool,
    /// An environment variable for the command, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// Seconds between the stop signal and SIGKILL when the task is killed.
    #[arg(long, value_name = "SECONDS", default_value = "5", allow_negative_numbers = true, value_parser = super::values::seconds)]
    grace: Duration,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

impl RunArgs {
    /// Whether it follows its tasks and takes Ctrl-C as "cancel or kill them" (not
    /// `--detach`).
    pub(crate) fn kills_on_ctrl_c(&self) -> bool {
        !self.detach
    }
}

pub(crate) async fn run(args: RunArgs) -> Result<u8, Failure> {
    if args.count == 0 {
        return Err(Failure::from("--count must be at least 1"));
    }
    // Input for the task would be lost without a word: say so instead. (At the REPL, its
    // own input is not the command's.)
    if !args.detach && !super::client::in_session() && stdin_has_input() {
        return Err(Failure::new(
            exit::USAGE,
            "standard input is not forwarded to tasks: give the task its input another way (a file its command reads), or run with </dev/null",
        ));
    }
    let client = Client::connect(&args.cluster).await?;
    let result = submit_and_watch(&client, &args).await;
    client.close().await;
    result
}

async fn submit_and_watch(client: &Client, args: &RunArgs) -> Result<u8, Failure> {
    let mut command = troupe_os::ProcessSpec::new(args.command.iter().cloned())
        .resources(troupe_os::Resources::default())
        .grace(args.grace);
    for (k, v) in &args.env {
        command = command.env(k, v);
    }
    let name = args.name.clone().unwrap_or_else(|| {
        std::path::Path::new(&args.command[0])
            .file_name()
            .map_or("task".into(), |n| n.to_string_lossy().into_owned())
    });
    let request = RunRequest {
        name,
        command,
        resources: Resources::new(args.cpus, args.mem),
    };
    let watcher = client.local_path("events");
    let (events_actor, mut events) = Forward::<RunnerEvent>::start(&watcher).await?;
    let requests = vec![request; args.count as usize];
    let ids = client
        .runner
        .submit(requests, (!args.detach).then_some(watcher.clone()))
        .await
        .map_err(client_failure)?;
    if args.detach {
        events_actor.stop(None);
        for id in ids {
            println!("{id}");
        }
        return Ok(exit::OK);
    }
    let code = if ids.len() == 1 {
        attached(client, &ids[0], &mut events).await
    } else {
        progress(client, &ids, &mut events).await
    };
    events_actor.stop(None);
    code
}

/// The exit code and the line that explains it, for a task's last status. How the process
/// ended comes as data (`TaskStatus::exit`), not read back from the words.
fn outcome(status: &TaskStatus) -> (u8, Option<String>) {
    use troupe_os::ExitReason;
    let reason = &status.reason;
    match status.state {
        TaskState::Finished => (exit::OK, None),
        TaskState::Failed => match &status.exit {
            Some(ExitReason::Exited(code)) => ((code & 0xff) as u8, None),
            Some(ExitReason::OomKilled) => (exit::TASK_OOM, Some(reason.clone())),
            Some(ExitReason::FailedToStart(_)) => {
                (exit::TASK_FAILED_TO_START, Some(reason.clone()))
            }
            Some(ExitReason::Signaled(sig)) => (
                exit::SIGNAL_BASE.saturating_add((*sig & 0x7f) as u8),
                Some(format!("failed: {reason}")),
            ),
            _ => match status.exit_code {
                Some(code) => ((code & 0xff) as u8, None),
                None => (exit::FAILURE, Some(format!("failed: {reason}"))),
            },
        },
        TaskState::Killed => (exit::TASK_KILLED, Some(format!("killed: {reason}"))),
        other => (
            exit::TASK_NOT_RUN,
            Some(format!("{}: {reason}", other.to_string().to_lowercase())),
        ),
    }
}

async fn attached(
    client: &Client,
    id: &TaskId,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<RunnerEvent>,
) -> Result<u8, Failure> {
    let mut follower: Option<Follower> = None;
    let mut killing = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let waiting = tokio::time::sleep(WAIT_NOTICE);
    tokio::pin!(waiting);
    let mut heard = false;
    let last = loop {
        tokio::select! {
            _ = &mut waiting, if !heard => {
                heard = true;
                explain_wait(client).await;
            }
            event = events.recv() => {
                let status = match event {
                    Some(RunnerEvent::Status { status }) => status,
                    Some(RunnerEvent::Requeued { status, launch }) => {
                        heard = true;
                        eprintln!("troupe: {id} dropped: {}; queued again (launch {launch} of {})", status.reason, troupe_actors::runner::MAX_LAUNCHES);
                        continue;
                    }
                    None => return Err(Failure::from("the runner stopped talking to this command")),
                };
                heard = true;
                // The end is told after the task's last output, below.
                if !status.state.is_terminal() {
                    eprintln!("troupe: {id} {}", status_line(&status));
                }
                if follower.is_none() && status.agent.is_some() && status.state != TaskState::Staging {
                    let location = client.locate(id).await?;
                    follower = Some(Follower::start(client, &location, &[Stream::Stdout, Stream::Stderr], true).await?);
                }
                if status.state.is_terminal() {
                    break status;
                }
            }
            _ = async { match follower.as_mut() { Some(f) => { f.pump(Duration::from_millis(50)).await; } None => std::future::pending().await } } => {}
            _ = &mut ctrl_c, if !killing => {
                killing = true;
                stop_all(client, std::slice::from_ref(id)).await;
            }
        }
    };
    if let Some(mut f) = follower {
        f.finish().await?;
        f.close();
    }
    // The end, once: after everything the task wrote, and with the reason in it.
    eprintln!("troupe: {id} {}", status_line(&last));
    if let Some(hint) = hint(&last) {
        eprintln!("troupe: {hint}");
    }
    Ok(outcome(&last).0)
}

/// Whether standard input brings something: a file that is not empty, or a pipe or socket
/// with bytes (or a writer still to come) in it, as opposed to a terminal, `/dev/null`, or
/// a pipe already at its end. A pipe whose writer stays silent for the first 100 ms counts
/// as nothing: the check must not hang a script whose input is an idle pipe.
fn stdin_has_input() -> bool {
    use std::os::unix::fs::FileTypeExt;
    // The magic link of fd 0, followed: the pipe, file or device itself.
    let Ok(meta) = std::fs::metadata("/proc/self/fd/0") else {
        return false;
    };
    let kind = meta.file_type();
    if kind.is_file() {
        return meta.len() > 0;
    }
    if !(kind.is_fifo() || kind.is_socket()) {
        return false;
    }
    let stdin = rustix::stdio::stdin();
    let mut fds = [rustix::event::PollFd::new(
        &stdin,
        rustix::event::PollFlags::IN,
    )];
    let within = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    match rustix::event::poll(&mut fds, Some(&within)) {
        Ok(n) if n > 0 => {
            // Readable: bytes, or the end (a writer that closed without writing). Peeking
            // would need a socket; one byte read tells, and the command is refused anyway
            // when there was one.
            let mut byte = [0u8; 1];
            matches!(rustix::io::read(stdin, &mut byte), Ok(n) if n > 0)
        }
        _ => false,
    }
}

/// A status for people: `running on a1: its process runs`.
fn status_line(status: &TaskStatus) -> String {
    let agent = status
        .agent
        .as_ref()
        .map(|a| format!(" on {a}"))
        .unwrap_or_default();
    let why = if status.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", status.reason)
    };
    format!("{}{agent}{why}", status.state.to_string().to_lowercase())
}

/// What to try, for an end that has a usual cause: a program not found in the fixed `PATH`
/// tasks start with.
fn hint(status: &TaskStatus) -> Option<String> {
    status
        .reason
        .contains("not found in PATH")
        .then(|| {
            "tasks get only the environment given with --env, and programs are looked up in /usr/local/bin:/usr/bin:/bin; give a full path, or pass yours with --env PATH=\"$PATH\"".to_string()
        })
}

/// Ctrl-C: cancels the tasks that still wait for resources (their end comes back as
/// `Killed`) and kills the launched ones. A second Ctrl-C leaves them running: the command
/// exits, or at the REPL, the REPL cancels it.
async fn stop_all(client: &Client, ids: &[TaskId]) {
    let cancelled = client.runner.cancel(ids).await.unwrap_or_default();
    let launched: Vec<&TaskId> = ids.iter().filter(|i| !cancelled.contains(i)).collect();
    match (cancelled.len(), launched.len()) {
        (0, _) if ids.len() == 1 => {
            eprintln!(
                "troupe: killing {} (Ctrl-C again to leave it running)",
                ids[0]
            )
        }
        (_, 0) if ids.len() == 1 => {
            eprintln!("troupe: cancelling {}, which waited for resources", ids[0])
        }
        (c, l) => eprintln!(
            "troupe: cancelling {c} waiting, killing {l} launched (Ctrl-C again to leave them running)"
        ),
    }
    for task in launched {
        let _ = client.master.kill(task).await;
    }
    if !super::client::in_session() {
        let again = tokio::signal::ctrl_c();
        tokio::spawn(async move {
            let _ = again.await;
            std::process::exit(exit::TASK_KILLED.into());
        });
    }
}

/// How long a submission may go without news before the command says why.
const WAIT_NOTICE: Duration = Duration::from_secs(3);

/// Says why nothing was placed yet, as the allocator sees it.
async fn explain_wait(client: &Client) {
    let Ok(state) = client.state(false).await else {
        return;
    };
    if state.agents.iter().all(|a| !a.reachable) {
        eprintln!("troupe: waiting: no agent is registered with the master");
        return;
    }
    let why: Vec<String> = state
        .frameworks
        .iter()
        .filter(|f| f.info.name == troupe_actors::runner::RUNNER_NAME)
        .flat_map(|f| f.not_offered.clone())
        .collect();
    if why.is_empty() {
        eprintln!("troupe: waiting for an agent with enough free resources");
    } else {
        eprintln!("troupe: waiting: {}", why.join("; "));
    }
}

async fn progress(
    client: &Client,
    ids: &[TaskId],
    events: &mut tokio::sync::mpsc::UnboundedReceiver<RunnerEvent>,
) -> Result<u8, Failure> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut states: BTreeMap<TaskId, TaskStatus> = BTreeMap::new();
    let mut last_print = Instant::now() - Duration::from_secs(10);
    let total = ids.len();
    let mut explained = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut stopping = false;
    loop {
        if !explained && states.is_empty() && started.elapsed() >= WAIT_NOTICE {
            explained = true;
            if tty {
                eprintln!();
            }
            explain_wait(client).await;
        }
        let ended: Vec<&TaskStatus> = states.values().filter(|s| s.state.is_terminal()).collect();
        let ok = ended
            .iter()
            .filter(|s| s.state == TaskState::Finished)
            .count();
        let running = states
            .values()
            .filter(|s| s.state == TaskState::Running)
            .count();
        let done = ended.len();
        if tty || last_print.elapsed() >= Duration::from_secs(2) || done == total {
            let width = 30;
            let filled = done * width / total;
            let line = format!(
                "[{}{}] {done}/{total} done, {} failed, {running} running, {:.0?}",
                "#".repeat(filled),
                " ".repeat(width - filled),
                done - ok,
                started.elapsed()
            );
            if tty {
                eprint!("\r{line}");
            } else {
                eprintln!("{line}");
            }
            last_print = Instant::now();
        }
        if done == total {
            if tty {
                eprintln!();
            }
            let failed: Vec<_> = ended
                .iter()
                .filter(|s| s.state != TaskState::Finished)
                .collect();
            for s in &failed {
                let (_, line) = outcome(s);
                let line = line.unwrap_or_else(|| s.reason.clone());
                eprintln!("troupe: {} {}", s.task, line);
            }
            return Ok(if failed.is_empty() {
                exit::OK
            } else {
                exit::FAILURE
            });
        }
        let event = tokio::select! {
            event = tokio::time::timeout(Duration::from_millis(250), events.recv()) => event,
            _ = &mut ctrl_c, if !stopping => {
                stopping = true;
                if tty {
                    eprintln!();
                }
                let open: Vec<TaskId> = ids
                    .iter()
                    .filter(|i| !states.get(*i).is_some_and(|s| s.state.is_terminal()))
                    .cloned()
                    .collect();
                stop_all(client, &open).await;
                continue;
            }
        };
        match event {
            Ok(Some(RunnerEvent::Status { status })) => {
                if let Some(prev) = states.get(&status.task) {
                    if prev.state.is_terminal() {
                        continue;
                    }
                }
                states.insert(status.task.clone(), status);
            }
            // Back in the queue: neither running nor done.
            Ok(Some(RunnerEvent::Requeued { status, .. })) => {
                states.remove(&status.task);
            }
            Ok(None) => return Err(Failure::from("the runner stopped talking to this command")),
            Err(_) => {}
        }
    }
}
