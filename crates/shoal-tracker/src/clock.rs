//! The tracker's notion of "now" for leases and rate limits: the monotonic system clock, the
//! wall clock (shared by tracker replicas on different machines), or a manual clock that tests
//! move forward without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::clock::unix_now_ms;

/// Milliseconds since the clock was made (the Unix epoch for [`Clock::wall`]). Cheap to clone
/// and to read.
#[derive(Debug, Clone)]
pub struct Clock(Source);

#[derive(Debug, Clone)]
enum Source {
    System(Instant),
    Wall,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// Milliseconds since this call, from the monotonic clock: immune to wall-clock jumps, right
    /// for one tracker process.
    pub fn system() -> Self {
        Self(Source::System(Instant::now()))
    }

    /// Milliseconds since the Unix epoch: the same instant for every process whose system clock
    /// is synchronized, which replicas sharing leases in one store need.
    pub fn wall() -> Self {
        Self(Source::Wall)
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Self {
        Self(Source::Manual(Arc::new(AtomicU64::new(0))))
    }

    /// Milliseconds since the clock's start (the Unix epoch for [`Clock::wall`]).
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Source::System(start) => start.elapsed().as_millis() as u64,
            Source::Wall => unix_now_ms(),
            Source::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved, so this panics on one.
    pub fn advance(&self, by: Duration) {
        match &self.0 {
            Source::System(_) | Source::Wall => panic!("the system clock cannot be advanced"),
            Source::Manual(ms) => {
                ms.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}
