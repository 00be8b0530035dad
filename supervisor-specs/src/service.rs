//! The spec service: a built-in service of the master's node, at [`SPECS_PATH`], that keeps
//! applied specs running across agents. Reached from any node through the [`Specs`] handle
//! (`troupe apply`, `troupe specs`, `troupe diff`, `troupe delete`).
//!
//! ```text
//!   SpecsActor (specs)                 holds the applied specs, answers requests
//!     ├── runner task: spec "web"      one per spec: its engine::Tree, its operations
//!     │     └── monitor waits           one per running child: its end, back to the runner
//!     └── runner task: spec "redis"
//! ```
//!
//! Each spec's runner owns its [`Tree`] and carries out its operations one at a time
//! through the process service: a start is a spawn (supervised: it ends when its agent is
//! lost, rather than being moved by the service, so that the tree decides), followed by a
//! monitor; a stop is a kill and a wait for the end. Children reach one another through
//! `{CHILD.host}` and `{CHILD.portN}` in their arguments: a child starts after the ones
//! before it run, so their places are known.
//!
//! Specs are durable: each applied spec's text is kept in the master's registry, and the
//! service reads them back when it starts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use troupe_actors::client::{ClientError, Processes};
use troupe_actors::master::MASTER_PATH;
use troupe_actors::processes::{
    Adoption, Constraint, Needs, PROCESSES_NAME, Placement, Preferences, ProcessEnd, ProcessRef,
    RestartPolicy,
};
use troupe_actors::protocol::{
    AgentId, FrameworkId, MasterMsg, Resources, TaskId, TaskInfo, TaskView, now_ms,
};
use troupe_runtime::supervisor::Restart;
use troupe_runtime::{Addr, Reply};

use crate::engine::{LeafState, Op, Plan, Tree};
use crate::format::{ProcessChild, Spec};
use crate::validate::{Invalid, read};

/// The service's path.
pub const SPECS_PATH: &str = "specs";

/// How long a stop waits for a child's end beyond its shutdown grace.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// What applying a spec did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The spec's name.
    pub name: String,
    /// Whether it is new.
    pub created: bool,
    /// The children to add, restart and remove, and those left running.
    pub plan: Plan,
    /// Whether it only said what it would do.
    pub dry_run: bool,
}

/// Why the service refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SpecRefused {
    /// The file is not a valid spec: every problem, with its place.
    #[error("{0}")]
    Invalid(Invalid),
    /// No spec of this name is applied.
    #[error("no spec {name} is applied")]
    Unknown {
        /// The name.
        name: String,
    },
    /// The registry could not keep it: nothing changed.
    #[error("the spec could not be kept in the master's registry: {why}")]
    NotDurable {
        /// Why.
        why: String,
    },
}

/// A child of a spec as it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildView {
    /// Its path in the tree (`db/primary`).
    pub path: String,
    /// What it does.
    pub state: LeafState,
    /// Its process, while it has one.
    pub process: Option<TaskId>,
    /// Its agent, while it runs.
    pub agent: Option<AgentId>,
    /// Its ports, while it runs.
    pub ports: Vec<u16>,
    /// How many times it was started again.
    pub restarts: u32,
    /// Why it last ended (or failed to start).
    pub last_end: Option<String>,
}

/// A spec as it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecView {
    /// Its name.
    pub name: String,
    /// `running` (every child that should run does), `starting` (some do not yet), `failed`
    /// (it gave up), `finished` (its significant children ended it), `deleting`.
    pub health: String,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// How many children should run.
    pub desired: usize,
    /// How many run.
    pub running: usize,
    /// Restarts of all its children.
    pub restarts: u32,
    /// Its children, in start order.
    pub children: Vec<ChildView>,
    /// Its text, as applied.
    pub text: String,
}

/// What the spec service accepts.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub enum SpecsMsg {
    /// Applies a spec file: creates or updates it in place (only what changed restarts).
    Apply {
        /// The file's name, for its problems' places.
        file: String,
        /// Its text.
        text: String,
        /// Only say what it would do.
        dry_run: bool,
        /// What it did, or why not.
        reply: Reply<Result<Applied, SpecRefused>>,
    },
    /// Every applied spec.
    List {
        /// The answer.
        reply: Reply<Vec<SpecView>>,
    },
    /// Stops a spec's children in OTP's shutdown order (reverse start order) and forgets
    /// it. Answers once they are stopped.
    Delete {
        /// Its name.
        name: String,
        /// `Ok` with the children stopped.
        reply: Reply<Result<Vec<String>, SpecRefused>>,
    },
}

/// What a spec's runner hears.
enum Heard {
    /// A process of the tree ended.
    Ended(TaskId, ProcessEnd),
    /// A new version of the spec.
    Update(Spec, String),
    /// Stop every child and end; answer with the children stopped.
    Delete(tokio::sync::oneshot::Sender<Vec<String>>),
}

/// What a reference to a sibling names.
#[derive(Debug, Clone, Copy)]
enum What {
    Host,
    Port(usize),
}

/// `CHILD.host` or `CHILD.portN`, with CHILD a path of ids: a reference to a sibling.
fn reference(inner: &str) -> Option<(&str, What)> {
    let (child, what) = inner.rsplit_once('.')?;
    let id_like = !child.is_empty()
        && child
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'));
    if !id_like {
        return None;
    }
    let what = match what {
        "host" => What::Host,
        port => What::Port(port.strip_prefix("port")?.parse().ok()?),
    };
    Some((child, what))
}

/// One applied spec, as the service holds it.
struct Running {
    spec: Spec,
    text: String,
    view: Arc<Mutex<SpecView>>,
    tree: Arc<Mutex<Tree>>,
    to_runner: mpsc::UnboundedSender<Heard>,
}

struct SpecsActor;

/// The service's state.
pub struct SpecsState {
    specs: BTreeMap<String, Running>,
    processes: Processes,
    counter: troupe_runtime::inspector::MessageCounter,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn master_call<T>(
    make: impl FnOnce(Reply<T>) -> MasterMsg,
) -> Result<T, troupe_runtime::AddrError>
where
    T: Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    Addr::<MasterMsg>::new(MASTER_PATH)
        .call(make, Duration::from_secs(5))
        .await
}

impl SpecsState {
    /// Starts a runner for `spec`: new, or read back from the registry (`recover`: its
    /// children that still run are found and taken in, not started again).
    fn launch(&mut self, spec: Spec, text: String, recover: bool) {
        let tree = Tree::new(&spec);
        let view = Arc::new(Mutex::new(view_of(
            &spec.name,
            &tree,
            &text,
            &BTreeMap::new(),
        )));
        let shared = Arc::new(Mutex::new(tree.clone()));
        let (to_runner, heard) = mpsc::unbounded_channel();
        let runner = SpecRunner {
            name: spec.name.clone(),
            tree,
            text: text.clone(),
            processes: self.processes.clone(),
            heard,
            to_self: to_runner.clone(),
            view: view.clone(),
            shared: shared.clone(),
            places: BTreeMap::new(),
            deferred: Vec::new(),
        };
        tokio::spawn(runner.run(recover));
        self.specs.insert(
            spec.name.clone(),
            Running {
                spec,
                text,
                view,
                tree: shared,
                to_runner,
            },
        );
    }

    async fn apply(
        &mut self,
        file: String,
        text: String,
        dry_run: bool,
    ) -> Result<Applied, SpecRefused> {
        let agents = master_call(|reply| MasterMsg::State { all: false, reply })
            .await
            .map(|s| s.agents.into_iter().map(|a| a.info).collect::<Vec<_>>())
            .unwrap_or_default();
        let spec = read(&text, &file, &agents).map_err(SpecRefused::Invalid)?;
        let name = spec.name.clone();
        let (created, plan) = match self.specs.get(&name) {
            None => {
                let mut tree = Tree::new(&spec);
                tree.start();
                let plan = Plan {
                    add: tree.leaves().iter().map(|l| l.path.clone()).collect(),
                    ..Plan::default()
                };
                (true, plan)
            }
            Some(running) => {
                let old = lock(&running.tree).clone();
                let plan = Tree::new(&spec).carry_over(&old);
                (false, plan)
            }
        };
        if dry_run {
            return Ok(Applied {
                name,
                created,
                plan,
                dry_run,
            });
        }
        // Durable first: a spec the registry could not keep is not applied at all.
        let stored = master_call(|reply| MasterMsg::PutSpec {
            name: name.clone(),
            text: text.clone(),
            reply,
        })
        .await
        .map_err(|e| SpecRefused::NotDurable { why: e.to_string() })?;
        stored.map_err(|why| SpecRefused::NotDurable { why })?;
        match self.specs.get_mut(&name) {
            None => self.launch(spec, text, false),
            Some(running) => {
                running.spec = spec.clone();
                running.text = text.clone();
                let _ = running.to_runner.send(Heard::Update(spec, text));
            }
        }
        Ok(Applied {
            name,
            created,
            plan,
            dry_run,
        })
    }
}

/// The view of a spec's tree.
fn view_of(name: &str, tree: &Tree, text: &str, places: &BTreeMap<String, Place>) -> SpecView {
    let children: Vec<ChildView> = tree
        .leaves()
        .into_iter()
        .map(|l| ChildView {
            path: l.path.clone(),
            state: l.state,
            process: l.process.clone(),
            agent: l.agent.clone(),
            ports: places
                .get(&l.path)
                .map(|p| p.ports.clone())
                .unwrap_or_default(),
            restarts: l.restarts,
            last_end: l.last_end.clone(),
        })
        .collect();
    let desired = tree
        .leaves()
        .iter()
        .filter(|l| !matches!(l.state, LeafState::Ended | LeafState::Stopped))
        .count();
    let running = children
        .iter()
        .filter(|c| c.state == LeafState::Running)
        .count();
    let health = if tree.failed.is_some() {
        "failed"
    } else if tree.finished {
        "finished"
    } else if running == desired && !tree.busy() {
        "running"
    } else {
        "starting"
    };
    SpecView {
        name: name.to_string(),
        health: health.to_string(),
        failure: tree.failed.clone(),
        desired,
        running,
        restarts: children.iter().map(|c| c.restarts).sum(),
        children,
        text: text.to_string(),
    }
}

/// How long a spec read back after a master restart waits for the agents to register
/// again before it takes in what it finds and starts the rest.
const RECOVER_WITHIN: Duration = Duration::from_secs(15);

/// What a child needs of the process service.
fn needs_of(def: &ProcessChild) -> Needs {
    let placement = match (&def.agent, def.placement.is_empty()) {
        (Some(agent), _) => Placement::Agent(AgentId(agent.clone())),
        (None, true) => Placement::Any,
        // Validated when the spec was read.
        (None, false) => Placement::Constraints(
            def.placement
                .iter()
                .filter_map(|c| Constraint::parse(c).ok())
                .collect(),
        ),
    };
    Needs {
        resources: Resources {
            cpus: def.resources.cpus,
            mem_mib: def.resources.mem,
            disk_mib: def.resources.disk,
        },
        placement,
        ports: def.resources.ports,
    }
}

/// Where a process runs, for its siblings: its agent's advertised address, and its ports.
fn place_of(process: &ProcessRef) -> Place {
    let host = process
        .location
        .as_ref()
        .and_then(|l| l.addr.rsplit_once(':').map(|(h, _)| h.to_string()))
        .unwrap_or_else(|| "127.0.0.1".into());
    Place {
        host,
        ports: process.ports.clone(),
    }
}

/// The ports a child's process was given, read back from its command line against the
/// child's arguments: where an argument says `{portN}`, the command line has the port.
fn read_ports(def: &ProcessChild, argv: &[String]) -> Vec<u16> {
    let mut ports: BTreeMap<usize, u16> = BTreeMap::new();
    for (template, actual) in def.args.iter().zip(argv.iter().skip(1)) {
        let mut rest = template.as_str();
        let mut at = actual.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let (literal, mark) = (&rest[..open], &rest[open + 1..open + close]);
            let Some(tail) = at.strip_prefix(literal) else {
                break;
            };
            rest = &rest[open + close + 1..];
            // The mark's value runs up to the next literal piece (or the end).
            let next = rest.split('{').next().unwrap_or("");
            let end = if next.is_empty() {
                tail.len()
            } else {
                tail.find(next).unwrap_or(tail.len())
            };
            let value = &tail[..end];
            if let Some(n) = mark
                .strip_prefix("port")
                .and_then(|n| n.parse::<usize>().ok())
                && let Ok(port) = value.parse::<u16>()
            {
                ports.insert(n, port);
            }
            at = &tail[end..];
        }
    }
    ports.into_values().collect()
}

/// Where a running child is reached.
#[derive(Debug, Clone, Default)]
struct Place {
    host: String,
    ports: Vec<u16>,
}

/// One spec's runner: its tree, and the operations it asks for, one at a time.
struct SpecRunner {
    name: String,
    tree: Tree,
    text: String,
    processes: Processes,
    heard: mpsc::UnboundedReceiver<Heard>,
    to_self: mpsc::UnboundedSender<Heard>,
    view: Arc<Mutex<SpecView>>,
    shared: Arc<Mutex<Tree>>,
    /// Where each running child is: its agent's host address and its ports, by path.
    places: BTreeMap<String, Place>,
    /// Requests heard while a stop waited, for after it.
    deferred: Vec<Heard>,
}

impl SpecRunner {
    async fn run(mut self, recover: bool) {
        if recover {
            self.recover().await;
        }
        self.tree.start();
        loop {
            self.work().await;
            let next = match self.deferred.pop() {
                Some(h) => Some(h),
                None => self.heard.recv().await,
            };
            let Some(heard) = next else {
                return;
            };
            match heard {
                Heard::Ended(process, end) => self.ended(&process, &end),
                Heard::Update(spec, text) => self.update(spec, text).await,
                Heard::Delete(done) => {
                    self.tree.stop_all();
                    let stopped: Vec<String> = self
                        .tree
                        .leaves()
                        .iter()
                        .rev()
                        .filter(|l| l.process.is_some())
                        .map(|l| l.path.clone())
                        .collect();
                    self.work().await;
                    let _ = done.send(stopped);
                    return;
                }
            }
        }
    }

    /// Carries out every operation the tree asks for, in order.
    async fn work(&mut self) {
        while let Some(op) = self.tree.next_op() {
            self.publish();
            match op {
                Op::Start(path) => self.start(&path).await,
                Op::Stop(path) => self.stop(&path).await,
            }
        }
        self.publish();
    }

    fn publish(&self) {
        *lock(&self.view) = view_of(&self.name, &self.tree, &self.text, &self.places);
        *lock(&self.shared) = self.tree.clone();
    }

    fn ended(&mut self, process: &TaskId, end: &ProcessEnd) {
        let (abnormal, lost) = match end {
            ProcessEnd::Exited(troupe_os::ExitReason::Exited(0)) => (false, false),
            ProcessEnd::AgentLost(_) => (true, true),
            _ => (true, false),
        };
        let why = match end {
            ProcessEnd::Exited(exit) => exit.to_string(),
            ProcessEnd::AgentLost(why) => format!("its agent was lost: {why}"),
            ProcessEnd::NeverRan(why) => format!("it never ran: {why}"),
        };
        if let Some(leaf) = self
            .tree
            .leaves()
            .into_iter()
            .find(|l| l.process.as_ref() == Some(process))
        {
            tracing::info!(spec = %self.name, child = %leaf.path, %process, %why, "a child ended");
            self.places.remove(&leaf.path.clone());
        }
        self.tree.ended(process, abnormal, lost, why, now_ms());
        if let Some(failed) = &self.tree.failed {
            tracing::error!(spec = %self.name, why = %failed, "the spec gave up");
        }
    }

    async fn update(&mut self, spec: Spec, text: String) {
        let mut tree = Tree::new(&spec);
        let plan = tree.carry_over(&self.tree);
        tracing::info!(spec = %self.name, ?plan, "applied again");
        // Children gone from the spec stop first, in reverse order.
        for (path, process, grace) in tree.removed_from(&self.tree) {
            self.places.remove(&path);
            self.kill_and_wait(&process, grace).await;
        }
        self.tree = tree;
        self.text = text;
        self.tree.start();
    }

    /// The name of a child's processes (and the prefix of their ids).
    fn process_name(&self, path: &str) -> String {
        format!("{}-{}", self.name, path.replace('/', "-"))
    }

    /// After a master restart: waits for the master's books to be rebuilt (every admitted
    /// agent registered again, or [`RECOVER_WITHIN`]), then takes in each child's process
    /// that still runs, so that none is started twice. Extra copies are killed.
    async fn recover(&mut self) {
        let start = tokio::time::Instant::now();
        loop {
            let health = master_call(|reply| MasterMsg::Health { reply }).await;
            if health.is_ok_and(|h| h.agents_reachable >= h.agents_admitted)
                || start.elapsed() > RECOVER_WITHIN
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Ok(state) = master_call(|reply| MasterMsg::State { all: false, reply }).await else {
            tracing::warn!(spec = %self.name, "cannot read the master's books: the children start anew");
            return;
        };
        let framework = FrameworkId(PROCESSES_NAME.to_string());
        let leaves: Vec<(String, ProcessChild)> = self
            .tree
            .leaves()
            .iter()
            .map(|l| (l.path.clone(), l.def.clone()))
            .collect();
        for (path, def) in leaves {
            let name = self.process_name(&path);
            let mut found: Vec<&TaskView> = state
                .tasks
                .iter()
                .filter(|t| t.framework == framework && t.name == name && t.agent.is_some())
                .filter(|t| !t.status.state.is_terminal())
                .collect();
            found.sort_by_key(|t| t.launched_ms);
            let Some(newest) = found.pop() else {
                continue;
            };
            for extra in found {
                tracing::warn!(spec = %self.name, child = %path, task = %extra.id, "an extra copy of a child runs: killed");
                let _ = master_call(|reply| MasterMsg::Kill {
                    task: extra.id.clone(),
                    grace: None,
                    reply,
                })
                .await;
            }
            let Some(agent) = newest.agent.clone() else {
                continue;
            };
            let ports = read_ports(&def, &newest.command);
            let adoption = Adoption {
                task: TaskInfo {
                    id: newest.id.clone(),
                    name,
                    command: troupe_os::ProcessSpec::new(newest.command.clone())
                        .grace(def.shutdown.grace()),
                    resources: newest.resources,
                },
                agent,
                pid: newest.pid,
                needs: needs_of(&def),
                ports,
                policy: RestartPolicy::of(Restart::Temporary),
                prefs: Preferences {
                    supervised: true,
                    ..Preferences::default()
                },
            };
            match self.processes.adopt(adoption).await {
                Ok(process) => {
                    if self.watch(&process.id).await.is_err() {
                        continue;
                    }
                    tracing::info!(spec = %self.name, child = %path, id = %process.id, "child found running after a master restart: kept");
                    self.places.insert(path.clone(), place_of(&process));
                    self.tree.adopted(&path, process.id, process.agent);
                }
                Err(e) => {
                    tracing::warn!(spec = %self.name, child = %path, cause = %e, "child not taken in: started anew");
                }
            }
        }
        self.publish();
    }

    /// Monitors a child's process: its end comes back to this runner.
    async fn watch(&self, id: &TaskId) -> Result<(), ClientError> {
        let monitor = self.processes.monitor(id).await?;
        let (to_self, id) = (self.to_self.clone(), id.clone());
        tokio::spawn(async move {
            let end = monitor
                .wait()
                .await
                .unwrap_or_else(|| ProcessEnd::NeverRan("the process service went away".into()));
            let _ = to_self.send(Heard::Ended(id, end));
        });
        Ok(())
    }

    /// Spawns a child's process and watches it.
    async fn start(&mut self, path: &str) {
        let Some(leaf) = self.tree.leaf(path).cloned() else {
            return;
        };
        let command = match self.command_of(&leaf.def) {
            Ok(command) => command,
            Err(why) => {
                self.tree.start_failed(path, why, now_ms());
                return;
            }
        };
        let needs = needs_of(&leaf.def);
        let prefs = Preferences {
            prefer: leaf.prefer.clone(),
            spread_from: self.tree.siblings_agents(path),
            avoid: leaf.avoid.clone(),
            supervised: true,
        };
        let name = self.process_name(path);
        let spawned = self
            .processes
            .spawn_preferring(
                &name,
                command,
                needs,
                RestartPolicy::of(Restart::Temporary),
                prefs,
            )
            .await;
        match spawned {
            Ok(process) => {
                tracing::info!(spec = %self.name, child = %path, id = %process.id, agent = %process.agent, "child started");
                if let Err(e) = self.watch(&process.id).await {
                    // Not watched, it cannot be supervised: stopped, and a failed start.
                    let _ = self.processes.kill(&process.id).await;
                    self.tree
                        .start_failed(path, format!("cannot monitor it: {e}"), now_ms());
                    return;
                }
                self.places.insert(path.to_string(), place_of(&process));
                self.tree.started(path, process.id, process.agent);
            }
            Err(e) => {
                tracing::warn!(spec = %self.name, child = %path, cause = %e, "child did not start");
                self.tree.start_failed(path, e.to_string(), now_ms());
            }
        }
    }

    /// The command of a child, with its siblings' places filled in (`{db.port0}`,
    /// `{db.host}`).
    fn command_of(&self, def: &ProcessChild) -> Result<troupe_os::ProcessSpec, String> {
        let mut argv = vec![def.command.clone()];
        for arg in &def.args {
            argv.push(self.fill_references(arg)?);
        }
        let mut spec = troupe_os::ProcessSpec::new(argv).grace(def.shutdown.grace());
        for (k, v) in &def.env {
            spec = spec.env(k, self.fill_references(v)?);
        }
        if let Some(dir) = &def.dir {
            spec.cwd = Some(dir.into());
        }
        spec.stdin = def.stdin;
        Ok(spec)
    }

    /// Replaces `{CHILD.portN}` and `{CHILD.host}` with where that child runs now; other
    /// braces (`{port0}`: the process service's own, or the program's) stay.
    fn fill_references(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                out.push_str(&rest[open..]);
                return Ok(out);
            };
            let inner = &rest[open + 1..open + close];
            match reference(inner) {
                Some((child, what)) => out.push_str(&self.place_of(child, what)?),
                None => out.push_str(&rest[open..=open + close]),
            }
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The host or a port of a running child (its path, or its id in the tree).
    fn place_of(&self, child: &str, what: What) -> Result<String, String> {
        let leaves = self.tree.leaves();
        let leaf = leaves
            .iter()
            .find(|l| l.path == child || l.path.ends_with(&format!("/{child}")))
            .ok_or_else(|| format!("{{{child}...}}: the spec has no child {child}"))?;
        let place = self
            .places
            .get(&leaf.path)
            .filter(|_| leaf.state == LeafState::Running)
            .ok_or_else(|| format!("{child} does not run (it is started before this child)"))?;
        match what {
            What::Host => Ok(place.host.clone()),
            What::Port(n) => place
                .ports
                .get(n)
                .map(u16::to_string)
                .ok_or_else(|| format!("{child} has no port {n}")),
        }
    }

    /// Stops a child's process and waits for its end.
    async fn stop(&mut self, path: &str) {
        let Some(leaf) = self.tree.leaf(path).cloned() else {
            return;
        };
        let Some(process) = leaf.process.clone() else {
            return;
        };
        self.places.remove(path);
        self.kill_and_wait(&process, leaf.def.shutdown.grace())
            .await;
    }

    /// Kills a process and waits for its end (hearing meanwhile of others' ends, and
    /// keeping requests for after): at most its grace and some.
    async fn kill_and_wait(&mut self, process: &TaskId, grace: Duration) {
        match self.processes.kill(process).await {
            Ok(()) => {}
            Err(ClientError::Process(_)) => {
                // Ended already, or forgotten: its end is all there is.
                self.tree
                    .ended(process, true, false, "stopped".into(), now_ms());
                return;
            }
            Err(e) => {
                tracing::warn!(spec = %self.name, %process, cause = %e, "cannot kill a child; waiting for its end anyway");
            }
        }
        let deadline =
            tokio::time::Instant::now() + grace.min(Duration::from_secs(3600)) + STOP_SLACK;
        loop {
            let heard = tokio::time::timeout_at(deadline, self.heard.recv()).await;
            match heard {
                Ok(Some(Heard::Ended(id, end))) => {
                    let done = &id == process;
                    if done {
                        self.tree.ended(
                            &id,
                            true,
                            false,
                            "stopped by its supervisor".into(),
                            now_ms(),
                        );
                        return;
                    }
                    self.ended(&id, &end);
                }
                Ok(Some(other)) => self.deferred.push(other),
                Ok(None) => return,
                Err(_) => {
                    tracing::warn!(spec = %self.name, %process, "a child did not stop in time; taken as stopped");
                    self.tree.ended(
                        process,
                        true,
                        false,
                        "did not stop in time".into(),
                        now_ms(),
                    );
                    return;
                }
            }
        }
    }
}

impl Actor for SpecsActor {
    type Msg = SpecsMsg;
    type State = SpecsState;
    type Arguments = Processes;

    async fn pre_start(
        &self,
        myself: ActorRef<SpecsMsg>,
        processes: Processes,
    ) -> Result<SpecsState, ActorProcessingErr> {
        troupe_runtime::register(SPECS_PATH, &myself)?;
        let mut state = SpecsState {
            specs: BTreeMap::new(),
            processes,
            counter: troupe_runtime::inspector::MessageCounter::new(&myself.get_cell()),
        };
        // The specs kept in the registry run again.
        match master_call(|reply| MasterMsg::Specs { reply }).await {
            Ok(stored) => {
                for (name, text) in stored {
                    match read(&text, &format!("registry:{name}"), &[]) {
                        Ok(spec) => state.launch(spec, text, true),
                        Err(e) => {
                            tracing::error!(spec = %name, problems = %e, "a stored spec no longer reads; left alone")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(cause = %e, "cannot read the stored specs"),
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<SpecsMsg>,
        message: SpecsMsg,
        state: &mut SpecsState,
    ) -> Result<(), ActorProcessingErr> {
        state.counter.handled();
        match message {
            SpecsMsg::Apply {
                file,
                text,
                dry_run,
                reply,
            } => {
                reply.send(state.apply(file, text, dry_run).await);
            }
            SpecsMsg::List { reply } => {
                let views = state
                    .specs
                    .values()
                    .map(|r| {
                        let mut view = lock(&r.view).clone();
                        view.text = r.text.clone();
                        view
                    })
                    .collect();
                reply.send(views);
            }
            SpecsMsg::Delete { name, reply } => {
                let Some(running) = state.specs.remove(&name) else {
                    reply.send(Err(SpecRefused::Unknown { name }));
                    return Ok(());
                };
                let forgotten = master_call(|reply| MasterMsg::DeleteSpec {
                    name: name.clone(),
                    reply,
                })
                .await;
                if let Err(why) = forgotten.map_err(|e| e.to_string()).and_then(|r| r) {
                    state.specs.insert(name, running);
                    reply.send(Err(SpecRefused::NotDurable { why }));
                    return Ok(());
                }
                lock(&running.view).health = "deleting".into();
                let (done, stopped) = tokio::sync::oneshot::channel();
                let _ = running.to_runner.send(Heard::Delete(done));
                // Answered when every child stopped, without holding the service meanwhile.
                tokio::spawn(async move {
                    let stopped = stopped.await.unwrap_or_default();
                    reply.send(Ok(stopped));
                });
            }
        }
        Ok(())
    }
}

/// Starts the spec service on this node (the master's, beside the process service).
pub async fn start() -> Result<ActorRef<SpecsMsg>, String> {
    let node = troupe_runtime::Node::current()
        .map(|n| n.name().to_string())
        .ok_or("no troupe node runs in this process")?;
    let processes = Processes::on(node);
    let (actor, _) = Actor::spawn(None, SpecsActor, processes)
        .await
        .map_err(|e| format!("the spec service did not start: {e}"))?;
    Ok(actor)
}

/// The spec service, from any node: apply, list and delete specs.
#[derive(Debug, Clone)]
pub struct Specs {
    addr: Addr<SpecsMsg>,
    timeout: Duration,
}

impl Specs {
    /// The service on the master's node `node`.
    pub fn on(node: impl Into<String>) -> Specs {
        Specs {
            addr: Addr::on(node, SPECS_PATH),
            timeout: Duration::from_secs(15),
        }
    }

    /// The same handle with another timeout per call (a delete waits for its children to
    /// stop).
    pub fn with_timeout(mut self, timeout: Duration) -> Specs {
        self.timeout = timeout;
        self
    }

    /// Applies a spec file's text (`file` names it in its problems).
    pub async fn apply(
        &self,
        file: &str,
        text: &str,
        dry_run: bool,
    ) -> Result<Result<Applied, SpecRefused>, troupe_runtime::AddrError> {
        let (file, text) = (file.to_string(), text.to_string());
        self.addr
            .call(
                |reply| SpecsMsg::Apply {
                    file,
                    text,
                    dry_run,
                    reply,
                },
                self.timeout,
            )
            .await
    }

    /// Every applied spec, as it runs.
    pub async fn list(&self) -> Result<Vec<SpecView>, troupe_runtime::AddrError> {
        self.addr
            .call(|reply| SpecsMsg::List { reply }, self.timeout)
            .await
    }

    /// Deletes a spec: its children stop in reverse order; answers with them.
    pub async fn delete(
        &self,
        name: &str,
    ) -> Result<Result<Vec<String>, SpecRefused>, troupe_runtime::AddrError> {
        let name = name.to_string();
        self.addr
            .call(|reply| SpecsMsg::Delete { name, reply }, self.timeout)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_back_from_a_command_line_by_the_childs_arguments() {
        let def = ProcessChild::new("s", "redis-server").args([
            "--port",
            "{port0}",
            "--tls-port={port1}",
            "{port2}:{primary.port0}",
            "plain",
        ]);
        let argv: Vec<String> = [
            "redis-server",
            "--port",
            "31005",
            "--tls-port=31006",
            "31007:31100",
            "plain",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(read_ports(&def, &argv), vec![31005, 31006, 31007]);
        assert!(read_ports(&ProcessChild::new("s", "sleep").args(["9"]), &argv).is_empty());
    }

    #[test]
    fn references_to_siblings_are_told_from_other_braces() {
        assert!(matches!(
            reference("primary.port0"),
            Some(("primary", What::Port(0)))
        ));
        assert!(matches!(
            reference("db/primary.host"),
            Some(("db/primary", What::Host))
        ));
        for other in ["port0", "\"a.b\": 1", "x.y", "", "a.port"] {
            assert!(reference(other).is_none(), "{other}");
        }
    }
}
