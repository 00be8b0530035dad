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
