//! The process service's book: the spawns waiting for a place, the processes launched and
//! running, who monitors each, and how each ended. It decides; the service acts (answers,
//! launches, tells monitors), which keeps this part testable alone.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::protocol::{AgentId, OfferInfo, TaskId, TaskInfo, TaskState, TaskStatus};

/// Where a process may run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// On any agent with room.
    #[default]
    Any,
    /// On this agent only.
    Agent(AgentId),
    /// On an agent whose attributes (and `host`, its host name) meet every constraint.
    Constraints(Vec<Constraint>),
}

/// One placement constraint: an agent attribute (or `host`) compared with a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// The attribute (`rack`), or `host`.
    pub key: String,
    /// Equal (`=`) or not (`!=`).
    pub equal: bool,
    /// The value.
    pub value: String,
}

impl Constraint {
    /// Reads `KEY = VALUE` or `KEY != VALUE` (spaces optional).
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let (key, equal, value) = if let Some((k, v)) = text.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = text.split_once('=') {
            (k, true, v)
        } else {
            return Err(format!(
                "{text:?} is not a constraint: write KEY = VALUE or KEY != VALUE"
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(format!("{text:?} needs a key and a value"));
        }
        Ok(Constraint {
            key: key.to_string(),
            equal,
            value: value.to_string(),
        })
    }

    /// Whether an agent of this host and these attributes meets it.
    pub fn holds(&self, hostname: &str, attributes: &BTreeMap<String, String>) -> bool {
        let actual = if self.key == "host" {
            Some(hostname)
        } else {
            attributes.get(&self.key).map(String::as_str)
        };
        (actual == Some(self.value.as_str())) == self.equal
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = if self.equal { "=" } else { "!=" };
        write!(f, "{} {op} {}", self.key, self.value)
    }
}

impl Placement {
    /// Whether an offer's agent is a place for it.
    pub fn allows(&self, offer: &OfferInfo) -> bool {
        self.allows_agent(&offer.agent, &offer.hostname, &offer.attributes)
    }

    /// Whether an agent (its id, host and attributes) is a place for it.
    pub fn allows_agent(
        &self,
        agent: &AgentId,
        hostname: &str,
        attributes: &BTreeMap<String, String>,
    ) -> bool {
        match self {
            Placement::Any => true,
            Placement::Agent(id) => agent == id,
            Placement::Constraints(all) => all.iter().all(|c| c.holds(hostname, attributes)),
        }
    }
}

/// Where a process is in its life, as the book knows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    /// Waiting for an offer it fits in, until the deadline (ms since the Unix epoch).
    Waiting { deadline_ms: u64 },
    /// Launched on an agent, not yet running.
    Launched { agent: AgentId },
    /// Running there.
    Running { agent: AgentId, pid: Option<i32> },
    /// Ended: its last status.
    Ended { status: Box<TaskStatus> },
}

/// One process of the book; `R` answers its spawn, `W` reaches a monitor.
#[derive(Debug)]
pub(crate) struct Proc<R, W> {
    pub(crate) task: TaskInfo,
    pub(crate) placement: Placement,
    pub(crate) phase: Phase,
    /// Whom to answer once it runs (or could not be placed or started).
    pub(crate) reply: Option<R>,
    /// Who hears of its end, once each.
    pub(crate) monitors: Vec<W>,
    /// When it was spawned (ms since the Unix epoch).
    pub(crate) spawned_ms: u64,
}

/// What a status means for the service to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Heard<R, W> {
    /// It runs: answer the spawn.
    Running(Option<R>, AgentId),
    /// It ended: answer the spawn if it never ran, and tell the monitors.
    Ended(Option<R>, Vec<W>),
    /// Nothing to do.
    Nothing,
}

/// The book.
#[derive(Debug)]
pub(crate) struct Book<R, W> {
    procs: BTreeMap<TaskId, Proc<R, W>>,
    /// The waiting ones, in spawn order.
    queue: VecDeque<TaskId>,
    /// Ended processes kept for `get` and `list`, oldest first, at most [`ENDED_KEPT`].
    ended: VecDeque<TaskId>,
}

/// How many ended processes the book keeps.
pub(crate) const ENDED_KEPT: usize = 1_000;

impl<R, W> Default for Book<R, W> {
    fn default() -> Self {
        Book {
            procs: BTreeMap::new(),
            queue: VecDeque::new(),
            ended: VecDeque::new(),
        }
    }
}

impl<R, W> Book<R, W> {
    /// A spawn, waiting for a place until `deadline_ms`.
    pub(crate) fn spawn(
        &mut self,
        task: TaskInfo,
        placement: Placement,
        now_ms: u64,
        deadline_ms: u64,
        reply: R,
    ) {
        self.queue.push_back(task.id.clone());
        self.procs.insert(
            task.id.clone(),
            Proc {
                task,
                placement,
                phase: Phase::Waiting { deadline_ms },
                reply: Some(reply),
                monitors: Vec::new(),
                spawned_ms: now_ms,
            },
        );
    }

    /// Whether any spawn waits.
    pub(crate) fn waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Takes, in spawn order, the waiting processes the offer's agent is a place for and
    /// that fit together in it.
    pub(crate) fn fill(&mut self, offer: &OfferInfo) -> Vec<TaskInfo> {
        let mut left = offer.resources;
        let mut launch = Vec::new();
        let mut keep = VecDeque::new();
        while let Some(id) = self.queue.pop_front() {
            let Some(p) = self.procs.get_mut(&id) else {
                continue;
            };
            if p.placement.allows(offer) && left.contains(&p.task.resources) {
                left = left.minus(p.task.resources);
                p.phase = Phase::Launched {
                    agent: offer.agent.clone(),
                };
                launch.push(p.task.clone());
            } else {
                keep.push_back(id);
            }
        }
        self.queue = keep;
        launch
    }

    /// The waiting spawns past their deadline, taken out: their replies and their tasks.
    pub(crate) fn overdue(&mut self, now_ms: u64) -> Vec<(R, TaskInfo, Placement)> {
        let mut out = Vec::new();
        let mut keep = VecDeque::new();
        while let Some(id) = self.queue.pop_front() {
            let late = self.procs.get(&id).is_some_and(
                |p| matches!(p.phase, Phase::Waiting { deadline_ms } if deadline_ms <= now_ms),
            );
            if late {
                if let Some(mut p) = self.procs.remove(&id) {
                    if let Some(reply) = p.reply.take() {
                        out.push((reply, p.task, p.placement));
                    }
                }
            } else {
                keep.push_back(id);
            }
        }
        self.queue = keep;
        out
    }

    /// Books a status of one of its processes.
    pub(crate) fn heard(&mut self, status: &TaskStatus) -> Heard<R, W> {
        let Some(p) = self.procs.get_mut(&status.task) else {
            return Heard::Nothing;
        };
        if matches!(p.phase, Phase::Ended { .. }) {
            return Heard::Nothing;
        }
        if status.state == TaskState::Running {
            let agent = match (&p.phase, &status.agent) {
                (_, Some(agent)) => agent.clone(),
                (Phase::Launched { agent } | Phase::Running { agent, .. }, None) => agent.clone(),
                _ => return Heard::Nothing,
            };
            let pid = status.pid.or(match &p.phase {
                Phase::Running { pid, .. } => *pid,
                _ => None,
            });
            p.phase = Phase::Running {
                agent: agent.clone(),
                pid,
            };
            return Heard::Running(p.reply.take(), agent);
        }
        if !status.state.is_terminal() {
            return Heard::Nothing;
        }
        p.phase = Phase::Ended {
            status: Box::new(status.clone()),
        };
        let (reply, monitors) = (p.reply.take(), std::mem::take(&mut p.monitors));
        self.queue.retain(|id| id != &status.task);
        self.ended.push_back(status.task.clone());
        while self.ended.len() > ENDED_KEPT {
            if let Some(old) = self.ended.pop_front() {
                self.procs.remove(&old);
            }
        }
        Heard::Ended(reply, monitors)
    }

    /// Adds a monitor of `id`: `Ok(None)` once placed, `Ok(Some(end))` when it ended already
    /// (the monitor fires at once), `Err` when the book does not know it.
    pub(crate) fn monitor(&mut self, id: &TaskId, watcher: W) -> Result<Option<TaskStatus>, W> {
        match self.procs.get_mut(id) {
            None => Err(watcher),
            Some(p) => match &p.phase {
                Phase::Ended { status } => Ok(Some((**status).clone())),
                _ => {
                    p.monitors.push(watcher);
                    Ok(None)
                }
            },
        }
    }

    /// One process.
    pub(crate) fn get(&self, id: &TaskId) -> Option<&Proc<R, W>> {
        self.procs.get(id)
    }

    /// Every process it keeps, in id order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Proc<R, W>> {
        self.procs.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Resources, Source};

    fn task(id: &str, cpus: f64) -> TaskInfo {
        TaskInfo {
            id: TaskId(id.into()),
            name: id.into(),
            command: troupe_os::ProcessSpec::new(["true"]),
            resources: Resources::new(cpus, 64.0),
        }
    }

    fn offer(agent: &str, rack: &str, cpus: f64) -> OfferInfo {
        OfferInfo {
            id: crate::protocol::OfferId(format!("o-{agent}")),
            agent: AgentId(agent.into()),
            hostname: format!("{agent}.host"),
            attributes: [("rack".to_string(), rack.to_string())].into(),
            resources: Resources::new(cpus, 1024.0),
            reservation: None,
        }
    }

    fn status(id: &str, state: TaskState, agent: &str) -> TaskStatus {
        let mut s = TaskStatus::new(TaskId(id.into()), state, Source::Agent, 0);
        s.agent = Some(AgentId(agent.into()));
        s
    }

    #[test]
    fn constraints_read_and_place_by_attribute_and_host() {
        let c = Constraint::parse("rack = r1").unwrap();
        assert!(c.equal && c.key == "rack" && c.value == "r1");
        let not_host = Constraint::parse("host!=a1.host").unwrap();
        assert!(!not_host.equal);
        assert!(Constraint::parse("rack").is_err());
        assert!(Constraint::parse(" = r1").is_err());
        let r1 = Placement::Constraints(vec![c.clone()]);
        assert!(r1.allows(&offer("a1", "r1", 1.0)));
        assert!(!r1.allows(&offer("a2", "r2", 1.0)));
        let elsewhere = Placement::Constraints(vec![not_host]);
        assert!(!elsewhere.allows(&offer("a1", "r1", 1.0)));
        assert!(elsewhere.allows(&offer("a2", "r1", 1.0)));
        assert!(Placement::Agent(AgentId("a2".into())).allows(&offer("a2", "r2", 1.0)));
    }

    #[test]
    fn a_spawn_waits_for_a_place_it_fits_and_is_answered_when_it_runs() {
        let mut book: Book<&str, &str> = Book::default();
        let rack = Placement::Constraints(vec![Constraint::parse("rack = r2").unwrap()]);
        book.spawn(task("p1", 1.0), rack, 0, 10_000, "reply");
        assert!(book.fill(&offer("a1", "r1", 4.0)).is_empty(), "not r2");
        assert!(book.fill(&offer("a2", "r2", 0.5)).is_empty(), "too small");
        assert_eq!(book.fill(&offer("a2", "r2", 2.0)).len(), 1);
        assert!(!book.waiting());
        assert_eq!(
            book.heard(&status("p1", TaskState::Running, "a2")),
            Heard::Running(Some("reply"), AgentId("a2".into()))
        );
        assert_eq!(book.monitor(&TaskId("p1".into()), "w"), Ok(None));
        assert_eq!(
            book.heard(&status("p1", TaskState::Failed, "a2")),
            Heard::Ended(None, vec!["w"])
        );
        // Its end is kept: a late monitor fires at once.
        assert!(matches!(
            book.monitor(&TaskId("p1".into()), "late"),
            Ok(Some(_))
        ));
        assert_eq!(book.monitor(&TaskId("nope".into()), "w"), Err("w"));
    }

    #[test]
    fn a_spawn_with_no_place_by_its_deadline_is_answered_and_forgotten() {
        let mut book: Book<&str, &str> = Book::default();
        book.spawn(task("p1", 1.0), Placement::Any, 0, 100, "r1");
        book.spawn(task("p2", 1.0), Placement::Any, 0, 500, "r2");
        let late = book.overdue(200);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].0, "r1");
        assert!(book.get(&TaskId("p1".into())).is_none());
        assert!(book.waiting());
    }

    #[test]
    fn a_process_that_ends_before_it_ran_answers_its_spawn() {
        let mut book: Book<&str, &str> = Book::default();
        book.spawn(task("p1", 1.0), Placement::Any, 0, 10_000, "reply");
        book.fill(&offer("a1", "r1", 1.0));
        assert_eq!(
            book.heard(&status("p1", TaskState::Failed, "a1")),
            Heard::Ended(Some("reply"), vec![])
        );
    }
}
