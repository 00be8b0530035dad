//! The task commands: `troupe ps [--all] [--json]`, `troupe kill TASK`,
//! `troupe signal TASK SIG` and `troupe logs [-f] [--stderr] TASK`.

use std::time::Duration;

use clap::Args;
use troupe_actors::protocol::{KillAccepted, MasterMsg, TaskId, TaskState, TaskView, now_ms};
use troupe_os::actor::{ProcessMsg, Stream};
use troupe_runtime::Addr;

use super::Failure;
use super::client::{Client, ClusterArgs, REQUEST_TIMEOUT, call_failure};
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
fn age(ms: u64) -> String {
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
    let mut rows = vec![[
        "ID".to_string(),
        "STATE".into(),
        "AGENT".into(),
        "CPUS".into(),
        "MEM".into(),
        "AGE".into(),
        "COMMAND".into(),
    ]];
    for t in tasks {
        let mut state = t.status.state.to_string().to_uppercase();
        if let Some(code) = t.status.exit_code.filter(|c| *c != 0) {
            state = format!("{state}({code})");
        }
        rows.push([
            t.id.to_string(),
            state,
            t.agent.as_ref().map_or("-".into(), |a| a.to_string()),
            format!("{}", t.resources.cpus),
            format!("{}M", t.resources.mem_mib),
            age(now.saturating_sub(t.launched_ms)),
            t.command.join(" "),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == 6 {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub(crate) async fn ps(args: PsArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.cluster).await?;
    let state = client.state(args.all).await;
    client.close().await;
    let mut tasks = state?.tasks;
    tasks.sort_by_key(|t| t.launched_ms);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
    } else {
        print!("{}", table(&tasks));
    }
    Ok(())
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
    let result = kill_with(&client, TaskId(args.task), args.no_wait).await;
    client.close().await;
    result
}

async fn kill_with(client: &Client, task: TaskId, no_wait: bool) -> Result<(), Failure> {
    let id = task.clone();
    let how = client
        .master
        .call(|reply| MasterMsg::Kill { task: id, reply }, REQUEST_TIMEOUT)
        .await
        .map_err(call_failure)?
        .map_err(Failure::from)?;
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
        let location = client.locate(&TaskId(args.task.clone())).await?;
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
        client.agent(agent);
        let process = Addr::<ProcessMsg>::on(agent.node.clone(), format!("task/{}", args.task));
        let signal = args.signal.clone();
        process
            .call(
                |reply| ProcessMsg::Signal { signal, reply },
                REQUEST_TIMEOUT,
            )
            .await
            .map_err(call_failure)?
            .map_err(Failure::from)?;
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
    let task = TaskId(args.task.clone());
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
    follower.close();
    Ok(())
}
