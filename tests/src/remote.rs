//! Talking to the helper node's actors: echo, victims, and monitors whose firings are
//! counted.

use std::time::Duration;

use troupe_runtime::{Addr, AddrError, Down, Exit, monitor_with};

use crate::actors::{CALL_TIMEOUT, ControlMsg, EchoMsg, VictimMsg};

/// Calls the echo actor on `node`.
pub async fn echo(node: &str, text: &str) -> Result<String, AddrError> {
    Addr::<EchoMsg>::on(node, "echo")
        .call(
            |reply| EchoMsg::Echo {
                text: text.into(),
                reply,
            },
            CALL_TIMEOUT,
        )
        .await
}

/// Spawns a victim actor at `path` on `node` (trapping exits when `trap`).
pub async fn spawn_victim(node: &str, path: &str, trap: bool) {
    let ok = Addr::<ControlMsg>::on(node, "control")
        .call(
            |reply| ControlMsg::Spawn {
                path: path.into(),
                trap,
                reply,
            },
            CALL_TIMEOUT,
        )
        .await
        .expect("control answers");
    assert!(ok, "victim {path} spawned on {node}");
}

/// Whether an actor lives at `path` on `node`.
pub async fn alive(node: &str, path: &str) -> bool {
    try_alive(node, path).await.expect("control answers")
}

/// [`alive`], or the error when `node` cannot be asked (a reconnection racing the close of
/// the previous session, say).
pub async fn try_alive(node: &str, path: &str) -> Result<bool, AddrError> {
    Addr::<ControlMsg>::on(node, "control")
        .call(
            |reply| ControlMsg::Alive {
                path: path.into(),
                reply,
            },
            CALL_TIMEOUT,
        )
        .await
}

/// Places a monitor whose every firing is counted, to prove there is exactly one.
pub async fn counted_monitor(addr: &Addr<VictimMsg>) -> tokio::sync::mpsc::UnboundedReceiver<Down> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    monitor_with(addr, move |down| {
        let _ = tx.send(down);
    })
    .await
    .expect("monitor placed");
    rx
}

/// Waits for the one Down, then checks that no second one follows.
pub async fn exactly_one_down(mut rx: tokio::sync::mpsc::UnboundedReceiver<Down>) -> Down {
    let down = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a Down within 5 s")
        .expect("the monitor channel stays open until it fires");
    // The sender is consumed by the firing; a second Down would need a second entry.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .map_or(true, |next| next.is_none()),
        "a second Down arrived"
    );
    down
}

/// The exits the trapping victim at `path` on `node` has received, once there are at least
/// `want` of them or 5 s have passed.
pub async fn trapped_exits(node: &str, path: &str, want: usize) -> Vec<Exit> {
    let control = Addr::<ControlMsg>::on(node, "control");
    let mut seen = Vec::new();
    for _ in 0..250 {
        seen = control
            .call(
                |reply| ControlMsg::Exits {
                    path: path.into(),
                    reply,
                },
                CALL_TIMEOUT,
            )
            .await
            .expect("control answers");
        if seen.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}
