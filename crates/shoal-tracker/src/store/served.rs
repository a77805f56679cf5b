//! What the tracker keeps of an agent's uploads, for its page: the byte count each heartbeat
//! reports, and the rate between the last two.

/// An agent's upload counter as of its last heartbeat that reported one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Served {
    /// Bytes sent to peers since the agent started.
    pub bytes: u64,
    /// When that was reported (store clock, ms); `None` before the first report.
    pub at_ms: Option<u64>,
    /// Bytes per second between the last two reports.
    pub rate: u64,
}

impl Served {
    /// After a heartbeat at `now` that reports `bytes`. A counter that went back (the agent
    /// restarted) starts a new baseline, with no rate until the next report.
    pub(super) fn next(self, bytes: u64, now: u64) -> Self {
        let rate = match self.at_ms {
            Some(at) if now > at && bytes >= self.bytes => {
                (bytes - self.bytes).saturating_mul(1000) / (now - at)
            }
            _ => 0,
        };
        Self {
            bytes,
            at_ms: Some(now),
            rate,
        }
    }

    /// `bytes at_ms rate`, as the Redis backend stores it.
    pub(super) fn encode(&self) -> String {
        format!("{} {} {}", self.bytes, self.at_ms.unwrap_or(0), self.rate)
    }

    /// The text of [`Served::encode`]; a damaged record reads as no report.
    pub(super) fn decode(text: &str) -> Self {
        let mut parts = text.split(' ').map(|p| p.parse::<u64>().ok());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Some(bytes)), Some(Some(at)), Some(Some(rate))) => Self {
                bytes,
                at_ms: Some(at),
                rate,
            },
            _ => Self::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_taken_between_two_reports() {
        let first = Served::default().next(1000, 5_000);
        assert_eq!((first.bytes, first.rate), (1000, 0));
        let second = first.next(3000, 7_000);
        assert_eq!(second.rate, 1000);
        let restarted = second.next(10, 8_000);
        assert_eq!((restarted.bytes, restarted.rate), (10, 0));
        assert_eq!(Served::decode(&second.encode()), second);
        assert_eq!(Served::decode("x"), Served::default());
    }
}
