//! Reports of bad peers in Redis, shared by every replica.
//!
//! Keys:
//! - `reported:{content id bytes}` sorted set: reported agent id scored by the end of its hold;
//! - `reports:{content id bytes}` sorted set: `{reported agent id} {reporting agent id}` scored
//!   by the time that report stops counting, so that a hold needs reports from distinct agents
//!   ([`REPORTS_TO_HIDE`]) however many replicas they reached.
//!
//! Both keys expire (Redis expiry) when their latest entry ends, so they need no sweeping.

use super::codec::{decode_layout, holders_key, reported_key, reports_key, CATALOG, LEASES};
use super::RedisStore;
use crate::store::memory::check_piece;
use crate::store::{PeerReport, Reporter, StoreError, REPORTS_TO_HIDE, REPORT_HOLD};

impl RedisStore {
    pub(super) async fn report_in_redis(&self, report: PeerReport) -> Result<bool, StoreError> {
        let now = self.now();
        let field = &report.content.as_bytes()[..];
        let agent = report.agent.as_str();
        let hidden_key = reported_key(&report.content);
        let mut pipe = redis::pipe();
        pipe.hget(CATALOG, field)
            .zscore(LEASES, agent)
            .hexists(holders_key(&report.content), agent)
            .zscore(&hidden_key, agent);
        let (entry, deadline, held, hidden_until): (
            Option<Vec<u8>>,
            Option<f64>,
            bool,
            Option<f64>,
        ) = self.query(&pipe).await?;
        let entry = entry.ok_or(StoreError::UnknownContent(report.content))?;
        check_piece(report.piece, decode_layout(&entry)?.0.piece_count())?;
        if !(held && deadline.is_some_and(|d| d as u64 > now)) {
            return Ok(false);
        }
        let hold_ms = REPORT_HOLD.as_millis() as u64;
        let corroborated = match &report.by {
            Reporter::Admin => true,
            Reporter::Agent(reporter) => {
                // Recorded and read back in one transaction, so of two reports reaching two
                // replicas at once the later sees the earlier.
                let key = reports_key(&report.content);
                let prefix = format!("{agent} ");
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .zrembyscore(&key, "-inf", now)
                    .ignore()
                    .zadd(&key, format!("{prefix}{reporter}"), now + hold_ms)
                    .ignore()
                    .pexpire(&key, hold_ms as i64)
                    .ignore()
                    .zrangebyscore(&key, format!("({now}"), "+inf");
                let (live,): (Vec<String>,) = self.query(&pipe).await?;
                live.iter().filter(|m| m.starts_with(&prefix)).count() >= REPORTS_TO_HIDE
            }
        };
        if !corroborated {
            return Ok(hidden_until.is_some_and(|until| until as u64 > now));
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(&hidden_key, agent, now + hold_ms)
            .ignore()
            .zrembyscore(&hidden_key, "-inf", now)
            .ignore()
            .pexpire(&hidden_key, hold_ms as i64)
            .ignore();
        self.query::<()>(&pipe).await?;
        Ok(true)
    }
}
