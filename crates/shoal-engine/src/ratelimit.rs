//! One token bucket shared by every connection of a download (`--limit-rate`), and
//! [`SharedRate`], one shared by every download of a daemon (its overall cap, changed while
//! they run): the bucket's arithmetic is [`shoal_core::rate::TokenBucket`]; this adds the
//! clock, the lock and the sleep.

use std::num::NonZeroU64;
use std::sync::Mutex;

use shoal_core::TokenBucket;
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// The bucket's time is measured from here.
    start: Instant,
    bucket: Mutex<TokenBucket>,
}

impl RateLimiter {
    pub(crate) fn new(bytes_per_sec: NonZeroU64) -> Self {
        Self {
            start: Instant::now(),
            bucket: Mutex::new(TokenBucket::for_bytes(
                bytes_per_sec,
                std::time::Duration::ZERO,
            )),
        }
    }

    /// Takes `bytes` from the bucket, waiting as long as the rate requires. The debt model
    /// (tokens may go negative) keeps each caller to one sleep per call.
    pub(crate) async fn acquire(&self, bytes: usize) {
        let wait = {
            let now = self.start.elapsed();
            let mut bucket = self.bucket.lock().expect("rate limiter lock");
            bucket.take(bytes as u64, now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A rate cap over many downloads at once (a daemon's `max-overall-download-limit`), which can
/// be changed or lifted while they run; share it with [`crate::DownloadOptions::shared_rate`].
#[derive(Debug)]
pub struct SharedRate {
    start: Instant,
    /// `None`: no cap now.
    bucket: std::sync::Mutex<Option<TokenBucket>>,
}

impl SharedRate {
    /// A cap of `bytes_per_sec`, or none.
    pub fn new(bytes_per_sec: Option<NonZeroU64>) -> Self {
        let start = Instant::now();
        Self {
            start,
            bucket: std::sync::Mutex::new(
                bytes_per_sec.map(|r| TokenBucket::for_bytes(r, std::time::Duration::ZERO)),
            ),
        }
    }

    /// Changes the cap (`None` lifts it); downloads running feel it from their next read.
    pub fn set(&self, bytes_per_sec: Option<NonZeroU64>) {
        let now = self.start.elapsed();
        *self.bucket.lock().expect("shared rate lock") =
            bytes_per_sec.map(|r| TokenBucket::for_bytes(r, now));
    }

    /// Takes `bytes`, waiting as long as the cap requires.
    pub(crate) async fn acquire(&self, bytes: usize) {
        let wait = {
            let now = self.start.elapsed();
            let mut bucket = self.bucket.lock().expect("shared rate lock");
            bucket.as_mut().map(|b| b.take(bytes as u64, now))
        };
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_across_callers() {
        let limiter = std::sync::Arc::new(RateLimiter::new(NonZeroU64::new(1_000_000).unwrap()));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    l.acquire(10_000).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 2 MB at 1 MB/s, starting from an empty bucket.
        let took = start.elapsed().as_secs_f64();
        assert!((1.95..2.05).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_rate_changes_and_lifts_while_used() {
        let rate = SharedRate::new(NonZeroU64::new(1_000_000));
        let start = Instant::now();
        for _ in 0..100 {
            rate.acquire(10_000).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((0.95..1.05).contains(&took), "{took}");
        rate.set(None);
        let start = Instant::now();
        rate.acquire(100_000_000).await;
        assert_eq!(start.elapsed().as_secs_f64(), 0.0);
    }
}
