//! The queue's order as aria2 shows it: the active downloads, then the *waiting list* (waiting
//! and paused ones, in the order they will start), which `tellWaiting` pages through and
//! `changePosition` rearranges.

use super::item::Item;
use super::{Gid, State, Status};

pub(super) fn in_waiting_list(item: &Item) -> bool {
    matches!(item.status, Status::Waiting | Status::Paused)
}

/// The gids of the waiting list (waiting and paused), in order.
pub(super) fn waiting_gids(state: &State) -> Vec<Gid> {
    (state.order.iter())
        .filter(|gid| state.items.get(gid).is_some_and(in_waiting_list))
        .copied()
        .collect()
}

/// The index in `order` of place `position` of the waiting list (past its end: the end).
pub(super) fn waiting_index(state: &State, position: usize) -> usize {
    let mut seen = 0;
    for (index, gid) in state.order.iter().enumerate() {
        if state.items.get(gid).is_some_and(in_waiting_list) {
            if seen == position {
                return index;
            }
            seen += 1;
        }
    }
    state.order.len()
}

/// `num` gids from `offset` (a negative one counts from the end, listing backwards).
pub(super) fn window(gids: &[Gid], offset: i64, num: usize) -> Vec<Gid> {
    if offset >= 0 {
        gids.iter()
            .skip(offset as usize)
            .take(num)
            .copied()
            .collect()
    } else {
        let skip = (-offset - 1) as usize;
        gids.iter().rev().skip(skip).take(num).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gids(n: u64) -> Vec<Gid> {
        (1..=n)
            .map(|i| format!("{i:016x}").parse().unwrap())
            .collect()
    }

    #[test]
    fn windows_page_forwards_and_backwards_from_the_end() {
        let all = gids(5);
        assert_eq!(window(&all, 0, 2), all[..2]);
        assert_eq!(window(&all, 3, 10), all[3..]);
        assert_eq!(window(&all, 9, 1), []);
        // aria2: offset -1 is the last one, and the list goes backwards from there.
        assert_eq!(window(&all, -1, 2), [all[4], all[3]]);
        assert_eq!(window(&all, -5, 3), [all[0]]);
        assert_eq!(window(&all, -9, 3), []);
    }
}
