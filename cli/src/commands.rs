//! The one command tree of `troupe`, parsed from argv (and later from REPL lines).

mod node;
mod ping;

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
}

impl Command {
    /// The log filter used when `RUST_LOG` is not set.
    pub(crate) fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Node(_) => "warn,ractor_cluster=error",
            // A one-line answer: the reason is printed, not logged.
            Command::Ping(_) => "error",
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
    let result = match cli.command {
        Command::Node(args) => node::run(args).await,
        Command::Ping(args) => ping::run(args).await,
    };
    match result {
        Ok(()) => exit::OK,
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
