//! What a host offers: cpus, memory and disk, its name and its operator's labels.
//!
//! The numbers are what this process may use, not what the machine has: the cpus it may run
//! on (its affinity) capped by its cgroup's cpu quota, the memory of `/proc/meminfo` capped
//! by its cgroup's memory limit, and the free space of the filesystem sandboxes live on. An
//! agent started inside a container or a systemd slice thus offers its share, not the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A host's resources and identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostResources {
    /// The host name.
    pub hostname: String,
    /// Cpus available (fractional when a cgroup quota limits them).
    pub cpus: f64,
    /// Memory available, in bytes.
    pub memory_bytes: u64,
    /// Free disk space where sandboxes live, in bytes.
    pub disk_free_bytes: u64,
    /// Total disk space there, in bytes.
    pub disk_total_bytes: u64,
    /// The operator's labels (`--attr k=v`).
    pub labels: BTreeMap<String, String>,
}

/// The limits a cgroup puts on a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupLimits {
    /// The cpu quota in cpus, if any.
    pub cpus: Option<f64>,
    /// The memory limit in bytes, if any.
    pub memory_bytes: Option<u64>,
}

/// Reads this host's resources, with sandboxes under `sandbox_root`.
pub fn host_resources(sandbox_root: &Path, labels: BTreeMap<String, String>) -> HostResources {
    let uname = rustix::system::uname();
    let hostname = uname.nodename().to_string_lossy().into_owned();
    let limits = limits_of(std::process::id() as i32);
    let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpus = limits.cpus.map_or(online, |q| q.min(online));
    let total_memory = meminfo_total().unwrap_or(0);
    let memory_bytes = limits
        .memory_bytes
        .map_or(total_memory, |l| l.min(total_memory));
    let (disk_free_bytes, disk_total_bytes) = disk(sandbox_root);
    HostResources {
        hostname,
        cpus,
        memory_bytes,
        disk_free_bytes,
        disk_total_bytes,
        labels,
    }
}

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Free and total bytes of the filesystem holding `path` (or its nearest existing parent).
fn disk(path: &Path) -> (u64, u64) {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match rustix::fs::statvfs(existing) {
        Ok(s) => (s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize),
        Err(_) => (0, 0),
    }
}

/// The cgroup limits on process `pid`, from `/proc/<pid>/cgroup`, on v1, hybrid or v2
/// hosts. The tightest limit on the way from its cgroup to the root counts.
pub fn limits_of(pid: i32) -> CgroupLimits {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return CgroupLimits::default();
    };
    let mut limits = CgroupLimits::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            // cgroup v2 (pure, or the unified tree of a hybrid host).
            let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                PathBuf::from("/sys/fs/cgroup/unified")
            };
            for dir in up_from(&root, path) {
                if let Some(cpus) = read(&dir, "cpu.max").and_then(|t| v2_cpus(&t)) {
                    limits.cpus = Some(limits.cpus.map_or(cpus, |c| c.min(cpus)));
                }
                if let Some(mem) = read(&dir, "memory.max").and_then(|t| t.trim().parse().ok()) {
                    limits.memory_bytes = Some(limits.memory_bytes.map_or(mem, |m| m.min(mem)));
                }
            }
            continue;
        }
        for controller in controllers.split(',') {
            let root = Path::new("/sys/fs/cgroup").join(controllers);
            let root = if root.exists() {
                root
            } else {
                Path::new("/sys/fs/cgroup").join(controller)
            };
            for dir in up_from(&root, path) {
                match controller {
                    "cpu" => {
                        let quota = read(&dir, "cpu.cfs_quota_us")
                            .and_then(|t| t.trim().parse::<i64>().ok());
                        let period = read(&dir, "cpu.cfs_period_us")
                            .and_then(|t| t.trim().parse::<i64>().ok());
                        if let (Some(q), Some(p)) = (quota, period) {
                            if q > 0 && p > 0 {
                                let cpus = q as f64 / p as f64;
                                limits.cpus = Some(limits.cpus.map_or(cpus, |c| c.min(cpus)));
                            }
                        }
                    }
                    "memory" => {
                        // An unlimited v1 cgroup reports a huge page-rounded number.
                        if let Some(mem) = read(&dir, "memory.limit_in_bytes")
                            .and_then(|t| t.trim().parse::<u64>().ok())
                            .filter(|m| *m < (1 << 62))
                        {
                            limits.memory_bytes =
                                Some(limits.memory_bytes.map_or(mem, |m| m.min(mem)));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    limits
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// `root/path` and each of its parents up to `root`.
fn up_from(root: &Path, path: &str) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut dir = root.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        dir = dir.join(part);
        dirs.push(dir.clone());
    }
    dirs
}

/// `cpu.max` is `QUOTA PERIOD` or `max PERIOD`.
fn v2_cpus(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?.parse::<f64>().ok()?;
    let period = parts.next()?.parse::<f64>().ok()?;
    (period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_has_something_to_offer() {
        let mut labels = BTreeMap::new();
        labels.insert("rack".to_string(), "r1".to_string());
        let host = host_resources(&std::env::temp_dir(), labels.clone());
        assert!(!host.hostname.is_empty());
        assert!(host.cpus > 0.0);
        assert!(host.memory_bytes > 0 && host.memory_bytes <= meminfo_total().unwrap());
        assert!(host.disk_total_bytes >= host.disk_free_bytes && host.disk_total_bytes > 0);
        assert_eq!(host.labels, labels);
    }

    #[test]
    fn v2_cpu_max_reads() {
        assert_eq!(v2_cpus("50000 100000"), Some(0.5));
        assert_eq!(v2_cpus("max 100000"), None);
    }
}
