//! One token bucket shared by every connection of a download (`--limit-rate`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    /// Up to this many bytes may pass at once after an idle spell.
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec as f64;
        // A tenth of a second of burst keeps the rate smooth without per-chunk sleeps.
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        Self {
            rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: 0.0,
                at: Instant::now(),
            }),
        }
    }

    /// Takes `bytes` from the bucket, waiting as long as the rate requires. The debt model
    /// (tokens may go negative) keeps each caller to one sleep per call.
    pub async fn acquire(&self, bytes: usize) {
        let wait = {
            let mut b = self.state.lock().expect("rate limiter lock");
            let now = Instant::now();
            let refill = now.duration_since(b.at).as_secs_f64() * self.rate;
            b.tokens = (b.tokens + refill).min(self.burst) - bytes as f64;
            b.at = now;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-b.tokens / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_across_callers() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1_000_000));
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
}
