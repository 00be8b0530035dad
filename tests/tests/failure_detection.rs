//! Failure detection across OS processes: a silent peer (SIGSTOP) is declared down by the
//! phi-accrual detector within seconds, exactly once, and can come back; a peer that is
//! merely busy is not declared down.

use std::time::{Duration, Instant};

use troupe_runtime::DownReason;
use troupe_runtime::{Addr, NodeEvent};
use troupe_tests::actors::{StopMode, VictimMsg};
use troupe_tests::remote::{counted_monitor, echo, exactly_one_down, spawn_victim};
use troupe_tests::{ChildNode, CpuHog, TEST_COOKIE, start_local_node};

const TESTNODE: &str = env!("CARGO_BIN_EXE_troupe-testnode");

fn testnode(name: &str) -> ChildNode {
    ChildNode::start_testnode(TESTNODE, name, TEST_COOKIE, &[]).expect("helper node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_declared_down_once_and_can_come_back() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    spawn_victim("b", "victim/v1", false).await;
    let mut events = node.subscribe();
    let rx = counted_monitor(&Addr::on("b", "victim/v1")).await;
    // Let a few heartbeats teach the detector the interval.
    tokio::time::sleep(Duration::from_millis(600)).await;

    b.signal("STOP").unwrap();
    let stopped = Instant::now();
    let down = exactly_one_down(rx).await;
    let noticed = stopped.elapsed();
    assert_eq!(down.reason, DownReason::NodeDown);
    assert!(
        noticed < Duration::from_secs(3),
        "noticed after {noticed:?}"
    );
    eprintln!("silent peer noticed after {noticed:?}");
    let mut downs = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event, NodeEvent::Down { ref node, .. } if node == "b") {
            downs += 1;
        }
    }
    assert_eq!(downs, 1, "one Down event for the peer");
    assert!(!node.is_connected("b"));

    // Once it runs again, the next message reconnects and new monitors work.
    b.signal("CONT").unwrap();
    // The first call may race b's own cleanup of the session it has not yet seen closed
    // (ractor_cluster then keeps one of the two sessions and closes the other); it fails
    // cleanly with NodeUnreachable, and the next one goes through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match echo("b", "back").await {
            Ok(text) => break assert_eq!(text, "back"),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("retrying after: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("b never came back: {e}"),
        }
    }
    spawn_victim("b", "victim/v2", false).await;
    let addr = Addr::<VictimMsg>::on("b", "victim/v2");
    let rx = counted_monitor(&addr).await;
    addr.send(VictimMsg::Die {
        mode: StopMode::Error,
    })
    .await
    .unwrap();
    let down = exactly_one_down(rx).await;
    assert!(
        matches!(down.reason, DownReason::Error(_)),
        "{:?}",
        down.reason
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_peer_is_not_declared_down() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    spawn_victim("b", "victim/v1", false).await;
    let mut rx = counted_monitor(&Addr::on("b", "victim/v1")).await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hog = CpuHog::start(cores).unwrap();
    // Ten seconds with every core saturated; heartbeats keep flowing.
    let quiet = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    drop(hog);
    assert!(quiet.is_err(), "the busy peer was declared down: {quiet:?}");
    assert!(node.is_connected("b"));
    assert_eq!(echo("b", "still here").await.unwrap(), "still here");
    node.stop().await;
}
