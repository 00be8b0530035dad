//! The actors of the helper node, and the messages tests send them.
//!
//! * `echo`: answers calls, and counts sequenced casts to check their order.
//! * `control`: spawns victims, stops them in each way an actor can stop, links them to
//!   other actors, and reports what they saw.
//! * `victim/<name>`: actors that exist to be stopped, linked and monitored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use troupe_runtime::{Addr, DecodeStats, Exit, RemoteMessage, Reply, ractor};

/// Messages of the `echo` actor.
#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
pub enum EchoMsg {
    /// Answers with the same text.
    Echo {
        /// The text.
        text: String,
        /// The answer.
        reply: Reply<String>,
    },
    /// One of a numbered stream of casts.
    Seq {
        /// Its number, from 0.
        n: u64,
    },
    /// How many sequenced casts arrived, and how many out of order.
    SeqStats {
        /// The answer: (received, out of order).
        reply: Reply<(u64, u64)>,
    },
}

/// The echo actor.
#[derive(Debug)]
pub struct Echo;

/// The echo actor's state.
#[derive(Debug, Default)]
pub struct EchoState {
    next: u64,
    received: u64,
    out_of_order: u64,
}

impl Actor for Echo {
    type Msg = EchoMsg;
    type State = EchoState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<EchoMsg>,
        _: (),
    ) -> Result<EchoState, ActorProcessingErr> {
        Ok(EchoState::default())
    }

    async fn handle(
        &self,
        _: ActorRef<EchoMsg>,
        message: EchoMsg,
        state: &mut EchoState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EchoMsg::Echo { text, reply } => {
                reply.send(text);
            }
            EchoMsg::Seq { n } => {
                state.received += 1;
                if n != state.next {
                    state.out_of_order += 1;
                }
                state.next = n + 1;
            }
            EchoMsg::SeqStats { reply } => {
                reply.send((state.received, state.out_of_order));
            }
        }
        Ok(())
    }
}

/// How a victim is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopMode {
    /// `stop(None)`: a normal exit.
    Normal,
    /// A handler panics.
    Panic,
    /// A handler returns an error.
    Error,
    /// `kill()`.
    Kill,
}

/// Messages of a victim actor.
#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
pub enum VictimMsg {
    /// Stop in the given way.
    Die {
        /// How.
        mode: StopMode,
    },
    /// An exit signal from a linked actor, for a victim that traps exits.
    Exit(Exit),
    /// Casts `count` numbered `EchoMsg::Seq` messages to the echo actor at `path` on
    /// `node`, then stops in the given way.
    SendThenDie {
        /// The echo actor's node.
        node: String,
        /// Its path.
        path: String,
        /// How many messages.
        count: u64,
        /// How to stop after.
        mode: StopMode,
    },
    /// Answers, then stops in the given way at once.
    AnswerThenDie {
        /// How to stop.
        mode: StopMode,
        /// The answer: the victim's path.
        reply: Reply<String>,
    },
}

impl From<Exit> for VictimMsg {
    fn from(exit: Exit) -> Self {
        VictimMsg::Exit(exit)
    }
}

/// Exits received by trapping victims, by path.
pub type ExitLog = Arc<Mutex<HashMap<String, Vec<Exit>>>>;

/// Where a trapping victim hands the exits it receives.
pub type ExitSink = Arc<dyn Fn(Exit) + Send + Sync>;

/// An actor that exists to be stopped, linked and monitored.
pub struct Victim {
    /// Its path.
    pub path: String,
    /// Where it hands the exits it traps.
    pub exits: ExitSink,
}

impl std::fmt::Debug for Victim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Victim({})", self.path)
    }
}

impl Victim {
    /// A victim at `path` whose trapped exits go to `exits`.
    pub fn reporting_to(path: &str, exits: tokio::sync::mpsc::UnboundedSender<Exit>) -> Victim {
        Victim {
            path: path.to_string(),
            exits: Arc::new(move |exit| {
                let _ = exits.send(exit);
            }),
        }
    }

    /// A victim at `path` whose trapped exits are kept in `log` under its path.
    pub fn logging_to(path: &str, log: ExitLog) -> Victim {
        let key = path.to_string();
        Victim {
            path: path.to_string(),
            exits: Arc::new(move |exit| {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.entry(key.clone()).or_default().push(exit);
            }),
        }
    }
}

impl Victim {
    fn die(&self, myself: &ActorRef<VictimMsg>, mode: StopMode) -> Result<(), ActorProcessingErr> {
        match mode {
            StopMode::Normal => myself.stop(None),
            StopMode::Panic => panic!("victim {} panics on request", self.path),
            StopMode::Error => {
                return Err(format!("victim {} fails on request", self.path).into());
            }
            StopMode::Kill => myself.kill(),
        }
        Ok(())
    }
}

impl Actor for Victim {
    type Msg = VictimMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<VictimMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<VictimMsg>,
        message: VictimMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            VictimMsg::Die { mode } => return self.die(&myself, mode),
            VictimMsg::Exit(exit) => (self.exits)(exit),
            VictimMsg::SendThenDie {
                node,
                path,
                count,
                mode,
            } => {
                let echo = Addr::<EchoMsg>::on(node, path);
                for n in 0..count {
                    echo.send(EchoMsg::Seq { n })
                        .await
                        .map_err(|e| format!("victim {} cannot send: {}", self.path, e.error))?;
                }
                return self.die(&myself, mode);
            }
            VictimMsg::AnswerThenDie { mode, reply } => {
                reply.send(self.path.clone());
                return self.die(&myself, mode);
            }
        }
        Ok(())
    }
}

/// Messages of the `control` actor.
#[derive(Debug, Serialize, Deserialize, RemoteMessage)]
pub enum ControlMsg {
    /// Spawns a victim at `path`, trapping exits if asked.
    Spawn {
        /// Its path.
        path: String,
        /// Whether it traps exits.
        trap: bool,
        /// Answers once it is registered.
        reply: Reply<bool>,
    },
    /// Links the local victim at `path` with `peer_path` (on `peer_node`, or anywhere).
    Link {
        /// The local victim.
        path: String,
        /// The peer's node.
        peer_node: Option<String>,
        /// The peer's path.
        peer_path: String,
        /// `Ok` or the error's text.
        reply: Reply<Result<(), String>>,
    },
    /// Whether an actor is registered at `path` on this node.
    Alive {
        /// The path.
        path: String,
        /// The answer.
        reply: Reply<bool>,
    },
    /// The exits a trapping victim received.
    Exits {
        /// The victim's path.
        path: String,
        /// The answer.
        reply: Reply<Vec<Exit>>,
    },
    /// This node's decoder counters.
    DecodeStats {
        /// The answer.
        reply: Reply<DecodeStats>,
    },
    /// How many connections this node dropped in their handshake.
    HandshakeFailures {
        /// The answer.
        reply: Reply<u64>,
    },
}

/// The control actor.
#[derive(Debug)]
pub struct Control;

impl Actor for Control {
    type Msg = ControlMsg;
    type State = ExitLog;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<ControlMsg>,
        _: (),
    ) -> Result<ExitLog, ActorProcessingErr> {
        Ok(ExitLog::default())
    }

    async fn handle(
        &self,
        _: ActorRef<ControlMsg>,
        message: ControlMsg,
        exits: &mut ExitLog,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ControlMsg::Spawn { path, trap, reply } => {
                let victim = Victim::logging_to(&path, exits.clone());
                let ok = match Actor::spawn(None, victim, ()).await {
                    Ok((actor, _)) => {
                        if trap {
                            troupe_runtime::trap_exit(&actor)?;
                        }
                        troupe_runtime::register(&path, &actor).is_ok()
                    }
                    Err(_) => false,
                };
                reply.send(ok);
            }
            ControlMsg::Link {
                path,
                peer_node,
                peer_path,
                reply,
            } => {
                let local = Addr::<VictimMsg>::new(path.clone()).resolve().await;
                let result = match local {
                    Ok(local) => {
                        let peer = match peer_node {
                            Some(node) => Addr::<VictimMsg>::on(node, peer_path),
                            None => Addr::<VictimMsg>::new(peer_path),
                        };
                        troupe_runtime::link(&local, &path, &peer)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                reply.send(result);
            }
            ControlMsg::Alive { path, reply } => {
                let alive = ractor::pg::get_scoped_local_members(&"troupe".to_string(), &path)
                    .iter()
                    .any(|c| c.get_status() == ractor::ActorStatus::Running);
                reply.send(alive);
            }
            ControlMsg::Exits { path, reply } => {
                let log = exits.lock().unwrap_or_else(|p| p.into_inner());
                reply.send(log.get(&path).cloned().unwrap_or_default());
            }
            ControlMsg::DecodeStats { reply } => {
                reply.send(troupe_runtime::decode_stats());
            }
            ControlMsg::HandshakeFailures { reply } => {
                reply.send(troupe_runtime::Node::current().map_or(0, |n| n.handshake_failures()));
            }
        }
        Ok(())
    }
}

/// How long tests wait for a call to a helper node.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
