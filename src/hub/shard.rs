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

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tokio::time::MissedTickBehavior;

use super::conn::{Conn, ConnId, Push, State, Subscription, Tripwire};
use super::frame::{self, Frame, Transport};
use super::history::{History, Position, Seq};
use super::stats::ShardStats;
use super::{
    policy_for, Change, Command, ConnPermit, Hub, HubError, Inbox, OpenError, Policy, Topic, UserId,
};
use crate::shutdown::Shutdown;
use crate::sse::{self, EventId, EventName};

/// Most channels one stream may subscribe to (at connect and through `/subscribe` together).
/// Every channel costs an entry in a subscriber list; a stream that needs more is really a
/// broadcast.
pub const MAX_TOPICS_PER_STREAM: usize = 64;

/// Inbox messages taken per wake-up. Batching amortizes the wake-up; the bound keeps one busy
/// inbox from starving the heartbeat tick.
const INBOX_BATCH: usize = 256;

/// Closed entries tolerated before an early compaction (besides the quarter-of-table rule), so a
/// handful of disconnects never trigger a walk of a large table.
const COMPACT_MIN_DEAD: usize = 64;

/// How long a shard waits for a missing seq before skipping it. A seq is taken and sent by the
/// same publisher without any fallible step in between, so a gap only lasts while that thread is
/// descheduled; this bound only guards against a publisher that died mid-publish.
const GAP_TIMEOUT: Duration = Duration::from_secs(2);

/// The upper end of the random extra reconnection delay sent to every stream at shutdown: clients
/// come back spread over this window instead of all at once.
pub const SHUTDOWN_RETRY_SPREAD: Duration = Duration::from_secs(10);

/// How a new stream starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open<'a> {
    /// Channels to subscribe to.
    pub topics: &'a [Topic],
    /// A client-chosen connection id (validated with [`ConnId::check_custom`]).
    pub id: Option<&'a str>,
    /// The client's last event id (`Last-Event-ID`), if it is resuming.
    pub last_event_id: Option<&'a str>,
    /// The authenticated user opening the stream.
    pub owner: Option<&'a UserId>,
    /// When the stream's credential expires: the stream is closed then, with a final event.
    pub expires_at: Option<SystemTime>,
    /// Unless resuming: start with the newest retained event of each channel (a state channel
    /// such as `metrics`, where the last value is what a new client needs).
    pub latest: bool,
    /// Unless resuming: frames to send after `connected`, each with its event's seq (0 for a
    /// snapshot without one): a chat room's presence and recent messages. Frames past the
    /// shard's position are left out; they are still to arrive live.
    pub initial: &'a [(Seq, Frame)],
    /// The connection's tripwire, tripped if the stream is evicted.
    pub tripwire: Option<&'a Rc<Tripwire>>,
    /// How the stream reaches its client.
    pub transport: Transport,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Connected<'a> {
    connection_id: &'a str,
    worker: usize,
    channels: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reset<'a> {
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_event_id: Option<&'a str>,
}

/// A stream registered with [`Shard::open_held`], waiting for its catch-up.
pub struct Held {
    conn: Rc<Conn>,
    position: Seq,
}

impl Held {
    /// The shard's position when the stream was registered: the catch-up must cover up to here.
    pub fn position(&self) -> Seq {
        self.position
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("conn", &self.conn.id)
            .field("position", &self.position)
            .finish()
    }
}

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
    heartbeat: Bytes,
    ping: Bytes,
    connected: EventName,
    reset: EventName,
    dropped: EventName,
    closed: EventName,
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
            heartbeat: sse::comment("heartbeat"),
            ping: crate::ws::ping(),
            connected: EventName::parse("connected").expect("a valid event name"),
            reset: EventName::parse("reset").expect("a valid event name"),
            dropped: EventName::parse("dropped").expect("a valid event name"),
            closed: EventName::parse("closed").expect("a valid event name"),
            closing: Cell::new(false),
            tick: Cell::new(0),
            expiries: RefCell::new(BTreeMap::new()),
            expiry_seq: Cell::new(0),
            inbox: RefCell::new(Some(inbox)),
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

    /// Registers a new stream. Its queue starts with a `retry:` and a `connected` event, then,
    /// when resuming, every retained event after the client's last id on its channels (or a
    /// `reset` event when that is impossible); live events follow.
    pub fn open(self: &Rc<Self>, open: Open<'_>) -> Result<Subscription, OpenError> {
        let position = self.position();
        let (conn, permit) = self.register(&open)?;
        let start = self.push_opening(&conn, open, position, self.hub.history());
        Ok(Subscription::new(conn, self.clone(), start, permit))
    }

    /// Registers a stream whose catch-up has to be fetched first (from a broker). Live events
    /// after the shard's position are queued but not released to the client; [`Shard::release`]
    /// then puts the opening and the catch-up in front of them. Together that is the same no
    /// gap, no duplicate argument as [`Shard::open`], with the replay read asynchronously.
    pub fn open_held(self: &Rc<Self>, open: &Open<'_>) -> Result<(Subscription, Held), OpenError> {
        let position = self.position();
        let (conn, permit) = self.register(open)?;
        conn.held.set(true);
        // A client ahead of this shard (it saw events on another worker or node first) skips
        // them when they arrive live.
        let mut start = position;
        if let Some(Position::After(after)) = open
            .last_event_id
            .map(|text| self.hub.history().position(text))
        {
            if after > position {
                conn.seen_through.set(after);
                start = after;
            }
        }
        let held = Held {
            conn: conn.clone(),
            position,
        };
        Ok((Subscription::new(conn, self.clone(), start, permit), held))
    }

    /// Releases a held stream: its opening frames and catch-up (read from `history`, which holds
    /// what was fetched up to [`Held::position`]), then the live events queued meanwhile.
    pub fn release(&self, held: Held, open: Open<'_>, history: &dyn History) {
        let conn = &held.conn;
        if !conn.is_open() {
            return;
        }
        let mut live = conn.take_queue();
        let caught_up = self.push_opening(conn, open, held.position, history);
        // Events up to where the client is caught up came with the catch-up (or the client had
        // them already): their live copies are dropped.
        live.retain(|(_, _, seq)| *seq == 0 || *seq > caught_up);
        conn.append_queue(live);
        conn.start.set(caught_up);
        conn.release();
    }

    /// Ends a held stream whose catch-up could not be fetched, with a reconnection hint.
    pub fn fail(&self, held: Held) {
        let conn = &held.conn;
        conn.failed.set(true);
        let delay = self.hub.settings().retry;
        conn.close_with(match conn.transport {
            Transport::Sse => sse::retry(delay),
            Transport::WebSocket => {
                crate::ws::close(crate::ws::CloseCode::GoingAway, "event store unavailable")
            }
            Transport::Poll => Bytes::new(),
        });
    }

    fn register(self: &Rc<Self>, open: &Open<'_>) -> Result<(Rc<Conn>, ConnPermit), OpenError> {
        if self.closing.get() {
            return Err(OpenError::Hub(HubError::Closed));
        }
        let permit = self.hub.try_acquire().map_err(OpenError::Hub)?;
        let id = match open.id {
            Some(text) => {
                self.hub.claim_id(text, self.index)?;
                ConnId::custom(self.index, text)
            }
            None => ConnId::generate(self.index),
        };
        let now = self.hub.now_ms();
        let mut conn = Conn::new(
            id,
            open.transport,
            self.hub.settings().channel_capacity,
            now,
            open.owner.cloned(),
        );
        conn.tripwire = open.tripwire.cloned();
        conn.max_bytes = self.hub.settings().queue_bytes;
        conn.last_event_tick.set(self.tick.get());
        let conn = Rc::new(conn);

        self.conns
            .borrow_mut()
            .insert(conn.id.as_str().into(), conn.clone());
        {
            let mut index = self.topics.borrow_mut();
            let mut own = conn.topics.borrow_mut();
            for topic in open.topics {
                if own.contains(topic) {
                    continue;
                }
                index.entry(topic.clone()).or_default().push(conn.clone());
                self.hub.counts().add(topic);
                own.push(topic.clone());
            }
            self.stats.channels.store(index.len(), Ordering::Relaxed);
        }
        if let Some(at) = open.expires_at {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let key = (Instant::now() + left, self.expiry_seq.get());
            self.expiry_seq.set(key.1 + 1);
            self.expiries.borrow_mut().insert(key, conn.clone());
            conn.expiry_key.set(Some(key));
        }
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats.connect_ms_sum.fetch_add(now, Ordering::Relaxed);
        Ok((conn, permit))
    }

    /// Queues what a stream opens with, and returns the seq it is then caught up to.
    fn push_opening(
        &self,
        conn: &Conn,
        open: Open<'_>,
        position: Seq,
        history: &dyn History,
    ) -> Seq {
        let transport = open.transport;
        let resume = open
            .last_event_id
            .map(|text| (text, history.position(text)));
        let caught_up = match resume {
            Some((_, Position::After(after))) => position.max(after),
            _ => position,
        };
        let position_id = EventId::parse(&history.format_id(caught_up)).ok();
        let mut replay = Vec::new();
        let mut queued = Vec::new();
        let reset_reason = match resume {
            None => {
                if open.latest {
                    for topic in open.topics {
                        replay.extend(history.latest(topic, position));
                    }
                }
                None
            }
            Some((_, Position::Malformed)) => Some("malformed"),
            Some((_, Position::Foreign)) => Some("unknown"),
            Some((_, Position::After(after))) => {
                // The client may have seen events this shard has not applied yet (another
                // worker got there first): skip them when they arrive, and announce the
                // client's own position rather than an older one.
                if after > position {
                    conn.seen_through.set(after);
                }
                let mut gap = false;
                for topic in open.topics {
                    if history.replay(topic, after, position, &mut replay).is_err() {
                        gap = true;
                        break;
                    }
                }
                gap.then_some("expired")
            }
        };
        // A user's queue: what no stream of the user has received yet. After a valid resume the
        // replay already covers it; otherwise it is delivered now, once.
        let mut lost = 0;
        for topic in open.topics.iter().filter(|t| t.is_user()) {
            match (resume, reset_reason) {
                (Some((_, Position::After(_))), None) => history.mark_delivered(topic, position),
                _ => lost += history.take_undelivered(topic, position, &mut queued),
            }
        }
        let connected = serde_json::to_string(&Connected {
            connection_id: conn.id.as_str(),
            worker: self.index,
            channels: open.topics.iter().map(Topic::as_str).collect(),
        })
        .unwrap_or_default();
        // A long poll answers with events only; its `next` says where it stands.
        if transport != Transport::Poll {
            conn.push_initial(frame::control(
                transport,
                &self.connected,
                None,
                Some(self.hub.settings().retry),
                &connected,
            ));
        }
        if resume.is_none() {
            for (seq, frame) in open.initial {
                if *seq <= position {
                    conn.push_initial(frame.get(transport));
                }
            }
        }
        if lost > 0 {
            let data = format!("{{\"count\":{lost},\"reason\":\"queue-overflow\"}}");
            conn.push_initial(frame::control(transport, &self.dropped, None, None, &data));
        }
        if let Some(reason) = reset_reason {
            replay.clear();
            let given = resume
                .map(|(text, _)| text)
                .filter(|t| t.len() <= sse::event::MAX_EVENT_ID_LEN);
            let data = serde_json::to_string(&Reset {
                reason,
                last_event_id: given,
            })
            .unwrap_or_default();
            conn.push_initial(frame::control(
                transport,
                &self.reset,
                position_id.as_ref(),
                None,
                &data,
            ));
        }
        replay.append(&mut queued);
        replay.sort_unstable_by_key(|(seq, _)| *seq);
        replay.dedup_by_key(|(seq, _)| *seq);
        for (_, frame) in replay {
            conn.push_initial(frame.get(transport));
        }
        // The stream is now caught up to `position`. An id-only frame moves the client's last
        // event id there without firing any handler (the spec updates the id before checking
        // for data), so a reconnect resumes from here even if no event arrived in between.
        if reset_reason.is_none() {
            if let Some(frame) = position_id
                .as_ref()
                .and_then(|id| frame::position(transport, id))
            {
                conn.push_initial(frame);
            }
        }
        caught_up
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

    /// Closes streams whose credential has expired, each with a final `closed` event.
    fn close_expired(&self) {
        let now = Instant::now();
        let mut expiries = self.expiries.borrow_mut();
        while let Some(entry) = expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let conn = entry.remove();
            let reason = r#"{"reason":"token-expired"}"#;
            let last = match conn.transport {
                Transport::Sse => frame::control(Transport::Sse, &self.closed, None, None, reason),
                Transport::WebSocket => {
                    let mut both =
                        frame::control(Transport::WebSocket, &self.closed, None, None, reason)
                            .to_vec();
                    both.extend_from_slice(&crate::ws::close(
                        crate::ws::CloseCode::Policy,
                        "token expired",
                    ));
                    Bytes::from(both)
                }
                Transport::Poll => Bytes::new(),
            };
            conn.close_with(last);
        }
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

    /// Queues a heartbeat (a comment, a ping) on every idle stream and sweeps closed entries.
    pub fn heartbeat(&self) {
        self.conns.borrow_mut().retain(|_, conn| {
            match conn.transport {
                Transport::Sse => conn.push_heartbeat(&self.heartbeat),
                Transport::WebSocket => conn.push_heartbeat(&self.ping),
                // A long poll ends within its timeout, long before any proxy would cut it.
                Transport::Poll => {}
            }
            conn.state() != State::Closed
        });
        // Subscriber lists only hold closed entries if a stream closed since the last sweep.
        if self.dead.get() > 0 {
            self.compact_topics();
        }
    }

    /// Ends streams that received no event for `idle`.
    fn close_idle(&self, idle: Duration) {
        let idle_ticks =
            u32::try_from(idle.as_millis().div_ceil(HOUSEKEEPING.as_millis())).unwrap_or(u32::MAX);
        let now = self.tick.get();
        for conn in self.conns.borrow().values() {
            // Strictly more: a stamp is taken anywhere within its tick, so `>=` could close up to
            // one tick early.
            if conn.is_open() && now.wrapping_sub(conn.last_event_tick.get()) > idle_ticks {
                conn.close_with(match conn.transport {
                    Transport::Sse => sse::comment("idle timeout"),
                    Transport::WebSocket => {
                        crate::ws::close(crate::ws::CloseCode::Normal, "idle timeout")
                    }
                    Transport::Poll => Bytes::new(),
                });
            }
        }
    }

    /// Evicts streams whose socket took nothing for `timeout` while frames waited: a reader that
    /// stopped reading, cut off before its queue fills (it resumes from history). Counted as a
    /// slow consumer.
    fn close_stalled(&self, timeout: Duration) {
        let limit = u32::try_from(timeout.as_millis().div_ceil(HOUSEKEEPING.as_millis()))
            .unwrap_or(u32::MAX);
        let mut evicted = 0;
        for conn in self.conns.borrow().values() {
            if conn.check_progress(limit) {
                evicted += 1;
            }
        }
        if evicted > 0 {
            self.stats
                .slow_consumers_dropped
                .fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// Sends every stream a jittered `retry:` and ends it, so reconnects spread out.
    pub fn close_all(&self) {
        let base = self.hub.settings().retry;
        let spread = u64::try_from(SHUTDOWN_RETRY_SPREAD.as_millis()).unwrap_or(u64::MAX);
        for conn in self.conns.borrow().values() {
            let delay = base + Duration::from_millis(fastrand::u64(0..=spread));
            conn.close_with(match conn.transport {
                Transport::Sse => sse::retry(delay),
                Transport::WebSocket => {
                    crate::ws::close(crate::ws::CloseCode::GoingAway, "server shutting down")
                }
                Transport::Poll => Bytes::new(),
            });
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

    fn compact_topics(&self) {
        let Ok(mut topics) = self.topics.try_borrow_mut() else {
            return;
        };
        topics.retain(|_, list| {
            list.retain(|c| c.is_open());
            !list.is_empty()
        });
        self.stats.channels.store(topics.len(), Ordering::Relaxed);
        self.dead.set(0);
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
            Command::Subscribe {
                id,
                topic,
                add,
                caller,
                reply,
            } => {
                let _ = reply.send(self.subscribe(&id, &topic, add, caller.as_ref()));
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
                _ = housekeeping.tick() => {
                    self.tick.set(self.tick.get().wrapping_add(1));
                    self.check_gap();
                    self.close_expired();
                    if let Some(idle) = settings.idle_timeout {
                        self.close_idle(idle);
                    }
                    self.close_stalled(settings.write_timeout);
                }
            }
        }
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

/// Period of the per-shard housekeeping tick: gap check, credential expiry and idle timeout.
/// Expired streams close within this much of their `exp`.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

impl From<HubError> for OpenError {
    fn from(error: HubError) -> Self {
        OpenError::Hub(error)
    }
}
