//! One observer per registered agent, on the master's node, at `master/observer/<agent>`.
//!
//! The agent sends it a heartbeat every [`AGENT_HEARTBEAT`]; the observer judges the gaps
//! with the same phi-accrual detector the runtime uses between nodes, so a silent agent
//! (hung, stopped, partitioned) is declared unreachable in about a second. It also monitors
//! the agent's actor, so a crashed agent or a closed connection is noticed at once. It
//! tells the master core when its judgement changes, and nothing else.

use std::time::Duration;

use tokio::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_runtime::detector::{DetectorConfig, PhiAccrual};
use troupe_runtime::{Addr, DownReason};

use crate::protocol::{AgentId, AgentMsg, MasterMsg, ObserverMsg};
use crate::protocol::{MasterOwnMsg, Own};

/// How often an agent sends its observer a heartbeat.
pub const AGENT_HEARTBEAT: Duration = Duration::from_millis(200);

/// How often the observer judges.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// An observer's path.
pub fn observer_path(agent: &AgentId) -> String {
    format!("master/observer/{agent}")
}

/// What an observer starts from.
#[derive(Debug, Clone)]
pub struct ObserverArgs {
    /// The agent.
    pub agent: AgentId,
    /// The node it lives on.
    pub node: String,
    /// The detector's settings.
    pub detector: DetectorConfig,
}

/// The observer actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observer;

/// Its state.
pub struct ObserverState {
    counter: troupe_runtime::inspector::MessageCounter,
    args: ObserverArgs,
    detector: PhiAccrual,
    reachable: bool,
    master: Addr<MasterMsg>,
    watch: Option<troupe_runtime::Ref>,
}

async fn report(state: &ObserverState, reachable: bool, reason: String) {
    let msg = MasterMsg::own(MasterOwnMsg::AgentHealth {
        agent: state.args.agent.clone(),
        reachable,
        reason,
    });
    if let Err(e) = state.master.send(msg).await {
        tracing::warn!(agent = %state.args.agent, cause = %e.error, "cannot reach the master core");
    }
}

impl Actor for Observer {
    type Msg = ObserverMsg;
    type State = ObserverState;
    type Arguments = ObserverArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ObserverMsg>,
        args: ObserverArgs,
    ) -> Result<ObserverState, ActorProcessingErr> {
        troupe_runtime::register(&observer_path(&args.agent), &myself)?;
        let mut detector = PhiAccrual::new(args.detector.clone());
        detector.heartbeat(Instant::now());
        myself.send_interval(CHECK_EVERY, || ObserverMsg::Check(Own(())));
        // A crash of the agent, or its connection closing, is known at once.
        let agent = Addr::<AgentMsg>::on(args.node.clone(), format!("agent/{}", args.agent));
        let me = myself.clone();
        let id = args.agent.clone();
        let master = Addr::<MasterMsg>::new(crate::master::MASTER_PATH);
        let watch = troupe_runtime::monitor_with(&agent, move |down| {
            if let DownReason::Lost(why) = &down.reason {
                // The watch is gone, not the agent: the observer starts again (its
                // supervisor restarts it), and watches it again.
                me.stop(Some(format!("its watch of the agent was lost: {why}")));
                return;
            }
            let reason = match down.reason {
                DownReason::NodeDown => "its node disconnected".to_string(),
                other => format!("its actor stopped: {other:?}"),
            };
            // Only the observer still watching this agent reports.
            if me.get_status() == ractor::ActorStatus::Running {
                tokio::spawn(async move {
                    let _ = master
                        .send(MasterMsg::own(MasterOwnMsg::AgentHealth {
                            agent: id,
                            reachable: false,
                            reason,
                        }))
                        .await;
                });
            }
        })
        .await;
        if let Err(e) = &watch {
            tracing::warn!(agent = %args.agent, cause = %e, "cannot monitor the agent");
        }
        Ok(ObserverState {
            counter: troupe_runtime::inspector::MessageCounter::new(&myself.get_cell()),
            args,
            detector,
            reachable: true,
            master: Addr::new(crate::master::MASTER_PATH),
            watch: watch.ok(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ObserverMsg>,
        state: &mut ObserverState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(watch) = state.watch.take() {
            troupe_runtime::demonitor(&watch);
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ObserverMsg>,
        message: ObserverMsg,
        state: &mut ObserverState,
    ) -> Result<(), ActorProcessingErr> {
        state.counter.handled();
        let now = Instant::now();
        match message {
            ObserverMsg::Heartbeat => {
                state.detector.heartbeat(now);
                if !state.reachable {
                    state.reachable = true;
                    report(state, true, "heartbeats resumed".into()).await;
                }
            }
            ObserverMsg::Check(_) => {
                if state.reachable && state.detector.is_suspected(now) {
                    state.reachable = false;
                    let silent = state
                        .detector
                        .last_heartbeat()
                        .map_or(Duration::ZERO, |t| now - t);
                    let reason = format!(
                        "no heartbeat for {} ms (phi {:.1})",
                        silent.as_millis(),
                        state.detector.phi(now)
                    );
                    report(state, false, reason).await;
                }
            }
        }
        Ok(())
    }
}
