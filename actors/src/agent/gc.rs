//! Garbage collection of ended tasks' sandboxes, as Mesos' `gc_delay`: a sandbox whose task
//! ended (and left the agent's book) is removed once it is older than the delay (a week by
//! default), and sooner, oldest first, while the disk of the work directory is fuller than
//! the watermark. A task's logs are in its sandbox: they are readable until it goes.
//!
//! Which sandboxes go is decided by [`choose`], pure; [`collect`] reads the directory and
//! the disk and removes what it chose (blocking: the agent runs it beside its work).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// When ended tasks' sandboxes go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcPolicy {
    /// An ended task's sandbox is removed once this old (counted from its last record: its
    /// end).
    pub delay: Duration,
    /// While the work directory's disk is fuller than this share (0 to 1), ended tasks'
    /// sandboxes are removed sooner, oldest first.
    pub disk_watermark: f64,
}

impl Default for GcPolicy {
    /// A week, and 90 %.
    fn default() -> Self {
        GcPolicy {
            delay: Duration::from_secs(7 * 24 * 3600),
            disk_watermark: 0.9,
        }
    }
}

impl GcPolicy {
    /// How often the agent looks: often enough for the delay (a quarter of it), at most a
    /// minute apart, at least 200 ms.
    pub fn interval(&self) -> Duration {
        (self.delay / 4).clamp(Duration::from_millis(200), Duration::from_secs(60))
    }
}

/// The free space a launch must leave on the disk of the work directory, beyond what the
/// task asks for: room for its sandbox's records and logs, and the agent's checkpoint.
pub const DISK_KEPT_FREE_MIB: f64 = 16.0;

/// Room for launches on the disk of the work directory: a launch that would leave less than
/// [`DISK_KEPT_FREE_MIB`] free is refused with why, before anything of it is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiskRoom {
    free_mib: Option<f64>,
}

impl DiskRoom {
    /// The room now on the disk of `path` (unlimited when it cannot be read).
    pub(crate) fn now(path: &Path) -> DiskRoom {
        let free_mib = rustix::fs::statvfs(path)
            .ok()
            .map(|s| (s.f_bavail as f64) * (s.f_frsize as f64) / (1024.0 * 1024.0));
        DiskRoom { free_mib }
    }

    /// Takes room for a task that asks for `need_mib` of disk, or says why there is none.
    pub(crate) fn take(&mut self, need_mib: f64) -> Result<(), String> {
        let Some(free) = self.free_mib else {
            return Ok(());
        };
        let need = need_mib.max(0.0);
        if free < need + DISK_KEPT_FREE_MIB {
            return Err(format!(
                "the agent's disk is full where its tasks' sandboxes are ({free:.0} MiB free; a task needs {need:.0} MiB and {DISK_KEPT_FREE_MIB:.0} MiB kept free): free some space there"
            ));
        }
        self.free_mib = Some(free - need.max(1.0));
        Ok(())
    }
}

/// A delay for people: `7 days`, `3 h`, `90 s`.
pub(crate) fn for_people(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// An ended task's sandbox and when it ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ended {
    pub(crate) path: PathBuf,
    pub(crate) at: SystemTime,
}

/// What to remove: the sandboxes past the delay, then (in `by_disk`, oldest first) those to
/// remove while the disk stays over the watermark.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Choice {
    pub(crate) expired: Vec<PathBuf>,
    pub(crate) by_disk: Vec<PathBuf>,
}

/// Decides, from the ended sandboxes, the time and whether the disk is over the watermark.
pub(crate) fn choose(
    mut ended: Vec<Ended>,
    now: SystemTime,
    delay: Duration,
    over: bool,
) -> Choice {
    ended.sort_by_key(|e| e.at);
    let (expired, rest): (Vec<Ended>, Vec<Ended>) = ended
        .into_iter()
        .partition(|e| now.duration_since(e.at).unwrap_or_default() >= delay);
    Choice {
        expired: expired.into_iter().map(|e| e.path).collect(),
        by_disk: if over {
            rest.into_iter().map(|e| e.path).collect()
        } else {
            Vec::new()
        },
    }
}

/// The share of the disk of `path` in use (0 to 1), if it can be read.
pub(crate) fn disk_used(path: &Path) -> Option<f64> {
    let stats = rustix::fs::statvfs(path).ok()?;
    if stats.f_blocks == 0 {
        return None;
    }
    Some(1.0 - stats.f_bavail as f64 / stats.f_blocks as f64)
}

/// Removes the sandboxes under `root` of tasks not in `keep` (the agent's book) that the
/// policy says go; entries of the owner's own (`.troupe-*`: warm sandboxes) are never
/// touched. Returns what it removed.
pub(crate) fn collect(root: &Path, keep: &BTreeSet<String>, policy: GcPolicy) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let ended: Vec<Ended> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with(troupe_os::warm::RESERVED_PREFIX) && !keep.contains(&name)
        })
        .filter_map(|e| {
            let path = e.path();
            // Its last record is its end; a sandbox without one, its own time.
            let records = troupe_os::sandbox::status_dir_in(&path).join(troupe_os::shim::RECORDS);
            let at = std::fs::metadata(&records)
                .or_else(|_| std::fs::metadata(&path))
                .and_then(|m| m.modified())
                .ok()?;
            Some(Ended { path, at })
        })
        .collect();
    let over = |root: &Path| disk_used(root).is_some_and(|u| u > policy.disk_watermark);
    let choice = choose(ended, SystemTime::now(), policy.delay, over(root));
    let mut removed = Vec::new();
    for path in choice.expired {
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    for path in choice.by_disk {
        if !over(root) {
            break;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(name: &str, secs: u64) -> Ended {
        Ended {
            path: PathBuf::from(name),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn sandboxes_past_the_delay_go_and_younger_ones_stay_unless_the_disk_is_full() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let all = vec![ended("young", 990), ended("old", 100), ended("middle", 500)];
        let choice = choose(all.clone(), now, Duration::from_secs(600), false);
        assert_eq!(choice.expired, vec![PathBuf::from("old")]);
        assert!(choice.by_disk.is_empty());
        // Over the watermark: the rest too, oldest first, while it stays over.
        let choice = choose(all, now, Duration::from_secs(600), true);
        assert_eq!(choice.expired, vec![PathBuf::from("old")]);
        assert_eq!(
            choice.by_disk,
            vec![PathBuf::from("middle"), PathBuf::from("young")]
        );
    }

    #[test]
    fn the_interval_follows_the_delay_within_bounds() {
        let policy = |secs| GcPolicy {
            delay: Duration::from_secs(secs),
            disk_watermark: 0.9,
        };
        assert_eq!(policy(2).interval(), Duration::from_millis(500));
        assert_eq!(policy(0).interval(), Duration::from_millis(200));
        assert_eq!(GcPolicy::default().interval(), Duration::from_secs(60));
    }
}
