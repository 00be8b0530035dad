//! The cluster as users run it: `troupe master` and `troupe agent` processes with a
//! framework in this test's process, and `troupe dev` driven by the other commands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use troupe_actors::framework::{Driver, FrameworkSettings};
use troupe_actors::protocol::{Resources, TaskId, TaskState, TaskStatus};
use troupe_os::warm::RESERVED_PREFIX;
use troupe_tests::cluster::{Seen, TestFramework, sh_task};
use troupe_tests::{ChildNode, ScratchDir, TEST_COOKIE, TaskLitter, start_local_node};

const TROUPE: &str = env!("CARGO_BIN_EXE_troupe");

fn scratch(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("cli-{name}"))
}

/// Whether a cgroup of `agent` still has task directories (root only; `false` otherwise).
/// The task cgroups left under `troupe/<agent>` (the agent's warm cgroups, made ahead for
/// launches to come, are not a task's).
fn cgroups_left(agent: &str) -> Vec<PathBuf> {
    ["memory", "pids", "cpu", "cpuacct", "cpu,cpuacct", "freezer"]
        .iter()
        .map(|h| {
            Path::new("/sys/fs/cgroup")
                .join(h)
                .join("troupe")
                .join(agent)
        })
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(RESERVED_PREFIX))
        })
        .collect()
}

async fn statuses_until(
    seen: &mut UnboundedReceiver<Seen>,
    ended: usize,
    limit: Duration,
) -> BTreeMap<TaskId, Vec<TaskStatus>> {
    let mut by_task: BTreeMap<TaskId, Vec<TaskStatus>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while by_task
        .values()
        .filter(|s| s.iter().any(|s| s.state.is_terminal()))
        .count()
        < ended
    {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(Seen::Status(s))) => by_task.entry(s.task.clone()).or_default().push(s),
            Ok(Some(Seen::Offers(_))) => {}
            _ => break,
        }
    }
    by_task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_and_three_agent_processes_run_100_tasks_each_ending_once_at_the_framework() {
    let dir = scratch("procs");
    let mut master = Command::new(TROUPE);
    master.args([
        "master",
        "--name",
        "pm",
        "--listen",
        "127.0.0.1:0",
        "--cookie",
        TEST_COOKIE,
    ]);
    master.args(["--allocation-interval-ms", "100", "--registry"]);
    master.arg(dir.join("registry.json"));
    let master = ChildNode::spawn("pm", master).expect("troupe master starts");
    let tag = std::process::id();
    let mut agents = Vec::new();
    let mut litter = Vec::new();
    for i in 1..=3 {
        let name = format!("pa{tag}-{i}");
        let work = dir.join(&name);
        let mut agent = Command::new(TROUPE);
        agent.args(["agent", "--name", &name, "--cookie", TEST_COOKIE]);
        agent.args(["--master", &master.addr.to_string()]);
        agent.args(["--listen", &format!("127.0.0.{}:0", i + 1)]);
        agent.args(["--cpus", "2", "--mem", "1024", "--work-dir"]);
        agent.arg(&work);
        litter.push(TaskLitter::new(work.join("sandboxes"), &name));
        agents.push(ChildNode::spawn(&name, agent).expect("troupe agent starts"));
    }
    start_local_node("pfw", TEST_COOKIE).await;
    // 100 tasks of mixed exit codes; some take a little while, so that several run at once.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let script = if i % 10 == 0 {
                format!("sleep 0.3; exit {}", i % 5)
            } else {
                format!("exit {}", i % 5)
            };
            sh_task(&format!("p{i}"), &script)
        })
        .collect();
    let (fw, mut seen) = TestFramework::auto(tasks);
    let driver = Driver::start(FrameworkSettings::new("hundred"), Some(master.addr), fw)
        .await
        .expect("the framework subscribes to the master process");
    let by_task = statuses_until(&mut seen, 100, Duration::from_secs(60)).await;
    let ended = by_task
        .values()
        .filter(|s| s.iter().any(|s| s.state.is_terminal()))
        .count();
    if ended < 100 {
        // Say where the others are stuck, as the master sees them.
        let (_, books, _) = troupe(&master.addr.to_string(), &["ps", "--all"]);
        panic!("{ended} of 100 tasks ended within 60 s; the master's books:\n{books}");
    }
    let mut on_agents = BTreeMap::new();
    for i in 0..100 {
        let statuses = &by_task[&TaskId(format!("p{i}"))];
        let ends: Vec<_> = statuses.iter().filter(|s| s.state.is_terminal()).collect();
        assert_eq!(ends.len(), 1, "p{i} ends exactly once: {statuses:?}");
        let code = i % 5;
        let want = if code == 0 {
            TaskState::Finished
        } else {
            TaskState::Failed
        };
        assert_eq!(
            (ends[0].state, ends[0].exit_code),
            (want, Some(code)),
            "p{i}"
        );
        *on_agents.entry(ends[0].agent.clone()).or_insert(0) += 1;
    }
    assert!(
        on_agents.len() >= 2,
        "tasks spread over the agents: {on_agents:?}"
    );
    // Every update was acknowledged: the agents' checkpoints hold nothing pending.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 1..=3 {
        let checkpoint = dir.join(format!("pa{tag}-{i}")).join("agent.json");
        loop {
            let text = std::fs::read_to_string(&checkpoint).unwrap_or_default();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let empty = value["tasks"].as_object().is_some_and(|t| t.is_empty())
                && value["updates"]["streams"]
                    .as_object()
                    .is_some_and(|s| s.is_empty());
            if empty {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "unacknowledged updates left: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Every resource is back in the pool: a new framework is offered all of it.
    driver.stop();
    let (fresh, mut seen) = TestFramework::manual();
    let fresh = Driver::start(FrameworkSettings::new("after"), Some(master.addr), fresh)
        .await
        .expect("a second framework subscribes");
    let mut offered = Resources::ZERO;
    let want = Resources::new(6.0, 3072.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !offered.contains(&want) {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(Seen::Offers(offers))) => {
                for o in offers {
                    offered = offered.plus(o.resources);
                }
            }
            Ok(Some(_)) => {}
            _ => panic!("only {offered} offered after the tasks ended, want {want}"),
        }
    }
    fresh.stop();
    // Nothing is left: no process in a sandbox, no cgroup of any task.
    let in_sandboxes: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| p.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|p| std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)))
        .map(|p| p.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        in_sandboxes.is_empty(),
        "processes left in sandboxes: {in_sandboxes:?}"
    );
    if rustix::process::geteuid().is_root() {
        for i in 1..=3 {
            let left = cgroups_left(&format!("pa{tag}-{i}"));
            assert!(left.is_empty(), "cgroups left: {left:?}");
        }
    }
    drop(agents);
    drop(master);
    drop(litter);
}

/// Runs `troupe ARGS` against the master at `addr`; returns code, stdout and stderr.
fn troupe(addr: &str, args: &[&str]) -> (i32, String, String) {
    troupe_tests::troupe_at(TROUPE, addr, args)
}

/// `troupe dev` named `tag` and this test's pid, with its work under `dir`.
fn dev(tag: &str, dir: &Path) -> (ChildNode, String, Vec<TaskLitter>) {
    let name = format!("{tag}{}", std::process::id());
    let (node, litter) = troupe_tests::start_dev(Path::new(TROUPE), &name, dir)
        .expect("troupe dev starts and says where");
    (node, name, litter)
}

#[test]
fn dev_run_exits_with_the_task_code_ps_lists_it_logs_follow_and_kill_ends_it() {
    let dir = scratch("dev");
    let (cluster, _, _litter) = dev("dv", &dir);
    let addr = cluster.addr.to_string();

    // `troupe run` exits with the task's code and streams its output.
    let (code, out, err) = troupe(
        &addr,
        &["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(code, 3, "stdout: {out} stderr: {err}");
    assert_eq!(out, "out\n");
    assert!(err.contains("err\n"), "{err}");
    assert!(err.contains("running"), "state changes on stderr: {err}");

    // `troupe ps --json` lists it (ended, so with --all).
    let (code, out, err) = troupe(&addr, &["ps", "--all", "--json"]);
    assert_eq!(code, 0, "{err}");
    let tasks: serde_json::Value = serde_json::from_str(&out).expect("ps --json parses");
    let listed = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["command"][2] == "echo out; echo err >&2; exit 3")
        .unwrap_or_else(|| panic!("the task is listed: {out}"));
    assert_eq!(listed["status"]["state"], "failed");
    assert_eq!(listed["status"]["exit_code"], 3);

    // A detached task that keeps printing: `logs -f` follows it, `kill` ends it as Killed.
    let (code, out, err) = troupe(
        &addr,
        &[
            "run",
            "--detach",
            "--name",
            "ticker",
            "--",
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    assert!(id.starts_with("ticker-"), "{out}");
    let mut follow = std::process::Command::new(TROUPE)
        .args(["logs", "-f", &id])
        .env("TROUPE_MASTER", &addr)
        .env("TROUPE_COOKIE", TEST_COOKIE)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f runs");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    // It keeps following: lines written after it started arrive.
    let mut seen = Vec::new();
    while seen.len() < 15 {
        let line = lines.next().expect("logs -f keeps printing").unwrap();
        seen.push(line);
    }
    assert_eq!(seen[0], "tick 0", "from the start: {seen:?}");
    let n: Vec<u32> = seen.iter().map(|l| l[5..].parse().unwrap()).collect();
    assert!(
        n.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost: {seen:?}"
    );
    let (code, _, _) = troupe(&addr, &["ps", "--json"]);
    assert_eq!(code, 0);
    let (code, out, err) = troupe(&addr, &["kill", &id]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out.trim(), format!("{id} killed"));
    // `logs -f` ends when the task does.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = follow.try_wait().unwrap() {
            assert!(status.success(), "logs -f exits 0 when the task ends");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs -f still running after the task ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, out, _) = troupe(&addr, &["ps", "--all", "--json"]);
    let tasks: serde_json::Value = serde_json::from_str(&out).unwrap();
    let killed = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(killed["status"]["state"], "killed");

    // `--count`: every copy, a progress line, 0 only if all succeeded.
    let (code, _, err) = troupe(&addr, &["run", "--count", "6", "--", "sh", "-c", "exit 0"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("6/6 done, 0 failed"), "{err}");
    let (code, _, err) = troupe(&addr, &["run", "--count", "3", "--", "sh", "-c", "exit 2"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("3/3 done, 3 failed"), "{err}");
    assert_eq!(
        err.matches("exited with code 2").count(),
        3,
        "each failure named: {err}"
    );

    // `troupe signal` reaches the task's process, wherever it runs.
    let (code, out, err) = troupe(
        &addr,
        &[
            "run",
            "--detach",
            "--name",
            "trap",
            "--",
            "sh",
            "-c",
            "trap 'echo got usr1; exit 0' USR1; echo ready; while true; do sleep 0.05; done",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let trap = out.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !troupe(&addr, &["logs", &trap]).1.contains("ready") {
        assert!(
            Instant::now() < deadline,
            "the trapping task never got ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _, err) = troupe(&addr, &["signal", &trap, "USR1"]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out, _) = troupe(&addr, &["ps", "--all", "--json"]);
        let tasks: serde_json::Value = serde_json::from_str(&out).unwrap();
        let t = tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == trap.as_str())
            .cloned();
        if t.as_ref()
            .is_some_and(|t| t["status"]["state"] == "finished")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the signalled task did not finish: {t:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(troupe(&addr, &["logs", &trap]).1.contains("got usr1"));
    let (code, _, err) = troupe(&addr, &["signal", &trap, "NOPE"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown signal"), "{err}");

    // A command no agent could ever hold is refused at once, with the reason.
    let (code, _, err) = troupe(&addr, &["run", "--cpus", "64", "--", "true"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("more than any agent has"), "{err}");
    // A command that cannot start, and one killed for its memory, say so with their codes.
    let (code, _, err) = troupe(&addr, &["run", "--", "/no/such/binary"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("failed to start"), "{err}");
    if rustix::process::geteuid().is_root() {
        let (code, _, err) = troupe(&addr, &["run", "--mem", "32", "--", "tail", "/dev/zero"]);
        assert_eq!(code, 137, "{err}");
        assert!(
            err.contains("killed: out of memory (limit 32 MiB)"),
            "{err}"
        );
    }

    // Errors are one line with a code: an unknown task, no master.
    let (code, _, err) = troupe(&addr, &["kill", "no-such-task"]);
    assert_eq!(code, 1);
    assert!(err.contains("no task no-such-task"), "{err}");
    let (code, _, err) = troupe("127.0.0.1:1", &["ps"]);
    assert_eq!(code, 2, "{err}");
    drop(cluster);
}

fn master_on(addr: &str, registry: &Path) -> ChildNode {
    let mut cmd = Command::new(TROUPE);
    cmd.args([
        "master",
        "--name",
        "rm",
        "--listen",
        addr,
        "--cookie",
        TEST_COOKIE,
    ]);
    cmd.args(["--allocation-interval-ms", "100", "--registry"]);
    cmd.arg(registry);
    ChildNode::spawn("rm", cmd).expect("troupe master starts")
}

fn agent_of(master: &str, name: &str, work: &Path) -> ChildNode {
    let mut cmd = Command::new(TROUPE);
    cmd.args([
        "agent",
        "--name",
        name,
        "--cookie",
        TEST_COOKIE,
        "--master",
        master,
    ]);
    cmd.args(["--cpus", "1", "--mem", "256", "--work-dir"]);
    cmd.arg(work);
    ChildNode::spawn(name, cmd).expect("troupe agent starts")
}

/// A master and one agent as processes, and a framework in this process whose one task is
/// seen running: the stage of the failure tests.
struct OneTask {
    addr: String,
    master: Option<ChildNode>,
    agent: Option<ChildNode>,
    name: String,
    driver: Driver,
    seen: UnboundedReceiver<Seen>,
    /// Every status seen, in order.
    log: Vec<TaskStatus>,
    _litter: TaskLitter,
    /// Last: removed once the nodes above are stopped, also when the test fails.
    dir: ScratchDir,
}

impl OneTask {
    /// `tag` names the test's directory, nodes and framework; the master listens on
    /// `listen` (port 0 for any).
    async fn start(tag: &str, listen: &str, script: &str) -> OneTask {
        let dir = scratch(tag);
        let master = master_on(listen, &dir.join("registry.json"));
        let addr = master.addr.to_string();
        let name = format!("{tag}{}", std::process::id());
        let litter = TaskLitter::new(dir.join(&name).join("sandboxes"), &name);
        let agent = agent_of(&addr, &name, &dir.join(&name));
        start_local_node(&format!("{tag}-fw"), TEST_COOKIE).await;
        let (fw, seen) = TestFramework::auto(vec![sh_task("t", script)]);
        let driver = Driver::start(FrameworkSettings::new(tag), Some(master.addr), fw)
            .await
            .expect("the framework subscribes");
        let mut stage = OneTask {
            dir,
            addr,
            master: Some(master),
            agent: Some(agent),
            name,
            driver,
            seen,
            log: Vec::new(),
            _litter: litter,
        };
        stage.wait(|s| s.state == TaskState::Running).await;
        stage
    }

    fn restart_agent(&mut self) {
        self.agent = None;
        self.agent = Some(agent_of(&self.addr, &self.name, &self.dir.join(&self.name)));
    }

    fn restart_master(&mut self) {
        self.master = None;
        self.master = Some(master_on(&self.addr, &self.dir.join("registry.json")));
    }

    fn agent(&self) -> &ChildNode {
        self.agent.as_ref().expect("the agent runs")
    }

    /// Waits (30 s at most: reconnections after a restart take some retries on a loaded
    /// machine) until a status seen from now on satisfies `want`; other news goes to `news`.
    async fn wait_with(
        &mut self,
        want: impl Fn(&TaskStatus) -> bool,
        mut news: impl FnMut(&Seen),
    ) -> TaskStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(Seen::Status(s))) => {
                    self.log.push(s.clone());
                    if want(&s) {
                        return s;
                    }
                }
                Ok(Some(other)) => news(&other),
                _ => panic!("not seen within 30 s; seen: {:?}", self.log),
            }
        }
    }

    async fn wait(&mut self, want: impl Fn(&TaskStatus) -> bool) -> TaskStatus {
        self.wait_with(want, |_| {}).await
    }

    /// The task's ends seen so far, after `settle` for late duplicates.
    async fn ends(&mut self, settle: Duration) -> Vec<TaskStatus> {
        tokio::time::sleep(settle).await;
        while let Ok(news) = self.seen.try_recv() {
            if let Seen::Status(s) = news {
                self.log.push(s);
            }
        }
        self.log
            .iter()
            .filter(|s| s.state.is_terminal())
            .cloned()
            .collect()
    }

    fn stop(self) {
        self.driver.stop();
        drop(self.agent);
        drop(self.master);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_comes_back_and_finds_its_running_task_which_ends_once() {
    let mut stage = OneTask::start("ar", "127.0.0.1:0", "sleep 3; exit 4").await;
    // The agent dies; the master notices at once (its connection closes).
    stage.agent = None;
    stage.wait(|s| s.state == TaskState::Unreachable).await;
    // `troupe tree` shows its node as not answering, not as missing.
    let (code, out, err) = troupe(&stage.addr, &["tree", "--json"]);
    assert_eq!(code, 0, "{err}");
    let tree: serde_json::Value = serde_json::from_str(&out).unwrap();
    let agent = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| {
            n["roles"]
                .to_string()
                .contains(&format!("agent {}", stage.name))
        })
        .unwrap_or_else(|| panic!("the dead agent's node is listed: {out}"));
    assert_eq!(agent["reachable"], false, "{out}");
    assert!(agent["roles"].to_string().contains("unreachable"), "{out}");
    // Back with the same name and work directory: it adopts the task, still running.
    stage.restart_agent();
    stage.wait(|s| s.state == TaskState::Running).await;
    stage.wait(|s| s.state.is_terminal()).await;
    let ends = stage.ends(Duration::from_millis(500)).await;
    assert_eq!(ends.len(), 1, "{:?}", stage.log);
    assert_eq!(
        (ends[0].state, ends[0].exit_code),
        (TaskState::Failed, Some(4))
    );
    stage.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_rebuilds_its_books_from_agents_and_frameworks() {
    let listen = format!("127.0.0.1:{}", troupe_tests::free_port());
    let mut stage = OneTask::start("mr", &listen, "sleep 3; exit 0").await;
    let facts = std::fs::read_to_string(stage.dir.join("registry.json")).unwrap();
    assert!(
        facts.contains(&stage.name),
        "the agent is admitted: {facts}"
    );
    assert!(
        facts.contains("\"mr\""),
        "the framework is recorded: {facts}"
    );
    // The master dies and comes back on its address with its registry. The agent registers
    // again with the task, the framework subscribes again with its id, and the task's end
    // reaches it exactly once.
    stage.restart_master();
    stage.wait(|s| s.state.is_terminal()).await;
    let ends = stage.ends(Duration::from_millis(500)).await;
    assert_eq!(ends.len(), 1, "{:?}", stage.log);
    assert_eq!(ends[0].state, TaskState::Finished);
    // The new master knows the task.
    let (code, out, err) = troupe(&stage.addr, &["ps", "--all", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"id\": \"t\""), "{out}");
    stage.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_unreachable_in_seconds_and_its_task_runs_again_when_it_wakes() {
    let mut stage = OneTask::start("sl", "127.0.0.1:0", "sleep 60").await;
    stage.agent().signal("STOP").unwrap();
    let stopped = Instant::now();
    let name = stage.name.clone();
    let mut lost = false;
    stage
        .wait_with(
            |s| s.state == TaskState::Unreachable,
            |news| lost |= matches!(news, Seen::AgentLost(a) if a.0 == name),
        )
        .await;
    let noticed = stopped.elapsed();
    stage.agent().signal("CONT").unwrap();
    assert!(lost, "the framework is told the agent is lost");
    assert!(
        noticed < Duration::from_secs(5),
        "noticed after {noticed:?}"
    );
    // Awake, it registers again and its task is running again.
    stage.wait(|s| s.state == TaskState::Running).await;
    stage.driver.kill(&TaskId("t".into()));
    stage.wait(|s| s.state == TaskState::Killed).await;
    stage.stop();
}

/// Every actor of a `troupe tree --json` node entry, depth first.
fn actors_of(node: &serde_json::Value) -> Vec<serde_json::Value> {
    fn visit(a: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        out.push(a.clone());
        for c in a["children"].as_array().into_iter().flatten() {
            visit(c, out);
        }
    }
    let mut out = Vec::new();
    for a in node["snapshot"]["actors"].as_array().into_iter().flatten() {
        visit(a, &mut out);
    }
    out
}

#[test]
fn tree_draws_the_master_the_agents_and_the_processes_of_tasks() {
    let dir = scratch("tree");
    let (cluster, name, _litter) = dev("tr", &dir);
    let addr = cluster.addr.to_string();
    let (code, out, err) = troupe(
        &addr,
        &["run", "--detach", "--name", "napper", "--", "sleep", "30"],
    );
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !troupe(&addr, &["ps", "--json"]).1.contains("\"running\"") {
        assert!(Instant::now() < deadline, "the task never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) = troupe(&addr, &["tree", "--json"]);
    assert_eq!(code, 0, "{err}");
    let tree: serde_json::Value = serde_json::from_str(&out).expect("tree --json parses");
    let nodes = tree["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "troupe dev is one node: {out}");
    assert_eq!(nodes[0]["reachable"], true);
    let roles = nodes[0]["roles"].to_string();
    assert!(
        roles.contains("master") && roles.contains(&format!("agent {name}-a1")),
        "{roles}"
    );
    let actors = actors_of(&nodes[0]);
    let has_path = |p: &str| {
        actors
            .iter()
            .any(|a| a["paths"].to_string().contains(&format!("\"{p}\"")))
    };
    assert!(has_path("master"), "the master core");
    assert!(has_path("master/allocator"), "the allocator");
    assert!(has_path(&format!("agent/{name}-a1")) && has_path(&format!("agent/{name}-a2")));
    let process = actors
        .iter()
        .find(|a| a["kind"] == "process" && a["details"]["task"] == id.as_str())
        .unwrap_or_else(|| panic!("the task's process actor is in the tree: {out}"));
    let pid: i32 = process["details"]["pid"].as_str().unwrap().parse().unwrap();
    assert!(pid > 0);
    // Drawn for people: the process under its agent's executors, with its pid.
    let (code, out, _) = troupe(&addr, &["tree"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("task/{id}  [process]")), "{out}");
    assert!(out.contains(&format!("pid {pid}")), "{out}");
    // One node by address, two levels deep.
    let (code, out, err) = troupe(&addr, &["tree", "--node", &addr, "--depth", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("node {name}")), "{out}");
    assert!(
        !out.contains("[process]"),
        "depth 1 stops above the processes: {out}"
    );
    let (code, _, _) = troupe(&addr, &["kill", &id]);
    assert_eq!(code, 0);
    drop(cluster);
}

/// The value of the sample `name{labels}` in a Prometheus text page, checked to parse.
fn metric(page: &str, name: &str, label: (&str, &str)) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => Some(v),
            _ => None,
        })
}

/// `troupe_node_up` of the node of agent `agent` (named `AGENT-XXXXXXXX`, one per process).
fn agent_node_up(page: &str, agent: &str) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    let prefix = format!("{agent}-");
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "troupe_node_up"
                && s.labels.get("node").is_some_and(|n| n.starts_with(&prefix))
        })
        .and_then(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => Some(v),
            _ => None,
        })
}

#[test]
fn master_and_agent_processes_serve_health_and_metrics_over_http() {
    let dir = scratch("http");
    let _litter = TaskLitter::new(dir.join("work/sandboxes"), "hta");
    let limit = Duration::from_secs(20);
    let mut master = ChildNode::spawn("htm", {
        let mut cmd = Command::new(TROUPE);
        cmd.args(["master", "--name", "htm", "--listen", "127.0.0.1:0"]);
        cmd.args(["--cookie", TEST_COOKIE, "--http", "127.0.0.1:0"]);
        cmd
    })
    .expect("troupe master starts");
    let master_http = master.read_line_containing("http on", limit).unwrap();
    let master_http = master_http.rsplit("http://").next().unwrap().to_string();
    let addr = master.addr.to_string();
    let mut agent = ChildNode::spawn("hta", {
        let mut cmd = Command::new(TROUPE);
        cmd.args(["agent", "--name", "hta", "--master", &addr]);
        cmd.args(["--cookie", TEST_COOKIE, "--http", "127.0.0.1:0"]);
        cmd.args(["--cpus", "1", "--mem", "256", "--work-dir"]);
        cmd.arg(dir.join("work"));
        cmd
    })
    .expect("troupe agent starts");
    let agent_http = agent.read_line_containing("http on", limit).unwrap();
    let agent_http = agent_http.rsplit("http://").next().unwrap().to_string();

    let (code, out, err) = troupe(&addr, &["run", "--detach", "--", "sleep", "30"]);
    assert_eq!(code, 0, "{err}");
    let task = out.trim().to_string();
    let deadline = Instant::now() + limit;
    let page = loop {
        let (code, page) = troupe_tests::http_get(&agent_http, "/metrics", limit).unwrap();
        assert_eq!(code, 200, "{page}");
        if metric(&page, "troupe_agent_tasks", ("agent", "hta")) == Some(1.0) {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never counted its task: {page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metric(&page, "troupe_agent_task_memory_bytes", ("task", &task)).is_some_and(|m| m > 0.0),
        "{page}"
    );
    assert_eq!(agent_node_up(&page, "hta"), Some(1.0));
    let (code, body) = troupe_tests::http_get(&agent_http, "/health", limit).unwrap();
    assert_eq!(code, 200, "{body}");
    // The master's page counts the agent's node and the task.
    let (code, page) = troupe_tests::http_get(&master_http, "/metrics", limit).unwrap();
    assert_eq!(code, 200, "{page}");
    assert_eq!(agent_node_up(&page, "hta"), Some(1.0), "{page}");
    assert_eq!(
        metric(&page, "troupe_tasks", ("state", "running")),
        Some(1.0),
        "{page}"
    );

    // The agent core is killed for good (its supervisor with it): its node still serves
    // HTTP, and its /health says the agent is down.
    let (code, out, err) = troupe_tests::troupe_with_input(
        TROUPE,
        &addr,
        &["repl"],
        Some("kill agent/hta/supervisor\n"),
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let deadline = Instant::now() + limit;
    while troupe_tests::http_get(&agent_http, "/health", limit)
        .unwrap()
        .0
        != 503
    {
        assert!(
            Instant::now() < deadline,
            "the agent's /health still says ok"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The task's process outlives a killed agent (it can be adopted): the litter ends it.
    drop(agent);
    // With the master gone, its /health does not answer at all.
    drop(master);
    assert!(troupe_tests::http_get(&master_http, "/health", limit).is_err());
}

#[test]
fn an_attached_run_refuses_standard_input_it_cannot_forward_and_orders_its_output_and_end() {
    let dir = scratch("stdin");
    let (cluster, _, _litter) = dev("si", &dir);
    let addr = cluster.addr.to_string();
    // Input on a pipe would be dropped: refused, as a usage error, before anything runs.
    let (code, _, err) = troupe_tests::troupe_with_input(
        TROUPE,
        &addr,
        &["run", "--name", "reader", "--", "cat"],
        Some("x\n"),
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("standard input is not forwarded"), "{err}");
    let (_, all, _) = troupe(&addr, &["ps", "--all"]);
    assert!(!all.contains("reader-"), "nothing ran: {all}");
    // An empty one is no input; the task's last words come before its end, and the end
    // (with its reason) is said once.
    let (code, out, err) = troupe(
        &addr,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo out; sleep 0.2; echo last >&2; exit 3",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert_eq!(out, "out\n");
    let last = err.find("last\n").expect("the task's stderr is shown");
    let end = err.find("failed on").expect("the end is said");
    assert!(last < end, "the output comes before the end: {err}");
    assert_eq!(err.matches("exited with code 3").count(), 1, "{err}");
    // A program not found says where it was looked for, and how to pass a PATH.
    let (code, _, err) = troupe(&addr, &["run", "--", "no-such-program-here"]);
    assert_eq!(code, 127, "{err}");
    assert_eq!(
        err.matches("not found in PATH").count(),
        1,
        "said once: {err}"
    );
    assert!(err.contains("--env PATH="), "{err}");
}

#[test]
fn a_task_that_daemonizes_names_the_processes_its_cgroup_killed() {
    if !troupe_tests::require_root("cgroups") {
        return;
    }
    let dir = scratch("daemon");
    let (cluster, _, _litter) = dev("dm", &dir);
    let addr = cluster.addr.to_string();
    // Like `redis-server --daemonize yes`: the main process exits 0, its child runs on.
    let (code, _, err) = troupe(
        &addr,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "setsid sleep 300 </dev/null >/dev/null 2>&1 & sleep 0.3; exit 0",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("finished")
            && err.contains(
                "still running in its cgroup when it ended, and killed with it: sleep (pid "
            ),
        "the end names what the cgroup killed: {err}"
    );
    let (_, all, _) = troupe(&addr, &["ps", "--all", "--json"]);
    assert!(all.contains("sleep (pid "), "ps keeps the reason: {all}");
}

#[test]
fn ps_json_shows_the_pid_of_a_running_task_and_it_is_that_process() {
    let dir = scratch("pid");
    let (cluster, _, _litter) = dev("pd", &dir);
    let addr = cluster.addr.to_string();
    let (code, out, err) = troupe(&addr, &["run", "--detach", "--", "sleep", "30"]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    let mut pid = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while pid.is_none() && Instant::now() < deadline {
        let (_, out, _) = troupe(&addr, &["ps", "--json"]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        pid = tasks
            .iter()
            .find(|t| t["id"] == id.as_str() && t["status"]["state"] == "running")
            .and_then(|t| t["pid"].as_i64());
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = pid.expect("a running task has its pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert_eq!(
        cmdline, b"sleep\x0030\x00",
        "pid {pid} is the task's process"
    );
    let (code, _, err) = troupe(&addr, &["kill", &id]);
    assert_eq!(code, 0, "{err}");
}
