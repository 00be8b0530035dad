//! Network partitions between the master and an agent, for real: `troupe master` in the
//! test's namespace, `troupe agent` in a network namespace of its own (`troupe_tests::net`),
//! the link between them cut both ways or one way only with `tc`, then healed. The outcomes
//! are the ones `docs/fault-tolerance.md` defines.

use std::time::{Duration, Instant};

use troupe_tests::net::{Cut, NetLab};
use troupe_tests::{ChildNode, ScratchDir, TEST_COOKIE, TaskLitter, require_root, troupe_at};

const TROUPE: &str = env!("CARGO_BIN_EXE_troupe");

/// A master in the test's namespace and one agent in a namespace of its own.
struct Partitioned {
    lab: NetLab,
    dir: ScratchDir,
    _master: ChildNode,
    master: String,
    agent_name: String,
    agent: Option<ChildNode>,
    _litter: TaskLitter,
}

impl Partitioned {
    /// `gone_after`: the master's `--agent-gone-after`, in seconds.
    fn start(tag: &str, gone_after: u64) -> Partitioned {
        let lab = NetLab::new(1).expect("the test's namespaces are made");
        let dir = ScratchDir::new(tag);
        let port = troupe_tests::free_port();
        let master_addr = format!("{}:{port}", lab.master_addr());
        let listen = format!("0.0.0.0:{port}");
        let mut cmd = troupe_tests::master_command(TROUPE, &format!("{tag}m"), &listen);
        cmd.args(["--advertise", &master_addr]);
        cmd.args(["--agent-gone-after", &gone_after.to_string(), "--registry"]);
        cmd.arg(dir.join("registry.json"));
        let master = ChildNode::spawn(&format!("{tag}m"), cmd).expect("troupe master starts");
        let agent_name = format!("{tag}{}", std::process::id());
        let litter = TaskLitter::new(dir.join("agent").join("sandboxes"), &agent_name);
        let mut partitioned = Partitioned {
            lab,
            dir,
            _master: master,
            master: master_addr,
            agent_name,
            agent: None,
            _litter: litter,
        };
        partitioned.agent = Some(partitioned.start_agent());
        partitioned
    }

    fn start_agent(&self) -> ChildNode {
        let host = self.lab.host(0);
        let mut cmd = self.lab.command_in(0, TROUPE);
        cmd.args(["agent", "--name", &self.agent_name, "--cookie", TEST_COOKIE]);
        cmd.args(["--master", &format!("{}:{}", host.gateway, self.port())]);
        cmd.args(["--listen", &format!("{}:0", host.addr)]);
        cmd.args(["--cpus", "1", "--mem", "256"]);
        cmd.arg("--work-dir").arg(self.dir.join("agent"));
        ChildNode::spawn(&self.agent_name, cmd).expect("troupe agent starts in its namespace")
    }

    fn port(&self) -> u16 {
        self.master.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn troupe(&self, args: &[&str]) -> (i32, String, String) {
        troupe_at(TROUPE, &self.master, args)
    }

    /// The task `id` as `ps --all --json` shows it.
    fn task(&self, id: &str) -> Option<serde_json::Value> {
        let (_, out, _) = self.troupe(&["ps", "--all", "--json"]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        tasks.into_iter().find(|t| t["id"] == id)
    }

    fn state(&self, id: &str) -> String {
        self.task(id)
            .and_then(|t| t["status"]["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits until task `id` is in `state`, for at most `within`.
    fn wait_state(&self, id: &str, state: &str, within: Duration) {
        let start = Instant::now();
        while self.state(id) != state {
            assert!(
                start.elapsed() < within,
                "task {id} is not {state} after {within:?}: {:?}",
                self.task(id)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the master lists the agent as reachable.
    fn agent_reachable(&self) -> bool {
        let (_, out, _) = self.troupe(&["tree", "--json", "--depth", "0"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|tree| tree["nodes"].as_array().cloned())
            .is_some_and(|nodes| {
                nodes.iter().any(|n| {
                    n["reachable"] == true && n["roles"].to_string().contains(&self.agent_name)
                })
            })
    }

    fn wait_agent(&self, within: Duration) {
        let start = Instant::now();
        while !self.agent_reachable() {
            assert!(
                start.elapsed() < within,
                "the agent is not back within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a detached `sleep` and waits until it runs: its id and pid.
    fn sleeper(&self, name: &str) -> (String, i32) {
        let start = Instant::now();
        loop {
            let (code, out, err) =
                self.troupe(&["run", "--detach", "--name", name, "--", "sleep", "600"]);
            if code == 0 {
                let id = out.trim().to_string();
                self.wait_state(&id, "running", Duration::from_secs(20));
                let pid = self.task(&id).and_then(|t| t["pid"].as_i64()).unwrap() as i32;
                return (id, pid);
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{err}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn running(pid: i32) -> bool {
    troupe_os::procfs::is_running(pid)
}

#[test]
fn a_two_way_cut_healed_within_the_agent_timeout_leaves_its_task_running_and_the_agent_back() {
    if !require_root("network namespaces") {
        return;
    }
    cut_and_healed_within_the_agent_timeout("twoway", Cut::Both);
}

#[test]
fn a_two_way_cut_past_the_agent_timeout_removes_the_agent_which_kills_its_tasks_and_starts_fresh_when_healed()
 {
    if !require_root("network namespaces") {
        return;
    }
    let p = Partitioned::start("removed", 3);
    p.wait_agent(Duration::from_secs(20));
    let (id, pid) = p.sleeper("doomed");

    p.lab.cut(0, Cut::Both).unwrap();
    p.wait_state(&id, "unreachable", Duration::from_secs(15));
    // Past `--agent-gone-after`: removed, its task gone for the master's books.
    p.wait_state(&id, "gone", Duration::from_secs(20));
    assert!(running(pid), "cut off, the agent cannot know yet");

    // Healed: the agent is told it was removed; it kills its tasks (no task id runs
    // twice: the framework may have run it elsewhere) and registers again as a fresh life.
    p.lab.heal(0);
    let start = Instant::now();
    while running(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the removed agent's task still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    p.wait_agent(Duration::from_secs(40));
    assert_eq!(
        p.state(&id),
        "gone",
        "its end stays what the master decided"
    );
    // The fresh agent runs new work.
    let (fresh, fresh_pid) = p.sleeper("fresh");
    assert!(running(fresh_pid));
    let (code, _, err) = p.troupe(&["kill", &fresh]);
    assert_eq!(code, 0, "{err}");
}

/// A cut (both ways or one way) between the master and the agent, healed before the agent
/// timeout: noticed in about a second (a one-way cut too: heartbeats are answered, so either
/// way silences the peer), the task kept running while cut off, then `Running` again with
/// the same process, and work flowing both ways again (a kill reaches the agent, its end the
/// master).
fn cut_and_healed_within_the_agent_timeout(tag: &str, cut: Cut) {
    let p = Partitioned::start(tag, 60);
    p.wait_agent(Duration::from_secs(20));
    let (id, pid) = p.sleeper("napper");
    p.lab.cut(0, cut).unwrap();
    p.wait_state(&id, "unreachable", Duration::from_secs(15));
    assert!(running(pid), "the agent keeps its task while cut off");
    p.lab.heal(0);
    p.wait_state(&id, "running", Duration::from_secs(40));
    assert_eq!(
        p.task(&id).and_then(|t| t["pid"].as_i64()),
        Some(pid as i64),
        "the same process"
    );
    p.wait_agent(Duration::from_secs(20));
    let (code, _, err) = p.troupe(&["kill", &id]);
    assert_eq!(code, 0, "{err}");
    p.wait_state(&id, "killed", Duration::from_secs(30));
    assert!(!running(pid));
}

#[test]
fn a_one_way_cut_from_the_agent_to_the_master_is_noticed_and_heals() {
    if !require_root("network namespaces") {
        return;
    }
    cut_and_healed_within_the_agent_timeout("fromagent", Cut::FromHost);
}

#[test]
fn a_one_way_cut_from_the_master_to_the_agent_is_noticed_and_heals() {
    if !require_root("network namespaces") {
        return;
    }
    cut_and_healed_within_the_agent_timeout("toagent", Cut::ToHost);
}
