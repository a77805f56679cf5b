//! The segment arithmetic of a download, pure and synchronous so it can be property-tested.
//!
//! The file is a set of 64 KiB blocks. Blocks are either done (their bytes are written), owned
//! by a worker (a connection streaming `[pos, end)`), or pending (unowned and unfinished, e.g.
//! given up by a failed connection). A worker asks [`Segments::assign`] for work: it gets a
//! pending interval if there is one, else the back half of the largest owned remainder (work
//! stealing), else, at the tail, a duplicate of the slowest remainder (endgame). Duplicates are
//! harmless because every response carries `If-Range`, so both copies hold the same bytes.

use std::collections::{BTreeMap, HashMap};

use shoal_core::{Bitfield, ByteRange};

use crate::options::{Endgame, BLOCK};

/// A connection's number within one download, chosen by the caller; [`Segments`] tracks work by it.
pub type WorkerId = u32;

/// An owned remainder that would take longer than this at its worker's speed is worth racing
/// at the tail.
const ENDGAME_MIN_SECS: f64 = 1.0;

/// In the endgame a connection of known speed races only a remainder whose worker it
/// outpaces by this much: a twin no faster than the connection it races fetches the same
/// bytes behind it, costing the server a copy of the tail and saving nothing.
const RACE_GAIN: f64 = 1.5;

#[derive(Debug, Clone)]
struct Owned {
    /// Everything before `pos` (from where the worker started) is written.
    pos: u64,
    end: u64,
    /// Blocks below this index are already marked done for this worker.
    marked: u64,
    /// Bytes per second as last measured by the caller; `None` until measured.
    speed: Option<f64>,
    /// The worker racing this one in the endgame, if any.
    twin: Option<WorkerId>,
}

/// What a worker should do after writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep streaming until `end` (which may have moved closer since the last call).
    Continue {
        /// The offset (exclusive) where this worker's range now ends.
        end: u64,
    },
    /// The range is finished (by this worker or a twin): ask for new work.
    Finished,
}

/// Which 64 KiB blocks of a file are done, owned by a worker, or pending, and the rules that hand
/// work out (see the module doc). Plain data changed through `&mut`: the transfer loop keeps it behind a mutex.
#[derive(Debug, Clone)]
pub struct Segments {
    size: u64,
    min_split: u64,
    done: Bitfield,
    pending: BTreeMap<u64, u64>,
    owned: HashMap<WorkerId, Owned>,
    /// Whether the tail may be fetched twice (see [`Endgame`]).
    endgame: Endgame,
}

/// Blocks in a file of `size` bytes; sizes are checked against [`crate::options::MAX_SIZE`] where they come
/// in (the probe, a swarm's layout), so they fit.
pub(crate) fn block_count(size: u64) -> u32 {
    u32::try_from(size.div_ceil(BLOCK)).expect("sizes are at most MAX_SIZE")
}

fn align_up(offset: u64) -> u64 {
    offset.div_ceil(BLOCK) * BLOCK
}

impl Segments {
    /// A plan for a file of `size` bytes with nothing done yet.
    pub fn new(size: u64, min_split: u64) -> Self {
        Self::resume(size, min_split, Bitfield::new(block_count(size)))
    }

    /// A plan that continues from `done`, a bitfield with one bit per block.
    pub fn resume(size: u64, min_split: u64, done: Bitfield) -> Self {
        assert_eq!(
            done.len(),
            block_count(size),
            "bitfield does not fit the file"
        );
        assert!(min_split >= BLOCK && min_split % BLOCK == 0);
        let mut pending = BTreeMap::new();
        let mut start = None;
        for block in 0..done.len() {
            match (done.get(block), start) {
                (false, None) => start = Some(u64::from(block) * BLOCK),
                (true, Some(s)) => {
                    pending.insert(s, u64::from(block) * BLOCK);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            pending.insert(s, size);
        }
        Self {
            size,
            min_split,
            done,
            pending,
            owned: HashMap::new(),
            endgame: Endgame::Race,
        }
    }

    /// The file's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the tail may be fetched twice from now on ([`Endgame::Race`] until set).
    pub fn set_endgame(&mut self, endgame: Endgame) {
        self.endgame = endgame;
    }

    /// One bit per block, set once the block's bytes are written.
    pub fn done(&self) -> &Bitfield {
        &self.done
    }

    /// Bytes in done blocks.
    pub fn done_bytes(&self) -> u64 {
        let blocks = u64::from(self.done.count_ones());
        let last_short = self.size % BLOCK != 0 && self.done.get(self.done.len().wrapping_sub(1));
        blocks * BLOCK
            - if last_short {
                BLOCK - self.size % BLOCK
            } else {
                0
            }
    }

    /// True when every block is done.
    pub fn is_complete(&self) -> bool {
        self.done.is_full()
    }

    /// Whether [`Segments::assign`] would give a new worker something other than a duplicate.
    pub fn has_work(&self) -> bool {
        !self.pending.is_empty() || self.steal_victim().is_some()
    }

    /// The range `worker` still has to stream, `[pos, end)`; `None` when it owns nothing.
    pub fn owned_by(&self, worker: WorkerId) -> Option<ByteRange> {
        self.owned
            .get(&worker)
            .and_then(|o| ByteRange::new(o.pos, o.end))
    }

    /// The workers that own a range now, in no particular order.
    pub fn workers(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.owned.keys().copied()
    }

    /// Gives `worker` the first interval `[start, ..)` it should stream, taking it for the
    /// worker; `None` when nothing is left for another connection.
    pub fn assign(&mut self, worker: WorkerId) -> Option<ByteRange> {
        self.assign_at(worker, None)
    }

    /// Work for `worker` in file order: the next `limit` bytes (a multiple of [`BLOCK`]) of
    /// the first pending interval, else, at the tail, the endgame. No stealing: the front is
    /// always where the next request goes, so the file fills from the front at the full rate.
    pub fn assign_front(
        &mut self,
        worker: WorkerId,
        limit: u64,
        speed: Option<f64>,
    ) -> Option<ByteRange> {
        let whole = ByteRange::new(0, self.size).expect("0 <= size");
        self.take_within(worker, &[whole], limit)
            .or_else(|| self.endgame(worker, speed))
    }

    /// Like [`Segments::assign`], for a worker expected to stream at `speed` bytes per second.
    /// With speeds known on both sides, the thief takes the remainder with the longest time
    /// to go and cuts it so that both finish together: a fast mirror takes most of a slow
    /// one's tail. Without speeds it takes the back half of the largest remainder.
    pub fn assign_at(&mut self, worker: WorkerId, speed: Option<f64>) -> Option<ByteRange> {
        self.release(worker);
        if let Some((&start, &end)) = self.pending.iter().next() {
            self.pending.remove(&start);
            return Some(self.own(worker, start, end, None));
        }
        if let Some(victim) = self.steal_victim() {
            let min_split = self.min_split;
            let v = self.owned.get_mut(&victim).expect("victim is owned");
            let left = v.end - v.pos;
            let keep = match (v.speed, speed) {
                (Some(theirs), Some(ours)) if theirs + ours > 0.0 => {
                    let share = (left as f64 * theirs / (theirs + ours)) as u64;
                    share.clamp(min_split, left - min_split)
                }
                _ => left / 2,
            };
            let split = align_up(v.pos + keep);
            let end = v.end;
            v.end = split;
            return Some(self.own(worker, split, end, None));
        }
        self.endgame(worker, speed)
    }

    /// Like [`Segments::assign_at`] for a source that can serve only `allowed` (a peer's
    /// pieces, in the order it should fetch them: rarest first). The worker gets the first
    /// pending interval inside the first allowed range that has one, clipped to that range;
    /// failing that, once nothing at all is pending, a duplicate of the slowest remainder that
    /// lies wholly inside an allowed range (endgame). There is no stealing: allowed ranges are pieces, small
    /// enough that racing the tail is cheaper than cutting them.
    pub fn assign_within(&mut self, worker: WorkerId, allowed: &[ByteRange]) -> Option<ByteRange> {
        self.assign_within_by(worker, allowed, u64::MAX)
    }

    /// Like [`Segments::assign_within`], at most `limit` bytes (a multiple of [`BLOCK`]) at a
    /// time: connections share a range instead of each taking its own, so that with `allowed`
    /// in file order the ranges complete one after another.
    pub fn assign_within_by(
        &mut self,
        worker: WorkerId,
        allowed: &[ByteRange],
        limit: u64,
    ) -> Option<ByteRange> {
        if let Some(range) = self.take_within(worker, allowed, limit) {
            return Some(range);
        }
        // Only at the tail: before it, a peer that has nothing new yet soon will, and racing
        // another connection's piece would only fetch it twice.
        if self.pending.is_empty() {
            self.race_within(worker, allowed, None)
        } else {
            None
        }
    }

    /// The first part of [`Segments::assign_within`]: pending work only.
    fn take_within(
        &mut self,
        worker: WorkerId,
        allowed: &[ByteRange],
        limit: u64,
    ) -> Option<ByteRange> {
        debug_assert!(limit > 0 && (limit == u64::MAX || limit % BLOCK == 0));
        self.release(worker);
        let (start, end) = self.pending_within(allowed)?;
        let end = end.min(start.saturating_add(limit));
        let (&s, &e) = self
            .pending
            .range(..=start)
            .next_back()
            .expect("the interval is pending");
        self.pending.remove(&s);
        if s < start {
            self.pending.insert(s, start);
        }
        if end < e {
            self.pending.insert(end, e);
        }
        Some(self.own(worker, start, end, None))
    }

    /// The endgame part of [`Segments::assign_within`]: a duplicate of the slowest remainder
    /// that lies wholly inside an allowed range and would take over a second. With `below`,
    /// only a remainder whose worker was measured below that many bytes per second: a source
    /// far slower than the one asking (a peer with a narrow uplink) need not hold its range
    /// until the tail.
    pub fn race_within(
        &mut self,
        worker: WorkerId,
        allowed: &[ByteRange],
        below: Option<f64>,
    ) -> Option<ByteRange> {
        self.release(worker);
        let inside = |o: &Owned| {
            allowed
                .iter()
                .any(|a| a.start() <= o.pos / BLOCK * BLOCK && o.end <= a.end())
        };
        let slower = |o: &Owned| below.is_none_or(|below| o.speed.is_some_and(|s| s < below));
        let (&victim, o) = self
            .owned
            .iter()
            .filter(|(_, o)| o.twin.is_none() && o.end > o.pos && inside(o) && slower(o))
            .filter_map(|(id, o)| Some((id, o, eta(o)?)))
            .filter(|(_, _, eta)| *eta > ENDGAME_MIN_SECS)
            .max_by(|a, b| a.2.total_cmp(&b.2))
            .map(|(id, o, _)| (id, o))?;
        let start = o.pos / BLOCK * BLOCK;
        let end = o.end;
        self.owned.get_mut(&victim).expect("victim is owned").twin = Some(worker);
        Some(self.own(worker, start, end, Some(victim)))
    }

    /// Whether [`Segments::assign_within`] would find a pending interval in `allowed`.
    pub fn has_work_within(&self, allowed: &[ByteRange]) -> bool {
        self.pending_within(allowed).is_some()
    }

    /// The first block-aligned pending stretch inside the first allowed range that has one.
    fn pending_within(&self, allowed: &[ByteRange]) -> Option<(u64, u64)> {
        allowed.iter().find_map(|a| {
            let before = self
                .pending
                .range(..=a.start())
                .next_back()
                .filter(|(_, &e)| e > a.start());
            let after = self.pending.range(a.start()..a.end()).next();
            let (&s, &e) = before.or(after)?;
            let start = s.max(a.start());
            let end = e.min(a.end());
            (start % BLOCK == 0 && start < end).then_some((start, end))
        })
    }

    /// The remainder to steal from: the one with the longest time to go when every candidate
    /// has a measured speed, else the largest; only one big enough to split.
    fn steal_victim(&self) -> Option<WorkerId> {
        let candidates = || {
            self.owned
                .iter()
                .filter(|(_, o)| o.twin.is_none() && o.end - o.pos >= 2 * self.min_split)
        };
        if candidates().all(|(_, o)| o.speed.is_some_and(|s| s > 0.0)) {
            if let Some((&id, _)) = candidates()
                .filter_map(|(id, o)| Some((id, eta(o)?)))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(a.0)))
            {
                return Some(id);
            }
        }
        candidates()
            .max_by_key(|(id, o)| (o.end - o.pos, std::cmp::Reverse(**id)))
            .map(|(&id, _)| id)
    }

    /// The endgame, unless it is off ([`Segments::set_endgame`]).
    fn endgame(&mut self, worker: WorkerId, speed: Option<f64>) -> Option<ByteRange> {
        if self.endgame == Endgame::Never {
            return None;
        }
        self.race_outpaced(worker, speed)
    }

    /// A duplicate of the slowest remainder anywhere in the file for a worker expected to
    /// stream at `speed`, if it outpaces that remainder's worker by [`RACE_GAIN`]; any slow
    /// remainder when its speed is not known yet.
    pub(crate) fn race_outpaced(
        &mut self,
        worker: WorkerId,
        speed: Option<f64>,
    ) -> Option<ByteRange> {
        let whole = ByteRange::new(0, self.size).expect("0 <= size");
        self.race_within(worker, &[whole], speed.map(|s| s / RACE_GAIN))
    }

    fn own(&mut self, worker: WorkerId, start: u64, end: u64, twin: Option<WorkerId>) -> ByteRange {
        debug_assert!(start % BLOCK == 0 && start < end);
        self.owned.insert(
            worker,
            Owned {
                pos: start,
                end,
                marked: start / BLOCK,
                speed: None,
                twin,
            },
        );
        ByteRange::new(start, end).expect("start < end")
    }

    /// Where `worker` must stop: the end of its range, which a steal may have moved closer.
    pub fn end_of(&self, worker: WorkerId) -> Option<u64> {
        self.owned.get(&worker).map(|o| o.end)
    }

    /// Records that `worker` has written everything up to `pos` (since its range started) and
    /// says whether to go on. The caller must have made the bytes durable enough for its
    /// purpose before calling: blocks below `pos` count as done from here on.
    pub fn advance(&mut self, worker: WorkerId, pos: u64) -> Next {
        let size = self.size;
        let Some(o) = self.owned.get_mut(&worker) else {
            return Next::Finished;
        };
        o.pos = pos.clamp(o.pos, o.end);
        let full_blocks = if o.pos == size {
            u64::from(block_count(size))
        } else {
            o.pos / BLOCK
        };
        for block in o.marked..full_blocks {
            self.done.set(block as u32);
        }
        o.marked = o.marked.max(full_blocks);
        let (pos, end) = (o.pos, o.end);
        // Cheap: it stops at the first unfinished block, normally the one at `pos`. A range
        // is only finished by someone else after an endgame race.
        if pos >= end || self.range_done(pos, end) {
            self.finish(worker);
            Next::Finished
        } else {
            Next::Continue { end }
        }
    }

    /// Whether every block holding a byte of `range` is done.
    pub fn is_done(&self, range: ByteRange) -> bool {
        self.range_done(range.start(), range.end())
    }

    /// Forgets that the blocks of `range` are done (their bytes failed verification): they
    /// are fetched again. A block inside a worker's unfinished range is left to that worker.
    pub fn invalidate(&mut self, range: ByteRange) {
        let first = (range.start() / BLOCK) as u32;
        let last = (range.end().div_ceil(BLOCK) as u32).min(self.done.len());
        for block in first..last {
            self.done.clear(block);
        }
        self.repend(first, last);
    }

    fn range_done(&self, start: u64, end: u64) -> bool {
        let first = (start / BLOCK) as u32;
        let last = end.div_ceil(BLOCK) as u32;
        (first..last).all(|b| self.done.get(b))
    }

    fn finish(&mut self, worker: WorkerId) {
        if let Some(o) = self.owned.remove(&worker) {
            if let Some(twin) = o.twin.and_then(|t| self.owned.get_mut(&t)) {
                twin.twin = None;
            }
        }
    }

    /// Takes `worker`'s unfinished remainder back into the pending set (the worker failed,
    /// stalled, or was retired). Safe to call for a worker that owns nothing.
    pub fn release(&mut self, worker: WorkerId) {
        let Some(o) = self.owned.get(&worker).cloned() else {
            return;
        };
        self.finish(worker);
        self.repend((o.pos / BLOCK) as u32, o.end.div_ceil(BLOCK) as u32);
    }

    /// Makes the unfinished blocks in `first..last` pending, except those a worker's range
    /// still covers (an endgame twin's, say) or that are pending already.
    fn repend(&mut self, first: u32, last: u32) {
        let mut run: Option<(u64, u64)> = None;
        for block in first..last.min(self.done.len()) {
            let start = u64::from(block) * BLOCK;
            let end = (start + BLOCK).min(self.size);
            let covered = self.done.get(block)
                || self
                    .owned
                    .values()
                    .any(|o| o.pos / BLOCK * BLOCK <= start && start < o.end)
                || self
                    .pending
                    .range(..=start)
                    .next_back()
                    .is_some_and(|(_, &e)| e > start);
            run = match (run, covered) {
                (Some((s, e)), true) => {
                    self.pending.insert(s, e);
                    None
                }
                (None, true) => None,
                (Some((s, e)), false) if e == start => Some((s, end)),
                (Some((s, e)), false) => {
                    self.pending.insert(s, e);
                    Some((start, end))
                }
                (None, false) => Some((start, end)),
            };
        }
        if let Some((s, e)) = run {
            self.pending.insert(s, e);
        }
    }

    /// Records a worker's measured speed, used to pick endgame victims.
    pub fn set_speed(&mut self, worker: WorkerId, bytes_per_sec: f64) {
        if let Some(o) = self.owned.get_mut(&worker) {
            o.speed = Some(bytes_per_sec);
        }
    }

    /// Workers whose whole range was finished by someone else: they can stop at once.
    pub fn redundant(&self) -> Vec<WorkerId> {
        self.owned
            .iter()
            .filter(|(_, o)| self.range_done(o.pos, o.end))
            .map(|(&id, _)| id)
            .collect()
    }
}

/// Seconds the remainder would take at the measured speed; `None` while unmeasured.
fn eta(o: &Owned) -> Option<f64> {
    let left = (o.end - o.pos) as f64;
    o.speed.map(|speed| {
        if speed > 0.0 {
            left / speed
        } else {
            f64::INFINITY
        }
    })
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn piece(i: u64) -> ByteRange {
        ByteRange::new(i * MIB, (i + 1) * MIB).unwrap()
    }

    #[test]
    fn without_endgame_nothing_is_fetched_twice() {
        let mut seg = Segments::new(2 * MIB, MIB);
        seg.set_endgame(Endgame::Never);
        assert_eq!(seg.assign(1), Some(ByteRange::new(0, 2 * MIB).unwrap()));
        seg.set_speed(1, 1000.0);
        // Too small to steal from, and not raced: the second connection gets nothing.
        seg.advance(1, MIB + BLOCK);
        assert_eq!(seg.assign(2), None);
        seg.set_endgame(Endgame::Race);
        assert!(seg.assign(2).is_some());
    }

    #[test]
    fn assign_within_by_shares_a_range_in_chunks() {
        let mut seg = Segments::new(4 * MIB, MIB);
        let r = |a: u64, b: u64| Some(ByteRange::new(a, b).unwrap());
        let allowed = [r(MIB, 2 * MIB).unwrap(), r(3 * MIB, 4 * MIB).unwrap()];
        let (half, got): (u64, Vec<_>) = (MIB / 2, (1..=3).collect());
        let got: Vec<_> = got
            .iter()
            .map(|&w| seg.assign_within_by(w, &allowed, half))
            .collect();
        let want = [
            r(MIB, MIB + half),
            r(MIB + half, 2 * MIB),
            r(3 * MIB, 3 * MIB + half),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn assign_within_takes_allowed_pieces_in_order() {
        let mut seg = Segments::new(4 * MIB, MIB);
        assert_eq!(seg.assign_within(1, &[piece(2), piece(0)]), Some(piece(2)));
        assert_eq!(seg.assign_within(2, &[piece(2), piece(0)]), Some(piece(0)));
        // Pieces 1 and 3 stay pending for others; nothing else is allowed to worker 3.
        assert!(seg.has_work_within(&[piece(1)]));
        assert!(!seg.has_work_within(&[piece(0), piece(2)]));
        assert_eq!(seg.assign_within(3, &[piece(0)]), None);
        assert_eq!(seg.assign(4), Some(piece(1)));
        assert_eq!(seg.assign_within(5, &[piece(3)]), Some(piece(3)));
    }

    #[test]
    fn assign_within_races_a_slow_piece_at_the_tail() {
        let mut seg = Segments::new(2 * MIB, MIB);
        assert_eq!(seg.assign_within(1, &[piece(0)]), Some(piece(0)));
        assert_eq!(seg.assign_within(2, &[piece(1)]), Some(piece(1)));
        seg.advance(2, 2 * MIB);
        seg.advance(1, 3 * BLOCK);
        seg.set_speed(1, 1000.0);
        let twin = seg.assign_within(3, &[piece(0), piece(1)]).unwrap();
        assert_eq!((twin.start(), twin.end()), (3 * BLOCK, MIB));
        seg.advance(3, MIB);
        assert!(seg.is_complete());
        assert_eq!(seg.advance(1, 4 * BLOCK), Next::Finished);
    }

    #[test]
    fn a_slower_worker_is_raced_before_the_tail() {
        let mut seg = Segments::new(4 * MIB, MIB);
        assert_eq!(seg.assign_within(1, &[piece(0)]), Some(piece(0)));
        assert_eq!(seg.assign_within(2, &[piece(1)]), Some(piece(1)));
        seg.set_speed(1, 100_000.0);
        seg.set_speed(2, 400_000.0);
        // Pieces 2 and 3 are pending, so this is not the tail: only a worker measured below
        // the given speed is raced.
        assert_eq!(
            seg.race_within(3, &[piece(0), piece(1)], Some(50_000.0)),
            None
        );
        assert_eq!(
            seg.race_within(3, &[piece(0), piece(1)], Some(200_000.0)),
            Some(piece(0))
        );
        assert!(seg.has_work_within(&[piece(2), piece(3)]));
    }

    #[test]
    fn assign_front_fills_the_file_in_order() {
        let mut seg = Segments::new(4 * MIB, MIB);
        seg.set_endgame(Endgame::Never);
        let half = MIB / 2;
        let starts: Vec<u64> = (1..=8)
            .map(|w| seg.assign_front(w, half, None).unwrap().start())
            .collect();
        assert_eq!(starts, (0..8).map(|i| i * half).collect::<Vec<_>>());
        assert_eq!(seg.assign_front(9, half, None), None);
    }

    #[test]
    fn assign_within_clips_a_pending_interval_and_keeps_the_rest() {
        let mut seg = Segments::new(3 * MIB + 100, MIB);
        let last = ByteRange::new(3 * MIB, 3 * MIB + 100).unwrap();
        assert_eq!(seg.assign_within(1, &[last]), Some(last));
        assert_eq!(seg.assign_within(2, &[piece(1)]), Some(piece(1)));
        assert_eq!(seg.assign(3), Some(piece(0)));
        assert_eq!(seg.assign(4), Some(piece(2)));
        assert!(!seg.has_work());
    }

    #[test]
    fn first_worker_takes_everything_then_others_halve() {
        let mut s = Segments::new(16 * MIB, MIB);
        assert_eq!(s.assign(0), ByteRange::new(0, 16 * MIB));
        assert_eq!(s.assign(1), ByteRange::new(8 * MIB, 16 * MIB));
        assert_eq!(s.end_of(0), Some(8 * MIB));
        assert_eq!(s.assign(2), ByteRange::new(4 * MIB, 8 * MIB));
        assert_eq!(s.assign(3), ByteRange::new(12 * MIB, 16 * MIB));
    }

    #[test]
    fn does_not_split_below_twice_the_minimum() {
        let mut s = Segments::new(2 * MIB - 1, MIB);
        s.assign(0).unwrap();
        assert!(s.assign(1).is_none(), "an unmeasured worker is not raced");
    }

    #[test]
    fn released_work_is_pending_again() {
        let mut s = Segments::new(4 * MIB, MIB);
        s.assign(0).unwrap();
        assert_eq!(s.advance(0, MIB + 100), Next::Continue { end: 4 * MIB });
        s.release(0);
        assert_eq!(s.done_bytes(), MIB);
        assert_eq!(s.assign(1), ByteRange::new(MIB, 4 * MIB));
    }

    #[test]
    fn endgame_races_a_slow_tail_and_the_loser_is_redundant() {
        let mut s = Segments::new(MIB, MIB);
        s.assign(0).unwrap();
        s.advance(0, 10 * BLOCK + 5);
        s.set_speed(0, 1000.0);
        let raced = s.assign(1).unwrap();
        assert_eq!(raced, ByteRange::new(10 * BLOCK, MIB).unwrap());
        assert!(s.assign(2).is_none(), "one racer per remainder");
        assert_eq!(s.advance(1, MIB), Next::Finished);
        assert!(s.is_complete());
        assert_eq!(s.redundant(), vec![0]);
        assert_eq!(s.advance(0, 11 * BLOCK), Next::Finished);
    }

    #[test]
    fn the_endgame_races_only_a_remainder_the_racer_outpaces() {
        let mut s = Segments::new(MIB, MIB);
        s.assign(0).unwrap();
        s.advance(0, 10 * BLOCK);
        s.set_speed(0, 100_000.0);
        // As fast, or not fast enough to catch up: it would only fetch the same bytes behind.
        assert_eq!(s.assign_at(1, Some(100_000.0)), None);
        assert_eq!(s.assign_at(1, Some(140_000.0)), None);
        let raced = s.assign_at(1, Some(200_000.0)).unwrap();
        assert_eq!(raced, ByteRange::new(10 * BLOCK, MIB).unwrap());
    }

    #[test]
    fn a_fast_thief_takes_most_of_a_slow_remainder() {
        let mut s = Segments::new(64 * MIB, MIB);
        s.assign(0).unwrap();
        s.set_speed(0, 1.0e6);
        let taken = s.assign_at(1, Some(9.0e6)).unwrap();
        // Both finish together: the thief, nine times faster, takes nine tenths.
        assert_eq!(taken.end(), 64 * MIB);
        let kept = s.end_of(0).unwrap();
        assert!((6 * MIB..7 * MIB).contains(&kept), "kept {kept}");
        // The slowest remainder to finish is stolen from next, not the largest.
        s.set_speed(1, 9.0e6);
        let next = s.assign_at(2, Some(1.0e6)).unwrap();
        assert!(next.end() <= kept, "stole from the slow worker: {next}");
    }

    #[test]
    fn invalidated_blocks_are_fetched_again() {
        let mut s = Segments::new(4 * BLOCK, BLOCK);
        s.assign(0).unwrap();
        assert_eq!(s.advance(0, 4 * BLOCK), Next::Finished);
        assert!(s.is_complete());
        s.invalidate(ByteRange::new(BLOCK + 1, 3 * BLOCK).unwrap());
        assert!(!s.is_done(ByteRange::new(BLOCK, 2 * BLOCK).unwrap()));
        assert!(s.is_done(ByteRange::new(0, BLOCK).unwrap()));
        assert_eq!(s.assign(1), ByteRange::new(BLOCK, 3 * BLOCK));
    }

    #[test]
    fn resume_skips_done_blocks() {
        let mut done = Bitfield::new(4);
        done.set(1);
        done.set(2);
        let mut s = Segments::resume(4 * BLOCK - 10, BLOCK, done);
        assert_eq!(s.done_bytes(), 2 * BLOCK);
        assert_eq!(s.assign(0), ByteRange::new(0, BLOCK));
        assert_eq!(s.assign(1), ByteRange::new(3 * BLOCK, 4 * BLOCK - 10));
        assert_eq!(s.advance(1, 4 * BLOCK - 10), Next::Finished);
        assert_eq!(s.advance(0, BLOCK), Next::Finished);
        assert!(s.is_complete());
        assert_eq!(s.done_bytes(), 4 * BLOCK - 10);
    }
}
