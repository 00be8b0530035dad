//! Sandboxes and cgroups made ahead of launches ("warm"), so that a launch renames one into
//! place instead of making it.
//!
//! Making a task's sandbox is five new inodes (the directory, its status directory, the
//! records file, the two log files), and its cgroup on a v1 host is five directories whose
//! control files the kernel populates; together most of a launch's own work. An owner of
//! many launches (an agent: its contexts are [`crate::TaskContext::warming`]) keeps
//! [`WARM`] of each ready, per sandbox root and per agent, made after a launch takes one on
//! the process's one filler thread, of the lowest priority (so that it uses what launches
//! leave of the cpus), and a launch does the two renames and the task's limits only:
//!
//! ```text
//! <root>/.troupe-warm/<pid>-<o>-<n>/    a warm sandbox of owner <o> in process <pid>
//!     .troupe/records  stdout.log  stderr.log
//! <root>/<task>/                        the same, renamed when task <task> launches
//!
//! troupe/<agent>/.troupe-warm-<pid>-<o>-<n>  a warm cgroup, in each v1 hierarchy
//! troupe/<agent>/<task>                  the same, renamed (v1 allows a rename within
//!                                        the parent; v2 does not: there, cgroups are
//!                                        made at launch as before)
//! ```
//!
//! The pools are an owner's ([`WarmPools`], in its [`crate::Executor`]): two owners in one
//! process share none. A launch finding none ready makes its own, as before. No task name may start with
//! [`RESERVED_PREFIX`], so a warm entry never meets a task's. An owner removes its warm
//! entries when it stops ([`drain`]); those of an owner that died are removed by the next
//! owner of the same root that fills a pool, and warm cgroups with the rest of
//! `troupe/<agent>` by [`crate::cgroup::remove_owner`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cgroup::{self, TaskCgroup};

/// The prefix of troupe's own entries among task sandboxes and task cgroups; no task name
/// starts with it.
pub const RESERVED_PREFIX: &str = ".troupe-";

/// How many warm sandboxes (and cgroups) an owner keeps ready per root (per agent).
pub const WARM: usize = 4;

/// The longest task name: it names a directory and a cgroup (255 bytes at most each).
const LONGEST_NAME: usize = 200;

/// Whether `name` may name a task, whose sandbox directory and cgroup it names: not empty,
/// not `.` or `..`, at most 200 bytes, without `/`, NUL or control characters, and not
/// starting with [`RESERVED_PREFIX`]. The error says why not.
pub fn check_task_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "is empty".to_string()
    } else if name == "." || name == ".." {
        "is not a directory name".to_string()
    } else if name.len() > LONGEST_NAME {
        format!("is longer than {LONGEST_NAME} bytes")
    } else if name.contains('/') || name.chars().any(char::is_control) {
        "contains '/' or a control character".to_string()
    } else if name.starts_with(RESERVED_PREFIX) {
        format!("starts with {RESERVED_PREFIX:?}, which troupe keeps for its own entries")
    } else {
        return Ok(());
    };
    Err(format!("the task name {name:?} {why}"))
}

/// One pool: what is ready, and whether a thread is filling it.
#[derive(Debug)]
struct Pool<T> {
    ready: Vec<T>,
    filling: bool,
    /// Drained: whatever a filling thread still makes is removed, not kept.
    closed: bool,
    /// Made once per pool: stale entries of dead owners swept.
    swept: bool,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            ready: Vec::new(),
            filling: false,
            closed: false,
            swept: false,
        }
    }
}

type Pools<K, T> = Mutex<BTreeMap<K, Arc<Mutex<Pool<T>>>>>;

/// An owner's warm pools (part of its [`crate::Executor`]): sandboxes per root, cgroups per
/// agent, and the one filler thread that makes them.
#[derive(Debug)]
pub(crate) struct WarmPools {
    sandboxes: Pools<PathBuf, PathBuf>,
    cgroups: Pools<String, TaskCgroup>,
    /// Names warm entries: unique to this owner (`<pid>-<owner>-<n>`), and telling which
    /// process made them.
    names: Arc<Names>,
    /// The filler thread's queue, started with the first fill and kept (a thread a fill
    /// was one `clone3`, a 2 MiB stack mapped and unmapped and an exit, per launch); the
    /// thread ends when the pools go.
    filler: Mutex<Option<std::sync::mpsc::Sender<FillJob>>>,
}

/// The names of an owner's warm entries.
#[derive(Debug)]
struct Names {
    owner: u64,
    next: std::sync::atomic::AtomicU64,
}

impl Default for WarmPools {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // Random: two owners in one process never name an entry alike.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        WarmPools {
            sandboxes: Mutex::new(BTreeMap::new()),
            cgroups: Mutex::new(BTreeMap::new()),
            names: Arc::new(Names {
                owner: h.finish() & 0xffff_ffff,
                next: std::sync::atomic::AtomicU64::new(1),
            }),
            filler: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pool<K: Ord + Clone, T>(pools: &Pools<K, T>, key: &K) -> Arc<Mutex<Pool<T>>> {
    lock(pools).entry(key.clone()).or_default().clone()
}

impl Names {
    /// A new warm entry's name: unique to its owner, and telling which process made it.
    fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{:x}-{n}", std::process::id(), self.owner)
    }
}

/// Whether a warm entry named `<pid>-<n>` belongs to a process other than this one that is
/// gone.
fn of_a_dead_owner(name: &str) -> bool {
    let Some(pid) = name.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
        return false;
    };
    pid != std::process::id() as i32
        && rustix::process::Pid::from_raw(pid)
            .is_none_or(|pid| rustix::process::test_kill_process(pid).is_err())
}

/// Fills `pool` up to [`WARM`] on a thread of low priority, with `make`; `discard` removes one
/// made after the pool was drained, `sweep` removes what dead owners left (once per pool).
fn fill<T: Send + 'static>(
    pools: &WarmPools,
    pool: Arc<Mutex<Pool<T>>>,
    make: impl Fn() -> Option<T> + Send + 'static,
    discard: impl Fn(T) + Send + 'static,
    sweep: impl FnOnce() + Send + 'static,
) {
    let sweep_first = {
        let mut p = lock(&pool);
        if p.filling || p.closed || p.ready.len() >= WARM {
            return;
        }
        p.filling = true;
        !std::mem::replace(&mut p.swept, true)
    };
    let filling = pool.clone();
    let job = Box::new(move || {
        if sweep_first {
            sweep();
        }
        loop {
            {
                let p = lock(&pool);
                if p.closed || p.ready.len() >= WARM {
                    break;
                }
            }
            let Some(made) = make() else { break };
            let mut p = lock(&pool);
            if p.closed {
                drop(p);
                discard(made);
                break;
            }
            p.ready.push(made);
        }
        lock(&pool).filling = false;
    });
    if !pools.on_the_filler(job) {
        lock(&filling).filling = false;
    }
}

/// Work for the filler thread.
type FillJob = Box<dyn FnOnce() + Send>;

impl WarmPools {
    /// Runs `job` on the filler thread, at the lowest priority: the pools fill on what the
    /// launches leave of the cpus, not in their way (the launch that took from a pool is still
    /// going on). `false` when no thread could be started for it.
    fn on_the_filler(&self, job: FillJob) -> bool {
        let mut filler = lock(&self.filler);
        let job = match filler.as_ref() {
            Some(queue) => match queue.send(job) {
                Ok(()) => return true,
                // The thread died (a panic in a job): start another.
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (queue, jobs) = std::sync::mpsc::channel::<FillJob>();
        let started = std::thread::Builder::new()
            .name("troupe-warm".into())
            .spawn(move || {
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
                while let Ok(job) = jobs.recv() {
                    job();
                }
            });
        if started.is_err() {
            *filler = None;
            return false;
        }
        let sent = queue.send(job).is_ok();
        *filler = Some(queue);
        sent
    }
}

fn warm_dir(root: &Path) -> PathBuf {
    root.join(format!("{RESERVED_PREFIX}warm"))
}

/// Makes a warm sandbox: the directory, its status directory with an empty records file,
/// and empty log files, as a launch would.
fn make_sandbox(root: &Path, names: &Names) -> Option<PathBuf> {
    let at = warm_dir(root).join(names.next());
    let made = (|| -> std::io::Result<()> {
        let status = crate::sandbox::status_dir_in(&at);
        std::fs::create_dir_all(&status)?;
        std::fs::File::create(status.join(crate::shim::RECORDS))?;
        let (stdout, stderr) = crate::sandbox::log_paths(&at);
        std::fs::File::create(stdout)?;
        std::fs::File::create(stderr)?;
        Ok(())
    })();
    match made {
        Ok(()) => Some(at),
        Err(e) => {
            tracing::debug!(root = %root.display(), cause = %e, "cannot make a warm sandbox");
            let _ = std::fs::remove_dir_all(&at);
            None
        }
    }
}

fn sweep_sandboxes(root: &Path) {
    let Ok(entries) = std::fs::read_dir(warm_dir(root)) else {
        return;
    };
    for entry in entries.flatten() {
        if of_a_dead_owner(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn fill_sandboxes(pools: &WarmPools, root: &Path, pool: Arc<Mutex<Pool<PathBuf>>>) {
    let (make, sweep) = (root.to_path_buf(), root.to_path_buf());
    let names = pools.names.clone();
    fill(
        pools,
        pool,
        move || make_sandbox(&make, &names),
        |made| {
            let _ = std::fs::remove_dir_all(made);
        },
        move || sweep_sandboxes(&sweep),
    );
}

/// Puts a warm sandbox of `root` in place as `sandbox` (a directory of `root` that does not
/// exist yet), with its status directory, an empty records file and empty log files. False
/// when none is ready or `sandbox` exists; the launch then makes its own. Either way the
/// pool is filled again in the background.
pub(crate) fn take_sandbox(pools: &WarmPools, root: &Path, sandbox: &Path) -> bool {
    let pool = pool(&pools.sandboxes, &root.to_path_buf());
    let warm = lock(&pool).ready.pop();
    let taken = match warm {
        None => false,
        Some(warm) => match std::fs::rename(&warm, sandbox) {
            Ok(()) => true,
            Err(e) => {
                // The sandbox is there already (a run before this one): the warm one is
                // still good for another task.
                let exists = [rustix::io::Errno::NOTEMPTY, rustix::io::Errno::EXIST]
                    .iter()
                    .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()));
                if exists {
                    lock(&pool).ready.push(warm);
                } else {
                    let _ = std::fs::remove_dir_all(&warm);
                }
                false
            }
        },
    };
    fill_sandboxes(pools, root, pool);
    taken
}

fn warm_cgroup_name(names: &Names) -> String {
    format!("{RESERVED_PREFIX}warm-{}", names.next())
}

fn sweep_cgroups(agent: &str) {
    for name in cgroup::task_names(agent) {
        if let Some(owner) = name.strip_prefix(&format!("{RESERVED_PREFIX}warm-")) {
            if of_a_dead_owner(owner) {
                if let Some(stale) = TaskCgroup::open(agent, &name) {
                    stale.remove_empty();
                }
            }
        }
    }
}

fn fill_cgroups(pools: &WarmPools, agent: &str, pool: Arc<Mutex<Pool<TaskCgroup>>>) {
    let (make, sweep) = (agent.to_string(), agent.to_string());
    let names = pools.names.clone();
    fill(
        pools,
        pool,
        move || TaskCgroup::make_bare(&make, &warm_cgroup_name(&names)),
        |made| {
            made.remove_empty();
        },
        move || sweep_cgroups(&sweep),
    );
}

/// A warm cgroup of `agent` renamed to `task`'s (`troupe/<agent>/<task>`), without limits
/// yet; `None` when there is none, the host's cgroups cannot be renamed (v2), or the rename
/// fails. The pool is filled again in the background.
pub(crate) fn take_cgroup(pools: &WarmPools, agent: &str, task: &str) -> Option<TaskCgroup> {
    if !cgroup::renamable() {
        return None;
    }
    let pool = pool(&pools.cgroups, &agent.to_string());
    let warm = lock(&pool).ready.pop();
    let taken = warm.and_then(|warm| warm.rename(agent, task));
    fill_cgroups(pools, agent, pool);
    taken
}

/// The most ended tasks' cgroups an agent's pool takes back (`recycle`), beyond the
/// [`WARM`] it makes ahead: as many as end at once in a busy agent.
pub const RECYCLED: usize = 4 * WARM;

/// The most memory an ended task may leave charged to its cgroup for the cgroup to be
/// taken back: the kernel memory of its exited processes not yet freed, a few pages of
/// cache (a `/bin/true` leaves about 160 KiB). The next task's memory figures include it.
/// Handing it back instead (`memory.force_empty`) drains every cpu's page lists and cost
/// more than the removal it would save.
pub const RECYCLE_CHARGED: u64 = 1 << 20;

/// Takes the emptied cgroup of an ended task of `agent` back into the agent's pool, for the
/// next launch to rename into place, instead of removing it and making another: a v1
/// cgroup's removal and making are about a tenth of all cpu when tasks come and go fast.
/// Its limits, stats and what a root task may have changed of its treatment (the OOM
/// killer turned off, a soft limit) are reset, and its OOM count is read as a baseline by the next
/// task (the kernel's cannot be reset: see `Process::spawn`). False when it cannot be (v2,
/// no pool or a closed or full one, more than [`RECYCLE_CHARGED`] left charged to it, a
/// cgroup the task made inside it, a reset or rename that fails): the caller removes it.
pub(crate) fn recycle(pools: &WarmPools, agent: &str, cgroup: &TaskCgroup) -> bool {
    if !cgroup::renamable() {
        return false;
    }
    let Some(pool) = lock(&pools.cgroups).get(agent).cloned() else {
        return false;
    };
    let room = |p: &Pool<TaskCgroup>| !p.closed && p.ready.len() < RECYCLED;
    if !room(&lock(&pool))
        || !cgroup.is_there_and_empty()
        || cgroup.charged_bytes().is_none_or(|b| b > RECYCLE_CHARGED)
        || cgroup.has_inner_cgroups()
        || !cgroup.reset_limits()
        || !cgroup.reset_settings()
    {
        return false;
    }
    cgroup.reset_stats();
    let name = warm_cgroup_name(&pools.names);
    if !cgroup.rename_dirs(&name) {
        return false;
    }
    // The ended task's handle hands its open directories and files on to the warm one.
    let warm = cgroup.renamed(agent, &name);
    let mut p = lock(&pool);
    if room(&p) {
        p.ready.push(warm);
    } else {
        drop(p);
        warm.remove_empty();
    }
    true
}

/// Closes `pool` and hands back what was ready, once its filling thread (if any) is done
/// (it removes what it makes after the close), or after 5 s.
fn close<T>(pool: &Mutex<Pool<T>>) -> Vec<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    lock(pool).closed = true;
    while lock(pool).filling && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::mem::take(&mut lock(pool).ready)
}

/// Removes the warm sandboxes of `root` and the warm cgroups of `agent` that this process
/// made, waiting for a pool being filled (an owner stopping, a test cleaning up). Blocks.
pub(crate) fn drain(pools: &WarmPools, root: &Path, agent: &str) {
    if let Some(pool) = lock(&pools.sandboxes).remove(root) {
        for warm in close(&pool) {
            let _ = std::fs::remove_dir_all(warm);
        }
        let _ = std::fs::remove_dir(warm_dir(root));
    }
    if let Some(pool) = lock(&pools.cgroups).remove(agent) {
        for warm in close(&pool) {
            warm.remove_empty();
        }
    }
}

/// How many warm sandboxes of `root` and warm cgroups of `agent` are ready (for tests and
/// diagnostics).
pub(crate) fn ready(pools: &WarmPools, root: &Path, agent: &str) -> (usize, usize) {
    let count = |n: Option<usize>| n.unwrap_or(0);
    let sandboxes = lock(&pools.sandboxes)
        .get(root)
        .map(|p| lock(p).ready.len());
    let cgroups = lock(&pools.cgroups).get(agent).map(|p| lock(p).ready.len());
    (count(sandboxes), count(cgroups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_that_are_not_plain_directory_names_are_refused() {
        for good in ["web-1", "a.b", ".hidden", "x".repeat(200).as_str(), "ünï"] {
            assert_eq!(check_task_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "directory name"),
            ("..", "directory name"),
            ("a/b", "'/'"),
            ("../x", "'/'"),
            ("a\nb", "control"),
            ("a\0b", "control"),
            (".troupe-warm", "keeps for its own"),
        ] {
            let e = check_task_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(
            check_task_name(&"x".repeat(201))
                .unwrap_err()
                .contains("200 bytes")
        );
    }

    #[test]
    fn warm_entries_of_live_owners_are_left_alone() {
        assert!(!of_a_dead_owner(&format!("{}-3", std::process::id())));
        assert!(!of_a_dead_owner("1-3"), "pid 1 lives");
        assert!(!of_a_dead_owner("not-a-pid"));
        // A pid above the kernel's limit is no process.
        assert!(of_a_dead_owner("2147483646-1"));
    }
}
