//! troupe-os: Linux processes as troupe tasks. It knows nothing of the cluster.
//!
//! Layout:
//! * [`spec`]: what to run ([`ProcessSpec`]) and how a run ends ([`ExitReason`]).
//! * [`actor`]: the process actor (addressable, monitorable, supervisable) and the
//!   supervisor child that runs a binary.
//! * [`process`]: a task's process from its owner's side: start, watch (pidfd), signal,
//!   graceful stop, stats, re-adoption after the owner restarts.
//! * [`shim`]: the small parent process between an owner and its task, which records the
//!   task's exit so that it is never lost; the `troupe-shim` binary runs it.
//! * `exec`: the shim's start of a task: a clone sharing its memory (no fork's copy), the
//!   task's cgroups, limits and user, the exec.
//! * [`keeper`]: what a supervised task's run leaves for its next (the emptied cgroup, the
//!   idle shim).
//! * `shim_link`: the owner's side of a shim: a run started on it, its reports, and the
//!   shim kept idle after.
//! * [`launcher`]: one long-lived shim per owner that forks the shim of each task, so that
//!   no launch execs a shim binary.
//! * [`logs`]: task logs in sandbox files, rotated by size, with live tails from an offset.
//! * [`cgroup`]: a task's cgroup (`troupe/<agent>/<task>`), limits, stats, kill and removal.
//! * [`warm`]: sandboxes and cgroups made ahead of launches, renamed into place by one.
//! * [`host`]: what this host offers (cpus, memory, disk, name, labels), within its own
//!   cgroup's limits.
//! * [`procfs`]: what `/proc` says of a process.
//! * [`executor`]: an owner's launch machinery (launchers, spare shims, kept cgroups, warm
//!   pools) as one value it makes and hands down in every [`TaskContext`].
//! * [`entry`]: the entry points of a shim process (`main_if_shim`, `troupe-shim`).
//! * [`sandbox`]: the layout of a task's sandbox.
//! * [`stdin`]: a task's standard input as a FIFO its owner writes to and may close.
//!
//! Floors, each using only those below it: `spec`, `procfs`, `sandbox`, `cgroup`, `logs`,
//! `stdin` (leaves); `exec`, `shim`; `launcher`; `shim_link`, `keeper`, `warm`; `executor` and
//! `entry` (above `shim` and `launcher`); `process`; `actor`.
//!
//! No state is shared across the process but these facts of the process and its host,
//! each written once or a cache that never goes stale: the cgroup mounts (`cgroup.rs`,
//! read once) and their resolved links (`cgroup.rs`, a cache per mount point); the open
//! file limit the process started with (`fd_limit.rs`, restored for tasks); the shim found
//! beside the running executable (`process.rs`); one-time warnings and registrations
//! (`process.rs`, `actor.rs`); and a thread's child stack for `clone` (`exec.rs`, per
//! thread). Everything an owner keeps for its launches is in its [`Executor`].

pub mod actor;
pub mod cgroup;
pub mod entry;
mod exec;
pub mod executor;
pub mod fd_limit;
pub mod host;
pub mod keeper;
pub mod launcher;
pub mod logs;
pub mod process;
pub mod procfs;
pub mod sandbox;
pub mod shim;
mod shim_link;
pub mod spec;
pub mod stdin;
pub mod warm;

pub use actor::{ProcessActor, ProcessMsg, process_child};
pub use entry::main_if_shim;
pub use executor::Executor;
pub use process::{Checkpoint, Process, ProcessStats, StartError, TaskContext};
pub use spec::{ExitReason, LogPolicy, ProcessSpec, Resources, StdinMode};
