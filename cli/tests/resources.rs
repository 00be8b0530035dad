//! Resources that run out: ended tasks' sandboxes collected by age and, over the disk
//! watermark, sooner (`troupe agent --gc-delay --gc-disk-watermark`), with `troupe master`
//! and `troupe agent` as OS processes and a small tmpfs as the agent's disk.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use troupe_tests::{ChildNode, ScratchDir, TEST_COOKIE, TaskLitter, require_root, troupe_at};

const TROUPE: &str = env!("CARGO_BIN_EXE_troupe");

/// A master and one agent working in `work`, with these extra agent flags.
struct Cluster {
    _master: ChildNode,
    _agent: ChildNode,
    addr: String,
    sandboxes: PathBuf,
}

impl Cluster {
    fn start(tag: &str, work: &Path, agent_flags: &[&str]) -> Cluster {
        let cmd = troupe_tests::master_command(TROUPE, &format!("{tag}m"), "127.0.0.1:0");
        let master = ChildNode::spawn(&format!("{tag}m"), cmd).expect("troupe master starts");
        let name = format!("{tag}{}", std::process::id());
        let mut cmd = Command::new(TROUPE);
        cmd.args(["agent", "--name", &name, "--cookie", TEST_COOKIE]);
        cmd.args([
            "--master",
            &master.addr.to_string(),
            "--cpus",
            "2",
            "--mem",
            "256",
        ]);
        cmd.args(agent_flags);
        cmd.arg("--work-dir").arg(work);
        let agent = ChildNode::spawn(&name, cmd).expect("troupe agent starts");
        Cluster {
            addr: master.addr.to_string(),
            _master: master,
            _agent: agent,
            sandboxes: work.join("sandboxes"),
        }
    }

    fn troupe(&self, args: &[&str]) -> (i32, String, String) {
        troupe_at(TROUPE, &self.addr, args)
    }

    fn state(&self, id: &str) -> String {
        let (_, out, _) = self.troupe(&["ps", "--all", "--json"]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        tasks
            .iter()
            .find(|t| t["id"] == id)
            .and_then(|t| t["status"]["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Runs `script` detached, and waits until its task is in `state`: its id.
    fn run(&self, name: &str, script: &str, state: &str) -> String {
        let start = Instant::now();
        let id = loop {
            let (code, out, err) =
                self.troupe(&["run", "--detach", "--name", name, "--", "sh", "-c", script]);
            if code == 0 {
                break out.trim().to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{err}");
            std::thread::sleep(Duration::from_millis(200));
        };
        while self.state(&id) != state {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{id} not {state}: {}",
                self.state(&id)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        id
    }

    fn sandbox(&self, id: &str) -> PathBuf {
        self.sandboxes.join(id)
    }
}

fn wait_gone(path: &Path, within: Duration) {
    let start = Instant::now();
    while path.exists() {
        assert!(
            start.elapsed() < within,
            "{} is still there",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sandboxes_of_ended_tasks_are_collected_after_the_gc_delay_and_their_logs_readable_until_then() {
    let dir = ScratchDir::new("gc-age");
    let work = dir.join("work");
    let tag = "gcage";
    let _litter = TaskLitter::new(
        work.join("sandboxes"),
        &format!("{tag}{}", std::process::id()),
    );
    let cluster = Cluster::start(tag, &work, &["--gc-delay", "3"]);
    let ended = cluster.run("said", "echo kept until collected", "finished");
    let running = cluster.run("napper", "sleep 600", "running");
    assert!(cluster.sandbox(&ended).exists());
    let (code, logs, err) = cluster.troupe(&["logs", &ended]);
    assert_eq!(
        (code, logs.as_str()),
        (0, "kept until collected\n"),
        "{err}"
    );

    // Past the delay, the ended task's sandbox goes; the running one's stays.
    wait_gone(&cluster.sandbox(&ended), Duration::from_secs(30));
    assert!(
        cluster.sandbox(&running).exists(),
        "a running task keeps its sandbox"
    );
    let (code, _, err) = cluster.troupe(&["logs", &ended]);
    assert_eq!(code, 1, "its logs went with it");
    assert!(
        err.contains("are gone: its sandbox was removed") && err.contains("3 s (--gc-delay)"),
        "{err}"
    );
    let (code, _, err) = cluster.troupe(&["kill", &running]);
    assert_eq!(code, 0, "{err}");
}

/// A tmpfs of `mib` MiB mounted at a directory, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf, mib: u32) -> SmallDisk {
        std::fs::create_dir_all(&at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount a tmpfs at {}", at.display());
        SmallDisk(at)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn over_the_disk_watermark_ended_sandboxes_go_sooner_oldest_first() {
    if !require_root("a tmpfs as the agent's disk") {
        return;
    }
    let dir = ScratchDir::new("gc-disk");
    let work = dir.join("work");
    // Declared first, dropped last: unmounted once the agent and its tasks are gone.
    let disk = SmallDisk::mount(work.clone(), 32);
    let tag = "gcdisk";
    let _litter = TaskLitter::new(
        work.join("sandboxes"),
        &format!("{tag}{}", std::process::id()),
    );
    let cluster = Cluster::start(
        tag,
        &work,
        &[
            "--gc-delay",
            "3600",
            "--gc-disk-watermark",
            "50",
            "--disk",
            "16",
        ],
    );
    // Three ended tasks of 4 MiB each, one after another, and one that runs: 13 MiB of 32.
    let blob = "head -c 4194304 /dev/zero > blob";
    let ended: Vec<String> = (0..3)
        .map(|i| cluster.run(&format!("blob{i}"), blob, "finished"))
        .collect();
    let running = cluster.run(
        "napper",
        "head -c 1048576 /dev/zero > blob; sleep 600",
        "running",
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        ended.iter().all(|id| cluster.sandbox(id).exists()),
        "under the watermark, all stay"
    );

    // Past it (13 MiB of sandboxes and 8 MiB more: 21 of 32): the oldest go, one by one,
    // until it is under again (17, then 13); the youngest and the running one stay.
    std::fs::write(disk.0.join("filler"), vec![0u8; 8 << 20]).unwrap();
    wait_gone(&cluster.sandbox(&ended[0]), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !cluster.sandbox(&ended[1]).exists(),
        "the next oldest too, until under"
    );
    assert!(
        cluster.sandbox(&ended[2]).exists(),
        "under the watermark again: it stays"
    );
    assert!(cluster.sandbox(&running).exists());
    let (code, _, err) = cluster.troupe(&["kill", &running]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_agent_near_its_descriptor_limit_refuses_launches_with_why_and_runs_on() {
    let dir = ScratchDir::new("fd-limit");
    let work = dir.join("work");
    let tag = "fdlimit";
    let name = format!("{tag}{}", std::process::id());
    let _litter = TaskLitter::new(work.join("sandboxes"), &name);
    let master = troupe_tests::master_command(TROUPE, &format!("{tag}m"), "127.0.0.1:0");
    let master = ChildNode::spawn(&format!("{tag}m"), master).expect("troupe master starts");
    // An agent whose limit (soft and hard) is 240 descriptors.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=240:240", "--", TROUPE, "agent", "--name", &name]);
    cmd.args([
        "--cookie",
        TEST_COOKIE,
        "--master",
        &master.addr.to_string(),
    ]);
    cmd.args(["--cpus", "8", "--mem", "4096"]);
    cmd.arg("--work-dir").arg(&work);
    let _agent = ChildNode::spawn(&name, cmd).expect("troupe agent starts");
    let addr = master.addr.to_string();
    let troupe = |args: &[&str]| troupe_at(TROUPE, &addr, args);
    let tasks = || -> Vec<serde_json::Value> {
        let (_, out, _) = troupe(&["ps", "--all", "--json"]);
        serde_json::from_str(&out).unwrap_or_default()
    };
    let start = Instant::now();
    loop {
        let (code, _, err) = troupe(&["run", "--detach", "--count", "30", "--", "sleep", "600"]);
        if code == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each ends up running, or refused before anything of it was made.
    let settled = |all: &[serde_json::Value]| {
        all.len() == 30
            && all
                .iter()
                .all(|t| matches!(t["status"]["state"].as_str(), Some("running" | "failed")))
    };
    let mut all = tasks();
    while !settled(&all) {
        assert!(start.elapsed() < Duration::from_secs(40), "{all:#?}");
        std::thread::sleep(Duration::from_millis(200));
        all = tasks();
    }
    let refused: Vec<&serde_json::Value> = all
        .iter()
        .filter(|t| t["status"]["state"] == "failed")
        .collect();
    assert!(!refused.is_empty(), "the limit was reached");
    assert!(refused.len() < 30, "the room there was was used");
    for t in &refused {
        let reason = t["status"]["reason"].as_str().unwrap_or("");
        assert!(reason.contains("near its open-file limit"), "{reason}");
    }
    // The agent runs on: the running tasks killed, a new one runs.
    for t in all.iter().filter(|t| t["status"]["state"] == "running") {
        let (code, _, err) = troupe(&["kill", t["id"].as_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = troupe(&["run", "--", "sh", "-c", "echo after"]);
    assert_eq!((code, out.as_str()), (0, "after\n"), "{err}");
}

#[test]
fn a_full_disk_refuses_launches_with_why_keeps_running_tasks_and_a_valid_checkpoint_and_recovers() {
    if !require_root("a tmpfs as the agent's disk") {
        return;
    }
    let dir = ScratchDir::new("full-disk");
    let work = dir.join("work");
    let disk = SmallDisk::mount(work.clone(), 32);
    let tag = "fulldisk";
    let _litter = TaskLitter::new(
        work.join("sandboxes"),
        &format!("{tag}{}", std::process::id()),
    );
    // GC never frees it here (the watermark is the whole disk): the full disk is the test.
    let cluster = Cluster::start(tag, &work, &["--gc-disk-watermark", "100", "--disk", "8"]);
    let running = cluster.run("napper", "sleep 600", "running");
    // Its checkpoint written (every 200 ms at most, after a change).
    let checkpoint = work.join("agent.json");
    let start = Instant::now();
    while !std::fs::read_to_string(&checkpoint).is_ok_and(|c| c.contains(&running)) {
        assert!(start.elapsed() < Duration::from_secs(10), "no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The disk filled by something else (a file written until there is no room).
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
    }
    // A launch is refused whole, with why.
    let refused = cluster.run("refused", "echo never", "failed");
    let (_, out, _) = cluster.troupe(&["ps", "--all", "--json"]);
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let reason = tasks
        .iter()
        .find(|t| t["id"] == refused.as_str())
        .and_then(|t| t["status"]["reason"].as_str().map(str::to_string))
        .unwrap();
    assert!(reason.contains("the agent's disk is full"), "{reason}");
    // The running task runs on; the checkpoint on disk is whole (the last one written).
    assert_eq!(cluster.state(&running), "running");
    std::thread::sleep(Duration::from_millis(600));
    let checkpoint = std::fs::read(&checkpoint).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_slice(&checkpoint).expect("a whole checkpoint");
    assert!(
        parsed["tasks"]
            .as_object()
            .is_some_and(|t| t.contains_key(&running))
    );

    // Room again: launches run.
    std::fs::remove_file(&filler).unwrap();
    cluster.run("after", "echo again", "finished");
    let (code, _, err) = cluster.troupe(&["kill", &running]);
    assert_eq!(code, 0, "{err}");
}
