//! [`TokenBucket`]: the arithmetic of a rate limit, without a clock or a lock of its own.
//!
//! The caller passes the time in (a [`Duration`] since any fixed origin it likes) and keeps the
//! bucket behind whatever lock it shares it with, so the same bucket paces a download's
//! connections, an agent's uploads and a tracker's requests, and tests move time by hand.
//!
//! Two ways to take: [`TokenBucket::take`] always succeeds and says how long the caller must
//! wait (tokens may go negative, a debt that later takers wait out too, so each caller sleeps
//! once per take however many share the bucket); [`TokenBucket::try_take`] takes only what is
//! there and otherwise says how long until it would be, for limits that refuse rather than
//! delay.

use std::num::NonZeroU64;
use std::time::Duration;

/// The least burst of a bucket made by [`TokenBucket::for_bytes`]: a smaller one would pace
/// each read or write of a stream by itself.
pub const MIN_BYTE_BURST: u64 = 16 * 1024;

/// Tokens that refill continuously at a fixed rate, up to a burst.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    /// Tokens per second.
    rate: f64,
    /// At most this many tokens are saved up during an idle spell.
    burst: f64,
    /// Negative while in debt.
    tokens: f64,
    /// The latest time seen.
    at: Duration,
}

impl TokenBucket {
    /// A bucket of `rate` tokens a second that saves up at most `burst`, empty at `now`.
    pub fn empty(rate: NonZeroU64, burst: f64, now: Duration) -> Self {
        Self {
            rate: rate.get() as f64,
            burst,
            tokens: 0.0,
            at: now,
        }
    }

    /// The same bucket as [`TokenBucket::empty`], but full at `now`: a client that was never
    /// seen may make `burst` requests at once.
    pub fn full(rate: NonZeroU64, burst: f64, now: Duration) -> Self {
        Self {
            tokens: burst,
            ..Self::empty(rate, burst, now)
        }
    }

    /// An empty bucket of `bytes_per_sec` for pacing a byte stream: a tenth of a second of
    /// burst (at least [`MIN_BYTE_BURST`]) keeps the rate smooth without a sleep per chunk.
    pub fn for_bytes(bytes_per_sec: NonZeroU64, now: Duration) -> Self {
        let rate = bytes_per_sec.get() as f64;
        Self::empty(bytes_per_sec, (rate / 10.0).max(MIN_BYTE_BURST as f64), now)
    }

    /// Takes `amount` at `now`, into debt if need be, and says how long the taker must wait
    /// before going ahead: zero when the bucket held enough.
    pub fn take(&mut self, amount: u64, now: Duration) -> Duration {
        self.refill(now);
        self.tokens -= amount as f64;
        self.seconds_until(0.0)
    }

    /// Takes `amount` at `now` if the bucket holds that many; otherwise takes nothing and says
    /// how long until it would hold them. An `amount` over the burst never passes.
    pub fn try_take(&mut self, amount: u64, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        let amount = amount as f64;
        if self.tokens >= amount {
            self.tokens -= amount;
            Ok(())
        } else {
            Err(self.seconds_until(amount))
        }
    }

    fn refill(&mut self, now: Duration) {
        // A `now` earlier than the latest time seen (callers that read the clock before racing
        // for the lock) refills nothing and leaves that time alone, so no interval is counted
        // twice.
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }

    /// How long until the bucket holds `level` tokens; zero if it does.
    fn seconds_until(&self, level: f64) -> Duration {
        let missing = (level - self.tokens).max(0.0);
        Duration::try_from_secs_f64(missing / self.rate).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn debt_is_waited_out_by_each_taker_in_turn() {
        let mut bucket = TokenBucket::for_bytes(rate(1_000_000), Duration::ZERO);
        // Empty at the start: the first taker waits for its own bytes.
        assert_eq!(bucket.take(10_000, Duration::ZERO), ms(10));
        // The next taker at the same instant waits for the debt before it as well.
        assert_eq!(bucket.take(10_000, Duration::ZERO), ms(20));
        // Once the debt is paid and a burst saved up, a take within it passes at once.
        assert_eq!(bucket.take(100_000, ms(1000)), Duration::ZERO);
        assert_eq!(bucket.take(1, ms(1000)), Duration::from_micros(1));
    }

    #[test]
    fn takes_hold_the_rate() {
        let mut bucket = TokenBucket::for_bytes(rate(1_000_000), Duration::ZERO);
        let mut now = Duration::ZERO;
        for _ in 0..200 {
            now += bucket.take(10_000, now);
        }
        // 2 MB at 1 MB/s from an empty bucket, give or take the rounding of 200 sleeps.
        assert!(now.abs_diff(ms(2000)) < Duration::from_micros(1), "{now:?}");
    }

    #[test]
    fn byte_buckets_burst_a_tenth_of_a_second_but_at_least_16_kib() {
        let mut fast = TokenBucket::for_bytes(rate(10_000_000), Duration::ZERO);
        assert_eq!(
            fast.take(1_000_000, Duration::from_secs(60)),
            Duration::ZERO
        );
        assert!(fast.take(1, Duration::from_secs(60)) > Duration::ZERO);
        let mut slow = TokenBucket::for_bytes(rate(1000), Duration::ZERO);
        assert_eq!(
            slow.take(16 * 1024, Duration::from_secs(60)),
            Duration::ZERO
        );
        assert!(slow.take(1, Duration::from_secs(60)) > Duration::ZERO);
    }

    #[test]
    fn try_take_refuses_without_debt() {
        let mut bucket = TokenBucket::full(rate(2), 2.0, Duration::ZERO);
        assert_eq!(bucket.try_take(1, Duration::ZERO), Ok(()));
        assert_eq!(bucket.try_take(1, Duration::ZERO), Ok(()));
        assert_eq!(bucket.try_take(1, Duration::ZERO), Err(ms(500)));
        // A refusal takes nothing: half a second later one token is there.
        assert_eq!(bucket.try_take(1, ms(500)), Ok(()));
        assert_eq!(bucket.try_take(1, ms(500)), Err(ms(500)));
        assert_eq!(bucket.try_take(3, Duration::from_secs(60)), Err(ms(500)));
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut bucket = TokenBucket::full(rate(1), 1.0, ms(5000));
        assert_eq!(bucket.try_take(1, ms(5000)), Ok(()));
        assert_eq!(bucket.try_take(1, ms(4000)), Err(ms(1000)));
        assert_eq!(bucket.try_take(1, ms(6000)), Ok(()));
    }

    #[test]
    fn an_endless_debt_waits_the_longest_duration() {
        let mut bucket = TokenBucket::empty(rate(1), 0.0, Duration::ZERO);
        assert_eq!(bucket.take(u64::MAX, Duration::ZERO), Duration::MAX);
    }
}
