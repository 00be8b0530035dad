//! The master's durable facts: admitted agents and subscribed frameworks, in one JSON file
//! replaced atomically (written beside it, synced, renamed). Everything else the master
//! knows (tasks, offers, who is connected) is soft state, rebuilt when agents register
//! and frameworks subscribe again after a master restart.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::{AgentId, AgentInfo, FrameworkId, FrameworkInfo};

/// The facts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// Agents admitted, by id.
    #[serde(default)]
    pub agents: BTreeMap<AgentId, AgentInfo>,
    /// Agents removed for good (declared gone): they must not come back with old tasks.
    #[serde(default)]
    pub removed_agents: Vec<AgentId>,
    /// Frameworks subscribed and not torn down, by id.
    #[serde(default)]
    pub frameworks: BTreeMap<FrameworkId, FrameworkInfo>,
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
        Ok(Registry {
            path: Some(path.to_path_buf()),
            facts,
        })
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
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let bytes = serde_json::to_vec_pretty(&self.facts).map_err(|e| RegistryError::Corrupt {
            path: path.clone(),
            cause: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Resources;

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
