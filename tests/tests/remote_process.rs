//! A process actor on another node: spawned there by kind, asked for its stats, tailed live
//! into an actor on this node, and stopped from here.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_os::actor::{LogMsg, Stream};
use troupe_os::{ExitReason, ProcessMsg, ProcessSpec};
use troupe_runtime::AddrError;
use troupe_runtime::spawn::spawn_on;
use troupe_runtime::supervisor::Args;
use troupe_tests::{ChildNode, TEST_COOKIE, TaskLitter, start_local_node};

const TESTNODE: &str = env!("CARGO_BIN_EXE_troupe-testnode");
const CALL: Duration = Duration::from_secs(10);

/// Forwards the log messages it receives to the test.
struct Sink;

impl Actor for Sink {
    type Msg = LogMsg;
    type State = tokio::sync::mpsc::UnboundedSender<LogMsg>;
    type Arguments = tokio::sync::mpsc::UnboundedSender<LogMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<LogMsg>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _: ActorRef<LogMsg>,
        msg: LogMsg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(msg);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_on_another_node_is_tailed_and_stopped_from_here() {
    let b = ChildNode::start_testnode(TESTNODE, "b", TEST_COOKIE, &[]).expect("helper node starts");
    let node = start_local_node("a", TEST_COOKIE).await;
    node.add_peer("b", b.addr);
    let root = TaskLitter::new(
        std::env::temp_dir().join(format!("troupe-remote-{}", std::process::id())),
        "testnode-b",
    );
    let script = "for i in 1 2 3; do echo l$i; done; while :; do sleep 0.05; done";
    let spec = ProcessSpec::new(["/bin/sh", "-c", script]).grace(Duration::from_millis(500));
    let args = Args::encode(&(spec, "r1".to_string(), root.root.display().to_string())).unwrap();
    let process = spawn_on::<ProcessMsg>("b", "process", args)
        .await
        .expect("spawned on b");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (sink, _) = Actor::spawn(None, Sink, tx).await.unwrap();
    troupe_runtime::register("sinks/r1", &sink).unwrap();
    process
        .send(ProcessMsg::Subscribe {
            stream: Stream::Stdout,
            from: 0,
            to: "sinks/r1".into(),
        })
        .await
        .unwrap();
    let mut text = Vec::new();
    while text != b"l1\nl2\nl3\n" {
        match tokio::time::timeout(CALL, rx.recv())
            .await
            .expect("log in time")
        {
            Some(LogMsg::Chunk {
                task,
                stream,
                chunk,
            }) => {
                assert_eq!((task.as_str(), stream), ("r1", Stream::Stdout));
                assert_eq!(chunk.offset, text.len() as u64);
                text.extend(chunk.bytes);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let stats = process
        .call(|reply| ProcessMsg::Stats { reply }, CALL)
        .await
        .unwrap();
    assert!(stats.pid > 0);
    let (_, down) = troupe_runtime::monitor_channel(&process).await.unwrap();
    // The answer races the actor's own stop across the wire (see the note in
    // docs/runtime-semantics.md): it is Killed when it arrives; the Down always does.
    match process.call(|reply| ProcessMsg::Stop { reply }, CALL).await {
        Ok(reason) => assert_eq!(reason, ExitReason::Killed),
        Err(AddrError::NoReply { .. }) => {}
        Err(e) => panic!("stop failed: {e}"),
    }
    let down = tokio::time::timeout(CALL, down).await.unwrap().unwrap();
    assert_eq!(down.reason, troupe_runtime::DownReason::Shutdown);
    match tokio::time::timeout(CALL, rx.recv())
        .await
        .expect("end in time")
    {
        Some(LogMsg::End { task, .. }) => assert_eq!(task, "r1"),
        other => panic!("unexpected {other:?}"),
    }
    node.stop().await;
}
