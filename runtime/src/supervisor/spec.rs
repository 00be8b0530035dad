//! The data half of a supervision tree: flags and child specs as plain serde types, so the
//! same tree can be built in Rust or read from a file.
//!
//! The names and defaults are OTP's: a supervisor restarts at most `intensity` children
//! within `period` (1 in 5 s); a worker gets 5 s to stop, a supervisor as long as it needs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::lifecycle::{Args, Shutdown};

/// How a supervisor restarts its children when one of them fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that stopped is restarted.
    #[default]
    OneForOne,
    /// Every other child is stopped (in reverse start order) and then all are started again.
    OneForAll,
    /// The children started after the failed one are stopped (in reverse order), then the
    /// failed one and those after it are started again.
    RestForOne,
    /// A dynamic supervisor: every child is started at run time from one template spec,
    /// and each is restarted on its own.
    SimpleOneForOne,
}

/// When a supervisor stops itself because its significant children have stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoShutdown {
    /// Never; the `significant` flag of children is not allowed.
    #[default]
    Never,
    /// As soon as any significant child stops on its own and is not restarted.
    AnySignificant,
    /// Once every significant child has stopped on its own and is not restarted.
    AllSignificant,
}

/// A supervisor's flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SupFlags {
    /// The restart strategy.
    pub strategy: Strategy,
    /// The most restarts allowed within `period`; one more makes the supervisor give up.
    pub intensity: u32,
    /// The window the restarts are counted in.
    #[serde(rename = "period_ms", with = "crate::codec::millis")]
    pub period: Duration,
    /// Whether significant children stopping stops the supervisor.
    pub auto_shutdown: AutoShutdown,
}

impl Default for SupFlags {
    fn default() -> Self {
        SupFlags {
            strategy: Strategy::OneForOne,
            intensity: 1,
            period: Duration::from_secs(5),
            auto_shutdown: AutoShutdown::Never,
        }
    }
}

impl SupFlags {
    /// Default flags with the given strategy.
    pub fn new(strategy: Strategy) -> Self {
        SupFlags {
            strategy,
            ..SupFlags::default()
        }
    }

    /// Sets the restart intensity: at most `intensity` restarts within `period`.
    pub fn intensity(mut self, intensity: u32, period: Duration) -> Self {
        self.intensity = intensity;
        self.period = period;
        self
    }

    /// Sets the auto-shutdown mode.
    pub fn auto_shutdown(mut self, mode: AutoShutdown) -> Self {
        self.auto_shutdown = mode;
        self
    }
}

/// When a child is restarted after it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always.
    #[default]
    Permanent,
    /// Only when it stopped abnormally (not `normal` and not `shutdown`).
    Transient,
    /// Never; its spec is forgotten when it stops.
    Temporary,
}

/// Whether a child is a worker or a supervisor; it decides the default shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildType {
    /// An ordinary actor or process.
    #[default]
    Worker,
    /// A supervisor.
    Supervisor,
}

/// How long a worker gets to stop by default.
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(5);

/// The plain-data description of one child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSpec {
    /// Its name among its siblings.
    pub id: String,
    /// What is started: the kind's name (a spawnable kind, or a label for an in-code
    /// factory) and its arguments. Required in a spec file, as OTP requires `start`.
    pub start: StartSpec,
    /// When it is restarted.
    #[serde(default)]
    pub restart: Restart,
    /// How it is stopped; `None` takes the default of its type.
    #[serde(default)]
    pub shutdown: Option<Shutdown>,
    /// Worker or supervisor.
    #[serde(default, rename = "type")]
    pub child_type: ChildType,
    /// Whether its stopping counts towards the supervisor's auto-shutdown.
    #[serde(default)]
    pub significant: bool,
}

/// What a child spec starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSpec {
    /// The kind of actor.
    pub kind: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Args,
}

impl ChildSpec {
    /// A permanent worker spec with default shutdown.
    pub fn worker(id: impl Into<String>) -> ChildSpec {
        ChildSpec {
            id: id.into(),
            start: StartSpec::default(),
            restart: Restart::Permanent,
            shutdown: None,
            child_type: ChildType::Worker,
            significant: false,
        }
    }

    /// A permanent supervisor spec (shutdown infinity).
    pub fn supervisor(id: impl Into<String>) -> ChildSpec {
        ChildSpec {
            child_type: ChildType::Supervisor,
            ..ChildSpec::worker(id)
        }
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Marks it significant.
    pub fn significant(mut self, significant: bool) -> Self {
        self.significant = significant;
        self
    }

    /// Sets what it starts.
    pub fn start(mut self, kind: impl Into<String>, args: Args) -> Self {
        self.start = StartSpec {
            kind: kind.into(),
            args,
        };
        self
    }

    /// The shutdown in force: the explicit one, or the default of its type.
    pub fn effective_shutdown(&self) -> Shutdown {
        self.shutdown.unwrap_or(match self.child_type {
            ChildType::Worker => Shutdown::Timeout(DEFAULT_WORKER_SHUTDOWN),
            ChildType::Supervisor => Shutdown::Infinity,
        })
    }
}

/// Why a spec or a set of flags is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A child id is empty.
    #[error("a child spec has an empty id")]
    EmptyId,
    /// Two children share an id.
    #[error("two children have the id {id}")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// A permanent child cannot be significant.
    #[error("child {id} is permanent and cannot be significant")]
    SignificantPermanent {
        /// The child.
        id: String,
    },
    /// Significance means nothing without auto-shutdown; OTP refuses the combination.
    #[error("child {id} is significant but the supervisor's auto_shutdown is never")]
    SignificantWithoutAutoShutdown {
        /// The child.
        id: String,
    },
    /// A dynamic supervisor's children are alike, so none can be significant.
    #[error("a simple_one_for_one supervisor cannot auto-shutdown")]
    AutoShutdownOnDynamic,
    /// A zero period makes intensity meaningless.
    #[error("the restart period must be longer than zero")]
    ZeroPeriod,
    /// A dynamic supervisor needs exactly one template spec.
    #[error("a simple_one_for_one supervisor needs exactly one child spec, got {count}")]
    SimpleOneForOneTemplate {
        /// How many specs were given.
        count: usize,
    },
}

impl ChildSpec {
    /// Checks the spec on its own.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.id.is_empty() {
            return Err(SpecError::EmptyId);
        }
        if self.significant && self.restart == Restart::Permanent {
            return Err(SpecError::SignificantPermanent {
                id: self.id.clone(),
            });
        }
        Ok(())
    }
}

impl SupFlags {
    /// Checks the flags against the children they will govern.
    pub fn validate(&self, children: &[ChildSpec]) -> Result<(), SpecError> {
        if self.period.is_zero() {
            return Err(SpecError::ZeroPeriod);
        }
        if self.strategy == Strategy::SimpleOneForOne && children.len() != 1 {
            return Err(SpecError::SimpleOneForOneTemplate {
                count: children.len(),
            });
        }
        if self.strategy == Strategy::SimpleOneForOne && self.auto_shutdown != AutoShutdown::Never {
            return Err(SpecError::AutoShutdownOnDynamic);
        }
        let mut seen = std::collections::HashSet::new();
        for child in children {
            child.validate()?;
            self.validate_child(child)?;
            if !seen.insert(child.id.as_str()) {
                return Err(SpecError::DuplicateId {
                    id: child.id.clone(),
                });
            }
        }
        Ok(())
    }
}

impl SupFlags {
    /// Checks one child against the flags.
    pub fn validate_child(&self, child: &ChildSpec) -> Result<(), SpecError> {
        if child.significant && self.auto_shutdown == AutoShutdown::Never {
            return Err(SpecError::SignificantWithoutAutoShutdown {
                id: child.id.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_otps() {
        let flags = SupFlags::default();
        assert_eq!(flags.strategy, Strategy::OneForOne);
        assert_eq!((flags.intensity, flags.period), (1, Duration::from_secs(5)));
        assert_eq!(
            ChildSpec::worker("w").effective_shutdown(),
            Shutdown::Timeout(Duration::from_secs(5))
        );
        assert_eq!(
            ChildSpec::supervisor("s").effective_shutdown(),
            Shutdown::Infinity
        );
    }

    #[test]
    fn specs_round_trip_through_the_codec() {
        let spec = ChildSpec::worker("w")
            .restart(Restart::Transient)
            .shutdown(Shutdown::Timeout(Duration::from_millis(250)))
            .start("echo", Args::encode(&("hi", 3u8)).unwrap());
        let back: ChildSpec = crate::codec::decode(&crate::codec::encode(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        assert_eq!(
            back.start.args.decode::<(String, u8)>().unwrap(),
            ("hi".into(), 3)
        );
    }
}
