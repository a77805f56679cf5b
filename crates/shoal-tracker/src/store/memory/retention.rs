//! Retention: a content no agent holds is forgotten once that has lasted the retention period
//! ([`StoreOptions::retention`](crate::store::StoreOptions::retention)), so the catalog does
//! not grow with every file ever shared.
//!
//! The sweep marks when it first finds a content unheld and removes it once the mark is older
//! than the period; a content held again in between loses its mark. So a content goes at most
//! one sweep interval after the period, never before, and nothing is tracked on the paths of
//! announces and registrations.

use shoal_core::ContentId;

use super::Memory;

impl Memory {
    /// Marks contents no agent holds, and removes those unheld for the retention period (the
    /// agents whose lease lapsed must be swept first). Answers the removed ids, whose durable
    /// rows (manifest, URL mappings) the caller deletes.
    pub(in crate::store) fn sweep_contents(&mut self, now: u64) -> Vec<ContentId> {
        let Some(retention) = self.retention_ms else {
            return Vec::new();
        };
        let mut expired = Vec::new();
        for (slot, content) in self.contents.iter_mut().enumerate() {
            if !content.holders.is_empty() {
                content.unheld_since = None;
                continue;
            }
            let since = *content.unheld_since.get_or_insert(now);
            if now.saturating_sub(since) >= retention {
                expired.push(slot as u32);
            }
        }
        // From the highest slot down: each removal moves the last content into the freed
        // slot, and every content above the current one is already gone or kept.
        expired
            .into_iter()
            .rev()
            .map(|slot| self.remove_content(slot))
            .collect()
    }

    /// Removes the content in `slot`, which no agent holds, moving the last content into it.
    fn remove_content(&mut self, slot: u32) -> ContentId {
        let removed = self.contents.swap_remove(slot as usize);
        self.content_ids.remove(&removed.id);
        self.reports.remove(&slot);
        self.manifests -= u64::from(removed.manifest);
        let last = self.contents.len() as u32;
        if slot != last {
            let moved = &self.contents[slot as usize];
            self.content_ids.insert(moved.id, slot);
            let holders: Vec<u32> = moved.holders.keys().copied().collect();
            for agent in holders {
                let holdings = &mut self.agent_mut(agent).holdings;
                holdings.remove(&last);
                holdings.insert(slot);
            }
            if let Some(reports) = self.reports.remove(&last) {
                self.reports.insert(slot, reports);
            }
        }
        removed.id
    }
}
