//! The one command tree of `troupe`, parsed from argv (and later from REPL lines).

mod client;
mod cluster;
mod follow;
mod node;
mod ping;
mod procs;
mod repl;
mod run;
mod specs;
mod tasks;
pub(crate) mod tree;
mod values;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use troupe_runtime::Cookie;

use crate::exit;

/// troupe: a cluster process orchestrator in which every entity is an actor.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Every `troupe` subcommand.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a bare node until SIGTERM or Ctrl-C.
    Node(node::NodeArgs),
    /// Check that a node answers, and how fast.
    Ping(ping::PingArgs),
    /// Run a master (and its one-shot runner) until SIGTERM or Ctrl-C.
    Master(cluster::MasterArgs),
    /// Run an agent that offers this host's resources to a master.
    Agent(cluster::AgentArgs),
    /// Run the embedded cluster: a master and N agents in one process.
    Dev(cluster::DevArgs),
    /// Run a command on the cluster; attached, stream its output and exit with its code.
    Run(run::RunArgs),
    /// List tasks.
    Ps(tasks::PsArgs),
    /// Kill a task: its stop signal, its grace period, then SIGKILL.
    Kill(tasks::KillArgs),
    /// Send a signal to a task's process.
    Signal(tasks::SignalArgs),
    /// Print a task's output (stdout, or --stderr), following it with -f.
    Logs(tasks::LogsArgs),
    /// Start a process anywhere in the cluster (the process service), and say where.
    Spawn(procs::SpawnArgs),
    /// List the process service's processes.
    Procs(procs::ProcsArgs),
    /// Write to a process's standard input (one spawned with `--stdin pipe`), or close it.
    Stdin(procs::StdinArgs),
    /// Apply a supervision spec: create it, or update it in place (only what changed
    /// restarts). Prints the plan.
    Apply(specs::ApplyArgs),
    /// Show what applying a spec file would change, without changing anything.
    Diff(specs::DiffArgs),
    /// List the applied specs: desired and running children, restarts, health.
    Specs(specs::SpecsArgs),
    /// Delete a spec: its children stop in reverse start order.
    Delete(specs::DeleteArgs),
    /// Draw the cluster's actor tree: nodes, supervisors, actors, process actors.
    Tree(tree::TreeArgs),
    /// An interactive shell on the cluster: every command here, and actors to inspect,
    /// message, stop and watch.
    Repl(repl::ReplArgs),
}

impl Command {
    /// The log filter used when `RUST_LOG` is not set.
    pub(crate) fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Node(_) | Command::Master(_) | Command::Agent(_) | Command::Dev(_) => {
                "warn,ractor_cluster=error"
            }
            // Answers and reasons are printed, not logged.
            Command::Ping(_)
            | Command::Run(_)
            | Command::Ps(_)
            | Command::Kill(_)
            | Command::Signal(_)
            | Command::Logs(_)
            | Command::Spawn(_)
            | Command::Procs(_)
            | Command::Stdin(_)
            | Command::Apply(_)
            | Command::Diff(_)
            | Command::Specs(_)
            | Command::Delete(_)
            | Command::Tree(_)
            | Command::Repl(_) => "error,ractor_cluster=off",
        }
    }
}

/// How a command finds the cluster cookie.
#[derive(Debug, Args)]
pub(crate) struct CookieArgs {
    /// The cluster cookie (else TROUPE_COOKIE, else the cookie file).
    #[arg(long, global = true)]
    cookie: Option<String>,
    /// The cookie file (default: TROUPE_COOKIE_FILE, else ~/.troupe/cookie, created on first use).
    #[arg(long, global = true, value_name = "PATH")]
    cookie_file: Option<PathBuf>,
}

impl CookieArgs {
    pub(crate) fn resolve(&self) -> Result<Cookie, troupe_runtime::cookie::CookieError> {
        Cookie::resolve(self.cookie.as_deref(), self.cookie_file.as_deref())
    }
}

pub(crate) fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a parsed command and returns its exit code.
pub(crate) async fn dispatch(cli: Cli) -> u8 {
    // The REPL runs commands through here too, hence the box: the future refers to itself.
    let result = match cli.command {
        Command::Node(args) => node::run(args).await.map(|()| exit::OK),
        Command::Ping(args) => ping::run(args).await.map(|()| exit::OK),
        Command::Master(args) => cluster::master(args).await.map(|()| exit::OK),
        Command::Agent(args) => cluster::agent(args).await.map(|()| exit::OK),
        Command::Dev(args) => cluster::dev(args).await.map(|()| exit::OK),
        Command::Run(args) => run::run(args).await,
        Command::Ps(args) => tasks::ps(args).await.map(|()| exit::OK),
        Command::Kill(args) => tasks::kill(args).await.map(|()| exit::OK),
        Command::Signal(args) => tasks::signal(args).await.map(|()| exit::OK),
        Command::Logs(args) => tasks::logs(args).await.map(|()| exit::OK),
        Command::Spawn(args) => procs::spawn(args).await.map(|()| exit::OK),
        Command::Procs(args) => procs::procs(args).await.map(|()| exit::OK),
        Command::Stdin(args) => procs::stdin(args).await.map(|()| exit::OK),
        Command::Apply(args) => specs::apply(args).await,
        Command::Diff(args) => specs::diff(args).await,
        Command::Specs(args) => specs::specs(args).await.map(|()| exit::OK),
        Command::Delete(args) => specs::delete(args).await.map(|()| exit::OK),
        Command::Tree(args) => tree::run(args).await.map(|()| exit::OK),
        Command::Repl(args) => Box::pin(repl::run(args)).await,
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("troupe: {}", failure.message);
            failure.code
        }
    }
}

/// A command's failure: a one-line message and its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

/// Parses `KEY=VALUE`.
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::new(exit::FAILURE, e.to_string())
    }
}
