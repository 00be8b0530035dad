//! The launcher: one long-lived shim per owner process that forks a shim for each task,
//! so that a launch or a restart does not exec a shim binary.
//!
//! ```text
//!   owner (agent, supervisor...)          multi-threaded: must not fork and keep running
//!     └── troupe-shim --launcher          single-threaded; started once, on first launch
//!           ├── shim (forked)  task A      as before: the parent of its task (shim.rs)
//!           │     └── task A
//!           └── shim (forked)  task B
//!                 └── task B
//! ```
//!
//! Exec'ing the shim costs about as much as the task's own fork and exec (the dynamic
//! loader, the runtime's start) and, started from the owner, blocks an owner thread until
//! the exec is done. A fork of the small single-threaded launcher costs a fraction of that,
//! and the owner only writes a message (from a thread that may block: a launcher that has
//! stopped reading holds the write up to a timeout).
//!
//! The owner and the launcher share a Unix stream socket (the launcher's standard input).
//! Each request is a frame: a little-endian `u32` length and the [`LaunchPlan`] as JSON,
//! with one end of a socket pair attached (`SCM_RIGHTS`). The launcher forks; the child
//! becomes the task's shim, with that socket as its standard output, where it reports exactly
//! as an exec'd shim does ([`crate::shim::Report`]). The launcher first writes
//! [`HELLO`] to the socket: a shim binary too old to be a launcher writes nothing and exits,
//! and the owner then execs a shim per task as before, so an older `troupe-shim` beside a
//! newer owner still works.
//!
//! A launcher ends when its owner does (its end of the socket reads end-of-file); the
//! shims it forked live on, in sessions of their own, as exec'd shims do. A launcher that
//! died is started again on the next launch. The launcher reaps its shims itself.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tracing::{debug, warn};

use crate::shim::{self, LaunchPlan};

/// The argument, after the shim program's own, that makes it a launcher.
pub const LAUNCHER_FLAG: &str = "--launcher";

/// What a launcher writes first, so that its owner knows it speaks this protocol.
pub const HELLO: &[u8] = b"troupe-launcher 1\n";

/// The largest launch plan a launcher reads (an environment and arguments can be large;
/// Linux caps them together at a few MiB): the shim's own bound.
use crate::shim::MAX_PLAN;

/// How long a starting launcher may take to say hello, and a request to be taken.
const TIMEOUT: Duration = Duration::from_secs(5);

/// An owner's launchers, one per shim program, started with its first launch through it
/// and stopped when this goes (part of an owner's [`crate::Executor`]).
#[derive(Default)]
pub(crate) struct Launchers {
    running: Mutex<HashMap<ShimCommand, State>>,
}

impl std::fmt::Debug for Launchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.running.try_lock().map(|l| l.len()).ok();
        f.debug_struct("Launchers").field("running", &n).finish()
    }
}

/// A shim program and the arguments before its own.
pub(crate) type ShimCommand = (PathBuf, Vec<String>);

enum State {
    Running(Launcher),
    /// The program is not a launcher (an older shim): exec it per task.
    Unsupported,
}

struct Launcher {
    socket: OwnedFd,
    process: std::process::Child,
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Dropped when it failed a request: whatever state it is in, it is done. (Its shims
        // are in sessions of their own and live on.)
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Why a launcher could not be had.
enum StartFailure {
    /// The program ended, or closed its end, without the hello: not a launcher.
    NotALauncher(String),
    /// Something that may pass (no process slot, a slow start): try again next time.
    Failed(std::io::Error),
}

/// Asks the launcher of `shim` to start a shim for `plan`. Returns the read end of the
/// socket the shim reports on, or `None` when `shim` cannot be a launcher (exec it instead).
///
/// Blocks: on a launcher's start (up to [`TIMEOUT`] for its hello), and on a request the
/// launcher does not take (up to [`TIMEOUT`]). Call it where blocking is allowed.
pub(crate) fn launch(
    launchers: &Launchers,
    shim: &Path,
    shim_args: &[String],
    plan: &LaunchPlan,
) -> std::io::Result<Option<OwnedFd>> {
    let body = encode(plan)?;
    let key = (shim.to_path_buf(), shim_args.to_vec());
    let mut launchers = launchers.running.lock().unwrap_or_else(|p| p.into_inner());
    // A launcher that died since the last launch gets one fresh start.
    for attempt in 0..2 {
        if !launchers.contains_key(&key) {
            match Launcher::start(shim, shim_args) {
                Ok(launcher) => {
                    launchers.insert(key.clone(), State::Running(launcher));
                }
                Err(StartFailure::NotALauncher(why)) => {
                    warn!(shim = %shim.display(), cause = %why, "the shim program cannot be a launcher; a shim is exec'd per task");
                    launchers.insert(key.clone(), State::Unsupported);
                }
                Err(StartFailure::Failed(e)) => return Err(e),
            }
        }
        let Some(State::Running(launcher)) = launchers.get(&key) else {
            return Ok(None);
        };
        let (reports, report_writer) = report_socket()?;
        match launcher.send(&body, report_writer) {
            Ok(()) => return Ok(Some(reports)),
            Err(e) => {
                // Gone, stuck, or with part of a frame sent: it is done either way.
                launchers.remove(&key);
                if attempt == 1 {
                    return Err(e);
                }
                debug!(shim = %shim.display(), cause = %e, "the launcher failed a request; starting another");
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// Asks the launcher of `shim` to start a shim for `plan` if one runs already and takes the
/// request at once: never blocks, so an owner calls it on its runtime and saves the trip
/// to a blocking thread and back (two thread wake-ups a launch). `None` when there is no
/// such launcher yet, another thread holds the launchers, or the request would wait; the
/// caller then goes through [`launch`], which also starts a launcher anew when this one
/// failed.
pub(crate) fn launch_now(
    launchers: &Launchers,
    shim: &Path,
    shim_args: &[String],
    plan: &LaunchPlan,
) -> Option<OwnedFd> {
    let body = encode(plan).ok()?;
    let key = (shim.to_path_buf(), shim_args.to_vec());
    let mut launchers = launchers.running.try_lock().ok()?;
    let Some(State::Running(launcher)) = launchers.get(&key) else {
        return None;
    };
    let (reports, report_writer) = report_socket().ok()?;
    match launcher.send_now(&body, report_writer) {
        Ok(true) => Some(reports),
        Ok(false) => None,
        Err(e) => {
            // Gone, or with part of a frame sent: done either way; `launch` starts another.
            debug!(shim = %shim.display(), cause = %e, "the launcher failed a request");
            launchers.remove(&key);
            None
        }
    }
}

/// The socket a shim reports on and takes further plans on: the owner's end, and the end
/// sent with the request.
fn report_socket() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A request's body: the plan as JSON, within the launcher's limit.
fn encode(plan: &LaunchPlan) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(plan).map_err(std::io::Error::other)?;
    if body.len() > MAX_PLAN {
        return Err(std::io::Error::other(format!(
            "a launch plan of {} bytes is over the launcher's limit",
            body.len()
        )));
    }
    Ok(body)
}

impl Launcher {
    /// Sends a request if the socket takes all of it now: `Ok(false)` when it would wait
    /// (nothing sent), an error when the launcher is gone or took only part of it.
    fn send_now(&self, body: &[u8], reports: OwnedFd) -> std::io::Result<bool> {
        let header = u32::try_from(body.len())
            .map_err(|_| std::io::Error::other("the launch plan is too large"))?
            .to_le_bytes();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = SendAncillaryBuffer::new(&mut space);
        let fds = [reports.as_fd()];
        ancillary.push(SendAncillaryMessage::ScmRights(&fds));
        let parts = [IoSlice::new(&header), IoSlice::new(body)];
        let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
        match rustix::net::sendmsg(&self.socket, &parts, &mut ancillary, flags) {
            Ok(sent) if sent == header.len() + body.len() => Ok(true),
            Ok(_) => Err(std::io::Error::other("the launcher took part of a request")),
            Err(rustix::io::Errno::AGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts `shim [shim_args] --launcher` and waits for its hello.
    fn start(shim: &Path, shim_args: &[String]) -> Result<Launcher, StartFailure> {
        let failed = StartFailure::Failed;
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| failed(e.into()))?;
        let mut process = Command::new(shim)
            .args(shim_args)
            .arg(LAUNCHER_FLAG)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(failed)?;
        let mut hello = [0u8; HELLO.len()];
        let said = [
            rustix::net::sockopt::Timeout::Recv,
            rustix::net::sockopt::Timeout::Send,
        ]
        .into_iter()
        .try_for_each(|which| {
            rustix::net::sockopt::set_socket_timeout(&ours, which, Some(TIMEOUT))
                .map_err(std::io::Error::from)
        })
        .and_then(|()| std::fs::File::from(ours.try_clone()?).read_exact(&mut hello));
        let failure = match said {
            Ok(()) if hello == HELLO => None,
            Ok(()) => Some(StartFailure::NotALauncher(format!(
                "`{} {LAUNCHER_FLAG}` said something else",
                shim.display()
            ))),
            // It ended, or closed its end, without a word.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Some(StartFailure::NotALauncher(format!(
                    "`{} {LAUNCHER_FLAG}` ended without a hello",
                    shim.display()
                )))
            }
            Err(e) => Some(StartFailure::Failed(std::io::Error::other(format!(
                "no hello from `{} {LAUNCHER_FLAG}`: {e}",
                shim.display()
            )))),
        };
        if let Some(failure) = failure {
            let _ = process.kill();
            let _ = process.wait();
            return Err(failure);
        }
        debug!(shim = %shim.display(), pid = process.id(), "launcher started");
        Ok(Launcher {
            socket: ours,
            process,
        })
    }

    /// Sends one request: the frame, with `reports` (the shim's end of its socket) attached.
    fn send(&self, body: &[u8], reports: OwnedFd) -> std::io::Result<()> {
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&n| n as usize <= MAX_PLAN)
            .ok_or_else(|| std::io::Error::other("the launch plan is too large"))?;
        let header = len.to_le_bytes();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = SendAncillaryBuffer::new(&mut space);
        let fds = [reports.as_fd()];
        ancillary.push(SendAncillaryMessage::ScmRights(&fds));
        let parts = [IoSlice::new(&header), IoSlice::new(body)];
        let sent = rustix::net::sendmsg(&self.socket, &parts, &mut ancillary, SendFlags::NOSIGNAL)?;
        // The fd went with the first byte; whatever did not fit follows without it.
        let frame_len = header.len() + body.len();
        if sent < frame_len {
            let mut rest = Vec::with_capacity(frame_len - sent);
            rest.extend_from_slice(&header);
            rest.extend_from_slice(body);
            let mut socket = std::fs::File::from(self.socket.try_clone()?);
            socket.write_all(&rest[sent..])?;
        }
        Ok(())
    }
}

/// The launcher's `main`: serves requests on standard input until it closes.
pub fn launcher_main() -> ! {
    // It forks and runs on in the child, which is sound only with one thread: a program
    // that became the shim after starting threads (a runtime) is not a launcher. Without
    // the hello its owner execs a shim per task instead.
    if threads() != Some(1) {
        eprintln!(
            "troupe-shim {LAUNCHER_FLAG}: this process runs threads, so it cannot fork shims (call main_if_shim before starting any)"
        );
        std::process::exit(2);
    }
    // A session of its own: a Ctrl-C at the owner's terminal is not for it.
    let _ = rustix::process::setsid();
    let socket = rustix::stdio::stdin();
    if write_all(socket, HELLO).is_err() {
        std::process::exit(1);
    }
    loop {
        reap_shims();
        // Wake now and then to reap shims that ended while no request came.
        let mut fds = [rustix::event::PollFd::new(
            &socket,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => std::process::exit(1),
        }
        let (plan, reports) = match read_request(socket) {
            Ok(Some(request)) => request,
            // The owner is gone.
            Ok(None) => std::process::exit(0),
            Err(e) => {
                eprintln!("troupe-shim --launcher: {e}");
                std::process::exit(1);
            }
        };
        let plan: LaunchPlan = match serde_json::from_slice(&plan) {
            Ok(plan) => plan,
            Err(e) => {
                refuse(
                    &reports,
                    format!("the launcher cannot read the launch plan: {e}"),
                );
                continue;
            }
        };
        fork_shim(&plan, reports);
    }
}

/// Reads one request: the plan's bytes and the report socket sent with them. `None` at
/// end-of-file.
fn read_request(socket: impl AsFd) -> std::io::Result<Option<(Vec<u8>, OwnedFd)>> {
    let mut header = [0u8; 4];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            &socket,
            &mut [IoSliceMut::new(&mut header)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::WAITALL,
        ) {
            Ok(msg) => break msg.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut reports = None;
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                reports.get_or_insert(fd);
            }
        }
    }
    if received == 0 {
        return Ok(None);
    }
    if received < header.len() {
        return Err(std::io::Error::other("a request ended inside its header"));
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_PLAN {
        return Err(std::io::Error::other(format!(
            "a launch plan of {len} bytes is over the limit"
        )));
    }
    let mut body = vec![0u8; len];
    read_exact(&socket, &mut body)?;
    let reports =
        reports.ok_or_else(|| std::io::Error::other("a request came without its report socket"))?;
    Ok(Some((body, reports)))
}

/// Forks the shim of one task. The child reports on `reports` and never returns.
#[allow(unsafe_code)]
fn fork_shim(plan: &LaunchPlan, reports: OwnedFd) {
    // SAFETY: the launcher is single-threaded, so the child is a whole copy of it and may
    // allocate and run any code, as an exec'd shim would.
    let pid = unsafe { libc::fork() };
    match pid {
        0 => {
            // The child: the report socket as standard output, and as standard input when
            // it stays for further runs; nothing of the launcher's.
            let _ = rustix::stdio::dup2_stdout(&reports);
            if plan.stay {
                let _ = rustix::stdio::dup2_stdin(&reports);
            } else if let Ok(null) = std::fs::File::open("/dev/null") {
                let _ = rustix::stdio::dup2_stdin(&null);
            }
            drop(reports);
            let _ = rustix::process::setsid();
            shim::tell_owner(
                shim::SHIM,
                &shim::ShimPid {
                    pid: std::process::id() as i32,
                },
            );
            std::process::exit(shim::serve(plan));
        }
        -1 => refuse(
            &reports,
            format!(
                "the launcher cannot fork: {}",
                std::io::Error::last_os_error()
            ),
        ),
        // The parent: the child holds the socket now.
        _ => drop(reports),
    }
}

/// Answers a request it cannot serve with a failure on its report socket, as a shim reports
/// a task that never ran.
fn refuse(reports: &OwnedFd, error: String) {
    if let Some(line) = shim::report_line(shim::FAILED, &shim::Failed { error }) {
        let _ = write_all(reports, line.as_bytes());
    }
}

/// Reaps every shim that has ended. (Not `waitpid(None)`: that is `wait4(0)`, children in
/// this process group only, and each shim leads a session of its own.)
fn reap_shims() {
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
}

/// The threads of this process, from `/proc/self/status`.
fn threads() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

fn read_exact(fd: impl AsFd, mut buf: &mut [u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::read(&fd, &mut *buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(&fd, bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
