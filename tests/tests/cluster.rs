//! The cluster core on the embedded cluster (master, runner and agents as actors of this
//! test's node): tasks launched by a framework end once each in their right state, every
//! resource comes back, and invalid launches end in `Error` or `Dropped` without harming
//! the tasks beside them.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use troupe_actors::dev::{self, DevCluster, DevConfig};
use troupe_actors::framework::{Driver, FrameworkSettings};
use troupe_actors::master::{MASTER_PATH, MasterConfig};
use troupe_actors::protocol::{
    ClusterState, MasterMsg, OfferInfo, Resources, TaskId, TaskState, TaskStatus,
};
use troupe_runtime::Addr;
use troupe_tests::cluster::{Seen, TestFramework, sh_task};
use troupe_tests::{TEST_COOKIE, TaskLitter, start_local_node};

async fn cluster(name: &str, agents: usize) -> (DevCluster, Vec<TaskLitter>) {
    cluster_with(name, agents, |_| {}).await
}

async fn cluster_with(
    name: &str,
    agents: usize,
    tune: impl FnOnce(&mut MasterConfig),
) -> (DevCluster, Vec<TaskLitter>) {
    // RUST_LOG=troupe_actors=debug shows the cluster's reasoning in a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    start_local_node(name, TEST_COOKIE).await;
    let work = std::env::temp_dir().join(format!("troupe-cluster-{name}-{}", std::process::id()));
    let mut master = MasterConfig {
        allocation_interval: Duration::from_millis(100),
        ..MasterConfig::default()
    };
    tune(&mut master);
    let cluster = dev::start(DevConfig {
        agents,
        work_dir: work.clone(),
        master,
        agent_resources: Some(Resources::new(2.0, 1024.0)),
    })
    .await
    .expect("the embedded cluster starts");
    let mut litter: Vec<TaskLitter> = cluster
        .agent_ids
        .iter()
        .map(|id| TaskLitter::new(work.join(id).join("sandboxes"), id))
        .collect();
    if let Some(first) = litter.pop() {
        litter.push(first.and_work_dir(work));
    }
    (cluster, litter)
}

async fn state() -> ClusterState {
    Addr::<MasterMsg>::new(MASTER_PATH)
        .call(
            |reply| MasterMsg::State { all: true, reply },
            Duration::from_secs(5),
        )
        .await
        .expect("the master answers")
}

/// Collects statuses until every task in `tasks` ended, or `limit` passes.
async fn until_all_end(
    seen: &mut UnboundedReceiver<Seen>,
    tasks: usize,
    limit: Duration,
) -> BTreeMap<TaskId, Vec<TaskStatus>> {
    let mut by_task: BTreeMap<TaskId, Vec<TaskStatus>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ended = by_task
            .values()
            .filter(|s| s.iter().any(|s| s.state.is_terminal()))
            .count();
        if ended >= tasks {
            return by_task;
        }
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(Seen::Status(s))) => by_task.entry(s.task.clone()).or_default().push(s),
            Ok(Some(_)) => {}
            _ => return by_task,
        }
    }
}

async fn next_offers(seen: &mut UnboundedReceiver<Seen>) -> Vec<OfferInfo> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), seen.recv()).await {
            Ok(Some(Seen::Offers(offers))) => return offers,
            Ok(Some(_)) => {}
            _ => panic!("no offers within 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_mixed_exit_codes_each_end_once_in_their_state_and_resources_return() {
    let (cluster, _litter) = cluster("cl-mixed", 2).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| sh_task(&format!("t{i}"), &format!("exit {}", i % 4)))
        .collect();
    let (fw, mut seen) = TestFramework::auto(tasks);
    let driver = Driver::start(FrameworkSettings::new("mixed"), None, fw)
        .await
        .expect("subscribes");
    let by_task = until_all_end(&mut seen, 20, Duration::from_secs(60)).await;
    assert_eq!(by_task.len(), 20, "every task reported: {by_task:?}");
    for i in 0..20 {
        let statuses = &by_task[&TaskId(format!("t{i}"))];
        let ends: Vec<_> = statuses.iter().filter(|s| s.state.is_terminal()).collect();
        assert_eq!(ends.len(), 1, "t{i} ends exactly once: {statuses:?}");
        let code = i % 4;
        let want = if code == 0 {
            TaskState::Finished
        } else {
            TaskState::Failed
        };
        assert_eq!(ends[0].state, want, "t{i}: {:?}", ends[0]);
        assert_eq!(ends[0].exit_code, Some(code), "t{i}");
    }
    // Everything returns to the pool: no task holds anything.
    let mut free = false;
    for _ in 0..50 {
        let s = state().await;
        // What an agent has allocated beyond its outstanding offers is held by tasks.
        let held_by_tasks = |a: &troupe_actors::protocol::AgentView| {
            let offered = s
                .offers
                .iter()
                .filter(|o| o.agent == a.info.id)
                .fold(Resources::ZERO, |t, o| t.plus(o.resources));
            a.allocated.minus(offered)
        };
        if s.agents.iter().all(|a| held_by_tasks(a).is_empty())
            && s.tasks.iter().all(|t| t.status.state.is_terminal())
        {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(free, "resources return: {:?}", state().await.agents);
    driver.stop();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_launches_end_in_error_or_dropped_with_their_reason_and_harm_nothing() {
    let (cluster, _litter) = cluster("cl-invalid", 1).await;
    let (fw, mut seen) = TestFramework::manual();
    let driver = Driver::start(FrameworkSettings::new("invalid"), None, fw)
        .await
        .expect("subscribes");
    let offers = next_offers(&mut seen).await;
    let offer = offers[0].id.clone();
    // One launch on the offer: a good task beside each kind of bad one.
    let good = sh_task("good", "sleep 0.2; exit 0");
    let mut too_big = sh_task("too-big", "true");
    too_big.resources = Resources::new(64.0, 16.0);
    let mut bad_command = sh_task("bad-command", "true");
    bad_command.command.argv.clear();
    let duplicate = sh_task("good", "exit 7");
    driver.launch(
        std::slice::from_ref(&offer),
        vec![good, too_big, bad_command, duplicate],
    );
    // An offer that is not outstanding: the one just used.
    driver.launch(&[offer], vec![sh_task("stale-offer", "true")]);
    let by_task = until_all_end(&mut seen, 4, Duration::from_secs(30)).await;
    let end = |id: &str| {
        by_task
            .get(&TaskId(id.into()))
            .and_then(|s| s.iter().find(|s| s.state.is_terminal()))
            .cloned()
            .unwrap_or_else(|| panic!("{id} ended: {by_task:?}"))
    };
    let big = end("too-big");
    assert_eq!(big.state, TaskState::Error);
    assert!(
        big.reason.contains("does not fit") || big.reason.contains("exceed"),
        "{big:?}"
    );
    let bad = end("bad-command");
    assert_eq!(bad.state, TaskState::Error, "{bad:?}");
    assert!(!bad.reason.is_empty());
    let stale = end("stale-offer");
    assert_eq!(stale.state, TaskState::Dropped, "{stale:?}");
    assert!(stale.reason.contains("offer"), "{stale:?}");
    // The duplicate is refused, and the task that owns the id is untouched.
    let good: Vec<_> = by_task[&TaskId("good".into())].clone();
    assert!(
        good.iter()
            .any(|s| s.state == TaskState::Error && s.reason.contains("already in use")),
        "the duplicate is refused: {good:?}"
    );
    let good_end = good
        .iter()
        .rev()
        .find(|s| s.state.is_terminal() && s.state != TaskState::Error);
    let good_end = match good_end {
        Some(s) => s.clone(),
        None => {
            let more = until_all_end(&mut seen, 1, Duration::from_secs(20)).await;
            more[&TaskId("good".into())]
                .iter()
                .find(|s| s.state.is_terminal())
                .cloned()
                .expect("good ends")
        }
    };
    assert_eq!(good_end.state, TaskState::Finished, "{good_end:?}");
    let s = state().await;
    let tracked = s.tasks.iter().find(|t| t.id.0 == "good").expect("tracked");
    assert_eq!(tracked.status.state, TaskState::Finished);
    driver.stop();
    cluster.stop().await;
}

/// Waits for a status of `task` in `state`.
async fn wait_for(seen: &mut UnboundedReceiver<Seen>, task: &str, state: TaskState) -> TaskStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(Seen::Status(s))) if s.task.0 == task && s.state == state => return s,
            Ok(Some(_)) => {}
            _ => panic!("{task} never became {state}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_reconciliation_answers_known_tasks_and_unknown_ones() {
    let (cluster, _litter) = cluster("cl-reconcile", 1).await;
    let (fw, mut seen) = TestFramework::auto(vec![sh_task("long", "sleep 30")]);
    let driver = Driver::start(FrameworkSettings::new("rec"), None, fw)
        .await
        .unwrap();
    wait_for(&mut seen, "long", TaskState::Running).await;
    driver.reconcile(vec![TaskId("long".into()), TaskId("never-launched".into())]);
    let running = wait_for(&mut seen, "long", TaskState::Running).await;
    assert_eq!(
        running.agent.as_ref().map(|a| a.0.as_str()),
        Some("cl-reconcile-a1")
    );
    let unknown = wait_for(&mut seen, "never-launched", TaskState::Unknown).await;
    assert!(!unknown.reason.is_empty());
    // The agent reports what its tasks use.
    let agent = Addr::<troupe_actors::protocol::AgentMsg>::new("agent/cl-reconcile-a1");
    let usage = agent
        .call(
            |reply| troupe_actors::protocol::AgentMsg::Usage { reply },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(usage[0].task.0, "long");
    assert!(usage[0].pid > 0);
    driver.kill(&TaskId("long".into()));
    let killed = wait_for(&mut seen, "long", TaskState::Killed).await;
    assert_eq!(killed.exit_code, None);
    driver.stop();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_offers_are_rescinded_after_the_offer_timeout() {
    let (cluster, _litter) = cluster_with("cl-timeout", 1, |m| {
        m.offer_timeout = Some(Duration::from_millis(300));
    })
    .await;
    let (fw, mut seen) = TestFramework::manual();
    let driver = Driver::start(FrameworkSettings::new("slow"), None, fw)
        .await
        .unwrap();
    let offers = next_offers(&mut seen).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rescinded = loop {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(Seen::Rescinded(id))) => break id,
            Ok(Some(_)) => {}
            _ => panic!("the held offer was not rescinded"),
        }
    };
    assert_eq!(rescinded, offers[0].id);
    // Launching on it now is too late: the task is dropped.
    driver.launch(&[rescinded], vec![sh_task("late", "true")]);
    let late = wait_for(&mut seen, "late", TaskState::Dropped).await;
    assert!(late.reason.contains("offer"), "{late:?}");
    driver.stop();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_gone_past_its_failover_timeout_loses_its_tasks() {
    let (cluster, _litter) = cluster("cl-failover", 1).await;
    let (fw, mut seen) = TestFramework::auto(vec![sh_task("orphan", "sleep 30")]);
    let mut settings = FrameworkSettings::new("brief");
    settings.failover_timeout = Duration::from_millis(500);
    let driver = Driver::start(settings, None, fw).await.unwrap();
    wait_for(&mut seen, "orphan", TaskState::Running).await;
    driver.abandon();
    let mut ended = None;
    for _ in 0..100 {
        let s = state().await;
        let task = s.tasks.iter().find(|t| t.id.0 == "orphan");
        if let Some(t) = task.filter(|t| t.status.state.is_terminal()) {
            ended = Some(t.status.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(ended) = ended else {
        let s = state().await;
        panic!(
            "the orphan is not killed after the failover timeout: {:?} {:?}",
            s.tasks, s.frameworks
        );
    };
    assert_eq!(ended.state, TaskState::Killed, "{ended:?}");
    assert!(
        state()
            .await
            .frameworks
            .iter()
            .all(|f| f.info.name != "brief")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_tells_a_subscriber_of_frameworks_and_each_state_of_a_task_in_order() {
    use troupe_actors::events::Events;
    use troupe_actors::protocol::ClusterEvent;
    let (cluster, _litter) = cluster("cl-events", 1).await;
    let mut events = Events::subscribe(Addr::new(MASTER_PATH))
        .await
        .expect("the master takes the subscription");
    let (fw, mut seen) = TestFramework::auto(vec![sh_task("e1", "exit 0")]);
    let driver = Driver::start(FrameworkSettings::new("evented"), None, fw)
        .await
        .expect("subscribes");
    until_all_end(&mut seen, 1, Duration::from_secs(30)).await;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.iter().any(|e: &troupe_actors::events::Event| {
        matches!(&e.event, ClusterEvent::Task { task } if task.status.state.is_terminal())
    }) {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(e)) => got.push(e),
            _ => panic!("the stream ended early: {got:?}"),
        }
    }
    assert!(
        got.windows(2).all(|w| w[0].seq < w[1].seq),
        "numbered in order: {got:?}"
    );
    assert!(
        got.iter().any(|e| matches!(&e.event,
            ClusterEvent::FrameworkSubscribed { name, .. } if name == "evented")),
        "{got:?}"
    );
    let states: Vec<TaskState> = got
        .iter()
        .filter_map(|e| match &e.event {
            ClusterEvent::Task { task } if task.id.0 == "e1" => Some(task.status.state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![TaskState::Staging, TaskState::Running, TaskState::Finished],
        "{got:?}"
    );
    // The master core restarts: the stream ends, so the subscriber knows to subscribe again.
    driver.stop();
    let core = troupe_runtime::inspector::find(MASTER_PATH).expect("the master core runs");
    core.stop(Some("restarted by the test".into()));
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while events.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ends with the master core");
    cluster.stop().await;
}

/// A launch of nothing declines the offer for the default 5 s, but only what was offered:
/// what a launch leaves is offered again at once, and so is more than was refused (a task
/// ended meanwhile). Before, a framework that could not use an offer was offered it again
/// in the next cycle, as fast as the master could go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_of_nothing_refuses_only_what_was_offered() {
    let (cluster, _litter) = cluster("cl-refuse", 1).await;
    let (fw, mut seen) = TestFramework::manual();
    let driver = Driver::start(FrameworkSettings::new("picky"), None, fw)
        .await
        .unwrap();
    let whole = next_offers(&mut seen).await.remove(0);
    assert_eq!(whole.resources, Resources::new(2.0, 1024.0));
    let task = sh_task("brief", "sleep 1");
    let used = task.resources;
    driver.launch(&[whole.id], vec![task]);
    // What the task leaves comes back unfiltered.
    let rest = next_offers(&mut seen).await.remove(0);
    assert_eq!(rest.resources, whole.resources.minus(used));
    driver.launch(&[rest.id], vec![]);
    let declined = tokio::time::Instant::now();
    // Not offered again while nothing else is free.
    let quiet = tokio::time::timeout(Duration::from_millis(600), async {
        loop {
            match seen.recv().await {
                Some(Seen::Offers(offers)) => return offers,
                Some(_) => continue,
                None => return Vec::new(),
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "what a launch of nothing declined was offered again at once: {quiet:?}"
    );
    // The task ends: the agent has more free than was refused, and it is offered before
    // the refusal ends.
    let again = next_offers(&mut seen).await.remove(0);
    assert!(
        declined.elapsed() < Duration::from_secs(4),
        "offered only after {:?}",
        declined.elapsed()
    );
    assert_eq!(again.resources, whole.resources);
    driver.stop();
    cluster.stop().await;
}

/// Tasks killed right after their launch, while the agent is still starting their
/// processes (it starts them beside its other work, so the kills are taken in the middle):
/// each ends `Killed`, none is `Running` after its kill, and no process is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_killed_while_they_start_end_killed_and_leave_no_process() {
    let (cluster, _litter) = cluster("cl-killstart", 1).await;
    let (fw, mut seen) = TestFramework::manual();
    let driver = Driver::start(FrameworkSettings::new("hasty"), None, fw)
        .await
        .unwrap();
    let offer = next_offers(&mut seen).await.remove(0);
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let mut t = sh_task(&format!("k{i}"), "sleep 100");
            t.resources = Resources::new(0.1, 16.0);
            t
        })
        .collect();
    let ids: Vec<TaskId> = tasks.iter().map(|t| t.id.clone()).collect();
    driver.launch(&[offer.id], tasks);
    for id in &ids {
        driver.kill(id);
    }
    let ended = until_all_end(&mut seen, ids.len(), Duration::from_secs(30)).await;
    for id in &ids {
        let statuses = ended
            .get(id)
            .unwrap_or_else(|| panic!("{id:?} never ended"));
        let last = statuses.last().unwrap();
        assert_eq!(last.state, TaskState::Killed, "{id:?}: {statuses:?}");
        if let Some(killing) = statuses.iter().position(|s| s.state == TaskState::Killing) {
            assert!(
                !statuses[killing..]
                    .iter()
                    .any(|s| s.state == TaskState::Running),
                "{id:?} ran after its kill: {statuses:?}"
            );
        }
    }
    // No process of theirs is left: nothing in the agent's task cgroups.
    let agent = &cluster.agent_ids[0];
    for name in troupe_os::cgroup::task_names(agent) {
        let procs = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/pids/troupe/{agent}/{name}/cgroup.procs"
        ))
        .unwrap_or_default();
        assert!(procs.trim().is_empty(), "{name} still runs {procs}");
    }
    driver.stop();
    cluster.stop().await;
}
