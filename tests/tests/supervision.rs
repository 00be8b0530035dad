//! Supervision across OS processes: remote spawn, supervisor children on other nodes that
//! move to the next node when theirs dies, and no orphans when an owner goes away.

use std::time::Duration;

use troupe_runtime::spawn::{SpawnError, spawn_on};
use troupe_runtime::supervisor::{Args, ChildState, Restart, Strategy};
use troupe_runtime::{Addr, Child, ChildSpec, SupFlags, SupervisorRef, SupervisorSpec};
use troupe_tests::actors::{StopMode, VictimMsg};
use troupe_tests::remote::{alive, try_alive};
use troupe_tests::{ChildNode, TEST_COOKIE, start_local_node};

const TESTNODE: &str = env!("CARGO_BIN_EXE_troupe-testnode");

fn testnode(name: &str) -> ChildNode {
    ChildNode::start_testnode(TESTNODE, name, TEST_COOKIE, &[]).expect("helper node starts")
}

/// Where the supervisor's only child runs now, once it runs.
async fn placement(sup: &SupervisorRef) -> Option<(String, String)> {
    sup.which_children().await.unwrap()[0].remote.clone()
}

async fn wait_for_placement(sup: &SupervisorRef, node: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((on, path)) = placement(sup).await {
            if on == node {
                return path;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never placed on {node}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn victim_spec(restart: Restart) -> ChildSpec {
    ChildSpec::worker("v")
        .restart(restart)
        .start("victim", Args::none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_on_starts_a_kind_on_another_node() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    let addr = spawn_on::<VictimMsg>("b", "victim", Args::none())
        .await
        .unwrap();
    assert!(alive("b", addr.path()).await);
    // What a spawn returns resolves at once: the node's answer does not overtake the news
    // of the registration.
    for _ in 0..20 {
        let more = spawn_on::<VictimMsg>("b", "victim", Args::none())
            .await
            .unwrap();
        assert!(more.resolve().await.is_ok(), "{} not found", more.path());
    }
    let unknown = spawn_on::<VictimMsg>("b", "no-such-kind", Args::none()).await;
    assert!(
        matches!(unknown, Err(SpawnError::UnknownKind { .. })),
        "{unknown:?}"
    );
    // An actor spawned for this node does not outlive this node's connection.
    node.disconnect("b").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while try_alive("b", addr.path()).await.unwrap_or(true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphan lives on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_child_moves_to_the_next_node_when_its_node_is_killed() {
    let b = testnode("b");
    let c = testnode("c");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    node.add_peer("c", c.addr);
    let spec = SupervisorSpec::new(
        SupFlags::new(Strategy::OneForOne).intensity(3, Duration::from_secs(10)),
    )
    .child(Child::remote(
        victim_spec(Restart::Permanent),
        vec!["b".into(), "c".into()],
    ));
    let sup = SupervisorRef::start(spec).await.unwrap();
    let path = wait_for_placement(&sup, "b").await;
    assert!(alive("b", &path).await);
    // A crash of the actor alone restarts it where it was.
    Addr::<VictimMsg>::on("b", path.clone())
        .send(VictimMsg::Die {
            mode: StopMode::Panic,
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let path = loop {
        if let Some((on, now)) = placement(&sup).await {
            if now != path {
                assert_eq!(on, "b", "a crash alone keeps the child on its node");
                break now;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(alive("b", &path).await);
    // Its node dies: the child comes back on the next node of its list.
    b.signal("KILL").unwrap();
    let moved = wait_for_placement(&sup, "c").await;
    assert!(alive("c", &moved).await);
    let info = &sup.which_children().await.unwrap()[0];
    assert_eq!(info.restarts, 2);
    assert!(
        info.last_exit
            .as_deref()
            .unwrap_or("")
            .contains("node down"),
        "{info:?}"
    );
    // Stopping the supervisor stops the remote child.
    sup.stop().await;
    assert!(!alive("c", &moved).await);
    drop(b);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_remote_child_that_exits_normally_is_not_restarted() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    let spec = SupervisorSpec::new(SupFlags::new(Strategy::OneForOne)).child(Child::remote(
        victim_spec(Restart::Transient),
        vec!["b".into()],
    ));
    let sup = SupervisorRef::start(spec).await.unwrap();
    let path = wait_for_placement(&sup, "b").await;
    Addr::<VictimMsg>::on("b", path.clone())
        .send(VictimMsg::Die {
            mode: StopMode::Normal,
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sup.which_children().await.unwrap()[0].state != ChildState::Stopped {
        assert!(tokio::time::Instant::now() < deadline, "never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = &sup.which_children().await.unwrap()[0];
    assert_eq!((info.state, info.restarts), (ChildState::Stopped, 0));
    assert_eq!(sup.count_children().await.unwrap().active, 0);
    sup.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_of_a_remote_node_shows_a_supervisor_its_children_and_restarts() {
    use troupe_runtime::inspector::{ActorKind, inspect};
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    let sup_addr = spawn_on::<VictimMsg>("b", "demo-supervisor", Args::none())
        .await
        .unwrap();
    Addr::<VictimMsg>::on("b", "demo/w1")
        .send(VictimMsg::Die {
            mode: StopMode::Panic,
        })
        .await
        .unwrap();
    // Wait until the restarted w1 is registered again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let snapshot = loop {
        let snapshot = inspect("b", Duration::from_secs(10)).await.unwrap();
        // Counted by its supervisor, and registered under its path (the new actor joins
        // its process group a moment after its supervisor counts the restart).
        let restarted = snapshot.all().iter().any(|a| {
            a.paths.contains(&"demo/w1".to_string())
                && a.child
                    .as_ref()
                    .is_some_and(|c| c.id == "w1" && c.restarts == 1)
        });
        if restarted {
            break snapshot;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no restart seen: {snapshot:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(snapshot.node, "b");
    let all = snapshot.all();
    let sup = all
        .iter()
        .find(|a| a.paths.contains(&sup_addr.path().to_string()))
        .expect("the supervisor is in the tree");
    assert_eq!(sup.kind, ActorKind::Supervisor);
    let flags = &sup.supervisor.as_ref().expect("its report").flags;
    assert_eq!(flags.strategy, Strategy::OneForOne);
    let children: Vec<&str> = sup
        .children
        .iter()
        .filter_map(|c| c.child.as_ref().map(|c| c.id.as_str()))
        .collect();
    assert_eq!(children, ["w1", "w2"]);
    let w1 = sup
        .children
        .iter()
        .find(|c| c.paths.contains(&"demo/w1".to_string()))
        .unwrap();
    let info = w1.child.as_ref().unwrap();
    assert_eq!(info.restarts, 1);
    assert!(
        info.last_exit.as_deref().unwrap_or("").contains("panic"),
        "{info:?}"
    );
    assert!(sup.messages_handled.unwrap_or(0) >= 1);
    // The node's own actors are there too, marked as such.
    assert!(
        all.iter()
            .any(|a| a.kind == ActorKind::System
                && a.paths.contains(&"node/b/inspector".to_string()))
    );
    // The snapshot is a wire type: it survives the codec both ways.
    let bytes = troupe_runtime::codec::encode(&snapshot).unwrap();
    assert_eq!(
        troupe_runtime::codec::decode::<troupe_runtime::inspector::NodeSnapshot>(&bytes).unwrap(),
        snapshot
    );
    node.stop().await;
}
