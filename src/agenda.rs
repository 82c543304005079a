//! Things to do at given times, in time order, ties in the order they were added.
//! The runtime keeps its timers in one, the simulator its whole world.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

struct Entry<At, T> {
    at: At,
    seq: u64,
    item: T,
}

impl<At: Ord, T> PartialEq for Entry<At, T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<At: Ord, T> Eq for Entry<At, T> {}

impl<At: Ord, T> PartialOrd for Entry<At, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<At: Ord, T> Ord for Entry<At, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.at, self.seq).cmp(&(&other.at, other.seq))
    }
}

pub struct Agenda<At, T> {
    heap: BinaryHeap<Reverse<Entry<At, T>>>,
    seq: u64,
}

impl<At: Ord, T> Default for Agenda<At, T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<At: Ord + Copy, T> Agenda<At, T> {
    pub fn push(&mut self, at: At, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            item,
        }));
    }

    pub fn next_time(&self) -> Option<At> {
        self.heap.peek().map(|Reverse(entry)| entry.at)
    }

    /// The earliest item, if it is due by `now`.
    pub fn pop_due(&mut self, now: At) -> Option<(At, T)> {
        if self.next_time()? <= now {
            self.heap.pop().map(|Reverse(entry)| (entry.at, entry.item))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_items_come_in_time_order_then_insertion_order() {
        let mut agenda = Agenda::default();
        agenda.push(5, "late");
        agenda.push(1, "first");
        agenda.push(1, "second");
        assert_eq!(agenda.next_time(), Some(1));
        assert_eq!(agenda.pop_due(3), Some((1, "first")));
        assert_eq!(agenda.pop_due(3), Some((1, "second")));
        assert_eq!(agenda.pop_due(3), None, "not due yet");
        assert_eq!(agenda.pop_due(5), Some((5, "late")));
    }
}
