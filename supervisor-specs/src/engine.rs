//! The supervisor of a spec, across agents: a pure decision engine. It holds the spec's tree
//! (supervisors, and processes as leaves) and what each leaf is doing, hears of starts and
//! ends, and decides by OTP's rules what to start and stop next. It does no I/O: the spec
//! service carries out its operations one at a time, in order, through the process service,
//! and tells it what happened. Tested alone (`tests` below) by feeding events and asserting
//! the operations it asks for.
//!
//! The rules are OTP's, read across agents:
//! - a leaf that ends on its own is started again by its restart type (`permanent` always,
//!   `transient` after an abnormal end, `temporary` never), by its supervisor's strategy:
//!   `one_for_one` starts it alone; `one_for_all` stops every other child (in reverse
//!   order) and starts all again in order; `rest_for_one` does so for it and those after it;
//! - each restart counts toward its supervisor's intensity within the period; one more and
//!   the supervisor gives up: its children are stopped in reverse order, and its own parent
//!   hears of it as of a child's abnormal end (the spec's top gives up the spec, and says
//!   why);
//! - a leaf whose agent is lost ends abnormally (the process service ends it after the
//!   process's `move_after`, and fences the copy left there); it is started again elsewhere
//!   and this counts toward intensity;
//! - a significant child that ends and is not restarted stops its supervisor when
//!   `auto_shutdown` says so; that supervisor's end is a normal one to its parent;
//! - children start in order, each once the one before it runs, and stop in reverse order.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_actors::protocol::{AgentId, TaskId};
use troupe_runtime::supervisor::{AutoShutdown, Restart, Strategy};

use crate::format::{Child, ProcessChild, Spec};

/// What the engine asks the service to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Start the leaf at this path (spawn its process), and tell [`Tree::started`] or
    /// [`Tree::start_failed`].
    Start(String),
    /// Stop the leaf's process (its shutdown), and tell [`Tree::ended`] when it has ended.
    Stop(String),
}

/// What a leaf is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeafState {
    /// Not started yet (or waiting to be started again).
    Waiting,
    /// Its spawn is under way.
    Starting,
    /// Its process runs.
    Running,
    /// Being stopped by its supervisor.
    Stopping,
    /// Stopped by its supervisor (and not to be started again now).
    Stopped,
    /// Ended on its own, and not started again (its restart type says so).
    Ended,
}

impl std::fmt::Display for LeafState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeafState::Waiting => "waiting",
            LeafState::Starting => "starting",
            LeafState::Running => "running",
            LeafState::Stopping => "stopping",
            LeafState::Stopped => "stopped",
            LeafState::Ended => "ended",
        })
    }
}

/// A leaf: one process child (one replica).
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Its path in the tree: its supervisors' ids and its own, joined by `/`.
    pub path: String,
    /// What it runs (with `replicas`, one copy: `replicas` is 1 and `id` is `ID-N`).
    pub def: ProcessChild,
    /// The replica group it belongs to (the child's path before expansion), if any.
    pub group: Option<String>,
    /// What it does.
    pub state: LeafState,
    /// Its current process, once started.
    pub process: Option<TaskId>,
    /// Its current agent, once started.
    pub agent: Option<AgentId>,
    /// How many times it was started again.
    pub restarts: u32,
    /// Why it last ended (or failed to start), for people.
    pub last_end: Option<String>,
    /// The agent a start prefers (its own, after a crash).
    pub prefer: Option<AgentId>,
    /// The agent a start avoids (the lost one).
    pub avoid: Option<AgentId>,
}

/// A supervisor of the tree.
#[derive(Debug, Clone)]
struct Sup {
    path: String,
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    auto_shutdown: AutoShutdown,
    restart: Restart,
    significant: bool,
    children: Vec<Node>,
    /// When it restarted children (ms), within the period.
    restarts: VecDeque<u64>,
    /// Whether it is stopped (gave up, or shut down by its significant children).
    down: bool,
}

#[derive(Debug, Clone)]
enum Node {
    Sup(Sup),
    Leaf(Box<Leaf>),
}

/// The whole tree of one spec and the operations it waits to have done.
#[derive(Debug, Clone)]
pub struct Tree {
    root: Sup,
    ops: VecDeque<Op>,
    /// Why the spec gave up (its top supervisor past its intensity), if it did.
    pub failed: Option<String>,
    /// Whether the spec ended (its top shut down by significant children).
    pub finished: bool,
}

/// Joins a parent's path and a child's id.
fn join(parent: &str, id: &str) -> String {
    if parent.is_empty() {
        id.to_string()
    } else {
        format!("{parent}/{id}")
    }
}

/// The tree of a child list, leaves expanded from replicas.
fn nodes(parent: &str, children: &[Child]) -> Vec<Node> {
    let mut out = Vec::new();
    for child in children {
        match child {
            Child::Supervisor(s) => {
                let path = join(parent, &s.id);
                out.push(Node::Sup(Sup {
                    children: nodes(&path, &s.children),
                    path,
                    strategy: s.strategy,
                    intensity: s.intensity,
                    period: s.period,
                    auto_shutdown: s.auto_shutdown,
                    restart: s.restart,
                    significant: s.significant,
                    restarts: VecDeque::new(),
                    down: false,
                }));
            }
            Child::Process(p) if p.replicas > 1 => {
                let group = join(parent, &p.id);
                for n in 0..p.replicas {
                    let mut def = p.clone();
                    def.id = format!("{}-{n}", p.id);
                    def.replicas = 1;
                    out.push(Node::Leaf(Box::new(Leaf::new(
                        join(parent, &def.id),
                        def,
                        Some(group.clone()),
                    ))));
                }
            }
            Child::Process(p) => {
                out.push(Node::Leaf(Box::new(Leaf::new(
                    join(parent, &p.id),
                    p.clone(),
                    None,
                ))));
            }
        }
    }
    out
}

impl Leaf {
    fn new(path: String, def: ProcessChild, group: Option<String>) -> Leaf {
        Leaf {
            path,
            def,
            group,
            state: LeafState::Waiting,
            process: None,
            agent: None,
            restarts: 0,
            last_end: None,
            prefer: None,
            avoid: None,
        }
    }

    fn live(&self) -> bool {
        matches!(
            self.state,
            LeafState::Starting | LeafState::Running | LeafState::Stopping
        )
    }
}

impl Node {
    fn leaves<'a>(&'a self, out: &mut Vec<&'a Leaf>) {
        match self {
            Node::Leaf(l) => out.push(l),
            Node::Sup(s) => s.children.iter().for_each(|c| c.leaves(out)),
        }
    }

    fn leaves_mut<'a>(&'a mut self, out: &mut Vec<&'a mut Leaf>) {
        match self {
            Node::Leaf(l) => out.push(l),
            Node::Sup(s) => s.children.iter_mut().for_each(|c| c.leaves_mut(out)),
        }
    }

    fn path(&self) -> &str {
        match self {
            Node::Leaf(l) => &l.path,
            Node::Sup(s) => &s.path,
        }
    }

    fn restart(&self) -> Restart {
        match self {
            Node::Leaf(l) => l.def.restart,
            Node::Sup(s) => s.restart,
        }
    }

    fn significant(&self) -> bool {
        match self {
            Node::Leaf(l) => l.def.significant,
            Node::Sup(s) => s.significant,
        }
    }

    /// Whether it ended on its own and stays ended.
    fn ended(&self) -> bool {
        match self {
            Node::Leaf(l) => l.state == LeafState::Ended,
            Node::Sup(s) => s.down,
        }
    }

    /// Whether it was ever started (a temporary child is not started twice).
    fn ever_started(&self) -> bool {
        let mut leaves = Vec::new();
        self.leaves(&mut leaves);
        leaves
            .iter()
            .any(|l| l.process.is_some() || l.last_end.is_some())
    }
}

impl Sup {
    /// Restarts allowed now? Records this one if so.
    fn may_restart(&mut self, now_ms: u64) -> bool {
        let period = self.period.as_millis() as u64;
        while self
            .restarts
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) > period)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() as u32 >= self.intensity {
            return false;
        }
        self.restarts.push_back(now_ms);
        true
    }
}

/// How a child's end reaches its supervisor.
struct End {
    abnormal: bool,
    why: String,
}

impl Tree {
    /// The tree of a spec, nothing started: [`Tree::start`] asks for every leaf in order.
    pub fn new(spec: &Spec) -> Tree {
        Tree {
            root: Sup {
                path: String::new(),
                strategy: spec.strategy,
                intensity: spec.intensity,
                period: spec.period,
                auto_shutdown: spec.auto_shutdown,
                restart: Restart::Permanent,
                significant: false,
                children: nodes("", &spec.children),
                restarts: VecDeque::new(),
                down: false,
            },
            ops: VecDeque::new(),
            failed: None,
            finished: false,
        }
    }

    /// Asks for every leaf not running to start, in order.
    pub fn start(&mut self) {
        let mut leaves = Vec::new();
        for child in &mut self.root.children {
            child.leaves_mut(&mut leaves);
        }
        for leaf in leaves {
            if leaf.state == LeafState::Waiting {
                self.ops.push_back(Op::Start(leaf.path.clone()));
            }
        }
    }

    /// Asks for every leaf to stop, in reverse order (the spec is deleted).
    pub fn stop_all(&mut self) {
        self.ops.clear();
        let mut leaves = Vec::new();
        for child in &mut self.root.children {
            child.leaves_mut(&mut leaves);
        }
        for leaf in leaves.into_iter().rev() {
            if leaf.live() {
                self.ops.push_back(Op::Stop(leaf.path.clone()));
            }
            if leaf.state == LeafState::Waiting {
                leaf.state = LeafState::Stopped;
            }
        }
        self.root.down = true;
    }

    /// The next operation, taken off the queue. A start of a leaf that meanwhile runs, or a
    /// stop of one that runs nowhere, is skipped.
    pub fn next_op(&mut self) -> Option<Op> {
        while let Some(op) = self.ops.pop_front() {
            match &op {
                Op::Start(path) => {
                    let Some(leaf) = self.leaf_mut(path) else {
                        continue;
                    };
                    if matches!(leaf.state, LeafState::Waiting | LeafState::Stopped) {
                        leaf.state = LeafState::Starting;
                        return Some(op);
                    }
                }
                Op::Stop(path) => {
                    let Some(leaf) = self.leaf_mut(path) else {
                        continue;
                    };
                    match leaf.state {
                        LeafState::Running | LeafState::Starting if leaf.process.is_some() => {
                            leaf.state = LeafState::Stopping;
                            return Some(op);
                        }
                        // Nothing runs to stop.
                        LeafState::Waiting | LeafState::Starting | LeafState::Running => {
                            leaf.state = LeafState::Stopped
                        }
                        _ => {}
                    }
                }
            }
        }
        None
    }

    /// Whether operations wait.
    pub fn busy(&self) -> bool {
        !self.ops.is_empty()
    }

    /// A leaf, by path.
    pub fn leaf(&self, path: &str) -> Option<&Leaf> {
        self.leaves().into_iter().find(|l| l.path == path)
    }

    fn leaf_mut(&mut self, path: &str) -> Option<&mut Leaf> {
        let mut leaves = Vec::new();
        for child in &mut self.root.children {
            child.leaves_mut(&mut leaves);
        }
        leaves.into_iter().find(|l| l.path == path)
    }

    /// Every leaf, in start order.
    pub fn leaves(&self) -> Vec<&Leaf> {
        let mut out = Vec::new();
        for child in &self.root.children {
            child.leaves(&mut out);
        }
        out
    }

    /// The agents the other live replicas of the leaf's group run on (a start prefers
    /// others: replicas spread over agents).
    pub fn siblings_agents(&self, path: &str) -> Vec<AgentId> {
        let leaves = self.leaves();
        let Some(group) = leaves
            .iter()
            .find(|l| l.path == path)
            .and_then(|l| l.group.clone())
        else {
            return Vec::new();
        };
        leaves
            .iter()
            .filter(|l| l.path != path && l.group.as_ref() == Some(&group) && l.live())
            .filter_map(|l| l.agent.clone())
            .collect()
    }

    /// The leaf's process runs.
    pub fn started(&mut self, path: &str, process: TaskId, agent: AgentId) {
        if let Some(leaf) = self.leaf_mut(path) {
            leaf.process = Some(process);
            leaf.agent = Some(agent);
            // Stopped meanwhile (a stop came while it started): its stop op follows.
            if leaf.state == LeafState::Starting {
                leaf.state = LeafState::Running;
            }
        }
    }

    /// The leaf's process, started by an earlier life of the service, was found running
    /// and taken in: it runs, and is not started again.
    pub fn adopted(&mut self, path: &str, process: TaskId, agent: AgentId) {
        if let Some(leaf) = self.leaf_mut(path)
            && leaf.state == LeafState::Waiting
        {
            leaf.process = Some(process);
            leaf.agent = Some(agent);
            leaf.state = LeafState::Running;
        }
    }

    /// The leaf's process could not be started: an abnormal end, as if it crashed.
    pub fn start_failed(&mut self, path: &str, why: String, now_ms: u64) {
        let Some(leaf) = self.leaf_mut(path) else {
            return;
        };
        if leaf.state == LeafState::Stopping {
            leaf.state = LeafState::Stopped;
            return;
        }
        leaf.state = LeafState::Ended;
        leaf.process = None;
        let why = format!("could not start: {why}");
        leaf.last_end = Some(why.clone());
        let path = path.to_string();
        self.child_ended(
            &path,
            End {
                abnormal: true,
                why,
            },
            now_ms,
        );
    }

    /// A process of the tree ended: `abnormal` unless it exited 0, `lost` when its agent was
    /// lost. Ends of processes the tree no longer holds are ignored.
    pub fn ended(
        &mut self,
        process: &TaskId,
        abnormal: bool,
        lost: bool,
        why: String,
        now_ms: u64,
    ) {
        let mut leaves = Vec::new();
        for child in &mut self.root.children {
            child.leaves_mut(&mut leaves);
        }
        let Some(leaf) = leaves
            .into_iter()
            .find(|l| l.process.as_ref() == Some(process))
        else {
            return;
        };
        leaf.last_end = Some(why.clone());
        let agent = leaf.agent.take();
        leaf.process = None;
        match leaf.state {
            LeafState::Stopping => {
                leaf.state = LeafState::Stopped;
            }
            LeafState::Running | LeafState::Starting => {
                leaf.state = LeafState::Ended;
                // A crash prefers its own agent again; a loss keeps off it.
                if lost {
                    leaf.prefer = None;
                    leaf.avoid = agent;
                } else {
                    leaf.prefer = agent;
                    leaf.avoid = None;
                }
                let path = leaf.path.clone();
                self.child_ended(&path, End { abnormal, why }, now_ms);
            }
            _ => {}
        }
    }

    /// The supervisor holding `path` directly, and the child's index there.
    fn parent_of<'a>(sup: &'a mut Sup, path: &str) -> Option<(&'a mut Sup, usize)> {
        if let Some(i) = sup.children.iter().position(|c| c.path() == path) {
            return Some((sup, i));
        }
        for child in &mut sup.children {
            if let Node::Sup(s) = child
                && path.starts_with(&format!("{}/", s.path))
            {
                return Self::parent_of(s, path);
            }
        }
        None
    }

    /// A child (leaf or supervisor) at `path` ended on its own: its supervisor decides.
    fn child_ended(&mut self, path: &str, end: End, now_ms: u64) {
        let mut stops = Vec::new();
        let mut starts = Vec::new();
        let mut escalate: Option<(String, End)> = None;
        {
            let Some((sup, i)) = Self::parent_of(&mut self.root, path) else {
                return;
            };
            let child = &sup.children[i];
            let wanted = match child.restart() {
                Restart::Permanent => true,
                Restart::Transient => end.abnormal,
                Restart::Temporary => false,
            };
            if !wanted {
                let stop_sup = child.significant()
                    && match sup.auto_shutdown {
                        AutoShutdown::Never => false,
                        AutoShutdown::AnySignificant => true,
                        AutoShutdown::AllSignificant => sup
                            .children
                            .iter()
                            .filter(|c| c.significant())
                            .all(Node::ended),
                    };
                if stop_sup {
                    Self::take_down(sup, &mut stops);
                    escalate = Some((
                        sup.path.clone(),
                        End {
                            abnormal: false,
                            why: format!("its significant child {path} ended: {}", end.why),
                        },
                    ));
                }
            } else if !sup.may_restart(now_ms) {
                Self::take_down(sup, &mut stops);
                let name = if sup.path.is_empty() {
                    "the spec's top supervisor".to_string()
                } else {
                    format!("supervisor {}", sup.path)
                };
                escalate = Some((
                    sup.path.clone(),
                    End {
                        abnormal: true,
                        why: format!(
                            "{name} gave up after {} restarts within {}: the last failure: {path}: {}",
                            sup.intensity,
                            crate::format::format_duration(sup.period),
                            end.why
                        ),
                    },
                ));
            } else {
                let from = match sup.strategy {
                    Strategy::OneForAll => 0,
                    Strategy::RestForOne => i,
                    Strategy::OneForOne | Strategy::SimpleOneForOne => i,
                };
                let until = match sup.strategy {
                    Strategy::OneForOne | Strategy::SimpleOneForOne => i + 1,
                    _ => sup.children.len(),
                };
                // Stop the others in the range, in reverse order.
                for (j, c) in sup.children.iter().enumerate().rev() {
                    if j >= from && j < until && j != i {
                        let mut leaves = Vec::new();
                        c.leaves(&mut leaves);
                        stops.extend(
                            leaves
                                .iter()
                                .rev()
                                .filter(|l| l.live())
                                .map(|l| l.path.clone()),
                        );
                    }
                }
                // Start the range again, in order; temporary children that ran stay down.
                for (j, c) in sup.children.iter_mut().enumerate() {
                    if j < from || j >= until {
                        continue;
                    }
                    if j != i && c.restart() == Restart::Temporary && c.ever_started() {
                        continue;
                    }
                    if let Node::Sup(s) = c {
                        s.down = false;
                        s.restarts.clear();
                    }
                    let mut leaves = Vec::new();
                    c.leaves_mut(&mut leaves);
                    for leaf in leaves {
                        if j == i
                            || leaf.def.restart != Restart::Temporary
                            || leaf.process.is_none()
                        {
                            leaf.restarts += 1;
                            if leaf.state == LeafState::Ended {
                                leaf.state = LeafState::Waiting;
                            }
                            starts.push(leaf.path.clone());
                        }
                    }
                }
            }
        }
        for path in stops {
            self.ops.push_back(Op::Stop(path));
        }
        for path in starts {
            self.ops.push_back(Op::Start(path));
        }
        if let Some((sup_path, end)) = escalate {
            if sup_path.is_empty() {
                if end.abnormal {
                    self.failed = Some(end.why);
                } else {
                    self.finished = true;
                }
            } else {
                self.child_ended(&sup_path, end, now_ms);
            }
        }
    }

    /// Stops every live leaf of `sup` (reverse order) and marks it down.
    fn take_down(sup: &mut Sup, stops: &mut Vec<String>) {
        sup.down = true;
        let mut leaves = Vec::new();
        for child in &mut sup.children {
            child.leaves_mut(&mut leaves);
        }
        for leaf in leaves.into_iter().rev() {
            if leaf.live() {
                stops.push(leaf.path.clone());
            } else if leaf.state == LeafState::Waiting {
                leaf.state = LeafState::Stopped;
            }
        }
    }

    /// Adopts the runtime state of `old`'s leaves whose definition is unchanged (an
    /// applied update keeps what did not change running), and the failure state resets.
    /// Returns the plan: what is added, restarted (changed) and removed.
    pub fn carry_over(&mut self, old: &Tree) -> Plan {
        let mut plan = Plan::default();
        let old_leaves = old.leaves();
        let mut mine = Vec::new();
        for child in &mut self.root.children {
            child.leaves_mut(&mut mine);
        }
        for leaf in mine {
            match old_leaves.iter().find(|o| o.path == leaf.path) {
                None => plan.add.push(leaf.path.clone()),
                Some(o) if o.def != leaf.def => {
                    plan.restart
                        .push((leaf.path.clone(), changed_keys(&o.def, &leaf.def)));
                    if o.live() {
                        // Stopped first (its old process), then started anew.
                        leaf.process = o.process.clone();
                        leaf.agent = o.agent.clone();
                        leaf.state = LeafState::Running;
                        self.ops.push_back(Op::Stop(leaf.path.clone()));
                        self.ops.push_back(Op::Start(leaf.path.clone()));
                    }
                    leaf.restarts = o.restarts;
                }
                Some(o) => {
                    leaf.process = o.process.clone();
                    leaf.agent = o.agent.clone();
                    leaf.restarts = o.restarts;
                    leaf.last_end = o.last_end.clone();
                    leaf.state = match o.state {
                        LeafState::Running | LeafState::Starting => LeafState::Running,
                        // An ended temporary child stays ended; anything else starts.
                        LeafState::Ended if o.def.restart == Restart::Temporary => LeafState::Ended,
                        _ => LeafState::Waiting,
                    };
                    if leaf.state == LeafState::Running {
                        plan.keep.push(leaf.path.clone());
                    }
                }
            }
        }
        for o in &old_leaves {
            if self.leaf(&o.path).is_none() {
                plan.remove.push(o.path.clone());
            }
        }
        plan
    }

    /// Every leaf of `old` not in this tree that still runs, in reverse start order, with
    /// its process and its shutdown grace: to stop (removed by an update).
    pub fn removed_from(&self, old: &Tree) -> Vec<(String, TaskId, Duration)> {
        old.leaves()
            .into_iter()
            .rev()
            .filter(|o| self.leaf(&o.path).is_none())
            .filter_map(|o| Some((o.path.clone(), o.process.clone()?, o.def.shutdown.grace())))
            .collect()
    }
}

/// What applying a spec does to the children.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Children to start (new).
    pub add: Vec<String>,
    /// Children to restart, with the keys that changed.
    pub restart: Vec<(String, Vec<String>)>,
    /// Children to stop (gone from the spec).
    pub remove: Vec<String>,
    /// Children that run and are left alone.
    pub keep: Vec<String>,
}

impl Plan {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.restart.is_empty() && self.remove.is_empty()
    }
}

/// The keys whose values differ between two definitions of a child.
fn changed_keys(a: &ProcessChild, b: &ProcessChild) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |key: &str, same: bool| {
        if !same {
            keys.push(key.to_string());
        }
    };
    differs("command", a.command == b.command);
    differs("args", a.args == b.args);
    differs("env", a.env == b.env);
    differs("dir", a.dir == b.dir);
    differs("stdin", a.stdin == b.stdin);
    differs("resources", a.resources == b.resources);
    differs("placement", a.placement == b.placement);
    differs("agent", a.agent == b.agent);
    differs("restart", a.restart == b.restart);
    differs("shutdown", a.shutdown == b.shutdown);
    differs("significant", a.significant == b.significant);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{ProcessChild, Spec, SupervisorChild};

    fn p(id: &str) -> ProcessChild {
        ProcessChild::new(id, "sleep").args(["100"])
    }

    /// Runs every queued op as if it succeeded: starts get processes `path#n`.
    fn settle(tree: &mut Tree, n: &mut u32) -> Vec<Op> {
        let mut done = Vec::new();
        while let Some(op) = tree.next_op() {
            match &op {
                Op::Start(path) => {
                    *n += 1;
                    tree.started(path, TaskId(format!("{path}#{n}")), AgentId("a1".into()));
                }
                Op::Stop(path) => {
                    let process = tree.leaf(path).and_then(|l| l.process.clone()).unwrap();
                    tree.ended(&process, true, false, "killed".into(), 0);
                }
            }
            done.push(op);
        }
        done
    }

    fn process_of(tree: &Tree, path: &str) -> TaskId {
        tree.leaf(path).and_then(|l| l.process.clone()).unwrap()
    }

    fn start(s: &str) -> Op {
        Op::Start(s.into())
    }

    fn stop(s: &str) -> Op {
        Op::Stop(s.into())
    }

    #[test]
    fn children_start_in_order_with_replicas_expanded() {
        let spec = Spec::new("s").child(p("a")).child(p("b").replicas(2));
        let mut tree = Tree::new(&spec);
        tree.start();
        let ops = settle(&mut tree, &mut 0);
        assert_eq!(ops, vec![start("a"), start("b-0"), start("b-1")]);
        assert_eq!(tree.leaf("b-1").unwrap().group.as_deref(), Some("b"));
    }

    #[test]
    fn one_for_one_restarts_the_crashed_child_alone() {
        let spec = Spec::new("s").child(p("a")).child(p("b"));
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        tree.ended(&process_of(&tree, "a"), true, false, "exit 1".into(), 10);
        assert_eq!(settle(&mut tree, &mut n), vec![start("a")]);
        assert_eq!(tree.leaf("a").unwrap().restarts, 1);
        assert_eq!(tree.leaf("a").unwrap().prefer, Some(AgentId("a1".into())));
    }

    #[test]
    fn one_for_all_stops_the_others_in_reverse_and_starts_all_in_order() {
        let spec = Spec::new("s")
            .strategy(Strategy::OneForAll)
            .child(p("a"))
            .child(p("b"))
            .child(p("c"));
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        tree.ended(&process_of(&tree, "b"), true, false, "exit 1".into(), 10);
        assert_eq!(
            settle(&mut tree, &mut n),
            vec![stop("c"), stop("a"), start("a"), start("b"), start("c")]
        );
    }

    #[test]
    fn rest_for_one_restarts_the_crashed_child_and_those_after_it() {
        let spec = Spec::new("s")
            .strategy(Strategy::RestForOne)
            .child(p("primary"))
            .child(p("replica"))
            .child(p("other"));
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        tree.ended(
            &process_of(&tree, "replica"),
            true,
            false,
            "exit 1".into(),
            10,
        );
        assert_eq!(
            settle(&mut tree, &mut n),
            vec![stop("other"), start("replica"), start("other")]
        );
        tree.ended(
            &process_of(&tree, "primary"),
            true,
            false,
            "killed".into(),
            20,
        );
        assert_eq!(
            settle(&mut tree, &mut n),
            vec![
                stop("other"),
                stop("replica"),
                start("primary"),
                start("replica"),
                start("other")
            ]
        );
    }

    #[test]
    fn transient_and_temporary_children_follow_their_restart_type() {
        let spec = Spec::new("s")
            .child(p("t").restart(Restart::Transient))
            .child(p("once").restart(Restart::Temporary));
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        tree.ended(&process_of(&tree, "t"), false, false, "exit 0".into(), 10);
        tree.ended(&process_of(&tree, "once"), true, false, "exit 1".into(), 10);
        assert!(settle(&mut tree, &mut n).is_empty());
        assert_eq!(tree.leaf("t").unwrap().state, LeafState::Ended);
        assert_eq!(tree.leaf("once").unwrap().state, LeafState::Ended);
        assert!(tree.failed.is_none());
    }

    #[test]
    fn past_its_intensity_the_spec_gives_up_stops_everything_and_says_why() {
        let spec = Spec::new("s")
            .intensity(2, Duration::from_secs(10))
            .child(p("ok"))
            .child(p("bad"));
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        for t in 1..=2 {
            tree.ended(
                &process_of(&tree, "bad"),
                true,
                false,
                "exit 3".into(),
                t * 100,
            );
            assert_eq!(settle(&mut tree, &mut n), vec![start("bad")]);
        }
        tree.ended(&process_of(&tree, "bad"), true, false, "exit 3".into(), 300);
        assert_eq!(settle(&mut tree, &mut n), vec![stop("ok")]);
        let why = tree.failed.clone().unwrap();
        assert!(why.contains("gave up after 2 restarts within 10s"), "{why}");
        assert!(why.contains("bad: exit 3"), "{why}");
    }

    #[test]
    fn restarts_older_than_the_period_do_not_count() {
        let spec = Spec::new("s")
            .intensity(1, Duration::from_secs(1))
            .child(p("a"));
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        for t in 1..=5 {
            tree.ended(
                &process_of(&tree, "a"),
                true,
                false,
                "exit 1".into(),
                t * 5_000,
            );
            assert_eq!(settle(&mut tree, &mut n), vec![start("a")]);
        }
        assert!(tree.failed.is_none());
    }

    #[test]
    fn a_nested_supervisor_that_gives_up_is_restarted_by_its_parent() {
        let spec = Spec::new("s").child(p("front")).child(
            SupervisorChild::new("db")
                .intensity(0, Duration::from_secs(5))
                .child(p("primary"))
                .child(p("replica")),
        );
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        tree.ended(
            &process_of(&tree, "db/primary"),
            true,
            false,
            "exit 1".into(),
            10,
        );
        assert_eq!(
            settle(&mut tree, &mut n),
            vec![stop("db/replica"), start("db/primary"), start("db/replica")]
        );
        assert!(tree.failed.is_none());
    }

    #[test]
    fn a_lost_agent_restarts_the_child_elsewhere_and_counts() {
        let spec = Spec::new("s")
            .intensity(1, Duration::from_secs(60))
            .child(p("a"));
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        tree.ended(&process_of(&tree, "a"), true, true, "agent lost".into(), 10);
        assert_eq!(tree.leaf("a").unwrap().avoid, Some(AgentId("a1".into())));
        assert_eq!(settle(&mut tree, &mut n), vec![start("a")]);
        tree.ended(&process_of(&tree, "a"), true, true, "agent lost".into(), 20);
        settle(&mut tree, &mut n);
        assert!(tree.failed.is_some());
    }

    #[test]
    fn a_significant_child_ending_stops_its_supervisor_with_auto_shutdown() {
        let spec = Spec::new("batch")
            .auto_shutdown(AutoShutdown::AnySignificant)
            .child(p("server"))
            .child(p("job").restart(Restart::Transient).significant(true));
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        tree.ended(&process_of(&tree, "job"), false, false, "exit 0".into(), 10);
        assert_eq!(settle(&mut tree, &mut n), vec![stop("server")]);
        assert!(tree.finished);
        assert!(tree.failed.is_none());
    }

    #[test]
    fn an_update_restarts_only_the_changed_child_and_plans_it() {
        let old_spec = Spec::new("s").child(p("a")).child(p("b")).child(p("c"));
        let mut old = Tree::new(&old_spec);
        old.start();
        let mut n = 0;
        settle(&mut old, &mut n);
        let new_spec = Spec::new("s")
            .child(p("a"))
            .child(ProcessChild::new("b", "sleep").args(["200"]))
            .child(p("d"));
        let mut new = Tree::new(&new_spec);
        let plan = new.carry_over(&old);
        assert_eq!(plan.add, vec!["d".to_string()]);
        assert_eq!(
            plan.restart,
            vec![("b".to_string(), vec!["args".to_string()])]
        );
        assert_eq!(plan.remove, vec!["c".to_string()]);
        assert_eq!(plan.keep, vec!["a".to_string()]);
        let a_before = process_of(&old, "a");
        assert_eq!(
            new.removed_from(&old),
            vec![("c".into(), process_of(&old, "c"), Duration::from_secs(5))]
        );
        new.start();
        assert_eq!(
            settle(&mut new, &mut n),
            vec![stop("b"), start("b"), start("d")]
        );
        assert_eq!(process_of(&new, "a"), a_before);
    }

    #[test]
    fn deleting_stops_every_child_in_reverse_order() {
        let spec = Spec::new("s").child(p("a")).child(p("b"));
        let mut tree = Tree::new(&spec);
        tree.start();
        let mut n = 0;
        settle(&mut tree, &mut n);
        tree.stop_all();
        assert_eq!(settle(&mut tree, &mut n), vec![stop("b"), stop("a")]);
    }
}
