//! The launcher: one per shim program and owner, forking each task's shim; started again
//! when it dies; and an older shim program that cannot be one is exec'd per task instead.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use troupe_os::ExitReason;
use troupe_os::launcher::LAUNCHER_FLAG;

use crate::{Fixture, sh, until, within};

/// The children of `parent`: pid, state (`Z` for one not reaped yet) and command line.
fn children(parent: u32) -> Vec<(i32, String, Vec<u8>)> {
    let parent = parent.to_string();
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
        if ppid == Some(parent.as_str()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, state.unwrap_or("").to_string(), cmdline));
        }
    }
    found
}

/// This process's children that run as a launcher (zombies left out).
fn launchers() -> Vec<i32> {
    children(std::process::id())
        .into_iter()
        .filter(|(_, state, cmdline)| {
            state != "Z"
                && cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == LAUNCHER_FLAG.as_bytes())
        })
        .map(|(pid, _, _)| pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_share_one_launcher_which_is_started_again_when_it_dies() {
    let Some(fx) = Fixture::new() else { return };
    // Two at once: each needs a shim of its own, forked by the one launcher.
    let first = fx.spawn("first", sh("sleep 0.3")).await;
    let second = fx.spawn("second", sh("sleep 0.3")).await;
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

    // The two shims are spares now (see keeper.rs): a third task at once needs a new one.
    assert_eq!(fx.executor.spare_shims(), 2);
    let mut runs = Vec::new();
    for task in ["third", "fourth", "fifth"] {
        runs.push(fx.spawn(task, sh("sleep 0.3; exit 3")).await);
    }
    for p in &runs {
        assert_eq!(
            within(Duration::from_secs(10), p.wait()).await,
            ExitReason::Exited(3)
        );
    }
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

/// Sends one frame (`len` in the header, `body` after it) with `fd` attached, if any.
fn send_frame(
    socket: &std::os::unix::net::UnixStream,
    len: u32,
    body: &[u8],
    fd: Option<std::os::fd::BorrowedFd<'_>>,
) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let header = len.to_le_bytes();
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    let fds: Vec<_> = fd.into_iter().collect();
    if !fds.is_empty() {
        ancillary.push(SendAncillaryMessage::ScmRights(&fds));
    }
    let parts = [std::io::IoSlice::new(&header), std::io::IoSlice::new(body)];
    rustix::net::sendmsg(socket, &parts, &mut ancillary, SendFlags::empty()).unwrap();
}

/// The launcher's side of its protocol: a plan it cannot read is answered with a failure
/// on that request's pipe, and it serves the next; a frame without its pipe, or cut short,
/// ends it with an error (its owner starts another), never a panic.
#[test]
fn a_launcher_answers_a_bad_plan_and_ends_on_a_broken_frame() {
    use std::io::{BufRead, Read};
    let start = || {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_troupe-shim"))
            .arg(LAUNCHER_FLAG)
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                theirs,
            )))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut hello = [0u8; troupe_os::launcher::HELLO.len()];
        (&ours).read_exact(&mut hello).unwrap();
        assert_eq!(hello, troupe_os::launcher::HELLO);
        (ours, child)
    };
    let (socket, mut launcher) = start();
    for _ in 0..2 {
        let (reports, report_writer) = rustix::pipe::pipe().unwrap();
        let body = b"{not a plan";
        send_frame(
            &socket,
            body.len() as u32,
            body,
            Some(std::os::fd::AsFd::as_fd(&report_writer)),
        );
        drop(report_writer);
        let mut line = String::new();
        std::io::BufReader::new(std::fs::File::from(reports))
            .read_line(&mut line)
            .unwrap();
        match troupe_os::shim::Report::parse(&line) {
            Some(troupe_os::shim::Report::Failed(failed)) => {
                assert!(
                    failed.error.contains("cannot read the launch plan"),
                    "{failed:?}"
                )
            }
            other => panic!("not a failure: {line:?} {other:?}"),
        }
    }
    // A frame without its report socket.
    send_frame(&socket, 2, b"{}", None);
    let status = launcher.wait().unwrap();
    let mut stderr = String::new();
    launcher
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("without its report socket"), "{stderr}");

    // A frame cut short by its owner's end.
    let (socket, mut launcher) = start();
    let (_reports, report_writer) = rustix::pipe::pipe().unwrap();
    send_frame(
        &socket,
        100,
        b"{\"argv\"",
        Some(std::os::fd::AsFd::as_fd(&report_writer)),
    );
    drop(socket);
    let status = launcher.wait().unwrap();
    assert_eq!(status.code(), Some(1));
}

/// The children of `pid` that have ended and are not reaped yet.
fn zombie_children(pid: i32) -> usize {
    children(pid as u32)
        .into_iter()
        .filter(|(_, state, _)| state == "Z")
        .count()
}

/// Each shim leads a session of its own, so the launcher must wait for any child, not for
/// those of its process group: no shim is left a zombie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_reaps_the_shims_it_forked() {
    let Some(fx) = Fixture::new() else { return };
    for i in 0..4 {
        let p = fx.spawn(&format!("t{i}"), sh("exit 0")).await;
        within(Duration::from_secs(10), p.wait()).await;
    }
    let launcher = launchers();
    assert_eq!(launcher.len(), 1);
    assert!(
        until(Duration::from_secs(5), || zombie_children(launcher[0]) == 0).await,
        "{} shims left unreaped",
        zombie_children(launcher[0])
    );
}

/// Two owners in one process (two agents, or an agent and an application) each have their
/// own launch machinery: launchers, spare shims, warm pools. Nothing of one is used, seen or
/// removed by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_executors_in_one_process_share_nothing() {
    use troupe_os::Process;
    use troupe_os::warm::WARM;
    let Some(a) = Fixture::new() else { return };
    let Some(b) = Fixture::new() else { return };
    assert!(!a.executor.same_as(&b.executor));
    assert!(a.executor.same_as(&a.executor.clone()));
    let ta = Process::spawn(sh("exit 0"), a.ctx("ta").warming())
        .await
        .unwrap();
    let tb = Process::spawn(sh("exit 0"), b.ctx("tb").warming())
        .await
        .unwrap();
    for p in [&ta, &tb] {
        assert_eq!(
            within(Duration::from_secs(10), p.wait()).await,
            ExitReason::Exited(0)
        );
    }
    // A launcher each, and a shim each, now each owner's spare.
    assert_eq!(launchers().len(), 2, "a launcher per executor");
    let (shim_a, shim_b) = (crate::shim_of(&ta), crate::shim_of(&tb));
    assert_ne!(shim_a, shim_b);
    let spares = until(Duration::from_secs(5), || {
        a.executor.spare_shims() == 1 && b.executor.spare_shims() == 1
    })
    .await;
    assert!(
        spares,
        "{} and {}",
        a.executor.spare_shims(),
        b.executor.spare_shims()
    );
    // The next task of b runs on b's spare, never on a's.
    let tb2 = b.spawn("tb2", sh("exit 0")).await;
    assert_eq!(crate::shim_of(&tb2), shim_b);
    within(Duration::from_secs(10), tb2.wait()).await;
    assert_eq!(a.executor.spare_shims(), 1, "a's spare is untouched");
    // Each fills its own pools, and knows nothing of the other's.
    let filled = until(Duration::from_secs(10), || {
        a.executor.warm_ready(&a.root, &a.agent).0 == WARM
            && b.executor.warm_ready(&b.root, &b.agent).0 == WARM
    })
    .await;
    assert!(filled, "both pools fill");
    assert_eq!(a.executor.warm_ready(&b.root, &b.agent), (0, 0));
    assert_eq!(b.executor.warm_ready(&a.root, &a.agent), (0, 0));
    // A drain of one leaves the other's pools.
    a.executor.drain(&a.root, &a.agent);
    assert_eq!(a.executor.warm_ready(&a.root, &a.agent), (0, 0));
    assert_eq!(b.executor.warm_ready(&b.root, &b.agent).0, WARM);
    let warm_b = std::fs::read_dir(b.root.join(".troupe-warm"))
        .unwrap()
        .count();
    assert_eq!(warm_b, WARM, "b's warm sandboxes are still on disk");
}
