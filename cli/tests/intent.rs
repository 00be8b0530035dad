//! An operator's intent and the master's books survive restarts: `troupe master` and
//! `troupe agent` as separate processes, driven by the `troupe` commands an operator types.
//!
//! Each test here failed before the fix it covers: a kill while the task's agent was down was
//! dropped; tasks started before a master restart could not be killed (the runner's updates
//! waited behind one addressed to its previous id); a restarted master lost the names,
//! commands and ended tasks; a second agent with a name in use took over the live one; a
//! `troupe run` waiting for resources outlived its Ctrl-C and its CLI; a launch sent to a
//! stopped agent that then restarted ended `Gone` though it never ran.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use troupe_tests::{ChildNode, ScratchDir, TEST_COOKIE, TaskLitter};

const TROUPE: &str = env!("CARGO_BIN_EXE_troupe");

/// Runs `troupe ARGS` against the master at `addr`; returns code, stdout and stderr.
fn troupe(addr: &str, args: &[&str]) -> (i32, String, String) {
    troupe_tests::troupe_at(TROUPE, addr, args)
}

/// Runs `troupe ARGS` and kills it if it has not ended within `limit`: `None` then.
fn troupe_within(addr: &str, args: &[&str], limit: Duration) -> Option<(i32, String, String)> {
    let mut child = Command::new(TROUPE)
        .args(args)
        .env("TROUPE_MASTER", addr)
        .env("TROUPE_COOKIE", TEST_COOKIE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("troupe runs");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().expect("troupe is waited for").is_some() {
            let out = child.wait_with_output().expect("troupe's output");
            return Some((
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A master with a registry and one agent of 1 cpu and 256 MiB, as processes, restartable
/// on the same address, name and work directory.
struct Stage {
    addr: String,
    master: Option<ChildNode>,
    agent: Option<ChildNode>,
    agent_name: String,
    _litter: TaskLitter,
    /// Last: removed once the nodes above are stopped, also when the test fails.
    dir: ScratchDir,
}

impl Stage {
    fn start(tag: &str) -> Stage {
        let dir = ScratchDir::new(&format!("intent-{tag}"));
        let addr = format!("127.0.0.1:{}", troupe_tests::free_port());
        let agent_name = format!("{tag}{}", std::process::id());
        let litter = TaskLitter::new(dir.join(&agent_name).join("sandboxes"), &agent_name);
        let mut stage = Stage {
            addr,
            master: None,
            agent: None,
            agent_name,
            _litter: litter,
            dir,
        };
        stage.start_master();
        stage.start_agent();
        stage.wait_agents(1);
        stage
    }

    fn start_master(&mut self) {
        let mut cmd = Command::new(TROUPE);
        cmd.args(["master", "--name", "im", "--listen", &self.addr]);
        cmd.args(["--cookie", TEST_COOKIE, "--allocation-interval-ms", "100"]);
        cmd.arg("--registry").arg(self.dir.join("registry.json"));
        self.master = Some(ChildNode::spawn("im", cmd).expect("troupe master starts"));
    }

    fn agent_command(&self, work: &Path) -> Command {
        let mut cmd = Command::new(TROUPE);
        cmd.args(["agent", "--name", &self.agent_name, "--cookie", TEST_COOKIE]);
        cmd.args(["--master", &self.addr, "--listen", "127.0.0.2:0"]);
        cmd.args(["--cpus", "1", "--mem", "256", "--work-dir"]);
        cmd.arg(work);
        cmd
    }

    fn start_agent(&mut self) {
        let cmd = self.agent_command(&self.dir.join(&self.agent_name));
        self.agent = Some(ChildNode::spawn(&self.agent_name, cmd).expect("troupe agent starts"));
    }

    /// Kills the master (SIGKILL) and starts it again with its registry.
    fn restart_master(&mut self) {
        self.master = None;
        self.start_master();
    }

    /// Kills the agent (SIGKILL; its tasks keep running) and starts it again.
    fn restart_agent(&mut self) {
        self.agent = None;
        self.start_agent();
    }

    /// Waits until the master lists `n` reachable agents (its `/state` through `ps`).
    fn wait_agents(&self, n: usize) {
        let ok = wait_for(Duration::from_secs(30), || {
            let (code, out, _) = troupe(&self.addr, &["tree", "--json", "--depth", "0"]);
            code == 0
                && serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|tree| {
                    tree["nodes"].as_array().is_some_and(|nodes| {
                        nodes
                            .iter()
                            .filter(|n| {
                                n["reachable"] == true && n["roles"].to_string().contains("agent")
                            })
                            .count()
                            >= n
                    })
                })
        });
        assert!(ok, "{n} agent(s) registered within 30 s");
    }

    fn troupe(&self, args: &[&str]) -> (i32, String, String) {
        troupe(&self.addr, args)
    }

    /// Runs `CMD` detached under `name`; returns its task id once the master has it running.
    fn run_detached(&self, name: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", "--detach", "--name", name, "--"];
        args.extend_from_slice(cmd);
        let (code, out, err) = self.troupe(&args);
        assert_eq!(code, 0, "troupe run --detach: {err}");
        let id = out.trim().to_string();
        self.wait_state(&id, "running", Duration::from_secs(30));
        id
    }

    /// The task as `troupe ps --all --json` shows it.
    fn task(&self, id: &str) -> Option<serde_json::Value> {
        let (code, out, _) = self.troupe(&["ps", "--all", "--json"]);
        if code != 0 {
            return None;
        }
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        tasks.into_iter().find(|t| t["id"] == id)
    }

    fn state(&self, id: &str) -> Option<String> {
        self.task(id)
            .and_then(|t| t["status"]["state"].as_str().map(str::to_string))
    }

    fn wait_state(&self, id: &str, want: &str, limit: Duration) {
        let ok = wait_for(limit, || self.state(id).as_deref() == Some(want));
        assert!(
            ok,
            "{id} is {want} within {limit:?}; it is {:?}; the books: {}",
            self.state(id),
            self.troupe(&["ps", "--all"]).1
        );
    }

    /// Whether a task that takes all of the agent (1 cpu, 256 MiB) runs: it cannot while
    /// the master counts anything as allocated there.
    fn whole_agent_is_free(&self) -> bool {
        let run = troupe_within(
            &self.addr,
            &["run", "--cpus", "1", "--mem", "256", "--", "true"],
            Duration::from_secs(20),
        );
        matches!(run, Some((0, _, _)))
    }
}

/// Polls `condition` every 100 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_kill_while_the_agent_is_down_is_recorded_and_delivered_when_it_comes_back() {
    let mut stage = Stage::start("kd");
    let id = stage.run_detached("sleeper", &["sleep", "600"]);
    // The agent dies; its task runs on, unreachable.
    stage.agent = None;
    stage.wait_state(&id, "unreachable", Duration::from_secs(30));
    let (code, out, err) = stage.troupe(&["kill", &id]);
    assert_eq!(code, 0, "the kill is taken: {err}");
    assert!(
        out.contains("recorded") && out.contains(&stage.agent_name),
        "it says the kill waits for the agent: {out}"
    );
    // The master restarts meanwhile: the kill is in its registry.
    stage.restart_master();
    // The agent comes back with the task: the kill reaches it and the task ends Killed.
    stage.start_agent();
    stage.wait_state(&id, "killed", Duration::from_secs(30));
    let facts = std::fs::read_to_string(stage.dir.join("registry.json")).unwrap();
    assert!(
        !facts.contains(&id),
        "a delivered kill leaves the registry: {facts}"
    );
    assert!(stage.whole_agent_is_free(), "nothing stays allocated");
}

#[test]
fn after_a_master_restart_tasks_started_before_it_are_killed_within_seconds() {
    let mut stage = Stage::start("mk");
    let first = stage.run_detached("first", &["sleep", "600"]);
    let second = stage.run_detached("second", &["sleep", "600"]);
    stage.restart_master();
    stage.wait_agents(1);
    stage.wait_state(&first, "running", Duration::from_secs(30));
    let killed = troupe_within(&stage.addr, &["kill", &first], Duration::from_secs(15));
    let (code, out, err) = killed.expect("the kill returns within seconds");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("killed"), "{out}");
    // A master restart followed by an agent restart: the task is still found, and killed.
    stage.restart_master();
    stage.restart_agent();
    stage.wait_agents(1);
    stage.wait_state(&second, "running", Duration::from_secs(30));
    let killed = troupe_within(&stage.addr, &["kill", &second], Duration::from_secs(15));
    let (code, out, err) = killed.expect("the kill returns within seconds");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("killed"), "{out}");
    assert_eq!(stage.state(&first).as_deref(), Some("killed"));
    assert!(stage.whole_agent_is_free(), "nothing stays allocated");
}

#[test]
fn a_restarted_master_keeps_task_names_commands_launch_times_and_ended_tasks() {
    let mut stage = Stage::start("mb");
    let (code, _, err) = stage.troupe(&["run", "--name", "quick", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "{err}");
    let running = stage.run_detached("slow", &["sleep", "600"]);
    let before = stage.task(&running).expect("the running task is listed");
    let (_, all, _) = stage.troupe(&["ps", "--all", "--json"]);
    let ended: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    let ended: Vec<serde_json::Value> =
        ended.into_iter().filter(|t| t["name"] == "quick").collect();
    assert_eq!(ended.len(), 1, "{all}");
    stage.restart_master();
    stage.wait_agents(1);
    stage.wait_state(&running, "running", Duration::from_secs(30));
    let after = stage.task(&running).unwrap();
    for field in ["name", "command", "launched_ms", "resources", "framework"] {
        assert_eq!(after[field], before[field], "{field} is kept: {after}");
    }
    let quick = ended[0]["id"].as_str().unwrap();
    let kept = stage
        .task(quick)
        .expect("the ended task is still listed after the restart");
    assert_eq!(kept["status"]["state"], "failed", "{kept}");
    assert_eq!(kept["status"]["exit_code"], 3, "{kept}");
    assert_eq!(kept["command"], ended[0]["command"], "{kept}");
    let (code, _, err) = stage.troupe(&["kill", &running]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_second_agent_with_a_name_in_use_is_refused_and_the_live_one_keeps_its_task() {
    let stage = Stage::start("da");
    let id = stage.run_detached("held", &["sleep", "600"]);
    // Another agent under the same name, from another work directory.
    let log = stage.dir.join("imposter.log");
    let imposter_work = stage.dir.join("imposter");
    let mut cmd = stage.agent_command(&imposter_work);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::piped());
    let mut imposter = cmd.spawn().expect("the second agent starts");
    let live_addr = stage.agent.as_ref().unwrap().addr.to_string();
    let refused = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("taken by a connected agent"))
    });
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = imposter.kill();
    let _ = imposter.wait();
    assert!(refused, "the second agent is refused: {said}");
    assert!(
        said.contains(&live_addr),
        "the refusal names the live agent's address {live_addr}: {said}"
    );
    // The live agent's task runs on, and the master's books say so.
    assert_eq!(stage.state(&id).as_deref(), Some("running"));
    // A second agent on the same work directory is refused by the agent itself.
    let mut same = stage.agent_command(&stage.dir.join(&stage.agent_name));
    same.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = same
        .spawn()
        .and_then(|c| c.wait_with_output())
        .expect("the agent runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("in use by another agent"), "{err}");
    let (code, _, err) = stage.troupe(&["kill", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stage.state(&id).as_deref(), Some("killed"));
}

#[test]
fn logs_follow_right_after_run_detach_waits_for_the_task_and_follows_it() {
    let stage = Stage::start("lf");
    for round in 0..5 {
        let (code, out, err) = stage.troupe(&[
            "run",
            "--detach",
            "--name",
            "hello",
            "--",
            "sh",
            "-c",
            "echo hello; sleep 0.3; echo bye",
        ]);
        assert_eq!(code, 0, "{err}");
        let id = out.trim();
        let followed = troupe_within(&stage.addr, &["logs", "-f", id], Duration::from_secs(30));
        let (code, out, err) = followed.expect("logs -f returns once the task ended");
        assert_eq!(code, 0, "round {round}: {err}");
        assert_eq!(out, "hello\nbye\n", "round {round}: {err}");
    }
}

#[test]
fn operators_restarts_and_kills_combined_leave_every_task_in_one_true_final_state() {
    let mut stage = Stage::start("co");
    // Tasks that ended, each its own way, and tasks that run.
    let mut ended = Vec::new();
    for (name, script, state, code) in [
        ("ok", "exit 0", "finished", Some(0)),
        ("bad", "exit 2", "failed", Some(2)),
    ] {
        let (c, _, err) = stage.troupe(&["run", "--name", name, "--", "sh", "-c", script]);
        assert_eq!(c, code.unwrap(), "{err}");
        let (_, all, _) = stage.troupe(&["ps", "--all", "--json"]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
        let id = tasks
            .iter()
            .find(|t| t["name"] == name)
            .and_then(|t| t["id"].as_str())
            .expect("the ended task is listed")
            .to_string();
        ended.push((id, state, code));
    }
    let running: Vec<String> = (0..4)
        .map(|i| stage.run_detached(&format!("svc{i}"), &["sleep", "600"]))
        .collect();
    // One is killed for good before any restart.
    let (code, _, err) = stage.troupe(&["kill", &running[0]]);
    assert_eq!(code, 0, "{err}");
    // The master is killed and comes back, then the agent.
    stage.restart_master();
    stage.wait_agents(1);
    stage.restart_agent();
    stage.wait_agents(1);
    for id in &running[1..] {
        stage.wait_state(id, "running", Duration::from_secs(30));
    }
    // Every kill returns within seconds.
    for id in &running[1..] {
        let started = Instant::now();
        let killed = troupe_within(&stage.addr, &["kill", id], Duration::from_secs(15));
        let (code, out, err) = killed.unwrap_or_else(|| panic!("kill {id} returned within 15 s"));
        assert_eq!(code, 0, "{id}: {err}");
        assert!(out.contains("killed"), "{id}: {out}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }
    // Each task is listed once, in the final state that matches what happened to it.
    let (_, all, _) = stage.troupe(&["ps", "--all", "--json"]);
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    let one = |id: &str| -> serde_json::Value {
        let found: Vec<&serde_json::Value> = tasks.iter().filter(|t| t["id"] == id).collect();
        assert_eq!(found.len(), 1, "{id} is listed once: {all}");
        found[0].clone()
    };
    for (id, state, code) in &ended {
        let t = one(id);
        assert_eq!(t["status"]["state"], *state, "{t}");
        assert_eq!(t["status"]["exit_code"], code.unwrap(), "{t}");
    }
    for id in &running {
        assert_eq!(one(id)["status"]["state"], "killed", "{all}");
    }
    // Nothing stays allocated with no task running.
    let (_, live, _) = stage.troupe(&["ps", "--json"]);
    assert_eq!(live.trim(), "[]", "{live}");
    assert!(stage.whole_agent_is_free(), "nothing stays allocated");
}

#[test]
fn logs_stderr_writes_the_stream_asked_for_to_stdout_and_signal_says_what_it_did() {
    let stage = Stage::start("le");
    let (code, _, err) = stage.troupe(&[
        "run",
        "--name",
        "both",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, all, _) = stage.troupe(&["ps", "--all", "--json"]);
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    let id = tasks[0]["id"].as_str().unwrap().to_string();
    let (code, out, err) = stage.troupe(&["logs", "--stderr", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "err\n",
        "the stream asked for is the command's output: {err}"
    );
    let (code, out, _) = stage.troupe(&["logs", &id]);
    assert_eq!((code, out.as_str()), (0, "out\n"));
    let sleeper = stage.run_detached("sig", &["sleep", "600"]);
    let (code, out, err) = stage.troupe(&["signal", &sleeper, "TERM"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&sleeper) && out.contains("TERM"), "{out}");
    stage.wait_state(&sleeper, "failed", Duration::from_secs(30));
}

/// A `troupe run` as a child process, attached, to be signalled while it waits.
struct AttachedRun(Option<std::process::Child>);

impl AttachedRun {
    fn start(addr: &str, args: &[&str]) -> AttachedRun {
        let child = Command::new(TROUPE)
            .args(args)
            .env("TROUPE_MASTER", addr)
            .env("TROUPE_COOKIE", TEST_COOKIE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("troupe run starts");
        AttachedRun(Some(child))
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    /// Its exit code, stdout and stderr, once it ended within `limit` (killed otherwise).
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }

    fn finish(mut self, limit: Duration) -> Option<(i32, String, String)> {
        let mut child = self.0.take()?;
        let ended = wait_for(limit, || child.try_wait().ok().flatten().is_some());
        if !ended {
            let _ = child.kill();
        }
        let out = child.wait_with_output().ok()?;
        ended.then(|| {
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    }
}

impl Drop for AttachedRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Stage {
    /// The ids of the queued tasks named `name`, as `troupe ps --json` lists them.
    fn queued(&self, name: &str) -> Vec<String> {
        let (_, out, _) = self.troupe(&["ps", "--json"]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        tasks
            .iter()
            .filter(|t| t["name"] == name && t["status"]["state"] == "queued")
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect()
    }

    fn wait_queued(&self, name: &str) -> String {
        let mut ids = Vec::new();
        let ok = wait_for(Duration::from_secs(20), || {
            ids = self.queued(name);
            !ids.is_empty()
        });
        assert!(ok, "{name} shows queued: {}", self.troupe(&["ps"]).1);
        ids.remove(0)
    }
}

#[test]
fn a_waiting_run_is_cancelled_on_ctrl_c_or_when_its_cli_dies_and_ps_shows_it_queued() {
    let stage = Stage::start("qc");
    let (code, out, err) = stage.troupe(&[
        "run", "--detach", "--name", "blocker", "--cpus", "1", "--", "sleep", "600",
    ]);
    assert_eq!(code, 0, "{err}");
    let blocker = out.trim().to_string();
    stage.wait_state(&blocker, "running", Duration::from_secs(30));
    let marker = stage.dir.join("ran");
    let marker_text = marker.display().to_string();
    let script = format!("echo ran >> {marker_text}");
    let waiter = |name: &str| {
        AttachedRun::start(
            &stage.addr,
            &[
                "run", "--name", name, "--cpus", "1", "--", "sh", "-c", &script,
            ],
        )
    };

    // Queued, with the reason in words, in the table and in the JSON.
    let first = waiter("waiter1");
    let id = stage.wait_queued("waiter1");
    let (_, table, _) = stage.troupe(&["ps"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_default();
    assert!(row.contains("QUEUED"), "{table}");
    let reason = format!(
        "waiting for 1 cpus; the largest free is 0 on {}",
        stage.agent_name
    );
    assert!(table.contains(&reason), "the table says why: {table}");

    // Ctrl-C cancels it: the command ends as killed, and the queue forgets it.
    first.signal("INT");
    let (code, _, err) = first
        .finish(Duration::from_secs(15))
        .expect("Ctrl-C ends a waiting run");
    assert_eq!(code, 143, "{err}");
    assert!(err.contains("cancel"), "it says it cancelled: {err}");
    assert!(
        stage.queued("waiter1").is_empty(),
        "{}",
        stage.troupe(&["ps"]).1
    );

    // A CLI that dies takes its waiting request with it.
    let second = waiter("waiter2");
    stage.wait_queued("waiter2");
    second.signal("KILL");
    drop(second);
    assert!(
        wait_for(Duration::from_secs(15), || stage
            .queued("waiter2")
            .is_empty()),
        "the dead CLI's request leaves the queue: {}",
        stage.troupe(&["ps"]).1
    );

    // A detached one stays queued with nobody attached, and `troupe kill` cancels it.
    let (code, out, err) = stage.troupe(&[
        "run", "--detach", "--name", "waiter3", "--cpus", "1", "--", "sh", "-c", &script,
    ]);
    assert_eq!(code, 0, "{err}");
    let detached = out.trim().to_string();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stage.queued("waiter3"), vec![detached.clone()]);
    let (code, out, err) = stage.troupe(&["kill", &detached]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled"), "{out}");
    assert!(stage.queued("waiter3").is_empty());

    // With the room free again, none of them ever runs.
    let (code, _, err) = stage.troupe(&["kill", &blocker]);
    assert_eq!(code, 0, "{err}");
    assert!(stage.whole_agent_is_free(), "the blocker's room is free");
    assert!(!marker.exists(), "a cancelled request never ran");
}

#[test]
fn a_launch_that_meets_a_dying_agent_is_dropped_and_run_again() {
    let mut stage = Stage::start("ld");
    // The launch goes to an agent that is stopped, and then killed: it never arrives.
    stage.agent.as_ref().unwrap().signal("STOP").unwrap();
    let run = AttachedRun::start(
        &stage.addr,
        &["run", "--name", "late", "--", "sh", "-c", "echo hello"],
    );
    let mut id = String::new();
    let sent = wait_for(Duration::from_secs(20), || {
        let (_, out, _) = stage.troupe(&["ps", "--json"]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        match tasks
            .iter()
            .find(|t| t["name"] == "late" && t["agent"].is_string())
        {
            Some(t) => {
                id = t["id"].as_str().unwrap_or_default().to_string();
                true
            }
            None => false,
        }
    });
    assert!(
        sent,
        "the launch went to the stopped agent: {}",
        stage.troupe(&["ps"]).1
    );
    stage.restart_agent();
    // The restarted agent never had it: dropped, launched again, and it runs once.
    let (code, out, err) = run
        .finish(Duration::from_secs(60))
        .expect("the run ends once the task ran");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello\n", "{err}");
    assert!(
        err.contains("dropped: its launch never reached agent")
            && err.contains("queued again (launch 2 of 3)"),
        "it says what happened: {err}"
    );
    stage.wait_state(&id, "finished", Duration::from_secs(10));
    assert!(stage.whole_agent_is_free(), "nothing stays allocated");
}
