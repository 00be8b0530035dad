//! Inspecting a live cluster as operators do: `troupe repl` on a real pseudo-terminal and
//! from a pipe, and the HTTP routes of `troupe dev --http`.

use std::path::Path;
use std::time::{Duration, Instant};

use troupe_tests::pty::Pty;
use troupe_tests::{ChildNode, ScratchDir, TEST_COOKIE, TaskLitter};

const TROUPE: &str = env!("CARGO_BIN_EXE_troupe");

/// Room for slow, shared machines: these are bounds, not timings under test.
const SCREEN: Duration = Duration::from_secs(20);

fn scratch(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("insp-{name}"))
}

/// Runs `troupe ARGS` against the master at `addr`; returns code, stdout and stderr.
fn troupe(addr: &str, args: &[&str]) -> (i32, String, String) {
    troupe_tests::troupe_at(TROUPE, addr, args)
}

/// A `troupe dev` with one sleeping task: the cluster, its name, the task's id and pid.
struct Stage {
    cluster: ChildNode,
    name: String,
    addr: String,
    task: String,
    pid: i32,
    _litter: Vec<TaskLitter>,
    /// Last: removed once the cluster above is stopped, also when the test fails.
    dir: ScratchDir,
}

impl Stage {
    fn start(tag: &str, extra: &[&str]) -> Stage {
        let dir = scratch(tag);
        let name = format!("{tag}{}", std::process::id());
        let (cluster, litter) =
            troupe_tests::start_dev_with(Path::new(TROUPE), &name, &dir.join("work"), extra)
                .expect("troupe dev starts and says where");
        let addr = cluster.addr.to_string();
        let (code, out, err) = troupe(
            &addr,
            &["run", "--detach", "--name", "napper", "--", "sleep", "60"],
        );
        assert_eq!(code, 0, "{err}");
        let task = out.trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(15);
        let pid = loop {
            let (_, out, _) = troupe(&addr, &["tree", "--json"]);
            let pid = serde_json::from_str::<serde_json::Value>(&out)
                .ok()
                .and_then(|tree| process_pid(&tree, &task));
            if let Some(pid) = pid {
                break pid;
            }
            assert!(Instant::now() < deadline, "the task's process never showed");
            std::thread::sleep(Duration::from_millis(100));
        };
        Stage {
            cluster,
            name,
            addr,
            task,
            pid,
            dir,
            _litter: litter,
        }
    }

    fn repl_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TROUPE_MASTER", self.addr.clone()),
            ("TROUPE_COOKIE", TEST_COOKIE.to_string()),
        ]
    }

    /// How many times the supervisor restarted the actor at `path`, as `troupe tree` says.
    fn restarts(&self, path: &str) -> Option<u64> {
        let (_, out, _) = troupe(&self.addr, &["tree", "--json"]);
        let tree: serde_json::Value = serde_json::from_str(&out).ok()?;
        actors(&tree)
            .into_iter()
            .find(|a| a["paths"].to_string().contains(&format!("\"{path}\"")))
            .and_then(|a| a["child"]["restarts"].as_u64())
    }

    fn stop(self) {
        let (code, _, err) = troupe(&self.addr, &["kill", &self.task]);
        assert_eq!(code, 0, "{err}");
        drop(self.cluster);
    }
}

/// Every actor of every node of a `tree --json`, depth first.
fn actors(tree: &serde_json::Value) -> Vec<serde_json::Value> {
    fn visit(a: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        out.push(a.clone());
        for c in a["children"].as_array().into_iter().flatten() {
            visit(c, out);
        }
    }
    let mut out = Vec::new();
    for n in tree["nodes"].as_array().into_iter().flatten() {
        for a in n["snapshot"]["actors"].as_array().into_iter().flatten() {
            visit(a, &mut out);
        }
    }
    out
}

fn process_pid(tree: &serde_json::Value, task: &str) -> Option<i32> {
    actors(tree)
        .into_iter()
        .find(|a| a["kind"] == "process" && a["details"]["task"] == task)
        .and_then(|a| a["details"]["pid"].as_str().and_then(|p| p.parse().ok()))
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + SCREEN;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {SCREEN:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_repl_on_a_terminal_completes_paths_keeps_history_inspects_stops_and_survives_mistakes() {
    let stage = Stage::start("rp", &[]);
    let history = stage.dir.join("history");
    let history_arg = history.to_str().unwrap().to_string();
    let env = stage.repl_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let prompt = "troupe> ";

    let mut repl = Pty::spawn(
        Path::new(TROUPE),
        &["repl", "--history", &history_arg],
        &env,
    )
    .expect("the repl starts on a terminal");
    repl.expect(prompt, SCREEN).unwrap();

    // Completion of a path: only the allocator starts with master/al.
    repl.send("info master/al\t").unwrap();
    repl.expect("master/allocator ", SCREEN).unwrap();
    repl.send("\r").unwrap();
    let out = repl.expect(prompt, SCREEN).unwrap();
    assert!(
        out.contains("kind      actor") && out.contains(&format!("node      {}", stage.name)),
        "info on the completed path: {out}"
    );

    // `info` on a task's process actor tells its pid.
    repl.send(&format!("info task/{}\r", stage.task)).unwrap();
    let out = repl.expect(prompt, SCREEN).unwrap();
    assert!(out.contains("kind      process"), "{out}");
    assert!(out.contains(&format!("pid       {}", stage.pid)), "{out}");

    // An unknown command is an error, and the session goes on.
    repl.send("frobnicate now\r").unwrap();
    let out = repl.expect(prompt, SCREEN).unwrap();
    assert!(out.contains("unknown command `frobnicate`"), "{out}");
    repl.send("info no/such/actor\r").unwrap();
    let out = repl.expect(prompt, SCREEN).unwrap();
    assert!(out.contains("no actor no/such/actor"), "{out}");

    // `stop` on an observer: its supervisor restarts it, and `tree` counts the restart.
    let observer = format!("master/observer/{}-a1", stage.name);
    assert_eq!(stage.restarts(&observer), Some(0));
    repl.send(&format!("stop {observer}\r")).unwrap();
    let out = repl.expect(prompt, SCREEN).unwrap();
    assert!(out.contains(&format!("stopped {observer}")), "{out}");
    wait_for("the observer's restart", || {
        stage.restarts(&observer) == Some(1)
    });
    repl.send("tree\r").unwrap();
    let out = repl.expect(prompt, SCREEN).unwrap();
    assert!(
        out.contains(&format!("{observer}  [actor] running, restarts 1")),
        "{out}"
    );

    // A message in text form, answered.
    repl.send("call master help\r").unwrap();
    let out = repl.expect(prompt, SCREEN).unwrap();
    assert!(out.contains("state [all]"), "{out}");

    // `watch PATH` shows the actor's Down and its restart as they happen.
    repl.send(&format!("watch {observer}\r")).unwrap();
    repl.expect(&format!("watching {observer}"), SCREEN)
        .unwrap();
    let (code, out, err) = troupe_tests::troupe_with_input(
        TROUPE,
        &stage.addr,
        &["repl"],
        Some(&format!("stop {observer} watched\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    repl.expect(&format!("{observer} down: error: watched"), SCREEN)
        .unwrap();
    repl.expect("restarts 2", SCREEN).unwrap();
    repl.send("\x03").unwrap();
    repl.expect(prompt, SCREEN).unwrap();

    // Ctrl-C cancels a command that would run forever, not the REPL.
    // It shows the cluster's events as they happen meanwhile.
    repl.send("watch\r").unwrap();
    repl.expect("watching the cluster's events", SCREEN)
        .unwrap();
    let (code, out, err) = troupe(&stage.addr, &["run", "--name", "blink", "--", "true"]);
    assert_eq!(code, 0, "{out}{err}");
    repl.expect("task blink-", SCREEN).unwrap();
    repl.expect("finished", SCREEN).unwrap();
    repl.send("\x03").unwrap();
    repl.expect("cancelled", SCREEN).unwrap();
    repl.expect(prompt, SCREEN).unwrap();
    repl.send("ps\r").unwrap();
    let out = repl.expect(prompt, SCREEN).unwrap();
    assert!(out.contains(&stage.task), "ps after Ctrl-C: {out}");
    repl.send("call master help\r").unwrap();
    repl.expect(prompt, SCREEN).unwrap();

    // An attached `run` takes Ctrl-C as the command line does: the task is killed, and the
    // REPL goes on.
    repl.send("run --name sleeper -- sleep 30\r").unwrap();
    repl.expect("running on", SCREEN).unwrap();
    repl.send("\x03").unwrap();
    repl.expect("killing sleeper-", SCREEN).unwrap();
    let out = repl.expect(prompt, SCREEN).unwrap();
    assert!(out.contains("killed"), "{out}");
    repl.send("call master help\r").unwrap();
    repl.expect(prompt, SCREEN).unwrap();

    // Ctrl-D leaves, cleanly.
    repl.send("\x04").unwrap();
    assert!(repl.wait_exit(SCREEN).unwrap().success());
    let saved = std::fs::read_to_string(&history).unwrap();
    assert!(saved.contains("info master/allocator"), "{saved}");
    assert!(saved.contains("call master help"), "{saved}");

    // A second session finds the first one's history: Up brings back its last line.
    let mut again = Pty::spawn(
        Path::new(TROUPE),
        &["repl", "--history", &history_arg],
        &env,
    )
    .unwrap();
    again.expect(prompt, SCREEN).unwrap();
    again.send("\x1b[A").unwrap();
    again.expect("call master help", SCREEN).unwrap();
    again.send("\r").unwrap();
    let out = again.expect(prompt, SCREEN).unwrap();
    assert!(out.contains("state [all]"), "the recalled line ran: {out}");
    again.send("exit\r").unwrap();
    assert!(again.wait_exit(SCREEN).unwrap().success());
    stage.stop();
}

#[test]
fn the_repl_reads_commands_from_a_pipe_with_the_same_results() {
    let stage = Stage::start("rpp", &[]);
    let observer = format!("master/observer/{}-a2", stage.name);
    let script = format!(
        "# a comment, then the same commands as at the terminal\n\
         info task/{task}\n\
         frobnicate now\n\
         stop {observer}\n\
         watch {observer} --for 1\n\
         tree\n\
         call master help\n\
         call task/{task} info\n\
         send task/{task} info\n\
         top --limit 100\n\
         paths\n",
        task = stage.task
    );
    let (code, out, err) =
        troupe_tests::troupe_with_input(TROUPE, &stage.addr, &["repl"], Some(&script));
    // A line failed, so the exit code says so; every other line still ran.
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("unknown command `frobnicate`"), "{err}");
    assert!(!out.contains("troupe> "), "no prompt on a pipe: {out}");
    assert!(out.contains("kind      process"), "{out}");
    assert!(out.contains(&format!("pid       {}", stage.pid)), "{out}");
    assert!(out.contains(&format!("stopped {observer}")), "{out}");
    assert!(
        out.contains(&format!("{observer}  [actor] running, restarts 1")),
        "{out}"
    );
    assert!(out.contains("state [all]"), "{out}");
    assert!(out.contains(&format!("\"pid\": {}", stage.pid)), "{out}");
    // `send` delivers and returns: the answer is not waited for, nor printed twice.
    assert!(
        out.contains(&format!("sent to task/{}", stage.task)),
        "{out}"
    );
    assert_eq!(out.matches("\"pid\":").count(), 1, "{out}");
    assert!(out.contains(&format!("task/{}\n", stage.task)), "{out}");
    // `top` ranks actors by the messages they handled; the master core counts its own.
    let master_row = out
        .lines()
        .find(|l| l.starts_with("master ") && l.contains(&stage.name))
        .unwrap_or_else(|| panic!("the master core in top: {out}"));
    let handled: u64 = master_row
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(handled > 0, "{master_row}");
    stage.stop();
}

fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    troupe_tests::http_get(addr, path, SCREEN)
}

#[test]
fn http_health_state_tree_and_metrics_agree_and_health_fails_without_a_master() {
    let mut stage = Stage::start("ht", &["--http", "127.0.0.1:0"]);
    let line = stage
        .cluster
        .read_line_containing("http on http://", SCREEN)
        .unwrap();
    let http = line.rsplit("http://").next().unwrap().trim().to_string();
    // A task that ended, beside the one that runs.
    let (code, _, err) = troupe(&stage.addr, &["run", "--", "true"]);
    assert_eq!(code, 0, "{err}");

    let (code, body) = get(&http, "/health").unwrap();
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["master"]["agents_reachable"], 2);

    let (code, body) = get(&http, "/state").unwrap();
    assert_eq!(code, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut by_state = std::collections::BTreeMap::<String, f64>::new();
    for t in state["tasks"].as_array().unwrap() {
        *by_state
            .entry(t["status"]["state"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    assert_eq!(by_state.get("running"), Some(&1.0), "{body}");
    assert_eq!(by_state.get("finished"), Some(&1.0), "{body}");

    let (code, body) = get(&http, "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut tasks = std::collections::BTreeMap::<String, f64>::new();
    for s in &scrape.samples {
        if s.metric == "troupe_tasks" {
            if let prometheus_parse::Value::Gauge(v) = s.value {
                if v > 0.0 {
                    tasks.insert(s.labels.get("state").unwrap().to_string(), v);
                }
            }
        }
    }
    assert_eq!(
        tasks, by_state,
        "task counts of /metrics and /state:\n{body}"
    );
    let gauge = |name: &str, label: (&str, &str)| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(gauge("troupe_agents", ("state", "reachable")), Some(2.0));
    assert_eq!(gauge("troupe_node_up", ("node", &stage.name)), Some(1.0));
    assert!(gauge("troupe_node_messages_received_total", ("node", &stage.name)).unwrap() > 0.0);
    assert_eq!(
        gauge("troupe_node_decode_errors_total", ("cause", "malformed")),
        Some(0.0)
    );
    assert!(body.contains("troupe_allocation_seconds_count"), "{body}");
    // Each family's samples follow its TYPE line, as the format wants.
    let mut current = String::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            current = rest.split(' ').next().unwrap().to_string();
        } else if !line.starts_with('#') {
            assert!(line.starts_with(&current), "{line} outside its family");
        }
    }

    let (code, body) = get(&http, "/tree").unwrap();
    assert_eq!(code, 200);
    let tree: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(process_pid(&tree, &stage.task), Some(stage.pid));

    // The master core stops: the node still serves HTTP, and /health says it is down.
    // Killing the master's supervisor takes the whole master down, for good.
    let (code, out, err) = troupe_tests::troupe_with_input(
        TROUPE,
        &stage.addr,
        &["repl"],
        Some("kill master/supervisor\n"),
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    wait_for("/health failing", || {
        get(&http, "/health").is_ok_and(|(code, _)| code == 503)
    });
    // And once the process is gone, nothing answers at all.
    drop(stage.cluster);
    assert!(get(&http, "/health").is_err());
}
