//! The process service's commands: `troupe spawn [--agent A] [--constraint 'KEY = VALUE']...
//! [--cpus C] [--mem MiB] [--ports N] [--stdin null|pipe] [--name NAME] [--env K=V]...
//! [--restart TYPE] -- CMD ARGS...` starts a process anywhere in the cluster and says where;
//! `troupe procs [--json] [--live] [--agent A] [--name PREFIX]` lists the processes;
//! `troupe stdin ID [WORDS...] [--close]` writes to a process's standard input.

use std::time::Duration;

use clap::Args;
use troupe_actors::client::Processes;
use troupe_actors::processes::{Constraint, Needs, Placement, ProcessView, RestartPolicy};
use troupe_actors::protocol::{AgentId, Resources, now_ms};
use troupe_runtime::supervisor::Restart;

use super::client::{Client, ClusterArgs, client_failure};
use super::tasks::{age, render_table, shell_words};
use super::{Failure, parse_key_value};

/// Reads a restart type.
fn restart_type(text: &str) -> Result<Restart, String> {
    match text {
        "permanent" => Ok(Restart::Permanent),
        "transient" => Ok(Restart::Transient),
        "temporary" => Ok(Restart::Temporary),
        other => Err(format!(
            "{other:?} is not a restart type: permanent, transient or temporary"
        )),
    }
}

/// Reads a standard input mode.
fn stdin_mode(text: &str) -> Result<troupe_os::StdinMode, String> {
    match text {
        "null" => Ok(troupe_os::StdinMode::Null),
        "pipe" => Ok(troupe_os::StdinMode::Pipe),
        other => Err(format!("{other:?} is not a standard input: null or pipe")),
    }
}

/// Arguments of `troupe spawn`.
#[derive(Debug, Args)]
pub(crate) struct SpawnArgs {
    /// Only on this agent.
    #[arg(long, value_name = "AGENT", conflicts_with = "constraints")]
    agent: Option<String>,
    /// Only on agents whose attribute (or `host`) meets it: `KEY = VALUE` or
    /// `KEY != VALUE` (repeatable; all must hold).
    #[arg(long = "constraint", value_name = "KEY = VALUE", value_parser = Constraint::parse)]
    constraints: Vec<Constraint>,
    /// Cpus, more than 0 (also its cgroup's cpu quota).
    #[arg(long, default_value = "0.1", allow_negative_numbers = true, value_parser = super::values::cpus)]
    cpus: f64,
    /// Memory in MiB, more than 0 (also its cgroup's memory limit).
    #[arg(long, value_name = "MiB", default_value = "64", allow_negative_numbers = true, value_parser = super::values::mib)]
    mem: f64,
    /// Ports it is given from its agent's range: `{port0}`... in its arguments, `PORT0`...
    /// in its environment.
    #[arg(long, default_value = "0", value_parser = clap::value_parser!(u16).range(0..=100))]
    ports: u16,
    /// Its standard input: `null` (`/dev/null`) or `pipe` (what `troupe stdin` sends).
    #[arg(long, value_name = "null|pipe", default_value = "null", value_parser = stdin_mode)]
    stdin: troupe_os::StdinMode,
    /// A name (the prefix of its id); default: the program's name.
    #[arg(long)]
    name: Option<String>,
    /// An environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// Seconds between the stop signal and SIGKILL when it is stopped.
    #[arg(long, value_name = "SECONDS", default_value = "5", allow_negative_numbers = true, value_parser = super::values::seconds)]
    grace: Duration,
    /// When it is started again: never (`temporary`), when it ended abnormally
    /// (`transient`), always (`permanent`); at most 3 times in 5 s, and on another agent
    /// when its own stays unreachable for 3 s.
    #[arg(long, value_name = "TYPE", default_value = "temporary", value_parser = restart_type)]
    restart: Restart,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) async fn spawn(args: SpawnArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.cluster).await?;
    let result = spawn_with(&client, &args).await;
    client.close().await;
    result
}

async fn spawn_with(client: &Client, args: &SpawnArgs) -> Result<(), Failure> {
    let mut spec = troupe_os::ProcessSpec::new(args.command.iter().cloned()).grace(args.grace);
    spec.stdin = args.stdin;
    for (k, v) in &args.env {
        spec = spec.env(k, v);
    }
    let name = args.name.clone().unwrap_or_else(|| {
        std::path::Path::new(&args.command[0])
            .file_name()
            .map_or("process".into(), |n| n.to_string_lossy().into_owned())
    });
    let placement = match (&args.agent, args.constraints.is_empty()) {
        (Some(agent), _) => Placement::Agent(AgentId(agent.clone())),
        (None, false) => Placement::Constraints(args.constraints.clone()),
        (None, true) => Placement::Any,
    };
    let needs = Needs {
        resources: Resources::new(args.cpus, args.mem),
        placement,
        ports: args.ports,
    };
    let spawned = Processes::on(client.master_node.clone())
        .spawn_with(&name, spec, needs, RestartPolicy::of(args.restart))
        .await
        .map_err(client_failure)?;
    let at = spawned
        .location
        .map(|l| format!(" ({})", l.addr))
        .unwrap_or_default();
    let ports = if spawned.ports.is_empty() {
        String::new()
    } else {
        let all: Vec<String> = spawned.ports.iter().map(u16::to_string).collect();
        format!(", ports {}", all.join(","))
    };
    println!("{} running on {}{at}{ports}", spawned.id, spawned.agent);
    Ok(())
}

/// Arguments of `troupe stdin`.
#[derive(Debug, Args)]
pub(crate) struct StdinArgs {
    /// The process (spawned with `--stdin pipe`).
    id: String,
    /// Words to send, with a newline; without any, this command's own standard input is
    /// sent, until it ends.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    text: Vec<String>,
    /// Close its standard input after (it then reads the end).
    #[arg(long)]
    close: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub(crate) async fn stdin(args: StdinArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.cluster).await?;
    let result = send_input(&client, &args).await;
    client.close().await;
    result
}

async fn send_input(client: &Client, args: &StdinArgs) -> Result<(), Failure> {
    use tokio::io::AsyncReadExt;
    let processes = Processes::on(client.master_node.clone());
    let id = troupe_actors::protocol::TaskId(args.id.clone());
    if !args.text.is_empty() {
        let mut line = args.text.join(" ").into_bytes();
        line.push(b'\n');
        processes.send(&id, line).await.map_err(client_failure)?;
    } else if !args.close {
        // Our own input, in pieces of at most 64 KiB, in order.
        let mut input = tokio::io::stdin();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = input.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            processes
                .send(&id, buffer[..n].to_vec())
                .await
                .map_err(client_failure)?;
        }
    }
    if args.close {
        processes.close_stdin(&id).await.map_err(client_failure)?;
    }
    Ok(())
}

/// Arguments of `troupe procs`.
#[derive(Debug, Args)]
pub(crate) struct ProcsArgs {
    /// JSON for scripts: an array of processes.
    #[arg(long)]
    json: bool,
    /// Only the processes that have not ended.
    #[arg(long)]
    live: bool,
    /// Only the processes on this agent.
    #[arg(long, value_name = "AGENT")]
    agent: Option<String>,
    /// Only the processes whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    name: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub(crate) async fn procs(args: ProcsArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.cluster).await?;
    let filter = troupe_actors::processes::ProcessFilter {
        live: args.live,
        agent: args.agent.clone().map(AgentId),
        name: args.name.clone(),
    };
    let listed = Processes::on(client.master_node.clone())
        .list_where(filter)
        .await;
    client.close().await;
    let mut listed = listed.map_err(client_failure)?;
    listed.sort_by_key(|p| p.spawned_ms);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
    } else {
        print!("{}", table(&listed));
    }
    Ok(())
}

fn table(procs: &[ProcessView]) -> String {
    let now = now_ms();
    let header = [
        "ID", "STATE", "AGENT", "PID", "RUN", "CPUS", "MEM", "AGE", "COMMAND",
    ];
    let rows = procs
        .iter()
        .map(|p| {
            let row = vec![
                p.id.to_string(),
                p.state.to_string().to_uppercase(),
                p.agent.as_ref().map_or("-".into(), |a| a.to_string()),
                p.pid.map_or("-".into(), |pid| pid.to_string()),
                p.incarnation.to_string(),
                format!("{}", p.resources.cpus),
                format!("{}M", p.resources.mem_mib),
                age(now.saturating_sub(p.spawned_ms)),
                shell_words(&p.command),
            ];
            (row, None)
        })
        .collect();
    render_table(&header, rows)
}
