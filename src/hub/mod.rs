//! Fan-out, with no HTTP: the [`Hub`] handle that publishers use, and the per-worker [`Shard`]s that
//! own the connections.
//!
//! A publish is one message per shard, never one per connection: [`Hub::publish`] hands the
//! already-encoded frame to each shard's inbox, and each shard walks its own subscriber lists on
//! its own thread. The only state shared between threads is the inboxes and a few counters.
//!
//! Inboxes are unbounded channels with an explicit depth account: a publish that would push any
//! shard past [`INBOX_LIMIT`] pending messages is refused with [`HubError::Overloaded`] before any
//! shard receives it, so a stalled worker turns into back-pressure on publishers (503) instead of
//! unbounded memory.

mod conn;
mod shard;
mod stats;
mod topic;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

pub use conn::{ConnId, Recv, Subscription, MAX_BATCH_BYTES};
pub use shard::Shard;
pub use stats::{HubSnapshot, ShardSnapshot};
pub use topic::{Topic, TopicError, BROADCAST, MAX_TOPIC_LEN};

use stats::ShardStats;

/// Most messages that may wait in one shard's inbox. A healthy shard drains its inbox in
/// microseconds; 65 536 pending publishes means the worker is stuck, and piling up more would only
/// grow memory.
pub const INBOX_LIMIT: usize = 65_536;

/// How the hub behaves; taken from the configuration once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Number of shards (one per worker thread).
    pub shards: usize,
    /// Frames that may wait for one connection before it counts as a slow consumer.
    pub channel_capacity: usize,
    /// Period of the per-shard heartbeat tick.
    pub heartbeat: Duration,
    /// Close streams that received no event for this long.
    pub idle_timeout: Option<Duration>,
    /// Most concurrent streams across all shards.
    pub max_connections: usize,
    /// Reconnection delay announced to clients; jittered upward at shutdown.
    pub retry: Duration,
}

/// Why a hub operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubError {
    /// A shard inbox is at [`INBOX_LIMIT`]; try again later.
    Overloaded,
    /// The hub is shutting down.
    Closed,
    /// [`Settings::max_connections`] streams are open.
    TooManyConnections,
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::Overloaded => f.write_str("hub is overloaded, try again later"),
            HubError::Closed => f.write_str("hub is shutting down"),
            HubError::TooManyConnections => f.write_str("connection limit reached"),
        }
    }
}

impl std::error::Error for HubError {}

/// A message to a shard.
#[derive(Debug)]
pub(crate) enum Command {
    /// Deliver an encoded frame to the topic's local subscribers.
    Publish(Topic, Bytes),
}

/// The receiving end of a shard's inbox, handed to the worker that runs the shard.
#[derive(Debug)]
pub struct Inbox {
    index: usize,
    rx: mpsc::UnboundedReceiver<Command>,
}

impl Inbox {
    /// The index of the shard this inbox belongs to.
    pub fn index(&self) -> usize {
        self.index
    }
}

struct ShardHandle {
    tx: mpsc::UnboundedSender<Command>,
    stats: Arc<ShardStats>,
}

struct Inner {
    shards: Vec<ShardHandle>,
    settings: Settings,
    epoch: Instant,
    published: AtomicU64,
    connections: AtomicUsize,
    peak: AtomicUsize,
}

/// The handle to the whole hub. Cloning is shallow: every clone talks to the same shards.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Creates the hub and one inbox per shard. Each inbox goes to [`Shard::new`] on its worker.
    pub fn new(settings: Settings) -> (Hub, Vec<Inbox>) {
        let count = settings.shards.max(1);
        let mut shards = Vec::with_capacity(count);
        let mut inboxes = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, rx) = mpsc::unbounded_channel();
            shards.push(ShardHandle {
                tx,
                stats: Arc::new(ShardStats::default()),
            });
            inboxes.push(Inbox { index, rx });
        }
        let hub = Hub {
            inner: Arc::new(Inner {
                shards,
                settings,
                epoch: Instant::now(),
                published: AtomicU64::new(0),
                connections: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }),
        };
        (hub, inboxes)
    }

    /// The settings the hub was built with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// Hands an encoded frame to every shard for delivery to the topic's subscribers. Does not wait
    /// for delivery: each shard fans out on its own thread.
    pub fn publish(&self, topic: &Topic, frame: Bytes) -> Result<(), HubError> {
        let shards = &self.inner.shards;
        if shards
            .iter()
            .any(|s| s.stats.inbox_depth.load(Ordering::Relaxed) >= INBOX_LIMIT)
        {
            return Err(HubError::Overloaded);
        }
        for shard in shards {
            shard.stats.inbox_depth.fetch_add(1, Ordering::Relaxed);
            if shard
                .tx
                .send(Command::Publish(topic.clone(), frame.clone()))
                .is_err()
            {
                shard.stats.inbox_depth.fetch_sub(1, Ordering::Relaxed);
                return Err(HubError::Closed);
            }
        }
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Open streams across all shards.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Reserves a slot for a new stream, or refuses when the limit is reached.
    pub fn try_acquire(&self) -> Result<ConnPermit, HubError> {
        let max = self.inner.settings.max_connections;
        let mut current = self.inner.connections.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return Err(HubError::TooManyConnections);
            }
            match self.inner.connections.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        self.inner.peak.fetch_max(current + 1, Ordering::Relaxed);
        Ok(ConnPermit { hub: self.clone() })
    }

    /// Milliseconds since the hub started.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn shard_stats(&self, index: usize) -> Arc<ShardStats> {
        self.inner.shards[index].stats.clone()
    }

    /// A point-in-time view of the hub's counters.
    pub fn snapshot(&self) -> HubSnapshot {
        let now = self.now_ms();
        let shards: Vec<ShardSnapshot> = self
            .inner
            .shards
            .iter()
            .enumerate()
            .map(|(index, s)| s.stats.snapshot(index))
            .collect();
        let total: usize = shards.iter().map(|s| s.connections).sum();
        let connect_sum: u64 = self
            .inner
            .shards
            .iter()
            .map(|s| s.stats.connect_ms_sum())
            .sum();
        let average_age_ms = if total == 0 {
            0
        } else {
            now.saturating_sub(connect_sum / total as u64)
        };
        HubSnapshot {
            total_connections: total,
            average_age_ms,
            max_connections: self.inner.settings.max_connections,
            peak_connections: self.inner.peak.load(Ordering::Relaxed),
            events_published: self.inner.published.load(Ordering::Relaxed),
            frames_delivered: shards.iter().map(|s| s.frames_delivered).sum(),
            slow_consumers_dropped: shards.iter().map(|s| s.slow_consumers_dropped).sum(),
            uptime_ms: now,
            shards,
        }
    }
}

/// A reserved stream slot; released when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    hub: Hub,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.hub.inner.connections.fetch_sub(1, Ordering::AcqRel);
    }
}


#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
