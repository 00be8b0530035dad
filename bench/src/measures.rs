//! The measures, each beside its baseline:
//! * [`throughput`]: local casts per second, through `Addr` vs raw ractor.
//! * [`remote`]: a call round trip between two OS processes, troupe vs raw ractor_cluster
//!   (and Erlang distribution when `erl` is installed).
//! * [`restart`]: crash to restarted for a supervised process actor vs a bare respawn loop.
//! * [`cluster`]: launch latency, tasks per minute and agent failure detection, on the
//!   embedded cluster.
//! * [`scale`]: the master with simulated agents: placements per minute, allocator cycle
//!   time, memory per task.

pub(crate) mod cluster;
pub(crate) mod remote;
pub(crate) mod restart;
pub(crate) mod scale;
pub(crate) mod throughput;

/// Work directories (sandboxes) of the measures, removed when the whole run ends
/// ([`WorkDirs`]), not by each measure: removing thousands of files makes creating the next
/// ones slower for minutes on some filesystems (ext4 without a journal checks each candidate
/// inode for a recent deletion), and one measure is not to pay for another's clean-up.
static WORK_DIRS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Leaves `dir` for removal at the end of the run.
pub(crate) fn remove_at_the_end(dir: std::path::PathBuf) {
    WORK_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir);
}

/// Removes the work directories left by the measures when dropped: at the end of the run,
/// whether it succeeded or not.
pub(crate) struct WorkDirs;

impl Drop for WorkDirs {
    fn drop(&mut self) {
        let dirs = std::mem::take(&mut *WORK_DIRS.lock().unwrap_or_else(|p| p.into_inner()));
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The median and the 99th percentile of some durations, in microseconds.
pub(crate) fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99))
}
