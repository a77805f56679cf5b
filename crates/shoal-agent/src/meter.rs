//! [`Meter`]: bytes sent, as a total and a smoothed rate, counted by the piece server for the
//! whole agent and for each content it holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the rate remembers: a burst fades to a third of its weight in this time, as the
/// engine's `downloadSpeed` reflects "the last second or so".
const SMOOTHING: Duration = Duration::from_secs(1);

/// Bytes counted so far, and their rate smoothed over about a second.
#[derive(Debug)]
pub struct Meter {
    total: AtomicU64,
    /// The rate in bytes a second, as it was at the instant kept with it.
    rate: Mutex<(Instant, f64)>,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            total: AtomicU64::new(0),
            rate: Mutex::new((Instant::now(), 0.0)),
        }
    }
}

impl Meter {
    /// Counts `bytes` sent now.
    pub fn add(&self, bytes: u64) {
        self.add_at(bytes, Instant::now());
    }

    /// Bytes counted since the meter was made.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Bytes a second now, smoothed.
    pub fn rate(&self) -> u64 {
        self.rate_at(Instant::now())
    }

    fn add_at(&self, bytes: u64, now: Instant) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
        let mut rate = self.rate.lock().expect("meter lock");
        // An exponentially weighted rate in continuous time: it needs no ticking, since reads
        // and chunks come at any moment.
        let decayed = decay(*rate, now);
        *rate = (
            now.max(rate.0),
            decayed + bytes as f64 / SMOOTHING.as_secs_f64(),
        );
    }

    fn rate_at(&self, now: Instant) -> u64 {
        decay(*self.rate.lock().expect("meter lock"), now).round() as u64
    }
}

fn decay((then, rate): (Instant, f64), now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(then).as_secs_f64();
    rate * (-elapsed / SMOOTHING.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_stream_reads_as_its_rate_and_fades_when_it_stops() {
        let meter = Meter::default();
        let t0 = Instant::now();
        // 100 kB every 100 ms for 10 s: 1 MB/s.
        for i in 1..=100 {
            meter.add_at(100_000, t0 + Duration::from_millis(100 * i));
        }
        let end = t0 + Duration::from_secs(10);
        let rate = meter.rate_at(end);
        assert!((950_000..=1_060_000).contains(&rate), "{rate}");
        assert_eq!(meter.total(), 10_000_000);
        assert!(meter.rate_at(end + Duration::from_secs(10)) < 100);
    }

    #[test]
    fn nothing_sent_is_zero() {
        let meter = Meter::default();
        assert_eq!((meter.total(), meter.rate()), (0, 0));
    }
}
