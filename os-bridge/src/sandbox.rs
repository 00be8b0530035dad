//! The layout of a task's sandbox: where its records and its logs are. A leaf: what makes
//! sandboxes (a launch, the warm pools) and what reads them agree through it.
//!
//! ```text
//! <root>/<task>/
//!     .troupe/        the status directory: the shim's and the owner's records
//!     stdout.log  stderr.log
//! ```

use std::path::{Path, PathBuf};

/// The status directory of a sandbox (see `TaskContext::status_dir`).
pub fn status_dir_in(sandbox: &Path) -> PathBuf {
    sandbox.join(".troupe")
}

/// The log files of a sandbox.
pub fn log_paths(sandbox: &Path) -> (PathBuf, PathBuf) {
    (sandbox.join("stdout.log"), sandbox.join("stderr.log"))
}
