//! Starting a task from its shim: a clone that shares the shim's memory until the task
//! execs (as `vfork` and glibc's `posix_spawn` do), with the task's setup in between.
//!
//! A fork copies the shim's page tables, then takes a copy-on-write fault for every page
//! either side touches before the exec, and the exec throws the copy away: about a tenth of
//! a launch's cpu. `clone(CLONE_VM | CLONE_VFORK)` shares the memory instead and holds the
//! shim until the child has exec'd or given up. The child runs on a stack of its own and
//! makes only raw system calls on values prepared before the clone (no allocation, no
//! lock, nothing that can panic), with every signal blocked until just before the exec, so
//! that no handler of the shim's runs on the shared memory. Unlike `posix_spawn` it can do
//! what a task needs before it runs: join its cgroups and take its limits.
//!
//! The order in the child: SIGPIPE back to its default (the shim ignores it), a session of
//! its own, the cgroups, the limits (while still root, so a limit may be raised), the
//! standard streams, the supplementary groups, group and user, the working directory (as
//! the task's user, so a directory it cannot enter is refused), the signal mask emptied,
//! the exec. A step that fails leaves its error and step in memory the shim reads once the
//! child has exited.

use std::ffi::{CString, OsStr, c_char, c_int, c_void};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The child's stack: it makes a handful of system calls, each a few frames deep even
/// unoptimised.
const STACK: usize = 128 * 1024;

std::thread_local! {
    /// The child's stack, kept for the next start: a shim that stays starts many tasks,
    /// and a fresh one is an allocation and a page fault per page the child touches.
    static CHILD_STACK: std::cell::RefCell<Option<Box<[u8]>>> = const { std::cell::RefCell::new(None) };
}

/// Everything the task's setup and exec need, made before the clone.
pub(crate) struct TaskExec {
    program: CString,
    /// Owns what `argv` points into.
    _args: Vec<CString>,
    argv: Vec<*const c_char>,
    /// Owns what `envp` points into.
    _env: Vec<CString>,
    envp: Vec<*const c_char>,
    cwd: CString,
    /// Standard input, output and error, in that order.
    stdio: [OwnedFd; 3],
    rlimits: Vec<(rustix::process::Resource, rustix::process::Rlimit)>,
    uid: Option<rustix::process::Uid>,
    gid: Option<rustix::process::Gid>,
    /// Whether this shim runs as root (then a task given a user loses root's groups).
    root: bool,
}

/// What the task runs and where, as [`TaskExec::new`] takes it.
pub(crate) struct Command<'a> {
    pub program: &'a Path,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The step of the task's setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    Session = 1,
    Cgroup,
    Limits,
    Streams,
    Groups,
    Group,
    User,
    WorkingDirectory,
    Exec,
}

impl Step {
    fn from_raw(raw: u8) -> Step {
        [
            Step::Session,
            Step::Cgroup,
            Step::Limits,
            Step::Streams,
            Step::Groups,
            Step::Group,
            Step::User,
            Step::WorkingDirectory,
        ]
        .into_iter()
        .find(|s| *s as u8 == raw)
        .unwrap_or(Step::Exec)
    }
}

/// Written by the child when a step fails, read by the shim after the child is gone.
#[repr(C)]
struct Outcome {
    errno: c_int,
    step: u8,
}

/// What the child gets: the plan, the cgroups to join, and where to say why it gave up.
struct ChildArgs<'a> {
    exec: &'a TaskExec,
    cgroup_procs: &'a [File],
    outcome: *mut Outcome,
}

/// Why the task did not start: the step that failed, and what to tell its owner.
#[derive(Debug)]
pub(crate) struct SpawnError {
    pub step: Step,
    pub message: String,
}

impl TaskExec {
    /// Prepares the exec of `command`. Fails on a NUL byte in an argument, a variable or a
    /// path, which no exec could take.
    pub(crate) fn new(
        command: Command<'_>,
        stdio: [OwnedFd; 3],
        rlimits: Vec<(rustix::process::Resource, rustix::process::Rlimit)>,
    ) -> Result<TaskExec, String> {
        let c = |what: &str, bytes: &[u8]| {
            CString::new(bytes).map_err(|_| format!("{what} has a NUL byte"))
        };
        let program = c("the program's path", command.program.as_os_str().as_bytes())?;
        let args = command
            .argv
            .iter()
            .map(|a| c("an argument", a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let env = command
            .env
            .iter()
            .map(|(k, v)| {
                let mut pair = Vec::with_capacity(k.len() + v.len() + 1);
                pair.extend_from_slice(k.as_bytes());
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                c("an environment variable", &pair)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        // -1 means "no change" to the kernel: not a user anyone can ask for.
        if command.uid == Some(u32::MAX) || command.gid == Some(u32::MAX) {
            return Err("user and group -1 are not ids".into());
        }
        Ok(TaskExec {
            program,
            argv: pointers(&args),
            _args: args,
            envp: pointers(&env),
            _env: env,
            cwd: c("the working directory", OsStr::new(command.cwd).as_bytes())?,
            stdio,
            rlimits,
            uid: command.uid.map(rustix::process::Uid::from_raw_unchecked),
            gid: command.gid.map(rustix::process::Gid::from_raw_unchecked),
            root: rustix::process::getuid().is_root(),
        })
    }

    /// Starts the task in the cgroups of `cgroup_procs` (open `cgroup.procs` files) and
    /// returns its pid once it has exec'd; or, when a step before the exec failed, why (the
    /// child is reaped).
    #[allow(unsafe_code)]
    pub(crate) fn spawn(&self, cgroup_procs: &[File]) -> Result<rustix::process::Pid, SpawnError> {
        let mut stack = CHILD_STACK
            .with(|kept| kept.borrow_mut().take())
            .unwrap_or_else(|| vec![0u8; STACK].into_boxed_slice());
        let mut outcome = Outcome { errno: 0, step: 0 };
        let args = ChildArgs {
            exec: self,
            cgroup_procs,
            outcome: &mut outcome,
        };
        // The top of the stack (it grows down), aligned as the ABI wants.
        let top = (stack.as_mut_ptr() as usize + STACK) & !15;
        // SAFETY: every signal is blocked around the clone, so no handler of the shim's
        // runs in the child on the memory it shares; the old mask is restored here once the
        // child has exec'd or exited (CLONE_VFORK holds this thread until then).
        // `child_main` only reads `args`, which outlives the child's use of it, and writes
        // `outcome` before it exits. The stack is ours, unused, and outlives the child's
        // use of it for the same reason.
        let (pid, clone_error) = unsafe {
            let mut all = std::mem::zeroed::<libc::sigset_t>();
            let mut old = std::mem::zeroed::<libc::sigset_t>();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                child_main,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &args as *const ChildArgs<'_> as *mut c_void,
            );
            let clone_error = std::io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            (pid, clone_error)
        };
        // The child is done with it (it has exec'd or exited).
        CHILD_STACK.with(|kept| *kept.borrow_mut() = Some(stack));
        if pid < 0 {
            return Err(SpawnError {
                step: Step::Exec,
                message: format!("cannot start the task: {clone_error}"),
            });
        }
        // SAFETY: `pid` is the child just made, ours to wait for.
        let pid = unsafe { rustix::process::Pid::from_raw_unchecked(pid) };
        // SAFETY: the child is done with `outcome` (it has exec'd or exited).
        let Outcome { errno, step } = unsafe { std::ptr::read_volatile(&outcome) };
        if errno == 0 {
            return Ok(pid);
        }
        while let Err(rustix::io::Errno::INTR) =
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        {}
        let error = std::io::Error::from_raw_os_error(errno);
        let step = Step::from_raw(step);
        let message = match step {
            // The exec's own error, as the standard library gives it.
            Step::Exec => error.to_string(),
            Step::Session => format!("cannot start a session: {error}"),
            Step::Cgroup => format!("cannot join the task's cgroup: {error}"),
            Step::Limits => format!("cannot set the task's limits: {error}"),
            Step::Streams => format!("cannot set up standard streams: {error}"),
            Step::Groups => format!("cannot drop supplementary groups: {error}"),
            Step::Group => format!(
                "cannot switch to group {}: {error}",
                self.gid.map_or(0, |g| g.as_raw())
            ),
            Step::User => format!(
                "cannot switch to user {}: {error}",
                self.uid.map_or(0, |u| u.as_raw())
            ),
            Step::WorkingDirectory => format!(
                "cannot enter the working directory {}: {error}",
                self.cwd.to_string_lossy()
            ),
        };
        Err(SpawnError { step, message })
    }
}

/// The child, between the clone and the exec. Raw system calls only (see the module's
/// documentation); returns (exits) only when a step failed, after saying which.
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` the shim passed, alive while this runs.
    let args = unsafe { &*(arg as *const ChildArgs<'_>) };
    let exec = args.exec;
    let step = setup(exec, args.cgroup_procs);
    let (step, errno) = match step {
        Err(failed) => failed,
        // SAFETY: the pointers are NUL-terminated arrays of NUL-terminated strings owned by
        // `exec`; execve only returns on failure.
        Ok(()) => unsafe {
            libc::execve(
                exec.program.as_ptr(),
                exec.argv.as_ptr(),
                exec.envp.as_ptr(),
            );
            (Step::Exec, *libc::__errno_location())
        },
    };
    // SAFETY: the shim waits (CLONE_VFORK) and reads this only after the exit below.
    unsafe {
        std::ptr::write_volatile(
            args.outcome,
            Outcome {
                errno: if errno == 0 { libc::EINVAL } else { errno },
                step: step as u8,
            },
        );
        libc::_exit(127)
    }
}

/// The steps before the exec; the first that fails, with its errno.
#[allow(unsafe_code)]
fn setup(exec: &TaskExec, cgroup_procs: &[File]) -> Result<(), (Step, c_int)> {
    let fail = |step: Step| move |e: rustix::io::Errno| (step, e.raw_os_error());
    // SAFETY: resets one disposition in the child's own copy of the handlers (no
    // CLONE_SIGHAND); the shim ignores SIGPIPE, and an ignored signal stays ignored
    // across exec.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    rustix::process::setsid().map_err(fail(Step::Session))?;
    for procs in cgroup_procs {
        match rustix::io::write(procs, b"0") {
            Ok(1) => {}
            Ok(_) => return Err((Step::Cgroup, libc::EIO)),
            Err(e) => return Err(fail(Step::Cgroup)(e)),
        }
    }
    for (resource, limit) in &exec.rlimits {
        rustix::process::setrlimit(*resource, *limit).map_err(fail(Step::Limits))?;
    }
    let [stdin, stdout, stderr] = &exec.stdio;
    for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
        if fd.as_raw_fd() == target {
            // Already in place: only its close-on-exec flag must go.
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
                .map_err(fail(Step::Streams))?;
            continue;
        }
        let put = match target {
            0 => rustix::stdio::dup2_stdin(fd.as_fd()),
            1 => rustix::stdio::dup2_stdout(fd.as_fd()),
            _ => rustix::stdio::dup2_stderr(fd.as_fd()),
        };
        put.map_err(fail(Step::Streams))?;
    }
    if exec.uid.is_some() && exec.root {
        // Dropping root: none of root's supplementary groups go with the task.
        rustix::thread::set_thread_groups(&[]).map_err(fail(Step::Groups))?;
    }
    // The thread calls are the raw system calls: this child is a process of one thread,
    // and libc's would try to tell the shim's threads too.
    if let Some(gid) = exec.gid {
        rustix::thread::set_thread_gid(gid).map_err(fail(Step::Group))?;
    }
    if let Some(uid) = exec.uid {
        rustix::thread::set_thread_uid(uid).map_err(fail(Step::User))?;
    }
    rustix::process::chdir(exec.cwd.as_c_str()).map_err(fail(Step::WorkingDirectory))?;
    // SAFETY: empties this process's signal mask (blocked since before the clone), as a
    // task expects to start.
    unsafe {
        let mut none = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    Ok(())
}

/// Sets every signal this process ignores back to its default, but SIGPIPE (which the
/// shim itself ignores, so that a write to a gone owner fails instead of killing it; the
/// task's child resets it). The shim calls it first: an ignored signal stays ignored across
/// fork and exec, so whatever its starter ignored would reach every task. That includes
/// SIGINT and SIGQUIT under a shell's background job, and glibc's two internal signals,
/// which its `posix_spawn` leaves ignored in the program it starts. A task starts with
/// every signal at its default, as systemd starts a service.
///
/// Raw `rt_sigaction`: glibc refuses its internal signals to its own wrapper.
#[allow(unsafe_code)]
pub(crate) fn default_signal_dispositions() {
    /// The kernel's `struct sigaction` on Linux (not libc's, whose mask is larger).
    #[repr(C)]
    #[derive(Default)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    const SIZE_OF_MASK: usize = 8;
    for sig in 1..=64 {
        if matches!(sig, libc::SIGKILL | libc::SIGSTOP | libc::SIGPIPE) {
            continue;
        }
        let mut old = KernelSigaction::default();
        // SAFETY: reads one disposition into `old`, which has the kernel's layout.
        let read = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                SIZE_OF_MASK,
            )
        };
        if read == 0 && old.handler == libc::SIG_IGN {
            let default = KernelSigaction::default();
            // SAFETY: sets the default disposition (handler 0), with no handler to call.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    SIZE_OF_MASK,
                );
            }
        }
    }
}
