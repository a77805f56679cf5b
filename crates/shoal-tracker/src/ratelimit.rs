//! Per-token request rate limits: a token bucket per token name, refilled continuously.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::Clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second per token; 0 turns the limit off.
    pub per_second: u32,
    /// Requests a token may make at once after being idle.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 1000,
            burst: 2000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    clock: Clock,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit, clock: Clock) -> Self {
        Self {
            limit,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `token`'s bucket, or says how many whole seconds to wait.
    pub fn check(&self, token: &Arc<str>) -> Result<(), u64> {
        if self.limit.per_second == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let rate = f64::from(self.limit.per_second) / 1000.0;
        let burst = f64::from(self.limit.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(token.clone()).or_insert(Bucket {
            tokens: burst,
            at_ms: now,
        });
        bucket.tokens = (bucket.tokens + now.saturating_sub(bucket.at_ms) as f64 * rate).min(burst);
        bucket.at_ms = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - bucket.tokens) / rate;
            Err((wait_ms / 1000.0).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_refills_with_time() {
        let clock = Clock::manual();
        let limiter = RateLimiter::new(
            RateLimit {
                per_second: 2,
                burst: 2,
            },
            clock.clone(),
        );
        let token: Arc<str> = "a".into();
        assert!(limiter.check(&token).is_ok());
        assert!(limiter.check(&token).is_ok());
        assert_eq!(limiter.check(&token), Err(1));
        assert!(limiter.check(&"b".into()).is_ok());
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check(&token).is_ok());
        assert_eq!(limiter.check(&token), Err(1));
    }
}
