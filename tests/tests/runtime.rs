//! The runtime across real OS processes: calls by path, auto-connect, ordering, monitors,
//! links, cookies and hostile bytes. The test process is one node; each helper node is a
//! `troupe-testnode` child process. (One node per OS process: run under nextest, which gives
//! every test its own process.)

use std::io::Write;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use troupe_runtime::ractor;
use troupe_runtime::{Addr, AddrError, ConnectError, Down, DownReason, NodeEvent};
use troupe_tests::actors::{CALL_TIMEOUT, ControlMsg, EchoMsg, StopMode, Victim, VictimMsg};
use troupe_tests::remote::{
    alive, counted_monitor, echo, exactly_one_down, spawn_victim, trapped_exits,
};
use troupe_tests::{ChildNode, TEST_COOKIE, start_local_node, wait_until};

const TESTNODE: &str = env!("CARGO_BIN_EXE_troupe-testnode");

fn testnode(name: &str) -> ChildNode {
    ChildNode::start_testnode(TESTNODE, name, TEST_COOKIE, &[]).expect("helper node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_by_path_auto_connects_on_first_send() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    assert!(
        !node.is_connected("b"),
        "not connected before the first send"
    );
    assert_eq!(echo("b", "hello").await.unwrap(), "hello");
    assert!(
        node.is_connected("b"),
        "the first call opened the connection"
    );
    // An unqualified path finds the member on the connected node too.
    let anywhere = Addr::<EchoMsg>::new("echo")
        .call(
            |reply| EchoMsg::Echo {
                text: "again".into(),
                reply,
            },
            CALL_TIMEOUT,
        )
        .await;
    assert_eq!(anywhere.unwrap(), "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_casts_arrive_in_order() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    let echo = Addr::<EchoMsg>::on("b", "echo");
    for n in 0..10_000u64 {
        echo.send(EchoMsg::Seq { n }).await.expect("cast sent");
    }
    // A call after the casts travels the same ordered session, so it sees all of them.
    let (received, out_of_order) = echo
        .call(|reply| EchoMsg::SeqStats { reply }, CALL_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(received, 10_000);
    assert_eq!(out_of_order, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_a_clear_error_not_a_hang() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    let started = std::time::Instant::now();
    let err = Addr::<EchoMsg>::on("b", "nobody/here")
        .call(
            |reply| EchoMsg::Echo {
                text: "x".into(),
                reply,
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AddrError::NoSuchActor { path, node: Some(n) } if path == "nobody/here" && n == "b"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered, not timed out"
    );
    let unqualified = Addr::<EchoMsg>::new("nobody/anywhere")
        .send(EchoMsg::Seq { n: 0 })
        .await
        .unwrap_err();
    assert!(matches!(unqualified.error, AddrError::NoSuchActor { .. }));
    assert!(unqualified.message.is_some(), "the message is handed back");
}

async fn down_for_stop(mode: StopMode) -> Down {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    down_for_stop_on("b", mode).await
}

/// Spawns a victim on `node`, monitors it, stops it, and returns its one `Down`.
async fn down_for_stop_on(node: &str, mode: StopMode) -> Down {
    spawn_victim(node, "victim/v1", false).await;
    let victim = Addr::<VictimMsg>::on(node, "victim/v1");
    let rx = counted_monitor(&victim).await;
    victim.send(VictimMsg::Die { mode }).await.unwrap();
    let down = exactly_one_down(rx).await;
    assert_eq!(down.path, "victim/v1");
    assert_eq!(down.node, node);
    down
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_once_on_normal_stop() {
    assert_eq!(
        down_for_stop(StopMode::Normal).await.reason,
        DownReason::Normal
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_once_on_panic() {
    let reason = down_for_stop(StopMode::Panic).await.reason;
    assert!(
        matches!(&reason, DownReason::Error(text) if text.contains("panics on request")),
        "{reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_once_on_handler_error() {
    let reason = down_for_stop(StopMode::Error).await.reason;
    assert!(
        matches!(&reason, DownReason::Error(text) if text.contains("fails on request")),
        "{reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_once_on_kill() {
    assert_eq!(
        down_for_stop(StopMode::Kill).await.reason,
        DownReason::Killed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_at_once_for_a_monitor_on_a_dead_path() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    // Remote and local: both answer NoSuchActor at once, as Erlang answers noproc.
    let remote = counted_monitor(&Addr::on("b", "victim/never")).await;
    assert_eq!(
        exactly_one_down(remote).await.reason,
        DownReason::NoSuchActor
    );
    let local = counted_monitor(&Addr::on("a", "victim/never")).await;
    assert_eq!(
        exactly_one_down(local).await.reason,
        DownReason::NoSuchActor
    );
}

async fn down_when_node_goes(signal: &str) {
    let mut b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    spawn_victim("b", "victim/v1", false).await;
    let rx = counted_monitor(&Addr::on("b", "victim/v1")).await;
    b.signal(signal).unwrap();
    let down = exactly_one_down(rx).await;
    b.wait_exit(Duration::from_secs(10)).unwrap();
    // A clean stop may report the actor's own exit before the session closes; a SIGKILL
    // can only be seen as the node going away.
    if signal == "KILL" {
        assert_eq!(down.reason, DownReason::NodeDown);
    } else {
        assert!(
            matches!(down.reason, DownReason::NodeDown | DownReason::Normal),
            "{:?}",
            down.reason
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_once_when_the_node_stops_cleanly() {
    down_when_node_goes("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_once_when_the_node_is_sigkilled() {
    down_when_node_goes("KILL").await;
}

/// Links `actor` with `peer`, then has it fail with an error at once.
async fn link_then_fail(actor: &ActorRef<VictimMsg>, path: &str, peer: &Addr<VictimMsg>) {
    troupe_runtime::link(actor, path, peer).await.unwrap();
    actor
        .cast(VictimMsg::Die {
            mode: StopMode::Error,
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_propagates_failure_both_ways_across_nodes() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);

    // Remote failure stops the local end.
    spawn_victim("b", "victim/r1", false).await;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (local, handle) = Actor::spawn(None, Victim::reporting_to("local/l1", tx), ())
        .await
        .unwrap();
    troupe_runtime::register("local/l1", &local).unwrap();
    let local_down = counted_monitor(&Addr::on("a", "local/l1")).await;
    troupe_runtime::link(&local, "local/l1", &Addr::<VictimMsg>::on("b", "victim/r1"))
        .await
        .unwrap();
    Addr::<VictimMsg>::on("b", "victim/r1")
        .send(VictimMsg::Die {
            mode: StopMode::Panic,
        })
        .await
        .unwrap();
    let down = exactly_one_down(local_down).await;
    assert!(
        matches!(&down.reason, DownReason::Error(t) if t.contains("panics on request")),
        "the local end stops with the remote end's reason: {:?}",
        down.reason
    );
    handle.await.unwrap();

    // Local failure stops the remote end.
    spawn_victim("b", "victim/r2", false).await;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (local, _) = Actor::spawn(None, Victim::reporting_to("local/l2", tx), ())
        .await
        .unwrap();
    troupe_runtime::register("local/l2", &local).unwrap();
    let remote_down = counted_monitor(&Addr::on("b", "victim/r2")).await;
    link_then_fail(&local, "local/l2", &Addr::on("b", "victim/r2")).await;
    let down = exactly_one_down(remote_down).await;
    assert!(
        matches!(&down.reason, DownReason::Error(t) if t.contains("local/l2 fails on request")),
        "{:?}",
        down.reason
    );
    assert!(!alive("b", "victim/r2").await);

    // A link to a path with no actor is refused.
    let err = troupe_runtime::link(
        &local,
        "local/l2",
        &Addr::<VictimMsg>::on("b", "victim/none"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no actor"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_actor_that_traps_exits_gets_a_message_and_lives() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);

    // Local trapper, remote peer dies.
    spawn_victim("b", "victim/r1", false).await;
    let (tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
    let (local, _) = Actor::spawn(None, Victim::reporting_to("local/trapper", tx), ())
        .await
        .unwrap();
    troupe_runtime::register("local/trapper", &local).unwrap();
    troupe_runtime::trap_exit(&local).unwrap();
    troupe_runtime::link(
        &local,
        "local/trapper",
        &Addr::<VictimMsg>::on("b", "victim/r1"),
    )
    .await
    .unwrap();
    Addr::<VictimMsg>::on("b", "victim/r1")
        .send(VictimMsg::Die {
            mode: StopMode::Kill,
        })
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), exits.recv())
        .await
        .expect("an Exit within 5 s")
        .unwrap();
    assert_eq!(exit.path, "victim/r1");
    assert_eq!(exit.node, "b");
    assert_eq!(exit.reason, DownReason::Killed);
    assert_eq!(local.get_status(), ractor::ActorStatus::Running);

    // Remote trapper, local peer dies: the remote side records the Exit and lives.
    spawn_victim("b", "victim/trapper", true).await;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (doomed, _) = Actor::spawn(None, Victim::reporting_to("local/doomed", tx), ())
        .await
        .unwrap();
    troupe_runtime::register("local/doomed", &doomed).unwrap();
    troupe_runtime::link(
        &doomed,
        "local/doomed",
        &Addr::<VictimMsg>::on("b", "victim/trapper"),
    )
    .await
    .unwrap();
    doomed
        .cast(VictimMsg::Die {
            mode: StopMode::Error,
        })
        .unwrap();
    let seen = trapped_exits("b", "victim/trapper", 1).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "local/doomed");
    assert!(
        matches!(&seen[0].reason, DownReason::Error(t) if t.contains("local/doomed fails on request"))
    );
    assert!(alive("b", "victim/trapper").await);
}

/// `link` returns once both ends are in place, so an actor that stops the moment its link
/// is made is always heard by its peer, with its own reason: here and across nodes, many
/// times over (a kernel that recorded the end after `link` returned lost some of these).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_that_stops_as_soon_as_it_is_linked_is_heard_by_its_peer() {
    const ROUNDS: usize = 25;
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    let (tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
    let (trapper, _) = Actor::spawn(None, Victim::reporting_to("local/trapper", tx.clone()), ())
        .await
        .unwrap();
    troupe_runtime::register("local/trapper", &trapper).unwrap();
    troupe_runtime::trap_exit(&trapper).unwrap();
    spawn_victim("b", "victim/trapper", true).await;

    for round in 0..ROUNDS {
        for (peer_node, peer_path) in [("a", "local/trapper"), ("b", "victim/trapper")] {
            let path = format!("local/doomed-{peer_node}-{round}");
            let (doomed, _) = Actor::spawn(None, Victim::reporting_to(&path, tx.clone()), ())
                .await
                .unwrap();
            link_then_fail(&doomed, &path, &Addr::on(peer_node, peer_path)).await;
        }
    }

    let mut heard_here = Vec::new();
    while heard_here.len() < ROUNDS {
        let exit = tokio::time::timeout(Duration::from_secs(5), exits.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} exits of {ROUNDS} in 5 s: {heard_here:?}",
                    heard_here.len()
                )
            })
            .unwrap();
        assert!(
            matches!(&exit.reason, DownReason::Error(t) if t.contains(&format!("{} fails on request", exit.path))),
            "the exit carries the actor's own reason: {exit:?}"
        );
        heard_here.push(exit.path);
    }
    let heard_there = trapped_exits("b", "victim/trapper", ROUNDS).await;
    assert_eq!(heard_there.len(), ROUNDS, "{heard_there:?}");
    for exit in &heard_there {
        assert!(
            matches!(&exit.reason, DownReason::Error(t) if t.contains(&format!("{} fails on request", exit.path))),
            "{exit:?}"
        );
    }
    assert_eq!(trapper.get_status(), ractor::ActorStatus::Running);
}

/// A link from or to an actor that has stopped is refused with the path that is gone, here
/// and across nodes, and records nothing.
#[tokio::test]
async fn a_link_with_a_stopped_actor_is_refused_with_its_path() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    let (tx, _exits) = tokio::sync::mpsc::unbounded_channel();
    let (live, _) = Actor::spawn(None, Victim::reporting_to("local/live", tx.clone()), ())
        .await
        .unwrap();
    troupe_runtime::register("local/live", &live).unwrap();
    let (gone, handle) = Actor::spawn(None, Victim::reporting_to("local/gone", tx), ())
        .await
        .unwrap();
    troupe_runtime::register("local/gone", &gone).unwrap();
    gone.stop(None);
    handle.await.unwrap();
    spawn_victim("b", "victim/peer", false).await;

    let cases = [
        (&gone, "local/gone", ("a", "local/live"), "local/gone"),
        (&gone, "local/gone", ("b", "victim/peer"), "local/gone"),
        (&live, "local/live", ("a", "local/gone"), "local/gone"),
    ];
    for (end, end_path, (peer_node, peer_path), missing) in cases {
        let peer = Addr::<VictimMsg>::on(peer_node, peer_path);
        match troupe_runtime::link(end, end_path, &peer).await {
            Err(troupe_runtime::LinkError::Addr(AddrError::NoSuchActor { path, .. })) => {
                assert_eq!(path, missing, "{end_path} with {peer_path}")
            }
            other => {
                panic!("{end_path} with {peer_path}: expected no actor at {missing}, got {other:?}")
            }
        }
    }
    // A refused link is no exit: the living ends go on.
    assert_eq!(live.get_status(), ractor::ActorStatus::Running);
    assert!(alive("b", "victim/peer").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused_both_ways_with_the_named_error() {
    let node = start_local_node("a", TEST_COOKIE).await;
    let mut events = node.subscribe();

    // We connect to a node with another cookie.
    let b = ChildNode::start_testnode(TESTNODE, "b", "another-cookie", &[]).unwrap();
    let err = node.connect(b.addr).await.unwrap_err();
    assert!(matches!(err, ConnectError::CookieRefused { .. }), "{err}");
    assert!(err.to_string().contains("cookies differ"), "{err}");
    node.add_peer("b", b.addr);
    let call = echo("b", "x").await.unwrap_err();
    assert!(matches!(call, AddrError::CookieRefused { .. }), "{call}");

    // A node with another cookie connects to us.
    let addr = node.advertise_addr().to_string();
    let mut c =
        ChildNode::start_testnode(TESTNODE, "c", "another-cookie", &["--connect", &addr]).unwrap();
    let line = c
        .read_line_containing("connect:", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains("error cookie"), "{line}");
    assert!(line.contains("cookies differ"), "{line}");
    let refused = wait_until(Duration::from_secs(5), || {
        matches!(events.try_recv(), Ok(NodeEvent::HandshakeFailed { node: Some(ref n), .. }) if n == "c")
    })
    .await;
    assert!(refused, "this side saw c's handshake fail");
    assert!(node.connected_peers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_on_the_port_hurt_no_one() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    assert_eq!(echo("b", "before").await.unwrap(), "before");

    // Raw sockets: random bytes, a truncated frame, a 4 GiB length prefix, a frame whose
    // protobuf is garbage. Each is a separate unauthenticated connection.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let mut payloads: Vec<Vec<u8>> = vec![
        random(4096),
        [&20u64.to_be_bytes()[..], &[1, 2, 3]].concat(),
        (4u64 << 30).to_be_bytes().to_vec(),
        [&(4u64 << 30).to_be_bytes()[..], &random(1024)[..]].concat(),
        u64::MAX.to_be_bytes().to_vec(),
        [&16u64.to_be_bytes()[..], &random(16)[..]].concat(),
    ];
    for i in 0..20 {
        payloads.push(random(1 + i * 37 % 512));
    }
    for payload in &payloads {
        if let Ok(mut s) = std::net::TcpStream::connect(b.addr) {
            let _ = s.write_all(payload);
            let _ = s.flush();
        }
    }

    // Through an authenticated session: a frame of the wrong type, and garbage bytes of the
    // right type, delivered straight to the echo actor's mailbox on b.
    let echo_cell = Addr::<EchoMsg>::on("b", "echo")
        .resolve()
        .await
        .unwrap()
        .get_cell();
    echo_cell
        .send_serialized(ractor::message::SerializedMessage::Cast {
            variant: "some::other::Type".into(),
            args: random(64),
            metadata: None,
        })
        .unwrap();
    echo_cell
        .send_serialized(ractor::message::SerializedMessage::Cast {
            variant: std::any::type_name::<EchoMsg>().into(),
            args: random(64),
            metadata: None,
        })
        .unwrap();

    // b still serves, and counted both bad frames. (They went by the session, which the
    // message channel that carries these calls may overtake: wait for them.)
    assert_eq!(echo("b", "after").await.unwrap(), "after");
    let mut stats = troupe_runtime::codec::DecodeStats::default();
    for _ in 0..250 {
        stats = Addr::<ControlMsg>::on("b", "control")
            .call(|reply| ControlMsg::DecodeStats { reply }, CALL_TIMEOUT)
            .await
            .unwrap();
        if stats.wrong_type >= 1 && stats.malformed >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stats.wrong_type >= 1, "{stats:?}");
    assert!(stats.malformed >= 1, "{stats:?}");
    assert!(node.is_connected("b"));
    // Every raw connection was dropped in its handshake, and counted.
    let control = Addr::<ControlMsg>::on("b", "control");
    let mut dropped = 0;
    for _ in 0..250 {
        dropped = control
            .call(
                |reply| ControlMsg::HandshakeFailures { reply },
                CALL_TIMEOUT,
            )
            .await
            .unwrap();
        if dropped >= payloads.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dropped, payloads.len() as u64);
}

/// Whether the other end closed this socket (nonblocking: a read that would block means
/// it is still open).
fn closed_by_peer(socket: &std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut byte = [0u8; 1];
    match (&*socket).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_that_never_finish_the_handshake_are_closed() {
    use troupe_runtime::node::{HANDSHAKE_LIMIT, MAX_HANDSHAKING};
    let b = testnode("b");
    // More connections than may be in their handshake at once, none sending a byte.
    let extra = 36;
    let idle: Vec<std::net::TcpStream> = (0..MAX_HANDSHAKING + extra)
        .filter_map(|_| std::net::TcpStream::connect(b.addr).ok())
        .collect();
    assert_eq!(
        idle.len(),
        MAX_HANDSHAKING + extra,
        "every connection is accepted"
    );
    for socket in &idle {
        socket.set_nonblocking(true).unwrap();
    }
    // Those beyond the bound are closed at once, long before the time limit.
    let refused = wait_until(HANDSHAKE_LIMIT / 2, || {
        idle.iter().filter(|s| closed_by_peer(s)).count() >= extra
    })
    .await;
    assert!(
        refused,
        "{} of {extra} extra connections closed at once",
        idle.iter().filter(|s| closed_by_peer(s)).count()
    );
    // The rest are closed once the handshake's time is up.
    let all = wait_until(HANDSHAKE_LIMIT + Duration::from_secs(10), || {
        idle.iter().all(closed_by_peer)
    })
    .await;
    assert!(
        all,
        "{} of {} idle connections still open",
        idle.iter().filter(|s| !closed_by_peer(s)).count(),
        idle.len()
    );
    // And b still serves a node that does authenticate.
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    assert_eq!(echo("b", "after").await.unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_re_resolves_after_its_target_restarts() {
    let _node = start_local_node("a", TEST_COOKIE).await;
    let echo = Addr::<EchoMsg>::new("svc/echo");
    let (first, handle) = Actor::spawn(None, troupe_tests::actors::Echo, ())
        .await
        .unwrap();
    troupe_runtime::register("svc/echo", &first).unwrap();
    let ask = |text: &'static str| {
        let echo = echo.clone();
        async move {
            echo.call(
                |reply| EchoMsg::Echo {
                    text: text.into(),
                    reply,
                },
                CALL_TIMEOUT,
            )
            .await
        }
    };
    assert_eq!(ask("one").await.unwrap(), "one");
    first.stop(None);
    handle.await.unwrap();
    assert!(matches!(
        ask("gone").await,
        Err(AddrError::NoSuchActor { .. })
    ));
    let (second, _) = Actor::spawn(None, troupe_tests::actors::Echo, ())
        .await
        .unwrap();
    troupe_runtime::register("svc/echo", &second).unwrap();
    assert_eq!(
        ask("two").await.unwrap(),
        "two",
        "the same handle reaches the new actor"
    );
}

/// The message channel to `peer` this node opened, if it is open.
fn outbound_channel(
    node: &troupe_runtime::Node,
    peer: &str,
) -> Option<troupe_runtime::ChannelInfo> {
    node.message_channels()
        .into_iter()
        .find(|c| c.peer == peer && c.outbound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_message_channel_is_a_lost_connection_and_the_next_call_opens_another() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    assert_eq!(echo("b", "before").await.unwrap(), "before");
    let first = outbound_channel(&node, "b").expect("the call went over a message channel");
    assert_eq!(first.remote.ip(), b.addr.ip());
    assert_ne!(
        first.remote.port(),
        b.addr.port(),
        "a connection beside the session's"
    );
    spawn_victim("b", "victim/v1", false).await;
    let rx = counted_monitor(&Addr::<VictimMsg>::on("b", "victim/v1")).await;

    // Abort the channel's TCP connection under both ends (the session stays as it is).
    let killed = std::process::Command::new("ss")
        .args([
            "-K",
            "src",
            &first.local.to_string(),
            "dst",
            &first.remote.to_string(),
        ])
        .output()
        .expect("ss runs");
    assert!(killed.status.success(), "{killed:?}");

    // Messages on a lost channel are lost: the peer counts as disconnected and its monitors
    // fire, as for a lost session.
    let down = exactly_one_down(rx).await;
    assert_eq!(down.reason, DownReason::NodeDown, "{down:?}");
    assert_eq!(echo("b", "after").await.unwrap(), "after");
    let second = outbound_channel(&node, "b").expect("a new channel");
    assert_ne!(second.local, first.local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_channel_listener_refuses_anything_but_a_good_ticket() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    assert_eq!(echo("b", "before").await.unwrap(), "before");
    let addr = node.channel_addr().expect("the channel is on by default");
    assert_ne!(addr, node.advertise_addr());
    let hello = |name: &str, ticket: &[u8]| -> Vec<u8> {
        let mut out = b"troupe/1".to_vec();
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(ticket);
        out
    };
    let attempts: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        hello("b", &[7; 32]),
        hello("b", &[0; 32]),
        [&b"troupe/1"[..], &u16::MAX.to_be_bytes()[..]].concat(),
        [
            &b"troupe/1"[..],
            &2u16.to_be_bytes()[..],
            &[0xff, 0xfe][..],
            &[1; 32][..],
        ]
        .concat(),
        b"troupe/1".to_vec(),
    ];
    for attempt in &attempts {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // The listener may refuse before all is written or the write side is shut (the
        // first bytes can be enough): the writes and the shutdown may then fail.
        let _ = s.write_all(attempt);
        // The half-sent ones end with the writer's close.
        let _ = s.shutdown(std::net::Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut answer);
        assert!(answer.is_empty(), "refused without a word: {answer:?}");
    }
    assert!(
        wait_until(Duration::from_secs(5), || node.channel_refusals()
            == attempts.len() as u64)
        .await,
        "{} of {} counted",
        node.channel_refusals(),
        attempts.len()
    );
    // Nothing was harmed: the session and the channels serve on.
    assert!(node.is_connected("b"));
    assert_eq!(echo("b", "after").await.unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_from_another_node_comes_after_the_dead_actors_last_messages() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    let (sink, _) = Actor::spawn(None, troupe_tests::actors::Echo, ())
        .await
        .unwrap();
    troupe_runtime::register("sink", &sink).unwrap();
    for (i, mode) in [StopMode::Normal, StopMode::Error, StopMode::Kill]
        .into_iter()
        .enumerate()
    {
        let path = format!("victim/burst-{i}");
        spawn_victim("b", &path, false).await;
        let victim = Addr::<VictimMsg>::on("b", path.as_str());
        // The Down is handed to the sink as it fires: the stats it answers then count what
        // was in the sink's mailbox ahead of the Down.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let at_down = sink.clone();
        troupe_runtime::monitor_with(&victim, move |down| {
            let (reply, answer) = troupe_runtime::Reply::channel();
            let _ = at_down.cast(EchoMsg::SeqStats { reply });
            let _ = tx.send((down, answer));
        })
        .await
        .unwrap();
        let count = 3_000;
        victim
            .send(VictimMsg::SendThenDie {
                node: "a".into(),
                path: "sink".into(),
                count,
                mode,
            })
            .await
            .unwrap();
        let mut rx = rx;
        let (down, answer) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a Down")
            .unwrap();
        assert_ne!(down.reason, DownReason::NodeDown, "{down:?}");
        let (received, out_of_order) = answer.recv().await.unwrap();
        // Each victim counts from 0 again: one number out of order for each before it.
        assert_eq!(
            (received, out_of_order),
            (count * (i as u64 + 1), i as u64),
            "every message the victim sent was in ahead of its Down ({mode:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_sent_just_before_a_stop_reaches_the_caller_on_another_node() {
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    for i in 0..30 {
        let path = format!("victim/answering-{i}");
        spawn_victim("b", &path, false).await;
        let mode = [StopMode::Normal, StopMode::Error, StopMode::Kill][i % 3];
        let answer = Addr::<VictimMsg>::on("b", path.as_str())
            .call(
                |reply| VictimMsg::AnswerThenDie { mode, reply },
                CALL_TIMEOUT,
            )
            .await;
        assert_eq!(answer.unwrap(), path, "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_message_channel_is_served_through_the_session_in_order() {
    let b = ChildNode::start_testnode(TESTNODE, "b", TEST_COOKIE, &["--no-message-channel"])
        .expect("helper node starts");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    assert_eq!(echo("b", "hello").await.unwrap(), "hello");
    assert_eq!(outbound_channel(&node, "b"), None, "no channel to b");
    let echo_b = Addr::<EchoMsg>::on("b", "echo");
    for n in 0..5_000 {
        echo_b.send(EchoMsg::Seq { n }).await.unwrap();
    }
    let (received, out_of_order) = echo_b
        .call(|reply| EchoMsg::SeqStats { reply }, CALL_TIMEOUT)
        .await
        .unwrap();
    assert_eq!((received, out_of_order), (5_000, 0));
    // Monitors and links work as ever, through the session.
    let down = down_for_stop_on("b", StopMode::Error).await;
    assert!(matches!(down.reason, DownReason::Error(_)), "{down:?}");
    assert_eq!(node.channel_refusals(), 0);
}

/// The node's own services run under the node supervisor: each one killed (through the
/// node's inspector, as an operator would) is started again under its path, the node keeps
/// answering, and the `Down`s it promised arrive, each exactly once. Killing the kernel
/// loses the monitors held through it, and their holders hear `Lost`, not silence; the
/// other services' deaths touch no monitor but their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_service_killed_is_restarted_and_its_downs_arrive_once() {
    use troupe_runtime::inspector::{InspectorMsg, inspector_path};
    let b = testnode("b");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    assert_eq!(echo("b", "before").await.unwrap(), "before");
    for service in ["kernel", "ping", "spawner", "inspector", "heartbeat"] {
        let path = format!("node/b/{service}");
        let victim_path = format!("victim/{service}");
        spawn_victim("b", &victim_path, false).await;
        let victim = Addr::<VictimMsg>::on("b", victim_path.as_str());
        let victim_downs = counted_monitor(&victim).await;
        // The service itself, watched like any actor.
        let service_addr = Addr::<troupe_runtime::PingMsg>::on("b", path.as_str());
        let before = service_addr
            .resolve()
            .await
            .expect("the service runs")
            .get_id();
        let (tx, service_downs) = tokio::sync::mpsc::unbounded_channel();
        troupe_runtime::monitor_with(&service_addr, move |down| {
            let _ = tx.send(down);
        })
        .await
        .unwrap();

        let inspector = Addr::<InspectorMsg>::on("b", inspector_path("b"));
        let killed = inspector
            .call(
                |reply| InspectorMsg::Kill {
                    actor: path.clone(),
                    reply,
                },
                CALL_TIMEOUT,
            )
            .await;
        if service != "inspector" {
            // (The inspector, killing itself, may go before it answers.)
            killed
                .expect("the inspector answers")
                .expect("the service is killed");
        }
        let down = troupe_tests::remote::exactly_one_down(service_downs).await;
        if service == "kernel" {
            // The kernel held the monitor of itself too: that one is lost with it.
            assert!(matches!(down.reason, DownReason::Lost(_)), "{down:?}");
        } else {
            assert_eq!(down.reason, DownReason::Killed, "{service}: {down:?}");
        }

        // Started again under its path, and the node answers.
        let mut again = None;
        for _ in 0..250 {
            if let Ok(cell) = Addr::<troupe_runtime::PingMsg>::on("b", path.as_str())
                .resolve()
                .await
            {
                if cell.get_id() != before {
                    again = Some(cell.get_id());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(again.is_some(), "{service} is started again");
        let mut answered = false;
        for _ in 0..100 {
            if echo("b", service).await.is_ok_and(|e| e == service) {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered, "b answers after its {service} was killed");

        if service == "kernel" {
            // The monitor held through b's kernel is lost: its holder hears it, once.
            let down = troupe_tests::remote::exactly_one_down(victim_downs).await;
            assert!(matches!(down.reason, DownReason::Lost(_)), "{down:?}");
            assert!(alive("b", &victim_path).await, "the actor itself lives on");
        } else {
            assert!(alive("b", &victim_path).await);
            drop(victim_downs);
        }
        // A new monitor through the (new) kernel works: exactly one Down for a stop.
        let fresh = counted_monitor(&victim).await;
        victim
            .send(VictimMsg::Die {
                mode: StopMode::Normal,
            })
            .await
            .unwrap();
        let down = troupe_tests::remote::exactly_one_down(fresh).await;
        assert_eq!(down.reason, DownReason::Normal, "{service}: {down:?}");
    }
}
