//! Launch validation, as the master does it before anything reaches an agent: every task of
//! a launch is judged on its own, so a bad one never harms another.
//!
//! * the offer is not (or no longer) outstanding → `Dropped` (nothing wrong with the task;
//!   it can be launched again on a fresh offer);
//! * the id is already in use by the framework, or twice in the launch → `Error`;
//! * the id cannot name a sandbox directory and a cgroup (empty, `.` or `..`, a `/` or a
//!   control character in it, over 200 bytes, or troupe's reserved `.troupe-` prefix) →
//!   `Error`;
//! * the command is invalid (no program, unknown stop signal, bad limits) → `Error`;
//! * the resources are invalid (negative, none at all) → `Error`;
//! * the task does not fit in what is left of the offer after the tasks before it →
//!   `Error`.

use std::collections::HashSet;

use crate::protocol::{Resources, TaskId, TaskInfo, TaskState};

/// The verdict on one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// It may be launched.
    Launch(TaskId),
    /// It ends at once, in this state, for this reason.
    Refused {
        /// The task.
        task: TaskId,
        /// `Error` or `Dropped`.
        state: TaskState,
        /// Why, for the framework and the operator.
        reason: String,
    },
}

/// Judges the tasks of one launch against the offer's resources (`None`: the offer is not
/// outstanding) and the task ids already in use (`known` says whether one is; it is asked,
/// not copied, since the master knows many tasks). Verdicts come in task order.
pub fn validate_launch(
    offer: Option<Resources>,
    tasks: &[TaskInfo],
    known: impl Fn(&TaskId) -> bool,
) -> Vec<Verdict> {
    let mut left = offer.unwrap_or(Resources::ZERO);
    let mut seen = HashSet::new();
    tasks
        .iter()
        .map(|task| {
            let refuse = |state, reason: String| Verdict::Refused {
                task: task.id.clone(),
                state,
                reason,
            };
            if offer.is_none() {
                return refuse(
                    TaskState::Dropped,
                    "the offer is unknown or no longer valid".into(),
                );
            }
            if known(&task.id) || !seen.insert(task.id.clone()) {
                return refuse(
                    TaskState::Error,
                    format!("task id {} is already in use", task.id),
                );
            }
            if task.id.0.is_empty() {
                return refuse(TaskState::Error, "the task id is empty".into());
            }
            if let Err(e) = troupe_os::warm::check_task_name(&task.id.0) {
                return refuse(TaskState::Error, format!("invalid task id: {e}"));
            }
            if let Err(e) = task.command.validate() {
                return refuse(TaskState::Error, format!("invalid command: {e}"));
            }
            if !task.resources.is_valid() || task.resources.is_empty() {
                return refuse(
                    TaskState::Error,
                    format!("invalid resources ({})", task.resources),
                );
            }
            if !left.contains(&task.resources) {
                return refuse(
                    TaskState::Error,
                    format!(
                        "its resources ({}) exceed what is left of the offer ({left})",
                        task.resources
                    ),
                );
            }
            left = left.minus(task.resources);
            Verdict::Launch(task.id.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_os::ProcessSpec;

    fn task(id: &str, cpus: f64, argv: &[&str]) -> TaskInfo {
        TaskInfo {
            id: id.into(),
            name: String::new(),
            command: ProcessSpec::new(argv.iter().copied()),
            resources: Resources::new(cpus, 128.0),
        }
    }

    fn states(verdicts: &[Verdict]) -> Vec<Option<TaskState>> {
        verdicts
            .iter()
            .map(|v| match v {
                Verdict::Launch(_) => None,
                Verdict::Refused { state, .. } => Some(*state),
            })
            .collect()
    }

    #[test]
    fn each_bad_task_is_refused_alone() {
        let offer = Some(Resources::new(4.0, 1024.0));
        let known: HashSet<TaskId> = ["old".into()].into_iter().collect();
        let tasks = [
            task("ok1", 1.0, &["true"]),
            task("old", 1.0, &["true"]),
            task("nocmd", 1.0, &[]),
            task("ok1", 1.0, &["true"]),
            task("huge", 8.0, &["true"]),
            task("neg", -1.0, &["true"]),
            task("ok2", 3.0, &["true"]),
            task("late", 0.5, &["true"]),
        ];
        let verdicts = validate_launch(offer, &tasks, |id| known.contains(id));
        use TaskState::Error;
        assert_eq!(
            states(&verdicts),
            [
                None,
                Some(Error),
                Some(Error),
                Some(Error),
                Some(Error),
                Some(Error),
                None,
                Some(Error)
            ]
        );
        let Verdict::Refused { reason, .. } = &verdicts[7] else {
            panic!()
        };
        assert!(reason.contains("exceed what is left"), "{reason}");
    }

    #[test]
    fn an_id_that_cannot_name_a_directory_is_refused() {
        let offer = Some(Resources::new(4.0, 1024.0));
        for id in ["..", "../../etc", "a/b", ".troupe-warm-1-2", "tab\there"] {
            let verdicts = validate_launch(offer, &[task(id, 1.0, &["true"])], |_| false);
            let Verdict::Refused { state, reason, .. } = &verdicts[0] else {
                panic!("{id} launched")
            };
            assert_eq!(*state, TaskState::Error);
            assert!(reason.contains("invalid task id"), "{id}: {reason}");
        }
        let fine = validate_launch(offer, &[task("web.1-a_b", 1.0, &["true"])], |_| false);
        assert!(matches!(fine[0], Verdict::Launch(_)));
    }

    #[test]
    fn an_unknown_offer_drops_every_task() {
        let verdicts = validate_launch(None, &[task("a", 1.0, &["true"])], |_| false);
        assert_eq!(states(&verdicts), [Some(TaskState::Dropped)]);
    }
}
