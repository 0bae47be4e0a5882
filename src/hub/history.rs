//! Event ids and retained history: the [`History`] trait the hub publishes through, and
//! [`MemoryHistory`], the embedded per-channel ring buffers.
//!
//! Ids are `<epoch>-<seq>`. `seq` comes from one hub-wide counter, so a single id orders events
//! across every channel and one `Last-Event-ID` is enough to resume a connection that multiplexes
//! many channels. `epoch` names the life of the history: it changes whenever retained events are
//! lost (a restart of the embedded store), so an id from an earlier life is recognised instead of
//! being misread as a position in this one.
//!
//! Each channel's ring is ordered by `seq` (appends happen under the ring's lock, and the seq is
//! taken under that same lock), so finding where a resume starts is a binary search, not a scan.
//! Rings live in lock stripes chosen by the channel's hash: publishers on different channels
//! almost never meet, and there is no global lock on the publish path.
//!
//! Everything retained is also bounded in bytes across all channels by a [`Budget`]: each stripe
//! keeps its events in seq order beside the rings, and when the budget is exceeded the stripe
//! with the oldest event gives it up (see budget.rs), one stripe lock at a time.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::budget::Budget;
use super::Frame;
use super::Topic;

/// Lock stripes for the channel rings. A power of two well above the core count keeps two
/// publishers on different channels from sharing a stripe most of the time.
const STRIPES: usize = 64;

/// The hub-wide position of an event: its `seq`.
pub type Seq = u64;

/// Where a resuming client says it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A valid id of this history's epoch: resume after this seq.
    After(Seq),
    /// Well-formed, but from another epoch (an earlier run, or a broker that lost its data):
    /// the client cannot have seen any event of this one.
    Foreign,
    /// Of this epoch, but past any seq handed out: the client claims events this history never
    /// had (or lost without changing its epoch).
    Ahead,
    /// Not an id this server could have written.
    Malformed,
}

/// Why a replay cannot be complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// Events after the position were already evicted (by size or age).
    Expired,
}

/// Why a publish was refused by the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// The backing store is unreachable.
    Unavailable(String),
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Unavailable(why) => write!(f, "history store unavailable: {why}"),
        }
    }
}

impl std::error::Error for HistoryError {}

/// Retained events per channel, and the id sequence. Implemented by the embedded
/// [`MemoryHistory`]; a networked store can implement it for multi-node deployments.
pub trait History: Send + Sync + 'static {
    /// The epoch: the part of every id that names this history's life. Shared, because a
    /// broker's epoch can change while the process runs (Redis lost the cluster's data).
    fn epoch(&self) -> Arc<str>;

    /// The highest seq handed out so far (0 before the first publish).
    fn head(&self) -> Seq;

    /// Takes the next seq, builds the frame for it with `encode`, and retains the frame on
    /// `topic`, all in one step so that retained order is seq order. Returns the seq and frame.
    fn append(
        &self,
        topic: &Topic,
        encode: &mut dyn FnMut(Seq) -> Frame,
    ) -> Result<(Seq, Frame), HistoryError>;

    /// [`History::append`] for a publish with an idempotency key. A history that outlives the
    /// process keeps the key with the event (in one write), so a retry after a restart is
    /// recognised; the others keep only the event (the key lives in the publish path's table).
    fn append_keyed(
        &self,
        topic: &Topic,
        _key: &str,
        encode: &mut dyn FnMut(Seq) -> Frame,
    ) -> Result<(Seq, Frame), HistoryError> {
        self.append(topic, encode)
    }

    /// Whether what is appended outlives this process (the durable store): an event appended
    /// while every shard has stopped for shutdown is then not lost, only delivered later.
    fn is_durable(&self) -> bool {
        false
    }

    /// Appends to `out` every retained event of `topic` with `after < seq <= upto`, in order.
    /// Fails if events in that range were evicted.
    fn replay(
        &self,
        topic: &Topic,
        after: Seq,
        upto: Seq,
        out: &mut Vec<(Seq, Frame)>,
    ) -> Result<(), Gap>;

    /// Appends to `out` every event of `topic` still retained with `seq <= upto`, in order,
    /// whatever was evicted before them: what a client from another epoch is sent after its
    /// `reset`, since it cannot have seen any of them.
    fn retained(&self, topic: &Topic, upto: Seq, out: &mut Vec<(Seq, Frame)>) {
        let _ = self.replay(topic, 0, upto, out);
    }

    /// The newest retained event of `topic` with `seq <= upto`, if any.
    fn latest(&self, topic: &Topic, upto: Seq) -> Option<(Seq, Frame)>;

    /// For a user's channel: appends to `out` every event up to `upto` not yet delivered to any
    /// of the user's streams, marks them delivered, and returns how many undelivered events were
    /// lost (queue overflow or expiry) since the last call.
    fn take_undelivered(&self, topic: &Topic, upto: Seq, out: &mut Vec<(Seq, Frame)>) -> u64;

    /// For a user's channel: records that events up to `seq` reached a stream.
    fn mark_delivered(&self, topic: &Topic, seq: Seq);

    /// Remembers the newest node-local event of `topic` (published with
    /// [`Hub::publish_local`](super::Hub::publish_local), outside the id sequence), for
    /// [`History::latest`]. Histories that retain every event need not.
    fn keep_local(&self, _topic: &Topic, _frame: &Frame) {}

    /// Drops expired events and empty channels. Called periodically.
    fn sweep(&self);

    /// What is retained.
    fn size(&self) -> HistorySize;

    /// Whether an event of about `bytes` (all its encodings) may be published. The embedded
    /// store refuses events larger than its configured share of the memory budget.
    fn admits(&self, _bytes: usize) -> bool {
        true
    }

    /// Formats a seq as an event id.
    fn format_id(&self, seq: Seq) -> String {
        format!("{}-{}", self.epoch(), seq)
    }

    /// Reads a client's last event id.
    fn position(&self, id: &str) -> Position {
        if id.len() > crate::sse::event::MAX_EVENT_ID_LEN {
            return Position::Malformed;
        }
        let Some((epoch, seq)) = id.rsplit_once('-') else {
            return Position::Malformed;
        };
        if epoch.is_empty()
            || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
            || seq.is_empty()
            || !seq.bytes().all(|b| b.is_ascii_digit())
            || (seq.len() > 1 && seq.starts_with('0'))
        {
            return Position::Malformed;
        }
        let Ok(seq) = seq.parse::<Seq>() else {
            return Position::Malformed;
        };
        if *epoch != *self.epoch() {
            return Position::Foreign;
        }
        if seq > self.head() {
            return Position::Ahead;
        }
        Position::After(seq)
    }
}

/// The visitor of [`MemoryHistory::snapshot`]: a channel, its floor, its delivered mark and its
/// events (seq, age, frame), oldest first.
pub type Snapshot<'a> =
    dyn FnMut(&Topic, Seq, Seq, &mut dyn Iterator<Item = (Seq, Duration, &Frame)>) + 'a;

/// What a history retains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistorySize {
    /// Channels with retained events (users' queues excluded).
    pub channels: usize,
    /// Events retained on those channels.
    pub events: usize,
    /// Users with a queue.
    pub users: usize,
    /// Events queued for users and not yet delivered to any of their streams.
    pub queued: usize,
    /// Bytes retained (frames plus a fixed overhead per event), channels and queues together.
    pub bytes: u64,
    /// The byte budget of retained events (0: the store does not keep one).
    pub budget: u64,
    /// Events evicted to stay within the byte budget, since start.
    pub budget_evictions: u64,
}

/// Retention limits of one kind of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events kept (0 keeps none).
    pub capacity: usize,
    /// Longest time an event is kept.
    pub ttl: Option<Duration>,
}

struct Entry {
    seq: Seq,
    at: Instant,
    frame: Frame,
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<Entry>,
    /// Highest seq evicted from this ring; a resume from before it has a gap.
    evicted_through: Seq,
    /// Users' queues only: highest seq that reached one of the user's streams.
    delivered_through: Seq,
    /// Users' queues only: seqs evicted before any stream had received them. Whether they were
    /// lost is decided when the user connects, because a shard may still be about to deliver
    /// them live; delivery trims this list from the front.
    evicted_pending: VecDeque<Seq>,
    /// Users' queues only: evictions pushed out of `evicted_pending` by its bound, counted lost.
    lost: u64,
}

/// Emptied rings kept per lock stripe as tombstones (their gap knowledge), about 100 bytes each;
/// 64 stripes × 1024 remember 65 536 quiet channels exactly.
const TOMBSTONES_PER_STRIPE: usize = 1024;

/// Most evicted seqs a user's queue remembers individually; older ones count as lost.
const MAX_EVICTED_PENDING: usize = 1024;

/// What evictions from a ring freed, to be given back to the budget.
#[derive(Debug, Default, Clone, Copy)]
struct Freed {
    events: usize,
    bytes: u64,
}

impl Freed {
    fn add(&mut self, other: Freed) {
        self.events += other.events;
        self.bytes += other.bytes;
    }
}

impl Ring {
    fn evict_front(&mut self) -> Freed {
        let mut freed = Freed::default();
        if let Some(old) = self.entries.pop_front() {
            freed = Freed {
                events: 1,
                bytes: Budget::cost(old.frame.retained_len()),
            };
            self.evicted_through = old.seq;
            if old.seq > self.delivered_through {
                self.evicted_pending.push_back(old.seq);
                if self.evicted_pending.len() > MAX_EVICTED_PENDING {
                    self.evicted_pending.pop_front();
                    self.lost += 1;
                }
            }
        }
        freed
    }

    fn mark_delivered(&mut self, seq: Seq) {
        self.delivered_through = self.delivered_through.max(seq);
        while self
            .evicted_pending
            .front()
            .is_some_and(|s| *s <= self.delivered_through)
        {
            self.evicted_pending.pop_front();
        }
    }

    /// Undelivered events up to `upto` lost since the last call. Evicted seqs after `upto` are
    /// kept: a shard at position `upto` has yet to fan them out, and may still deliver them live.
    fn take_lost(&mut self, upto: Seq) -> u64 {
        let delivered = self.delivered_through;
        let pending = self
            .evicted_pending
            .iter()
            .filter(|s| **s > delivered && **s <= upto)
            .count() as u64;
        self.evicted_pending.retain(|s| *s > upto);
        std::mem::take(&mut self.lost) + pending
    }

    fn evict_expired(&mut self, ttl: Option<Duration>, now: Instant) -> Freed {
        let mut freed = Freed::default();
        let Some(ttl) = ttl else { return freed };
        while let Some(front) = self.entries.front() {
            if now.duration_since(front.at) < ttl {
                break;
            }
            freed.add(self.evict_front());
        }
        freed
    }

    fn undelivered(&self) -> usize {
        let start = self
            .entries
            .partition_point(|e| e.seq <= self.delivered_through);
        self.entries.len() - start
    }
}

/// Stale entries a stripe's eviction order may hold before it is compacted (and at least as
/// many as live ones, so compaction is amortised constant work per event).
const MIN_STALE_TO_COMPACT: usize = 64;

/// One lock stripe: its channels' rings and the order its events arrived in.
#[derive(Default)]
struct Stripe {
    rings: HashMap<Topic, Ring>,
    /// `(seq, channel)` of every retained event of this stripe, oldest first, for eviction by
    /// the byte budget. Events a ring dropped by its own limits stay here until popped or
    /// compacted away; `stale` counts them.
    order: VecDeque<(Seq, Topic)>,
    stale: usize,
}

impl Stripe {
    /// Accounts for events the rings dropped by their own limits.
    fn forgot(&mut self, freed: Freed, budget: &Budget) {
        if freed.events > 0 {
            self.stale += freed.events;
            budget.release(freed.bytes);
        }
    }

    /// Evicts the stripe's oldest retained event, skipping order entries whose event is gone.
    fn evict_oldest(&mut self) -> Option<Freed> {
        while let Some((seq, topic)) = self.order.pop_front() {
            match self.rings.get_mut(&topic) {
                Some(ring) if ring.entries.front().is_some_and(|e| e.seq == seq) => {
                    return Some(ring.evict_front());
                }
                _ => self.stale = self.stale.saturating_sub(1),
            }
        }
        self.stale = 0;
        None
    }

    /// Drops order entries of events the rings no longer hold, once they are the majority.
    fn compact(&mut self) {
        if self.stale < MIN_STALE_TO_COMPACT || self.stale < self.order.len() / 2 {
            return;
        }
        let rings = &self.rings;
        // A ring only ever loses its oldest entries, so an event is still held if and only if
        // its ring's front is not newer than it.
        self.order.retain(|(seq, topic)| {
            rings
                .get(topic)
                .and_then(|r| r.entries.front())
                .is_some_and(|front| front.seq <= *seq)
        });
        self.stale = 0;
    }

    fn front(&self) -> Option<Seq> {
        self.order.front().map(|(seq, _)| *seq)
    }
}

/// The embedded history: a bounded ring per channel, in memory.
pub struct MemoryHistory {
    epoch: Arc<str>,
    next: AtomicU64,
    channels: Limits,
    users: Limits,
    stripes: Vec<Mutex<Stripe>>,
    budget: Budget,
    /// Highest `evicted_through` of any ring removed by a sweep: a resume on a channel whose ring
    /// is gone is only safe from after this point.
    swept_through: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

impl fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("epoch", &self.epoch)
            .field("channels", &self.channels)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

impl MemoryHistory {
    /// A history with `channels` limits for channels and `users` limits for users' queues. Its
    /// epoch is the start time in milliseconds, base 36: new for every process.
    pub fn new(channels: Limits, users: Limits) -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::with_epoch(base36(millis), channels, users)
    }

    /// Like [`MemoryHistory::new`] with a chosen epoch (tests).
    pub fn with_epoch(epoch: String, channels: Limits, users: Limits) -> Self {
        MemoryHistory {
            epoch: epoch.into(),
            next: AtomicU64::new(1),
            channels,
            users,
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            budget: Budget::new(u64::MAX, u64::MAX, STRIPES),
            swept_through: AtomicU64::new(0),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Bounds everything retained to `limit` bytes (oldest events evicted first, across
    /// channels), and refuses single events above `max_event` bytes.
    pub fn with_budget(mut self, limit: u64, max_event: u64) -> Self {
        self.budget = Budget::new(limit, max_event, STRIPES);
        self
    }

    /// Evicts the oldest events, whatever their channel, until the budget holds. Takes one
    /// stripe lock at a time, never while another is held.
    fn enforce_budget(&self) {
        while self.budget.is_exceeded() {
            let Some(index) = self.budget.oldest_stripe() else {
                return;
            };
            let mut stripe = lock(&self.stripes[index]);
            if let Some(freed) = stripe.evict_oldest() {
                self.budget.release(freed.bytes);
                self.budget.count_eviction();
            }
            self.budget.set_front(index, stripe.front());
        }
    }

    fn limits(&self, topic: &Topic) -> Limits {
        if topic.is_user() {
            self.users
        } else {
            self.channels
        }
    }

    fn stripe_index(&self, topic: &Topic) -> usize {
        (self.hasher.hash_one(topic) as usize) % STRIPES
    }

    fn stripe(&self, topic: &Topic) -> &Mutex<Stripe> {
        &self.stripes[self.stripe_index(topic)]
    }

    /// Puts back an event read from a durable store at start-up, `age` old, under the same
    /// retention rules (and memory budget) as a publish, and moves the id sequence past it.
    /// Events come back in about seq order; one older than the ring's newest is inserted in
    /// place.
    pub fn restore(&self, topic: &Topic, seq: Seq, age: Duration, frame: Frame) {
        self.next.fetch_max(seq + 1, Ordering::AcqRel);
        let limits = self.limits(topic);
        if limits.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let at = now.checked_sub(age).unwrap_or(now);
        let index = self.stripe_index(topic);
        let mut stripe = lock(&self.stripes[index]);
        let ring = stripe.rings.entry(topic.clone()).or_default();
        if seq <= ring.evicted_through {
            return;
        }
        let mut freed = Freed::default();
        if limits.ttl.is_some_and(|ttl| age >= ttl) {
            // Expired while the store was down: gone, but a resume from before it is a gap.
            while ring.entries.front().is_some_and(|e| e.seq < seq) {
                freed.add(ring.evict_front());
            }
            ring.evicted_through = seq;
            stripe.forgot(freed, &self.budget);
            self.budget.set_front(index, stripe.front());
            return;
        }
        let place = ring.entries.partition_point(|e| e.seq < seq);
        if ring.entries.get(place).is_some_and(|e| e.seq == seq) {
            return;
        }
        let cost = Budget::cost(frame.retained_len());
        ring.entries.insert(place, Entry { seq, at, frame });
        while ring.entries.len() > limits.capacity {
            freed.add(ring.evict_front());
        }
        stripe.forgot(freed, &self.budget);
        stripe.order.push_back((seq, topic.clone()));
        stripe.compact();
        let over_budget = self.budget.charge(cost);
        self.budget.set_front(index, stripe.front());
        drop(stripe);
        if over_budget {
            self.enforce_budget();
        }
    }

    /// Puts back what a durable store's snapshot says of a channel: events up to `floor` were
    /// evicted, events up to `delivered` reached one of the user's streams.
    pub fn restore_marks(&self, topic: &Topic, floor: Seq, delivered: Seq) {
        let index = self.stripe_index(topic);
        let mut stripe = lock(&self.stripes[index]);
        let ring = stripe.rings.entry(topic.clone()).or_default();
        let mut freed = Freed::default();
        while ring.entries.front().is_some_and(|e| e.seq <= floor) {
            freed.add(ring.evict_front());
        }
        ring.evicted_through = ring.evicted_through.max(floor);
        ring.mark_delivered(delivered);
        stripe.forgot(freed, &self.budget);
        self.budget.set_front(index, stripe.front());
    }

    /// Puts back the hub-wide floor of swept channels.
    pub fn restore_swept(&self, through: Seq) {
        self.swept_through.fetch_max(through, Ordering::AcqRel);
    }

    /// Everything retained, for a durable store's snapshot: the hub-wide swept floor, then for
    /// each channel its floor, its delivered mark and its events with their age, one stripe
    /// locked at a time.
    pub fn snapshot(&self, each: &mut Snapshot<'_>) -> Seq {
        let now = Instant::now();
        for stripe in &self.stripes {
            let stripe = lock(stripe);
            for (topic, ring) in stripe.rings.iter() {
                let mut entries = ring
                    .entries
                    .iter()
                    .map(|e| (e.seq, now.duration_since(e.at), &e.frame));
                each(
                    topic,
                    ring.evicted_through,
                    ring.delivered_through,
                    &mut entries,
                );
            }
        }
        self.swept_through.load(Ordering::Acquire)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a stripe cannot leave a ring half-updated in a way that matters
    // (each update is one push or pop), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl History for MemoryHistory {
    fn epoch(&self) -> Arc<str> {
        self.epoch.clone()
    }

    fn head(&self) -> Seq {
        self.next.load(Ordering::Acquire) - 1
    }

    fn append(
        &self,
        topic: &Topic,
        encode: &mut dyn FnMut(Seq) -> Frame,
    ) -> Result<(Seq, Frame), HistoryError> {
        let index = self.stripe_index(topic);
        let mut stripe = lock(&self.stripes[index]);
        let seq = self.next.fetch_add(1, Ordering::AcqRel);
        let frame = encode(seq);
        let limits = self.limits(topic);
        let mut over_budget = false;
        if limits.capacity > 0 {
            // A ring that a sweep removed may come back: start it from what sweeps have dropped,
            // so a resume from before then is a gap, not a silent loss.
            let swept = self.swept_through.load(Ordering::Acquire);
            let ring = stripe.rings.entry(topic.clone()).or_insert_with(|| Ring {
                evicted_through: swept,
                ..Ring::default()
            });
            let now = Instant::now();
            let mut freed = ring.evict_expired(limits.ttl, now);
            if ring.entries.len() >= limits.capacity {
                freed.add(ring.evict_front());
            }
            ring.entries.push_back(Entry {
                seq,
                at: now,
                frame: frame.clone(),
            });
            stripe.forgot(freed, &self.budget);
            stripe.order.push_back((seq, topic.clone()));
            stripe.compact();
            over_budget = self.budget.charge(Budget::cost(frame.retained_len()));
            self.budget.set_front(index, stripe.front());
        }
        drop(stripe);
        if over_budget {
            self.enforce_budget();
        }
        Ok((seq, frame))
    }

    fn replay(
        &self,
        topic: &Topic,
        after: Seq,
        upto: Seq,
        out: &mut Vec<(Seq, Frame)>,
    ) -> Result<(), Gap> {
        if after >= upto {
            return Ok(());
        }
        let limits = self.limits(topic);
        let mut stripe = lock(self.stripe(topic));
        let Some(ring) = stripe.rings.get_mut(topic) else {
            // Nothing retained: complete unless a sweep removed events after `after`, or the
            // history keeps nothing at all and events were published since.
            if after < self.swept_through.load(Ordering::Acquire) {
                return Err(Gap::Expired);
            }
            if limits.capacity == 0 {
                return Err(Gap::Expired);
            }
            return Ok(());
        };
        let freed = ring.evict_expired(limits.ttl, Instant::now());
        let gap = after < ring.evicted_through;
        if !gap {
            let start = ring.entries.partition_point(|e| e.seq <= after);
            for entry in ring.entries.range(start..) {
                if entry.seq > upto {
                    break;
                }
                out.push((entry.seq, entry.frame.clone()));
            }
        }
        stripe.forgot(freed, &self.budget);
        if gap {
            return Err(Gap::Expired);
        }
        Ok(())
    }

    fn retained(&self, topic: &Topic, upto: Seq, out: &mut Vec<(Seq, Frame)>) {
        let limits = self.limits(topic);
        let mut stripe = lock(self.stripe(topic));
        let Some(ring) = stripe.rings.get_mut(topic) else {
            return;
        };
        let freed = ring.evict_expired(limits.ttl, Instant::now());
        out.extend(
            ring.entries
                .iter()
                .take_while(|e| e.seq <= upto)
                .map(|e| (e.seq, e.frame.clone())),
        );
        stripe.forgot(freed, &self.budget);
    }

    fn latest(&self, topic: &Topic, upto: Seq) -> Option<(Seq, Frame)> {
        let stripe = lock(self.stripe(topic));
        let ring = stripe.rings.get(topic)?;
        let end = ring.entries.partition_point(|e| e.seq <= upto);
        let entry = ring.entries.get(end.checked_sub(1)?)?;
        Some((entry.seq, entry.frame.clone()))
    }

    fn take_undelivered(&self, topic: &Topic, upto: Seq, out: &mut Vec<(Seq, Frame)>) -> u64 {
        let limits = self.limits(topic);
        let mut stripe = lock(self.stripe(topic));
        let Some(ring) = stripe.rings.get_mut(topic) else {
            return 0;
        };
        let freed = ring.evict_expired(limits.ttl, Instant::now());
        let start = ring
            .entries
            .partition_point(|e| e.seq <= ring.delivered_through);
        for entry in ring.entries.range(start..) {
            if entry.seq > upto {
                break;
            }
            out.push((entry.seq, entry.frame.clone()));
        }
        let lost = ring.take_lost(upto);
        ring.mark_delivered(upto);
        stripe.forgot(freed, &self.budget);
        lost
    }

    fn mark_delivered(&self, topic: &Topic, seq: Seq) {
        let mut stripe = lock(self.stripe(topic));
        if let Some(ring) = stripe.rings.get_mut(topic) {
            ring.mark_delivered(seq);
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        for (index, stripe) in self.stripes.iter().enumerate() {
            let mut stripe = lock(stripe);
            let mut tombstones = 0;
            let mut freed = Freed::default();
            stripe.rings.retain(|topic, ring| {
                freed.add(ring.evict_expired(self.limits(topic).ttl, now));
                if !ring.entries.is_empty() {
                    return true;
                }
                // An emptied ring stays as a tombstone: its `evicted_through` tells a later
                // resume on this channel exactly what it lost. Past the bound, the oldest
                // knowledge folds into the hub-wide `swept_through` (conservative: a resume from
                // before it gets a reset on any channel, never a silent loss).
                ring.entries = VecDeque::new();
                tombstones += 1;
                if tombstones <= TOMBSTONES_PER_STRIPE {
                    return true;
                }
                self.swept_through
                    .fetch_max(ring.evicted_through, Ordering::AcqRel);
                false
            });
            stripe.forgot(freed, &self.budget);
            stripe.compact();
            self.budget.set_front(index, stripe.front());
        }
    }

    fn size(&self) -> HistorySize {
        let mut size = HistorySize::default();
        for stripe in &self.stripes {
            let stripe = lock(stripe);
            for (topic, ring) in stripe.rings.iter().filter(|(_, r)| !r.entries.is_empty()) {
                if topic.is_user() {
                    size.users += 1;
                    size.queued += ring.undelivered();
                } else {
                    size.channels += 1;
                    size.events += ring.entries.len();
                }
            }
        }
        size.bytes = self.budget.held();
        size.budget = match self.budget.limit() {
            u64::MAX => 0,
            limit => limit,
        };
        size.budget_evictions = self.budget.evictions();
        size
    }

    fn admits(&self, bytes: usize) -> bool {
        self.budget.admits(bytes)
    }
}

pub(crate) fn base36(mut value: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::parse(name).unwrap()
    }

    fn limits(capacity: usize, ttl: Option<Duration>) -> Limits {
        Limits { capacity, ttl }
    }

    fn history(capacity: usize, ttl: Option<Duration>) -> MemoryHistory {
        MemoryHistory::with_epoch("e".into(), limits(capacity, ttl), limits(3, None))
    }

    fn publish(history: &MemoryHistory, name: &str) -> Seq {
        history
            .append(&topic(name), &mut |seq| {
                Frame::from_parts(bytes::Bytes::from(format!("{seq}")), bytes::Bytes::new())
            })
            .unwrap()
            .0
    }

    fn seqs(history: &MemoryHistory, name: &str, after: Seq) -> Result<Vec<Seq>, Gap> {
        let mut out = Vec::new();
        history.replay(&topic(name), after, history.head(), &mut out)?;
        Ok(out.into_iter().map(|(s, _)| s).collect())
    }

    #[test]
    fn seqs_are_hub_wide_and_replay_is_per_channel() {
        let h = history(10, None);
        assert_eq!(publish(&h, "a"), 1);
        assert_eq!(publish(&h, "b"), 2);
        assert_eq!(publish(&h, "a"), 3);
        assert_eq!(h.head(), 3);
        assert_eq!(seqs(&h, "a", 0).unwrap(), vec![1, 3]);
        assert_eq!(seqs(&h, "a", 1).unwrap(), vec![3]);
        assert_eq!(seqs(&h, "a", 2).unwrap(), vec![3]);
        assert_eq!(seqs(&h, "b", 2).unwrap(), Vec::<Seq>::new());
        assert_eq!(seqs(&h, "never", 0).unwrap(), Vec::<Seq>::new());
    }

    #[test]
    fn evictions_delivered_live_are_not_lost() {
        let h = history(10, None);
        let user = Topic::user(&super::super::UserId::parse("u").unwrap());
        let put = |h: &MemoryHistory| {
            h.append(&user, &mut |_| {
                Frame::from_parts(bytes::Bytes::new(), bytes::Bytes::new())
            })
            .unwrap()
            .0
        };
        // The queue holds 3; five events are evicted before the shard delivers them live.
        let seqs: Vec<Seq> = (0..8).map(|_| put(&h)).collect();
        for seq in &seqs {
            h.mark_delivered(&user, *seq);
        }
        let mut out = Vec::new();
        assert_eq!(h.take_undelivered(&user, h.head(), &mut out), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn evictions_past_the_position_are_not_counted_yet() {
        let h = history(10, None);
        let user = Topic::user(&super::super::UserId::parse("u").unwrap());
        let put = |h: &MemoryHistory| {
            h.append(&user, &mut |_| {
                Frame::from_parts(bytes::Bytes::new(), bytes::Bytes::new())
            })
            .unwrap()
            .0
        };
        // Queue of 3; seqs 1..=5 published, 1 and 2 evicted. A stream opening at position 0
        // (the shard has applied none of them) must not report them lost: they arrive live.
        for _ in 0..5 {
            put(&h);
        }
        let mut out = Vec::new();
        assert_eq!(h.take_undelivered(&user, 0, &mut out), 0);
        for seq in 1..=5 {
            h.mark_delivered(&user, seq);
        }
        assert_eq!(h.take_undelivered(&user, h.head(), &mut out), 0);
    }

    #[test]
    fn a_swept_channel_does_not_reset_resumes_on_others() {
        // A TTL long enough that "quiet" cannot expire between its publish and the check.
        let h = history(10, Some(Duration::from_millis(500)));
        publish(&h, "busy");
        publish(&h, "busy");
        std::thread::sleep(Duration::from_millis(600));
        h.sweep();
        // "quiet" never lost anything: resuming from before the sweep is complete.
        let quiet = publish(&h, "quiet");
        let mut out = Vec::new();
        h.replay(&topic("quiet"), 0, h.head(), &mut out).unwrap();
        assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![quiet]);
        // "busy" did: a resume from before its loss is a gap, from after it is complete.
        assert_eq!(seqs(&h, "busy", 0), Err(Gap::Expired));
        assert_eq!(seqs(&h, "busy", 2).unwrap(), Vec::<Seq>::new());
    }

    #[test]
    fn latest_respects_upto() {
        let h = history(10, None);
        assert!(h.latest(&topic("a"), 10).is_none());
        publish(&h, "a");
        publish(&h, "b");
        publish(&h, "a");
        assert_eq!(h.latest(&topic("a"), 3).map(|(s, _)| s), Some(3));
        assert_eq!(h.latest(&topic("a"), 2).map(|(s, _)| s), Some(1));
        assert_eq!(h.latest(&topic("a"), 0).map(|(s, _)| s), None);
    }

    #[test]
    fn replay_stops_at_upto() {
        let h = history(10, None);
        for _ in 0..5 {
            publish(&h, "a");
        }
        let mut out = Vec::new();
        h.replay(&topic("a"), 1, 3, &mut out).unwrap();
        assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn eviction_by_size_is_a_gap() {
        let h = history(3, None);
        for _ in 0..5 {
            publish(&h, "a");
        }
        assert_eq!(seqs(&h, "a", 2).unwrap(), vec![3, 4, 5]);
        assert_eq!(seqs(&h, "a", 1), Err(Gap::Expired));
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
    }

    #[test]
    fn retained_is_what_is_left_whatever_was_evicted() {
        let h = history(3, None);
        for _ in 0..5 {
            publish(&h, "a");
        }
        publish(&h, "b");
        let mut out = Vec::new();
        h.retained(&topic("a"), h.head(), &mut out);
        assert_eq!(
            out.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        out.clear();
        h.retained(&topic("a"), 4, &mut out);
        assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        out.clear();
        h.retained(&topic("never"), h.head(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn eviction_by_age_and_sweep() {
        let h = history(10, Some(Duration::from_millis(1)));
        publish(&h, "a");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
        h.sweep();
        assert_eq!(h.size(), HistorySize::default());
        // The ring is gone, but the sweep remembers what it dropped.
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
        assert_eq!(seqs(&h, "a", 1).unwrap(), Vec::<Seq>::new());
        // A new event recreates the ring; a resume from before the sweep is still a gap.
        publish(&h, "a");
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
        assert_eq!(seqs(&h, "a", 1).unwrap(), vec![2]);
    }

    #[test]
    fn positions() {
        let h = MemoryHistory::with_epoch("k3x".into(), limits(10, None), limits(10, None));
        publish(&h, "a");
        publish(&h, "a");
        assert_eq!(h.format_id(2), "k3x-2");
        assert_eq!(h.position("k3x-2"), Position::After(2));
        assert_eq!(h.position("k3x-0"), Position::After(0));
        assert_eq!(h.position("k3x-3"), Position::Ahead);
        assert_eq!(h.position("old-1"), Position::Foreign);
        for bad in [
            "",
            "7",
            "-1",
            "abc",
            "x-",
            "not an id, just junk!",
            "ep och-1",
            "é-1",
            "a+b-1",
            "k3x-",
            "k3x--1",
            "k3x-1a",
            "k3x- 1",
            "k3x-01",
            "k3x-99999999999999999999999",
        ] {
            assert_eq!(h.position(bad), Position::Malformed, "{bad}");
        }
        // Over 256 bytes is never an id the server handed out, however id-shaped: this epoch
        // with seq 1 behind 10 KiB of leading zeros, a 300-byte epoch, or 10 KiB of junk.
        for (what, bad) in [
            ("leading zeros", format!("k3x-{}1", "0".repeat(10 * 1024))),
            ("long epoch", format!("{}-1", "a".repeat(300))),
            ("junk", "q".repeat(10 * 1024)),
        ] {
            assert_eq!(h.position(&bad), Position::Malformed, "{what}");
        }
    }

    #[test]
    fn epochs_differ_between_lives() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        let a = MemoryHistory::new(limits(1, None), limits(1, None));
        std::thread::sleep(Duration::from_millis(2));
        let b = MemoryHistory::new(limits(1, None), limits(1, None));
        assert_ne!(a.epoch(), b.epoch());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let h = history(0, None);
        publish(&h, "a");
        assert_eq!(h.size(), HistorySize::default());
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
    }

    fn sized(h: &MemoryHistory, name: &str, bytes: usize) -> Seq {
        h.append(&topic(name), &mut |_| {
            Frame::from_parts(bytes::Bytes::from(vec![b'x'; bytes]), bytes::Bytes::new())
        })
        .unwrap()
        .0
    }

    #[test]
    fn the_budget_evicts_the_oldest_events_across_channels() {
        let cost = Budget::cost(1000);
        let h = history(100, None).with_budget(3 * cost, cost);
        let a1 = sized(&h, "a", 1000);
        let b1 = sized(&h, "b", 1000);
        sized(&h, "c", 1000);
        assert_eq!(h.size().bytes, 3 * cost);
        assert_eq!(h.size().budget_evictions, 0);
        // A fourth event pushes out the oldest one, whatever its channel.
        sized(&h, "d", 1000);
        assert_eq!(h.size().bytes, 3 * cost);
        assert_eq!(h.size().budget_evictions, 1);
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
        assert_eq!(seqs(&h, "a", a1).unwrap(), Vec::<Seq>::new());
        assert_eq!(seqs(&h, "b", 0).unwrap(), vec![b1]);
        // Many more: the total never exceeds the budget and the newest survive.
        for i in 0..1000 {
            sized(&h, &format!("n{i}"), 1000);
        }
        assert!(h.size().bytes <= 3 * cost);
        assert_eq!(h.size().events, 3);
        assert_eq!(seqs(&h, "n999", 0).unwrap().len(), 1);
        assert!(h.admits(1000));
        assert!(!h.admits(cost as usize + 1));
    }

    #[test]
    fn ring_limits_give_bytes_back_and_the_order_stays_small() {
        let h = history(2, None);
        for _ in 0..10_000 {
            sized(&h, "a", 10);
        }
        assert_eq!(h.size().bytes, 2 * Budget::cost(10));
        let stripe = lock(h.stripe(&topic("a")));
        assert!(stripe.order.len() <= 2 * MIN_STALE_TO_COMPACT + 2);
    }

    #[test]
    fn the_budget_counts_evicted_user_events_as_lost() {
        let cost = Budget::cost(100);
        let h = history(10, None).with_budget(2 * cost, cost);
        let user = Topic::user(&super::super::UserId::parse("u").unwrap());
        for _ in 0..5 {
            h.append(&user, &mut |_| {
                Frame::from_parts(bytes::Bytes::from(vec![b'x'; 100]), bytes::Bytes::new())
            })
            .unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(h.take_undelivered(&user, h.head(), &mut out), 3);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn user_queue_delivers_once_and_reports_overflow() {
        let h = history(10, None);
        let user = Topic::user(&super::super::UserId::parse("u1").unwrap());
        let put = |h: &MemoryHistory| {
            h.append(&user, &mut |seq| {
                Frame::from_parts(bytes::Bytes::from(format!("{seq}")), bytes::Bytes::new())
            })
            .unwrap()
            .0
        };
        // Five events while offline; the queue keeps 3, so 2 are lost.
        for _ in 0..5 {
            put(&h);
        }
        assert_eq!(h.size().queued, 3);
        let mut out = Vec::new();
        assert_eq!(h.take_undelivered(&user, h.head(), &mut out), 2);
        assert_eq!(
            out.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(h.size().queued, 0);
        // Nothing twice.
        out.clear();
        assert_eq!(h.take_undelivered(&user, h.head(), &mut out), 0);
        assert!(out.is_empty());
        // Delivered live: not queued for the next connect.
        let live = put(&h);
        h.mark_delivered(&user, live);
        assert_eq!(h.take_undelivered(&user, h.head(), &mut out), 0);
        assert!(out.is_empty());
        // Only up to the caller's position.
        let a = put(&h);
        let _b = put(&h);
        h.take_undelivered(&user, a, &mut out);
        assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![a]);
        assert_eq!(h.size().users, 1);
        assert_eq!(h.size().queued, 1);
    }
}
