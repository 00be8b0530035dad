//! Exit codes shared by every `troupe` command, so that scripts can tell failures apart.
//! They are listed in `docs/cli.md`.

/// Success.
pub(crate) const OK: u8 = 0;
/// Any failure without a code of its own (bad arguments, I/O errors).
pub(crate) const FAILURE: u8 = 1;
/// Nothing listens at the address, or the node is unreachable.
pub(crate) const UNREACHABLE: u8 = 2;
/// The peer refused our cookie (or we refused its).
pub(crate) const COOKIE_REFUSED: u8 = 3;
/// The peer did not answer in time.
pub(crate) const TIMEOUT: u8 = 4;
/// The command line is wrong: an unknown flag, a missing argument, a value out of range
/// (sysexits' EX_USAGE).
pub(crate) const USAGE: u8 = 64;
/// `troupe apply`, `troupe diff`: the file is not a valid spec (sysexits' EX_DATAERR).
pub(crate) const INVALID_SPEC: u8 = 65;
/// `troupe apply --dry-run`, `troupe diff`: the spec would change what runs (as `diff`
/// exits 1 when files differ).
pub(crate) const WOULD_CHANGE: u8 = 1;
/// `troupe run`: the task was refused, dropped, or lost with its agent (like `docker run`'s
/// 125: the task's own code is unknown).
pub(crate) const TASK_NOT_RUN: u8 = 125;
/// `troupe run`: the command could not be started (not found, not executable).
pub(crate) const TASK_FAILED_TO_START: u8 = 127;
/// `troupe run`: the task was killed by signal N: 128 + N, as a shell reports it.
pub(crate) const SIGNAL_BASE: u8 = 128;
/// `troupe run`: the task was killed for exceeding its memory limit (128 + SIGKILL).
pub(crate) const TASK_OOM: u8 = SIGNAL_BASE + 9;
/// `troupe run`: the task was killed on request (128 + SIGTERM).
pub(crate) const TASK_KILLED: u8 = SIGNAL_BASE + 15;
