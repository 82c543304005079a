//! Every timer the node asks for, in one heap, fired from the main loop: a task
//! per timer would let them fire out of order (see foca issue 26).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use tokio::time::Instant;

use crate::node::TimerId;

struct Due {
    at: Instant,
    seq: u64,
    timer: TimerId,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
    seq: u64,
}

impl Timers {
    pub fn push(&mut self, at: Instant, timer: TimerId) {
        self.seq += 1;
        self.heap.push(Reverse(Due {
            at,
            seq: self.seq,
            timer,
        }));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(due)| due.at)
    }

    /// The earliest timer if it is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerId> {
        if self.next_deadline()? <= now {
            self.heap.pop().map(|Reverse(due)| due.timer)
        } else {
            None
        }
    }
}
