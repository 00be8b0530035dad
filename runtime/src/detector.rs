//! The phi-accrual failure detector (Hayashibara et al., as Akka and Cassandra use it).
//!
//! Instead of a fixed timeout, the detector learns the distribution of heartbeat intervals
//! and answers with `phi`: how unlikely it is, on that distribution, that a heartbeat is
//! still to come after this much silence (`phi = -log10(P(interval > silence))`). A peer is
//! suspected once `phi` passes the threshold. Steady heartbeats make the detector quick; a
//! jittery link widens the distribution and makes it patient, without anyone retuning it.
//!
//! The type is pure: every method takes `now`. The runtime's node heartbeats and the
//! master's agent observers use the same type.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The knobs of the detector.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// `phi` above which the peer is suspected. 8 means: a heartbeat this late would happen
    /// once in 10^8 intervals if the peer were well.
    pub threshold: f64,
    /// How many recent intervals make the distribution.
    pub max_samples: usize,
    /// The least standard deviation assumed, so that a perfectly regular peer is not judged
    /// by a distribution of zero width.
    pub min_std_dev: Duration,
    /// Extra silence tolerated on top of the learned mean (a GC pause, a busy scheduler).
    pub acceptable_pause: Duration,
    /// The interval assumed before any has been measured: the heartbeat interval.
    pub first_interval: Duration,
}

impl Default for DetectorConfig {
    /// Tuned for heartbeats every 200 ms: a silent peer is suspected after about 0.9 s
    /// (phi 8 with a mean of 200 ms, 200 ms of acceptable pause and a 100 ms deviation).
    fn default() -> Self {
        DetectorConfig {
            threshold: 8.0,
            max_samples: 200,
            min_std_dev: Duration::from_millis(100),
            acceptable_pause: Duration::from_millis(200),
            first_interval: Duration::from_millis(200),
        }
    }
}

/// One peer's detector.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    config: DetectorConfig,
    /// Recent intervals in milliseconds, with their running sums.
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last: Option<Instant>,
}

impl PhiAccrual {
    /// A detector that has seen nothing yet. Its first heartbeat starts the clock.
    pub fn new(config: DetectorConfig) -> PhiAccrual {
        let mut detector = PhiAccrual {
            intervals: VecDeque::with_capacity(config.max_samples.min(1024)),
            sum: 0.0,
            sum_sq: 0.0,
            last: None,
            config,
        };
        // Seed the distribution with the expected interval (as Akka does), so the first
        // judgements are neither trigger-happy nor blind.
        let first = ms(detector.config.first_interval);
        detector.record(first - first / 4.0);
        detector.record(first + first / 4.0);
        detector
    }

    fn record(&mut self, interval: f64) {
        if self.intervals.len() >= self.config.max_samples.max(1) {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_sq += interval * interval;
    }

    /// A heartbeat arrived at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.record(ms(now.saturating_duration_since(last)));
        }
        self.last = Some(now);
    }

    /// Forgets the silence so far without learning from it: for when the judge itself was
    /// stalled and could not have heard anything.
    pub fn forgive(&mut self, now: Instant) {
        if self.last.is_some() {
            self.last = Some(now);
        }
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat(&self) -> Option<Instant> {
        self.last
    }

    /// The mean of the learned intervals.
    pub fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.mean_ms().max(0.0) / 1000.0)
    }

    fn mean_ms(&self) -> f64 {
        self.sum / self.intervals.len().max(1) as f64
    }

    fn std_dev_ms(&self) -> f64 {
        let n = self.intervals.len().max(1) as f64;
        let mean = self.mean_ms();
        let variance = (self.sum_sq / n - mean * mean).max(0.0);
        variance.sqrt().max(ms(self.config.min_std_dev))
    }

    /// The suspicion level at `now`: 0 right after a heartbeat, growing with silence. Before
    /// the first heartbeat it is 0.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let silence = ms(now.saturating_duration_since(last));
        let mean = self.mean_ms() + ms(self.config.acceptable_pause);
        phi(silence, mean, self.std_dev_ms())
    }

    /// Whether the peer is suspected at `now`.
    pub fn is_suspected(&self, now: Instant) -> bool {
        self.phi(now) > self.config.threshold
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `-log10` of the probability that a normally distributed interval exceeds `silence`,
/// with Akka's logistic approximation of the normal CDF (error below 0.01%).
fn phi(silence: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (silence - mean) / std_dev;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p = if silence > mean {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    // Past about y = 38, p underflows to 0: the peer is as suspect as it gets.
    if p <= f64::MIN_POSITIVE {
        f64::MAX.log10()
    } else {
        -p.log10()
    }
}

/// How a node watches its peers.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    /// How often a beat goes to each peer (and how often peers are judged).
    pub interval: Duration,
    /// How the beats are judged.
    pub detector: DetectorConfig,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_millis(200),
            detector: DetectorConfig::default(),
        }
    }
}

impl HeartbeatConfig {
    /// Beats every `interval`, with the detector's first estimate to match.
    pub fn every(interval: Duration) -> HeartbeatConfig {
        HeartbeatConfig {
            interval,
            detector: DetectorConfig {
                first_interval: interval,
                ..DetectorConfig::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` heartbeats `every` apart, advancing paused time.
    async fn beats(d: &mut PhiAccrual, n: usize, every: impl Fn(usize) -> Duration) {
        for i in 0..n {
            tokio::time::advance(every(i)).await;
            d.heartbeat(Instant::now());
        }
    }

    /// How long after the last heartbeat the detector first suspects the peer, in 10 ms
    /// steps of paused time.
    async fn time_to_suspect(d: &PhiAccrual) -> Duration {
        let start = Instant::now();
        while !d.is_suspected(Instant::now()) {
            tokio::time::advance(Duration::from_millis(10)).await;
            assert!(start.elapsed() < Duration::from_secs(60), "never suspected");
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_suspected_in_about_a_second() {
        let mut d = PhiAccrual::new(DetectorConfig::default());
        beats(&mut d, 50, |_| Duration::from_millis(200)).await;
        assert!(d.phi(Instant::now()) < 0.5);
        let t = time_to_suspect(&d).await;
        assert!(
            t >= Duration::from_millis(700) && t <= Duration::from_millis(1200),
            "{t:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_of_a_busy_machine_is_not_a_failure() {
        let mut d = PhiAccrual::new(DetectorConfig::default());
        // Intervals between 120 and 480 ms, as a loaded scheduler delivers them.
        let intervals = [200, 240, 120, 320, 480, 160, 200];
        let jitter = |i: usize| Duration::from_millis(intervals[i % intervals.len()]);
        for i in 0..500 {
            tokio::time::advance(jitter(i)).await;
            assert!(!d.is_suspected(Instant::now()), "suspected at beat {i}");
            d.heartbeat(Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn phi_grows_with_silence_and_resets_on_a_heartbeat() {
        let mut d = PhiAccrual::new(DetectorConfig::default());
        beats(&mut d, 20, |_| Duration::from_millis(200)).await;
        let mut last = 0.0;
        for _ in 0..30 {
            tokio::time::advance(Duration::from_millis(50)).await;
            let p = d.phi(Instant::now());
            assert!(p >= last, "phi fell from {last} to {p}");
            last = p;
        }
        assert!(d.is_suspected(Instant::now()));
        d.heartbeat(Instant::now());
        assert!(d.phi(Instant::now()) < 0.5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_regular_peer_gets_a_patient_detector() {
        let config = DetectorConfig {
            max_samples: 50,
            ..DetectorConfig::default()
        };
        let mut d = PhiAccrual::new(config);
        beats(&mut d, 60, |_| Duration::from_millis(1000)).await;
        // It learned the 1 s interval, so 1.5 s of silence is no alarm.
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!d.is_suspected(Instant::now()));
        assert!(time_to_suspect(&d).await > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn forgiving_restarts_the_clock_without_learning() {
        let mut d = PhiAccrual::new(DetectorConfig::default());
        beats(&mut d, 20, |_| Duration::from_millis(200)).await;
        let mean = d.mean();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(d.is_suspected(Instant::now()));
        d.forgive(Instant::now());
        assert!(!d.is_suspected(Instant::now()));
        assert_eq!(d.mean(), mean);
    }

    #[test]
    fn before_any_heartbeat_nothing_is_suspected() {
        let d = PhiAccrual::new(DetectorConfig::default());
        assert_eq!(d.phi(Instant::now()), 0.0);
    }

    #[test]
    fn phi_is_finite_for_any_silence() {
        for silence in [0.0, 1.0, 1e3, 1e6, 1e12] {
            let p = phi(silence, 200.0, 100.0);
            assert!(p.is_finite() && p >= 0.0, "{silence}: {p}");
        }
    }
}
