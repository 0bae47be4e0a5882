//! Counters a shard keeps for `/stats`, and the snapshots read from them.
//!
//! Each shard's counters are written only by its own thread (relaxed atomics, uncontended) and
//! read by whoever renders statistics. Nothing here is on the critical path of a frame except one
//! relaxed add per batch.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

/// One shard's live counters.
#[derive(Debug, Default)]
pub(crate) struct ShardStats {
    pub(crate) connections: AtomicUsize,
    /// Sum of the connect times (ms since the hub's epoch) of open streams: the average age is
    /// `now - sum / count`, kept in O(1) per connect and disconnect.
    pub(crate) connect_ms_sum: AtomicU64,
    pub(crate) frames_delivered: AtomicU64,
    pub(crate) slow_consumers_dropped: AtomicU64,
    pub(crate) inbox_depth: AtomicUsize,
    /// Channels with a subscriber on this shard.
    pub(crate) channels: AtomicUsize,
    /// Body chunks handed to connections: each is one write of one or more joined frames.
    pub(crate) writes: AtomicU64,
    /// Longest time, in microseconds, the shard's loop spent in one turn of each kind, since
    /// start: the stalls a stream's next frame can wait behind on this worker.
    pub(crate) longest_inbox_batch_us: AtomicU64,
    pub(crate) longest_heartbeat_us: AtomicU64,
    pub(crate) longest_housekeeping_us: AtomicU64,
}

impl ShardStats {
    pub(crate) fn connect_ms_sum(&self) -> u64 {
        self.connect_ms_sum.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self, index: usize) -> ShardSnapshot {
        ShardSnapshot {
            worker: index,
            connections: self.connections.load(Ordering::Relaxed),
            frames_delivered: self.frames_delivered.load(Ordering::Relaxed),
            slow_consumers_dropped: self.slow_consumers_dropped.load(Ordering::Relaxed),
            inbox_depth: self.inbox_depth.load(Ordering::Relaxed),
            channels: self.channels.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            longest_turn_us: LongestTurns {
                inbox_batch: self.longest_inbox_batch_us.load(Ordering::Relaxed),
                heartbeat: self.longest_heartbeat_us.load(Ordering::Relaxed),
                housekeeping: self.longest_housekeeping_us.load(Ordering::Relaxed),
            },
        }
    }
}

/// Raises `slot` to `elapsed` (in microseconds) if that is longer.
pub(crate) fn note_longest(slot: &AtomicU64, elapsed: std::time::Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    if us > slot.load(Ordering::Relaxed) {
        slot.store(us, Ordering::Relaxed);
    }
}

/// The longest turn of a shard's loop by kind, in microseconds since start.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LongestTurns {
    /// Applying one batch of inbox messages (publishes fanned out to this worker's streams).
    pub inbox_batch: u64,
    /// Queuing one heartbeat on every idle stream.
    pub heartbeat: u64,
    /// One housekeeping tick (idle, expiry and write-progress checks).
    pub housekeeping: u64,
}

/// One shard's counters at a point in time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardSnapshot {
    /// Worker (shard) index.
    pub worker: usize,
    /// Open streams on this worker.
    pub connections: usize,
    /// Frames handed to this worker's connections for writing.
    pub frames_delivered: u64,
    /// Streams this worker cut off because their queue was full.
    pub slow_consumers_dropped: u64,
    /// Publishes waiting in this worker's inbox.
    pub inbox_depth: usize,
    /// Channels with at least one subscriber on this worker.
    pub channels: usize,
    /// Writes of frames to this worker's streams; `framesDelivered / writes` is how many frames
    /// one write carries on average.
    pub writes: u64,
    /// The longest turn of this worker's hub loop, by kind, in microseconds since start.
    pub longest_turn_us: LongestTurns,
}

/// The whole hub's counters at a point in time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubSnapshot {
    /// Open streams.
    pub total_connections: usize,
    /// Mean age of open streams, in milliseconds.
    #[serde(rename = "averageAge")]
    pub average_age_ms: u64,
    /// Configured stream limit.
    pub max_connections: usize,
    /// Most streams open at once since start.
    pub peak_connections: usize,
    /// Events accepted for publishing.
    pub events_published: u64,
    /// Frames handed to connections for writing, over all workers.
    pub frames_delivered: u64,
    /// Slow consumers disconnected, over all workers.
    pub slow_consumers_dropped: u64,
    /// Channels with at least one subscriber, over all workers.
    pub channels: usize,
    /// Channels with retained history.
    pub history_channels: usize,
    /// Events retained over all channels.
    pub history_events: usize,
    /// Users with an offline queue.
    pub users_with_queue: usize,
    /// Events queued for users and not yet delivered to any of their streams.
    pub queued_user_events: usize,
    /// Bytes retained for clients that are not connected (history and user queues).
    pub retained_bytes: u64,
    /// The byte budget of retained events.
    pub memory_budget: u64,
    /// Retained events evicted, oldest first across channels, to stay within the budget.
    pub budget_evictions: u64,
    /// The id of the latest published event.
    pub last_event_id: String,
    /// Milliseconds since start.
    #[serde(rename = "uptime")]
    pub uptime_ms: u64,
    /// Per-worker figures.
    #[serde(rename = "workers")]
    pub shards: Vec<ShardSnapshot>,
}
