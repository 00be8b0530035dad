//! The process service from a third node: `troupe master` and `troupe agent` as OS processes,
//! and this test's own node, which is neither the master's nor the processes', calling the
//! `Processes` handle against real processes.

use std::process::Command;
use std::time::Duration;

use troupe_actors::client::{ClientError, Processes};
use troupe_actors::processes::{
    Constraint, Needs, Placement, ProcessEnd, ProcessFilter, ProcessRefused, SpawnRefused,
};
use troupe_actors::protocol::{AgentId, Resources, TaskId, TaskState};
use troupe_os::actor::Stream;
use troupe_os::{ExitReason, ProcessSpec};
use troupe_tests::{ChildNode, ScratchDir, TEST_COOKIE, TaskLitter, start_local_node};

const TROUPE: &str = env!("CARGO_BIN_EXE_troupe");

fn needs(placement: Placement) -> Needs {
    Needs {
        resources: Resources::new(0.1, 32.0),
        placement,
        ports: 0,
    }
}

fn rack(text: &str) -> Placement {
    Placement::Constraints(vec![Constraint::parse(text).unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_is_spawned_listed_monitored_signalled_and_killed_from_a_third_node() {
    let dir = ScratchDir::new("processes");
    let agent_name = format!("pr{}", std::process::id());
    let _litter = TaskLitter::new(dir.join("work").join("sandboxes"), &agent_name);
    let mut cmd = Command::new(TROUPE);
    cmd.args([
        "master",
        "--name",
        "pm",
        "--listen",
        "127.0.0.1:0",
        "--cookie",
        TEST_COOKIE,
    ]);
    cmd.args(["--allocation-interval-ms", "100"]);
    let master = ChildNode::spawn("pm", cmd).expect("troupe master starts");
    let mut cmd = Command::new(TROUPE);
    cmd.args(["agent", "--name", &agent_name, "--cookie", TEST_COOKIE]);
    cmd.args([
        "--master",
        &master.addr.to_string(),
        "--cpus",
        "1",
        "--mem",
        "256",
    ]);
    cmd.args(["--attr", "rack=r1", "--work-dir"]);
    cmd.arg(dir.join("work"));
    let _agent = ChildNode::spawn(&agent_name, cmd).expect("troupe agent starts");

    let node = start_local_node("client", TEST_COOKIE).await;
    let master_node = node.connect(master.addr).await.expect("the master answers");
    let processes = Processes::on(master_node);

    // Placed by its constraint, answered once it runs, with where.
    let mut sleeper = None;
    for _ in 0..100 {
        let spawned = processes
            .spawn(
                "sleeper",
                ProcessSpec::new(["sleep", "300"]),
                needs(rack("rack = r1")),
            )
            .await;
        match spawned {
            Ok(p) => {
                sleeper = Some(p);
                break;
            }
            // The agent may not have registered yet.
            Err(ClientError::Spawn(SpawnRefused::NotPlaced { .. })) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("spawn: {e}"),
        }
    }
    let sleeper = sleeper.expect("the sleeper is placed");
    assert_eq!(sleeper.agent, AgentId(agent_name.clone()));
    assert!(sleeper.location.is_some(), "{sleeper:?}");
    let view = processes.get(&sleeper.id).await.unwrap();
    assert_eq!(view.state, TaskState::Running);
    let pid = view.pid.expect("a running process has its pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert_eq!(cmdline, b"sleep\x00300\x00", "pid {pid} is the process");
    let listed = processes.list().await.unwrap();
    assert!(listed.iter().any(|p| p.id == sleeper.id));

    // A signal ends it; its one monitor hears how.
    let down = processes.monitor(&sleeper.id).await.unwrap();
    processes.signal(&sleeper.id, "TERM").await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), down.wait())
        .await
        .expect("the end comes")
        .expect("from the service");
    assert_eq!(end, ProcessEnd::Exited(ExitReason::Signaled(15)));

    // An exit code, as data.
    let failing = processes
        .spawn(
            "failing",
            ProcessSpec::new(["sh", "-c", "sleep 0.3; exit 3"]),
            needs(Placement::Agent(AgentId(agent_name.clone()))),
        )
        .await
        .unwrap();
    let down = processes.monitor(&failing.id).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), down.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, ProcessEnd::Exited(ExitReason::Exited(3)));
    // A monitor placed after the end fires at once, the same.
    let late = processes.monitor(&failing.id).await.unwrap();
    assert_eq!(
        late.wait().await,
        Some(ProcessEnd::Exited(ExitReason::Exited(3)))
    );

    // A kill.
    let victim = processes
        .spawn(
            "victim",
            ProcessSpec::new(["sleep", "300"]),
            needs(Placement::Any),
        )
        .await
        .unwrap();
    let down = processes.monitor(&victim.id).await.unwrap();
    processes.kill(&victim.id).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), down.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, ProcessEnd::Exited(ExitReason::Killed));
    assert!(matches!(
        processes.kill(&victim.id).await,
        Err(ClientError::Process(_))
    ));

    // Filtered lists, and one process with its resource use, asked of its agent.
    let napper = processes
        .spawn(
            "napper",
            ProcessSpec::new(["sleep", "300"]),
            needs(Placement::Any),
        )
        .await
        .unwrap();
    let live = processes
        .list_where(ProcessFilter {
            live: true,
            ..ProcessFilter::default()
        })
        .await
        .unwrap();
    assert!(live.iter().all(|p| p.end.is_none()) && live.iter().any(|p| p.id == napper.id));
    let named = processes
        .list_where(ProcessFilter {
            name: Some("napp".into()),
            agent: Some(napper.agent.clone()),
            ..ProcessFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        named.iter().map(|p| &p.id).collect::<Vec<_>>(),
        vec![&napper.id]
    );
    let got = processes.get(&napper.id).await.unwrap();
    let usage = got.usage.expect("its use, from its agent");
    assert_eq!(Some(usage.pid), got.pid);
    assert!(usage.memory_bytes > 0, "{usage:?}");
    processes.kill(&napper.id).await.unwrap();

    // A stop with a grace of its own: one that ignores its stop signal, with a minute of
    // grace in its spec, is SIGKILLed after the grace the stop gives.
    let stubborn = processes
        .spawn(
            "stubborn",
            ProcessSpec::new(["sh", "-c", "trap '' TERM; sleep 300"])
                .grace(Duration::from_secs(60)),
            needs(Placement::Any),
        )
        .await
        .unwrap();
    let down = processes.monitor(&stubborn.id).await.unwrap();
    processes
        .stop(&stubborn.id, Duration::from_millis(200))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(30), down.wait())
        .await
        .expect("ended well before its own minute of grace")
        .unwrap();
    assert_eq!(end, ProcessEnd::Exited(ExitReason::Killed));

    // Standard input: a process's mailbox. Sent in order, closed, and it reads the end.
    let reader = processes
        .spawn(
            "reader",
            ProcessSpec::new([
                "sh",
                "-c",
                "while read l; do echo \"got $l\"; done; echo eof",
            ])
            .stdin_pipe(),
            needs(Placement::Any),
        )
        .await
        .unwrap();
    let down = processes.monitor(&reader.id).await.unwrap();
    // Its output followed live, from the start, while it is written to.
    let mut follow = processes
        .logs(&reader.id, Stream::Stdout, 0, true)
        .await
        .unwrap();
    for line in ["one\n", "two\n", "three\n"] {
        processes
            .send(&reader.id, line.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let mut followed = Vec::new();
    while !String::from_utf8_lossy(&followed).contains("got three") {
        let chunk = follow
            .next(Duration::from_secs(20))
            .await
            .expect("followed output comes live");
        followed.extend(chunk);
    }
    assert_eq!(
        String::from_utf8_lossy(&followed),
        "got one\ngot two\ngot three\n"
    );
    processes.close_stdin(&reader.id).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), down.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, ProcessEnd::Exited(ExitReason::Exited(0)));
    let out = processes.output(&reader.id, Stream::Stdout).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "got one\ngot two\ngot three\neof\n"
    );
    // Input to one that has ended, or was not started with a pipe, is refused with why.
    assert!(matches!(
        processes.send(&reader.id, b"late\n".to_vec()).await,
        Err(ClientError::Process(ProcessRefused::Ended { .. }))
    ));
    let deaf = processes
        .spawn(
            "deaf",
            ProcessSpec::new(["sleep", "300"]),
            needs(Placement::Any),
        )
        .await
        .unwrap();
    assert!(matches!(
        processes.send(&deaf.id, b"hello\n".to_vec()).await,
        Err(ClientError::Stdin(troupe_os::stdin::StdinRefused::NotPiped))
    ));
    processes.kill(&deaf.id).await.unwrap();

    // What cannot be placed fails at once, with why; nothing is left waiting.
    for (placement, why) in [
        (rack("rack = r9"), "no agent meets the placement rack = r9"),
        (
            Placement::Agent(AgentId("nope".into())),
            "no agent nope is registered",
        ),
    ] {
        match processes
            .spawn("nowhere", ProcessSpec::new(["true"]), needs(placement))
            .await
        {
            Err(ClientError::Spawn(SpawnRefused::NotPlaced { why: got, .. })) => {
                assert!(got.contains(why), "{got}")
            }
            other => panic!("expected not placed, got {other:?}"),
        }
    }
    let too_big = Needs {
        resources: Resources::new(64.0, 32.0),
        placement: Placement::Any,
        ports: 0,
    };
    assert!(matches!(
        processes
            .spawn("huge", ProcessSpec::new(["true"]), too_big)
            .await,
        Err(ClientError::Spawn(SpawnRefused::NotPlaced { .. }))
    ));
    assert!(matches!(
        processes.monitor(&TaskId("p-unknown".into())).await,
        Err(ClientError::Process(_))
    ));
    assert!(
        processes
            .list()
            .await
            .unwrap()
            .iter()
            .all(|p| p.state.is_terminal()),
        "nothing runs or waits"
    );
    node.stop().await;
}

#[test]
fn troupe_spawn_says_where_procs_lists_and_kill_ends_a_process() {
    let dir = ScratchDir::new("procs-cli");
    let name = format!("ps{}", std::process::id());
    let (dev, _litter) = troupe_tests::start_dev(std::path::Path::new(TROUPE), &name, &dir)
        .expect("troupe dev starts");
    let addr = dev.addr.to_string();
    let troupe = |args: &[&str]| troupe_tests::troupe_at(TROUPE, &addr, args);
    let mut spawned = None;
    for _ in 0..100 {
        let (code, out, err) = troupe(&[
            "spawn",
            "--constraint",
            "host != nowhere",
            "--name",
            "napper",
            "--",
            "sleep",
            "300",
        ]);
        if code == 0 {
            spawned = Some(out);
            break;
        }
        assert!(err.contains("not placed"), "{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = spawned.expect("troupe spawn places it");
    assert!(out.contains(" running on "), "{out}");
    let id = out.split_whitespace().next().unwrap().to_string();
    assert!(id.starts_with("p-napper-"), "{id}");

    let (code, json, err) = troupe(&["procs", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let p = listed
        .iter()
        .find(|p| p["id"] == id.as_str())
        .expect("listed");
    assert_eq!(p["state"], "running");
    assert!(p["pid"].is_i64(), "{p}");
    let (_, table, _) = troupe(&["procs"]);
    assert!(
        table.contains(&id) && table.contains("RUNNING") && table.contains("sleep 300"),
        "{table}"
    );

    // A process is a task: `troupe kill` ends it, and the service books its end.
    let (code, _, err) = troupe(&["kill", &id]);
    assert_eq!(code, 0, "{err}");
    // (The service hears of the end through its framework, a moment after the master.)
    let mut state = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, json, _) = troupe(&["procs", "--json"]);
        let listed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap_or_default();
        state = listed
            .iter()
            .find(|p| p["id"] == id.as_str())
            .map(|p| p["state"].clone())
            .unwrap_or_default();
        if state == "killed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state, "killed");

    // `troupe kill` of a permanent process's id stops it for good: it is not started again.
    let (code, out, err) = troupe(&[
        "spawn",
        "--restart",
        "permanent",
        "--name",
        "keeper",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(code, 0, "{err}");
    let keeper = out.split_whitespace().next().unwrap().to_string();
    let (code, out, err) = troupe(&["kill", &keeper]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("{keeper} killed"));
    std::thread::sleep(Duration::from_millis(300));
    let (_, json, _) = troupe(&["procs", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let p = listed.iter().find(|p| p["id"] == keeper.as_str()).unwrap();
    assert_eq!(
        (p["state"].as_str(), p["incarnation"].as_u64()),
        (Some("killed"), Some(1))
    );

    // No place: refused at once, with why; a malformed constraint is a usage error.
    let (code, _, err) = troupe(&["spawn", "--agent", "nope", "--", "true"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no agent nope is registered"), "{err}");
    let (code, _, err) = troupe(&["spawn", "--constraint", "rack", "--", "true"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("KEY = VALUE"), "{err}");
}

/// The pids of the processes whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .as_deref()
                == Some(&want[..])
        })
        .filter(|pid| troupe_os::procfs::is_running(*pid))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_process_restarts_on_its_agent_moves_when_the_agent_is_lost_and_never_runs_twice()
 {
    use troupe_actors::processes::RestartPolicy;
    use troupe_runtime::supervisor::Restart;
    let dir = ScratchDir::new("processes-move");
    let tag = std::process::id();
    let names = [format!("mv{tag}a"), format!("mv{tag}b")];
    let _litter: Vec<TaskLitter> = names
        .iter()
        .map(|n| TaskLitter::new(dir.join(n).join("sandboxes"), n))
        .collect();
    let mut cmd = Command::new(TROUPE);
    cmd.args([
        "master",
        "--name",
        "mvm",
        "--listen",
        "127.0.0.1:0",
        "--cookie",
        TEST_COOKIE,
    ]);
    cmd.args(["--allocation-interval-ms", "100"]);
    let master = ChildNode::spawn("mvm", cmd).expect("troupe master starts");
    let agent = |name: &str| {
        let mut cmd = Command::new(TROUPE);
        cmd.args(["agent", "--name", name, "--cookie", TEST_COOKIE]);
        cmd.args([
            "--master",
            &master.addr.to_string(),
            "--cpus",
            "1",
            "--mem",
            "256",
        ]);
        cmd.arg("--work-dir").arg(dir.join(name));
        ChildNode::spawn(name, cmd).expect("troupe agent starts")
    };
    let mut agents: Vec<Option<ChildNode>> = names.iter().map(|n| Some(agent(n))).collect();

    let node = start_local_node("mvclient", TEST_COOKIE).await;
    let master_node = node.connect(master.addr).await.expect("the master answers");
    let processes = Processes::on(master_node);
    let marker = format!("1{tag}");
    let argv = ["sleep", marker.as_str()];
    let mut first = None;
    for _ in 0..100 {
        match processes
            .spawn_with(
                "keeper",
                ProcessSpec::new(argv),
                needs(Placement::Any),
                RestartPolicy::of(Restart::Permanent),
            )
            .await
        {
            Ok(p) => {
                first = Some(p);
                break;
            }
            Err(ClientError::Spawn(SpawnRefused::NotPlaced { .. })) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("spawn: {e}"),
        }
    }
    let first = first.expect("placed");
    let id = first.id.clone();
    let home = names.iter().position(|n| n == &first.agent.0).unwrap();
    let down = processes.monitor(&id).await.unwrap();
    let view = |processes: Processes, id: TaskId| async move { processes.get(&id).await.unwrap() };
    let wait_for = |want: u32| {
        let (processes, id) = (processes.clone(), id.clone());
        async move {
            for _ in 0..200 {
                let v = processes.get(&id).await.unwrap();
                if v.incarnation == want && v.state == TaskState::Running {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!(
                "incarnation {want} does not run: {:?}",
                processes.get(&id).await
            );
        }
    };

    // A crash (kill -9 of the process): started again, on the same agent.
    let pid = view(processes.clone(), id.clone()).await.pid.unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let second = wait_for(2).await;
    assert_eq!(
        second.agent,
        Some(first.agent.clone()),
        "its own agent first"
    );
    assert_ne!(second.pid, Some(pid));
    assert!(second.last_restart.is_some());

    // Its agent killed (SIGKILL: the copy runs on): started on the other agent.
    agents[home] = None;
    let third = wait_for(3).await;
    let other = AgentId(names[1 - home].clone());
    assert_eq!(third.agent, Some(other), "moved");
    assert_eq!(
        pids_running(&argv).len(),
        2,
        "the lost agent's copy still runs, for now"
    );

    // The lost agent comes back: its copy is killed; one runs.
    agents[home] = Some(agent(&names[home]));
    let mut running = Vec::new();
    for _ in 0..200 {
        running = pids_running(&argv);
        if running.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, vec![third.pid.unwrap()], "exactly one copy runs");
    assert_eq!(processes.get(&id).await.unwrap().incarnation, 3);

    // Asked to stop, it stays stopped; its monitor hears once, now.
    processes.kill(&id).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), down.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, ProcessEnd::Exited(ExitReason::Killed));
    assert!(pids_running(&argv).is_empty());
    node.stop().await;
}

/// An actor of the test's node that does nothing: an end to link.
struct Idle;

impl troupe_runtime::ractor::Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: troupe_runtime::ractor::ActorRef<()>,
        _args: (),
    ) -> Result<(), troupe_runtime::ractor::ActorProcessingErr> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_ends_the_actor_with_its_process_and_the_process_with_its_actor() {
    use troupe_runtime::ractor::{Actor, ActorStatus};
    let dir = ScratchDir::new("processes-link");
    let agent_name = format!("lk{}", std::process::id());
    let _litter = TaskLitter::new(dir.join("work").join("sandboxes"), &agent_name);
    let mut cmd = Command::new(TROUPE);
    cmd.args([
        "master",
        "--name",
        "lkm",
        "--listen",
        "127.0.0.1:0",
        "--cookie",
        TEST_COOKIE,
    ]);
    cmd.args(["--allocation-interval-ms", "100"]);
    let master = ChildNode::spawn("lkm", cmd).expect("troupe master starts");
    let mut cmd = Command::new(TROUPE);
    cmd.args(["agent", "--name", &agent_name, "--cookie", TEST_COOKIE]);
    cmd.args([
        "--master",
        &master.addr.to_string(),
        "--cpus",
        "1",
        "--mem",
        "256",
        "--work-dir",
    ]);
    cmd.arg(dir.join("work"));
    let _agent = ChildNode::spawn(&agent_name, cmd).expect("troupe agent starts");
    let node = start_local_node("lkclient", TEST_COOKIE).await;
    let processes = Processes::on(node.connect(master.addr).await.unwrap());
    let spawn = |name: &'static str| {
        let processes = processes.clone();
        async move {
            for _ in 0..100 {
                match processes
                    .spawn(
                        name,
                        ProcessSpec::new(["sleep", "300"]),
                        needs(Placement::Any),
                    )
                    .await
                {
                    Ok(p) => return p,
                    Err(ClientError::Spawn(SpawnRefused::NotPlaced { .. })) => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => panic!("spawn: {e}"),
                }
            }
            panic!("not placed")
        }
    };

    // The process is killed by a signal: the linked actor stops, saying why.
    let p1 = spawn("linked1").await;
    let (actor, handle) = Actor::spawn(None, Idle, ()).await.unwrap();
    let _link = processes.link(&actor.get_cell(), &p1.id).await.unwrap();
    processes.signal(&p1.id, "KILL").await.unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(20), handle).await;
    assert!(stopped.is_ok(), "the linked actor stopped");
    assert_eq!(actor.get_status(), ActorStatus::Stopped);

    // The actor fails: the linked process is killed.
    let p2 = spawn("linked2").await;
    let down = processes.monitor(&p2.id).await.unwrap();
    let (actor, _handle) = Actor::spawn(None, Idle, ()).await.unwrap();
    let _link = processes.link(&actor.get_cell(), &p2.id).await.unwrap();
    actor.stop(Some("it failed".into()));
    let end = tokio::time::timeout(Duration::from_secs(20), down.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, ProcessEnd::Exited(ExitReason::Killed));

    // Unlinked, and a monitor taken back: neither end's going touches the other.
    let p3 = spawn("unlinked").await;
    let (actor, _handle) = Actor::spawn(None, Idle, ()).await.unwrap();
    let link = processes.link(&actor.get_cell(), &p3.id).await.unwrap();
    link.unlink();
    let taken_back = processes.monitor(&p3.id).await.unwrap();
    taken_back.demonitor().await;
    actor.stop(Some("it failed".into()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        processes.get(&p3.id).await.unwrap().state,
        TaskState::Running
    );
    processes.kill(&p3.id).await.unwrap();
    node.stop().await;
}

#[test]
fn troupe_stdin_and_the_repls_send_write_to_a_process_and_spawn_gives_it_ports() {
    let dir = ScratchDir::new("procs-stdin");
    let name = format!("pi{}", std::process::id());
    let (dev, _litter) = troupe_tests::start_dev(std::path::Path::new(TROUPE), &name, &dir)
        .expect("troupe dev starts");
    let addr = dev.addr.to_string();
    let troupe = |args: &[&str]| troupe_tests::troupe_at(TROUPE, &addr, args);
    let script = "echo \"port $PORT0 {port0}\"; while read l; do echo \"got $l\"; done; echo eof";
    let mut spawned = None;
    for _ in 0..100 {
        let (code, out, err) = troupe(&[
            "spawn", "--stdin", "pipe", "--ports", "1", "--name", "reader", "--", "sh", "-c",
            script,
        ]);
        if code == 0 {
            spawned = Some(out);
            break;
        }
        assert!(err.contains("not placed"), "{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = spawned.expect("troupe spawn places it");
    let id = out.split_whitespace().next().unwrap().to_string();
    let port: u16 = out
        .rsplit("ports ")
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port said: {out}"));
    assert!((31_000..=32_000).contains(&port), "{out}");

    let (code, _, err) = troupe(&["stdin", &id, "hello", "world"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = troupe_tests::troupe_with_input(
        TROUPE,
        &addr,
        &["repl"],
        Some(&format!("send {id} from the repl\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) =
        troupe_tests::troupe_with_input(TROUPE, &addr, &["stdin", &id], Some("piped in\n"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = troupe(&["stdin", &id, "--close"]);
    assert_eq!(code, 0, "{err}");
    let mut logs = String::new();
    for _ in 0..100 {
        logs = troupe(&["logs", &id]).1;
        if logs.contains("eof") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        logs,
        format!("port {port} {port}\ngot hello world\ngot from the repl\ngot piped in\neof\n")
    );
    // Ended: more input is refused with why.
    let (code, _, err) = troupe(&["stdin", &id, "late"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("already ended") || err.contains("closed"),
        "{err}"
    );
}
