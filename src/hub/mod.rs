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

pub mod budget;
mod counts;
mod frame;
pub mod history;
mod shard;
mod stats;
mod topic_list;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use crate::topic::{
    Topic, TopicError, UserId, BROADCAST, CHAT_PREFIX, MAX_TOPIC_LEN, USER_PREFIX,
};
pub use frame::{json_id, Frame, Payload, Transport};
pub use history::{History, HistorySize, Limits, MemoryHistory, Seq};
pub use shard::{
    ConnId, Held, Open, Opening, Recent, Recv, Shard, Subscription, Tripwire, MAX_BATCH_BYTES,
    MAX_CONN_ID_LEN, MAX_TOPICS_PER_STREAM,
};
pub use stats::{HubSnapshot, ShardSnapshot};
pub(crate) use topic_list::decode_form;
pub use topic_list::{CommandNames, TopicList, TopicListError, MAX_NAMES_READ};

use counts::SubscriberCounts;
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
    /// Slow-consumer policies by channel pattern (exact name, or `prefix*`); first match wins,
    /// channels that match none use [`Policy::Disconnect`].
    pub policies: Vec<(String, Policy)>,
    /// Publishes reach the shards from one ordered source (a broker's reader), so a missing seq
    /// is gone for good and never worth waiting for.
    pub ordered_source: bool,
    /// A stream whose socket takes nothing for this long while frames wait is evicted.
    pub write_timeout: Duration,
    /// Most bytes that may wait for one connection (like `channel_capacity`, in bytes).
    pub queue_bytes: usize,
}

/// What happens when a stream's queue is full and another event of a channel arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Cut the stream off; it reconnects and resumes from history, losing nothing.
    #[default]
    Disconnect,
    /// Shed the oldest pending frame and tell the stream in-band how many it missed.
    DropOldest,
    /// Keep only the newest pending event of the channel (right for state snapshots such as
    /// metrics); a stream that falls behind on other channels is still cut off.
    Latest,
}

impl Policy {
    /// Parses `disconnect`, `drop-oldest` or `latest`.
    pub fn parse(text: &str) -> Option<Policy> {
        match text {
            "disconnect" => Some(Policy::Disconnect),
            "drop-oldest" => Some(Policy::DropOldest),
            "latest" => Some(Policy::Latest),
            _ => None,
        }
    }
}

/// The policy for `topic` among `policies` (see [`Settings::policies`]).
pub fn policy_for(policies: &[(String, Policy)], topic: &Topic) -> Policy {
    let name = topic.as_str();
    policies
        .iter()
        .find(|(pattern, _)| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => pattern == name,
        })
        .map_or(Policy::Disconnect, |(_, policy)| *policy)
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
    /// The history store is unreachable; the event was not acknowledged. (Embedded, nothing was
    /// published; with a broker, a publish that timed out may still have been stored.)
    Unavailable,
    /// The event is larger than the share of the memory budget one event may take.
    TooLarge,
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::Overloaded => f.write_str("hub is overloaded, try again later"),
            HubError::Closed => f.write_str("hub is shutting down"),
            HubError::TooManyConnections => f.write_str("connection limit reached"),
            HubError::Unavailable => {
                f.write_str("event store unavailable, the event was not acknowledged")
            }
            HubError::TooLarge => {
                f.write_str("event is larger than one event's share of the memory budget")
            }
        }
    }
}

impl std::error::Error for HubError {}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The hub refused (connection limit, shutdown).
    Hub(HubError),
    /// The client-chosen connection id belongs to a live connection.
    IdTaken,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Hub(error) => error.fmt(f),
            OpenError::IdTaken => f.write_str("connection id is already in use"),
        }
    }
}

impl std::error::Error for OpenError {}

/// The outcome of a subscription change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Done (or already so).
    Done,
    /// No such open connection.
    NotFound,
    /// The connection belongs to an authenticated user and the caller is someone else.
    Forbidden,
    /// The stream already has [`MAX_TOPICS_PER_STREAM`] channels.
    TooMany,
}

/// A fresh credential for a live stream: who it names, until when, and which channels it lets
/// the stream read. The hub knows nothing of tokens; the caller has verified one and describes
/// it here.
pub struct Credential {
    /// The user the credential names; must be the stream's owner.
    pub user: UserId,
    /// The new deadline: the stream is closed then unless renewed again.
    pub expires_at: std::time::SystemTime,
    /// Whether the credential allows reading a channel.
    pub may_read: Box<dyn Fn(&Topic) -> bool + Send>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The outcome of a credential renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed; these channels were dropped because the credential does not allow them.
    Renewed {
        /// The channels unsubscribed, each told to the stream with an `unsubscribed` event.
        unsubscribed: Vec<Topic>,
    },
    /// No such open connection.
    NotFound,
    /// The connection belongs to another user.
    OtherUser,
    /// The connection was opened without a credential; there is none to replace.
    Anonymous,
}

/// What a publish was assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The hub-wide seq.
    pub seq: Seq,
    /// The event id written in the frame (`<epoch>-<seq>`).
    pub id: String,
}

/// A message to a shard.
#[derive(Debug)]
pub(crate) enum Command {
    /// Deliver an encoded frame to the topic's local subscribers, in seq order.
    Publish {
        seq: Seq,
        topic: Topic,
        frame: Frame,
    },
    /// Deliver a node-local frame (outside the id sequence) now.
    Local { topic: Topic, frame: Frame },
    /// End every stream with a reconnection hint (the node lost events it should have
    /// delivered; clients resume from history).
    Reconnect,
    /// Start over in a new epoch (a broker's Redis lost the cluster's data): drop held early
    /// arrivals, continue after seq `head` of the new sequence, and end every stream with a
    /// reconnection hint (they come back with an id of the old epoch and get `reset`). `done`
    /// is dropped once this is applied.
    NewEpoch {
        head: Seq,
        done: oneshot::Sender<()>,
    },
    /// Add or remove a live subscription of a local connection.
    Subscribe {
        id: String,
        topic: Topic,
        add: bool,
        caller: Option<UserId>,
        reply: oneshot::Sender<Change>,
    },
    /// Replace the credential of a local connection (token refresh).
    Renew {
        id: String,
        credential: Credential,
        reply: oneshot::Sender<Renewal>,
    },
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
    history: Arc<dyn History>,
    /// Client-chosen connection ids → owning shard. Touched on connect, disconnect and
    /// subscribe of such connections only, never on the publish path.
    custom_ids: Mutex<HashMap<String, usize>>,
    subscribers: SubscriberCounts,
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
    pub fn new(settings: Settings, history: Arc<dyn History>) -> (Hub, Vec<Inbox>) {
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
                history,
                custom_ids: Mutex::new(HashMap::new()),
                subscribers: SubscriberCounts::new(),
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

    /// The history publishes go through.
    pub fn history(&self) -> &dyn History {
        &*self.inner.history
    }

    /// Publishes an event on `topic`: takes the next id, encodes the frame once with `encode`
    /// (given the seq and the id), retains it, and hands it to every shard. Does not wait for delivery.
    pub fn publish(
        &self,
        topic: &Topic,
        encode: impl FnMut(Seq, &crate::sse::EventId) -> Frame,
    ) -> Result<Receipt, HubError> {
        self.publish_counted(topic, None, encode, Count::Published)
    }

    /// Publishes an event of the server's own (a metrics sample) like [`Hub::publish_event`],
    /// but outside `eventsPublished`, which counts what publishers sent: an idle server's count
    /// does not grow by itself.
    pub fn publish_own(
        &self,
        topic: &Topic,
        name: Option<&crate::sse::EventName>,
        data: Payload<'_>,
    ) -> Result<Receipt, HubError> {
        let encode = |_, id: &crate::sse::EventId| Frame::event(Some(id), Some(topic), name, data);
        self.publish_counted(topic, None, encode, Count::Own)
    }

    fn publish_counted(
        &self,
        topic: &Topic,
        key: Option<&str>,
        mut encode: impl FnMut(Seq, &crate::sse::EventId) -> Frame,
        count: Count,
    ) -> Result<Receipt, HubError> {
        if self.is_overloaded() {
            return Err(HubError::Overloaded);
        }
        let history = &*self.inner.history;
        let mut id_text = String::new();
        let mut build = |seq| {
            id_text = history.format_id(seq);
            match crate::sse::EventId::parse(&id_text) {
                Ok(id) => encode(seq, &id),
                // Epochs are short base-36 strings, so ids always parse; never reached.
                Err(_) => Frame::from_parts(Bytes::new(), Bytes::new()),
            }
        };
        let (seq, frame) = match key {
            Some(key) => history.append_keyed(topic, key, &mut build),
            None => history.append(topic, &mut build),
        }
        .map_err(|_| HubError::Unavailable)?;
        match self.dispatch(seq, topic, &frame, count) {
            // Every shard stopped for shutdown, but the event is on disk: the next process on
            // the directory serves it to every stream that resumes. It was published.
            Err(HubError::Closed) if history.is_durable() => {}
            other => other?,
        }
        Ok(Receipt { seq, id: id_text })
    }

    /// Hands an event that already has its seq (one read back from a broker) to every shard.
    /// Refuses with [`HubError::Overloaded`] while a shard's inbox is full; the caller waits and
    /// tries again, so nothing is skipped.
    pub fn deliver(&self, seq: Seq, topic: &Topic, frame: &Frame) -> Result<(), HubError> {
        if self.is_overloaded() {
            return Err(HubError::Overloaded);
        }
        self.dispatch(seq, topic, frame, Count::Published)
    }

    fn is_overloaded(&self) -> bool {
        self.inner
            .shards
            .iter()
            .any(|s| s.stats.inbox_depth.load(Ordering::Relaxed) >= INBOX_LIMIT)
    }

    fn dispatch(
        &self,
        seq: Seq,
        topic: &Topic,
        frame: &Frame,
        count: Count,
    ) -> Result<(), HubError> {
        let shards = &self.inner.shards;
        // Shards that have stopped for shutdown. The event is retained and reaches the others;
        // the stopped shards' streams are closing and resume from history.
        let mut stopped = 0;
        // From here to the last send nothing can fail: every shard must see every seq, or it
        // would wait for the gap (see shard.rs).
        for shard in shards {
            shard.stats.inbox_depth.fetch_add(1, Ordering::Relaxed);
            let command = Command::Publish {
                seq,
                topic: topic.clone(),
                frame: frame.clone(),
            };
            if shard.tx.send(command).is_err() {
                shard.stats.inbox_depth.fetch_sub(1, Ordering::Relaxed);
                stopped += 1;
            }
        }
        if stopped == shards.len() {
            // Every shard has stopped (shutdown): nobody will get this event.
            return Err(HubError::Closed);
        }
        if count == Count::Published {
            self.inner.published.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Delivers a node-local event to this node's subscribers of `topic` at once: no id, no
    /// history beyond the newest one ([`History::keep_local`]). With a broker, each node's
    /// metrics samples travel this way: they describe the node, not the cluster.
    pub fn publish_local(&self, topic: &Topic, frame: Frame) -> Result<(), HubError> {
        if self.is_overloaded() {
            return Err(HubError::Overloaded);
        }
        self.inner.history.keep_local(topic, &frame);
        self.broadcast(|| Command::Local {
            topic: topic.clone(),
            frame: frame.clone(),
        })
    }

    /// Ends every stream on every shard with a reconnection hint.
    pub fn reconnect_all(&self) -> Result<(), HubError> {
        self.broadcast(|| Command::Reconnect)
    }

    /// Moves every shard to the start of a new epoch whose sequence continues after `head` and
    /// ends every stream (see `Command::NewEpoch`). Resolves once every running shard applied
    /// it, so nothing of the old epoch is delivered after that.
    pub async fn start_epoch(&self, head: Seq) {
        let mut pending = Vec::with_capacity(self.inner.shards.len());
        for shard in &self.inner.shards {
            let (done, applied) = oneshot::channel();
            shard.stats.inbox_depth.fetch_add(1, Ordering::Relaxed);
            if shard.tx.send(Command::NewEpoch { head, done }).is_ok() {
                pending.push(applied);
            } else {
                shard.stats.inbox_depth.fetch_sub(1, Ordering::Relaxed);
            }
        }
        for applied in pending {
            // An error is a shard that stopped (shutdown): nothing more to wait for.
            let _ = applied.await;
        }
    }

    fn broadcast(&self, command: impl Fn() -> Command) -> Result<(), HubError> {
        let mut sent = 0;
        for shard in &self.inner.shards {
            shard.stats.inbox_depth.fetch_add(1, Ordering::Relaxed);
            if shard.tx.send(command()).is_ok() {
                sent += 1;
            } else {
                shard.stats.inbox_depth.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if sent == 0 {
            return Err(HubError::Closed);
        }
        Ok(())
    }

    /// Publishes an event named `name` (none: `message`) with the assigned id and `data`, encoded
    /// for every transport: the common case of [`Hub::publish`].
    pub fn publish_event(
        &self,
        topic: &Topic,
        name: Option<&crate::sse::EventName>,
        data: Payload<'_>,
    ) -> Result<Receipt, HubError> {
        self.publish_event_keyed(topic, name, data, None)
    }

    /// [`Hub::publish_event`] with the publisher's idempotency key, which the history keeps
    /// with the event if it outlives the process.
    pub fn publish_event_keyed(
        &self,
        topic: &Topic,
        name: Option<&crate::sse::EventName>,
        data: Payload<'_>,
        key: Option<&str>,
    ) -> Result<Receipt, HubError> {
        let size = data.sse.len() + data.json.map_or(data.sse.len(), str::len);
        if !self.inner.history.admits(size) {
            return Err(HubError::TooLarge);
        }
        let encode = |_, id: &crate::sse::EventId| Frame::event(Some(id), Some(topic), name, data);
        self.publish_counted(topic, key, encode, Count::Published)
    }

    /// Adds (`add`) or removes a live subscription of connection `id`, wherever it lives.
    /// `caller` is the authenticated user asking, if any: a stream opened with a token can only
    /// be changed by the same user.
    pub async fn subscribe(
        &self,
        id: &str,
        topic: &Topic,
        add: bool,
        caller: Option<&UserId>,
    ) -> Result<Change, HubError> {
        let shard = match ConnId::shard_of(id) {
            Some(shard) => Some(shard),
            None => self.lock_ids().get(id).copied(),
        };
        let Some(handle) = shard.and_then(|s| self.inner.shards.get(s)) else {
            return Ok(Change::NotFound);
        };
        let (reply, answer) = oneshot::channel();
        handle.stats.inbox_depth.fetch_add(1, Ordering::Relaxed);
        let command = Command::Subscribe {
            id: id.to_owned(),
            topic: topic.clone(),
            add,
            caller: caller.cloned(),
            reply,
        };
        if handle.tx.send(command).is_err() {
            handle.stats.inbox_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(HubError::Closed);
        }
        answer.await.map_err(|_| HubError::Closed)
    }

    /// Replaces the credential of connection `id`, wherever it lives (see [`Renewal`]).
    pub async fn renew(&self, id: &str, credential: Credential) -> Result<Renewal, HubError> {
        let Some(handle) = self.owner_of(id) else {
            return Ok(Renewal::NotFound);
        };
        let (reply, answer) = oneshot::channel();
        handle.stats.inbox_depth.fetch_add(1, Ordering::Relaxed);
        let command = Command::Renew {
            id: id.to_owned(),
            credential,
            reply,
        };
        if handle.tx.send(command).is_err() {
            handle.stats.inbox_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(HubError::Closed);
        }
        answer.await.map_err(|_| HubError::Closed)
    }

    /// The shard that owns connection `id`: named in a generated id, looked up for a custom one.
    fn owner_of(&self, id: &str) -> Option<&ShardHandle> {
        let shard = match ConnId::shard_of(id) {
            Some(shard) => Some(shard),
            None => self.lock_ids().get(id).copied(),
        };
        shard.and_then(|s| self.inner.shards.get(s))
    }

    fn lock_ids(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.inner
            .custom_ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Live subscribers of `topic` over all shards.
    pub fn subscribers(&self, topic: &Topic) -> usize {
        self.inner.subscribers.get(topic)
    }

    pub(crate) fn counts(&self) -> &SubscriberCounts {
        &self.inner.subscribers
    }

    /// Reserves a client-chosen connection id for `shard`.
    pub(crate) fn claim_id(&self, id: &str, shard: usize) -> Result<(), OpenError> {
        let mut ids = self.lock_ids();
        if ids.contains_key(id) {
            return Err(OpenError::IdTaken);
        }
        ids.insert(id.to_owned(), shard);
        Ok(())
    }

    pub(crate) fn release_id(&self, id: &str) {
        self.lock_ids().remove(id);
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
        let retained = self.inner.history.size();
        HubSnapshot {
            total_connections: total,
            average_age_ms,
            max_connections: self.inner.settings.max_connections,
            peak_connections: self.inner.peak.load(Ordering::Relaxed),
            events_published: self.inner.published.load(Ordering::Relaxed),
            frames_delivered: shards.iter().map(|s| s.frames_delivered).sum(),
            slow_consumers_dropped: shards.iter().map(|s| s.slow_consumers_dropped).sum(),
            channels: self.inner.subscribers.channels(),
            history_channels: retained.channels,
            history_events: retained.events,
            users_with_queue: retained.users,
            queued_user_events: retained.queued,
            retained_bytes: retained.bytes,
            memory_budget: retained.budget,
            budget_evictions: retained.budget_evictions,
            last_event_id: self.inner.history.format_id(self.inner.history.head()),
            uptime_ms: now,
            shards,
        }
    }
}

/// Whether an event counts in `eventsPublished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Sent by a publisher.
    Published,
    /// The server's own (a metrics sample).
    Own,
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
