//! Reports against a subject (a peer for one content, a URL mapping) and who made them, so that
//! a subject is acted on only on corroborated reports: one agent's word is not evidence enough
//! (the reporter may be the liar, or hold a stolen token), an admin's is.

use std::collections::HashMap;
use std::hash::Hash;

use shoal_core::wire::AgentId;

use super::{Reporter, REPORTS_TO_HIDE};

/// Subject → reporting agent → until when (ms) its report counts.
#[derive(Debug)]
pub(super) struct Evidence<K> {
    reports: HashMap<K, HashMap<AgentId, u64>>,
}

impl<K> Default for Evidence<K> {
    fn default() -> Self {
        Self {
            reports: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Evidence<K> {
    /// Records a report against `subject` that counts until `until`; answers whether the
    /// reports that count at `now` are enough to act on: an admin's, or [`REPORTS_TO_HIDE`]
    /// distinct agents'.
    pub(super) fn record(&mut self, subject: K, by: &Reporter, until: u64, now: u64) -> bool {
        let Reporter::Agent(reporter) = by else {
            return true;
        };
        let reporters = self.reports.entry(subject).or_default();
        reporters.retain(|_, &mut until| until > now);
        reporters.insert(reporter.clone(), until);
        reporters.len() >= REPORTS_TO_HIDE
    }

    /// Forgets the reports against `subject` (it was acted on).
    pub(super) fn forget(&mut self, subject: &K) {
        self.reports.remove(subject);
    }

    /// Drops reports that no longer count.
    pub(super) fn sweep(&mut self, now: u64) {
        self.reports.retain(|_, reporters| {
            reporters.retain(|_, &mut until| until > now);
            !reporters.is_empty()
        });
    }
}
