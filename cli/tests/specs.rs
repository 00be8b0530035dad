//! Supervision specs on a real cluster: `troupe master` and three `troupe agent`s as OS
//! processes on one host (each with its own port range), specs applied with `troupe apply`
//! as an operator would, and the children checked as real processes and by the ports that
//! answer.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use troupe_specs::engine::LeafState;
use troupe_specs::service::{ChildView, SpecView};

use troupe_tests::{ChildNode, ScratchDir, TEST_COOKIE, TaskLitter, http_get, troupe_at};

const TROUPE: &str = env!("CARGO_BIN_EXE_troupe");

/// A master (with a registry) and three agents, each agent with its own 100 ports from
/// `first_port`.
struct Cluster {
    dir: ScratchDir,
    master: Option<ChildNode>,
    master_port: u16,
    names: Vec<String>,
    agents: Vec<Option<ChildNode>>,
    first_port: u16,
    _litter: Vec<TaskLitter>,
}

impl Cluster {
    fn start(tag: &str, first_port: u16) -> Cluster {
        let dir = ScratchDir::new(tag);
        let pid = std::process::id();
        let names: Vec<String> = (0..3).map(|i| format!("{tag}{pid}a{i}")).collect();
        let litter = names
            .iter()
            .map(|n| TaskLitter::new(dir.join(n).join("sandboxes"), n))
            .collect();
        let mut cluster = Cluster {
            master: None,
            master_port: troupe_tests::free_port(),
            names,
            agents: Vec::new(),
            first_port,
            _litter: litter,
            dir,
        };
        cluster.start_master();
        cluster.agents = (0..3).map(|i| Some(cluster.agent(i))).collect();
        cluster
    }

    fn start_master(&mut self) {
        let mut cmd = Command::new(TROUPE);
        cmd.args(["master", "--name", "specm", "--cookie", TEST_COOKIE]);
        cmd.args(["--listen", &format!("127.0.0.1:{}", self.master_port)]);
        cmd.args(["--allocation-interval-ms", "100", "--registry"]);
        cmd.arg(self.dir.join("registry.json"));
        self.master = Some(ChildNode::spawn("specm", cmd).expect("troupe master starts"));
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.master_port)
    }

    fn agent(&self, i: usize) -> ChildNode {
        let name = &self.names[i];
        let first = self.first_port + 100 * i as u16;
        let mut cmd = Command::new(TROUPE);
        cmd.args(["agent", "--name", name, "--cookie", TEST_COOKIE]);
        cmd.args(["--master", &self.addr(), "--cpus", "1", "--mem", "512"]);
        cmd.args(["--ports", &format!("{first}-{}", first + 99)]);
        cmd.arg("--work-dir").arg(self.dir.join(name));
        ChildNode::spawn(name, cmd).expect("troupe agent starts")
    }

    fn troupe(&self, args: &[&str]) -> (i32, String, String) {
        troupe_at(TROUPE, &self.addr(), args)
    }

    fn specs(&self) -> Vec<SpecView> {
        let (code, out, err) = self.troupe(&["specs", "--json"]);
        assert_eq!(code, 0, "troupe specs: {err}");
        serde_json::from_str(&out).expect("troupe specs --json")
    }

    fn spec(&self, name: &str) -> SpecView {
        self.specs()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no spec {name}"))
    }

    /// Waits until `spec`'s view meets `good`, for at most `within`.
    fn wait_spec(
        &self,
        name: &str,
        within: Duration,
        good: impl Fn(&SpecView) -> bool,
    ) -> SpecView {
        let start = Instant::now();
        loop {
            let view = self.spec(name);
            if good(&view) {
                return view;
            }
            assert!(
                start.elapsed() < within,
                "spec {name} did not get there in {within:?}: {view:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the master lists every agent as reachable (its tree's nodes).
    fn wait_agents(&self) {
        let start = Instant::now();
        loop {
            let (code, out, _) = self.troupe(&["tree", "--json", "--depth", "0"]);
            let reachable = serde_json::from_str::<serde_json::Value>(&out)
                .ok()
                .and_then(|tree| tree["nodes"].as_array().cloned())
                .map_or(0, |nodes| {
                    nodes
                        .iter()
                        .filter(|n| {
                            n["reachable"] == true && n["roles"].to_string().contains("agent")
                        })
                        .count()
                });
            if code == 0 && reachable >= self.names.len() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "agents did not register: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The pid of a process whose command line is exactly `argv`, if one runs.
fn pids_of(pred: impl Fn(&[String]) -> bool) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let argv: Vec<String> = raw
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                pred(&argv)
            })
        })
        .filter(|pid| troupe_os::procfs::is_running(*pid))
        .collect()
}

/// The web servers of this test's ports that run.
fn web_servers(first: u16) -> Vec<(i32, u16)> {
    let ours = |port: u16| (first..first + 300).contains(&port);
    let mut found = Vec::new();
    for pid in pids_of(|argv| argv.len() == 6 && argv[1..4] == ["-m", "http.server", "--bind"]) {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let port = String::from_utf8_lossy(&argv)
            .split('\0')
            .nth(5)
            .and_then(|p| p.parse::<u16>().ok());
        if let Some(port) = port.filter(|p| ours(*p)) {
            found.push((pid, port));
        }
    }
    found.sort();
    found
}

fn answers(port: u16) -> bool {
    http_get(&format!("127.0.0.1:{port}"), "/", Duration::from_secs(2))
        .is_ok_and(|(code, _)| code == 200)
}

/// Waits until every running child of `view` answers on its port.
fn wait_answering(children: &[ChildView]) {
    let start = Instant::now();
    for child in children {
        let port = child.ports[0];
        while !answers(port) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} does not answer on {port}",
                child.path
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn pid_of(process: &str, cluster: &Cluster) -> i32 {
    let (code, out, err) = cluster.troupe(&["procs", "--json"]);
    assert_eq!(code, 0, "{err}");
    let procs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    procs
        .iter()
        .find(|p| p["id"] == process)
        .and_then(|p| p["pid"].as_i64())
        .unwrap_or_else(|| panic!("no pid for {process}: {out}")) as i32
}

fn all_running(view: &SpecView, n: usize) -> bool {
    view.running == n
        && view
            .children
            .iter()
            .filter(|c| c.state == LeafState::Running)
            .count()
            == n
        && view
            .children
            .iter()
            .all(|c| c.state != LeafState::Running || !c.ports.is_empty() || c.process.is_some())
}

fn example(name: &str) -> String {
    format!("{}/../examples/specs/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_web_spec_serves_restarts_a_crash_on_its_agent_moves_off_a_lost_agent_and_fences_the_stale_copy()
 {
    let mut cluster = Cluster::start("web", 21_000);
    cluster.wait_agents();
    let (code, out, err) = cluster.troupe(&["apply", &example("web.toml")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("spec web: will create"), "{out}");
    assert!(out.contains("+ server-2"), "{out}");

    // Three servers, each on an agent of its own (spread), each answering on a port of its
    // agent's range.
    let view = cluster.wait_spec("web", Duration::from_secs(30), |v| all_running(v, 3));
    wait_answering(&view.children);
    let agents: BTreeSet<_> = view.children.iter().map(|c| c.agent.clone()).collect();
    assert_eq!(agents.len(), 3, "spread over the agents: {view:#?}");
    for child in &view.children {
        let i = cluster
            .names
            .iter()
            .position(|n| Some(n.as_str()) == child.agent.as_ref().map(|a| a.0.as_str()))
            .unwrap();
        let first = 21_000 + 100 * i as u16;
        assert!((first..first + 100).contains(&child.ports[0]), "{child:?}");
    }
    assert_eq!(web_servers(21_000).len(), 3);
    // The spec is in the cluster's tree, a supervisor with its children on their agents.
    let (code, tree, err) = cluster.troupe(&["tree"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        tree.contains("web  [spec supervisor] running, 3/3 running"),
        "{tree}"
    );
    for child in &view.children {
        let agent = child.agent.as_ref().unwrap();
        assert!(
            tree.contains(&format!("{}  [process] running, on {agent}", child.path)),
            "{tree}"
        );
    }

    // kill -9 of one server: started again, on the same agent, and it answers.
    let victim = view.children[0].clone();
    let pid = pid_of(&victim.process.clone().unwrap().0, &cluster);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let view = cluster.wait_spec("web", Duration::from_secs(30), |v| {
        all_running(v, 3) && v.children[0].restarts == 1
    });
    assert_eq!(
        view.children[0].agent, victim.agent,
        "restarted on its own agent"
    );
    assert!(
        view.children[0]
            .last_end
            .as_deref()
            .unwrap_or("")
            .contains("SIGKILL"),
        "{view:#?}"
    );
    wait_answering(&view.children);

    // SIGKILL of an agent process (its server runs on, cut off): the child is started on
    // another agent, and answers there.
    let lost = view.children[1].clone();
    let lost_agent = cluster
        .names
        .iter()
        .position(|n| Some(n.as_str()) == lost.agent.as_ref().map(|a| a.0.as_str()))
        .unwrap();
    cluster.agents[lost_agent] = None;
    let view = cluster.wait_spec("web", Duration::from_secs(40), |v| {
        all_running(v, 3) && v.children[1].agent != lost.agent
    });
    assert!(
        view.children[1]
            .last_end
            .as_deref()
            .unwrap_or("")
            .contains("agent"),
        "{view:#?}"
    );
    wait_answering(&view.children);
    assert!(
        answers(lost.ports[0]),
        "the stale copy still runs while its agent is away"
    );
    assert_eq!(web_servers(21_000).len(), 4);

    // The agent comes back: its stale copy is killed; exactly three serve.
    cluster.agents[lost_agent] = Some(cluster.agent(lost_agent));
    let start = Instant::now();
    while web_servers(21_000).len() != 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the stale copy still runs: {:?}",
            web_servers(21_000)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let view = cluster.spec("web");
    let serving: BTreeSet<u16> = web_servers(21_000).iter().map(|(_, p)| *p).collect();
    let wanted: BTreeSet<u16> = view.children.iter().map(|c| c.ports[0]).collect();
    assert_eq!(serving, wanted, "exactly the children's ports are served");
    assert!(!answers(lost.ports[0]) || wanted.contains(&lost.ports[0]));
    wait_answering(&view.children);

    // Deleted: every child stops, in reverse order.
    let (code, out, err) = cluster.troupe(&["delete", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("stopped: server-2, server-1, server-0"),
        "{out}"
    );
    assert!(web_servers(21_000).is_empty());
    assert!(cluster.specs().is_empty());
}

const TRIO: &str = r#"name = "trio"
strategy = "one_for_one"

[[children]]
id = "first"
command = "sleep"
args = ["3001"]

[[children]]
id = "second"
command = "sleep"
args = ["3002"]

[[children]]
id = "third"
command = "sleep"
args = ["3003"]
"#;

const CRASHER: &str = r#"name = "crasher"
intensity = 2
period = "1m"

[[children]]
id = "steady"
command = "sleep"
args = ["3010"]

[[children]]
id = "bad"
command = "sh"
args = ["-c", "sleep 0.2; exit 3"]
"#;

fn sleep_pids(arg: &str) -> Vec<i32> {
    let want = arg.to_string();
    pids_of(|argv| argv.len() == 2 && argv[0].ends_with("sleep") && argv[1] == want)
}

fn children_pids(cluster: &Cluster, view: &SpecView) -> Vec<i32> {
    view.children
        .iter()
        .map(|c| pid_of(&c.process.clone().unwrap().0, cluster))
        .collect()
}

#[test]
fn an_edit_restarts_only_the_changed_child_a_dry_run_changes_nothing_a_crash_loop_gives_up_and_the_master_restart_keeps_every_child()
 {
    let mut cluster = Cluster::start("edit", 22_000);
    cluster.wait_agents();
    let trio = cluster.write("trio.toml", TRIO);
    let (code, out, err) = cluster.troupe(&["apply", trio.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let view = cluster.wait_spec("trio", Duration::from_secs(30), |v| all_running(v, 3));
    let before = children_pids(&cluster, &view);

    // One child's arguments edited: --dry-run says so and changes nothing.
    let edited = cluster.write("trio2.toml", &TRIO.replace("\"3002\"", "\"3004\""));
    let (code, out, _) = cluster.troupe(&["apply", "--dry-run", edited.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("would update") && out.contains("~ second  (restart: args changed)"),
        "{out}"
    );
    assert!(!out.contains("first") && !out.contains("third"), "{out}");
    let (code, out, _) = cluster.troupe(&["diff", edited.to_str().unwrap()]);
    assert_eq!(code, 1, "diff exits 1 when it would change: {out}");
    std::thread::sleep(Duration::from_millis(500));
    let same = cluster.spec("trio");
    assert_eq!(
        children_pids(&cluster, &same),
        before,
        "a dry run changes nothing"
    );
    assert!(same.text.contains("3002"));
    assert_eq!(sleep_pids("3004"), Vec::<i32>::new());

    // Applied: that child alone restarts.
    let (code, out, err) = cluster.troupe(&["apply", edited.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let view = cluster.wait_spec("trio", Duration::from_secs(30), |v| {
        all_running(v, 3) && sleep_pids("3004").len() == 1
    });
    let after = children_pids(&cluster, &view);
    assert_eq!(
        (after[0], after[2]),
        (before[0], before[2]),
        "the others' pids are unchanged"
    );
    assert_ne!(after[1], before[1]);
    assert!(sleep_pids("3002").is_empty());
    let (code, out, _) = cluster.troupe(&["diff", edited.to_str().unwrap()]);
    assert_eq!(code, 0, "nothing left to change: {out}");

    // A child that always crashes: its supervisor gives up after its intensity, and
    // `troupe specs` says why.
    let crasher = cluster.write("crasher.toml", CRASHER);
    let (code, out, err) = cluster.troupe(&["apply", crasher.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let failed = cluster.wait_spec("crasher", Duration::from_secs(40), |v| v.health == "failed");
    let why = failed.failure.clone().unwrap();
    assert!(why.contains("gave up after 2 restarts within 60s"), "{why}");
    assert!(why.contains("bad: exited with code 3"), "{why}");
    let (_, table, _) = cluster.troupe(&["specs"]);
    assert!(table.contains("gave up after 2 restarts"), "{table}");
    assert!(
        sleep_pids("3010").is_empty(),
        "the spec's other children are stopped"
    );

    // The master killed and restarted: the same specs, and no child's pid changed.
    let specs_before: BTreeSet<String> = cluster.specs().iter().map(|s| s.name.clone()).collect();
    cluster.master = None;
    std::thread::sleep(Duration::from_millis(300));
    cluster.start_master();
    let view = cluster.wait_spec("trio", Duration::from_secs(40), |v| all_running(v, 3));
    let specs_after: BTreeSet<String> = cluster.specs().iter().map(|s| s.name.clone()).collect();
    assert_eq!(specs_after, specs_before);
    assert_eq!(
        children_pids(&cluster, &view),
        after,
        "no child was restarted"
    );
    assert_eq!(sleep_pids("3001").len(), 1);
    assert_eq!(sleep_pids("3004").len(), 1);

    let (code, _, err) = cluster.troupe(&["delete", "trio"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cluster.troupe(&["delete", "crasher"]);
    assert_eq!(code, 0, "{err}");
    assert!(sleep_pids("3001").is_empty() && sleep_pids("3004").is_empty());
}

// The table of malformed specs `supervisor-specs/tests/format.rs` reads alone.
include!("../../supervisor-specs/tests/cases/malformed.rs");

#[test]
fn a_malformed_spec_is_refused_with_its_places_and_nothing_changes() {
    let cluster = Cluster::start("bad", 23_000);
    cluster.wait_agents();
    // A spec running, which no refused file may touch (its own sleeps: tests run side by
    // side, and others count theirs).
    let trio = cluster.write("trio.toml", &TRIO.replace("\"300", "\"400"));
    let (code, out, err) = cluster.troupe(&["apply", trio.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let before = cluster.wait_spec("trio", Duration::from_secs(30), |v| all_running(v, 3));

    // Every malformed spec of the table, applied for real: refused with its place and the
    // problem named, and nothing changes.
    assert!(MALFORMED.len() >= 20);
    for (i, (case, text, (line, column), words)) in MALFORMED.iter().enumerate() {
        let file = cluster.write(&format!("bad{i}.toml"), text);
        let file = file.to_str().unwrap();
        let (code, out, err) = cluster.troupe(&["apply", file]);
        assert_eq!(code, 65, "{case}: {out}{err}");
        assert!(
            err.contains(&format!("{file}:{line}:{column}: ")),
            "{case}: {err}"
        );
        for word in *words {
            assert!(err.contains(word), "{case}: {word:?} not in {err}");
        }
        assert!(out.is_empty(), "{case}: no plan for a refused file: {out}");
    }
    let after = cluster.specs();
    assert_eq!(after.len(), 1, "no spec was added: {after:#?}");
    assert_eq!(
        after[0]
            .children
            .iter()
            .map(|c| &c.process)
            .collect::<Vec<_>>(),
        before
            .children
            .iter()
            .map(|c| &c.process)
            .collect::<Vec<_>>(),
        "no child was touched"
    );
    let (code, _, err) = cluster.troupe(&["delete", "trio"]);
    assert_eq!(code, 0, "{err}");

    let bad = cluster.write(
        "bad.toml",
        "name = \"bad\"\nstrategy = \"one_for_none\"\n[[children]]\nid = \"a\"\ncomand = \"true\"\nresources = { cpus = 64 }\n",
    );
    let (code, out, err) = cluster.troupe(&["apply", bad.to_str().unwrap()]);
    assert_eq!(code, 65, "{out}{err}");
    assert!(err.contains("3 problems"), "{err}");
    assert!(
        err.contains("bad.toml:2:12: unknown strategy \"one_for_none\""),
        "{err}"
    );
    assert!(err.contains("bad.toml:5:1: unknown key `comand`"), "{err}");
    assert!(err.contains("did you mean `command`"), "{err}");
    assert!(cluster.specs().is_empty(), "nothing applied");
    // Resources no agent can ever hold are refused against the live cluster.
    let big = cluster.write(
        "big.toml",
        "name = \"big\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nresources = { cpus = 64 }\n",
    );
    let (code, _, err) = cluster.troupe(&["apply", big.to_str().unwrap()]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("big.toml:5:1:") && err.contains("can ever hold"),
        "{err}"
    );
    let (code, _, err) = cluster.troupe(&["delete", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("no spec nosuch is applied"), "{err}");
    let (code, _, err) = cluster.troupe(&["apply", "/nonexistent/spec.toml"]);
    assert_eq!(code, 65);
    assert!(err.contains("cannot read /nonexistent/spec.toml"), "{err}");
    assert!(cluster.specs().is_empty());
}

fn redis(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (CI installs redis-server)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_redis(port: u16, args: &[&str], want: &str) {
    let start = Instant::now();
    loop {
        let got = redis(port, args);
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "redis on {port}: {args:?} gave {got:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_redis_spec_restarts_the_replica_after_its_primary_under_rest_for_one() {
    let cluster = Cluster::start("redis", 24_000);
    cluster.wait_agents();
    let (code, out, err) = cluster.troupe(&["apply", &example("redis.toml")]);
    assert_eq!(code, 0, "{out}{err}");
    let view = cluster.wait_spec("redis", Duration::from_secs(30), |v| all_running(v, 2));
    let (primary, replica) = (view.children[0].ports[0], view.children[1].ports[0]);
    wait_redis(primary, &["PING"], "PONG");
    wait_redis(replica, &["PING"], "PONG");
    assert_eq!(redis(primary, &["SET", "before", "1"]), "OK");
    wait_redis(replica, &["GET", "before"], "1");
    let replica_pid = pid_of(&view.children[1].process.clone().unwrap().0, &cluster);

    // The primary killed: it starts again, and rest_for_one starts the replica after it,
    // following the new primary.
    let primary_pid = pid_of(&view.children[0].process.clone().unwrap().0, &cluster);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(primary_pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let view = cluster.wait_spec("redis", Duration::from_secs(30), |v| {
        all_running(v, 2) && v.children[0].restarts == 1 && v.children[1].restarts == 1
    });
    assert!(
        view.children[1]
            .last_end
            .as_deref()
            .unwrap_or("")
            .contains("stopped by its supervisor"),
        "{view:#?}"
    );
    let new_replica_pid = pid_of(&view.children[1].process.clone().unwrap().0, &cluster);
    assert_ne!(
        new_replica_pid, replica_pid,
        "the replica was started again"
    );
    let (primary, replica) = (view.children[0].ports[0], view.children[1].ports[0]);
    wait_redis(primary, &["PING"], "PONG");
    assert_eq!(redis(primary, &["SET", "after", "2"]), "OK");
    assert_eq!(
        redis(primary, &["GET", "after"]),
        "2",
        "read back from the new primary"
    );
    wait_redis(replica, &["GET", "after"], "2");

    let (code, _, err) = cluster.troupe(&["delete", "redis"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_pipeline_spec_runs_each_temporary_step_once_and_finishes_with_its_significant_step() {
    let cluster = Cluster::start("pipe", 25_000);
    cluster.wait_agents();
    let (code, out, err) = cluster.troupe(&["apply", &example("pipeline.toml")]);
    assert_eq!(code, 0, "{out}{err}");
    let view = cluster.wait_spec("pipeline", Duration::from_secs(30), |v| {
        v.health == "finished"
    });
    assert!(view.failure.is_none(), "{view:#?}");
    assert_eq!(view.restarts, 0, "each step ran once: {view:#?}");
    assert!(
        view.children
            .iter()
            .all(|c| c.state == LeafState::Ended || c.state == LeafState::Stopped)
    );
    // The count step's output, by its process's id.
    let (code, json, err) = cluster.troupe(&["procs", "--json", "--name", "pipeline-count"]);
    assert_eq!(code, 0, "{err}");
    let procs: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(procs.len(), 1, "{json}");
    let id = procs[0]["id"].as_str().unwrap();
    let (code, logs, err) = cluster.troupe(&["logs", id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(logs.trim(), "1000");
    let (code, _, err) = cluster.troupe(&["delete", "pipeline"]);
    assert_eq!(code, 0, "{err}");
}
