//! Exponential backoff with jitter between attempts, so retrying connections do not hit a
//! struggling server in lockstep.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    /// Between tries: 250 ms doubling up to 10 s.
    fn default() -> Self {
        Self {
            attempt: 0,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// While a server is down (see [`crate::DownloadOptions::max_wait`]): 1 s doubling up to
    /// 30 s, so a server back from an outage is noticed within half a minute, while one that
    /// stays down is asked about twice a minute per connection.
    pub(crate) fn outage() -> Self {
        Self {
            attempt: 0,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        }
    }

    /// The wait before the next attempt: the server's `Retry-After` when it gave one, else
    /// the base doubling per attempt up to the cap, each with ±25 % jitter.
    pub(crate) fn next(&mut self, server_hint: Option<Duration>) -> Duration {
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        if let Some(hint) = server_hint {
            return hint;
        }
        let base = self.base.saturating_mul(1 << attempt.min(10)).min(self.cap);
        base.mul_f64(rand::rng().random_range(0.75..1.25))
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_honours_the_server() {
        let mut b = Backoff::default();
        let first = b.next(None);
        assert!(first >= Duration::from_millis(187) && first <= Duration::from_millis(313));
        for _ in 0..20 {
            assert!(b.next(None) <= Duration::from_secs(10).mul_f64(1.25));
        }
        assert_eq!(b.next(Some(Duration::from_secs(3))), Duration::from_secs(3));
        b.reset();
        assert!(b.next(None) <= Duration::from_millis(313));
    }

    #[test]
    fn an_outage_is_polled_from_a_second_to_half_a_minute() {
        let mut b = Backoff::outage();
        let first = b.next(None);
        assert!(first >= Duration::from_millis(750) && first <= Duration::from_millis(1250));
        let waits: Vec<Duration> = (0..20).map(|_| b.next(None)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(37_500)));
        assert!(waits[10..]
            .iter()
            .all(|w| *w >= Duration::from_millis(22_500)));
    }
}
