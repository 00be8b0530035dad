//! Tests of the DRF sorter, ported from Mesos' `src/tests/sorter_tests.cpp` (same names in
//! snake case, same steps and expected orders).

use super::*;

fn r(cpus: f64, mem: f64) -> Resources {
    Resources::new(cpus, mem)
}

fn add(sorter: &mut Sorter, client: &str, allocation: Resources) {
    sorter.add(client);
    sorter.activate(client);
    sorter.allocated(client, allocation);
}

#[test]
fn drf() {
    let mut sorter = Sorter::new();
    let agent: AgentId = "agentId".into();
    sorter.add_agent(agent.clone(), r(100.0, 100.0));
    assert!(sorter.sort().is_empty());

    add(&mut sorter, "a", r(5.0, 5.0));
    add(&mut sorter, "b", r(6.0, 6.0));
    // shares: a = .05, b = .06
    assert_eq!(sorter.sort(), ["a", "b"]);

    add(&mut sorter, "c", r(1.0, 1.0));
    add(&mut sorter, "d", r(3.0, 1.0));
    // shares: a = .05, b = .06, c = .01, d = .03
    assert_eq!(sorter.sort(), ["c", "d", "a", "b"]);

    sorter.remove("a");
    sorter.unallocated("b", r(4.0, 4.0));
    // shares: b = .02, c = .01, d = .03
    assert_eq!(sorter.sort(), ["c", "b", "d"]);

    add(&mut sorter, "e", r(1.0, 5.0));
    // The agent loses 50 cpus: the total is cpus 50, mem 100.
    sorter.add_agent(agent.clone(), r(50.0, 100.0));
    // shares: b = .04, c = .02, d = .06, e = .05
    assert_eq!(sorter.sort(), ["c", "b", "e", "d"]);

    // The agent gains 100 mem: the total is cpus 50, mem 200.
    sorter.add_agent(agent, r(50.0, 200.0));
    add(&mut sorter, "f", r(5.0, 1.0));
    sorter.allocated("c", r(0.0, 15.0));
    // shares: b = .04, c = .08, d = .06, e = .025, f = .1
    assert_eq!(sorter.sort(), ["e", "b", "d", "c", "f"]);

    assert!(sorter.contains("b"));
    assert!(!sorter.contains("a"));
    sorter.deactivate("d");
    assert!(sorter.contains("d"));
    assert_eq!(sorter.sort(), ["e", "b", "c", "f"]);
    sorter.activate("d");
    assert_eq!(sorter.sort(), ["e", "b", "d", "c", "f"]);
}
