//! The status-update manager of an agent: every task's updates reach its framework, in
//! order, at least once, until acknowledged, surviving agent restarts.
//!
//! Per task, updates queue in order; only the head is in flight. It is sent, and sent again
//! with exponential backoff (10 s doubling up to 10 min, as Mesos) until the framework
//! acknowledges it by its id; then the next one goes. A stale or unknown acknowledgement is
//! ignored. When a task's terminal update is acknowledged, its stream is done and dropped.
//!
//! Pure: time is an input, and the agent checkpoints the whole state (a serde value) after
//! every change, so that a restarted agent resends whatever was not acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::protocol::Update;
use crate::protocol::{FrameworkId, TaskId, TaskStatus};

/// The first retry interval.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest retry interval.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stream {
    pending: VecDeque<Update>,
    /// When the head is due to be sent (again), and the interval that led there.
    #[serde(with = "opt_millis")]
    due: Option<Duration>,
    #[serde(with = "troupe_runtime::codec::millis")]
    backoff: Duration,
    /// Whether the head was sent already.
    #[serde(default)]
    sent: bool,
}

/// What to send now.
#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    /// The update.
    pub update: Update,
    /// Whether it was sent before (a retry).
    pub retry: bool,
}

/// Why an acknowledgement did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No stream for the task.
    #[error("no pending updates for task {task}")]
    UnknownTask {
        /// The task.
        task: TaskId,
    },
    /// It names another update than the one in flight (a stale duplicate).
    #[error("task {task}: acknowledgement of update {got}, but {expected} is in flight")]
    NotInFlight {
        /// The task.
        task: TaskId,
        /// The update in flight.
        expected: u64,
        /// The update acknowledged.
        got: u64,
    },
}

/// The manager: every task's stream of updates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdates {
    streams: BTreeMap<TaskId, Stream>,
    next_id: u64,
}

impl StatusUpdates {
    /// An empty manager.
    pub fn new() -> StatusUpdates {
        StatusUpdates::default()
    }

    /// Queues an update; it goes out at once if nothing else of its task is in flight.
    /// Returns its id.
    pub fn push(&mut self, framework: FrameworkId, status: TaskStatus, now: Duration) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let stream = self
            .streams
            .entry(status.task.clone())
            .or_insert_with(|| Stream {
                pending: VecDeque::new(),
                due: None,
                backoff: INITIAL_BACKOFF,
                sent: false,
            });
        stream.pending.push_back(Update {
            id,
            framework,
            status,
        });
        if stream.pending.len() == 1 {
            stream.due = Some(now);
            stream.backoff = INITIAL_BACKOFF;
        }
        id
    }

    /// What is due at `now`: heads never sent, and heads whose retry time came. Each is
    /// scheduled for its next retry.
    pub fn due(&mut self, now: Duration) -> Vec<Send> {
        let mut out = Vec::new();
        for stream in self.streams.values_mut() {
            let (Some(head), Some(due)) = (stream.pending.front(), stream.due) else {
                continue;
            };
            if now < due {
                continue;
            }
            out.push(Send {
                update: head.clone(),
                retry: stream.sent,
            });
            stream.sent = true;
            stream.due = Some(now + stream.backoff);
            stream.backoff = (stream.backoff * 2).min(MAX_BACKOFF);
        }
        out
    }

    /// The framework acknowledged update `id` of `task`: the next one of that task is due
    /// now. A terminal update acknowledged ends the stream.
    pub fn ack(&mut self, task: &TaskId, id: u64, now: Duration) -> Result<(), AckError> {
        let stream = self
            .streams
            .get_mut(task)
            .ok_or_else(|| AckError::UnknownTask { task: task.clone() })?;
        let expected = stream.pending.front().map_or(0, |u| u.id);
        if expected != id {
            return Err(AckError::NotInFlight {
                task: task.clone(),
                expected,
                got: id,
            });
        }
        let done = stream.pending.pop_front();
        if stream.pending.is_empty() {
            if done.is_some_and(|u| u.status.state.is_terminal()) {
                self.streams.remove(task);
            } else {
                stream.due = None;
            }
        } else {
            stream.due = Some(now);
            stream.backoff = INITIAL_BACKOFF;
            stream.sent = false;
        }
        Ok(())
    }

    /// Updates not yet acknowledged, per task.
    pub fn pending(&self, task: &TaskId) -> usize {
        self.streams.get(task).map_or(0, |s| s.pending.len())
    }

    /// The heads of `framework`'s streams are due at once (it subscribed again, or was
    /// removed and the master acknowledges for it): no waiting out a long backoff.
    pub fn hurry(&mut self, framework: &FrameworkId, now: Duration) {
        for stream in self.streams.values_mut() {
            if stream
                .pending
                .front()
                .is_some_and(|u| &u.framework == framework)
            {
                stream.due = Some(now);
                stream.backoff = INITIAL_BACKOFF;
            }
        }
    }

    /// After a restart from a checkpoint: every head is due at once.
    pub fn resume(&mut self, now: Duration) {
        for stream in self.streams.values_mut() {
            if !stream.pending.is_empty() {
                stream.due = Some(now);
                stream.backoff = INITIAL_BACKOFF;
            }
        }
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Source, TaskState};

    fn status(task: &str, state: TaskState) -> TaskStatus {
        TaskStatus::new(task.into(), state, Source::Agent, 0)
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn ids(sends: &[Send]) -> Vec<u64> {
        sends.iter().map(|s| s.update.id).collect()
    }

    #[test]
    fn one_in_flight_per_task_in_order() {
        let mut m = StatusUpdates::new();
        let a = m.push("f".into(), status("t1", TaskState::Starting), s(0));
        let b = m.push("f".into(), status("t1", TaskState::Running), s(0));
        assert_eq!(ids(&m.due(s(0))), [a]);
        assert!(m.due(s(1)).is_empty(), "b waits for a's acknowledgement");
        m.ack(&"t1".into(), a, s(2)).unwrap();
        assert_eq!(ids(&m.due(s(2))), [b]);
    }

    #[test]
    fn unacknowledged_updates_are_retried_with_backoff() {
        let mut m = StatusUpdates::new();
        let a = m.push("f".into(), status("t1", TaskState::Running), s(0));
        let mut sent_at = vec![];
        for t in 0..2000 {
            let due = m.due(s(t));
            if !due.is_empty() {
                assert_eq!(ids(&due), [a]);
                assert_eq!(due[0].retry, !sent_at.is_empty());
                sent_at.push(t);
            }
        }
        // 0, then 10, 20, 40, 80, 160, 320 s later, then every 600 s.
        assert_eq!(&sent_at[..8], &[0, 10, 30, 70, 150, 310, 630, 1230]);
        assert_eq!(sent_at[8], 1830);
    }

    #[test]
    fn stale_and_unknown_acknowledgements_change_nothing() {
        let mut m = StatusUpdates::new();
        let a = m.push("f".into(), status("t1", TaskState::Running), s(0));
        m.due(s(0));
        assert!(matches!(
            m.ack(&"t1".into(), a + 7, s(1)),
            Err(AckError::NotInFlight { .. })
        ));
        assert!(matches!(
            m.ack(&"t9".into(), a, s(1)),
            Err(AckError::UnknownTask { .. })
        ));
        assert_eq!(m.pending(&"t1".into()), 1);
    }

    #[test]
    fn an_acknowledged_terminal_update_ends_the_stream() {
        let mut m = StatusUpdates::new();
        let a = m.push("f".into(), status("t1", TaskState::Running), s(0));
        let b = m.push("f".into(), status("t1", TaskState::Finished), s(0));
        m.due(s(0));
        m.ack(&"t1".into(), a, s(1)).unwrap();
        m.due(s(1));
        m.ack(&"t1".into(), b, s(2)).unwrap();
        assert_eq!(m.pending(&"t1".into()), 0);
        assert!(matches!(
            m.ack(&"t1".into(), b, s(3)),
            Err(AckError::UnknownTask { .. })
        ));
    }

    #[test]
    fn a_restarted_agent_resends_what_was_not_acknowledged() {
        let mut m = StatusUpdates::new();
        let a = m.push("f".into(), status("t1", TaskState::Running), s(0));
        m.push("f".into(), status("t2", TaskState::Failed), s(0));
        m.due(s(0));
        let checkpoint = serde_json::to_string(&m).unwrap();
        let mut restored: StatusUpdates = serde_json::from_str(&checkpoint).unwrap();
        assert_eq!(restored, m);
        restored.resume(s(100));
        let again = restored.due(s(100));
        assert_eq!(again.len(), 2);
        assert!(ids(&again).contains(&a));
    }
}
