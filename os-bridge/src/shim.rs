//! The shim: a small process between an owner and its task.
//!
//! ```text
//!   owner (agent, supervisor...)      may die and come back
//!     └── troupe-shim  (own session)  parent of the task: reaps it, records its exit
//!           └── task   (own session, in its cgroup before exec)
//! ```
//!
//! The task's exit status goes only to its parent. With the owner as parent, a task that
//! outlives its owner would end unobserved. So the owner starts the shim, the shim starts
//! the task and waits for it, and writes what happened to files in the sandbox: the owner
//! (or a new owner after a restart) reads them. The task is started by `crate::exec` (a
//! clone sharing the shim's memory until the exec, with the task's setup in between).
//!
//! A shim whose plan says `stay` waits, once its task has ended, for the next plan on its
//! standard input and runs it the same way, until that input ends ([`serve`]): the owner
//! keeps it for the task's restart or for another launch (see `crate::keeper`).
//!
//! Records, appended to one file, `records`, in the status directory (see [`append_record`]):
//! * `started.json`: the task's pid and start time, or `failed.json`: why it never ran;
//! * `exit.json`: its exit code or signal.
//!
//! (The owner adds its own there: the checkpoint and the outcome.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exec::{self, TaskExec};
use crate::procfs;
use crate::spec::Rlimit;

/// What the owner hands the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub cwd: PathBuf,
    /// User id to run as.
    pub uid: Option<u32>,
    /// Group id to run as.
    pub gid: Option<u32>,
    /// Limits to set before exec.
    pub rlimits: Vec<Rlimit>,
    /// The `cgroup.procs` files to write the task's pid into before exec (one per
    /// hierarchy on a v1 host, one on v2).
    pub cgroup_procs: Vec<PathBuf>,
    /// Where standard output goes (appended).
    pub stdout: PathBuf,
    /// Where standard error goes (appended).
    pub stderr: PathBuf,
    /// The directory of `started.json`, `failed.json` and `exit.json`.
    pub status_dir: PathBuf,
    /// Whether the shim stays after the task ends, for the task's next run: it then reads
    /// the next plan as one line of JSON on its standard input (the socket it reports on,
    /// for a shim forked by a launcher) and runs it, until that input ends.
    #[serde(default)]
    pub stay: bool,
    /// Whether the cgroup is the very one the shim's last run joined (a kept cgroup, given
    /// with the shim that ran in it): the shim may join it through the files it kept open.
    /// Otherwise the same paths may name another cgroup now (one recycled under this name),
    /// and the files are opened again.
    #[serde(default)]
    pub same_cgroup: bool,
    /// Whether the task's standard input is a FIFO in its status directory that its owner
    /// writes to (`crate::stdin`), rather than `/dev/null`.
    #[serde(default)]
    pub stdin_pipe: bool,
}

/// The task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Its pid.
    pub pid: i32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`), which tells it from a
    /// later process that reuses the pid.
    pub start_time: u64,
    /// The shim's pid.
    pub shim_pid: i32,
}

/// The task never ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    /// The OS error, as text.
    pub error: String,
}

/// How the task ended, as its parent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
}

/// The largest launch plan a shim or a launcher reads (16 MiB); a larger one is refused,
/// not read into memory.
pub(crate) const MAX_PLAN: usize = 16 << 20;

/// The shim's pid, which a shim forked by a launcher reports first (an exec'd shim is its
/// owner's child, and the owner knows its pid already).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimPid {
    /// The shim's pid.
    pub pid: i32,
}

/// Runs `plan`, and then, when it says to stay, the plans that follow on standard input, one
/// a line, until that input ends (its owner let it go, or is gone). Returns the shim's exit
/// code after its last run.
pub fn serve(plan: &LaunchPlan) -> i32 {
    use std::io::{BufRead, Read};
    let mut joins = Joins::default();
    let mut code = run_joining(plan, &mut joins);
    if !plan.stay {
        return code;
    }
    let mut input = std::io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_PLAN as u64 + 1;
        match (&mut input).take(limit).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return code,
            Ok(_) if line.last() != Some(&b'\n') => {
                // Over the limit, or cut short by the end of the input: no plan to run, and
                // no telling where the next would start.
                let error = "the shim got a plan over its limit, or cut short".to_string();
                tell_owner(FAILED, &Failed { error });
                return code;
            }
            Ok(_) => {}
        }
        match serde_json::from_slice::<LaunchPlan>(&line) {
            Ok(next) => {
                code = run_joining(&next, &mut joins);
                if !next.stay {
                    return code;
                }
            }
            Err(e) => {
                let error = format!("the shim cannot read the plan: {e}");
                tell_owner(FAILED, &Failed { error });
            }
        }
    }
}

/// The file names in the status directory.
pub const STARTED: &str = "started.json";
/// See [`STARTED`].
pub const FAILED: &str = "failed.json";
/// See [`STARTED`].
pub const EXIT: &str = "exit.json";
/// The owner's record of what a new owner needs to find the task again.
pub const CHECKPOINT: &str = "checkpoint.json";
/// The owner's record of how the task's run ended.
pub const OUTCOME: &str = "outcome.json";
/// The owner's record of the processes a run left running in its cgroup when its main
/// process ended (a daemon it started), killed with the cgroup: names and pids.
pub const LEFT_RUNNING: &str = "left-running.json";
/// The name of the report of a forked shim's pid (a report only, never a file).
pub const SHIM: &str = "shim";

/// The file of a task's records, in its status directory.
pub const RECORDS: &str = "records";

/// The record that starts a run: what comes before it is an earlier run's.
pub const RUN: &str = "run";

/// The size past which the records file is emptied at a run's start, rather than marked:
/// a task restarted thousands of times keeps a few kilobytes of records, not megabytes.
const RECORDS_KEPT: u64 = 64 * 1024;

/// Appends record `name` with `value` to the task's records in `dir`, as one line, `NAME
/// JSON`, in one write. The last whole record of a name is the one that counts; a record
/// cut short by a crash is no record (each starts on a line of its own, so it cannot spoil
/// the next one).
///
/// One file per task, appended to, and not a file per record renamed into place: every new
/// file is an inode to allocate, and on a busy filesystem that was the largest cost of a
/// launch. Not synced to disk: the records serve an owner that restarts while the host
/// stays up (the page cache survives a crashed process), and a task does not outlive its
/// host. An fsync per record cost milliseconds per launch.
pub fn append_record<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    append_to(&open_records(dir)?, name, value)
}

/// The records file of `dir`, open for appending.
fn open_records(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(RECORDS))
}

/// Appends record `name` to the records file `records` (see [`append_record`]).
fn append_to<T: Serialize>(mut records: &File, name: &str, value: &T) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(256);
    line.push(b'\n');
    line.extend_from_slice(name.as_bytes());
    line.push(b' ');
    serde_json::to_writer(&mut line, value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    records.write_all(&line)
}

/// The last whole record `name` of the task in `dir`; or, from an older shim, the file of
/// that name.
pub fn read_record<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Option<T> {
    if let Ok(records) = std::fs::read(dir.join(RECORDS)) {
        // What follows the last newline is a record still being written, or cut short. The
        // current run's records are those after the last `run` mark.
        let whole = records.rsplit(|b| *b == b'\n').skip(1);
        let mut this_run =
            whole.take_while(|line| line.strip_prefix(RUN.as_bytes()) != Some(b" {}"));
        let found = this_run.find_map(|line| {
            let json = line.strip_prefix(name.as_bytes())?.strip_prefix(b" ")?;
            serde_json::from_slice(json).ok()
        });
        if found.is_some() {
            return found;
        }
    }
    read_status(dir, name)
}

/// Forgets the records of an earlier run in `dir`: a `run` mark is appended, after which
/// [`read_record`] finds only the new run's (emptying the file instead costs a truncation,
/// the largest part of this on ext4; it is emptied once past 64 KiB). Also
/// removes what an older version wrote as files (the owner's too: `checkpoint.json`,
/// `outcome.json`), which [`read_record`] would otherwise still find.
pub fn clear_records(dir: &Path) -> std::io::Result<()> {
    let records = dir.join(RECORDS);
    // Where the records file is already, an earlier launch removed the older files.
    match OpenOptions::new().append(true).open(&records) {
        Ok(mut file) => {
            if file.metadata()?.len() > RECORDS_KEPT {
                return file.set_len(0);
            }
            return file.write_all(format!("\n{RUN} {{}}\n").as_bytes());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    File::create(records)?;
    for name in [STARTED, FAILED, EXIT, CHECKPOINT, OUTCOME, LEFT_RUNNING] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    Ok(())
}

/// Writes `value` as JSON to `dir/name`, whole or not at all (written beside it, then
/// renamed over it). For the launch plan of an exec'd shim.
pub fn write_status<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))
}

/// Reads `dir/name`, if it is there and whole (a record of an older shim).
pub fn read_status<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Option<T> {
    let bytes = std::fs::read(dir.join(name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Finds `program` the way a shell would, in `PATH` of the task's environment.
fn resolve_program(program: &str, env: &[(String, String)]) -> Result<PathBuf, String> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!("{program}: not found in PATH {path} (No such file or directory (os error 2))")
        })
}

fn rlimit_resource(name: &str) -> Option<rustix::process::Resource> {
    use rustix::process::Resource;
    Some(match name {
        "nofile" => Resource::Nofile,
        "nproc" => Resource::Nproc,
        "core" => Resource::Core,
        "as" => Resource::As,
        "cpu" => Resource::Cpu,
        "fsize" => Resource::Fsize,
        "stack" => Resource::Stack,
        "memlock" => Resource::Memlock,
        _ => return None,
    })
}

/// The `cgroup.procs` files a shim's last run joined, kept open for the next run of a shim
/// that stays: a restart into the same cgroup opens none.
#[derive(Default)]
struct Joins {
    paths: Vec<PathBuf>,
    files: Vec<File>,
}

impl Joins {
    /// Opens the files at `paths`, in place of those open.
    fn open(&mut self, paths: &[PathBuf]) -> Result<(), String> {
        self.paths.clear();
        self.files.clear();
        for path in paths {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            self.files.push(file);
        }
        self.paths = paths.to_vec();
        Ok(())
    }
}

/// One run of the shim: starts the task (joining its cgroups through `joins`, the files of
/// an earlier run, when the plan says it is the same cgroup), records its start, waits,
/// records its exit. Returns the shim's exit code (0 once the outcome is recorded).
fn run_joining(plan: &LaunchPlan, joins: &mut Joins) -> i32 {
    let fail = |error: String| -> i32 {
        let failed = Failed { error };
        let written = append_record(&plan.status_dir, FAILED, &failed);
        tell_owner(FAILED, &failed);
        match written {
            Ok(()) => 0,
            Err(_) => 1,
        }
    };
    let Some(program) = plan.argv.first() else {
        return fail("no program to run".into());
    };
    let program = match resolve_program(program, &plan.env) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let reused = plan.same_cgroup && joins.paths == plan.cgroup_procs;
    if !reused {
        if let Err(e) = joins.open(&plan.cgroup_procs) {
            return fail(e);
        }
    }
    let open_log = |path: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    let (stdout, stderr) = match (open_log(&plan.stdout), open_log(&plan.stderr)) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let mut limits = Vec::new();
    for r in &plan.rlimits {
        match rlimit_resource(&r.resource) {
            Some(resource) => limits.push((
                resource,
                rustix::process::Rlimit {
                    current: r.soft,
                    maximum: r.hard,
                },
            )),
            None => return fail(format!("unknown rlimit resource {:?}", r.resource)),
        }
    }
    // A piped input's holder lives as long as this run: dropped when it returns.
    let (stdin, _holder) = if plan.stdin_pipe {
        match crate::stdin::open_for_task(&plan.status_dir) {
            Ok((read, holder)) => (read, Some(holder)),
            Err(e) => return fail(e),
        }
    } else {
        match File::open("/dev/null") {
            Ok(null) => (OwnedFd::from(null), None),
            Err(e) => return fail(format!("cannot open /dev/null: {e}")),
        }
    };
    let command = exec::Command {
        program: &program,
        argv: &plan.argv,
        env: &plan.env,
        cwd: &plan.cwd,
        uid: plan.uid,
        gid: plan.gid,
    };
    let stdio = [stdin, stdout.into(), stderr.into()];
    let task = match TaskExec::new(command, stdio, limits) {
        Ok(exec) => match exec.spawn(&joins.files) {
            Ok(pid) => pid,
            // The files of an earlier run name cgroups that may have been made anew since:
            // opened again, once.
            Err(e) if reused && e.step == exec::Step::Cgroup => {
                match joins
                    .open(&plan.cgroup_procs)
                    .map(|()| exec.spawn(&joins.files))
                {
                    Ok(Ok(pid)) => pid,
                    Ok(Err(e)) => return fail(e.message),
                    Err(e) => return fail(e),
                }
            }
            Err(e) => return fail(e.message),
        },
        Err(e) => return fail(e),
    };
    let pid = task.as_raw_nonzero().get();
    let started = Started {
        pid,
        start_time: procfs::start_time(pid).unwrap_or(0),
        shim_pid: std::process::id() as i32,
    };
    // Without its start recorded nobody could find the task: better not to run it. The
    // file stays open for the exit's record.
    let records = open_records(&plan.status_dir);
    let records = match records {
        Ok(file) if append_to(&file, STARTED, &started).is_ok() => file,
        _ => {
            let _ = rustix::process::kill_process(task, rustix::process::Signal::KILL);
            let _ = wait_for(task);
            return 1;
        }
    };
    tell_owner(STARTED, &started);
    let Some(status) = wait_for(task) else {
        return 1;
    };
    let exit = Exit {
        code: status.exit_status(),
        signal: status.terminating_signal(),
    };
    let written = append_to(&records, EXIT, &exit);
    drop(records);
    tell_owner(EXIT, &exit);
    match written {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Waits for the task to end; `None` if it cannot be waited for.
fn wait_for(task: rustix::process::Pid) -> Option<rustix::process::WaitStatus> {
    loop {
        match rustix::process::waitpid(Some(task), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, status))) => return Some(status),
            Err(rustix::io::Errno::INTR) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Tells the owner too, on standard output (the socket or pipe the owner reads), once the
/// record is on disk: the owner need not poll. If the owner is gone the write fails, and the
/// files are what a new owner reads.
pub(crate) fn tell_owner<T: Serialize>(name: &str, value: &T) {
    if let Some(line) = report_line(name, value) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// One line of a report, as [`Report::parse`] reads it: `NAME JSON` and a newline.
pub(crate) fn report_line<T: Serialize>(name: &str, value: &T) -> Option<String> {
    serde_json::to_string(value)
        .ok()
        .map(|json| format!("{name} {json}\n"))
}

/// One line of the shim's report to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The shim's pid (from a shim forked by a launcher).
    Shim(ShimPid),
    /// The task runs.
    Started(Started),
    /// The task never ran.
    Failed(Failed),
    /// The task ended.
    Exit(Exit),
}

impl Report {
    /// Reads one line of the shim's standard output.
    pub fn parse(line: &str) -> Option<Report> {
        let (name, json) = line.trim_end().split_once(' ')?;
        match name {
            SHIM => serde_json::from_str(json).ok().map(Report::Shim),
            STARTED => serde_json::from_str(json).ok().map(Report::Started),
            FAILED => serde_json::from_str(json).ok().map(Report::Failed),
            EXIT => serde_json::from_str(json).ok().map(Report::Exit),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("troupe-records-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_last_whole_record_of_a_name_counts_and_a_torn_one_spoils_nothing() {
        let dir = dir("torn");
        let exit = |code| Exit {
            code: Some(code),
            signal: None,
        };
        append_record(&dir, EXIT, &exit(1)).unwrap();
        append_record(&dir, STARTED, &Failed { error: "x".into() }).unwrap();
        append_record(&dir, EXIT, &exit(2)).unwrap();
        assert_eq!(read_record::<Exit>(&dir, EXIT), Some(exit(2)));
        // A record cut short by a crash: it is not read, and the next one still is.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join(RECORDS))
            .unwrap();
        file.write_all(b"\nexit.json {\"code\":3,\"sig").unwrap();
        assert_eq!(read_record::<Exit>(&dir, EXIT), Some(exit(2)));
        append_record(&dir, EXIT, &exit(4)).unwrap();
        assert_eq!(read_record::<Exit>(&dir, EXIT), Some(exit(4)));
        // A record of another name, or of none, is not taken for this one.
        assert_eq!(read_record::<Exit>(&dir, "exit"), None);
        clear_records(&dir).unwrap();
        assert_eq!(read_record::<Exit>(&dir, EXIT), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_mark_hides_the_earlier_runs_records_and_a_long_file_is_emptied() {
        let dir = dir("runs");
        let exit = |code| Exit {
            code: Some(code),
            signal: None,
        };
        clear_records(&dir).unwrap();
        append_record(&dir, EXIT, &exit(1)).unwrap();
        append_record(&dir, STARTED, &Failed { error: "x".into() }).unwrap();
        clear_records(&dir).unwrap();
        assert_eq!(read_record::<Exit>(&dir, EXIT), None, "the earlier run's");
        append_record(&dir, EXIT, &exit(2)).unwrap();
        assert_eq!(read_record::<Exit>(&dir, EXIT), Some(exit(2)));
        // A record whose value happens to be `{}` under another name is no mark.
        append_record(&dir, "runner", &serde_json::json!({})).unwrap();
        assert_eq!(read_record::<Exit>(&dir, EXIT), Some(exit(2)));
        let records = dir.join(RECORDS);
        while std::fs::metadata(&records).unwrap().len() <= RECORDS_KEPT {
            clear_records(&dir).unwrap();
            append_record(&dir, EXIT, &exit(3)).unwrap();
        }
        clear_records(&dir).unwrap();
        assert_eq!(std::fs::metadata(&records).unwrap().len(), 0, "emptied");
        assert_eq!(read_record::<Exit>(&dir, EXIT), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_an_older_shim_wrote_as_a_file_is_read() {
        let dir = dir("legacy");
        let exit = Exit {
            code: None,
            signal: Some(9),
        };
        write_status(&dir, EXIT, &exit).unwrap();
        assert_eq!(read_record::<Exit>(&dir, EXIT), Some(exit));
        clear_records(&dir).unwrap();
        assert_eq!(read_record::<Exit>(&dir, EXIT), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
