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
