//! One worker's share of the hub: its connection table, its channel → subscribers index, and the
//! task that applies inbox messages and the heartbeat tick to them.
//!
//! A shard is owned by exactly one thread (an `Rc`, never sent), so its tables are plain
//! `RefCell`s with no locks. Other threads reach it only through its [`Inbox`](super::Inbox).
//!
//! # Order
//!
//! Every shard receives every publish (one message per shard per event), tagged with its
//! hub-wide seq. Two publishers can take seqs 5 and 6 and reach an inbox as 6, 5; the shard
//! applies publishes strictly in seq order, holding an early arrival until the gap fills. So each
//! shard has a *position* `P`: every event up to `P` has been fanned out here, none after it. A
//! stream that opens (on the shard's own thread) is therefore exactly caught up by replaying the
//! history in `(Last-Event-ID, P]`; everything after `P` reaches it live. No gap, no duplicate,
//! and every stream sees ids in increasing order, which is what makes one id enough to resume.
//!
//! # Removal
//!
//! A closed stream is marked closed at once (queue freed, counters decremented) and its entries
//! are swept by the next fan-out over them, by the heartbeat tick, or by an early compaction once
//! closed entries make up a quarter of the table. Fan-out is one `Vec::retain` pass that delivers
//! and sweeps together.
//!
//! # Pacing
//!
//! Fan-out queues a frame on every subscriber but does not wake their tasks at once: the shard's
//! loop wakes them [`WAKE_BATCH`] at a time and yields between batches, so the worker polls its
//! sockets (a publisher's next request, the inbox) between them. When a publish arrives while a
//! fan-out is still being written, it is queued behind the frames of streams not yet woken, and
//! each of those writes both frames with one syscall. Under saturation the streams' writes carry
//! several events each instead of one; when load is light every stream is woken in the same turn
//! of the worker as before, a few batches apart, so the pacing adds no delay of its own.
//!
//! # Layout
//!
//! This file holds the tables, the run loop and ordered fan-out; `open.rs` opens and resumes
//! streams; `housekeeping.rs` is the periodic work (keep-alives, idle timeout, credential expiry,
//! shutdown); `renew.rs` replaces a live stream's credential (token refresh); `conn.rs` is one stream's bounded queue and the [`Subscription`] its body drains.
//! `conn` and the shard refer to each other; nothing outside this folder sees `Conn`.

mod conn;
mod housekeeping;
mod open;
mod renew;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use super::frame::{Frame, Keepalive};
use super::history::{History, Seq};
use super::stats::{note_longest, ShardStats};
use super::{policy_for, Change, Command, Hub, HubError, Inbox, OpenError, Policy, Topic, UserId};
use crate::shutdown::Shutdown;
use crate::sse::EventName;

pub use conn::{ConnId, Recv, Subscription, Tripwire, MAX_BATCH_BYTES, MAX_CONN_ID_LEN};
pub use open::{Held, Open, Opening, Recent};

use conn::{Conn, Push};
use housekeeping::HOUSEKEEPING;

/// Most channels one stream may subscribe to (at connect and through `/subscribe` together).
/// Every channel costs an entry in a subscriber list; a stream that needs more is really a
/// broadcast.
pub const MAX_TOPICS_PER_STREAM: usize = 64;

/// Inbox messages taken per wake-up. Batching amortizes the wake-up; the bound keeps one busy
/// inbox from starving the heartbeat tick.
const INBOX_BATCH: usize = 256;

/// Streams woken per turn of the shard's loop after a fan-out (see Pacing above). About one turn
/// of the runtime's scheduler between two polls of its sockets (tokio's `event_interval` is 61),
/// so a publish that arrives meanwhile is applied before the next batch is woken.
const WAKE_BATCH: usize = 64;

/// Closed entries tolerated before an early compaction (besides the quarter-of-table rule), so a
/// handful of disconnects never trigger a walk of a large table.
const COMPACT_MIN_DEAD: usize = 64;

/// How long a shard waits for a missing seq before skipping it. A seq is taken and sent by the
/// same publisher without any fallible step in between, so a gap only lasts while that thread is
/// descheduled; this bound only guards against a publisher that died mid-publish.
const GAP_TIMEOUT: Duration = Duration::from_secs(2);

/// One worker's connections and subscriptions.
pub struct Shard {
    index: usize,
    hub: Hub,
    stats: Arc<ShardStats>,
    conns: RefCell<HashMap<Rc<str>, Rc<Conn>>>,
    topics: RefCell<HashMap<Topic, Vec<Rc<Conn>>>>,
    dead: Cell<usize>,
    /// Next seq to apply; `next - 1` is the shard's position.
    next: Cell<Seq>,
    /// Publishes that arrived ahead of a missing seq, and when the wait began.
    early: RefCell<BTreeMap<Seq, (Topic, Frame)>>,
    waiting_since: Cell<Option<Instant>>,
    /// The keep-alive of an idle stream: an SSE comment, a WebSocket ping.
    keepalive: Keepalive,
    connected: EventName,
    reset: EventName,
    dropped: EventName,
    /// Set once the shard has closed its streams for shutdown: later opens are refused, so no
    /// stream can slip in after the closing `retry:` and hold the drain open.
    closing: Cell<bool>,
    /// Housekeeping ticks since start; streams are stamped with it instead of reading the clock
    /// on every push.
    tick: Cell<u32>,
    /// Streams to close when their credential expires, by deadline.
    expiries: RefCell<BTreeMap<(Instant, u64), Rc<Conn>>>,
    expiry_seq: Cell<u64>,
    inbox: RefCell<Option<Inbox>>,
    /// Streams with frames queued by fan-out whose tasks are still to be woken, in fan-out order.
    due: RefCell<VecDeque<Rc<Conn>>>,
    /// Whether [`Shard::run`] is pacing the wakes; without the loop (benches, tests) fan-out
    /// wakes each stream at once.
    pacing: Cell<bool>,
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
            conns: RefCell::new(HashMap::new()),
            topics: RefCell::new(HashMap::new()),
            dead: Cell::new(0),
            next: Cell::new(hub.history().head() + 1),
            early: RefCell::new(BTreeMap::new()),
            waiting_since: Cell::new(None),
            keepalive: Keepalive::new(),
            connected: EventName::parse("connected").expect("a valid event name"),
            reset: EventName::parse("reset").expect("a valid event name"),
            dropped: EventName::parse("dropped").expect("a valid event name"),
            closing: Cell::new(false),
            tick: Cell::new(0),
            expiries: RefCell::new(BTreeMap::new()),
            expiry_seq: Cell::new(0),
            inbox: RefCell::new(Some(inbox)),
            due: RefCell::new(VecDeque::new()),
            pacing: Cell::new(false),
        })
    }

    /// This shard's index (= its worker's index).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The history the hub publishes through.
    pub fn history(&self) -> &dyn History {
        self.hub.history()
    }

    /// The seq of the last event fanned out here.
    pub fn position(&self) -> Seq {
        self.next.get() - 1
    }

    /// Formats a seq as an event id of this hub.
    pub(crate) fn format_id(&self, seq: Seq) -> String {
        self.hub.history().format_id(seq)
    }

    /// Adds (or with `add == false` removes) a live subscription of connection `id`. A stream
    /// opened by an authenticated user can only be changed by that user (`caller`).
    pub fn subscribe(&self, id: &str, topic: &Topic, add: bool, caller: Option<&UserId>) -> Change {
        let Some(conn) = self.conns.borrow().get(id).cloned() else {
            return Change::NotFound;
        };
        if !conn.is_open() {
            return Change::NotFound;
        }
        if conn.owner.is_some() && conn.owner.as_ref() != caller {
            return Change::Forbidden;
        }
        let mut topics = self.topics.borrow_mut();
        let mut own = conn.topics.borrow_mut();
        let subscribed = own.contains(topic);
        if add && !subscribed && own.len() >= MAX_TOPICS_PER_STREAM {
            return Change::TooMany;
        }
        if add && !subscribed {
            topics.entry(topic.clone()).or_default().push(conn.clone());
            own.push(topic.clone());
            self.hub.counts().add(topic);
        } else if !add && subscribed {
            if let Some(list) = topics.get_mut(topic) {
                list.retain(|c| !Rc::ptr_eq(c, &conn));
                if list.is_empty() {
                    topics.remove(topic);
                }
            }
            own.retain(|t| t != topic);
            self.hub.counts().remove(topic);
        }
        self.stats.channels.store(topics.len(), Ordering::Relaxed);
        Change::Done
    }

    /// Delivers a frame to every local subscriber of `topic` under the channel's slow-consumer
    /// policy, and returns how many took it. Never blocks and never allocates per subscriber:
    /// each push is a refcount bump into a bounded queue.
    pub fn fan_out(&self, topic: &Topic, frame: &Frame) -> usize {
        self.fan_out_at(Seq::MAX, topic, frame)
    }

    /// [`Shard::fan_out`] of the event `seq`, skipping streams that have already seen it.
    fn fan_out_at(&self, seq: Seq, topic: &Topic, frame: &Frame) -> usize {
        let mut topics = self.topics.borrow_mut();
        let Some(list) = topics.get_mut(topic) else {
            return 0;
        };
        let policy = policy_for(&self.hub.settings().policies, topic);
        let tick = self.tick.get();
        let mut slow = 0u64;
        list.retain(|conn| {
            if seq <= conn.seen_through.get() {
                return true;
            }
            let pushed = match policy {
                Policy::Disconnect => conn.push(frame, seq),
                Policy::DropOldest => conn.push_shedding(frame, seq),
                Policy::Latest => conn.push_latest(frame, topic, seq),
            };
            match pushed {
                Push::Queued => {
                    conn.last_event_tick.set(tick);
                    self.wake_later(conn);
                    true
                }
                Push::Full => {
                    slow += 1;
                    false
                }
                Push::Gone => false,
            }
        });
        let delivered = list.len();
        if list.is_empty() {
            topics.remove(topic);
            self.stats.channels.store(topics.len(), Ordering::Relaxed);
        }
        if slow > 0 {
            self.stats
                .slow_consumers_dropped
                .fetch_add(slow, Ordering::Relaxed);
        }
        delivered
    }

    /// Wakes a stream that fan-out gave a frame: at once, or in its turn when the loop paces.
    fn wake_later(&self, conn: &Rc<Conn>) {
        if !self.pacing.get() || conn.is_half_full() {
            conn.wake();
        } else if conn.schedule() {
            self.due.borrow_mut().push_back(conn.clone());
        }
    }

    /// Wakes up to `n` streams of the paced list, oldest first.
    fn wake_some(&self, n: usize) {
        let mut due = self.due.borrow_mut();
        let n = n.min(due.len());
        for conn in due.drain(..n) {
            conn.unschedule();
            conn.wake();
        }
    }

    /// Fans out one publish; a user's event that reached a stream leaves the user's queue.
    fn deliver(&self, seq: Seq, topic: &Topic, frame: &Frame) {
        if self.fan_out_at(seq, topic, frame) > 0 && topic.is_user() {
            self.hub.history().mark_delivered(topic, seq);
        }
    }

    /// Applies a publish in seq order, holding it if an earlier seq has not arrived yet.
    fn publish(&self, seq: Seq, topic: Topic, frame: Frame) {
        let next = self.next.get();
        if seq < next {
            return; // Already skipped past (see GAP_TIMEOUT); delivering now would reorder.
        }
        if seq > next && self.hub.settings().ordered_source {
            // The source sends in order; the seqs in between do not exist.
            self.next.set(seq);
            return self.publish(seq, topic, frame);
        }
        if seq > next {
            self.early.borrow_mut().insert(seq, (topic, frame));
            if self.waiting_since.get().is_none() {
                self.waiting_since.set(Some(Instant::now()));
            }
            return;
        }
        self.deliver(seq, &topic, &frame);
        self.next.set(seq + 1);
        self.release_early();
    }

    /// Applies held publishes that are now in order.
    fn release_early(&self) {
        loop {
            let next = self.next.get();
            let Some((topic, frame)) = self.early.borrow_mut().remove(&next) else {
                break;
            };
            self.deliver(next, &topic, &frame);
            self.next.set(next + 1);
        }
        if self.early.borrow().is_empty() {
            self.waiting_since.set(None);
        } else {
            self.waiting_since.set(Some(Instant::now()));
        }
    }

    /// Skips a gap that outlived [`GAP_TIMEOUT`].
    fn check_gap(&self) {
        let Some(since) = self.waiting_since.get() else {
            return;
        };
        if since.elapsed() < GAP_TIMEOUT {
            return;
        }
        let first = self.early.borrow().keys().next().copied();
        if let Some(first) = first {
            tracing::warn!(
                missing = self.next.get(),
                resume_at = first,
                "skipping a seq that never arrived"
            );
            self.next.set(first);
            self.release_early();
        }
    }

    /// Counts one write of `frames` joined frames.
    pub(crate) fn note_delivered(&self, frames: u64) {
        self.stats
            .frames_delivered
            .fetch_add(frames, Ordering::Relaxed);
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_closed(&self, conn: &Conn) {
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .connect_ms_sum
            .fetch_sub(conn.connected_ms, Ordering::Relaxed);
        if conn.id.is_custom() {
            self.hub.release_id(conn.id.as_str());
        }
        for topic in conn.topics.borrow_mut().drain(..) {
            self.hub.counts().remove(&topic);
        }
        if let Some(key) = conn.expiry_key.take() {
            if let Ok(mut expiries) = self.expiries.try_borrow_mut() {
                expiries.remove(&key);
            }
        }
        if let Ok(mut conns) = self.conns.try_borrow_mut() {
            conns.remove(conn.id.as_str());
        }
        let dead = self.dead.get() + 1;
        self.dead.set(dead);
        let live = self.stats.connections.load(Ordering::Relaxed);
        if dead >= COMPACT_MIN_DEAD && dead * 4 >= live {
            self.compact_topics();
        }
    }

    /// Entries in the connection table.
    pub fn table_len(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Number of topics with at least one subscriber entry.
    pub fn topic_count(&self) -> usize {
        self.topics.borrow().len()
    }

    fn apply(&self, command: Command) {
        match command {
            Command::Publish { seq, topic, frame } => self.publish(seq, topic, frame),
            Command::Local { topic, frame } => {
                self.fan_out(&topic, &frame);
            }
            Command::Reconnect => self.close_all(),
            Command::NewEpoch { head, done } => {
                self.early.borrow_mut().clear();
                self.waiting_since.set(None);
                self.next.set(head + 1);
                self.close_all();
                let _ = done.send(());
            }
            Command::Subscribe {
                id,
                topic,
                add,
                caller,
                reply,
            } => {
                let _ = reply.send(self.subscribe(&id, &topic, add, caller.as_ref()));
            }
            Command::Renew {
                id,
                credential,
                reply,
            } => {
                let _ = reply.send(self.renew(&id, &credential));
            }
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
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(INBOX_BATCH);
        self.pacing.set(true);
        loop {
            let waking = !self.due.borrow().is_empty();
            tokio::select! {
                biased;
                _ = shutdown.recv() => break,
                received = inbox.rx.recv_many(&mut batch, INBOX_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    self.stats.inbox_depth.fetch_sub(received, Ordering::Relaxed);
                    let started = Instant::now();
                    for command in batch.drain(..) {
                        self.apply(command);
                    }
                    note_longest(&self.stats.longest_inbox_batch_us, started.elapsed());
                }
                _ = heartbeat.tick() => {
                    let started = Instant::now();
                    self.heartbeat();
                    note_longest(&self.stats.longest_heartbeat_us, started.elapsed());
                }
                _ = housekeeping.tick() => {
                    let started = Instant::now();
                    self.tick.set(self.tick.get().wrapping_add(1));
                    self.check_gap();
                    self.close_expired();
                    if let Some(idle) = settings.idle_timeout {
                        self.close_idle(idle);
                    }
                    self.close_stalled(settings.write_timeout);
                    note_longest(&self.stats.longest_housekeeping_us, started.elapsed());
                }
                // Streams are due a wake: nothing else to do first.
                () = std::future::ready(()), if waking => {}
            }
            // A batch of wakes after every turn, then the worker polls its sockets (and runs the
            // woken streams) before this loop applies more publishes or wakes the next batch.
            if !self.due.borrow().is_empty() {
                self.wake_some(WAKE_BATCH);
                tokio::task::yield_now().await;
            }
        }
        self.pacing.set(false);
        self.wake_some(usize::MAX);
        self.closing.set(true);
        // Publishes accepted before the signal were answered 200: deliver them before the
        // closing retry, so a graceful end loses nothing that was acknowledged.
        while let Ok(command) = inbox.rx.try_recv() {
            self.stats.inbox_depth.fetch_sub(1, Ordering::Relaxed);
            self.apply(command);
        }
        self.close_all();
    }
}

impl From<HubError> for OpenError {
    fn from(error: HubError) -> Self {
        OpenError::Hub(error)
    }
}
