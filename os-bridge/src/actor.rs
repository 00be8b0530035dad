//! The process actor: one actor per task process, so that a Linux process is addressed,
//! monitored, linked and supervised like any actor, from any node.
//!
//! * It registers under `task/<task-id>` (or a path of the caller's choosing).
//! * It lives exactly as long as its process: when the process ends, the actor stops with
//!   the exit as its reason, so a monitor's `Down` says how the process ended (`normal` for
//!   exit code 0, `shutdown` when stopped by its owner, otherwise e.g. `exited with code 3`
//!   or `killed for exceeding its memory limit (OOM)`).
//! * When the actor is stopped (by a supervisor, a link, a request), it stops its process
//!   gracefully first. If the actor is killed outright, the process keeps running and can be
//!   re-adopted from its checkpoint.
//! * It answers `Signal`, `Stop`, `Stats`, `Tail` (last lines), `Subscribe` (a live tail
//!   sent to any actor's path, local or remote) and `Info`.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use troupe_runtime::supervisor::{ChildSpec, Restart, Shutdown, StartCtx, StartOutcome};
use troupe_runtime::text::Parsed;
use troupe_runtime::{Addr, Child, Reply};

use crate::logs::LogChunk;
use crate::process::{Process, ProcessStats, StartError, TaskContext};
use crate::spec::{ExitReason, ProcessSpec, signal_number};

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What a process actor tells about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// The task's id.
    pub task: String,
    /// The main process's pid.
    pub pid: i32,
    /// What it runs.
    pub argv: Vec<String>,
    /// Its sandbox directory.
    pub sandbox: String,
    /// Its cgroup directories (none without root).
    pub cgroup: Vec<String>,
}

/// Why a process actor did not send a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SignalRefused {
    /// No such signal.
    #[error("unknown signal {signal:?}")]
    Unknown {
        /// What was asked for.
        signal: String,
    },
    /// The kernel refused (the process is gone, say).
    #[error("cannot signal the process: {cause}")]
    Failed {
        /// The OS error.
        cause: String,
    },
}

/// What a process actor accepts.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum ProcessMsg {
    /// Sends a signal (by name, `TERM`, or number, `15`) to the main process.
    Signal {
        /// The signal.
        signal: String,
        /// `Ok`, or why not.
        reply: Reply<Result<(), SignalRefused>>,
    },
    /// Stops the process gracefully (stop signal, grace period, then SIGKILL to what is
    /// left); answers with how it ended, and then the actor stops.
    Stop {
        /// How it ended.
        reply: Reply<ExitReason>,
    },
    /// [`ProcessMsg::Stop`] with this grace between the stop signal and SIGKILL, rather
    /// than the spec's (zero: SIGKILL at once).
    StopWithin {
        /// The grace.
        grace: std::time::Duration,
        /// How it ended.
        reply: Reply<ExitReason>,
    },
    /// Resource use now.
    Stats {
        /// The answer.
        reply: Reply<ProcessStats>,
    },
    /// The last `lines` lines of a stream.
    Tail {
        /// Which stream.
        stream: Stream,
        /// How many lines.
        lines: usize,
        /// The lines.
        reply: Reply<Vec<String>>,
    },
    /// Sends the stream from offset `from` on, then live, to the actor at `to` (a
    /// [`LogMsg`] receiver on any node), until the process ends.
    Subscribe {
        /// Which stream.
        stream: Stream,
        /// The first offset wanted.
        from: u64,
        /// The subscriber's path.
        to: String,
    },
    /// Who it is.
    Info {
        /// The answer.
        reply: Reply<ProcessInfo>,
    },
    /// Writes bytes to its standard input (a process started with `stdin_pipe`), in the
    /// order sent; answers once they are in the pipe.
    SendStdin {
        /// What to write.
        bytes: Vec<u8>,
        /// `Ok`, or why not.
        reply: Reply<Result<(), crate::stdin::StdinRefused>>,
    },
    /// Closes its standard input: it reads the end once it has read what was sent.
    CloseStdin {
        /// `Ok`, or why not.
        reply: Reply<Result<(), crate::stdin::StdinRefused>>,
    },
}

/// What a log subscriber receives.
#[derive(Debug, Clone, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum LogMsg {
    /// A piece of the log.
    Chunk {
        /// The task.
        task: String,
        /// Which stream.
        stream: Stream,
        /// The bytes and their offset.
        chunk: LogChunk,
    },
    /// The stream ended (the process did).
    End {
        /// The task.
        task: String,
        /// Which stream.
        stream: Stream,
    },
    /// There is no stream to send: why (its sandbox was removed).
    Gone {
        /// The task.
        task: String,
        /// Which stream.
        stream: Stream,
        /// Why, for people.
        why: String,
    },
}

/// The text form of a process actor's messages, for the REPL's `send` and `call`.
impl troupe_runtime::text::TextProtocol for ProcessMsg {
    const COMMANDS: &'static [(&'static str, &'static str)] = &[
        ("signal SIG", "sends SIG (TERM, 15...) to the main process"),
        ("stop", "stops the process gracefully; answers how it ended"),
        ("stats", "resource use now"),
        ("info", "task, pid, command, sandbox"),
        (
            "tail [stdout|stderr] [LINES]",
            "the last lines of a stream (stdout, 10)",
        ),
        (
            "stdin WORDS...",
            "writes the words and a newline to its standard input (started with a piped stdin)",
        ),
        ("close_stdin", "closes its standard input"),
    ];

    fn parse(words: &[&str], _call: bool) -> Result<Parsed<ProcessMsg>, String> {
        fn json<T: Serialize>(value: T) -> Result<String, String> {
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
        }
        match words {
            ["signal", signal] => {
                if signal_number(signal).is_none() {
                    return Err(format!("unknown signal {signal:?}"));
                }
                let signal = signal.to_string();
                Ok(Parsed::call(
                    |reply| ProcessMsg::Signal { signal, reply },
                    |sent: Result<(), SignalRefused>| {
                        sent.map(|()| "sent".to_string()).map_err(|e| e.to_string())
                    },
                ))
            }
            ["stop"] => Ok(Parsed::call(
                |reply| ProcessMsg::Stop { reply },
                |exit: ExitReason| Ok(exit.to_string()),
            )),
            ["stats"] => Ok(Parsed::call(
                |reply| ProcessMsg::Stats { reply },
                json::<ProcessStats>,
            )),
            ["info"] => Ok(Parsed::call(
                |reply| ProcessMsg::Info { reply },
                json::<ProcessInfo>,
            )),
            ["tail", rest @ ..] if rest.len() <= 2 => {
                let mut stream = Stream::Stdout;
                let mut lines = 10;
                for word in rest {
                    match *word {
                        "stdout" => stream = Stream::Stdout,
                        "stderr" => stream = Stream::Stderr,
                        n => {
                            lines = n.parse().map_err(|_| {
                                format!("expected stdout, stderr or a count, got {n:?}")
                            })?
                        }
                    }
                }
                Ok(Parsed::call(
                    |reply| ProcessMsg::Tail {
                        stream,
                        lines,
                        reply,
                    },
                    |lines: Vec<String>| Ok(lines.join("\n")),
                ))
            }
            ["stdin", words @ ..] => {
                let mut bytes = words.join(" ").into_bytes();
                bytes.push(b'\n');
                Ok(Parsed::call(
                    |reply| ProcessMsg::SendStdin { bytes, reply },
                    |sent: Result<(), crate::stdin::StdinRefused>| {
                        sent.map(|()| "sent".to_string()).map_err(|e| e.to_string())
                    },
                ))
            }
            ["close_stdin"] => Ok(Parsed::call(
                |reply| ProcessMsg::CloseStdin { reply },
                |closed: Result<(), crate::stdin::StdinRefused>| {
                    closed
                        .map(|()| "closed".to_string())
                        .map_err(|e| e.to_string())
                },
            )),
            [command, ..] => Err(format!(
                "a process does not take {command:?} with these arguments: try `help`"
            )),
            [] => Err("no command".into()),
        }
    }
}

/// What a process actor starts from.
#[derive(Debug, Clone)]
pub struct ProcessArgs {
    /// What to run.
    pub spec: ProcessSpec,
    /// Where.
    pub ctx: TaskContext,
    /// The path to register under; `task/<task-id>` when `None`.
    pub path: Option<String>,
    /// Adopt the task's process from its checkpoint (its owner restarted) instead of
    /// starting it; a process that ended meanwhile reports its recorded exit at once.
    pub adopt: bool,
}

/// The process actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessActor;

/// Its state: the process.
pub struct ProcessState {
    process: Process,
    counter: troupe_runtime::inspector::MessageCounter,
}

impl Actor for ProcessActor {
    type Msg = ProcessMsg;
    type State = ProcessState;
    type Arguments = ProcessArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ProcessMsg>,
        args: ProcessArgs,
    ) -> Result<ProcessState, ActorProcessingErr> {
        static DESCRIBED: std::sync::Once = std::sync::Once::new();
        DESCRIBED.call_once(|| {
            troupe_runtime::inspector::register_describer(describe);
            troupe_runtime::text::serve::<ProcessMsg>();
        });
        let path = args
            .path
            .clone()
            .unwrap_or_else(|| format!("task/{}", args.ctx.task));
        let process = if args.adopt {
            Process::adopt(args.ctx).await.map_err(|e| e.to_string())?
        } else {
            Process::spawn(args.spec, args.ctx)
                .await
                .map_err(|e: StartError| e.exit_reason().to_string())?
        };
        troupe_runtime::register(&path, &myself)?;
        // The actor lives exactly as long as its process.
        let watcher = process.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let reason = watcher.wait().await;
            debug!(task = %watcher.task(), %reason, "process ended");
            me.stop(Some(reason.to_stop_reason()));
        });
        Ok(ProcessState {
            process,
            counter: troupe_runtime::inspector::MessageCounter::new(&myself.get_cell()),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ProcessMsg>,
        state: &mut ProcessState,
    ) -> Result<(), ActorProcessingErr> {
        if state.process.exit_reason().is_none() {
            let reason = state.process.stop().await;
            debug!(task = %state.process.task(), %reason, "process stopped with its actor");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ProcessMsg>,
        message: ProcessMsg,
        state: &mut ProcessState,
    ) -> Result<(), ActorProcessingErr> {
        state.counter.handled();
        let process = &state.process;
        match message {
            ProcessMsg::Signal { signal, reply } => {
                let result = match signal_number(&signal) {
                    Some(n) => process.signal(n).map_err(|e| SignalRefused::Failed {
                        cause: e.to_string(),
                    }),
                    None => Err(SignalRefused::Unknown { signal }),
                };
                reply.send(result);
            }
            ProcessMsg::SendStdin { bytes, reply } => {
                let status_dir = crate::sandbox::status_dir_in(&process.sandbox());
                // Awaited here, so that what is sent arrives in the order sent.
                let sent =
                    tokio::task::spawn_blocking(move || crate::stdin::send(&status_dir, &bytes))
                        .await
                        .unwrap_or_else(|e| {
                            Err(crate::stdin::StdinRefused::Failed {
                                cause: e.to_string(),
                            })
                        });
                reply.send(sent);
            }
            ProcessMsg::CloseStdin { reply } => {
                let status_dir = crate::sandbox::status_dir_in(&process.sandbox());
                let closed = tokio::task::spawn_blocking(move || crate::stdin::close(&status_dir))
                    .await
                    .unwrap_or_else(|e| {
                        Err(crate::stdin::StdinRefused::Failed {
                            cause: e.to_string(),
                        })
                    });
                reply.send(closed);
            }
            ProcessMsg::StopWithin { grace, reply } => {
                let reason = process.stop_within(grace).await;
                reply.send(reason.clone());
                myself.stop(Some(reason.to_stop_reason()));
            }
            ProcessMsg::Stop { reply } => {
                let reason = process.stop().await;
                reply.send(reason.clone());
                myself.stop(Some(reason.to_stop_reason()));
            }
            ProcessMsg::Stats { reply } => {
                reply.send(process.stats());
            }
            ProcessMsg::Tail {
                stream,
                lines,
                reply,
            } => {
                let log = match stream {
                    Stream::Stdout => process.stdout(),
                    Stream::Stderr => process.stderr(),
                };
                reply.send(log.last_lines(lines.min(100_000)));
            }
            ProcessMsg::Subscribe { stream, from, to } => {
                let log = match stream {
                    Stream::Stdout => process.stdout(),
                    Stream::Stderr => process.stderr(),
                };
                let mut chunks = log.subscribe(from);
                let task = process.task().to_string();
                tokio::spawn(async move {
                    let sink = Addr::<LogMsg>::new(to.clone());
                    while let Some(chunk) = chunks.recv().await {
                        let msg = LogMsg::Chunk {
                            task: task.clone(),
                            stream,
                            chunk,
                        };
                        if let Err(e) = sink.send(msg).await {
                            warn!(subscriber = %to, cause = %e.error, "log subscriber gone");
                            return;
                        }
                    }
                    let _ = sink.send(LogMsg::End { task, stream }).await;
                });
            }
            ProcessMsg::Info { reply } => {
                reply.send(ProcessInfo {
                    task: process.task().to_string(),
                    pid: process.pid(),
                    argv: process.spec().argv.clone(),
                    sandbox: process.sandbox().display().to_string(),
                    cgroup: process
                        .cgroup_dirs()
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect(),
                });
            }
        }
        Ok(())
    }
}

/// What the inspector shows of a process actor: pid, command, sandbox, cpu and memory.
async fn describe(cell: ractor::ActorCell) -> Option<troupe_runtime::inspector::Description> {
    if cell.is_message_type_of::<ProcessMsg>() != Some(true) {
        return None;
    }
    let actor: ActorRef<ProcessMsg> = cell.into();
    let (reply, info) = Reply::channel();
    actor.cast(ProcessMsg::Info { reply }).ok()?;
    let info = info.recv().await.ok()?;
    let (reply, stats) = Reply::channel();
    actor.cast(ProcessMsg::Stats { reply }).ok()?;
    let stats = stats.recv().await.ok()?;
    let mut details = std::collections::BTreeMap::new();
    details.insert("task".into(), info.task);
    details.insert("pid".into(), info.pid.to_string());
    details.insert("command".into(), info.argv.join(" "));
    details.insert("sandbox".into(), info.sandbox);
    details.insert(
        "cpu_ms".into(),
        (stats.usage.cpu_ns / 1_000_000).to_string(),
    );
    details.insert("memory_bytes".into(), stats.usage.memory_bytes.to_string());
    details.insert("processes".into(), stats.usage.processes.to_string());
    Some((troupe_runtime::inspector::ActorKind::Process, details))
}

/// A supervisor child that runs `spec` as task `ctx.task` (each restart reuses the task's
/// sandbox, so its logs go on, and its cgroup and shim, see [`crate::keeper::RunKeeper`]).
/// Its shutdown gives the process its grace period and 5 s more, so that a supervisor never
/// kills the actor while its process is still stopping.
pub fn process_child(child: ChildSpec, spec: ProcessSpec, ctx: TaskContext) -> Child {
    let mut child = child;
    if child.start.kind.is_empty() {
        child.start.kind = "process".into();
    }
    if child.shutdown.is_none() {
        child.shutdown = Some(Shutdown::Timeout(spec.grace + Duration::from_secs(5)));
    }
    // A child that may run again keeps its emptied cgroup and its shim for the next run.
    let ctx = if matches!(child.restart, Restart::Temporary) || ctx.keeper.is_some() {
        ctx
    } else {
        ctx.keeping_between_runs()
    };
    Child::new(child, move |start: StartCtx| {
        let args = ProcessArgs {
            spec: spec.clone(),
            ctx: ctx.clone(),
            path: None,
            adopt: false,
        };
        async move {
            let outcome = start.spawn(ProcessActor, args).await;
            if let StartOutcome::Failed(reason) = &outcome {
                warn!(child = %start.id(), %reason, "process child failed to start");
            }
            outcome
        }
    })
}
