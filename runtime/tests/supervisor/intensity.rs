//! Restart intensity in the running supervisor, on paused time: more than `intensity`
//! restarts within `period` make it give up; the same restarts spread wider do not.

use std::time::Duration;

use ractor::ActorCell;
use troupe_runtime::supervisor::Strategy;
use troupe_runtime::{SupFlags, SupervisorRef, SupervisorSpec};

use crate::fixtures::*;

async fn one_worker(log: &Log) -> (SupervisorRef, Watch) {
    let flags = SupFlags::new(Strategy::OneForOne).intensity(2, Duration::from_secs(10));
    let sup = SupervisorRef::start(SupervisorSpec::new(flags).child(worker(spec1("w"), log)))
        .await
        .unwrap();
    let watch = Watch::new().await;
    watch.add(&sup.cell());
    (sup, watch)
}

async fn crash_at(sup: &SupervisorRef, watch: &Watch, after: Duration) -> ActorCell {
    tokio::time::advance(after).await;
    let w = actor_of(sup, "w").await;
    end(watch, &w, "abnormal").await;
    w
}

#[tokio::test(start_paused = true)]
async fn intensity_exceeded_within_the_period() {
    let log = Log::default();
    let (sup, watch) = one_worker(&log).await;
    // Crashes at 0 s, 4 s and 8 s: the third restart within 10 s is one too many.
    for after in [0, 4] {
        let old = crash_at(&sup, &watch, Duration::from_secs(after)).await;
        assert_ne!(actor_of(&sup, "w").await.get_id(), old.get_id());
    }
    crash_at(&sup, &watch, Duration::from_secs(4)).await;
    let reason = watch.exited(&sup.cell()).await;
    assert!(
        reason.contains("reached maximum restart intensity"),
        "{reason}"
    );
}

#[tokio::test(start_paused = true)]
async fn intensity_not_exceeded_across_the_period() {
    let log = Log::default();
    let (sup, watch) = one_worker(&log).await;
    // Eight crashes 6 s apart: never more than two within any 10 s.
    for _ in 0..8 {
        crash_at(&sup, &watch, Duration::from_secs(6)).await;
    }
    watch.stays(&sup.cell()).await;
    assert_eq!(counts(&sup).await, [1, 1, 0, 1]);
    assert_eq!(sup.which_children().await.unwrap()[0].restarts, 8);
    sup.stop().await;
}

/// Stops itself as soon as it has started.
struct Quitter;

impl ractor::Actor for Quitter {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ractor::ActorRef<WorkerMsg>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }

    async fn post_start(
        &self,
        myself: ractor::ActorRef<WorkerMsg>,
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        myself.stop(None);
        Ok(())
    }
}

/// A child that stops the moment it started (a process that ends at once) was started: its
/// exit is an exit, handled by the restart rules, not a failed start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_stops_at_once_was_started_and_then_exited() {
    let quitter = |restart| {
        troupe_runtime::Child::new(
            troupe_runtime::ChildSpec::worker("q").restart(restart),
            |ctx: troupe_runtime::StartCtx| async move { ctx.spawn(Quitter, ()).await },
        )
    };
    let flags = SupFlags::new(Strategy::OneForOne).intensity(3, Duration::from_secs(60));
    // Transient, normal exit: started, then stopped for good.
    let sup = SupervisorRef::start(
        SupervisorSpec::new(flags.clone())
            .child(quitter(troupe_runtime::supervisor::Restart::Transient)),
    )
    .await
    .expect("the start succeeds");
    let deadline = tokio::time::Instant::now() + WAIT;
    while sup.which_children().await.unwrap()[0].state
        != troupe_runtime::supervisor::ChildState::Stopped
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sup.which_children().await.unwrap()[0].restarts, 0);
    sup.stop().await;
    // Permanent: restarted until the intensity is exceeded.
    let sup = SupervisorRef::start(
        SupervisorSpec::new(flags).child(quitter(troupe_runtime::supervisor::Restart::Permanent)),
    )
    .await
    .expect("the start succeeds");
    assert!(sup.wait(WAIT).await, "the supervisor gave up");
}
