//! The allocator actor: the pure [`Engine`] behind a mailbox. It carries out the master's
//! changes (agents, frameworks, resources coming back), runs an allocation cycle every
//! interval and soon after any change that may free resources, and sends the resulting
//! offers to the master core.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use troupe_runtime::Addr;

use crate::allocator::{Engine, NotOffered};
use crate::protocol::{AgentId, FrameworkId, MasterMsg, Resources};

/// The allocator's path on the master's node.
pub const ALLOCATOR_PATH: &str = "master/allocator";

/// What the allocator accepts (from the master core, on the same node).
#[derive(Debug)]
pub enum AllocatorMsg {
    /// Forget everything (the core restarted and rebuilds its state).
    Reset,
    /// An agent joins (or joins again) with these resources, of which `reserved` are
    /// statically reserved per role.
    AddAgent {
        /// The agent.
        agent: AgentId,
        /// All it has.
        total: Resources,
        /// Static reservations: role and resources.
        reserved: Vec<(String, Resources)>,
    },
    /// An agent leaves (or is unreachable); its resources are no longer offered.
    RemoveAgent {
        /// The agent.
        agent: AgentId,
    },
    /// A framework joins in a role.
    AddFramework {
        /// The framework.
        framework: FrameworkId,
        /// Its role.
        role: String,
    },
    /// A framework leaves for good.
    RemoveFramework {
        /// The framework.
        framework: FrameworkId,
    },
    /// A framework connects again (`true`) or disconnects (`false`).
    SetActive {
        /// The framework.
        framework: FrameworkId,
        /// Whether it is active.
        active: bool,
    },
    /// A framework suppresses (`true`) or revives (`false`) offers.
    SetSuppressed {
        /// The framework.
        framework: FrameworkId,
        /// Whether it is suppressed.
        suppressed: bool,
    },
    /// Resources a framework held come back (an offer declined or rescinded, a task
    /// ended), filtered from it on that agent for `refuse` when given.
    Recover {
        /// The framework.
        framework: FrameworkId,
        /// The agent.
        agent: AgentId,
        /// What.
        resources: Resources,
        /// The pool they came from.
        reservation: Option<String>,
        /// The decline filter.
        refuse: Option<Duration>,
    },
    /// Resources in use that the allocator did not hand out (tasks found running when an
    /// agent registers again).
    TrackUsed {
        /// The framework.
        framework: FrameworkId,
        /// The agent.
        agent: AgentId,
        /// What.
        resources: Resources,
        /// The pool they are from.
        reservation: Option<String>,
    },
    /// Run a cycle now.
    Allocate,
    /// How long the latest allocation cycles took (the engine's decisions only), oldest
    /// first, up to the last 10,000.
    Cycles {
        /// The durations.
        reply: RpcReplyPort<Vec<Duration>>,
    },
    /// Totals since the allocator started, for metrics.
    Stats {
        /// The totals.
        reply: RpcReplyPort<AllocatorStats>,
    },
    /// A framework's share and why it gets nothing, if it does not.
    Explain {
        /// The framework.
        framework: FrameworkId,
        /// Share and reasons.
        reply: RpcReplyPort<(f64, Vec<NotOffered>)>,
    },
}

impl ractor::Message for AllocatorMsg {}

/// The allocator's totals since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AllocatorStats {
    /// Allocation cycles run.
    pub cycles: u64,
    /// Their decision time in all, in seconds.
    pub seconds: f64,
    /// The median and the 99th percentile of the latest cycles' decision time, in seconds.
    pub recent_p50: f64,
    /// See `recent_p50`.
    pub recent_p99: f64,
}

/// The allocator actor.
#[derive(Debug, Clone, Copy)]
pub struct Allocator {
    /// The time between periodic cycles.
    pub interval: Duration,
}

/// Its state.
pub struct AllocatorState {
    engine: Engine,
    start: Instant,
    master: Addr<MasterMsg>,
    /// A cycle is already queued.
    queued: bool,
    /// How long the latest cycles took.
    cycles: std::collections::VecDeque<Duration>,
    /// Cycles since the start, and their time in all.
    cycles_total: u64,
    cycle_time_total: Duration,
    counter: troupe_runtime::inspector::MessageCounter,
}

/// How many cycle durations are kept.
const CYCLES_KEPT: usize = 10_000;

impl Allocator {
    fn now(state: &AllocatorState) -> Duration {
        state.start.elapsed()
    }
}

impl Actor for Allocator {
    type Msg = AllocatorMsg;
    type State = AllocatorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<AllocatorMsg>,
        _: (),
    ) -> Result<AllocatorState, ActorProcessingErr> {
        troupe_runtime::register(ALLOCATOR_PATH, &myself)?;
        let mut engine = Engine::new();
        engine.set_allocation_interval(self.interval);
        myself.send_interval(self.interval, || AllocatorMsg::Allocate);
        Ok(AllocatorState {
            engine,
            start: Instant::now(),
            master: Addr::new(crate::master::MASTER_PATH),
            queued: false,
            cycles: std::collections::VecDeque::new(),
            cycles_total: 0,
            cycle_time_total: Duration::ZERO,
            counter: troupe_runtime::inspector::MessageCounter::new(&myself.get_cell()),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AllocatorMsg>,
        message: AllocatorMsg,
        state: &mut AllocatorState,
    ) -> Result<(), ActorProcessingErr> {
        state.counter.handled();
        let now = Allocator::now(state);
        let engine = &mut state.engine;
        // Whether the change may let a cycle offer something new.
        let mut changed = true;
        match message {
            AllocatorMsg::Reset => {
                *engine = Engine::new();
                engine.set_allocation_interval(self.interval);
            }
            AllocatorMsg::AddAgent {
                agent,
                total,
                reserved,
            } => {
                engine.remove_agent(&agent);
                engine.add_agent(agent.clone(), total);
                for (role, resources) in reserved {
                    engine.reserve(&agent, &role, resources);
                }
            }
            AllocatorMsg::RemoveAgent { agent } => {
                engine.remove_agent(&agent);
                changed = false;
            }
            AllocatorMsg::AddFramework { framework, role } => {
                engine.add_framework(framework, &role);
            }
            AllocatorMsg::RemoveFramework { framework } => engine.remove_framework(&framework),
            AllocatorMsg::SetActive { framework, active } => {
                if active {
                    engine.activate(&framework);
                } else {
                    engine.deactivate(&framework);
                    changed = false;
                }
            }
            AllocatorMsg::SetSuppressed {
                framework,
                suppressed,
            } => {
                if suppressed {
                    engine.suppress(&framework);
                    changed = false;
                } else {
                    engine.revive(&framework);
                }
            }
            AllocatorMsg::Recover {
                framework,
                agent,
                resources,
                reservation,
                refuse,
            } => match refuse {
                Some(refuse) => engine.decline(
                    &crate::allocator::Offer {
                        framework,
                        agent,
                        resources,
                        reservation,
                    },
                    refuse,
                    now,
                ),
                None => engine.recover(&framework, &agent, resources, reservation.as_deref()),
            },
            AllocatorMsg::TrackUsed {
                framework,
                agent,
                resources,
                reservation,
            } => {
                engine.track_used(&framework, &agent, resources, reservation.as_deref());
                changed = false;
            }
            AllocatorMsg::Allocate => {
                state.queued = false;
                changed = false;
                let started = Instant::now();
                let offers = engine.allocate(now);
                let took = started.elapsed();
                if state.cycles.len() == CYCLES_KEPT {
                    state.cycles.pop_front();
                }
                state.cycles.push_back(took);
                state.cycles_total += 1;
                state.cycle_time_total += took;
                if !offers.is_empty() {
                    let offers = offers
                        .into_iter()
                        .map(|o| (o.framework, o.agent, o.resources, o.reservation))
                        .collect();
                    if let Err(e) = state
                        .master
                        .send(MasterMsg::own(crate::protocol::MasterOwnMsg::Offers {
                            offers,
                        }))
                        .await
                    {
                        // The core is restarting; it resets this allocator when it is back.
                        tracing::warn!(cause = %e.error, "cannot hand offers to the master core");
                    }
                }
            }
            AllocatorMsg::Cycles { reply } => {
                changed = false;
                let _ = reply.send(state.cycles.iter().copied().collect());
            }
            AllocatorMsg::Stats { reply } => {
                changed = false;
                let mut recent: Vec<Duration> = state.cycles.iter().copied().collect();
                recent.sort();
                let at = |q: f64| {
                    recent
                        .get(((recent.len() as f64 - 1.0) * q).round() as usize)
                        .map_or(0.0, Duration::as_secs_f64)
                };
                let _ = reply.send(AllocatorStats {
                    cycles: state.cycles_total,
                    seconds: state.cycle_time_total.as_secs_f64(),
                    recent_p50: at(0.5),
                    recent_p99: at(0.99),
                });
            }
            AllocatorMsg::Explain { framework, reply } => {
                changed = false;
                let _ = reply.send((engine.share(&framework), engine.explain(&framework, now)));
            }
        }
        if changed && !state.queued {
            state.queued = true;
            let _ = myself.cast(AllocatorMsg::Allocate);
        }
        Ok(())
    }
}
