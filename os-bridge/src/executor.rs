//! The executor: everything one owner of tasks (an agent, a test, an application) keeps
//! for all its launches, as one value it makes and hands down in every
//! [`crate::TaskContext`], instead of process-wide state.
//!
//! ```text
//! Executor (cheap to clone: one Arc)
//! ├── launchers      one per shim program, forking shims    (launcher.rs)
//! ├── keepers' share spare shims, the table of kept cgroups  (keeper.rs)
//! └── warm pools     sandboxes per root, cgroups per agent,
//!                    and their filler thread                 (warm.rs)
//! ```
//!
//! Two executors in one process share nothing: each has its own launchers, spares, kept
//! cgroups and pools. Everything goes when the last clone of an executor (and of the
//! contexts and keepers holding it) goes: the launchers stop, spare shims exit, the filler
//! thread ends. Warm sandboxes and cgroups are removed by [`Executor::drain`] (an owner
//! stopping), or by the next owner of the same root or agent once this process is gone.

use std::path::Path;
use std::sync::Arc;

use crate::keeper::{self, RunKeeper};
use crate::launcher::Launchers;
use crate::warm::{self, WarmPools};

/// An owner's launch machinery (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct Executor {
    parts: Arc<Parts>,
}

#[derive(Debug, Default)]
struct Parts {
    launchers: Arc<Launchers>,
    keepers: Arc<keeper::Shared>,
    warm: WarmPools,
}

impl Executor {
    /// A new executor, sharing nothing with any other.
    pub fn new() -> Executor {
        Executor::default()
    }

    /// The launchers, for starting shims.
    pub(crate) fn launchers(&self) -> &Arc<Launchers> {
        &self.parts.launchers
    }

    /// What keepers share: spare shims and the table of kept cgroups.
    pub(crate) fn keepers(&self) -> &keeper::Shared {
        &self.parts.keepers
    }

    /// A new keeper of one task's runs.
    pub(crate) fn keeper(&self) -> RunKeeper {
        RunKeeper::new(self.parts.keepers.clone())
    }

    /// The warm pools.
    pub(crate) fn warm(&self) -> &WarmPools {
        &self.parts.warm
    }

    /// Removes the warm sandboxes of `root` and the warm cgroups of `agent` that this
    /// executor made, waiting for a pool being filled (an owner stopping, a test cleaning
    /// up). Blocks.
    pub fn drain(&self, root: &Path, agent: &str) {
        warm::drain(&self.parts.warm, root, agent);
    }

    /// How many warm sandboxes of `root` and warm cgroups of `agent` are ready (for tests
    /// and diagnostics).
    pub fn warm_ready(&self, root: &Path, agent: &str) -> (usize, usize) {
        warm::ready(&self.parts.warm, root, agent)
    }

    /// How many spare shims it keeps now (for tests and diagnostics).
    pub fn spare_shims(&self) -> usize {
        self.parts.keepers.spare_shims()
    }

    /// Whether `other` is this executor (a clone of it).
    pub fn same_as(&self, other: &Executor) -> bool {
        Arc::ptr_eq(&self.parts, &other.parts)
    }
}
