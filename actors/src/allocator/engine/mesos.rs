//! Mesos' allocator tests (`src/tests/hierarchical_allocator_tests.cpp`), ported with the
//! same names in snake case, asserting the same allocations.
//!
//! Differences of form: Mesos runs a cycle on events and on a timer; here each step calls
//! [`Engine::allocate`] with the test's time. Mesos hands one framework everything it got
//! in a cycle in one callback; here offers come per agent and pool, and the tests add them
//! up per framework. Agents here are visited in id order (Mesos shuffles them; the tests do
//! not depend on it).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn r(cpus: f64, mem: f64) -> Resources {
    Resources::new(cpus, mem)
}

fn rd(cpus: f64, mem: f64, disk: f64) -> Resources {
    Resources {
        cpus,
        mem_mib: mem,
        disk_mib: disk,
    }
}

fn t(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// What each framework got, per agent.
fn got(offers: &[Offer]) -> BTreeMap<String, BTreeMap<String, Resources>> {
    let mut out: BTreeMap<String, BTreeMap<String, Resources>> = BTreeMap::new();
    for o in offers {
        let agents = out.entry(o.framework.0.clone()).or_default();
        let held = agents.entry(o.agent.0.clone()).or_default();
        *held = held.plus(o.resources);
    }
    out
}

/// Exactly one framework got exactly one agent's `resources`.
fn only(offers: &[Offer], framework: &str, agent: &str, resources: Resources) {
    let got = got(offers);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[framework].len(), 1, "{got:?}");
    assert_eq!(got[framework][agent], resources, "{got:?}");
}

fn engine() -> Engine {
    let mut e = Engine::new();
    e.set_allocation_interval(t(1));
    e
}

fn recover_all(e: &mut Engine, offers: &[Offer]) {
    for o in offers {
        e.recover(
            &o.framework,
            &o.agent,
            o.resources,
            o.reservation.as_deref(),
        );
    }
}

#[test]
fn unreserved_drf() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(2.0, 1024.0));
    e.add_framework("framework1".into(), "role1");
    only(&e.allocate(t(0)), "framework1", "agent1", r(2.0, 1024.0));
    e.add_framework("framework2".into(), "role2");
    assert!(e.allocate(t(0)).is_empty());
    e.add_agent("agent2".into(), r(1.0, 512.0));
    only(&e.allocate(t(0)), "framework2", "agent2", r(1.0, 512.0));
    e.add_agent("agent3".into(), r(3.0, 2048.0));
    only(&e.allocate(t(0)), "framework2", "agent3", r(3.0, 2048.0));
    e.add_framework("framework3".into(), "role1");
    e.add_agent("agent4".into(), r(4.0, 4096.0));
    only(&e.allocate(t(0)), "framework3", "agent4", r(4.0, 4096.0));
    // framework4's own share is 0, but its role's is higher than role2's.
    e.add_framework("framework4".into(), "role1");
    e.add_agent("agent5".into(), r(1.0, 512.0));
    only(&e.allocate(t(0)), "framework2", "agent5", r(1.0, 512.0));
}

#[test]
fn reserved_drf() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(101.0, 1536.0));
    assert!(e.reserve(&"agent1".into(), "role1", r(100.0, 1024.0)));
    e.add_framework("framework1".into(), "role1");
    only(&e.allocate(t(0)), "framework1", "agent1", r(101.0, 1536.0));
    e.add_framework("framework2".into(), "role2");
    e.add_agent("agent2".into(), r(2.0, 512.0));
    only(&e.allocate(t(0)), "framework2", "agent2", r(2.0, 512.0));
    e.add_agent("agent3".into(), r(2.0, 512.0));
    only(&e.allocate(t(0)), "framework2", "agent3", r(2.0, 512.0));
    e.add_framework("framework3".into(), "role1");
    e.add_agent("agent4".into(), r(2.0, 1024.0));
    assert!(e.reserve(&"agent4".into(), "role1", r(2.0, 1024.0)));
    let offers = e.allocate(t(0));
    only(&offers, "framework3", "agent4", r(2.0, 1024.0));
    assert_eq!(offers[0].reservation.as_deref(), Some("role1"));
}

#[test]
fn nested_role_drf() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(2.0, 1024.0));
    e.add_framework("framework1".into(), "a/b");
    only(&e.allocate(t(0)), "framework1", "agent1", r(2.0, 1024.0));
    e.add_framework("framework2".into(), "a/c");
    e.add_framework("framework3".into(), "d/e");
    e.add_agent("agent2".into(), r(1.0, 512.0));
    only(&e.allocate(t(0)), "framework3", "agent2", r(1.0, 512.0));
    e.add_framework("framework4".into(), "d/f");
    e.add_agent("agent3".into(), r(2.0, 1024.0));
    only(&e.allocate(t(0)), "framework4", "agent3", r(2.0, 1024.0));
}

#[test]
fn offer_filter() {
    let mut e = engine();
    e.add_framework("framework1".into(), "role");
    e.add_agent("agent1".into(), r(1.0, 512.0));
    let offers = e.allocate(t(0));
    only(&offers, "framework1", "agent1", r(1.0, 512.0));
    e.decline(&offers[0], t(2), t(0));
    assert!(e.allocate(t(1)).is_empty(), "filtered for two intervals");
    only(&e.allocate(t(2)), "framework1", "agent1", r(1.0, 512.0));
}

/// MESOS-4302: a filter shorter than the allocation interval lasts one interval. (Mesos
/// checks it at the cycle where the filter expires; here, just before.)
#[test]
fn small_offer_filter_timeout() {
    let mut e = engine();
    e.set_allocation_interval(t(60));
    e.add_framework("framework1".into(), "role");
    e.add_framework("framework2".into(), "role");
    e.add_agent("agent1".into(), r(1.0, 512.0));
    e.track_used(&"framework1".into(), &"agent1".into(), r(1.0, 512.0), None);
    assert!(e.allocate(t(0)).is_empty());
    e.add_agent("agent2".into(), r(1.0, 512.0));
    let offers = e.allocate(t(0));
    only(&offers, "framework2", "agent2", r(1.0, 512.0));
    e.decline(&offers[0], t(1), t(0));
    let offers = e.allocate(t(59));
    only(&offers, "framework1", "agent2", r(1.0, 512.0));
    // framework1 declines without a filter; framework2's has expired.
    e.decline(&offers[0], Duration::ZERO, t(59));
    only(&e.allocate(t(120)), "framework2", "agent2", r(1.0, 512.0));
}

#[test]
fn coarse_grained() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(2.0, 1024.0));
    e.add_agent("agent2".into(), r(2.0, 1024.0));
    e.add_framework("framework1".into(), "role1");
    let offers = e.allocate(t(0));
    let got1 = got(&offers);
    assert_eq!(got1.len(), 1);
    assert_eq!(
        got1["framework1"].len(),
        2,
        "one framework takes both agents"
    );
    recover_all(&mut e, &offers);
    e.add_framework("framework2".into(), "role2");
    let got2 = got(&e.allocate(t(0)));
    for fw in ["framework1", "framework2"] {
        assert_eq!(got2[fw].len(), 1, "{got2:?}");
        assert_eq!(got2[fw].values().next(), Some(&r(2.0, 1024.0)));
    }
}

#[test]
fn same_share_fairness() {
    let mut e = engine();
    e.add_framework("framework1".into(), "*");
    e.add_framework("framework2".into(), "*");
    e.add_agent("agent1".into(), r(2.0, 1024.0));
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for round in 0..10 {
        let offers = e.allocate(t(round));
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].resources, r(2.0, 1024.0));
        *counts.entry(offers[0].framework.0.clone()).or_default() += 1;
        recover_all(&mut e, &offers);
    }
    assert_eq!(counts["framework1"], 5);
    assert_eq!(counts["framework2"], 5);
}

#[test]
fn reservations() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(2.0, 1024.0));
    e.reserve(&"agent1".into(), "role1", r(2.0, 1024.0));
    e.add_agent("agent2".into(), r(3.0, 2048.0));
    e.reserve(&"agent2".into(), "role2", r(2.0, 1024.0));
    e.add_agent("agent3".into(), r(1.0, 1024.0));
    e.reserve(&"agent3".into(), "role3", r(1.0, 1024.0));
    e.add_framework("framework1".into(), "role1");
    let g = got(&e.allocate(t(0)));
    assert_eq!(g.len(), 1);
    assert_eq!(g["framework1"]["agent1"], r(2.0, 1024.0));
    assert_eq!(
        g["framework1"]["agent2"],
        r(1.0, 1024.0),
        "only agent2's unreserved part"
    );
    assert!(!g["framework1"].contains_key("agent3"));
    e.add_framework("framework2".into(), "role2");
    only(&e.allocate(t(0)), "framework2", "agent2", r(2.0, 1024.0));
}

#[test]
fn recover_resources() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(2.0, 400.0));
    e.reserve(&"agent1".into(), "role1", r(1.0, 200.0));
    e.add_framework("framework1".into(), "role1");
    only(&e.allocate(t(0)), "framework1", "agent1", r(2.0, 400.0));
    e.recover(
        &"framework1".into(),
        &"agent1".into(),
        r(1.0, 200.0),
        Some("role1"),
    );
    let offers = e.allocate(t(1));
    only(&offers, "framework1", "agent1", r(1.0, 200.0));
    assert_eq!(offers[0].reservation.as_deref(), Some("role1"));
    e.recover(&"framework1".into(), &"agent1".into(), r(1.0, 200.0), None);
    let offers = e.allocate(t(2));
    only(&offers, "framework1", "agent1", r(1.0, 200.0));
    assert_eq!(offers[0].reservation, None);
}

#[test]
fn remove_slave_recover_resources() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(2.0, 200.0));
    e.add_framework("framework1".into(), "role");
    only(&e.allocate(t(0)), "framework1", "agent1", r(2.0, 200.0));
    e.add_framework("framework2".into(), "role");
    e.add_agent("agent2".into(), r(1.0, 100.0));
    only(&e.allocate(t(0)), "framework2", "agent2", r(1.0, 100.0));
    // Removing the agent alone takes framework1's share away: no recover needed.
    e.remove_agent(&"agent1".into());
    e.add_agent("agent3".into(), r(1.0, 100.0));
    only(&e.allocate(t(0)), "framework1", "agent3", r(1.0, 100.0));
}

/// Mesos' `createQuota(x)`: guarantee and limit both `x`.
fn quota(e: &mut Engine, role: &str, q: Option<Resources>) {
    e.set_quota_guarantee(role, q);
    e.set_quota_limit(role, q);
}

#[test]
fn quota_provides_guarantee() {
    let mut e = engine();
    e.add_framework("framework1".into(), "quota-role");
    quota(&mut e, "quota-role", Some(r(2.0, 1024.0)));
    e.add_framework("framework2".into(), "no-quota-role");
    assert!(e.allocate(t(0)).is_empty());
    e.add_agent("agent1".into(), r(1.0, 512.0));
    only(&e.allocate(t(0)), "framework1", "agent1", r(1.0, 512.0));
    e.add_agent("agent2".into(), r(1.0, 512.0));
    let offers = e.allocate(t(0));
    only(&offers, "framework1", "agent2", r(1.0, 512.0));
    e.decline(&offers[0], t(2), t(0));
    // framework1 is filtered and framework2 is held back by the unmet guarantee.
    assert!(e.allocate(t(1)).is_empty());
    only(&e.allocate(t(2)), "framework1", "agent2", r(1.0, 512.0));
}

#[test]
fn quota_provides_limit() {
    let mut e = engine();
    e.add_framework("framework1".into(), "*");
    e.set_quota_limit("*", Some(rd(0.0, 0.0, 0.0)));
    e.add_agent("agent1".into(), rd(2.0, 1024.0, 1024.0));
    assert!(e.allocate(t(0)).is_empty());
    e.add_framework("framework2".into(), "no-quota-role");
    only(
        &e.allocate(t(0)),
        "framework2",
        "agent1",
        rd(2.0, 1024.0, 1024.0),
    );
    e.set_quota_limit("*", Some(rd(1.0, 512.0, 512.0)));
    e.add_agent("agent2".into(), rd(2.0, 1024.0, 1024.0));
    let g = got(&e.allocate(t(0)));
    assert_eq!(g["framework1"]["agent2"], rd(1.0, 512.0, 512.0));
    assert_eq!(g["framework2"]["agent2"], rd(1.0, 512.0, 512.0));
}

#[test]
fn remove_quota() {
    let mut e = engine();
    quota(&mut e, "quota-role", Some(r(2.0, 1024.0)));
    e.add_framework("framework1".into(), "quota-role");
    e.add_framework("framework2".into(), "no-quota-role");
    for agent in ["agent1", "agent2"] {
        e.add_agent(agent.into(), r(1.0, 512.0));
        e.track_used(&"framework1".into(), &agent.into(), r(1.0, 512.0), None);
    }
    quota(&mut e, "quota-role", None);
    assert!(e.allocate(t(0)).is_empty());
    e.recover(&"framework1".into(), &"agent1".into(), r(1.0, 512.0), None);
    only(&e.allocate(t(1)), "framework2", "agent1", r(1.0, 512.0));
}

#[test]
fn multiple_frameworks_in_role_with_quota() {
    let mut e = engine();
    e.add_framework("framework1a".into(), "quota-role");
    quota(&mut e, "quota-role", Some(r(4.0, 2048.0)));
    e.add_framework("framework2".into(), "no-quota-role");
    e.add_agent("agent1".into(), r(1.0, 512.0));
    only(&e.allocate(t(0)), "framework1a", "agent1", r(1.0, 512.0));
    e.add_framework("framework1b".into(), "quota-role");
    e.add_agent("agent2".into(), r(2.0, 1024.0));
    only(&e.allocate(t(0)), "framework1b", "agent2", r(2.0, 1024.0));
    e.add_agent("agent3".into(), r(1.0, 512.0));
    let offers = e.allocate(t(0));
    only(&offers, "framework1a", "agent3", r(1.0, 512.0));
    e.decline(&offers[0], t(5), t(0));
    only(&e.allocate(t(1)), "framework1b", "agent3", r(1.0, 512.0));
}

#[test]
fn deactivate_and_reactivate_framework() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(2.0, 1024.0));
    e.add_framework("framework1".into(), "role1");
    let offers = e.allocate(t(0));
    only(&offers, "framework1", "agent1", r(2.0, 1024.0));
    recover_all(&mut e, &offers);
    e.suppress(&"framework1".into());
    e.deactivate(&"framework1".into());
    assert!(e.allocate(t(1)).is_empty());
    // Activating does not undo the suppression; reviving does.
    e.activate(&"framework1".into());
    assert!(e.allocate(t(1)).is_empty());
    e.revive(&"framework1".into());
    only(&e.allocate(t(1)), "framework1", "agent1", r(2.0, 1024.0));
}

#[test]
fn suppress_and_revive_offers() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(2.0, 1024.0));
    e.add_framework("framework1".into(), "role1");
    let offers = e.allocate(t(0));
    only(&offers, "framework1", "agent1", r(2.0, 1024.0));
    e.revive(&"framework1".into());
    assert!(
        e.allocate(t(0)).is_empty(),
        "a redundant revive is harmless"
    );
    recover_all(&mut e, &offers);
    e.suppress(&"framework1".into());
    assert!(e.allocate(t(1)).is_empty());
    e.revive(&"framework1".into());
    only(&e.allocate(t(1)), "framework1", "agent1", r(2.0, 1024.0));
}

#[test]
fn update_weight() {
    let single = r(2.0, 1024.0);
    let mut e = engine();
    for i in 1..=6 {
        e.add_agent(format!("agent{i}").as_str().into(), single);
    }
    let sum = |offers: &[Offer], fw: &str| {
        offers
            .iter()
            .filter(|o| o.framework.0 == fw)
            .fold(Resources::ZERO, |t, o| t.plus(o.resources))
    };
    let times = |n: f64| r(2.0 * n, 1024.0 * n);
    e.add_framework("framework1".into(), "role1");
    let offers = e.allocate(t(0));
    assert_eq!(sum(&offers, "framework1"), times(6.0));
    e.add_framework("framework2".into(), "role2");
    recover_all(&mut e, &offers);
    // Weights 1:1.
    let offers = e.allocate(t(1));
    assert_eq!(sum(&offers, "framework1"), times(3.0));
    assert_eq!(sum(&offers, "framework2"), times(3.0));
    recover_all(&mut e, &offers);
    // Weights 1:2.
    e.update_weight("role2", 2.0);
    let offers = e.allocate(t(2));
    assert_eq!(sum(&offers, "framework1"), times(2.0));
    assert_eq!(sum(&offers, "framework2"), times(4.0));
    recover_all(&mut e, &offers);
    // Weights 1:2:3.
    e.update_weight("role3", 3.0);
    e.add_framework("framework3".into(), "role3");
    let offers = e.allocate(t(3));
    assert_eq!(sum(&offers, "framework1"), times(1.0));
    assert_eq!(sum(&offers, "framework2"), times(2.0));
    assert_eq!(sum(&offers, "framework3"), times(3.0));
}

#[test]
fn revive_offers() {
    let mut e = engine();
    e.add_agent("agent1".into(), r(2.0, 1024.0));
    e.add_framework("framework1".into(), "role1");
    let offers = e.allocate(t(0));
    e.decline(&offers[0], t(1000), t(0));
    assert!(e.allocate(t(1)).is_empty());
    e.revive(&"framework1".into());
    only(&e.allocate(t(1)), "framework1", "agent1", r(2.0, 1024.0));
}

#[test]
fn remove_filters() {
    let mut e = engine();
    e.add_framework("framework1".into(), "role");
    e.add_agent("agent1".into(), r(1.0, 512.0));
    let offers = e.allocate(t(0));
    e.decline(&offers[0], t(2), t(0));
    assert!(e.allocate(t(1)).is_empty());
    // The agent's attributes changed: its filters go.
    e.remove_filters(&"agent1".into());
    only(&e.allocate(t(1)), "framework1", "agent1", r(1.0, 512.0));
}
