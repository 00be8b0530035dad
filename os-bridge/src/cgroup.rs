//! A task's cgroup: `troupe/<agent-id>/<task-id>`, on v1 controllers (cpu, cpuacct, memory,
//! pids, freezer) or the v2 unified tree, through cgroups-rs.
//!
//! The subtree per agent lets several agents share a host (and the tests run several). The
//! task joins the cgroup before exec by writing to the `cgroup.procs` files listed by
//! [`TaskCgroup::procs_files`], so nothing it runs ever escapes accounting. Stats are read
//! from the controller files directly, the same on v1 and v2.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use cgroups_rs::{Cgroup, MaxValue};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::spec::Resources;

/// The v1 controllers a task's cgroup uses. cpuset is left out on purpose: a v1 cpuset
/// cgroup refuses tasks until its cpus and mems are set.
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "freezer"];

/// The CFS period used with a cpu quota.
const CFS_PERIOD_US: u64 = 100_000;

/// Why a cgroup could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Not root: cgroups cannot be created.
    #[error("cgroups need root (running as uid {uid}); isolation falls back to process groups")]
    NotRoot {
        /// The effective uid.
        uid: u32,
    },
    /// cgroups-rs or the kernel refused.
    #[error("cgroup {path}: {cause}")]
    Failed {
        /// The cgroup.
        path: String,
        /// Why.
        cause: String,
    },
}

/// Resource use of a task, from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupStats {
    /// CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory used now, in bytes.
    pub memory_bytes: u64,
    /// The most memory used, in bytes (0 where the kernel does not tell).
    pub memory_peak_bytes: u64,
    /// Processes the kernel killed for exceeding the memory limit.
    pub oom_kills: u64,
    /// Processes in the cgroup now.
    pub processes: u64,
}

/// One task's cgroup.
pub struct TaskCgroup {
    cgroup: Cgroup,
    path: String,
    /// Its directories, one per hierarchy (co-mounted controllers once), worked out once:
    /// resolving them takes a `readlink` per path component, and they are read on every
    /// look at the cgroup.
    dirs: Vec<PathBuf>,
    /// Its directories held open, beside `dirs` (`None` where one could not be opened):
    /// see [`DirFd`]. Handed on to the handle of the cgroup's next name when it is renamed.
    fds: Mutex<Vec<Option<DirFd>>>,
    /// Its small control files, kept open once used, by directory (an index in `dirs`) and
    /// name: a kept cgroup has each read or written once a run (emptiness, OOM count, stats
    /// reset).
    files: Mutex<Vec<(usize, &'static str, std::fs::File)>>,
}

/// A cgroup directory held open (`O_PATH`). Control files are opened, and the cgroup
/// renamed, relative to it: a component or two looked up where a path from `/` walks seven,
/// each a `kernfs` revalidation. Those walks were a third of the cpu that the cgroup work of
/// short tasks took (two renames and a dozen control files a task, in four hierarchies). A
/// directory held open stays the cgroup's across renames. (One descriptor a hierarchy: a
/// task's cgroup holds four on v1, beside the control files it keeps open.)
struct DirFd {
    dir: OwnedFd,
}

const DIR_FLAGS: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

impl DirFd {
    fn open(dir: &Path) -> Option<DirFd> {
        let dir = rustix::fs::open(dir, DIR_FLAGS, Mode::empty()).ok()?;
        Some(DirFd { dir })
    }
}

/// Renames cgroup directory `dir` to `to` within its parent: through `fd` when there is one.
fn rename_dir(dir: &Path, fd: Option<&DirFd>, to: &str) -> std::io::Result<()> {
    match (fd, dir.file_name()) {
        (Some(fd), Some(name)) => {
            let parent = rustix::fs::openat(&fd.dir, "..", DIR_FLAGS, Mode::empty())?;
            rustix::fs::renameat(&parent, name, &parent, to).map_err(std::io::Error::from)
        }
        _ => std::fs::rename(dir, dir.with_file_name(to)),
    }
}

impl std::fmt::Debug for TaskCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCgroup")
            .field("path", &self.path)
            .finish()
    }
}

/// The cgroup path of a task.
pub fn task_path(agent: &str, task: &str) -> String {
    format!("troupe/{agent}/{task}")
}

fn failed(path: &str) -> impl Fn(cgroups_rs::error::Error) -> CgroupError + '_ {
    move |e| CgroupError::Failed {
        path: path.to_string(),
        cause: e.to_string(),
    }
}

/// The host's cgroup hierarchies, as cgroups-rs describes them. Reading them parses
/// `/proc/self/mountinfo`, which every task's cgroup would otherwise do again; the mounts
/// do not change under a running agent, so they are read once per process.
fn hierarchy() -> Box<dyn cgroups_rs::Hierarchy> {
    use cgroups_rs::hierarchies::{V1, V2, is_cgroup2_unified_mode};
    enum Mounts {
        V1(V1),
        V2(V2),
    }
    static MOUNTS: std::sync::OnceLock<Mounts> = std::sync::OnceLock::new();
    let mounts = MOUNTS.get_or_init(|| {
        if is_cgroup2_unified_mode() {
            Mounts::V2(V2::new())
        } else {
            Mounts::V1(V1::new())
        }
    });
    match mounts {
        Mounts::V1(v1) => Box::new(v1.clone()),
        Mounts::V2(v2) => Box::new(v2.clone()),
    }
}

/// The hierarchy a cgroup directory `dir` (`<mount>/<path>`) is in: its mount point with
/// links resolved. Resolved once per mount point and process (a `readlink` per path
/// component), not once per task.
fn hierarchy_of(dir: &std::path::Path, path: &str) -> PathBuf {
    static RESOLVED: Mutex<BTreeMap<PathBuf, PathBuf>> = Mutex::new(BTreeMap::new());
    let mount = dir
        .to_str()
        .and_then(|d| d.strip_suffix(path))
        .map_or_else(|| dir.to_path_buf(), PathBuf::from);
    let mut resolved = RESOLVED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(real) = resolved.get(&mount) {
        return real.clone();
    }
    let real = std::fs::canonicalize(&mount).unwrap_or_else(|_| mount.clone());
    resolved.insert(mount, real.clone());
    real
}

impl TaskCgroup {
    /// Creates the cgroup of `task` under `agent` with these limits. (A launch may rename
    /// one made ahead instead: see [`crate::warm`].)
    pub fn create(
        agent: &str,
        task: &str,
        resources: &Resources,
    ) -> Result<TaskCgroup, CgroupError> {
        let uid = rustix::process::geteuid().as_raw();
        if uid != 0 {
            return Err(CgroupError::NotRoot { uid });
        }
        let path = task_path(agent, task);
        let hier = hierarchy();
        let v2 = hier.v2();
        let controllers = (!v2).then(|| V1_CONTROLLERS.iter().map(|c| c.to_string()).collect());
        let cgroup = Cgroup::new_with_specified_controllers(hier, &path, controllers)
            .map_err(failed(&path))?;
        let task_cgroup = TaskCgroup::new(cgroup, path);
        if let Err(e) = task_cgroup.apply(resources) {
            let _ = task_cgroup.cgroup.delete();
            return Err(e);
        }
        Ok(task_cgroup)
    }

    /// Makes the cgroup `troupe/<agent>/<name>` with no limits (a warm one, see
    /// [`crate::warm`]); `None` when it cannot be made.
    pub(crate) fn make_bare(agent: &str, name: &str) -> Option<TaskCgroup> {
        if !available() {
            return None;
        }
        let path = task_path(agent, name);
        let hier = hierarchy();
        let controllers =
            (!hier.v2()).then(|| V1_CONTROLLERS.iter().map(|c| c.to_string()).collect());
        match Cgroup::new_with_specified_controllers(hier, &path, controllers) {
            Ok(cgroup) => Some(TaskCgroup::new(cgroup, path)),
            Err(e) => {
                tracing::debug!(%path, cause = %e, "cannot make a warm cgroup");
                None
            }
        }
    }

    /// This (empty) cgroup renamed to `troupe/<agent>/<task>` in every hierarchy, or, when a
    /// rename fails, `None` with this cgroup removed (what was renamed renamed back first).
    pub(crate) fn rename(self, agent: &str, task: &str) -> Option<TaskCgroup> {
        match self.rename_dirs(task) {
            true => Some(self.renamed(agent, task)),
            false => {
                self.remove_empty();
                None
            }
        }
    }

    /// Renames its directories to `to` in every hierarchy; when one fails, renames back
    /// those done and returns false. This handle keeps the old paths: see
    /// [`TaskCgroup::renamed`].
    pub(crate) fn rename_dirs(&self, to: &str) -> bool {
        let fds = self.fds.lock().unwrap_or_else(|p| p.into_inner());
        let fd = |i: usize| fds.get(i).and_then(Option::as_ref);
        for (done, dir) in self.dirs.iter().enumerate() {
            if rename_dir(dir, fd(done), to).is_err() {
                let old = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                for (i, dir) in self.dirs[..done].iter().enumerate() {
                    if let Some(old) = &old {
                        let _ = rename_dir(&dir.with_file_name(to), fd(i), old);
                    }
                }
                return false;
            }
        }
        true
    }

    /// The handle of this cgroup under its new name `troupe/<agent>/<name>`, after
    /// [`TaskCgroup::rename_dirs`]: it takes the open directories and control files, so this
    /// handle is left with paths that no longer exist (a task's handle that outlives the
    /// recycling of its cgroup reads nothing of the next task's).
    pub(crate) fn renamed(&self, agent: &str, name: &str) -> TaskCgroup {
        let path = task_path(agent, name);
        TaskCgroup {
            cgroup: Self::handle(&path),
            dirs: self.dirs.iter().map(|d| d.with_file_name(name)).collect(),
            fds: Mutex::new(std::mem::take(
                &mut *self.fds.lock().unwrap_or_else(|p| p.into_inner()),
            )),
            files: Mutex::new(std::mem::take(
                &mut *self.files.lock().unwrap_or_else(|p| p.into_inner()),
            )),
            path,
        }
    }

    /// Opens the existing cgroup of `task` under `agent` (for a new owner re-adopting it).
    pub fn open(agent: &str, task: &str) -> Option<TaskCgroup> {
        let cgroup = TaskCgroup::load(task_path(agent, task));
        cgroup.cgroup.exists().then_some(cgroup)
    }

    /// The cgroup at `path`, whether it exists or not.
    fn load(path: String) -> TaskCgroup {
        TaskCgroup::new(Self::handle(&path), path)
    }

    /// cgroups-rs's handle of the cgroup at `path` (no file is touched).
    fn handle(path: &str) -> Cgroup {
        let hier = hierarchy();
        if hier.v2() {
            Cgroup::load(hier, path)
        } else {
            let controllers = V1_CONTROLLERS.iter().map(|c| c.to_string()).collect();
            Cgroup::load_with_specified_controllers(hier, path, controllers)
        }
    }

    pub(crate) fn apply(&self, r: &Resources) -> Result<(), CgroupError> {
        if !self.cgroup.v2() {
            return self.apply_v1(r);
        }
        let mut res = cgroups_rs::Resources::default();
        res.cpu.shares = r.cpu_shares;
        if let Some(cpus) = r.cpus {
            res.cpu.quota = Some((cpus * CFS_PERIOD_US as f64).round().max(1000.0) as i64);
            res.cpu.period = Some(CFS_PERIOD_US);
        }
        res.memory.memory_hard_limit = r.memory_bytes.map(|b| b.min(i64::MAX as u64) as i64);
        res.pid.maximum_number_of_processes = r
            .pids
            .map(|n| MaxValue::Value(n.min(i64::MAX as u64) as i64));
        self.cgroup.apply(&res).map_err(failed(&self.path))?;
        if r.memory_bytes.is_some() {
            // The limit is for memory, not memory plus swap: a task over it is killed, not
            // swapped out. (The file exists only where swap accounting does.)
            let _ = self.write_control("", "memory.swap.max", "0");
        }
        Ok(())
    }

    /// [`TaskCgroup::apply`] on v1: the limit files written directly, through the open
    /// directories (cgroups-rs walks each file's path and reads the cpu period and quota
    /// back). The limits not given are left as they are (none, on a new or reset cgroup).
    fn apply_v1(&self, r: &Resources) -> Result<(), CgroupError> {
        let write = |controller: &str, file: &'static str, value: String| {
            self.write_control_or_why(controller, file, &value)
                .map_err(|cause| CgroupError::Failed {
                    path: self.path.clone(),
                    cause: format!("{controller}/{file} = {value}: {cause}"),
                })
        };
        if let Some(shares) = r.cpu_shares {
            write("cpu", "cpu.shares", shares.to_string())?;
        }
        if let Some(cpus) = r.cpus {
            let quota = (cpus * CFS_PERIOD_US as f64).round().max(1000.0) as i64;
            write("cpu", "cpu.cfs_period_us", CFS_PERIOD_US.to_string())?;
            write("cpu", "cpu.cfs_quota_us", quota.to_string())?;
        }
        if let Some(limit) = r.memory_bytes {
            let limit = limit.min(i64::MAX as u64).to_string();
            write("memory", "memory.limit_in_bytes", limit.clone())?;
            // Memory, not memory plus swap: a task over the limit is killed, not swapped
            // out. (The file exists only where swap accounting does.)
            let _ = self.write_control("memory", "memory.memsw.limit_in_bytes", &limit);
        }
        if let Some(n) = r.pids {
            write("pids", "pids.max", n.min(i64::MAX as u64).to_string())?;
        }
        Ok(())
    }

    /// Sets every limit [`TaskCgroup::apply`] may have set back to none (no quota, the
    /// default share, no memory or process limit), so that the next `apply` leaves nothing
    /// of an earlier task's. Returns whether every limit that was there is gone.
    pub(crate) fn reset_limits(&self) -> bool {
        let write =
            |controller: &str, file: &str, value: &str| self.write_control(controller, file, value);
        if self.cgroup.v2() {
            let _ = write("", "memory.swap.max", "max");
            return [
                write("", "cpu.max", "max"),
                write("", "cpu.weight", "100"),
                write("", "memory.max", "max"),
                write("", "pids.max", "max"),
            ]
            .iter()
            .all(|ok| *ok);
        }
        // Memory and swap first: the memory limit may never exceed it. (It exists only
        // where swap accounting does.)
        let _ = write("memory", "memory.memsw.limit_in_bytes", "-1");
        [
            write("memory", "memory.limit_in_bytes", "-1"),
            write("cpu", "cpu.cfs_quota_us", "-1"),
            write("cpu", "cpu.shares", "1024"),
            write("pids", "pids.max", "max"),
        ]
        .iter()
        .all(|ok| *ok)
    }

    /// Sets back what a task running as root may have changed in its own cgroup and that
    /// would change how the next task in it is treated: the OOM killer (v1
    /// `memory.oom_control` can turn it off) and the soft memory limit. Returns whether both
    /// took (on v2 there is nothing of the kind to reset).
    pub(crate) fn reset_settings(&self) -> bool {
        if self.cgroup.v2() {
            return true;
        }
        self.write_control("memory", "memory.oom_control", "0")
            & self.write_control("memory", "memory.soft_limit_in_bytes", "-1")
    }

    /// Writes `value` to control file `file` of `controller`'s directory (`""` on v2);
    /// whether it took.
    fn write_control(&self, controller: &str, file: &str, value: &str) -> bool {
        self.write_control_or_why(controller, file, value).is_ok()
    }

    /// [`TaskCgroup::write_control`], saying why not.
    fn write_control_or_why(
        &self,
        controller: &str,
        file: &str,
        value: &str,
    ) -> std::io::Result<()> {
        use std::io::Write;
        let missing = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let dir = self.controller_index(controller).ok_or_else(missing)?;
        self.open_control(dir, file, true)?
            .write_all(value.as_bytes())
    }

    /// Opens control file `file` of directory `dir` (an index in `dirs`), for writing with
    /// `write`: relative to the open directory when there is one.
    fn open_control(&self, dir: usize, file: &str, write: bool) -> std::io::Result<std::fs::File> {
        let flags = OFlags::CLOEXEC
            | if write {
                OFlags::WRONLY
            } else {
                OFlags::RDONLY
            };
        let fds = self.fds.lock().unwrap_or_else(|p| p.into_inner());
        let fd = match fds.get(dir).and_then(Option::as_ref) {
            Some(at) => rustix::fs::openat(&at.dir, file, flags, Mode::empty())?,
            None => {
                let path = self.dirs.get(dir).ok_or(std::io::ErrorKind::NotFound)?;
                rustix::fs::open(path.join(file), flags, Mode::empty())?
            }
        };
        Ok(std::fs::File::from(fd))
    }

    /// Whether a cgroup the task made inside this one is there, in any hierarchy: a cgroup
    /// directory's link count is two and one per directory in it.
    pub(crate) fn has_inner_cgroups(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let fds = self.fds.lock().unwrap_or_else(|p| p.into_inner());
        self.dirs.iter().enumerate().any(|(i, dir)| {
            let links = match fds.get(i).and_then(Option::as_ref) {
                // `st_nlink` is 64 bits here and 32 on some architectures.
                #[allow(clippy::unnecessary_cast)]
                Some(at) => rustix::fs::fstat(&at.dir).ok().map(|st| st.st_nlink as u64),
                None => std::fs::metadata(dir).ok().map(|m| m.nlink()),
            };
            links != Some(2)
        })
    }

    /// The memory still charged to it (v1 `memory.usage_in_bytes`, v2 `memory.current`):
    /// after its processes are gone, what the kernel has not freed yet (their kernel
    /// memory) and the page cache of what they wrote.
    pub(crate) fn charged_bytes(&self) -> Option<u64> {
        let (dir, file) = if self.cgroup.v2() {
            ("", "memory.current")
        } else {
            ("memory", "memory.usage_in_bytes")
        };
        self.read_small(self.controller_index(dir), file)?
            .trim()
            .parse()
            .ok()
    }

    /// Its path under each hierarchy's root: `troupe/<agent>/<task>`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The directories of the cgroup, one per distinct hierarchy: controllers mounted
    /// together (`cpu` and `cpuacct` as links to `cpu,cpuacct`) share one.
    fn new(cgroup: Cgroup, path: String) -> TaskCgroup {
        let mut seen = BTreeSet::new();
        let dirs: Vec<PathBuf> = cgroup
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .filter(|p| seen.insert(hierarchy_of(p, &path)))
            .collect();
        let fds = dirs.iter().map(|d| DirFd::open(d)).collect();
        TaskCgroup {
            cgroup,
            path,
            dirs,
            fds: Mutex::new(fds),
            files: Mutex::new(Vec::new()),
        }
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.clone()
    }

    /// The `cgroup.procs` files a process writes `0` to, to join the cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    fn controller_dir(&self, name: &str) -> Option<PathBuf> {
        self.controller_index(name).map(|i| self.dirs[i].clone())
    }

    /// Which of `dirs` is `controller`'s (any on v2).
    fn controller_index(&self, controller: &str) -> Option<usize> {
        if self.cgroup.v2() {
            return (!self.dirs.is_empty()).then_some(0);
        }
        self.dirs.iter().position(|d| {
            d.ancestors().any(|a| {
                a.file_name()
                    .is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == controller))
            })
        })
    }

    /// The pids in the cgroup now, with those in cgroups the task made inside it.
    pub fn pids(&self) -> Vec<i32> {
        fn collect(dir: &std::path::Path, pids: &mut BTreeSet<i32>) {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    collect(&entry.path(), pids);
                }
            }
        }
        let mut pids = BTreeSet::new();
        for dir in &self.dirs {
            collect(dir, &mut pids);
        }
        pids.into_iter().collect()
    }

    /// Whether no process is left in it, nor in a cgroup the task made inside it. Usually
    /// one file says so for the whole subtree: `populated` in `cgroup.events` on v2, the
    /// pids controller's count on v1 (a task's processes join every hierarchy together).
    /// That count includes processes that ended and wait to be reaped (by init, for the
    /// orphans of a task), so when it is not zero the live ones are listed.
    pub fn is_empty(&self) -> bool {
        self.says_empty() == Some(true) || self.pids().is_empty()
    }

    /// Whether it is still there and empty, for a kept cgroup about to serve a new run: one
    /// read where [`TaskCgroup::is_empty`] would list no process in a cgroup that is gone.
    /// (Its directories are made and removed together, so one that answers stands for all;
    /// if another went missing anyway, the run fails to join it and the next makes a new
    /// cgroup.)
    pub(crate) fn is_there_and_empty(&self) -> bool {
        match self.says_empty() {
            Some(true) => true,
            // The count includes processes that wait to be reaped.
            Some(false) => self.pids().is_empty(),
            None => false,
        }
    }

    /// What the one file that covers the whole subtree says of its emptiness (see
    /// [`TaskCgroup::is_empty`]); `None` when it cannot be read.
    fn says_empty(&self) -> Option<bool> {
        if self.cgroup.v2() {
            let events = self.read_small(self.controller_index(""), "cgroup.events");
            events.and_then(|events| {
                events
                    .lines()
                    .find_map(|l| l.strip_prefix("populated ").map(|n| n.trim() == "0"))
            })
        } else {
            self.read_small(self.controller_index("pids"), "pids.current")
                .map(|n| n.trim() == "0")
        }
    }

    /// Resource use now.
    pub fn stats(&self) -> CgroupStats {
        let read = |dir: Option<usize>, file: &str| -> Option<String> {
            std::io::read_to_string(self.open_control(dir?, file, false).ok()?).ok()
        };
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        let keyed = |text: Option<String>, key: &str| -> Option<u64> {
            text?.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        let processes = self.pids().len() as u64;
        if self.cgroup.v2() {
            let dir = self.controller_index("");
            CgroupStats {
                cpu_ns: keyed(read(dir, "cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
                memory_bytes: number(read(dir, "memory.current")).unwrap_or(0),
                memory_peak_bytes: number(read(dir, "memory.peak")).unwrap_or(0),
                oom_kills: self.oom_kills(),
                processes,
            }
        } else {
            let memory = self.controller_index("memory");
            CgroupStats {
                cpu_ns: number(read(self.controller_index("cpuacct"), "cpuacct.usage"))
                    .unwrap_or(0),
                memory_bytes: number(read(memory, "memory.usage_in_bytes")).unwrap_or(0),
                memory_peak_bytes: number(read(memory, "memory.max_usage_in_bytes")).unwrap_or(0),
                oom_kills: self.oom_kills(),
                processes,
            }
        }
    }

    /// The processes the kernel killed in it for exceeding its memory limit, ever.
    pub fn oom_kills(&self) -> u64 {
        let (dir, file) = if self.cgroup.v2() {
            (self.controller_index(""), "memory.events")
        } else {
            (self.controller_index("memory"), "memory.oom_control")
        };
        self.read_small(dir, file)
            .and_then(|text| {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == "oom_kill").then(|| v.trim().parse().ok()).flatten()
                })
            })
            .unwrap_or(0)
    }

    /// Kills every process in the cgroup and waits (up to `limit`) until it is empty. On v1
    /// the freezer holds the processes still while they are killed, so that none can fork
    /// a new one in between. Returns whether it is empty.
    pub async fn kill_all(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let v2_kill = self.cgroup.v2() && self.cgroup.kill().is_ok();
        loop {
            if self.is_empty() {
                return true;
            }
            if !v2_kill {
                self.kill_round();
            }
            if tokio::time::Instant::now() >= deadline {
                return self.is_empty();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL to every process in the cgroup, the freezer holding them still on v1.
    fn kill_round(&self) {
        let freezer = (!self.cgroup.v2())
            .then(|| self.controller_dir("freezer"))
            .flatten();
        if let Some(f) = &freezer {
            let _ = std::fs::write(f.join("freezer.state"), "FROZEN");
        }
        for pid in self.pids() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        if let Some(f) = &freezer {
            // A killed process dies only once thawed.
            let _ = std::fs::write(f.join("freezer.state"), "THAWED");
        }
    }

    /// Resets what can be reset of the stats for a new run in the same cgroup (v1: cpu time
    /// and memory peak).
    pub(crate) fn reset_stats(&self) {
        if self.cgroup.v2() {
            return;
        }
        for (controller, file) in [
            ("cpuacct", "cpuacct.usage"),
            ("memory", "memory.max_usage_in_bytes"),
        ] {
            self.with_file(self.controller_index(controller), file, true, |f| {
                rustix::io::pwrite(f, b"0", 0).map_err(std::io::Error::from)
            });
        }
    }

    /// The text of a small control file (a few hundred bytes at most), through the open
    /// file kept for it.
    fn read_small(&self, dir: Option<usize>, name: &'static str) -> Option<String> {
        let mut buf = [0u8; 512];
        let n = self.with_file(dir, name, false, |f| {
            rustix::io::pread(f, &mut buf, 0).map_err(std::io::Error::from)
        })?;
        String::from_utf8(buf[..n].to_vec()).ok()
    }

    /// Runs `op` on control file `name` in `dir` (an index in `dirs`), opened (for writing
    /// with `write`) the first time and kept open. `None` when it cannot be opened or `op`
    /// fails.
    fn with_file<T>(
        &self,
        dir: Option<usize>,
        name: &'static str,
        write: bool,
        op: impl FnOnce(&std::fs::File) -> std::io::Result<T>,
    ) -> Option<T> {
        let dir = dir?;
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((.., file)) = files.iter().find(|(d, n, _)| *d == dir && *n == name) {
            return op(file).ok();
        }
        let file = self.open_control(dir, name, write).ok()?;
        let result = op(&file).ok();
        files.push((dir, name, file));
        result
    }

    /// Removes the cgroup's directories now, without killing or waiting: for a cgroup
    /// known to be empty (cgroups the task made inside it go first). Returns whether all of
    /// them are gone.
    pub(crate) fn remove_empty(&self) -> bool {
        // Every one is tried, whatever the others do.
        let mut gone = true;
        for dir in &self.dirs {
            gone &= remove_tree(dir);
        }
        gone
    }

    /// Removes the cgroup, killing what is left in it first. Returns whether it is gone.
    pub async fn remove(&self, limit: Duration) -> bool {
        self.kill_all(limit).await;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.remove_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The directories that make up this cgroup (for tests and diagnostics).
    pub fn directories(&self) -> Vec<PathBuf> {
        self.dirs()
    }
}

/// Removes the owner's cgroup directory, `troupe/<agent>`, in every hierarchy, if no task
/// cgroup is left in it. An owner does this when it stops; a task's removal leaves it, so
/// that the next task (or the restart of this one) does not make it again. Returns whether
/// it is gone.
pub fn remove_owner_if_empty(agent: &str) -> bool {
    remove_owner_dirs(agent, false, Duration::ZERO)
}

/// Removes everything under `troupe/<agent>`, in every hierarchy: the processes left in task
/// cgroups are killed, the task cgroups and then the owner's removed, retrying for up to
/// `limit` while the kernel finishes taking down a removed cgroup (until then its parent is
/// busy). For cleaning up after an owner that is gone for good: tests, benchmarks. Blocks;
/// returns whether all of it is gone.
pub fn remove_owner(agent: &str, limit: Duration) -> bool {
    remove_owner_dirs(agent, true, limit)
}

fn remove_owner_dirs(agent: &str, kill: bool, limit: Duration) -> bool {
    if !available() || agent.is_empty() || agent.contains('/') {
        return true;
    }
    let owner = TaskCgroup::load(format!("troupe/{agent}"));
    let deadline = std::time::Instant::now() + limit;
    loop {
        if kill {
            for task in task_names(agent) {
                let cgroup = TaskCgroup::load(task_path(agent, &task));
                for pid in cgroup
                    .pids()
                    .into_iter()
                    .filter_map(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                cgroup.remove_empty();
            }
        }
        owner.remove_empty();
        if owner.dirs.iter().all(|d| !d.exists()) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the cgroup directory `dir`, and first, when it has some, the cgroups inside it,
/// deepest first (a cgroup with children cannot be removed). Returns whether it is gone.
fn remove_tree(dir: &std::path::Path) -> bool {
    match std::fs::remove_dir(dir) {
        Ok(()) => return true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
        Err(_) => {}
    }
    // A cgroup directory's files are the kernel's; its directories are cgroups.
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path());
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Whether this process may make task cgroups (it runs as root).
pub fn available() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether a cgroup can be renamed here (within its parent): on v1 hierarchies, as root.
pub(crate) fn renamable() -> bool {
    available() && !hierarchy().v2()
}

/// The names of the cgroups under `troupe/<agent>`, in any hierarchy.
pub fn task_names(agent: &str) -> BTreeSet<String> {
    TaskCgroup::load(format!("troupe/{agent}"))
        .dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The mount option that makes the kernel favour dynamic cgroup changes.
pub const FAVORDYNMODS: &str = "favordynmods";

/// Whether a cgroup hierarchy of this host is mounted with [`FAVORDYNMODS`], which holds
/// for all of them: the lock a process takes to join a cgroup is one for the whole kernel.
///
/// Without it, a process joining a cgroup waits for an RCU grace period whenever no other
/// process joined one in the last few milliseconds: 4 to 15 ms per launch, on v1 and v2
/// alike, when launches are spaced out. With it, a join takes microseconds, and forks and
/// exits pay a little more.
pub fn favors_dynmods() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mounts| {
        mounts.lines().filter_map(parse_mountinfo).any(|m| {
            m.fstype.starts_with("cgroup") && m.super_options.split(',').any(|o| o == FAVORDYNMODS)
        })
    })
}

/// Remounts this host's cgroup2 hierarchy with [`FAVORDYNMODS`] (see [`favors_dynmods`]),
/// keeping its other options. It is host-wide, and recent kernels (6.18, for one) cannot
/// undo it until the host restarts: an operator asks for it (`--cgroup-favordynmods`).
pub fn favor_dynmods() -> Result<(), CgroupError> {
    let failed = |cause: String| CgroupError::Failed {
        path: "/proc/self/mountinfo".into(),
        cause,
    };
    let mounts =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| failed(e.to_string()))?;
    let mount = mounts
        .lines()
        .filter_map(parse_mountinfo)
        .find(|m| m.fstype == "cgroup2")
        .ok_or_else(|| {
            failed("no cgroup2 hierarchy is mounted (favordynmods is set on one)".into())
        })?;
    let (flags, data) = favordynmods_remount(&mount);
    rustix::mount::mount_remount(mount.mount_point, flags, data.as_str()).map_err(|e| {
        CgroupError::Failed {
            path: mount.mount_point.to_string(),
            cause: format!("cannot remount with {FAVORDYNMODS}: {e}"),
        }
    })
}

/// One line of `/proc/self/mountinfo`, the parts used here.
#[derive(Debug, PartialEq, Eq)]
struct Mount<'a> {
    mount_point: &'a str,
    mount_options: &'a str,
    fstype: &'a str,
    super_options: &'a str,
}

/// `36 25 0:31 / /sys/fs/cgroup/unified rw,nosuid,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate`:
/// six fields, optional ones, `-`, then the type, the source and the superblock's options.
fn parse_mountinfo(line: &str) -> Option<Mount<'_>> {
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let mount_point = left.nth(4)?;
    let mount_options = left.next()?;
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let super_options = right.nth(1)?;
    Some(Mount {
        mount_point,
        mount_options,
        fstype,
        super_options,
    })
}

/// The flags and data of a remount that keeps `mount` as it is and adds favordynmods: a
/// remount sets the mount's flags and the superblock's options to exactly what it is given.
fn favordynmods_remount(mount: &Mount<'_>) -> (rustix::mount::MountFlags, String) {
    use rustix::mount::MountFlags;
    let mut flags = MountFlags::empty();
    for option in mount.mount_options.split(',') {
        flags |= match option {
            "ro" => MountFlags::RDONLY,
            "nosuid" => MountFlags::NOSUID,
            "nodev" => MountFlags::NODEV,
            "noexec" => MountFlags::NOEXEC,
            "noatime" => MountFlags::NOATIME,
            "nodiratime" => MountFlags::NODIRATIME,
            "relatime" => MountFlags::RELATIME,
            "strictatime" => MountFlags::STRICTATIME,
            _ => MountFlags::empty(),
        };
    }
    let mut data: Vec<&str> = mount
        .super_options
        .split(',')
        .filter(|o| !matches!(*o, "rw" | "ro" | "") && *o != FAVORDYNMODS)
        .collect();
    data.push(FAVORDYNMODS);
    (flags, data.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remount_for_favordynmods_keeps_every_other_option_of_the_mount() {
        let hybrid = "36 25 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw";
        let m = parse_mountinfo(hybrid).unwrap();
        assert_eq!(m.mount_point, "/sys/fs/cgroup/unified");
        assert_eq!(m.fstype, "cgroup2");
        let (flags, data) = favordynmods_remount(&m);
        use rustix::mount::MountFlags;
        assert_eq!(
            flags,
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::RELATIME
        );
        assert_eq!(data, "favordynmods");

        // systemd's own options on a v2 host, no optional fields, favordynmods already on.
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,favordynmods,memory_recursiveprot";
        let (flags, data) = favordynmods_remount(&parse_mountinfo(unified).unwrap());
        assert_eq!(flags, MountFlags::NOSUID);
        assert_eq!(data, "nsdelegate,memory_recursiveprot,favordynmods");

        let v1 = "40 25 0:35 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 master:3 - cgroup cgroup rw,memory";
        let m = parse_mountinfo(v1).unwrap();
        assert_eq!((m.fstype, m.super_options), ("cgroup", "rw,memory"));
        assert_eq!(parse_mountinfo("garbage"), None);
        assert_eq!(parse_mountinfo("1 2 3 - cgroup2"), None);
    }
}
