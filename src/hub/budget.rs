//! The process-wide byte budget of retained events: what the embedded history holds for clients
//! that are not connected (channel history and users' offline queues), bounded in bytes across
//! every channel, not only in events per channel.
//!
//! [`Budget`] only accounts; the history owns the events and does the evicting. The history keeps
//! its rings in lock stripes, and each stripe publishes the seq of its oldest retained event here
//! (an atomic per stripe). Since seqs are hub-wide, the globally oldest event is in the stripe with
//! the smallest front: finding it is a scan of [`STRIPES`](super::history) atomics, constant work,
//! and no lock is shared by publishers on different stripes.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes charged per retained event on top of its frames: the ring entry, the stripe's eviction
/// order entry and the allocation headers of the two encodings. Small frames are then not free,
/// so a flood of tiny events is bounded too.
pub const ENTRY_OVERHEAD: usize = 128;

/// No front: the stripe retains nothing.
const EMPTY: u64 = u64::MAX;

/// The byte budget of retained events and its counters.
#[derive(Debug)]
pub struct Budget {
    /// Most bytes retained; above it the oldest events go.
    limit: u64,
    /// Largest single event accepted for publishing.
    max_event: u64,
    /// Bytes retained now.
    held: AtomicU64,
    /// Events evicted to stay within `limit`.
    evictions: AtomicU64,
    /// Per stripe: seq of its oldest retained event (possibly already evicted by its ring's own
    /// limits: a lower bound), or [`EMPTY`].
    fronts: Vec<AtomicU64>,
}

impl Budget {
    /// A budget of `limit` bytes over `stripes` lock stripes, refusing single events above
    /// `max_event` bytes.
    pub fn new(limit: u64, max_event: u64, stripes: usize) -> Self {
        Budget {
            limit,
            max_event,
            held: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            fronts: (0..stripes).map(|_| AtomicU64::new(EMPTY)).collect(),
        }
    }

    /// The bytes an event of `frame_bytes` is charged.
    pub fn cost(frame_bytes: usize) -> u64 {
        (frame_bytes + ENTRY_OVERHEAD) as u64
    }

    /// Whether an event of about `bytes` may be published at all.
    pub fn admits(&self, bytes: usize) -> bool {
        bytes as u64 <= self.max_event
    }

    /// Charges a retained event. Returns whether the budget is now exceeded.
    pub fn charge(&self, cost: u64) -> bool {
        self.held.fetch_add(cost, Ordering::AcqRel) + cost > self.limit
    }

    /// Releases an event no longer retained.
    pub fn release(&self, cost: u64) {
        self.held.fetch_sub(cost, Ordering::AcqRel);
    }

    /// Counts an eviction made to stay within the budget.
    pub fn count_eviction(&self) {
        self.evictions.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether more is retained than the budget allows.
    pub fn is_exceeded(&self) -> bool {
        self.held.load(Ordering::Acquire) > self.limit
    }

    /// Records the oldest retained seq of `stripe` (`None`: it retains nothing).
    pub fn set_front(&self, stripe: usize, front: Option<u64>) {
        self.fronts[stripe].store(front.unwrap_or(EMPTY), Ordering::Release);
    }

    /// The stripe holding the oldest retained event, if any holds one.
    pub fn oldest_stripe(&self) -> Option<usize> {
        let (stripe, front) = self
            .fronts
            .iter()
            .map(|f| f.load(Ordering::Acquire))
            .enumerate()
            .min_by_key(|(_, front)| *front)?;
        (front != EMPTY).then_some(stripe)
    }

    /// Bytes retained now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Events evicted to stay within the budget, since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_and_the_oldest_stripe() {
        let budget = Budget::new(1000, 100, 4);
        assert_eq!(budget.oldest_stripe(), None);
        assert!(!budget.charge(600));
        assert!(budget.charge(600));
        assert!(budget.is_exceeded());
        budget.release(600);
        assert!(!budget.is_exceeded());
        assert_eq!(budget.held(), 600);
        budget.set_front(2, Some(9));
        budget.set_front(1, Some(4));
        assert_eq!(budget.oldest_stripe(), Some(1));
        budget.set_front(1, None);
        assert_eq!(budget.oldest_stripe(), Some(2));
        assert!(budget.admits(100));
        assert!(!budget.admits(101));
    }
}
