//! `troupe repl [--master HOST:PORT] [--history PATH]`: an interactive shell on the cluster.
//!
//! Every `troupe` command works without the prefix (`ps`, `run -- echo hi`, `tree`), parsed
//! by the same clap definition as the command line, and talking through the REPL's one node.
//! Beyond them, the actor commands of `repl/actors.rs`: `send`, `call`, `stop`, `kill`,
//! `info`, `watch`, `top`, and `paths`. `kill NAME` kills the actor of that name when there
//! is one (at once, as Erlang's `exit(Pid, kill)`), else the task of that id (troupe's
//! `kill`: stop signal, grace, SIGKILL).
//!
//! * On a terminal: line editing, history kept across sessions in the history file,
//!   completion of commands, actor paths and task ids. Ctrl-C cancels the running command
//!   (an attached `run` takes the first Ctrl-C as "kill the task", as on the command line,
//!   and a second one cancels it), never the REPL; Ctrl-D or `exit` leaves.
//! * Piped: one command per line, no prompt, the same output; `#` starts a comment. The exit
//!   code is 0 when every line succeeded, else 1.
//!
//! An unknown command, a bad argument or an unknown path is a one-line error, and the
//! session goes on.

mod actors;
mod complete;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use super::client::{Client, ClusterArgs, set_session_node};
use super::{Cli, Command, Failure};
use crate::exit;
use actors::{TopArgs, WatchArgs};
use complete::{Known, ReplHelper};

/// Arguments of `troupe repl`.
#[derive(Debug, Args)]
pub(crate) struct ReplArgs {
    /// The history file (default: TROUPE_REPL_HISTORY, else ~/.troupe/repl_history).
    #[arg(long, value_name = "PATH", env = "TROUPE_REPL_HISTORY")]
    history: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// One line of the REPL: a command of its own or any `troupe` command.
#[derive(Debug, Parser)]
#[command(multicall = true, name = "repl")]
enum Line {
    /// Send a message in text form to an actor (`help` lists what it takes); no answer. To
    /// a process of the process service (its id), the words and a newline go to its
    /// standard input.
    Send(TextArgs),
    /// Send a message in text form to an actor and print its answer.
    Call(TextArgs),
    /// Stop an actor with a reason; its supervisor restarts it as its restart type says.
    Stop(StopArgs),
    /// One actor's snapshot: node, id, status, supervisor, restarts, details, what it accepts.
    Info(PathArg),
    /// An actor's state changes, its Down and restarts as they happen; without a path, the
    /// cluster's events. Ctrl-C ends it.
    Watch(WatchArgs),
    /// The busiest actors or tasks, by cpu, memory or messages, refreshed.
    Top(TopArgs),
    /// Every actor path in the cluster, in tree order.
    Paths,
    /// Leave the REPL.
    #[command(alias = "quit")]
    Exit,
    #[command(flatten)]
    Troupe(Box<Command>),
}

/// `PATH`.
#[derive(Debug, Args)]
struct PathArg {
    /// The actor: a path (`master/allocator`), SUPERVISOR/CHILD, or NODE:ID.
    path: String,
}

/// `PATH MSG...`.
#[derive(Debug, Args)]
struct TextArgs {
    /// The actor.
    path: String,
    /// The message, as words (`help` lists them).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    message: Vec<String>,
}

/// `PATH [REASON]`.
#[derive(Debug, Args)]
struct StopArgs {
    /// The actor.
    path: String,
    /// The exit reason (`normal` and `shutdown` are normal exits, which a transient child's
    /// supervisor does not restart).
    #[arg(default_value = "stopped from the repl")]
    reason: String,
}

/// Commands that run a node of their own, which a REPL line cannot.
const NODE_COMMANDS: [&str; 5] = ["node", "master", "agent", "dev", "repl"];

/// What a line did.
enum Outcome {
    Done,
    Failed,
    Exit,
}

/// The REPL's state for one session.
struct Session {
    client: Client,
    master: SocketAddr,
    known: Arc<Mutex<Known>>,
    /// The background refresh of `known`'s paths, if one was started.
    refreshing: Mutex<Option<tokio::task::JoinHandle<()>>>,
    interrupts: Signal,
}

pub(crate) async fn run(args: ReplArgs) -> Result<u8, Failure> {
    let client = Client::connect(&args.cluster).await?;
    set_session_node(Some(client.node.clone()));
    let interrupts = signal(SignalKind::interrupt())
        .map_err(|e| Failure::from(format!("cannot catch Ctrl-C: {e}")))?;
    let known = Arc::new(Mutex::new(Known {
        commands: command_names(),
        path_commands: vec!["send", "call", "stop", "kill", "info", "watch"],
        task_commands: vec!["kill", "signal", "logs"],
        paths: Vec::new(),
    }));
    let mut session = Session {
        master: args.cluster.master,
        client,
        known,
        refreshing: Mutex::new(None),
        interrupts,
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let code = if interactive {
        // Completion knows the tree from the first prompt on.
        session.refresh_paths();
        let first = session
            .refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(refresh) = first {
            let _ = refresh.await;
        }
        let history = args.history.clone().or_else(default_history);
        session.interactive(history).await
    } else {
        session.piped().await
    };
    set_session_node(None);
    session.client.close().await;
    Ok(code)
}

fn default_history() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".troupe/repl_history"))
}

fn command_names() -> Vec<String> {
    let mut names: Vec<String> = Line::command()
        .get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string))
        })
        .filter(|n| !NODE_COMMANDS.contains(&n.as_str()))
        .collect();
    names.push("help".into());
    names.sort();
    names
}

/// What the line reader thread hands over.
enum Read {
    Line(String),
    Interrupted,
    End,
}

impl Session {
    /// Refreshes the paths completion offers, in the background: asking every node of a
    /// large cluster takes a while, and the prompt does not wait for it. One refresh at a
    /// time; a command that ends while one runs does not start another.
    fn refresh_paths(&self) {
        let mut refreshing = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        if refreshing.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        let (node, master, addr) = (
            self.client.node.clone(),
            self.client.master.clone(),
            self.master.to_string(),
        );
        let known = self.known.clone();
        *refreshing = Some(tokio::spawn(async move {
            let asked = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                actors::index_through(&node, &master, &addr),
            )
            .await;
            if let Ok(Ok((_, index))) = asked {
                known.lock().unwrap_or_else(|p| p.into_inner()).paths = index.names;
            }
        }));
    }

    /// The terminal: rustyline on a thread of its own (it blocks), one line at a time.
    async fn interactive(&mut self, history: Option<PathBuf>) -> u8 {
        let (lines_tx, mut lines) = mpsc::channel::<Read>(1);
        let (next_tx, next) = std::sync::mpsc::channel::<()>();
        let helper = ReplHelper {
            known: self.known.clone(),
        };
        let reader = std::thread::spawn(move || read_lines(helper, history, next, lines_tx));
        println!(
            "troupe repl: connected to {} ({}). `help` lists the commands; Tab completes; Ctrl-D leaves.",
            self.client.master_node, self.master
        );
        loop {
            if next_tx.send(()).is_err() {
                break;
            }
            match lines.recv().await {
                Some(Read::Line(line)) => match self.execute(&line).await {
                    Outcome::Exit => break,
                    Outcome::Done | Outcome::Failed => self.refresh_paths(),
                },
                Some(Read::Interrupted) => continue,
                Some(Read::End) | None => break,
            }
        }
        drop(next_tx);
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        exit::OK
    }

    /// Piped standard input: every line a command, in order.
    async fn piped(&mut self) -> u8 {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut failed = false;
        loop {
            let line = tokio::select! {
                line = stdin.next_line() => line,
                _ = self.interrupts.recv() => return exit::FAILURE,
            };
            match line {
                Ok(Some(line)) => match self.execute(&line).await {
                    Outcome::Exit => break,
                    Outcome::Failed => failed = true,
                    Outcome::Done => {}
                },
                Ok(None) => break,
                Err(e) => {
                    eprintln!("troupe: cannot read standard input: {e}");
                    return exit::FAILURE;
                }
            }
        }
        if failed { exit::FAILURE } else { exit::OK }
    }

    /// Runs one line.
    async fn execute(&mut self, line: &str) -> Outcome {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Outcome::Done;
        }
        let words = match troupe_runtime::text::split_words(line) {
            Ok(words) => words,
            Err(e) => {
                eprintln!("troupe: {e}");
                return Outcome::Failed;
            }
        };
        let first = words[0].clone();
        let first = first.as_str();
        if NODE_COMMANDS.contains(&first) {
            eprintln!(
                "troupe: `{first}` runs a node of its own: start it from a shell, not the repl"
            );
            return Outcome::Failed;
        }
        if first == "help" && words.len() == 1 {
            print!("{}", help());
            return Outcome::Done;
        }
        // `kill PATH` kills an actor; `kill TASK` (any other name) is troupe's task kill.
        if first == "kill" && words.len() == 2 {
            let master = self.master.to_string();
            if let Ok(found) = actors::resolve(&self.client, &master, &words[1]).await {
                return match actors::kill(&found).await {
                    Ok(()) => Outcome::Done,
                    Err(e) => {
                        eprintln!("troupe: {}", e.message);
                        Outcome::Failed
                    }
                };
            }
        }
        let words = self.with_master(words);
        let parsed = Line::command()
            .try_get_matches_from(&words)
            .and_then(|m| Line::from_arg_matches(&m));
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                use clap::error::ErrorKind;
                match e.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                        print!("{}", e.render());
                        return Outcome::Done;
                    }
                    ErrorKind::InvalidSubcommand => {
                        eprintln!("troupe: unknown command `{first}`: `help` lists them");
                    }
                    _ => {
                        // clap's own message, without its "For more information" footer.
                        let text = e.render().to_string();
                        let text = text
                            .lines()
                            .next()
                            .unwrap_or("")
                            .trim_start_matches("error: ");
                        eprintln!("troupe: {text} (`{first} --help` tells more)");
                    }
                }
                return Outcome::Failed;
            }
        };
        if matches!(parsed, Line::Exit) {
            return Outcome::Exit;
        }
        let first_ctrl_c_is_the_command_s = matches!(&parsed, Line::Troupe(c) if matches!(c.as_ref(), Command::Run(r) if r.kills_on_ctrl_c()));
        let master = self.master.to_string();
        let client = &self.client;
        let work = async move {
            match parsed {
                Line::Troupe(command) => {
                    let code = super::dispatch(Cli { command: *command }).await;
                    if code == exit::OK { Ok(()) } else { Err(None) }
                }
                other => run_actor_command(client, &master, other)
                    .await
                    .map_err(Some),
            }
        };
        // Ctrl-C pressed before this command does not cancel it.
        while tokio::time::timeout(std::time::Duration::ZERO, self.interrupts.recv())
            .await
            .is_ok()
        {}
        let interrupts = &mut self.interrupts;
        let cancel = async {
            if first_ctrl_c_is_the_command_s {
                interrupts.recv().await;
            }
            interrupts.recv().await;
        };
        tokio::select! {
            result = work => match result {
                Ok(()) => Outcome::Done,
                Err(Some(failure)) => {
                    eprintln!("troupe: {}", failure.message);
                    Outcome::Failed
                }
                // `dispatch` printed why.
                Err(None) => Outcome::Failed,
            },
            _ = cancel => {
                eprintln!("troupe: cancelled");
                Outcome::Failed
            }
        }
    }

    /// Gives a `troupe` command that finds the master the REPL's own master, unless the
    /// line names one.
    fn with_master(&self, mut words: Vec<String>) -> Vec<String> {
        let takes_master = Line::command()
            .find_subcommand(&words[0])
            .is_some_and(|c| c.get_arguments().any(|a| a.get_id() == "master"));
        let named = words
            .iter()
            .any(|w| w == "--master" || w.starts_with("--master="));
        if takes_master && !named {
            words.insert(1, format!("--master={}", self.master));
        }
        words
    }
}

/// Whether `target` names a process of the process service (`p-NAME-XXXXXXXX`), not an
/// actor path.
fn is_process_id(target: &str) -> bool {
    target.starts_with("p-") && !target.contains('/') && !target.contains(':')
}

async fn run_actor_command(client: &Client, master: &str, line: Line) -> Result<(), Failure> {
    match line {
        Line::Send(args) | Line::Call(args) if args.message.is_empty() => {
            Err(Failure::from("no message: try `call PATH help`"))
        }
        Line::Send(args) if is_process_id(&args.path) => {
            let processes = troupe_actors::client::Processes::on(client.master_node.clone());
            let id = troupe_actors::protocol::TaskId(args.path.clone());
            let mut line = args.message.join(" ").into_bytes();
            line.push(b'\n');
            processes
                .send(&id, line)
                .await
                .map_err(super::client::client_failure)
        }
        Line::Send(args) => {
            let found = actors::resolve(client, master, &args.path).await?;
            actors::text(&found, &args.message, false).await
        }
        Line::Call(args) => {
            let found = actors::resolve(client, master, &args.path).await?;
            actors::text(&found, &args.message, true).await
        }
        Line::Stop(args) => {
            let found = actors::resolve(client, master, &args.path).await?;
            actors::stop(&found, args.reason).await
        }
        Line::Info(args) => {
            let found = actors::resolve(client, master, &args.path).await?;
            print!("{}", actors::info(&found));
            Ok(())
        }
        Line::Watch(args) => actors::watch(client, master, args).await,
        Line::Top(args) => actors::top(client, master, args).await,
        Line::Paths => {
            let (_, index) = actors::index(client, master).await?;
            for name in &index.names {
                println!("{name}");
            }
            Ok(())
        }
        Line::Exit | Line::Troupe(_) => Ok(()),
    }
}

fn help() -> String {
    let mut out = String::from("Commands (each also takes --help):\n");
    for c in Line::command().get_subcommands() {
        let name = c.get_name();
        if NODE_COMMANDS.contains(&name) {
            continue;
        }
        let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push_str(&format!("  {name:<11} {about}\n"));
    }
    out.push_str(
        "\nActors are named by a registered path (master/allocator), SUPERVISOR/CHILD, or NODE:ID;\n\
         `paths` lists them and Tab completes them. `call PATH help` lists what an actor takes.\n",
    );
    out
}

/// The line reader's thread: waits for the go-ahead, reads a line, hands it over.
fn read_lines(
    helper: ReplHelper,
    history: Option<PathBuf>,
    next: std::sync::mpsc::Receiver<()>,
    lines: mpsc::Sender<Read>,
) {
    use rustyline::error::ReadlineError;
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .max_history_size(10_000)
        .map(|b| b.completion_type(rustyline::CompletionType::List).build());
    let editor = config
        .and_then(rustyline::Editor::<ReplHelper, rustyline::history::FileHistory>::with_config);
    let mut editor = match editor {
        Ok(e) => e,
        Err(e) => {
            eprintln!("troupe: cannot set up the terminal: {e}");
            let _ = lines.blocking_send(Read::End);
            return;
        }
    };
    editor.set_helper(Some(helper));
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A missing file is a first session.
        let _ = editor.load_history(path);
    }
    while next.recv().is_ok() {
        let read = match editor.readline("troupe> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                    if let Some(path) = &history {
                        // Every line at once, so that a session that dies loses none.
                        if let Err(e) = editor.append_history(path) {
                            eprintln!("troupe: cannot save the history to {}: {e}", path.display());
                        }
                    }
                }
                Read::Line(line)
            }
            Err(ReadlineError::Interrupted) => Read::Interrupted,
            Err(ReadlineError::Eof) => Read::End,
            Err(e) => {
                eprintln!("troupe: cannot read the terminal: {e}");
                Read::End
            }
        };
        let end = matches!(read, Read::End);
        if lines.blocking_send(read).is_err() || end {
            return;
        }
    }
}
