//! The engine's own cases: DRF between roles and frameworks, filters, suppression,
//! recovery, crumbs, reservations and quotas, and the explanations of what a framework is
//! not offered.

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn two_frameworks() -> Engine {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(2.0, 1024.0));
    e.add_agent("a2".into(), Resources::new(2.0, 1024.0));
    e.add_framework("f1".into(), "r");
    e.add_framework("f2".into(), "r");
    e
}

#[test]
fn each_agent_goes_whole_to_the_framework_drf_puts_first() {
    let mut e = two_frameworks();
    let offers = e.allocate(secs(0));
    assert_eq!(offers.len(), 2);
    let to: Vec<&str> = offers.iter().map(|o| o.framework.0.as_str()).collect();
    assert_eq!(to, ["f1", "f2"], "after f1 got a1, f2 has the lower share");
    assert!(e.allocate(secs(1)).is_empty(), "nothing is free");
    assert_eq!(e.explain(&"f1".into(), secs(1)), [NotOffered::NothingFree]);
}

#[test]
fn a_declined_offer_is_filtered_until_the_refusal_expires() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(2.0, 1024.0));
    e.add_framework("f1".into(), "r");
    let offer = e.allocate(secs(0)).remove(0);
    e.decline(&offer, DEFAULT_REFUSE, secs(0));
    assert!(e.allocate(secs(1)).is_empty());
    assert_eq!(
        e.explain(&"f1".into(), secs(1)),
        [NotOffered::Filtered {
            agent: "a1".into(),
            until: secs(5)
        }]
    );
    assert_eq!(
        e.allocate(secs(5)).len(),
        1,
        "offered again once the filter expired"
    );
}

#[test]
fn a_filter_sends_the_resources_to_another_framework() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(2.0, 1024.0));
    e.add_framework("f1".into(), "r");
    e.add_framework("f2".into(), "r");
    let offer = e.allocate(secs(0)).remove(0);
    assert_eq!(offer.framework, "f1".into());
    e.decline(&offer, secs(60), secs(0));
    let next = e.allocate(secs(0));
    assert_eq!(next[0].framework, "f2".into());
}

#[test]
fn a_refusal_filters_only_what_was_refused() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(4.0, 4096.0));
    e.add_framework("f1".into(), "r");
    let whole = e.allocate(secs(0)).remove(0);
    // A task takes a quarter; the framework refuses the rest.
    let task = Resources::new(1.0, 1024.0);
    let rest = Offer {
        resources: whole.resources.minus(task),
        ..whole.clone()
    };
    e.decline(&rest, secs(60), secs(0));
    assert!(
        e.allocate(secs(1)).is_empty(),
        "the rest is not offered again"
    );
    assert_eq!(
        e.explain(&"f1".into(), secs(1)),
        [NotOffered::Filtered {
            agent: "a1".into(),
            until: secs(60)
        }]
    );
    // The task ends: more than was refused is free, so it is offered at once.
    e.recover(&"f1".into(), &"a1".into(), task, None);
    assert_eq!(e.explain(&"f1".into(), secs(2)), []);
    let again = e.allocate(secs(2));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].resources, whole.resources);
    // A later refusal that covers and outlasts an earlier one replaces it.
    let offer = again.into_iter().next().unwrap();
    e.decline(&offer, secs(60), secs(2));
    let refused = &e.frameworks[&FrameworkId::from("f1")].filters[&AgentId::from("a1")];
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].resources, whole.resources);
    // A refusal of unreserved resources does not filter a reservation.
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(4.0, 4096.0));
    e.reserve(&"a1".into(), "r", Resources::new(1.0, 1024.0));
    e.add_framework("f1".into(), "r");
    let offers = e.allocate(secs(0));
    let unreserved = offers.iter().find(|o| o.reservation.is_none()).unwrap();
    e.decline(unreserved, secs(60), secs(0));
    let reserved = offers.iter().find(|o| o.reservation.is_some()).unwrap();
    e.recover(&"f1".into(), &"a1".into(), reserved.resources, Some("r"));
    let again = e.allocate(secs(1));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].reservation.as_deref(), Some("r"));
}

#[test]
fn suppress_and_revive() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(2.0, 1024.0));
    e.add_framework("f1".into(), "r");
    e.suppress(&"f1".into());
    assert!(e.allocate(secs(0)).is_empty());
    assert_eq!(e.explain(&"f1".into(), secs(0)), [NotOffered::Suppressed]);
    e.revive(&"f1".into());
    assert_eq!(e.allocate(secs(0)).len(), 1);
}

#[test]
fn revive_clears_filters() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(2.0, 1024.0));
    e.add_framework("f1".into(), "r");
    let o = e.allocate(secs(0)).remove(0);
    e.decline(&o, secs(3600), secs(0));
    assert!(e.allocate(secs(1)).is_empty());
    e.revive(&"f1".into());
    assert_eq!(e.allocate(secs(1)).len(), 1);
}

#[test]
fn recovered_resources_are_offered_again() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(4.0, 4096.0));
    e.add_framework("f1".into(), "r");
    let o = e.allocate(secs(0)).remove(0);
    // A task used half and finished.
    e.recover(&o.framework, &o.agent, Resources::new(2.0, 2048.0), None);
    let again = e.allocate(secs(1));
    assert_eq!(again[0].resources, Resources::new(2.0, 2048.0));
}

#[test]
fn an_agent_that_leaves_takes_its_share_with_it() {
    let mut e = two_frameworks();
    e.allocate(secs(0));
    e.remove_agent(&"a1".into());
    assert_eq!(e.share(&"f1".into()), 0.0);
    assert!((e.share(&"f2".into()) - 1.0).abs() < 1e-9);
}

#[test]
fn crumbs_below_the_least_allocatable_are_not_offered() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(1.0, 1024.0));
    e.add_framework("f1".into(), "*");
    let offers = e.allocate(Duration::ZERO);
    // A task takes all but 0.005 cpus and 16 MiB; what is left is not worth an offer.
    e.recover(
        &"f1".into(),
        &"a1".into(),
        Resources::new(0.005, 16.0),
        None,
    );
    assert_eq!(offers.len(), 1);
    assert!(e.allocate(Duration::from_secs(1)).is_empty());
    assert!(allocatable(&Resources::new(0.01, 0.0)));
    assert!(allocatable(&Resources::new(0.0, 32.0)));
    assert!(!allocatable(&Resources::new(0.009, 31.0)));
}

#[test]
fn roles_share_first_then_frameworks_within() {
    let mut e = Engine::new();
    for a in ["a1", "a2", "a3"] {
        e.add_agent(a.into(), Resources::new(1.0, 1024.0));
    }
    e.add_framework("big1".into(), "big");
    e.add_framework("big2".into(), "big");
    e.add_framework("small".into(), "small");
    let offers = e.allocate(secs(0));
    let to: Vec<&str> = offers.iter().map(|o| o.framework.0.as_str()).collect();
    // Role "big" and role "small" alternate; inside "big", its frameworks alternate.
    assert_eq!(to, ["big1", "small", "big2"]);
}

#[test]
fn a_quota_limit_caps_a_role_and_the_rest_goes_on() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(8.0, 8192.0));
    e.add_framework("capped".into(), "eng/ml");
    e.add_framework("free".into(), "web");
    e.set_quota_limit("eng", Some(Resources::new(2.0, 1024.0)));
    let offers = e.allocate(secs(0));
    let capped: Vec<&Offer> = offers
        .iter()
        .filter(|o| o.framework == "capped".into())
        .collect();
    assert_eq!(capped.len(), 1);
    assert_eq!(
        capped[0].resources,
        Resources::new(2.0, 1024.0),
        "the parent role's limit binds"
    );
    let rest: Resources = offers
        .iter()
        .filter(|o| o.framework == "free".into())
        .fold(Resources::ZERO, |t, o| t.plus(o.resources));
    assert_eq!(
        rest,
        Resources::new(6.0, 7168.0),
        "what the limit leaves goes to others"
    );
    assert_eq!(
        e.explain(&"capped".into(), secs(0)),
        [NotOffered::QuotaLimitReached {
            role: "eng".into(),
            limit: Resources::new(2.0, 1024.0)
        }]
    );
    // Lifting the limit lets it have more (with the other framework away).
    e.recover(&"free".into(), &"a1".into(), rest, None);
    e.deactivate(&"free".into());
    e.set_quota_limit("eng", None);
    let more = e.allocate(secs(1));
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].framework, "capped".into());
}

#[test]
fn reserved_resources_go_only_to_their_role_and_its_sub_roles() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(4.0, 4096.0));
    assert!(e.reserve(&"a1".into(), "eng", Resources::new(3.0, 3072.0)));
    assert!(
        !e.reserve(&"a1".into(), "eng", Resources::new(3.0, 3072.0)),
        "only 1 cpu is left"
    );
    e.add_framework("web".into(), "web");
    let offers = e.allocate(secs(0));
    assert_eq!(offers.len(), 1, "web gets only the unreserved part");
    assert_eq!(offers[0].resources, Resources::new(1.0, 1024.0));
    assert_eq!(offers[0].reservation, None);
    assert_eq!(
        e.explain(&"web".into(), secs(0)),
        [NotOffered::AllReserved {
            roles: vec!["eng".into()]
        }]
    );
    e.add_framework("ml".into(), "eng/ml");
    let offers = e.allocate(secs(1));
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].framework, "ml".into());
    assert_eq!(offers[0].resources, Resources::new(3.0, 3072.0));
    assert_eq!(offers[0].reservation.as_deref(), Some("eng"));
    // Declined reserved resources go back to the reservation, not to web.
    e.decline(&offers[0], secs(60), secs(1));
    assert!(e.allocate(secs(2)).is_empty());
    assert_eq!(e.allocate(secs(61)).len(), 1);
}

#[test]
fn a_quota_guarantee_is_served_first_and_held_back() {
    let mut e = Engine::new();
    e.add_agent("a1".into(), Resources::new(1.0, 512.0));
    e.add_agent("a2".into(), Resources::new(1.0, 512.0));
    e.add_agent("a3".into(), Resources::new(1.0, 512.0));
    e.add_framework("other".into(), "other");
    e.add_framework("quota".into(), "quota");
    e.set_quota_guarantee("quota", Some(Resources::new(2.0, 1024.0)));
    let offers = e.allocate(secs(0));
    let to_quota: Resources = offers
        .iter()
        .filter(|o| o.framework == "quota".into())
        .fold(Resources::ZERO, |t, o| t.plus(o.resources));
    assert_eq!(
        to_quota,
        Resources::new(2.0, 1024.0),
        "the guarantee comes first"
    );
    let to_other: Resources = offers
        .iter()
        .filter(|o| o.framework == "other".into())
        .fold(Resources::ZERO, |t, o| t.plus(o.resources));
    assert_eq!(
        to_other,
        Resources::new(1.0, 512.0),
        "the rest goes to others"
    );
    // The guaranteed role gives back: its share is held for it, not offered to others.
    let quota_offers: Vec<Offer> = offers
        .iter()
        .filter(|o| o.framework == "quota".into())
        .cloned()
        .collect();
    e.suppress(&"quota".into());
    for o in &quota_offers {
        e.recover(&o.framework, &o.agent, o.resources, None);
    }
    assert!(e.allocate(secs(1)).is_empty());
    assert_eq!(
        e.explain(&"other".into(), secs(1)),
        [NotOffered::HeldForGuarantees]
    );
    // Without the guarantee, the others may have it.
    e.set_quota_guarantee("quota", None);
    let freed = e.allocate(secs(2));
    assert!(!freed.is_empty() && freed.iter().all(|o| o.framework == "other".into()));
}

#[test]
fn inactive_and_unknown_frameworks_are_explained() {
    let mut e = Engine::new();
    assert_eq!(
        e.explain(&"nope".into(), secs(0)),
        [NotOffered::UnknownFramework]
    );
    e.add_framework("f1".into(), "r");
    assert_eq!(e.explain(&"f1".into(), secs(0)), [NotOffered::NoAgents]);
    e.deactivate(&"f1".into());
    assert_eq!(e.explain(&"f1".into(), secs(0)), [NotOffered::Inactive]);
}
