//! The tracker's notion of "now" for leases and rate limits: the monotonic system clock, or a
//! manual clock that tests move forward without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Milliseconds since the clock was made. Cheap to clone and to read.
#[derive(Debug, Clone)]
pub struct Clock(Source);

#[derive(Debug, Clone)]
enum Source {
    System(Instant),
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn system() -> Self {
        Self(Source::System(Instant::now()))
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Self {
        Self(Source::Manual(Arc::new(AtomicU64::new(0))))
    }

    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Source::System(start) => start.elapsed().as_millis() as u64,
            Source::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved, so this panics on one.
    pub fn advance(&self, by: Duration) {
        match &self.0 {
            Source::System(_) => panic!("the system clock cannot be advanced"),
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
