//! Local message throughput: casts per second to one actor, through troupe's `Addr` (path
//! lookup cached, location check, the same ractor mailbox) vs a raw ractor `ActorRef::cast`.
//! Both send the same message (a `u64`) the same number of times to the same kind of
//! counting actor, one after the other, best of three rounds each.

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use troupe_runtime::Addr;

use crate::report::{Figure, Goal};

/// The message of both sides: troupe's is remote-capable, the raw one is local only; both
/// carry one number and are never serialized here.
#[derive(Debug, Serialize, Deserialize, troupe_runtime::RemoteMessage)]
pub(crate) enum TroupeCount {
    /// One more.
    One(u64),
}

/// The raw side's message.
#[derive(Debug)]
pub(crate) enum RawCount {
    /// One more. The payload is carried, not read: the transport is what is measured.
    One(#[allow(dead_code)] u64),
}

impl ractor::Message for RawCount {}

/// Counts to `target`, then says so.
struct Counter<M>(std::marker::PhantomData<fn() -> M>);

struct CounterState {
    seen: u64,
    target: u64,
    done: Option<oneshot::Sender<()>>,
}

impl<M: ractor::Message> Actor for Counter<M> {
    type Msg = M;
    type State = CounterState;
    type Arguments = (u64, oneshot::Sender<()>);

    async fn pre_start(
        &self,
        _: ActorRef<M>,
        (target, done): Self::Arguments,
    ) -> Result<CounterState, ActorProcessingErr> {
        Ok(CounterState {
            seen: 0,
            target,
            done: Some(done),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<M>,
        _msg: M,
        state: &mut CounterState,
    ) -> Result<(), ActorProcessingErr> {
        state.seen += 1;
        if state.seen == state.target {
            if let Some(done) = state.done.take() {
                let _ = done.send(());
            }
        }
        Ok(())
    }
}

async fn troupe_round(n: u64) -> anyhow::Result<f64> {
    let (tx, rx) = oneshot::channel();
    let (actor, _) =
        Actor::spawn(None, Counter::<TroupeCount>(Default::default()), (n, tx)).await?;
    troupe_runtime::register("bench/counter", &actor)?;
    let addr = Addr::<TroupeCount>::new("bench/counter");
    let t = Instant::now();
    for i in 0..n {
        addr.send(TroupeCount::One(i))
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.error))?;
    }
    rx.await?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    actor.stop_and_wait(None, None).await?;
    Ok(rate)
}

async fn raw_round(n: u64) -> anyhow::Result<f64> {
    let (tx, rx) = oneshot::channel();
    let (actor, _) = Actor::spawn(None, Counter::<RawCount>(Default::default()), (n, tx)).await?;
    let t = Instant::now();
    for i in 0..n {
        actor.cast(RawCount::One(i))?;
    }
    rx.await?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    actor.stop_and_wait(None, None).await?;
    Ok(rate)
}

pub(crate) async fn run(quick: bool) -> anyhow::Result<Figure> {
    let n = if quick { 200_000 } else { 2_000_000 };
    let (mut troupe, mut raw) = (0f64, 0f64);
    // Interleaved rounds, best of each, so that both see the same machine.
    for _ in 0..3 {
        raw = raw.max(raw_round(n).await?);
        troupe = troupe.max(troupe_round(n).await?);
    }
    Ok(Figure::new(
        "local throughput",
        troupe,
        raw,
        "casts/s",
        Goal::RatioAtLeast(0.9),
        format!("{n} casts of a u64 to one counting actor, best of 3; baseline: raw ractor cast"),
    ))
}
