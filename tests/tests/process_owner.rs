//! A task outlives its owner: the owner (a separate process) is SIGKILLed, the task keeps
//! running and logging, and a new owner adopts it and reports its real exit code. As root;
//! skipped with a reason otherwise, and failing when `TROUPE_REQUIRE_ROOT=1`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use troupe_os::process::TaskContext;
use troupe_os::{ExitReason, Process};
use troupe_tests::TaskLitter;

const OWNER: &str = env!("CARGO_BIN_EXE_troupe-testowner");

fn root_or_skip() -> bool {
    if rustix::process::geteuid().as_raw() == 0 {
        return true;
    }
    assert!(
        std::env::var("TROUPE_REQUIRE_ROOT").as_deref() != Ok("1"),
        "TROUPE_REQUIRE_ROOT=1 but not running as root"
    );
    eprintln!("skipped: this test needs root (cgroups)");
    false
}

/// The sandbox root and agent of this test, and the task's owner process: all gone on drop.
struct Place {
    litter: TaskLitter,
    owner: Option<std::process::Child>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(owner) = &mut self.owner {
            let _ = owner.kill();
            let _ = owner.wait();
        }
    }
}

impl Place {
    fn new(name: &str) -> Place {
        let id = std::process::id();
        Place {
            litter: TaskLitter::new(
                std::env::temp_dir().join(format!("troupe-{name}-{id}")),
                &format!("{name}-{id}"),
            ),
            owner: None,
        }
    }
}

/// The owner's command: run `script` as task t1 of `agent`, with sandboxes under `root`.
fn owner_command(
    owner: &std::path::Path,
    root: &std::path::Path,
    agent: &str,
    script: &str,
) -> Command {
    let mut cmd = Command::new(owner);
    cmd.args([
        root.to_str().unwrap(),
        agent,
        "t1",
        "--",
        "/bin/sh",
        "-c",
        script,
    ]);
    cmd
}

fn log_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_outlives_its_killed_owner_and_is_adopted_with_its_real_exit() {
    if !root_or_skip() {
        return;
    }
    let mut place = Place::new("owner");
    let (root, agent) = (place.litter.root.clone(), place.litter.agent.clone());
    let script = "i=0; while [ ! -e stop ]; do i=$((i+1)); echo tick $i; sleep 0.02; done; exit 3";
    let owner = place.owner.insert(
        owner_command(OWNER.as_ref(), &root, &agent, script)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(owner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: i32 = line
        .trim()
        .strip_prefix("started ")
        .expect("started PID")
        .parse()
        .unwrap();

    owner.kill().unwrap();
    owner.wait().unwrap();
    // With no owner, the task runs on and keeps writing its log.
    let log = root.join("t1").join("stdout.log");
    let before = log_len(&log);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_len(&log) <= before + 100 {
        assert!(Instant::now() < deadline, "the log stopped growing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(troupe_os::procfs::is_running(pid));

    // A new owner adopts it, and hears how it really ended.
    let ctx = TaskContext::new(&troupe_os::Executor::new(), &agent, "t1", root.clone())
        .with_shim(PathBuf::from(OWNER).with_file_name("troupe-shim"));
    let adopted = Process::adopt(ctx).await.expect("adopted");
    assert_eq!(adopted.pid(), pid);
    std::fs::write(root.join("t1").join("stop"), "").unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), adopted.wait())
        .await
        .unwrap();
    assert_eq!(reason, ExitReason::Exited(3));
    assert!(adopted.cgroup_dirs().iter().all(|d| !d.exists()));
}

/// Without root there are no cgroups: the task still runs, in its own process group, and
/// the owner says so once instead of failing silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_root_a_task_runs_without_cgroups_and_the_owner_says_so() {
    if !root_or_skip() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let place = Place::new("nonroot");
    let (root, agent) = (place.litter.root.clone(), place.litter.agent.clone());
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    // The build directory may be closed to other users (under /root, say): run copies.
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let owner = bin.join("troupe-testowner");
    let shim = bin.join("troupe-shim");
    std::fs::copy(OWNER, &owner).unwrap();
    std::fs::copy(PathBuf::from(OWNER).with_file_name("troupe-shim"), &shim).unwrap();
    let out = owner_command(&owner, &root, &agent, "echo ran; id -u")
        .env("TROUPE_SHIM", &shim)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("exit exited with code 0"), "{stdout}");
    assert_eq!(
        stderr.matches("tasks run without cgroups").count(),
        1,
        "{stderr}"
    );
    let log = std::fs::read_to_string(root.join("t1").join("stdout.log")).unwrap();
    assert_eq!(log, "ran\n65534\n");
}
