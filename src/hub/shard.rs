//! One worker's share of the hub: its connection table, its channel → subscribers index, and the
//! task that applies inbox messages and the heartbeat tick to them.
//!
//! A shard is owned by exactly one thread (an `Rc`, never sent), so its tables are plain
//! `RefCell`s with no locks. Other threads reach it only through its [`Inbox`](super::Inbox).
//!
//! Removal is lazy: a closed stream is marked closed at once (its queue freed, its counters
//! decremented) and its table entries are swept by the next fan-out over them, by the heartbeat
//! tick, or by an early compaction once closed entries make up a quarter of the table. Fan-out uses
//! `Vec::retain` over contiguous `Rc`s, which visits, delivers and sweeps in one pass.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::time::MissedTickBehavior;

use super::conn::{Conn, ConnId, Push, State, Subscription};
use super::stats::ShardStats;
use super::{Command, Hub, HubError, Inbox, Topic};
use crate::shutdown::Shutdown;
use crate::sse;

/// Inbox messages taken per wake-up. Batching amortizes the wake-up; the bound keeps one busy
/// inbox from starving the heartbeat tick.
const INBOX_BATCH: usize = 256;

/// Closed entries tolerated before an early compaction (besides the quarter-of-table rule), so a
/// handful of disconnects never trigger a walk of a large table.
const COMPACT_MIN_DEAD: usize = 64;

/// The upper end of the random extra reconnection delay sent to every stream at shutdown: clients
/// come back spread over this window instead of all at once.
pub const SHUTDOWN_RETRY_SPREAD: Duration = Duration::from_secs(10);

/// One worker's connections and subscriptions.
pub struct Shard {
    index: usize,
    hub: Hub,
    stats: Arc<ShardStats>,
    conns: RefCell<Vec<Rc<Conn>>>,
    topics: RefCell<HashMap<Topic, Vec<Rc<Conn>>>>,
    dead: Cell<usize>,
    heartbeat: Bytes,
    inbox: RefCell<Option<Inbox>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("conns", &self.conns.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// Creates the shard for `inbox` on the current thread. Run it with [`Shard::run`].
    pub fn new(hub: &Hub, inbox: Inbox) -> Rc<Shard> {
        let index = inbox.index;
        Rc::new(Shard {
            index,
            hub: hub.clone(),
            stats: hub.shard_stats(index),
            conns: RefCell::new(Vec::new()),
            topics: RefCell::new(HashMap::new()),
            dead: Cell::new(0),
            heartbeat: sse::comment("heartbeat"),
            inbox: RefCell::new(Some(inbox)),
        })
    }

    /// This shard's index (= its worker's index).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Registers a new stream subscribed to `topics`. `initial` builds its first frame (it may
    /// use the new connection's id). Refused when the hub's connection limit is reached.
    pub fn open(
        self: &Rc<Self>,
        topics: &[Topic],
        initial: impl FnOnce(&ConnId) -> Option<Bytes>,
    ) -> Result<Subscription, HubError> {
        let permit = self.hub.try_acquire()?;
        let id = ConnId::generate(self.index);
        let first = initial(&id);
        let now = self.hub.now_ms();
        let conn = Rc::new(Conn::new(id, self.hub.settings().channel_capacity, now));
        if let Some(frame) = first {
            conn.push(&frame);
        }
        self.conns.borrow_mut().push(conn.clone());
        {
            let mut index = self.topics.borrow_mut();
            for topic in topics {
                index.entry(topic.clone()).or_default().push(conn.clone());
            }
        }
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats.connect_ms_sum.fetch_add(now, Ordering::Relaxed);
        Ok(Subscription::new(conn, self.clone(), permit))
    }

    /// Delivers a frame to every local subscriber of `topic`. Never blocks and never allocates per
    /// subscriber: each push is a refcount bump into a bounded queue.
    pub fn fan_out(&self, topic: &Topic, frame: &Bytes) {
        let mut topics = self.topics.borrow_mut();
        let Some(list) = topics.get_mut(topic) else {
            return;
        };
        let mut slow = 0u64;
        list.retain(|conn| match conn.push(frame) {
            Push::Queued => true,
            Push::Full => {
                slow += 1;
                false
            }
            Push::Gone => false,
        });
        if list.is_empty() {
            topics.remove(topic);
        }
        if slow > 0 {
            self.stats
                .slow_consumers_dropped
                .fetch_add(slow, Ordering::Relaxed);
        }
    }

    /// Queues a heartbeat comment on every idle stream and sweeps closed entries.
    pub fn heartbeat(&self) {
        self.conns.borrow_mut().retain(|conn| {
            conn.push_heartbeat(&self.heartbeat);
            conn.state() != State::Closed
        });
        self.compact_topics();
    }

    /// Ends streams that received no event for `idle`.
    fn close_idle(&self, idle: Duration) {
        let now = Instant::now();
        for conn in self.conns.borrow().iter() {
            if conn.is_open() && now.duration_since(conn.idle_since()) >= idle {
                conn.close_with(sse::comment("idle timeout"));
            }
        }
    }

    /// Sends every stream a jittered `retry:` and ends it, so reconnects spread out.
    pub fn close_all(&self) {
        let base = self.hub.settings().retry;
        let spread = u64::try_from(SHUTDOWN_RETRY_SPREAD.as_millis()).unwrap_or(u64::MAX);
        for conn in self.conns.borrow().iter() {
            let delay = base + Duration::from_millis(fastrand::u64(0..=spread));
            conn.close_with(sse::retry(delay));
        }
    }

    pub(crate) fn note_delivered(&self, frames: u64) {
        self.stats
            .frames_delivered
            .fetch_add(frames, Ordering::Relaxed);
    }

    pub(crate) fn note_closed(&self, conn: &Conn) {
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .connect_ms_sum
            .fetch_sub(conn.connected_ms, Ordering::Relaxed);
        let dead = self.dead.get() + 1;
        self.dead.set(dead);
        let live = self.stats.connections.load(Ordering::Relaxed);
        if dead >= COMPACT_MIN_DEAD && dead * 4 >= live {
            self.compact();
        }
    }

    /// Drops every closed entry from every table.
    fn compact(&self) {
        let Ok(mut conns) = self.conns.try_borrow_mut() else {
            return;
        };
        conns.retain(|c| c.state() != State::Closed);
        drop(conns);
        self.compact_topics();
    }

    fn compact_topics(&self) {
        let Ok(mut topics) = self.topics.try_borrow_mut() else {
            return;
        };
        topics.retain(|_, list| {
            list.retain(|c| c.is_open());
            !list.is_empty()
        });
        self.dead.set(0);
    }

    /// Entries in the connection table, closed-but-unswept ones included.
    pub fn table_len(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Number of topics with at least one subscriber entry.
    pub fn topic_count(&self) -> usize {
        self.topics.borrow().len()
    }

    fn apply(&self, command: Command) {
        match command {
            Command::Publish(topic, frame) => self.fan_out(&topic, &frame),
        }
    }

    /// Runs the shard until shutdown: applies inbox messages and ticks the heartbeat. Call once.
    pub async fn run(self: Rc<Self>, mut shutdown: Shutdown) {
        let Some(mut inbox) = self.inbox.borrow_mut().take() else {
            return;
        };
        let settings = self.hub.settings().clone();
        let mut heartbeat = tokio::time::interval(settings.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut idle = settings.idle_timeout.map(|timeout| {
            let period = (timeout / 4).max(Duration::from_millis(10));
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            (timeout, interval)
        });
        let mut batch = Vec::with_capacity(INBOX_BATCH);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.recv() => break,
                received = inbox.rx.recv_many(&mut batch, INBOX_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    self.stats.inbox_depth.fetch_sub(received, Ordering::Relaxed);
                    for command in batch.drain(..) {
                        self.apply(command);
                    }
                }
                _ = heartbeat.tick() => self.heartbeat(),
                _ = async {
                    match idle.as_mut() {
                        Some((_, interval)) => interval.tick().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some((timeout, _)) = idle {
                        self.close_idle(timeout);
                    }
                }
            }
        }
        self.close_all();
    }
}
