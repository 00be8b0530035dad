//! The runner's book: the commands waiting for resources, in order, the launched ones until
//! they end, who watches each, and how often each was launched. It decides; the runner's
//! scheduler and desk act (send, launch, decline), which keeps this part testable alone.

use std::collections::{BTreeMap, VecDeque};

use crate::protocol::{AgentView, Resources, TaskId, TaskInfo, TaskState, TaskStatus};

/// How many times a task is launched at most: a launch that never reached its agent
/// (`Dropped`) is launched again, under the same id, until this many tries.
pub const MAX_LAUNCHES: u32 = 3;

/// A task of the book, waiting or launched.
#[derive(Debug, Clone)]
pub(crate) struct Entry<W> {
    pub(crate) task: TaskInfo,
    pub(crate) watcher: Option<W>,
    /// When it was submitted (ms since the Unix epoch).
    pub(crate) submitted_ms: u64,
    /// How many times it was launched so far.
    pub(crate) launches: u32,
}

/// What a status means for the task's watcher.
#[derive(Debug, PartialEq)]
pub(crate) enum Heard<W> {
    /// Pass it on (the task ended if the status is terminal; the book forgot it).
    Tell(Option<W>),
    /// It was dropped before it ran and is queued again: tell the watcher that.
    Requeued(Option<W>, u32),
    /// Not a task of this book.
    Unknown,
}

/// The book, generic over how a watcher is reached.
#[derive(Debug)]
pub(crate) struct Book<W> {
    waiting: VecDeque<Entry<W>>,
    launched: BTreeMap<TaskId, Entry<W>>,
    /// Whether the runner asked the master to stop offering.
    pub(crate) suppressed: bool,
}

impl<W> Default for Book<W> {
    fn default() -> Self {
        Book {
            waiting: VecDeque::new(),
            launched: BTreeMap::new(),
            suppressed: false,
        }
    }
}

impl<W: Clone> Book<W> {
    /// Queues tasks, after those already waiting.
    pub(crate) fn submit(&mut self, tasks: Vec<TaskInfo>, watcher: Option<W>, now_ms: u64) {
        for task in tasks {
            self.waiting.push_back(Entry {
                task,
                watcher: watcher.clone(),
                submitted_ms: now_ms,
                launches: 0,
            });
        }
        self.suppressed = false;
    }

    /// Takes, in queue order, the waiting tasks that fit together in `offer`; those that
    /// do not fit keep their place.
    pub(crate) fn fill(&mut self, offer: Resources) -> Vec<TaskInfo> {
        let mut left = offer;
        let mut launch = Vec::new();
        let mut keep = VecDeque::with_capacity(self.waiting.len());
        while let Some(mut entry) = self.waiting.pop_front() {
            if left.contains(&entry.task.resources) {
                left = left.minus(entry.task.resources);
                entry.launches += 1;
                launch.push(entry.task.clone());
                self.launched.insert(entry.task.id.clone(), entry);
            } else {
                keep.push_back(entry);
            }
        }
        self.waiting = keep;
        launch
    }

    /// Whether nothing waits.
    pub(crate) fn nothing_waits(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Books a launched task's status. A task dropped before it ran goes back to the head
    /// of the queue (it waited already) while it has launches left.
    pub(crate) fn heard(&mut self, status: &TaskStatus) -> Heard<W> {
        let Some(entry) = self.launched.get(&status.task) else {
            return Heard::Unknown;
        };
        if status.state == TaskState::Dropped && entry.launches < MAX_LAUNCHES {
            let Some(entry) = self.launched.remove(&status.task) else {
                return Heard::Unknown;
            };
            let (watcher, launches) = (entry.watcher.clone(), entry.launches);
            self.waiting.push_front(entry);
            self.suppressed = false;
            return Heard::Requeued(watcher, launches + 1);
        }
        let watcher = entry.watcher.clone();
        if status.state.is_terminal() {
            self.launched.remove(&status.task);
        }
        Heard::Tell(watcher)
    }

    /// Takes these tasks out of the queue, if they still wait: the ones taken, with their
    /// watchers. Launched ones are not the book's to stop (the master kills them).
    pub(crate) fn cancel(&mut self, ids: &[TaskId]) -> Vec<Entry<W>> {
        self.cancel_where(|e| ids.contains(&e.task.id))
    }

    /// Takes out of the queue every waiting task that `cancel` selects.
    pub(crate) fn cancel_where(&mut self, cancel: impl Fn(&Entry<W>) -> bool) -> Vec<Entry<W>> {
        let (gone, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|e| cancel(e));
        self.waiting = keep;
        gone.into()
    }

    /// The waiting tasks, in queue order.
    pub(crate) fn waiting(&self) -> impl Iterator<Item = &Entry<W>> {
        self.waiting.iter()
    }
}

/// A quantity for people: at most three decimals, no trailing zeros (`1.5`, `2`, `0.333`).
fn amount(x: f64) -> String {
    let text = format!("{x:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".into()
    } else {
        text.into()
    }
}

/// Why a task that needs `needs` still waits, in words a user knows: what it waits for and
/// the most any reachable agent has free of it ("waiting for 2 cpus; the largest free is
/// 1.5 on a1").
pub(crate) fn why_waiting(needs: &Resources, agents: &[AgentView]) -> String {
    let free: Vec<(&str, Resources)> = agents
        .iter()
        .filter(|a| a.reachable)
        .map(|a| (a.info.id.0.as_str(), a.info.resources.minus(a.allocated)))
        .collect();
    if free.is_empty() {
        return "waiting for an agent: none is registered and reachable".into();
    }
    if let Some((agent, _)) = free.iter().find(|(_, f)| f.contains(needs)) {
        return format!("waiting for an offer ({agent} has room)");
    }
    let most = |of: fn(&Resources) -> f64| {
        free.iter()
            .max_by(|a, b| of(&a.1).total_cmp(&of(&b.1)))
            .map(|(agent, f)| (*agent, of(f)))
            .unwrap_or(("", 0.0))
    };
    let (cpus_at, cpus) = most(|r| r.cpus);
    let (mem_at, mem) = most(|r| r.mem_mib);
    let (disk_at, disk) = most(|r| r.disk_mib);
    if cpus < needs.cpus {
        format!(
            "waiting for {} cpus; the largest free is {} on {cpus_at}",
            amount(needs.cpus),
            amount(cpus)
        )
    } else if mem < needs.mem_mib {
        format!(
            "waiting for {} MiB of memory; the largest free is {} MiB on {mem_at}",
            amount(needs.mem_mib),
            amount(mem)
        )
    } else if disk < needs.disk_mib {
        format!(
            "waiting for {} MiB of disk; the largest free is {} MiB on {disk_at}",
            amount(needs.disk_mib),
            amount(disk)
        )
    } else {
        format!("waiting for {needs} on one agent; no agent has all of it free")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Source;

    fn task(id: &str, cpus: f64) -> TaskInfo {
        TaskInfo {
            id: TaskId(id.into()),
            name: id.into(),
            command: troupe_os::ProcessSpec::new(["true"]),
            resources: Resources::new(cpus, 64.0),
        }
    }

    fn status(id: &str, state: TaskState) -> TaskStatus {
        TaskStatus::new(TaskId(id.into()), state, Source::Master, 0)
    }

    fn ids(tasks: &[TaskInfo]) -> Vec<&str> {
        tasks.iter().map(|t| t.id.0.as_str()).collect()
    }

    #[test]
    fn an_offer_takes_what_fits_in_queue_order_and_the_rest_keeps_its_place() {
        let mut book: Book<&str> = Book::default();
        book.submit(
            vec![task("a", 2.0), task("b", 0.5), task("c", 1.0)],
            None,
            0,
        );
        assert_eq!(ids(&book.fill(Resources::new(1.5, 1024.0))), ["b", "c"]);
        let left: Vec<_> = book.waiting().map(|e| e.task.id.0.as_str()).collect();
        assert_eq!(left, ["a"]);
    }

    #[test]
    fn a_dropped_launch_is_queued_again_first_until_its_launches_run_out() {
        let mut book = Book::default();
        book.submit(vec![task("a", 1.0)], Some("w"), 0);
        book.submit(vec![task("b", 1.0)], None, 0);
        for attempt in 2..=MAX_LAUNCHES {
            assert_eq!(ids(&book.fill(Resources::new(1.0, 64.0))), ["a"]);
            assert_eq!(
                book.heard(&status("a", TaskState::Dropped)),
                Heard::Requeued(Some("w"), attempt)
            );
            assert_eq!(
                book.waiting().next().map(|e| e.task.id.0.as_str()),
                Some("a")
            );
        }
        assert_eq!(ids(&book.fill(Resources::new(1.0, 64.0))), ["a"]);
        // Out of launches: the drop is its end.
        assert_eq!(
            book.heard(&status("a", TaskState::Dropped)),
            Heard::Tell(Some("w"))
        );
        assert_eq!(book.heard(&status("a", TaskState::Running)), Heard::Unknown);
    }

    #[test]
    fn other_ends_are_told_and_forgotten() {
        let mut book = Book::default();
        book.submit(vec![task("a", 1.0)], Some("w"), 0);
        book.fill(Resources::new(1.0, 64.0));
        assert_eq!(
            book.heard(&status("a", TaskState::Running)),
            Heard::Tell(Some("w"))
        );
        assert_eq!(
            book.heard(&status("a", TaskState::Failed)),
            Heard::Tell(Some("w"))
        );
        assert_eq!(book.heard(&status("a", TaskState::Failed)), Heard::Unknown);
    }

    fn agent(id: &str, total: Resources, allocated: Resources) -> AgentView {
        AgentView {
            info: crate::protocol::AgentInfo {
                id: crate::protocol::AgentId(id.into()),
                hostname: "h".into(),
                node: id.into(),
                addr: "127.0.0.1:1".into(),
                resources: total,
                attributes: Default::default(),
                work_dir: String::new(),
                ports: Default::default(),
                life: 1,
            },
            reachable: true,
            allocated,
        }
    }

    #[test]
    fn why_waiting_names_what_is_missing_and_the_most_there_is() {
        let agents = [
            agent("a1", Resources::new(2.0, 1024.0), Resources::new(0.5, 0.0)),
            agent(
                "a2",
                Resources::new(4.0, 1024.0),
                Resources::new(3.0, 512.0),
            ),
        ];
        assert_eq!(
            why_waiting(&Resources::new(2.0, 64.0), &agents),
            "waiting for 2 cpus; the largest free is 1.5 on a1"
        );
        assert_eq!(
            why_waiting(&Resources::new(0.5, 2048.0), &agents),
            "waiting for 2048 MiB of memory; the largest free is 1024 MiB on a1"
        );
        assert_eq!(
            why_waiting(&Resources::new(1.0, 64.0), &agents),
            "waiting for an offer (a1 has room)"
        );
        // Each amount is free somewhere, not both on one agent.
        let split = [
            agent("a1", Resources::new(2.0, 64.0), Resources::ZERO),
            agent("a2", Resources::new(0.5, 1024.0), Resources::ZERO),
        ];
        assert!(why_waiting(&Resources::new(1.0, 512.0), &split).contains("on one agent"));
        let mut away = agents[0].clone();
        away.reachable = false;
        assert!(why_waiting(&Resources::new(1.0, 64.0), &[away]).contains("no"));
        assert_eq!(amount(0.3 - 0.1), "0.2");
    }

    #[test]
    fn cancel_takes_only_what_still_waits() {
        let mut book = Book::default();
        book.submit(vec![task("a", 1.0), task("b", 4.0)], Some("w1"), 0);
        book.submit(vec![task("c", 4.0)], Some("w2"), 0);
        book.fill(Resources::new(1.0, 64.0));
        let gone = book.cancel(&[TaskId("a".into()), TaskId("b".into())]);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].task.id.0, "b");
        let gone = book.cancel_where(|e| e.watcher == Some("w2"));
        assert_eq!(gone[0].task.id.0, "c");
        assert!(book.nothing_waits());
    }
}
