//! Per-token request rate limits: a token bucket per token name, refilled continuously.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shoal_core::TokenBucket;

use crate::clock::Clock;

/// How many requests each token may make: a sustained rate and a burst. The default, 1000 per
/// second with bursts of 2000, stops a runaway client without slowing a fleet.
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

/// Keeps each token to its [`RateLimit`], refusing (not delaying) the requests over it.
#[derive(Debug)]
pub struct RequestLimiter {
    limit: RateLimit,
    clock: Clock,
    buckets: Mutex<HashMap<Arc<str>, TokenBucket>>,
}

impl RequestLimiter {
    /// A limiter that reads time from `clock`; every token starts with a full burst.
    pub fn new(limit: RateLimit, clock: Clock) -> Self {
        Self {
            limit,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `token`'s bucket, or says how many whole seconds to wait.
    pub fn check(&self, token: &Arc<str>) -> Result<(), u64> {
        let Some(rate) = NonZeroU64::new(self.limit.per_second.into()) else {
            return Ok(());
        };
        let now = Duration::from_millis(self.clock.now_ms());
        let burst = f64::from(self.limit.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets
            .entry(token.clone())
            .or_insert_with(|| TokenBucket::full(rate, burst, now))
            .try_take(1, now)
            .map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_with_time() {
        let clock = Clock::manual();
        let limiter = RequestLimiter::new(
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
