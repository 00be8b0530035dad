//! The spec format: one set of serde types that is both the Rust builder and the TOML file.
//! `Spec::to_toml` and `read` (in [`crate::validate`]) round-trip: what the builder makes,
//! the file says, and the reverse.
//!
//! ```toml
//! name = "web"                 # the spec's name, unique in the cluster
//! strategy = "one_for_one"     # one_for_one | one_for_all | rest_for_one
//! intensity = 3                # at most 3 restarts ...
//! period = "10s"               # ... within 10 s, or the supervisor gives up
//!
//! [[children]]
//! id = "server"
//! command = "python3"
//! args = ["-m", "http.server", "{port0}"]
//! replicas = 3                 # server-0, server-1, server-2, spread over agents
//! resources = { cpus = 0.1, mem = 64, ports = 1 }
//! ```
//!
//! A child with `children` is a supervisor of its own; one with `command` is a process.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_runtime::supervisor::{AutoShutdown, Restart, Strategy};

/// A spec: a named tree of supervisors whose leaves are processes placed by the cluster.
/// Its top is a supervisor; its flags are the spec's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The spec's name: letters, digits, `-` and `_`, unique in the cluster.
    pub name: String,
    /// How the top supervisor restarts its children.
    #[serde(default)]
    pub strategy: Strategy,
    /// The most restarts within `period`; one more and the top supervisor gives up.
    #[serde(default = "default_intensity")]
    pub intensity: u32,
    /// See `intensity`.
    #[serde(default = "default_period", with = "duration")]
    pub period: Duration,
    /// Whether significant children ending stops the spec.
    #[serde(default, skip_serializing_if = "is_default")]
    pub auto_shutdown: AutoShutdown,
    /// The children, started in this order and stopped in the reverse.
    pub children: Vec<Child>,
}

/// A child of a supervisor: a process, or a supervisor of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Child {
    /// A supervisor (a table with `children`).
    Supervisor(SupervisorChild),
    /// A process (a table with `command`).
    Process(ProcessChild),
}

/// A supervisor under another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorChild {
    /// Its id among its siblings.
    pub id: String,
    /// How it restarts its children.
    #[serde(default)]
    pub strategy: Strategy,
    /// The most restarts within `period`.
    #[serde(default = "default_intensity")]
    pub intensity: u32,
    /// See `intensity`.
    #[serde(default = "default_period", with = "duration")]
    pub period: Duration,
    /// Whether significant children ending stops it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub auto_shutdown: AutoShutdown,
    /// Whether its parent restarts it when it gives up or shuts down.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart: Restart,
    /// Whether its ending may stop its parent (with the parent's `auto_shutdown`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub significant: bool,
    /// Its children.
    pub children: Vec<Child>,
}

/// A process child: what runs, what it needs, where, and how it restarts and stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessChild {
    /// Its id among its siblings (with `replicas`, each replica's is `ID-N`).
    pub id: String,
    /// The program: a path, or a name looked up in `PATH`.
    pub command: String,
    /// Its arguments; `{port0}`, `{port1}`... are the ports it was given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its whole environment (nothing is inherited); `PORT0`... are added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Its working directory (relative: inside its sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Its standard input: `"null"` (the default) or `"pipe"` (what `troupe stdin` and the
    /// process service's `send` write).
    #[serde(default, skip_serializing_if = "is_default")]
    pub stdin: troupe_os::StdinMode,
    /// What it needs (also its cgroup's limits).
    #[serde(default, skip_serializing_if = "is_default")]
    pub resources: Needs,
    /// Placement constraints on the agents' attributes or `host`, all of which must hold
    /// (`"rack = r1"`, `"host != h2"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
    /// The one agent it may run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When it is started again: `permanent` (always), `transient` (after an abnormal
    /// end), `temporary` (never).
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart: Restart,
    /// How it is stopped: `"brutal_kill"`, a grace (`"5s"`: its stop signal, then SIGKILL
    /// after that long) or `"infinity"`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub shutdown: Shutdown,
    /// Whether its ending on its own may stop its supervisor (with `auto_shutdown`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub significant: bool,
    /// How many copies: more than one makes children `ID-0`, `ID-1`..., spread over agents.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: u32,
}

/// What a process child needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Needs {
    /// Cpus (fractions are fine); also its cgroup's cpu share.
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory in MiB; also its cgroup's memory limit.
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// Disk in MiB.
    #[serde(default, skip_serializing_if = "is_default")]
    pub disk: f64,
    /// How many ports, from its agent's range.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ports: u16,
}

impl Default for Needs {
    fn default() -> Self {
        Needs {
            cpus: default_cpus(),
            mem: default_mem(),
            disk: 0.0,
            ports: 0,
        }
    }
}

/// How a process child is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGKILL at once.
    BrutalKill,
    /// Its stop signal, then SIGKILL after this long.
    Grace(Duration),
    /// Its stop signal, and as long as it takes.
    Infinity,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::Grace(Duration::from_secs(5))
    }
}

impl Shutdown {
    /// The grace its stop gives it (infinity is a day: a stop that never ends would hold
    /// its supervisor forever).
    pub fn grace(self) -> Duration {
        match self {
            Shutdown::BrutalKill => Duration::ZERO,
            Shutdown::Grace(d) => d,
            Shutdown::Infinity => Duration::from_secs(24 * 3600),
        }
    }

    /// Reads `brutal_kill`, `infinity` or a duration.
    pub fn parse(text: &str) -> Result<Shutdown, String> {
        match text {
            "brutal_kill" => Ok(Shutdown::BrutalKill),
            "infinity" => Ok(Shutdown::Infinity),
            other => parse_duration(other).map(Shutdown::Grace).map_err(|_| {
                format!(
                    "{other:?} is not a shutdown: \"brutal_kill\", \"infinity\" or a duration such as \"5s\""
                )
            }),
        }
    }
}

impl std::fmt::Display for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shutdown::BrutalKill => f.write_str("brutal_kill"),
            Shutdown::Infinity => f.write_str("infinity"),
            Shutdown::Grace(d) => f.write_str(&format_duration(*d)),
        }
    }
}

impl Serialize for Shutdown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shutdown {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shutdown, D::Error> {
        let text = String::deserialize(d)?;
        Shutdown::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Reads a duration: a whole number with `ms`, `s`, `m` or `h` (`"500ms"`, `"5s"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as \"500ms\", \"5s\", \"2m\" or \"1h\"");
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    // Ten years at most: no duration from a file reaches an overflow.
    match ms {
        Some(ms) if ms <= 10 * 365 * 24 * 3_600_000 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{text:?} is longer than ten years")),
    }
}

/// Writes a duration as [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1_000 == 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// Serde of durations as `"5s"`.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

fn default_intensity() -> u32 {
    3
}

fn default_period() -> Duration {
    Duration::from_secs(5)
}

fn default_cpus() -> f64 {
    0.1
}

fn default_mem() -> f64 {
    64.0
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The builder: a spec is made in Rust as it is written in a file.
impl Spec {
    /// A spec with a `one_for_one` top supervisor (3 restarts in 5 s) and no children.
    pub fn new(name: impl Into<String>) -> Spec {
        Spec {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: default_intensity(),
            period: default_period(),
            auto_shutdown: AutoShutdown::Never,
            children: Vec::new(),
        }
    }

    /// With this strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Spec {
        self.strategy = strategy;
        self
    }

    /// With this intensity and period.
    pub fn intensity(mut self, intensity: u32, period: Duration) -> Spec {
        self.intensity = intensity;
        self.period = period;
        self
    }

    /// With this auto shutdown.
    pub fn auto_shutdown(mut self, auto_shutdown: AutoShutdown) -> Spec {
        self.auto_shutdown = auto_shutdown;
        self
    }

    /// With one more child (started after the others).
    pub fn child(mut self, child: impl Into<Child>) -> Spec {
        self.children.push(child.into());
        self
    }

    /// The spec as its file says it.
    pub fn to_toml(&self) -> String {
        // Every value of the types serializes (durations and shutdowns as strings, no map
        // with non-string keys), so this cannot fail.
        toml::to_string(self).unwrap_or_else(|e| format!("# not writable: {e}\n"))
    }
}

impl SupervisorChild {
    /// A `one_for_one` supervisor child (3 restarts in 5 s, permanent) with no children.
    pub fn new(id: impl Into<String>) -> SupervisorChild {
        SupervisorChild {
            id: id.into(),
            strategy: Strategy::OneForOne,
            intensity: default_intensity(),
            period: default_period(),
            auto_shutdown: AutoShutdown::Never,
            restart: Restart::Permanent,
            significant: false,
            children: Vec::new(),
        }
    }

    /// With this strategy.
    pub fn strategy(mut self, strategy: Strategy) -> SupervisorChild {
        self.strategy = strategy;
        self
    }

    /// With this intensity and period.
    pub fn intensity(mut self, intensity: u32, period: Duration) -> SupervisorChild {
        self.intensity = intensity;
        self.period = period;
        self
    }

    /// With one more child.
    pub fn child(mut self, child: impl Into<Child>) -> SupervisorChild {
        self.children.push(child.into());
        self
    }
}

impl ProcessChild {
    /// A permanent process child running `command`, with 0.1 cpus and 64 MiB, anywhere.
    pub fn new(id: impl Into<String>, command: impl Into<String>) -> ProcessChild {
        ProcessChild {
            id: id.into(),
            command: command.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            dir: None,
            stdin: troupe_os::StdinMode::Null,
            resources: Needs::default(),
            placement: Vec::new(),
            agent: None,
            restart: Restart::Permanent,
            shutdown: Shutdown::default(),
            significant: false,
            replicas: 1,
        }
    }

    /// With these arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> ProcessChild {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// With one more environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> ProcessChild {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Needing these resources.
    pub fn resources(mut self, resources: Needs) -> ProcessChild {
        self.resources = resources;
        self
    }

    /// With one more placement constraint (`"rack = r1"`).
    pub fn placement(mut self, constraint: impl Into<String>) -> ProcessChild {
        self.placement.push(constraint.into());
        self
    }

    /// With this restart type.
    pub fn restart(mut self, restart: Restart) -> ProcessChild {
        self.restart = restart;
        self
    }

    /// Stopped this way.
    pub fn shutdown(mut self, shutdown: Shutdown) -> ProcessChild {
        self.shutdown = shutdown;
        self
    }

    /// Significant (with its supervisor's `auto_shutdown`).
    pub fn significant(mut self, significant: bool) -> ProcessChild {
        self.significant = significant;
        self
    }

    /// In this many copies.
    pub fn replicas(mut self, replicas: u32) -> ProcessChild {
        self.replicas = replicas;
        self
    }
}

impl From<ProcessChild> for Child {
    fn from(child: ProcessChild) -> Child {
        Child::Process(child)
    }
}

impl From<SupervisorChild> for Child {
    fn from(child: SupervisorChild) -> Child {
        Child::Supervisor(child)
    }
}

impl Child {
    /// Its id among its siblings.
    pub fn id(&self) -> &str {
        match self {
            Child::Supervisor(s) => &s.id,
            Child::Process(p) => &p.id,
        }
    }
}
