//! The allocation engine: pure and deterministic (no I/O, no clock reads; time is an
//! input).
//! * [`sorter`]: DRF over a tree of roles and frameworks.
//! * [`engine`]: the offer cycle: DRF between roles then frameworks, quota guarantees and
//!   limits, static reservations, decline filters, suppress and revive, recovery, agents
//!   leaving, and why a framework got nothing. Offer timeouts come with the rest of the
//!   cluster core.

pub mod engine;
pub mod sorter;

pub use engine::{Engine, NotOffered, Offer};
pub use sorter::Sorter;

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
}
