//! The decisions of a supervisor, apart from any actor or clock.
//!
//! [`Core`] holds the children in start order with their state, and the restart window. It
//! takes events (a child exited, a start finished, a retry is due, an operator asked for
//! something) and answers with a [`Decision`]. The supervisor actor carries decisions out
//! (stops, starts, its own exit) and reports back. Time is an input: `now` is the time since
//! the supervisor started, so the tests drive it by hand.
//!
//! The rules are OTP's `supervisor.erl`:
//! * a permanent child is always restarted, a transient one only after an abnormal exit
//!   (not `normal`, not `shutdown`), a temporary one never, and its spec is then forgotten;
//! * every restart is counted; more than `intensity` restarts within `period` make the
//!   supervisor stop all children and then itself, with reason `shutdown`;
//! * a start that fails during a restart leaves the child `Restarting` and is tried again
//!   later (each try counts as a restart), so the supervisor stays responsive meanwhile;
//! * a significant child that stops without being restarted may stop the supervisor
//!   (`auto_shutdown`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::{AutoShutdown, ChildSpec, ChildType, Restart, SpecError, Strategy, SupFlags};
use crate::monitor::DownReason;

/// One started incarnation of a child, numbered by the supervisor.
pub(crate) type Instance = u64;

/// Where a child is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// It runs.
    Running,
    /// Its restart failed and will be tried again.
    Restarting,
    /// Its spec is kept but nothing runs (it was terminated, ignored its start, or exited
    /// and was not restarted).
    Stopped,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) spec: ChildSpec,
    pub(crate) instance: Option<Instance>,
    pub(crate) state: ChildState,
    pub(crate) restarts: u32,
    pub(crate) last_exit: Option<String>,
}

/// What the supervisor must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing.
    Nothing,
    /// Stop these children (already in the order to stop them), then start these in order.
    Restart {
        stop: Vec<String>,
        start: Vec<String>,
    },
    /// The start of this child failed during a restart: try again later.
    TryAgain { id: String },
    /// Stop every child in reverse start order, then stop the supervisor with this reason.
    Shutdown { reason: String },
}

/// The result of starting a child, as the core sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Started {
    Running(Instance),
    Ignored,
    Failed(String),
}

/// Counts of children, as OTP's `count_children`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildCounts {
    /// Child specs held (for a dynamic supervisor: children).
    pub specs: usize,
    /// Children that run now.
    pub active: usize,
    /// Specs of supervisors.
    pub supervisors: usize,
    /// Specs of workers.
    pub workers: usize,
}

/// Why an operation on a child was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    /// A child with this id runs already.
    #[error("child {id} is already started")]
    AlreadyStarted {
        /// The child.
        id: String,
    },
    /// A spec with this id is held, though nothing runs.
    #[error("a child spec {id} is already present")]
    AlreadyPresent {
        /// The child.
        id: String,
    },
    /// The child runs, so it cannot be restarted or deleted.
    #[error("child {id} is running")]
    Running {
        /// The child.
        id: String,
    },
    /// The child is being restarted.
    #[error("child {id} is restarting")]
    Restarting {
        /// The child.
        id: String,
    },
    /// No such child.
    #[error("no child {id}")]
    NotFound {
        /// The child.
        id: String,
    },
    /// The operation does not apply to a dynamic (`simple_one_for_one`) supervisor.
    #[error("not supported by a simple_one_for_one supervisor")]
    SimpleOneForOne,
    /// The operation needs a dynamic (`simple_one_for_one`) supervisor.
    #[error("only a simple_one_for_one supervisor starts children from its template")]
    NotSimpleOneForOne,
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The child's start failed.
    #[error("child {id} failed to start: {reason}")]
    StartFailed {
        /// The child.
        id: String,
        /// Why.
        reason: String,
    },
    /// The supervisor is gone.
    #[error("the supervisor is not running")]
    SupervisorGone,
}

/// The restart window: the times of recent restarts.
#[derive(Debug, Clone)]
pub(crate) struct RestartWindow {
    intensity: u32,
    period: Duration,
    restarts: VecDeque<Duration>,
}

impl RestartWindow {
    pub(crate) fn new(intensity: u32, period: Duration) -> Self {
        RestartWindow {
            intensity,
            period,
            restarts: VecDeque::new(),
        }
    }

    /// Counts a restart at `now`; false when that makes more than `intensity` within
    /// `period`. Like OTP, a restart exactly `period` ago still counts.
    pub(crate) fn add(&mut self, now: Duration) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_sub(oldest) > self.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.intensity as usize
    }
}

/// The state and decisions of one supervisor.
///
/// Children are kept in start order under an ever-growing sequence number, with indexes by
/// id and by running instance, so that every operation on one child is O(log n) however
/// many children a (dynamic) supervisor holds.
#[derive(Debug, Clone)]
pub(crate) struct Core {
    flags: SupFlags,
    /// The template of a dynamic supervisor.
    template: Option<ChildSpec>,
    children: BTreeMap<u64, Entry>,
    by_id: HashMap<String, u64>,
    by_instance: HashMap<Instance, u64>,
    next_seq: u64,
    window: RestartWindow,
    next_instance: Instance,
    next_dynamic: u64,
}

/// The text a supervisor stops with when it gives up.
pub(crate) fn intensity_reason(id: &str) -> String {
    format!("shutdown: reached maximum restart intensity (last failure: child {id})")
}

fn shutdown_exit(reason: &DownReason) -> bool {
    matches!(reason, DownReason::Normal | DownReason::Shutdown)
}

impl Core {
    /// A core for these flags and specs (static children are added as they start).
    pub(crate) fn new(flags: SupFlags, specs: &[ChildSpec]) -> Result<Core, SpecError> {
        flags.validate(specs)?;
        let template = (flags.strategy == Strategy::SimpleOneForOne).then(|| specs[0].clone());
        Ok(Core {
            window: RestartWindow::new(flags.intensity, flags.period),
            flags,
            template,
            children: BTreeMap::new(),
            by_id: HashMap::new(),
            by_instance: HashMap::new(),
            next_seq: 0,
            next_instance: 1,
            next_dynamic: 1,
        })
    }

    pub(crate) fn flags(&self) -> &SupFlags {
        &self.flags
    }

    pub(crate) fn is_dynamic(&self) -> bool {
        self.template.is_some()
    }

    /// The children in start order.
    pub(crate) fn children(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.children.values()
    }

    /// How many children are held.
    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    pub(crate) fn entry(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).and_then(|seq| self.children.get(seq))
    }

    fn seq_of(&self, id: &str) -> Option<u64> {
        self.by_id.get(id).copied()
    }

    /// Marks the child at `seq` as not running, keeping the indexes in step.
    fn clear(&mut self, seq: u64, state: ChildState) {
        if let Some(entry) = self.children.get_mut(&seq) {
            if let Some(i) = entry.instance.take() {
                self.by_instance.remove(&i);
            }
            entry.state = state;
        }
    }

    fn set_running(&mut self, seq: u64, instance: Instance) {
        if let Some(entry) = self.children.get_mut(&seq) {
            if let Some(old) = entry.instance.replace(instance) {
                self.by_instance.remove(&old);
            }
            entry.state = ChildState::Running;
            self.by_instance.insert(instance, seq);
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.children.remove(&seq)?;
        self.by_id.remove(&entry.spec.id);
        if let Some(i) = entry.instance {
            self.by_instance.remove(&i);
        }
        Some(entry)
    }

    /// Whether a child that is not running is forgotten rather than kept.
    fn forgotten_when_stopped(&self, spec: &ChildSpec) -> bool {
        spec.restart == Restart::Temporary || self.is_dynamic()
    }

    /// A fresh instance number for a start about to happen.
    pub(crate) fn next_instance(&mut self) -> Instance {
        let n = self.next_instance;
        self.next_instance += 1;
        n
    }

    /// The spec of the next dynamic child, with its generated id.
    pub(crate) fn dynamic_spec(
        &mut self,
        args: super::spec::Args,
    ) -> Result<ChildSpec, ChildError> {
        let template = self
            .template
            .as_ref()
            .ok_or(ChildError::NotSimpleOneForOne)?;
        let mut spec = template.clone();
        spec.id = format!("{}-{}", template.id, self.next_dynamic);
        spec.start.args = args;
        self.next_dynamic += 1;
        Ok(spec)
    }

    /// Checks that a static child may be added.
    pub(crate) fn check_new(&self, spec: &ChildSpec) -> Result<(), ChildError> {
        if self.is_dynamic() {
            return Err(ChildError::SimpleOneForOne);
        }
        spec.validate()?;
        self.flags.validate_child(spec)?;
        match self.entry(&spec.id) {
            Some(e) if e.state == ChildState::Running => Err(ChildError::AlreadyStarted {
                id: spec.id.clone(),
            }),
            Some(_) => Err(ChildError::AlreadyPresent {
                id: spec.id.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records the first start of a new child (at supervisor start or by `start_child`).
    /// A failed start keeps nothing; an ignored one keeps the spec unless it is temporary
    /// or dynamic.
    pub(crate) fn add(&mut self, spec: ChildSpec, outcome: &Started) {
        let instance = match outcome {
            Started::Running(i) => Some(*i),
            Started::Ignored if !self.forgotten_when_stopped(&spec) => None,
            Started::Ignored | Started::Failed(_) => return,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(spec.id.clone(), seq);
        self.children.insert(
            seq,
            Entry {
                spec,
                instance: None,
                state: ChildState::Stopped,
                restarts: 0,
                last_exit: None,
            },
        );
        if let Some(i) = instance {
            self.set_running(seq, i);
        }
    }

    /// The child that runs as `instance`.
    pub(crate) fn id_of(&self, instance: Instance) -> Option<&str> {
        self.by_instance
            .get(&instance)
            .and_then(|seq| self.children.get(seq))
            .map(|e| e.spec.id.as_str())
    }

    /// A child stopped on its own (or failed, or was killed by someone else).
    pub(crate) fn child_exited(
        &mut self,
        instance: Instance,
        reason: &DownReason,
        detail: &str,
        now: Duration,
    ) -> Decision {
        let Some(&seq) = self.by_instance.get(&instance) else {
            return Decision::Nothing;
        };
        self.clear(seq, ChildState::Stopped);
        let entry = self.children.get_mut(&seq).expect("indexed child exists");
        entry.last_exit = Some(detail.to_string());
        let restart = match entry.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !shutdown_exit(reason),
            Restart::Temporary => false,
        };
        if !restart {
            let spec = entry.spec.clone();
            if self.forgotten_when_stopped(&spec) {
                self.remove(seq);
            }
            return self.significant_gone(&spec);
        }
        self.restart(seq, now)
    }

    /// Counts a restart of the child at `seq` and plans it by the strategy.
    fn restart(&mut self, seq: u64, now: Duration) -> Decision {
        let id = self.children[&seq].spec.id.clone();
        if !self.window.add(now) {
            self.remove(seq);
            return Decision::Shutdown {
                reason: intensity_reason(&id),
            };
        }
        if let Some(entry) = self.children.get_mut(&seq) {
            entry.restarts += 1;
        }
        let running_from = |from: std::ops::Bound<u64>| -> Vec<String> {
            self.children
                .range((from, std::ops::Bound::Unbounded))
                .rev()
                .filter(|(_, e)| e.state == ChildState::Running)
                .map(|(_, e)| e.spec.id.clone())
                .collect()
        };
        match self.flags.strategy {
            Strategy::OneForOne | Strategy::SimpleOneForOne => Decision::Restart {
                stop: vec![],
                start: vec![id],
            },
            Strategy::OneForAll => Decision::Restart {
                stop: running_from(std::ops::Bound::Unbounded),
                start: self.children.values().map(|e| e.spec.id.clone()).collect(),
            },
            Strategy::RestForOne => Decision::Restart {
                stop: running_from(std::ops::Bound::Excluded(seq)),
                start: self
                    .children
                    .range(seq..)
                    .map(|(_, e)| e.spec.id.clone())
                    .collect(),
            },
        }
    }

    /// The supervisor stopped this child (for a restart plan or on request).
    pub(crate) fn stopped_by_supervisor(&mut self, id: &str) {
        let Some(seq) = self.seq_of(id) else { return };
        self.clear(seq, ChildState::Stopped);
        if self.forgotten_when_stopped(&self.children[&seq].spec) {
            self.remove(seq);
        }
    }

    /// The spec to start for `id` in a restart plan, if the child is still held.
    pub(crate) fn restart_spec(&self, id: &str) -> Option<ChildSpec> {
        self.entry(id).map(|e| e.spec.clone())
    }

    /// A start within a restart plan finished.
    pub(crate) fn restarted(&mut self, id: &str, outcome: &Started) -> Decision {
        let Some(seq) = self.seq_of(id) else {
            return Decision::Nothing;
        };
        match outcome {
            Started::Running(i) => {
                self.set_running(seq, *i);
                Decision::Nothing
            }
            Started::Ignored => {
                self.clear(seq, ChildState::Stopped);
                if self.forgotten_when_stopped(&self.children[&seq].spec) {
                    self.remove(seq);
                }
                Decision::Nothing
            }
            Started::Failed(reason) => {
                self.clear(seq, ChildState::Restarting);
                if let Some(entry) = self.children.get_mut(&seq) {
                    entry.last_exit = Some(format!("failed to restart: {reason}"));
                }
                Decision::TryAgain { id: id.to_string() }
            }
        }
    }

    /// A retry of a failed restart is due.
    pub(crate) fn try_again(&mut self, id: &str, now: Duration) -> Decision {
        match self.seq_of(id) {
            Some(seq) if self.children[&seq].state == ChildState::Restarting => {
                self.restart(seq, now)
            }
            _ => Decision::Nothing,
        }
    }

    /// Whether a significant child going away stops the supervisor.
    fn significant_gone(&self, spec: &ChildSpec) -> Decision {
        if !spec.significant {
            return Decision::Nothing;
        }
        let stop = match self.flags.auto_shutdown {
            AutoShutdown::Never => false,
            AutoShutdown::AnySignificant => true,
            AutoShutdown::AllSignificant => !self
                .children
                .values()
                .any(|e| e.spec.significant && e.state != ChildState::Stopped),
        };
        if stop {
            Decision::Shutdown {
                reason: format!(
                    "shutdown: auto_shutdown after significant child {}",
                    spec.id
                ),
            }
        } else {
            Decision::Nothing
        }
    }

    /// Checks a request to terminate a child by id; returns its running instance.
    pub(crate) fn check_terminate(&self, id: &str) -> Result<Option<Instance>, ChildError> {
        match self.entry(id) {
            None => Err(ChildError::NotFound { id: id.into() }),
            Some(e) => Ok(e.instance.filter(|_| e.state == ChildState::Running)),
        }
    }

    /// Checks a request to restart a stopped child; returns its spec.
    pub(crate) fn check_restart(&self, id: &str) -> Result<ChildSpec, ChildError> {
        if self.is_dynamic() {
            return Err(ChildError::SimpleOneForOne);
        }
        match self.entry(id) {
            None => Err(ChildError::NotFound { id: id.into() }),
            Some(e) => match e.state {
                ChildState::Running => Err(ChildError::Running { id: id.into() }),
                ChildState::Restarting => Err(ChildError::Restarting { id: id.into() }),
                ChildState::Stopped => Ok(e.spec.clone()),
            },
        }
    }

    /// A requested restart of a stopped child finished.
    pub(crate) fn explicit_restart(&mut self, id: &str, outcome: &Started) {
        if let (Some(seq), Started::Running(i)) = (self.seq_of(id), outcome) {
            self.set_running(seq, *i);
        }
    }

    /// Deletes a stopped child's spec.
    pub(crate) fn delete(&mut self, id: &str) -> Result<(), ChildError> {
        if self.is_dynamic() {
            return Err(ChildError::SimpleOneForOne);
        }
        let seq = self
            .seq_of(id)
            .ok_or_else(|| ChildError::NotFound { id: id.into() })?;
        match self.children[&seq].state {
            ChildState::Running => Err(ChildError::Running { id: id.into() }),
            ChildState::Restarting => Err(ChildError::Restarting { id: id.into() }),
            ChildState::Stopped => {
                self.remove(seq);
                Ok(())
            }
        }
    }

    /// The children to stop when the supervisor stops: the running ones, in reverse start
    /// order.
    pub(crate) fn shutdown_order(&self) -> Vec<String> {
        self.children
            .values()
            .rev()
            .filter(|e| e.state == ChildState::Running)
            .map(|e| e.spec.id.clone())
            .collect()
    }

    /// OTP's `count_children`. A dynamic supervisor holds one spec, its template.
    pub(crate) fn counts(&self) -> ChildCounts {
        let mut counts = ChildCounts::default();
        for e in self.children.values() {
            counts.specs += 1;
            if e.state == ChildState::Running {
                counts.active += 1;
            }
            match e.spec.child_type {
                ChildType::Supervisor => counts.supervisors += 1,
                ChildType::Worker => counts.workers += 1,
            }
        }
        if self.is_dynamic() {
            counts.specs = 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests;
