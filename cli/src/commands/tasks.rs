//! The task commands: `troupe ps [--all] [--json]`, `troupe kill TASK`,
//! `troupe signal TASK SIG` and `troupe logs [-f] [--stderr] TASK`.

use std::time::Duration;

use clap::Args;
use troupe_actors::client::{ClientError, Processes};
use troupe_actors::processes::{ProcessEnd, ProcessView};
use troupe_actors::protocol::{
    FrameworkId, KillAccepted, Source, TaskId, TaskRefused, TaskState, TaskStatus, TaskView, now_ms,
};
use troupe_actors::runner::RUNNER_NAME;
use troupe_os::actor::Stream;

use super::Failure;
use super::client::{Client, ClusterArgs, client_failure};
use super::follow::Follower;

/// Arguments of `troupe ps`.
#[derive(Debug, Args)]
pub(crate) struct PsArgs {
    /// Ended tasks too.
    #[arg(long, short)]
    all: bool,
    /// JSON for scripts: an array of tasks.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// A duration for people: `4s`, `3m12s`, `2h5m`, `3d4h`.
pub(crate) fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn table(tasks: &[TaskView]) -> String {
    let now = now_ms();
    let header = ["ID", "STATE", "AGENT", "CPUS", "MEM", "AGE", "COMMAND"];
    let rows = tasks
        .iter()
        .map(|t| {
            let row = vec![
                t.id.to_string(),
                state_cell(&t.status),
                t.agent.as_ref().map_or("-".into(), |a| a.to_string()),
                format!("{}", t.resources.cpus),
                format!("{}M", t.resources.mem_mib),
                age(now.saturating_sub(t.launched_ms)),
                shell_words(&t.command),
            ];
            // A queued task's reason goes on a line of its own under its row.
            let note = (t.status.state == TaskState::Queued).then(|| t.status.reason.clone());
            (row, note)
        })
        .collect();
    render_table(&header, rows)
}

/// A table for people: a header, then rows in columns padded to their widest cell, the
/// last column free (a command line); a row's note, if any, on a line under it.
pub(crate) fn render_table(header: &[&str], rows: Vec<(Vec<String>, Option<String>)>) -> String {
    let mut all = vec![(
        header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        None,
    )];
    all.extend(rows);
    let columns = header.len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            all.iter()
                .map(|(r, _)| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (row, note) in all {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == columns {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if let Some(note) = note {
            out.push_str(&format!("  {note}\n"));
        }
    }
    out
}

/// The STATE cell: the state, and for a failure how it failed: the exit code, the signal
/// that killed it (`FAILED(SIGKILL)`), or `FAILED(OOM)`.
fn state_cell(status: &TaskStatus) -> String {
    let state = status.state.to_string().to_uppercase();
    if let Some(code) = status.exit_code.filter(|c| *c != 0) {
        return format!("{state}({code})");
    }
    match &status.exit {
        Some(troupe_os::ExitReason::Signaled(sig)) => {
            format!("{state}({})", troupe_os::spec::signal_name(*sig))
        }
        Some(troupe_os::ExitReason::OomKilled) => format!("{state}(OOM)"),
        _ => state,
    }
}

/// A command line as a shell would need it typed: arguments with spaces, quotes or other
/// special characters single-quoted, and empty ones as `''`.
pub(crate) fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) async fn ps(args: PsArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.cluster).await?;
    let state = client.state(args.all).await;
    let queued = queued(&client).await;
    client.close().await;
    let mut tasks = state?.tasks;
    tasks.sort_by_key(|t| t.launched_ms);
    // The runner's queue comes after what the master holds, in queue order.
    tasks.extend(queued);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
    } else {
        print!("{}", table(&tasks));
    }
    Ok(())
}

/// The commands waiting in the runner's queue, as rows in state `queued` whose reason says
/// what they wait for. None if the runner does not answer (the master's tasks still show).
async fn queued(client: &Client) -> Vec<TaskView> {
    let queued = match client.runner.queued().await {
        Ok(queued) => queued,
        Err(e) => {
            tracing::debug!(cause = %e, "the runner's queue is not known");
            return Vec::new();
        }
    };
    queued
        .into_iter()
        .map(|q| {
            let mut status = TaskStatus::new(
                q.id.clone(),
                TaskState::Queued,
                Source::Master,
                q.submitted_ms,
            );
            status.reason = q.reason;
            TaskView {
                id: q.id,
                name: q.name,
                framework: FrameworkId(RUNNER_NAME.into()),
                agent: None,
                status,
                resources: q.resources,
                command: q.command,
                launched_ms: q.submitted_ms,
                pid: None,
            }
        })
        .collect()
}

/// Arguments of `troupe kill`.
#[derive(Debug, Args)]
pub(crate) struct KillArgs {
    /// The task.
    task: String,
    /// Return once the kill is under way instead of when the task ended.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub(crate) async fn kill(args: KillArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.cluster).await?;
    let id = TaskId(args.task);
    let result = match process_of(&client, &id).await {
        Some(view) if view.end.is_none() => kill_process(&client, &id, args.no_wait).await,
        _ => kill_with(&client, id, args.no_wait).await,
    };
    client.close().await;
    result
}

/// The process service's process of this id, if it is one.
async fn process_of(client: &Client, id: &TaskId) -> Option<ProcessView> {
    Processes::on(client.master_node.clone()).get(id).await.ok()
}

/// The task a task or process id names now: a process's current run (`ID.N` after
/// restarts), or the task itself.
pub(crate) async fn current_task(client: &Client, id: &TaskId) -> TaskId {
    match process_of(client, id).await {
        Some(view) => view.task,
        None => id.clone(),
    }
}

/// Kills a process of the process service for good (not started again, whatever its
/// restart policy), and waits for its end unless `no_wait`.
async fn kill_process(client: &Client, id: &TaskId, no_wait: bool) -> Result<(), Failure> {
    let processes = Processes::on(client.master_node.clone());
    let down = processes.monitor(id).await.map_err(client_failure)?;
    processes.kill(id).await.map_err(client_failure)?;
    if no_wait {
        println!("killing {id}");
        return Ok(());
    }
    match tokio::time::timeout(Duration::from_secs(60), down.wait()).await {
        Ok(Some(end)) => {
            println!("{id} {}", end_words(&end));
            Ok(())
        }
        Ok(None) => Err(Failure::from("the process service went away")),
        Err(_) => Err(Failure::new(
            crate::exit::TIMEOUT,
            format!("{id} has not ended after 60 s"),
        )),
    }
}

/// How a process ended, in the words `kill` prints.
fn end_words(end: &ProcessEnd) -> String {
    match end {
        ProcessEnd::Exited(troupe_os::ExitReason::Killed) => "killed".into(),
        ProcessEnd::Exited(how) => format!("ended: {how}"),
        ProcessEnd::AgentLost(why) => format!("lost with its agent: {why}"),
        ProcessEnd::NeverRan(why) => format!("never ran: {why}"),
    }
}

async fn kill_with(client: &Client, task: TaskId, no_wait: bool) -> Result<(), Failure> {
    let how = match client.master.kill(&task).await {
        Ok(how) => how,
        Err(ClientError::Task(unknown @ TaskRefused::Unknown { .. })) => {
            // Not with the master yet: it may wait in the runner's queue.
            let cancelled = client
                .runner
                .cancel(std::slice::from_ref(&task))
                .await
                .unwrap_or_default();
            if cancelled.contains(&task) {
                println!("{task} cancelled: it waited for resources and never ran");
                return Ok(());
            }
            // It may have left the queue for the master in between.
            match client.master.kill(&task).await {
                Ok(how) => how,
                Err(ClientError::Task(TaskRefused::Unknown { .. })) => {
                    return Err(Failure::from(unknown.to_string()));
                }
                Err(e) => return Err(client_failure(e)),
            }
        }
        Err(e) => return Err(client_failure(e)),
    };
    if how == KillAccepted::Deferred {
        // Recorded by the master: the agent gets it when it registers again. Waiting here
        // could take as long as the agent is away.
        let agent = client.locate(&task).await?.task.agent;
        let agent = agent.map_or_else(|| "its agent".to_string(), |a| format!("its agent {a}"));
        println!(
            "{task}: {agent} is unreachable; the kill is recorded and delivered when the agent comes back"
        );
        return Ok(());
    }
    if no_wait {
        println!("killing {task}");
        return Ok(());
    }
    // Its grace period at most, and some more for the agent's report.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let location = client.locate(&task).await?;
        let status = location.task.status;
        if status.state.is_terminal() {
            println!("{task} {}", status.state.to_string().to_lowercase());
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                crate::exit::TIMEOUT,
                format!("{task} is still {} after 60 s", status.state),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Arguments of `troupe signal`.
#[derive(Debug, Args)]
pub(crate) struct SignalArgs {
    /// The task.
    task: String,
    /// The signal, by name (TERM, SIGUSR1) or number.
    signal: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub(crate) async fn signal(args: SignalArgs) -> Result<(), Failure> {
    if troupe_os::spec::signal_number(&args.signal).is_none() {
        return Err(Failure::from(format!(
            "unknown signal {:?}: use a name such as TERM, HUP, USR1 or a number",
            args.signal
        )));
    }
    let client = Client::connect(&args.cluster).await?;
    let result = async {
        let task = current_task(&client, &TaskId(args.task.clone())).await;
        let location = client.locate(&task).await?;
        if location.task.status.state.is_terminal() {
            return Err(Failure::from(format!(
                "task {} already ended: {}",
                args.task, location.task.status.state
            )));
        }
        let agent = location
            .agent
            .as_ref()
            .ok_or_else(|| Failure::from(format!("task {} has not reached an agent", args.task)))?;
        client
            .agent(agent)
            .signal(&task, &args.signal)
            .await
            .map_err(client_failure)?;
        println!("{} signalled with {}", args.task, args.signal);
        Ok(())
    }
    .await;
    client.close().await;
    result
}

/// Arguments of `troupe logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The task.
    task: String,
    /// Keep following the output until the task ends.
    #[arg(long, short)]
    follow: bool,
    /// Standard error instead of standard output.
    #[arg(long)]
    stderr: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub(crate) async fn logs(args: LogsArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.cluster).await?;
    let result = logs_with(&client, &args).await;
    client.close().await;
    result
}

async fn logs_with(client: &Client, args: &LogsArgs) -> Result<(), Failure> {
    let task = current_task(client, &TaskId(args.task.clone())).await;
    let mut location = client.locate(&task).await?;
    // Right after `run --detach` the task may still be on its way to its agent, which
    // would answer with the (empty) files of a task it does not have yet: a follower waits
    // until the task has started, then follows it.
    while args.follow && location.task.status.state == TaskState::Staging {
        tokio::time::sleep(Duration::from_millis(100)).await;
        location = client.locate(&task).await?;
    }
    let stream = if args.stderr {
        Stream::Stderr
    } else {
        Stream::Stdout
    };
    let follow = args.follow && !location.task.status.state.is_terminal();
    let mut follower = Follower::start(client, &location, &[stream], follow).await?;
    let mut last_check = tokio::time::Instant::now();
    while !follower.done() {
        follower.pump(Duration::from_millis(200)).await;
        if follow && last_check.elapsed() >= Duration::from_secs(1) {
            last_check = tokio::time::Instant::now();
            if client.locate(&task).await?.task.status.state.is_terminal() {
                follower.finish().await?;
                break;
            }
        } else if !follow && last_check.elapsed() >= Duration::from_secs(10) {
            return Err(Failure::new(
                crate::exit::TIMEOUT,
                format!("the agent of {task} did not send its log within 10 s"),
            ));
        }
    }
    let gone = follower.gone.take();
    follower.close();
    match gone {
        Some(why) => Err(Failure::from(format!("the logs of {task} are gone: {why}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[&str]) -> String {
        shell_words(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_command_column_quotes_as_a_shell_would() {
        assert_eq!(
            words(&["redis-server", "--save", ""]),
            "redis-server --save ''"
        );
        assert_eq!(
            words(&["sh", "-c", "echo hi; exit 3"]),
            "sh -c 'echo hi; exit 3'"
        );
        assert_eq!(words(&["echo", "it's"]), r"echo 'it'\''s'");
        assert_eq!(words(&["/bin/x", "a=b,c:d"]), "/bin/x a=b,c:d");
    }

    #[test]
    fn a_failure_by_signal_says_which() {
        let mut status = TaskStatus::new(TaskId("t".into()), TaskState::Failed, Source::Agent, 0);
        status.exit = Some(troupe_os::ExitReason::Signaled(9));
        assert_eq!(state_cell(&status), "FAILED(SIGKILL)");
        status.exit = Some(troupe_os::ExitReason::OomKilled);
        assert_eq!(state_cell(&status), "FAILED(OOM)");
        status.exit = Some(troupe_os::ExitReason::Exited(3));
        status.exit_code = Some(3);
        assert_eq!(state_cell(&status), "FAILED(3)");
    }
}
