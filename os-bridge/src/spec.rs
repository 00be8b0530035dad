//! What to run and how: [`ProcessSpec`], and how a run ends: [`ExitReason`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A process to run, as plain data (the same in a spec file and on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// The program and its arguments. A program without a `/` is looked up in `PATH` of
    /// the spec's environment (or `/usr/local/bin:/usr/bin:/bin` when it sets none).
    pub argv: Vec<String>,
    /// The environment. It starts empty (nothing is inherited from the owner) and holds
    /// exactly these variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory; by default the task's sandbox. A relative path is taken
    /// inside the sandbox.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Run as this user id (needs root).
    #[serde(default)]
    pub uid: Option<u32>,
    /// Run as this group id (needs root).
    #[serde(default)]
    pub gid: Option<u32>,
    /// Resource limits set with `setrlimit` before exec.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// The signal a graceful stop sends first (by name: `TERM`, `INT`, `QUIT`, `HUP`...).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    /// How long a graceful stop waits before killing whatever is left.
    #[serde(
        default = "default_grace",
        rename = "grace_ms",
        with = "troupe_runtime::codec::millis"
    )]
    pub grace: Duration,
    /// cgroup limits.
    #[serde(default)]
    pub resources: Resources,
    /// How the logs are kept.
    #[serde(default)]
    pub logs: LogPolicy,
    /// Its standard input: nothing (`/dev/null`, the default), or a pipe its owner writes
    /// to and may close (see `crate::stdin`).
    #[serde(default, skip_serializing_if = "is_null_stdin")]
    pub stdin: StdinMode,
}

/// Where a task's standard input comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdinMode {
    /// `/dev/null`: it reads the end at once.
    #[default]
    Null,
    /// A pipe: what its owner sends, until the owner closes it.
    Pipe,
}

fn is_null_stdin(mode: &StdinMode) -> bool {
    *mode == StdinMode::Null
}

fn default_stop_signal() -> String {
    "TERM".into()
}

fn default_grace() -> Duration {
    Duration::from_secs(5)
}

impl ProcessSpec {
    /// A spec running `argv` with an empty environment and the defaults.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> ProcessSpec {
        ProcessSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            uid: None,
            gid: None,
            rlimits: Vec::new(),
            stop_signal: default_stop_signal(),
            grace: default_grace(),
            resources: Resources::default(),
            logs: LogPolicy::default(),
            stdin: StdinMode::Null,
        }
    }

    /// Makes its standard input a pipe its owner writes to (`ProcessMsg::SendStdin`).
    pub fn stdin_pipe(mut self) -> Self {
        self.stdin = StdinMode::Pipe;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the grace period of a graceful stop.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets the resource limits.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Sets the log policy.
    pub fn logs(mut self, logs: LogPolicy) -> Self {
        self.logs = logs;
        self
    }

    /// Checks what can be checked before anything runs.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.argv.first().is_none_or(|p| p.is_empty()) {
            return Err(SpecError::NoProgram);
        }
        if signal_number(&self.stop_signal).is_none() {
            return Err(SpecError::UnknownSignal {
                name: self.stop_signal.clone(),
            });
        }
        if let Some(cpus) = self.resources.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                return Err(SpecError::BadCpus { cpus });
            }
        }
        if self.logs.max_file_bytes == 0 || self.logs.max_files == 0 {
            return Err(SpecError::BadLogPolicy);
        }
        Ok(())
    }
}

/// Why a spec is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// `argv` is empty.
    #[error("the spec names no program (argv is empty)")]
    NoProgram,
    /// The stop signal has no known number.
    #[error("unknown stop signal {name:?}")]
    UnknownSignal {
        /// The name given.
        name: String,
    },
    /// A cpu limit must be a positive number.
    #[error("the cpu limit must be a positive number, got {cpus}")]
    BadCpus {
        /// The limit given.
        cpus: f64,
    },
    /// Log files must have a size and a count.
    #[error("the log policy needs max_file_bytes and max_files above zero")]
    BadLogPolicy,
}

/// One `setrlimit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// The resource: `nofile`, `nproc`, `core`, `as`, `cpu`, `fsize`, `stack`, `memlock`.
    pub resource: String,
    /// The soft limit; `None` is unlimited.
    pub soft: Option<u64>,
    /// The hard limit; `None` is unlimited.
    pub hard: Option<u64>,
}

/// cgroup limits of a task. Absent limits are not set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// A CFS quota in cpus (0.2 is a fifth of one cpu).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Relative cpu weight against other tasks (v1 `cpu.shares`, 1024 is one share).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// The memory hard limit in bytes; above it the kernel kills the task (OOM).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// The most processes and threads the task may have.
    #[serde(default)]
    pub pids: Option<u64>,
}

impl Eq for Resources {}

/// How a task's output is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    /// A log file is rotated when it grows past this size.
    pub max_file_bytes: u64,
    /// How many files of each stream are kept, the live one included.
    pub max_files: u32,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            max_file_bytes: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// How a process run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// It exited on its own with this code.
    Exited(i32),
    /// It was ended by this signal (not sent by its owner).
    Signaled(i32),
    /// The kernel killed it for exceeding its memory limit.
    OomKilled,
    /// It never ran: the OS error (missing binary, not executable, bad directory...).
    FailedToStart(String),
    /// Its owner stopped it.
    Killed,
    /// It is gone and how it ended is unknown (its record was lost, or its pid was reused
    /// while no owner watched).
    Gone(String),
}

impl ExitReason {
    /// Whether the run succeeded: exit code 0.
    pub fn is_success(&self) -> bool {
        matches!(self, ExitReason::Exited(0))
    }

    /// The reason as a ractor stop reason, so that a monitor's `Down` carries it:
    /// `normal` for exit code 0, `shutdown` when its owner stopped it, and otherwise a text
    /// that names the cause.
    pub fn to_stop_reason(&self) -> String {
        match self {
            ExitReason::Exited(0) => "normal".into(),
            ExitReason::Killed => "shutdown".into(),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "exited with code {code}"),
            ExitReason::Signaled(sig) => write!(f, "killed by signal {}", signal_name(*sig)),
            ExitReason::OomKilled => f.write_str("killed for exceeding its memory limit (OOM)"),
            ExitReason::FailedToStart(err) => write!(f, "failed to start: {err}"),
            ExitReason::Killed => f.write_str("stopped by its owner"),
            ExitReason::Gone(why) => write!(f, "gone: {why}"),
        }
    }
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("WINCH", 28),
];

/// The number of a signal given by name (`TERM`, `SIGTERM`) or number (`15`).
pub fn signal_number(name: &str) -> Option<i32> {
    let bare = name.trim().trim_start_matches("SIG");
    if let Ok(n) = bare.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    SIGNALS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(bare))
        .map(|(_, v)| *v)
}

/// The name of a signal number (`SIGTERM`), or the number.
pub fn signal_name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == sig)
        .map_or_else(|| sig.to_string(), |(n, _)| format!("SIG{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal_number("TERM"), Some(15));
        assert_eq!(signal_number("SIGKILL"), Some(9));
        assert_eq!(signal_number("int"), Some(2));
        assert_eq!(signal_number("10"), Some(10));
        assert_eq!(signal_number("NOPE"), None);
        assert_eq!(signal_number("0"), None);
        assert_eq!(signal_name(9), "SIGKILL");
    }

    #[test]
    fn bad_specs_are_refused() {
        assert_eq!(
            ProcessSpec::new(Vec::<String>::new()).validate(),
            Err(SpecError::NoProgram)
        );
        let mut spec = ProcessSpec::new(["true"]);
        spec.stop_signal = "FOO".into();
        assert!(matches!(
            spec.validate(),
            Err(SpecError::UnknownSignal { .. })
        ));
        let spec = ProcessSpec::new(["true"]).resources(Resources {
            cpus: Some(-1.0),
            ..Resources::default()
        });
        assert!(matches!(spec.validate(), Err(SpecError::BadCpus { .. })));
    }

    #[test]
    fn specs_read_from_json_with_defaults() {
        let spec: ProcessSpec = serde_json::from_str(r#"{"argv": ["sleep", "1"]}"#).unwrap();
        assert_eq!(spec.grace, Duration::from_secs(5));
        assert_eq!(spec.stop_signal, "TERM");
        assert!(spec.env.is_empty());
    }

    #[test]
    fn exit_reasons_become_stop_reasons() {
        assert_eq!(ExitReason::Exited(0).to_stop_reason(), "normal");
        assert_eq!(ExitReason::Killed.to_stop_reason(), "shutdown");
        assert_eq!(
            ExitReason::Signaled(9).to_stop_reason(),
            "killed by signal SIGKILL"
        );
    }
}
