//! Exponential backoff with jitter between attempts, so retrying connections do not hit a
//! struggling server in lockstep.

use std::time::Duration;

use rand::Rng;

const BASE: Duration = Duration::from_millis(250);
const CAP: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Clone)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The wait before the next attempt: the server's `Retry-After` when it gave one, else
    /// 250 ms doubling per attempt up to 10 s, each with ±25 % jitter.
    pub(crate) fn next(&mut self, server_hint: Option<Duration>) -> Duration {
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        if let Some(hint) = server_hint {
            return hint;
        }
        let base = BASE.saturating_mul(1 << attempt.min(10)).min(CAP);
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
            assert!(b.next(None) <= CAP.mul_f64(1.25));
        }
        assert_eq!(b.next(Some(Duration::from_secs(3))), Duration::from_secs(3));
        b.reset();
        assert!(b.next(None) <= Duration::from_millis(313));
    }
}
