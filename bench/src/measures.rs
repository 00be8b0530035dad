//! The measures, each beside its baseline:
//! * [`throughput`]: local casts per second, through `Addr` vs raw ractor.
//! * [`remote`]: a call round trip between two OS processes, troupe vs raw ractor_cluster
//!   (and Erlang distribution when `erl` is installed).
//! * [`restart`]: crash to restarted for a supervised process actor vs a bare respawn loop.
//! * [`cluster`]: launch latency, tasks per minute and agent failure detection, on the
//!   embedded cluster.
//! * [`scale`]: the master with simulated agents: placements per minute, allocator cycle
//!   time, memory per task.

pub(crate) mod cluster;
pub(crate) mod remote;
pub(crate) mod restart;
pub(crate) mod scale;
pub(crate) mod throughput;

/// The median and the 99th percentile of some durations, in microseconds.
pub(crate) fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99))
}
