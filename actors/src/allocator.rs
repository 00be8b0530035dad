//! The allocation engine: pure and deterministic (no I/O, no clock reads; time is an
//! input).
//! * [`sorter`]: ordering a tree of roles and frameworks: DRF, or a [`SortPolicy`] of the
//!   user's choosing.
//! * [`engine`]: the offer cycle: DRF between roles then frameworks, quota guarantees and
//!   limits, static reservations, decline filters, suppress and revive, recovery, agents
//!   leaving, and why a framework got nothing. Offers get ids, timeouts and
//!   rescinds in the master core, which owns them.

pub mod engine;
pub mod sorter;

pub use engine::{Engine, NotOffered, Offer};
pub use sorter::{Drf, SortPolicy, Sorter, Standing};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Resources;

    /// The example of the DRF paper (Ghodsi et al., NSDI 2011): 9 cpus and 18 GB; user A
    /// runs tasks of <1 cpu, 4 GB>, user B tasks of <3 cpus, 1 GB>. Progressive filling by
    /// DRF gives A three tasks and B two, equalising their dominant shares at 2/3.
    #[test]
    fn drf_paper_example() {
        let mut sorter = Sorter::new();
        sorter.add_agent("s1".into(), Resources::new(9.0, 18.0 * 1024.0));
        let demand = [
            ("f1", Resources::new(1.0, 4.0 * 1024.0)),
            ("f2", Resources::new(3.0, 1024.0)),
        ];
        for (f, _) in &demand {
            sorter.add(f);
            sorter.activate(f);
        }
        let mut free = sorter.total();
        let mut tasks = std::collections::BTreeMap::new();
        // Offer to the client with the lowest share whose next task still fits.
        'filling: loop {
            for client in sorter.sort() {
                let need = demand.iter().find(|(f, _)| *f == client).unwrap().1;
                if free.contains(&need) {
                    free = free.minus(need);
                    sorter.allocated(&client, need);
                    *tasks.entry(client).or_insert(0) += 1;
                    continue 'filling;
                }
            }
            break;
        }
        assert_eq!(tasks["f1"], 3);
        assert_eq!(tasks["f2"], 2);
        assert!((sorter.share("f1") - 2.0 / 3.0).abs() < 1e-9);
        assert!((sorter.share("f2") - 2.0 / 3.0).abs() < 1e-9);
    }

    /// A policy of the user's: frameworks in reverse name order, whatever they hold.
    #[derive(Debug)]
    struct ReverseNames;

    impl SortPolicy for ReverseNames {
        fn order(&self, a: &Standing<'_>, b: &Standing<'_>) -> std::cmp::Ordering {
            b.name.cmp(a.name)
        }
    }

    #[test]
    fn a_sort_policy_of_the_users_replaces_drf() {
        let setup = |mut engine: Engine| {
            engine.add_agent("a1".into(), Resources::new(1.0, 512.0));
            engine.add_agent("a2".into(), Resources::new(1.0, 512.0));
            for fw in ["f1", "f2"] {
                engine.add_framework(fw.into(), "*");
            }
            engine
        };
        // DRF: each framework gets one agent.
        let mut drf = setup(Engine::new());
        let offers = drf.allocate(std::time::Duration::ZERO);
        let to: std::collections::BTreeSet<_> =
            offers.iter().map(|o| o.framework.0.clone()).collect();
        assert_eq!(to.len(), 2, "{offers:?}");
        // Reverse names: f2 comes first every time, and gets both agents.
        let mut reverse = setup(Engine::with_policy(std::sync::Arc::new(ReverseNames)));
        let offers = reverse.allocate(std::time::Duration::ZERO);
        assert_eq!(offers.len(), 2);
        assert!(offers.iter().all(|o| o.framework.0 == "f2"), "{offers:?}");
    }
}
