//! What a task's run leaves for its next: the emptied cgroup and the idle shim.
//!
//! A supervised process is started again after each exit; the run it replaces leaves it
//! two things that cost most of a restart to make again. Its cgroup (five directories on
//! a v1 host, with their limits, about a fifth of a restart), as systemd keeps a service's
//! across its restarts; and its shim, which after its task's exit waits for the next run's
//! plan instead of exiting, so that a restart is a line on a socket and the shim's start of
//! the task, not a launcher's fork of a new shim and that shim's setup (about a quarter).
//!
//! A [`RunKeeper`] holds both for [`KEEP_FOR`]; what is not taken by then is let go (the
//! cgroup removed, the shim's socket closed, on which it exits), and so is what is kept
//! when the last clone of the keeper goes (its supervisor stopped). A new run of the same
//! task from elsewhere (another supervisor) claims a kept cgroup of its path, and the
//! keeper then leaves it alone.
//!
//! The spares and the table of kept cgroups are the owner's ([`Shared`], in its
//! [`crate::Executor`]): two owners in one process share nothing.
//!
//! A shim that no next run of its task is waiting for (the task is not supervised, its
//! keeper let it go, or its cgroup could not be emptied) is a spare: any launch from this
//! process with the same shim program takes it (`take_spare`) before the launcher forks a
//! new one, so that a launch is, like a restart, a line on a socket. At most
//! [`SPARE_SHIMS`] are kept per program; one more is let go (it exits).
//!
//! On v1 a run's cpu time and memory peak are its own (reset when the cgroup is taken
//! again); on v2 both go on from the earlier runs. An OOM kill counts only when it happened
//! in this run (the kernel's counter cannot be reset).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cgroup::TaskCgroup;
use crate::launcher::ShimCommand;
use crate::shim_link::IdleShim;
use crate::spec::Resources;

/// How long a [`RunKeeper`] keeps what a run left for the next.
pub const KEEP_FOR: Duration = Duration::from_secs(1);

/// The most spare shims kept per shim program.
pub const SPARE_SHIMS: usize = 8;

/// What an owner's keepers share (part of its [`crate::Executor`]): the spare shims, and
/// the table of kept cgroups.
#[derive(Default)]
pub(crate) struct Shared {
    /// The spare shims, the most recently used last.
    spares: Mutex<Vec<IdleShim>>,
    /// The cgroups kept now, by path, with the token of their keep: one table for the
    /// owner, so that a run that makes the cgroup of a kept path anew claims it
    /// ([`Shared::claim`]), and its keeper's expiry cannot remove it under the new run.
    kept: Mutex<BTreeMap<String, u64>>,
    next_keep: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("spares", &self.spares().len())
            .field("kept", &self.kept_paths().len())
            .finish()
    }
}

impl Shared {
    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<IdleShim>> {
        self.spares.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `shim` for any launch with its program, unless [`SPARE_SHIMS`] of that
    /// program are kept already (then it is let go, and exits).
    pub(crate) fn spare(&self, shim: IdleShim) {
        let mut spares = self.spares();
        let same = spares.iter().filter(|s| s.command == shim.command).count();
        if same < SPARE_SHIMS {
            spares.push(shim);
            return;
        }
        drop(spares);
        drop(shim);
    }

    /// A spare shim of program `command`, the most recently used.
    pub(crate) fn take_spare(&self, command: &ShimCommand) -> Option<IdleShim> {
        let mut spares = self.spares();
        let at = spares.iter().rposition(|s| s.command == *command)?;
        Some(spares.remove(at))
    }

    /// How many spare shims are kept now.
    pub(crate) fn spare_shims(&self) -> usize {
        self.spares().len()
    }

    fn kept_paths(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the cgroup of `path` for a new run, if a keeper kept it: that keeper leaves
    /// it.
    pub(crate) fn claim(&self, path: &str) {
        self.kept_paths().remove(path);
    }

    /// Removes `cgroup` (empty since it was kept) if its keep `token` still holds.
    fn release(&self, cgroup: &TaskCgroup, token: u64) {
        let mut kept = self.kept_paths();
        if kept.get(cgroup.path()) == Some(&token) {
            kept.remove(cgroup.path());
            // Under the table's lock: a new run of the path waits to make it until it is
            // gone.
            cgroup.remove_empty();
        }
    }
}

/// Keeps a task's emptied cgroup and idle shim between one run and the next (see the
/// module's documentation). A supervised process child has one (see
/// [`crate::actor::process_child`]).
#[derive(Debug, Clone)]
pub struct RunKeeper {
    kept: Arc<Mutex<Kept>>,
}

struct Kept {
    /// The owner's spare shims and table of kept cgroups.
    shared: Arc<Shared>,
    /// The cgroup, the limits it has, and the token of its keep in the owner's table.
    cgroup: Option<(Arc<TaskCgroup>, Resources, u64)>,
    /// The shim, waiting for a plan.
    shim: Option<IdleShim>,
    /// The latest keep's token: an expiry lets go only of what its own keep kept.
    token: u64,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("cgroup", &self.cgroup.as_ref().map(|(cg, _, _)| cg.path()))
            .field("shim", &self.shim.is_some())
            .finish()
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some((cgroup, _, token)) = self.cgroup.take() {
            self.shared.release(&cgroup, token);
        }
        if let Some(shim) = self.shim.take() {
            self.shared.spare(shim);
        }
    }
}

impl RunKeeper {
    /// A keeper with nothing kept, sharing its owner's spares and table.
    pub(crate) fn new(shared: Arc<Shared>) -> RunKeeper {
        RunKeeper {
            kept: Arc::new(Mutex::new(Kept {
                shared,
                cgroup: None,
                shim: None,
                token: 0,
            })),
        }
    }

    fn shared(&self) -> Arc<Shared> {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shared
            .clone()
    }

    /// Keeps `cgroup` (emptied, with the limits it has) and `shim` for [`KEEP_FOR`],
    /// letting go of whatever an earlier run left and no run took.
    pub(crate) fn keep(
        &self,
        cgroup: Option<(Arc<TaskCgroup>, Resources)>,
        shim: Option<IdleShim>,
    ) {
        let shared = self.shared();
        let token = shared.next_keep.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some((cg, _)) = &cgroup {
            shared.kept_paths().insert(cg.path().to_string(), token);
        }
        let (earlier_cgroup, earlier_shim) = {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            kept.token = token;
            (
                std::mem::replace(&mut kept.cgroup, cgroup.map(|(cg, r)| (cg, r, token))),
                std::mem::replace(&mut kept.shim, shim),
            )
        };
        if let Some((earlier, _, earlier_token)) = earlier_cgroup {
            // Kept and never taken: released, unless it is the same path (kept anew above).
            shared.release(&earlier, earlier_token);
        }
        if let Some(shim) = earlier_shim {
            shared.spare(shim);
        }
        let keeper = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_FOR).await;
            let (cgroup, shim) = {
                let mut kept = keeper.kept.lock().unwrap_or_else(|p| p.into_inner());
                if kept.token != token {
                    return;
                }
                (kept.cgroup.take(), kept.shim.take())
            };
            if let Some((cgroup, _, token)) = cgroup {
                shared.release(&cgroup, token);
            }
            if let Some(shim) = shim {
                shared.spare(shim);
            }
        });
    }

    /// The kept cgroup, if it is still there and still this keeper's, set to `resources`,
    /// its stats reset.
    pub(crate) fn take_cgroup(&self, resources: &Resources) -> Option<Arc<TaskCgroup>> {
        let (shared, (cgroup, limits, token)) = {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            (kept.shared.clone(), kept.cgroup.take()?)
        };
        {
            let mut kept = shared.kept_paths();
            if kept.get(cgroup.path()) != Some(&token) {
                // Claimed by a new run from elsewhere: not ours to use or remove.
                return None;
            }
            kept.remove(cgroup.path());
        }
        if !cgroup.is_there_and_empty() {
            // Removed under it, or somehow not empty: not for a new run.
            cgroup.remove_empty();
            return None;
        }
        // An earlier run's limits go first: `apply` leaves alone what it is not given.
        if limits != *resources && (!cgroup.reset_limits() || cgroup.apply(resources).is_err()) {
            cgroup.remove_empty();
            return None;
        }
        cgroup.reset_stats();
        Some(cgroup)
    }

    /// The kept shim, waiting for the next run's plan.
    pub(crate) fn take_shim(&self) -> Option<IdleShim> {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shim
            .take()
    }
}
