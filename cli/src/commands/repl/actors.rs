//! The REPL's actor commands: naming any actor of the cluster by a path, and `send`, `call`,
//! `stop`, `kill`, `info`, `watch` and `top` on it. They work through each node's inspector
//! (`node/<name>/inspector`), which finds the actor on its node and acts on it there.
//!
//! An actor is named, in order of preference, by:
//! * a path it is registered under (`master`, `agent/dev-a1`, `task/sleep-1a2b`);
//! * its supervisor's name and its child id (`agent/dev-a1/supervisor/executors`), for
//!   actors that register no path;
//! * `NODE:ID`, its node and its actor id as `tree --json` shows them (`dev:0.42`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, ValueEnum};
use troupe_actors::protocol::{ClusterEvent, EventMsg};
use troupe_runtime::Addr;
use troupe_runtime::inspector::{ActorKind, ActorSnapshot, InspectorMsg, inspector_path};

use super::super::Failure;
use super::super::client::{Client, call_failure};
use troupe_actors::client::{ClusterTree, cluster_tree, node_tree};

/// How long an inspector has to act.
const ACT_TIMEOUT: Duration = Duration::from_secs(5);

/// One actor of the cluster, as the latest tree shows it.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The name it was found by (its preferred one).
    pub(crate) name: String,
    /// Its node.
    pub(crate) node: String,
    /// Its snapshot (children included).
    pub(crate) actor: ActorSnapshot,
    /// Its supervisor's name, if it has one.
    pub(crate) parent: Option<String>,
}

/// Every actor of a tree by each of its names, and each actor's preferred name in tree order.
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_name: BTreeMap<String, Found>,
    /// Preferred names, in tree order: what completion offers.
    pub(crate) names: Vec<String>,
}

impl Index {
    /// Indexes a cluster tree.
    pub(crate) fn of(tree: &ClusterTree) -> Index {
        let mut index = Index::default();
        for n in &tree.nodes {
            if let Some(snapshot) = &n.snapshot {
                for a in &snapshot.actors {
                    index.add(&n.node, a, None);
                }
            }
        }
        index
    }

    fn add(&mut self, node: &str, a: &ActorSnapshot, parent: Option<&str>) {
        let name = preferred_name(a, parent).unwrap_or_else(|| format!("{node}:{}", a.id));
        let found = Found {
            name: name.clone(),
            node: node.to_string(),
            actor: a.clone(),
            parent: parent.map(str::to_string),
        };
        self.names.push(name.clone());
        for alias in a.paths.iter().chain([&name, &format!("{node}:{}", a.id)]) {
            self.by_name
                .entry(alias.clone())
                .or_insert_with(|| found.clone());
        }
        for c in &a.children {
            self.add(node, c, Some(&name));
        }
    }

    /// The actor named `name`.
    pub(crate) fn find(&self, name: &str) -> Result<&Found, Failure> {
        self.by_name.get(name).ok_or_else(|| {
            let near: Vec<&str> = self
                .names
                .iter()
                .filter(|n| n.starts_with(name) || n.contains(name))
                .take(5)
                .map(String::as_str)
                .collect();
            let hint = if near.is_empty() {
                "`paths` lists them".to_string()
            } else {
                format!("did you mean {}?", near.join(", "))
            };
            Failure::from(format!("no actor {name} in the cluster ({hint})"))
        })
    }
}

fn preferred_name(a: &ActorSnapshot, parent: Option<&str>) -> Option<String> {
    if let Some(path) = a.paths.first() {
        return Some(path.clone());
    }
    match (parent, &a.child) {
        (Some(parent), Some(child)) => Some(format!("{parent}/{}", child.id)),
        _ => a.name.clone(),
    }
}

/// The cluster's tree now, indexed.
pub(crate) async fn index(client: &Client, master: &str) -> Result<(ClusterTree, Index), Failure> {
    index_through(&client.node, &client.master, master).await
}

/// [`index`] through a node and the master's address, for work that outlives a borrow of
/// the client (the REPL's background refresh).
pub(crate) async fn index_through(
    node: &troupe_runtime::Node,
    master: &troupe_actors::client::MasterClient,
    master_addr: &str,
) -> Result<(ClusterTree, Index), Failure> {
    let state = master
        .state(false)
        .await
        .map_err(super::super::client::client_failure)?;
    let tree = cluster_tree(node, &state, Some(master_addr.to_string())).await;
    let index = Index::of(&tree);
    Ok((tree, index))
}

/// The actor named `name`, asking as few nodes as its name allows: `NODE:ID` its node,
/// `task/<id>` the node of the task's agent (through the master's `Locate`), `agent/<id>`
/// that agent's node, anything else the master's node first; only a name none of those
/// knows makes it ask every node, as `paths` does. A large cluster is not walked for a
/// name whose node is known.
pub(crate) async fn resolve(client: &Client, master: &str, name: &str) -> Result<Found, Failure> {
    let one_node = |node: String, addr: Option<String>| async move {
        let tree = ClusterTree {
            nodes: vec![node_tree(&node, Vec::new(), addr).await],
        };
        Index::of(&tree).find(name).ok().cloned()
    };
    let node = if let Some((node, _)) = name.split_once(':') {
        Some((node.to_string(), None))
    } else if let Some(task) = name.strip_prefix("task/") {
        match client
            .locate(&troupe_actors::protocol::TaskId(task.to_string()))
            .await
        {
            Ok(location) => location.agent.map(|agent| {
                let addr = agent.addr.clone();
                client.agent(&agent);
                (agent.node, Some(addr))
            }),
            Err(_) => None,
        }
    } else if let Some(rest) = name.strip_prefix("agent/") {
        let id = rest.split('/').next().unwrap_or(rest);
        client
            .state(false)
            .await?
            .agents
            .into_iter()
            .find(|a| a.info.id.0 == id)
            .map(|a| {
                let addr = a.info.addr.clone();
                client.agent(&a.info);
                (a.info.node, Some(addr))
            })
    } else {
        Some((client.master_node.clone(), Some(master.to_string())))
    };
    if let Some((node, addr)) = node {
        if let Some(found) = one_node(node, addr).await {
            return Ok(found);
        }
    }
    Ok(index(client, master).await?.1.find(name)?.clone())
}

fn inspector(node: &str) -> Addr<InspectorMsg> {
    Addr::on(node.to_string(), inspector_path(node))
}

/// `send PATH MSG...` and `call PATH MSG...`.
pub(crate) async fn text(found: &Found, words: &[String], call: bool) -> Result<(), Failure> {
    let line = join_words(words);
    let actor = found.actor.id.clone();
    let answer = inspector(&found.node)
        .call(
            |reply| InspectorMsg::Text {
                actor,
                line,
                call,
                reply,
            },
            if call {
                Duration::from_secs(60)
            } else {
                ACT_TIMEOUT
            },
        )
        .await
        .map_err(call_failure)?
        .map_err(|e| Failure::from(format!("{}: {e}", found.name)))?;
    match answer {
        Some(text) => println!("{text}"),
        None => println!("sent to {}", found.name),
    }
    Ok(())
}

/// `stop PATH [REASON]`: returns once the actor is gone (5 s at most), saying how.
pub(crate) async fn stop(found: &Found, reason: String) -> Result<(), Failure> {
    let down = match found.actor.paths.first() {
        Some(path) => {
            let addr = Addr::<EventMsg>::on(found.node.clone(), path.clone());
            troupe_runtime::monitor_channel(&addr).await.ok()
        }
        None => None,
    };
    let actor = found.actor.id.clone();
    let id = inspector(&found.node)
        .call(
            |reply| InspectorMsg::Stop {
                actor,
                reason: reason.clone(),
                reply,
            },
            ACT_TIMEOUT,
        )
        .await
        .map_err(call_failure)?
        .map_err(Failure::from)?;
    let how = match down {
        Some((monitor, down)) => match tokio::time::timeout(ACT_TIMEOUT, down).await {
            Ok(Ok(down)) => format!(": down, {}", down.reason),
            _ => {
                troupe_runtime::demonitor(&monitor);
                format!(": not down after {ACT_TIMEOUT:?}")
            }
        },
        None => String::new(),
    };
    println!(
        "stopped {} (actor {id} on {}) with reason {reason:?}{how}",
        found.name, found.node
    );
    Ok(())
}

/// `kill PATH`.
pub(crate) async fn kill(found: &Found) -> Result<(), Failure> {
    let actor = found.actor.id.clone();
    let id = inspector(&found.node)
        .call(|reply| InspectorMsg::Kill { actor, reply }, ACT_TIMEOUT)
        .await
        .map_err(call_failure)?
        .map_err(Failure::from)?;
    println!("killed {} (actor {id} on {})", found.name, found.node);
    Ok(())
}

fn kind_name(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::Supervisor => "supervisor",
        ActorKind::System => "system",
        ActorKind::Process => "process",
        ActorKind::Worker => "actor",
    }
}

/// `info PATH`: one actor's snapshot, in words.
pub(crate) fn info(found: &Found) -> String {
    let a = &found.actor;
    let mut out = format!(
        "{}\n  node      {}\n  actor     {}\n  kind      {}\n  status    {}\n",
        found.name,
        found.node,
        a.id,
        kind_name(a.kind),
        a.status
    );
    if a.paths.len() > 1 || a.paths.first() != Some(&found.name) {
        out.push_str(&format!("  paths     {}\n", a.paths.join(", ")));
    }
    if let (Some(parent), Some(child)) = (&found.parent, &a.child) {
        out.push_str(&format!(
            "  under     {parent} as {} ({}), restarts {}\n",
            child.id, child.kind, child.restarts
        ));
        if let Some(exit) = &child.last_exit {
            out.push_str(&format!("  last exit {exit}\n"));
        }
    }
    if let Some(sup) = &a.supervisor {
        let strategy = serde_json::to_value(sup.flags.strategy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out.push_str(&format!(
            "  strategy  {strategy}, intensity {} in {:?}\n",
            sup.flags.intensity, sup.flags.period
        ));
        for c in &sup.children {
            out.push_str(&format!(
                "  child     {} ({}) {:?}, restarts {}\n",
                c.id, c.kind, c.state, c.restarts
            ));
        }
    }
    if let Some(n) = a.messages_handled {
        out.push_str(&format!("  messages  {n}\n"));
    }
    if let Some(ms) = a.uptime_ms {
        out.push_str(&format!("  uptime    {:.1} s\n", ms as f64 / 1000.0));
    }
    for (k, v) in &a.details {
        out.push_str(&format!("  {k:<9} {v}\n"));
    }
    if !a.text_commands.is_empty() {
        out.push_str(&format!("  accepts   {}\n", a.text_commands.join(" | ")));
    }
    if let Some(note) = &a.note {
        out.push_str(&format!("  note      {note}\n"));
    }
    out
}

/// Arguments of `watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The actor; without it, every event of the cluster.
    path: Option<String>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long = "for", value_name = "SECONDS", allow_negative_numbers = true, value_parser = crate::commands::values::seconds)]
    duration: Option<Duration>,
}

/// What `watch` looks at, reduced to what is worth telling when it changes.
fn summary(a: &ActorSnapshot) -> String {
    let restarts = a.child.as_ref().map_or(0, |c| c.restarts);
    let mut s = format!("{} (actor {}), restarts {restarts}", a.status, a.id);
    for key in ["pid", "exit"] {
        if let Some(v) = a.details.get(key) {
            s.push_str(&format!(", {key} {v}"));
        }
    }
    s
}

/// Whether a cluster event concerns the watched actor.
fn concerns(event: &ClusterEvent, found: Option<&Found>) -> bool {
    let Some(found) = found else {
        return true;
    };
    let task = found.actor.details.get("task");
    let agent = found
        .name
        .strip_prefix("agent/")
        .map(|rest| rest.split('/').next().unwrap_or(rest));
    match event {
        ClusterEvent::Task { task: t } => task.is_some_and(|id| *id == t.id.0),
        ClusterEvent::AgentRegistered { agent: a } => agent == Some(a.id.0.as_str()),
        ClusterEvent::AgentUnreachable { agent: a, .. }
        | ClusterEvent::AgentRemoved { agent: a } => agent == Some(a.0.as_str()),
        _ => false,
    }
}

fn describe_event(event: &ClusterEvent) -> String {
    match event {
        ClusterEvent::Task { task } => {
            let on = task
                .agent
                .as_ref()
                .map(|a| format!(" on {a}"))
                .unwrap_or_default();
            let why = if task.status.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", task.status.reason)
            };
            format!("task {} {}{on}{why}", task.id, task.status.state)
        }
        ClusterEvent::AgentRegistered { agent } => {
            format!("agent {} registered ({})", agent.id, agent.resources)
        }
        ClusterEvent::AgentUnreachable { agent, reason } => {
            format!("agent {agent} unreachable: {reason}")
        }
        ClusterEvent::AgentRemoved { agent } => format!("agent {agent} removed"),
        ClusterEvent::FrameworkSubscribed { framework, name } => {
            format!("framework {framework} ({name}) subscribed")
        }
        ClusterEvent::FrameworkDisconnected { framework } => {
            format!("framework {framework} disconnected")
        }
        ClusterEvent::FrameworkRemoved { framework, reason } => {
            format!("framework {framework} removed: {reason}")
        }
    }
}

fn stamp() -> String {
    let ms = troupe_actors::protocol::now_ms();
    let secs = (ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    )
}

/// `watch [PATH]`: the cluster's events, or one actor's state changes, its `Down` and its
/// restarts, as they happen, until Ctrl-C (which cancels it) or `--for` runs out.
pub(crate) async fn watch(client: &Client, master: &str, args: WatchArgs) -> Result<(), Failure> {
    let found = match &args.path {
        Some(path) => Some(resolve(client, master, path).await?),
        None => None,
    };
    let mut events = client.master.events().await.map_err(Failure::from)?;
    watch_loop(found, &mut events, args.duration).await
}

async fn watch_loop(
    found: Option<Found>,
    events: &mut troupe_actors::events::Events,
    duration: Option<Duration>,
) -> Result<(), Failure> {
    let until = duration.map(|d| tokio::time::Instant::now() + d);
    let deadline = async {
        match until {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    match &found {
        Some(f) => println!("watching {} on {}: {}", f.name, f.node, summary(&f.actor)),
        None => println!("watching the cluster's events"),
    }
    // A monitor tells of the actor's end at once; polling its node tells of the rest.
    let mut down = match &found {
        Some(f) => monitor_found(f).await,
        None => None,
    };
    let mut last = found.as_ref().map(|f| summary(&f.actor));
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    poll.tick().await;
    let result = loop {
        tokio::select! {
            _ = &mut deadline => break Ok(()),
            event = events.next() => {
                let Some(troupe_actors::events::Event { event, .. }) = event else {
                    break Err(Failure::from("the master's event stream ended: the master core went away"));
                };
                if concerns(&event, found.as_ref()) {
                    println!("{} {}", stamp(), describe_event(&event));
                }
            }
            gone = async { match down.as_mut() { Some((_, rx)) => rx.await.ok(), None => std::future::pending().await } } => {
                down = None;
                if let (Some(d), Some(f)) = (gone, &found) {
                    println!("{} {} down: {}", stamp(), f.name, d.reason);
                }
            }
            _ = poll.tick(), if found.is_some() => {
                let Some(f) = &found else { continue };
                let tree = ClusterTree {
                    nodes: vec![node_tree(&f.node, Vec::new(), None).await],
                };
                if !tree.nodes[0].reachable {
                    continue;
                }
                let now = Index::of(&tree)
                    .find(&f.name)
                    .ok()
                    .map(|n| summary(&n.actor))
                    .unwrap_or_else(|| "not running".to_string());
                if last.as_deref() != Some(now.as_str()) {
                    println!("{} {} {now}", stamp(), f.name);
                    // A new actor at the path: watch for its end too.
                    if down.is_none() {
                        down = monitor_found(f).await;
                    }
                    last = Some(now);
                }
            }
        }
    };
    if let Some((monitor, _)) = down {
        troupe_runtime::demonitor(&monitor);
    }
    result
}

/// A monitor of the actor at `found`'s registered path, if it has one.
async fn monitor_found(
    found: &Found,
) -> Option<(
    troupe_runtime::Ref,
    tokio::sync::oneshot::Receiver<troupe_runtime::Down>,
)> {
    let path = found.actor.paths.first()?;
    let addr = Addr::<EventMsg>::on(found.node.clone(), path.clone());
    troupe_runtime::monitor_channel(&addr).await.ok()
}

/// What `top` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TopBy {
    /// Messages handled (supervisors count theirs).
    Messages,
    /// Cpu time used (process actors).
    Cpu,
    /// Memory in use (process actors).
    Memory,
}

/// Arguments of `top`.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// What to sort by (default: cpu with --tasks, else messages).
    #[arg(long, value_enum)]
    by: Option<TopBy>,
    /// Tasks only (process actors).
    #[arg(long)]
    tasks: bool,
    /// How many rows.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Milliseconds between refreshes.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    every: u64,
    /// Stop after this many refreshes (default: until Ctrl-C on a terminal, once otherwise).
    #[arg(long, value_name = "N")]
    times: Option<u64>,
}

fn number(details: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    details.get(key).and_then(|v| v.parse().ok())
}

/// One table of `top`.
fn top_table(tree: &ClusterTree, index: &Index, args: &TopArgs) -> String {
    let by = args.by.unwrap_or(if args.tasks {
        TopBy::Cpu
    } else {
        TopBy::Messages
    });
    let mut rows: Vec<(u64, &Found)> = index
        .names
        .iter()
        .filter_map(|n| index.find(n).ok())
        .filter(|f| !args.tasks || f.actor.kind == ActorKind::Process)
        .filter_map(|f| {
            let key = match by {
                TopBy::Messages => f.actor.messages_handled,
                TopBy::Cpu => number(&f.actor.details, "cpu_ms"),
                TopBy::Memory => number(&f.actor.details, "memory_bytes"),
            };
            key.map(|k| (k, f))
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let nodes = tree.nodes.len();
    let up = tree.nodes.iter().filter(|n| n.reachable).count();
    let mut out = format!(
        "{} nodes ({} answering), {} actors; by {:?}\n",
        nodes,
        up,
        index.names.len(),
        by
    );
    out.push_str(&format!(
        "{:<44} {:<8} {:>10} {:>10} {:>12} {:>8}\n",
        "ACTOR", "NODE", "MESSAGES", "CPU_MS", "MEMORY", "RESTARTS"
    ));
    for (_, f) in rows.into_iter().take(args.limit) {
        let a = &f.actor;
        let dash = || "-".to_string();
        out.push_str(&format!(
            "{:<44} {:<8} {:>10} {:>10} {:>12} {:>8}\n",
            f.name,
            f.node,
            a.messages_handled.map_or_else(dash, |n| n.to_string()),
            number(&a.details, "cpu_ms").map_or_else(dash, |n| n.to_string()),
            number(&a.details, "memory_bytes")
                .map_or_else(dash, |n| format!("{:.1} MiB", n as f64 / 1048576.0)),
            a.child.as_ref().map_or(0, |c| c.restarts),
        ));
    }
    out
}

/// `top`: the busiest actors or tasks, refreshed.
pub(crate) async fn top(client: &Client, master: &str, args: TopArgs) -> Result<(), Failure> {
    let terminal = std::io::stdout().is_terminal();
    let times = args.times.unwrap_or(if terminal { u64::MAX } else { 1 });
    for i in 0..times {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(args.every.max(100))).await;
        }
        let (tree, index) = index(client, master).await?;
        if terminal && times > 1 {
            // Clear the screen and go home, as top does.
            print!("\x1b[2J\x1b[H");
        }
        print!("{}", top_table(&tree, &index, &args));
    }
    Ok(())
}

/// Joins words back into one line that splits into the same words.
pub(crate) fn join_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty() && !w.chars().any(|c| c.is_whitespace() || "'\"\\".contains(c)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\"'\"'"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::join_words;
    use troupe_runtime::text::split_words;

    #[test]
    fn joined_words_split_back() {
        let words: Vec<String> = ["a", "b c", "it's", "", "x\"y", "back\\slash"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(split_words(&join_words(&words)).unwrap(), words);
    }
}
