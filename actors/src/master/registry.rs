//! The master's durable facts: admitted agents, subscribed and removed frameworks, and
//! the kills that wait for their agent, in one JSON file replaced atomically (written beside
//! it, synced, renamed). Beside it, `<file>.history` keeps the tasks that ended, one JSON
//! line each, appended in batches and cut back to the newest ones when it grows to twice
//! what is kept, so that a task's fate is known after a master restart.
//!
//! Everything else the master knows (live tasks, offers, who is connected) is soft state,
//! rebuilt when agents register and frameworks subscribe again after a master restart.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::{AgentId, AgentInfo, FrameworkId, FrameworkInfo, TaskId, TaskView};

/// How many removed frameworks' ids are remembered (to refuse them and to acknowledge
/// their agents' updates for them).
pub const REMOVED_FRAMEWORKS_KEPT: usize = 1000;

/// The facts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// Agents admitted, by id.
    #[serde(default)]
    pub agents: BTreeMap<AgentId, AgentInfo>,
    /// Agents removed for good (declared gone): they must not come back with old tasks.
    #[serde(default)]
    pub removed_agents: Vec<AgentId>,
    /// The life each removed agent had: that life is refused for good, and a new life of
    /// the same name (which killed what it ran) is let in.
    #[serde(default)]
    pub removed_lives: BTreeMap<AgentId, u64>,
    /// Frameworks subscribed and not torn down, by id.
    #[serde(default)]
    pub frameworks: BTreeMap<FrameworkId, FrameworkInfo>,
    /// Frameworks removed (torn down, or past their failover timeout), oldest first, at
    /// most [`REMOVED_FRAMEWORKS_KEPT`]: they may not subscribe again, and the master
    /// acknowledges their agents' updates for them.
    #[serde(default)]
    pub removed_frameworks: VecDeque<FrameworkId>,
    /// Tasks asked to be killed that have not ended yet: the kill goes to the task's agent
    /// again whenever it registers, so an operator's kill is never lost to an agent or
    /// master restart.
    #[serde(default)]
    pub pending_kills: BTreeSet<TaskId>,
    /// The supervision specs applied and not deleted, by name: their text as applied (the
    /// spec service reads them back after a master restart).
    #[serde(default)]
    pub specs: BTreeMap<String, String>,
}

impl Facts {
    /// Records a removed framework, forgetting the oldest past the bound.
    pub fn framework_removed(&mut self, id: FrameworkId) {
        self.frameworks.remove(&id);
        if !self.removed_frameworks.contains(&id) {
            self.removed_frameworks.push_back(id);
        }
        while self.removed_frameworks.len() > REMOVED_FRAMEWORKS_KEPT {
            self.removed_frameworks.pop_front();
        }
    }
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read or written.
    #[error("registry {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The file is not a registry.
    #[error("registry {path} is not valid: {cause}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        cause: String,
    },
}

/// The registry: the facts, and the file they live in (none: in memory only).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    path: Option<PathBuf>,
    /// The lines of the history file, counted to know when to cut it back.
    history_lines: usize,
    /// The facts now.
    pub facts: Facts,
}

impl Registry {
    /// Opens the registry at `path`, empty when the file does not exist yet.
    pub fn open(path: Option<&Path>) -> Result<Registry, RegistryError> {
        let Some(path) = path else {
            return Ok(Registry::default());
        };
        let facts = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Facts::default(),
            Err(cause) => {
                return Err(RegistryError::Io {
                    path: path.to_path_buf(),
                    cause,
                });
            }
        };
        let mut registry = Registry {
            path: Some(path.to_path_buf()),
            history_lines: 0,
            facts,
        };
        // Only counted here (to know when to cut it back); the master reads it once.
        registry.history_lines = registry
            .history_path()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map_or(0, |text| {
                text.lines().filter(|l| !l.trim().is_empty()).count()
            });
        Ok(registry)
    }

    /// Writes the facts. On failure (a full disk, say) the file keeps the previous facts
    /// whole, and the caller decides whether to go on.
    pub fn save(&self) -> Result<(), RegistryError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |cause| RegistryError::Io {
            path: path.clone(),
            cause,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = serde_json::to_vec_pretty(&self.facts).map_err(|e| RegistryError::Corrupt {
            path: path.clone(),
            cause: e.to_string(),
        })?;
        replace_file(path, &bytes).map_err(io)
    }

    /// Where the task history lives: `<file>.history`, or nowhere without a file.
    fn history_path(&self) -> Option<PathBuf> {
        self.path.as_ref().map(|p| {
            let mut name = p.clone().into_os_string();
            name.push(".history");
            PathBuf::from(name)
        })
    }

    /// The ended tasks of the history, oldest first, at most `kept` of them (the newest).
    /// A line that cannot be read (the torn last line of a crash) is skipped with a warning.
    pub fn history(&self, kept: usize) -> Result<Vec<TaskView>, RegistryError> {
        let Some(path) = self.history_path() else {
            return Ok(Vec::new());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(cause) => return Err(RegistryError::Io { path, cause }),
        };
        // The newest line of a task wins (a task is written once, but a compaction and an
        // append may meet).
        let mut views: Vec<TaskView> = Vec::new();
        let mut at: BTreeMap<TaskId, usize> = BTreeMap::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str::<TaskView>(line) {
                Ok(view) => match at.get(&view.id) {
                    Some(&i) => views[i] = view,
                    None => {
                        at.insert(view.id.clone(), views.len());
                        views.push(view);
                    }
                },
                Err(e) => {
                    tracing::warn!(file = %path.display(), line = n + 1, cause = %e, "a line of the task history cannot be read; skipped");
                }
            }
        }
        let skip = views.len().saturating_sub(kept);
        Ok(views.split_off(skip))
    }

    /// Appends ended tasks to the history and syncs it; once it holds more than twice
    /// `kept` lines, rewrites it with the newest `kept` (written beside it and renamed).
    pub fn append_history(&mut self, ended: &[TaskView], kept: usize) -> Result<(), RegistryError> {
        let Some(path) = self.history_path() else {
            return Ok(());
        };
        let io = |cause| RegistryError::Io {
            path: path.clone(),
            cause,
        };
        let mut lines = Vec::new();
        for view in ended {
            let line = serde_json::to_vec(view).map_err(|e| RegistryError::Corrupt {
                path: path.clone(),
                cause: e.to_string(),
            })?;
            lines.extend_from_slice(&line);
            lines.push(b'\n');
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(&lines).map_err(io)?;
        file.sync_data().map_err(io)?;
        self.history_lines += ended.len();
        if self.history_lines > 2 * kept.max(1) {
            let newest = self.history(kept)?;
            let mut text = Vec::new();
            for view in &newest {
                text.extend_from_slice(&serde_json::to_vec(view).unwrap_or_default());
                text.push(b'\n');
            }
            replace_file(&path, &text).map_err(io)?;
            self.history_lines = newest.len();
        }
        Ok(())
    }
}

/// Replaces `path` with `bytes` whole: written beside it, synced, renamed over it. On
/// failure the file keeps what it had.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Resources;

    fn ended(n: u64) -> TaskView {
        use crate::protocol::{Source, TaskState, TaskStatus};
        let id = TaskId(format!("t{n}"));
        TaskView {
            pid: None,
            id: id.clone(),
            name: "t".into(),
            framework: FrameworkId("f".into()),
            agent: None,
            status: TaskStatus::new(id, TaskState::Finished, Source::Agent, n),
            resources: Resources::new(0.1, 1.0),
            command: vec!["true".into()],
            launched_ms: n,
        }
    }

    #[test]
    fn the_task_history_survives_a_reopen_keeps_the_newest_and_skips_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("troupe-history-{}", std::process::id()));
        let path = dir.join("registry.json");
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = Registry::open(Some(&path)).unwrap();
        assert!(r.history(10).unwrap().is_empty());
        for n in 0..25 {
            r.append_history(&[ended(n)], 10).unwrap();
        }
        // Cut back to the newest 10 whenever it passed 20 lines.
        let lines = std::fs::read_to_string(dir.join("registry.json.history"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 20, "{lines} lines");
        // A crash in the middle of an append leaves a torn last line.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("registry.json.history"))
            .unwrap();
        file.write_all(b"{\"id\": \"t9").unwrap();
        let reopened = Registry::open(Some(&path)).unwrap();
        let kept: Vec<String> = reopened
            .history(10)
            .unwrap()
            .iter()
            .map(|v| v.id.0.clone())
            .collect();
        let want: Vec<String> = (15..25).map(|n| format!("t{n}")).collect();
        assert_eq!(kept, want);
        // Without a file, nothing is written or read.
        let mut memory = Registry::open(None).unwrap();
        memory.append_history(&[ended(1)], 10).unwrap();
        assert!(memory.history(10).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn removed_frameworks_are_remembered_up_to_the_bound() {
        let mut facts = Facts::default();
        for n in 0..REMOVED_FRAMEWORKS_KEPT + 5 {
            facts.framework_removed(FrameworkId(format!("f{n}")));
        }
        assert_eq!(facts.removed_frameworks.len(), REMOVED_FRAMEWORKS_KEPT);
        assert!(!facts.removed_frameworks.contains(&FrameworkId("f0".into())));
        assert!(
            facts
                .removed_frameworks
                .contains(&FrameworkId("f1004".into()))
        );
    }

    #[test]
    fn facts_survive_a_reopen_and_a_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("troupe-registry-{}", std::process::id()));
        let path = dir.join("registry.json");
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = Registry::open(Some(&path)).unwrap();
        assert_eq!(r.facts, Facts::default());
        r.facts.agents.insert(
            "a1".into(),
            AgentInfo {
                id: "a1".into(),
                hostname: "h".into(),
                node: "a1".into(),
                addr: "127.0.0.1:1".into(),
                resources: Resources::new(1.0, 10.0),
                attributes: BTreeMap::new(),
                work_dir: "/w".into(),
                ports: Default::default(),
                life: 1,
            },
        );
        r.save().unwrap();
        assert_eq!(Registry::open(Some(&path)).unwrap().facts, r.facts);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            Registry::open(Some(&path)),
            Err(RegistryError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
