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

#[test]
fn wdrf() {
    let mut sorter = Sorter::new();
    sorter.add_agent("agentId".into(), r(100.0, 100.0));
    add(&mut sorter, "a", r(5.0, 5.0));
    sorter.add("b");
    sorter.activate("b");
    sorter.update_weight("b", 2.0);
    sorter.allocated("b", r(6.0, 6.0));
    // shares: a = .05, b = .06 / 2 = .03
    assert_eq!(sorter.sort(), ["b", "a"]);
    add(&mut sorter, "c", r(4.0, 4.0));
    // shares: b = .03, c = .04, a = .05
    assert_eq!(sorter.sort(), ["b", "c", "a"]);
    sorter.add("d");
    sorter.activate("d");
    sorter.update_weight("d", 10.0);
    sorter.allocated("d", r(10.0, 20.0));
    // shares: d = .2 / 10 = .02, b = .03, c = .04, a = .05
    assert_eq!(sorter.sort(), ["d", "b", "c", "a"]);
    sorter.remove("b");
    assert_eq!(sorter.sort(), ["d", "c", "a"]);
    sorter.allocated("d", r(10.0, 25.0));
    // shares: c = .04, d = .45 / 10 = .045, a = .05
    assert_eq!(sorter.sort(), ["c", "d", "a"]);
    sorter.add("e");
    sorter.activate("e");
    sorter.update_weight("e", 0.1);
    sorter.allocated("e", r(1.0, 1.0));
    // shares: e = .01 / .1 = .1
    assert_eq!(sorter.sort(), ["c", "d", "a", "e"]);
    sorter.remove("a");
    assert_eq!(sorter.sort(), ["c", "d", "e"]);
}

#[test]
fn allocation_count_tie_break() {
    let mut sorter = Sorter::new();
    sorter.add_agent("agentId".into(), r(100.0, 100.0));
    for c in ["a", "b", "c", "d", "e"] {
        sorter.add(c);
        sorter.activate(c);
    }
    sorter.allocated("a", r(3.0, 3.0));
    sorter.allocated("b", r(3.0, 3.0));
    for _ in 0..3 {
        sorter.allocated("c", r(1.0, 1.0));
    }
    sorter.allocated("d", r(2.0, 2.0));
    sorter.allocated("d", r(1.0, 1.0));
    sorter.allocated("e", r(3.0, 3.0));
    // Equal shares (.03): by allocation count (a, b, e: 1; d: 2; c: 3), then by name.
    assert_eq!(sorter.sort(), ["a", "b", "e", "d", "c"]);
    // c gives everything back: share 0, count still 3.
    sorter.unallocated("c", r(3.0, 3.0));
    assert_eq!(sorter.sort(), ["c", "a", "b", "e", "d"]);
    sorter.allocated("c", r(3.0, 3.0));
    assert_eq!(sorter.sort(), ["a", "b", "e", "d", "c"]);
    // Deactivating and reactivating does not reset the count.
    sorter.deactivate("c");
    sorter.activate("c");
    assert_eq!(sorter.sort(), ["a", "b", "e", "d", "c"]);
    sorter.unallocated("c", r(3.0, 3.0));
    sorter.allocated("c", r(3.0, 3.0));
    assert_eq!(sorter.sort(), ["a", "b", "e", "d", "c"]);
    // An inactive client still counts its allocations.
    sorter.deactivate("a");
    sorter.unallocated("a", r(1.0, 3.0));
    sorter.allocated("a", r(1.0, 3.0));
    assert_eq!(sorter.sort(), ["b", "e", "d", "c"]);
    sorter.activate("a");
    // a and d tie on share (.03) and count (2): by name.
    assert_eq!(sorter.sort(), ["b", "e", "a", "d", "c"]);
}

#[test]
fn hierarchical_allocation() {
    let mut sorter = Sorter::new();
    sorter.add_agent("agentId".into(), r(100.0, 100.0));
    for c in ["a", "b/c", "b/d"] {
        sorter.add(c);
        sorter.activate(c);
    }
    assert_eq!(sorter.count(), 3);
    assert!(sorter.contains("a") && !sorter.contains("b"));
    assert!(sorter.contains("b/c") && sorter.contains("b/d"));
    assert_eq!(sorter.sort(), ["a", "b/c", "b/d"]);
    sorter.allocated("a", r(6.0, 6.0));
    assert_eq!(sorter.sort(), ["b/c", "b/d", "a"]);
    sorter.allocated("b/c", r(4.0, 4.0));
    sorter.allocated("b/d", r(3.0, 3.0));
    // b holds .07 > a's .06; inside b, b/d (.03) before b/c (.04).
    assert_eq!(sorter.sort(), ["a", "b/d", "b/c"]);
    assert_eq!(sorter.allocation("a"), r(6.0, 6.0));
    assert_eq!(sorter.allocation("b/c"), r(4.0, 4.0));
    assert_eq!(sorter.allocation("b/d"), r(3.0, 3.0));
    assert_eq!(sorter.allocation("b"), r(7.0, 7.0));
    sorter.allocated("a", r(2.0, 2.0));
    assert_eq!(sorter.sort(), ["b/d", "b/c", "a"]);
    sorter.add("b/e/f");
    sorter.activate("b/e/f");
    assert!(!sorter.contains("b/e") && sorter.contains("b/e/f"));
    assert_eq!(sorter.sort(), ["b/e/f", "b/d", "b/c", "a"]);
    sorter.allocated("b/e/f", r(3.5, 3.5));
    // b = .105 > a = .08; inside b: d .03, e .035, c .04.
    assert_eq!(sorter.sort(), ["a", "b/d", "b/e/f", "b/c"]);
    sorter.remove("b/e/f");
    assert!(!sorter.contains("b/e/f"));
    assert_eq!(sorter.count(), 3);
    assert_eq!(sorter.sort(), ["b/d", "b/c", "a"]);
    sorter.update("b/c", r(4.0, 4.0), r(1.0, 1.0));
    assert_eq!(sorter.sort(), ["b/c", "b/d", "a"]);
    sorter.add("b/e/f");
    sorter.activate("b/e/f");
    sorter.allocated("b/e/f", r(3.5, 3.5));
    // b = .075 < a = .08; inside b: c .01, d .03, e/f .035.
    assert_eq!(sorter.sort(), ["b/c", "b/d", "b/e/f", "a"]);
    assert_eq!(sorter.count(), 4);
}

#[test]
fn update_total() {
    let mut sorter = Sorter::new();
    for c in ["a", "b"] {
        sorter.add(c);
        sorter.activate(c);
    }
    sorter.add_agent("agentId".into(), r(10.0, 100.0));
    sorter.allocated("a", r(2.0, 1.0));
    sorter.allocated("b", r(1.0, 2.0));
    // shares: a = .2 (cpus), b = .1 (cpus)
    assert_eq!(sorter.sort(), ["b", "a"]);
    sorter.remove_agent(&"agentId".into());
    sorter.add_agent("agentId".into(), r(100.0, 10.0));
    // shares: a = .1 (mem), b = .2 (mem)
    assert_eq!(sorter.sort(), ["a", "b"]);
}

/// A path that is both a client and a parent is sorted as a virtual child `.` with weight
/// 1, while the path's weight applies to its whole subtree (Mesos' ChangeWeightOnSubtree,
/// without its step that depends on floating-point rounding).
#[test]
fn a_client_with_children_is_a_virtual_leaf() {
    let mut sorter = Sorter::new();
    sorter.add_agent("agentId".into(), r(100.0, 100.0));
    sorter.update_weight("b", 3.0);
    sorter.update_weight("a", 2.0);
    for c in ["a/x", "b/y"] {
        sorter.add(c);
        sorter.activate(c);
    }
    assert_eq!(sorter.sort(), ["a/x", "b/y"]);
    sorter.allocated("a/x", r(10.0, 10.0));
    sorter.allocated("b/y", r(10.0, 10.0));
    assert_eq!(sorter.sort(), ["b/y", "a/x"]);
    sorter.add("b/z");
    sorter.activate("b/z");
    sorter.allocated("b/z", r(5.0, 5.0));
    sorter.add("b");
    sorter.activate("b");
    sorter.allocated("b", r(4.0, 4.0));
    // b = .19 / 3 ≈ .063 > a = .05; inside b: b itself .04, z .05, y .1.
    assert_eq!(sorter.sort(), ["a/x", "b", "b/z", "b/y"]);
    sorter.add("a/zz");
    sorter.activate("a/zz");
    sorter.allocated("a/zz", r(2.0, 2.0));
    assert_eq!(sorter.sort(), ["a/zz", "a/x", "b", "b/z", "b/y"]);
}
