//! Property tests of the segment arithmetic: whatever workers do, the segments partition what
//! is left of the file, and stealing ends.

use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone)]
enum Op {
    Assign(WorkerId),
    AssignAt(WorkerId, u32),
    Advance(WorkerId, u64),
    Release(WorkerId),
    Invalidate(u64, u64),
    Speed(WorkerId, u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..6).prop_map(Op::Assign),
        (0u32..6, 1u32..1000).prop_map(|(w, s)| Op::AssignAt(w, s)),
        (0u32..6, 0u64..4 * MIB).prop_map(|(w, n)| Op::Advance(w, n)),
        (0u32..6).prop_map(Op::Release),
        (0u64..6 * MIB, 1u64..2 * MIB).prop_map(|(s, l)| Op::Invalidate(s, l)),
        (0u32..6, 0u32..1000).prop_map(|(w, s)| Op::Speed(w, s)),
    ]
}

/// Checks that owned ranges never overlap unless they are endgame twins, that no pending
/// interval overlaps an owned one or a done block, and that everything unfinished is
/// pending or owned: together, the segments partition what is left of the file.
fn check_partition(s: &Segments) -> Result<(), TestCaseError> {
    let blocks = block_count(s.size);
    let mut cover = vec![0u8; blocks as usize];
    for (&start, &end) in &s.pending {
        prop_assert!(start % BLOCK == 0 && start < end && end <= s.size);
        for b in start / BLOCK..end.div_ceil(BLOCK) {
            prop_assert!(!s.done.get(b as u32), "pending block {} is done", b);
            cover[b as usize] += 1;
        }
    }
    // Endgame twins race over the same bytes: together they cover their union once.
    let blocks_of = |o: &Owned| o.pos / BLOCK..o.end.div_ceil(BLOCK);
    for (id, o) in &s.owned {
        prop_assert!(o.pos <= o.end && o.end <= s.size);
        let twin = o.twin.filter(|t| s.owned[t].twin == Some(*id));
        if twin.is_some_and(|t| t < *id) {
            continue;
        }
        let other = twin.map(|t| blocks_of(&s.owned[&t]));
        for b in 0..u64::from(blocks) {
            let inside =
                blocks_of(o).contains(&b) || other.as_ref().is_some_and(|r| r.contains(&b));
            if inside && !s.done.get(b as u32) {
                cover[b as usize] += 1;
            }
        }
    }
    for b in 0..blocks {
        let c = cover[b as usize];
        if s.done.get(b) {
            prop_assert!(c == 0);
        } else {
            prop_assert_eq!(c, 1, "block {} covered {} times", b, c);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn segments_partition_the_file(
        size in 1u64..6 * MIB,
        split_blocks in 1u64..20,
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let mut s = Segments::new(size, split_blocks * BLOCK);
        check_partition(&s)?;
        for op in ops {
            match op {
                Op::Assign(w) => {
                    if let Some(r) = s.assign(w) {
                        prop_assert!(r.start() % BLOCK == 0 && !r.is_empty());
                    }
                }
                Op::Advance(w, n) => {
                    if let Some(r) = s.owned_by(w) {
                        s.advance(w, r.start() + n.min(r.len()));
                    }
                }
                Op::AssignAt(w, speed) => {
                    if let Some(r) = s.assign_at(w, Some(f64::from(speed))) {
                        prop_assert!(r.start() % BLOCK == 0 && !r.is_empty());
                    }
                }
                Op::Release(w) => s.release(w),
                Op::Invalidate(start, len) => {
                    let start = start.min(s.size());
                    let end = (start + len).min(s.size());
                    s.invalidate(ByteRange::new(start, end).unwrap());
                }
                Op::Speed(w, b) => s.set_speed(w, f64::from(b)),
            }
            check_partition(&s)?;
        }
    }

    /// Workers that each write their whole range and ask again always finish the file,
    /// within a bounded number of assignments.
    #[test]
    fn stealing_terminates(
        size in 1u64..64 * MIB,
        split_blocks in 1u64..32,
        workers in 1u32..40,
    ) {
        let mut s = Segments::new(size, split_blocks * BLOCK);
        let mut assignments = 0;
        loop {
            let mut progressed = false;
            for w in 0..workers {
                if s.owned_by(w).is_none() && s.assign(w).is_some() {
                    assignments += 1;
                }
                // Each worker writes half of what it owns per round, at least a block.
                if let Some(r) = s.owned_by(w) {
                    let step = (r.len() / 2).max(BLOCK);
                    s.advance(w, (r.start() + step).min(r.end()));
                    progressed = true;
                }
            }
            check_partition(&s)?;
            if !progressed {
                break;
            }
            prop_assert!(assignments < 100_000, "stealing did not terminate");
        }
        prop_assert!(s.is_complete());
        prop_assert_eq!(s.done_bytes(), size);
    }
}
