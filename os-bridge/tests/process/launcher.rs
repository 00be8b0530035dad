//! The launcher: one per shim program and owner, forking each task's shim; started again
//! when it dies; and an older shim program that cannot be one is exec'd per task instead.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use troupe_os::ExitReason;
use troupe_os::launcher::LAUNCHER_FLAG;

use crate::{Fixture, sh, until, within};

/// This process's children that run as a launcher (zombies left out).
fn launchers() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let mut after = stat
            .rsplit_once(')')
            .map_or("", |(_, a)| a)
            .split_whitespace();
        let (state, ppid) = (after.next(), after.next());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let is_launcher = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == LAUNCHER_FLAG.as_bytes());
        if ppid == Some(me.as_str()) && state != Some("Z") && is_launcher {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_share_one_launcher_which_is_started_again_when_it_dies() {
    let Some(fx) = Fixture::new() else { return };
    let first = fx.spawn("first", sh("exit 0")).await;
    let second = fx.spawn("second", sh("exit 0")).await;
    for p in [&first, &second] {
        assert_eq!(
            within(Duration::from_secs(10), p.wait()).await,
            ExitReason::Exited(0)
        );
    }
    let before = launchers();
    assert_eq!(before.len(), 1, "one launcher for both tasks: {before:?}");
    // No plan file: the plan went over the launcher's socket.
    assert!(!first.sandbox().join(".troupe/launch.json").exists());

    let pid = rustix::process::Pid::from_raw(before[0]).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    assert!(until(Duration::from_secs(5), || launchers().is_empty()).await);

    let third = fx.spawn("third", sh("exit 3")).await;
    assert_eq!(
        within(Duration::from_secs(10), third.wait()).await,
        ExitReason::Exited(3)
    );
    let after = launchers();
    assert_eq!(after.len(), 1, "a new launcher: {after:?}");
    assert_ne!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shim_program_that_cannot_be_a_launcher_is_execd_per_task() {
    let Some(fx) = Fixture::new() else { return };
    // An older troupe-shim: it takes a plan file, and knows nothing of --launcher.
    let old = fx.root.join("old-shim");
    std::fs::write(
        &old,
        format!(
            "#!/bin/sh\n[ \"$1\" = {LAUNCHER_FLAG} ] && exit 2\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_troupe-shim")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (task, code) in [("first", 4), ("second", 5)] {
        let mut ctx = fx.ctx(task);
        ctx.shim = old.clone();
        let p = troupe_os::Process::spawn(sh(&format!("exit {code}")), ctx)
            .await
            .expect("the task starts");
        assert_eq!(
            within(Duration::from_secs(10), p.wait()).await,
            ExitReason::Exited(code)
        );
        assert!(p.sandbox().join(".troupe/launch.json").exists());
    }
    assert!(launchers().is_empty());
}
