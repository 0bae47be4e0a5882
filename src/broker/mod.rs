//! Multi-node fan-out on Redis Streams (`--broker redis://host:port/db`). Without it nothing here
//! runs: the embedded hub is the default and needs no service.
//!
//! # Design
//!
//! Every publish runs one Lua script on Redis that takes the next cluster-wide seq (`INCR`) and
//! appends the event, under that seq as its stream id, to two streams: the channel's own stream
//! (its shared history, capped per channel) and the cluster log (every event, in seq order).
//! Because the seq and both appends happen in one atomic script, seq order is commit order:
//! whoever reads the log from a seq sees every later event, in order, with no gap.
//!
//! Each node runs one reader (its own thread) that follows the log from the last seq it saw and
//! hands each event to its shards exactly as a local publish would: encoded once per node into a
//! [`Frame`](crate::hub::Frame), one inbox message per shard, applied in seq order. So a node's
//! shards have the same *position* semantics as in the embedded hub, and the resume argument
//! carries over: a stream that opens at position `P` is caught up by replaying `(Last-Event-ID,
//! P]`, now read from the channel streams in Redis (see `Broker::open`), and every later event reaches
//! it live. Ids are `<cluster epoch>-<seq>`, so an id seen on one node resumes on any other.
//!
//! The reader follows one log rather than one stream per subscribed channel: a single cursor
//! gives total order across channels for free, a channel gained by a node needs no
//! re-subscription dance, and a node behind a round-robin load balancer has subscribers on nearly
//! every busy channel anyway. The cost is that a node reads events of channels it has no
//! subscriber for (and drops them after one hash lookup); `docs/scaling.md` has the figures.
//!
//! Users' offline queues are the users' streams plus a delivered-through mark per user; chat
//! history is the room's stream. Both survive a node restart.
//!
//! # Faults
//!
//! If Redis goes away, open streams stay up (they are local), publishes answer 503 (nothing is
//! acknowledged that Redis did not store), `/healthz` reports unhealthy, and the reader retries
//! with backoff. When Redis is back it continues from the last seq it delivered, so subscribers
//! miss nothing Redis accepted.
//!
//! If Redis comes back without the cluster's data (restarted without persistence), the epoch key
//! is gone. The first node to notice starts a new epoch ([`scripts::START_EPOCH`]: one atomic
//! step, so however many nodes race, Redis holds one new epoch and every node adopts it). The
//! seq counter and log start over under it. Each node's reader then moves its shards and its
//! cursor to the start of the new log, and the shards close their streams with a reconnection
//! hint: they come back with an id of the old epoch and get `reset`, then the new epoch's
//! retained events, then live ones. Publishes carry the node's epoch into the publish script,
//! which refuses any other, so a publish racing the switch is either refused (503) or stored
//! under the new epoch.

mod history;
mod open;
mod reader;
mod redis_value;
mod scripts;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::hub::{Frame, Hub, HubError, Payload, Receipt, Seq, Topic};
use crate::sse::EventName;

pub use history::BrokerHistory;

/// Key prefix of everything Sluice keeps in Redis.
const PREFIX: &str = "sluice:";

/// Entries kept in the cluster log. Readers follow it within milliseconds; this only has to
/// cover a reader that is briefly stalled (a node paused for a second at 100k events/s). A
/// reader that falls further behind closes its streams, which resume from the channel streams.
pub const LOG_CAP: usize = 200_000;

/// Events kept per chat room (the embedded hub keeps the same 100).
pub const CHAT_CAP: usize = 100;

/// How long a command may take before the node treats Redis as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the broker could not start.
#[derive(Debug)]
pub enum BrokerError {
    /// The URL is not a `redis://` URL.
    BadUrl(String),
    /// Redis did not answer.
    Unreachable(String),
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::BadUrl(why) => write!(f, "invalid broker URL: {why}"),
            BrokerError::Unreachable(why) => write!(f, "cannot reach the broker: {why}"),
        }
    }
}

impl std::error::Error for BrokerError {}

/// Per-channel limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Events kept per channel (`--history-size`).
    pub channel: usize,
    /// Longest an event is replayed (`--history-ttl`).
    pub channel_ttl: Option<Duration>,
    /// Events queued per user (`--user-queue-size`).
    pub user: usize,
    /// Longest a queued user event waits (`--user-queue-ttl`).
    pub user_ttl: Option<Duration>,
}

/// The handle to the Redis side of a node. Cloning is shallow.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL with any password removed, for logs and stats.
    url: String,
    client: redis::Client,
    commands: ConnectionManager,
    /// The cluster epoch this node hands out ids in; replaced when Redis lost the cluster's
    /// data and a new epoch started.
    epoch: RwLock<Arc<str>>,
    caps: Caps,
    /// Last seq the reader handed to the shards.
    cursor: AtomicU64,
    /// Whether Redis answered the last command (reader or publish).
    healthy: AtomicBool,
    /// Epochs this node adopted after the one it started in (Redis lost the cluster's data).
    epoch_changes: AtomicU64,
    /// Users' delivered-through marks waiting to be written (coalesced per user).
    delivered: Mutex<HashMap<Topic, Seq>>,
    publish: redis::Script,
    fetch: redis::Script,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.inner.url)
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Connects (on the calling thread, with a runtime of its own for the connection's driver)
    /// and reads or creates the cluster epoch. Fails if Redis does not answer: a node that
    /// cannot reach its broker at start is misconfigured.
    pub fn connect(
        url: &str,
        caps: Caps,
    ) -> Result<(Broker, tokio::runtime::Runtime), BrokerError> {
        let client = redis::Client::open(url).map_err(|e| BrokerError::BadUrl(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-broker")
            .enable_all()
            .build()
            .map_err(|e| BrokerError::Unreachable(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(Duration::from_secs(2));
        let (commands, epoch, head) = runtime.block_on(async {
            let mut commands = ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map_err(|e| BrokerError::Unreachable(e.to_string()))?;
            let epoch = join_epoch(&mut commands)
                .await
                .map_err(|e| BrokerError::Unreachable(e.to_string()))?;
            let head: Option<u64> = redis::cmd("GET")
                .arg(key_seq())
                .query_async(&mut commands)
                .await
                .map_err(|e| BrokerError::Unreachable(e.to_string()))?;
            Ok::<_, BrokerError>((commands, epoch, head.unwrap_or(0)))
        })?;
        let broker = Broker {
            inner: Arc::new(Inner {
                url: redact(url),
                client,
                commands,
                epoch: RwLock::new(epoch.into()),
                caps,
                cursor: AtomicU64::new(head),
                healthy: AtomicBool::new(true),
                epoch_changes: AtomicU64::new(0),
                delivered: Mutex::new(HashMap::new()),
                publish: redis::Script::new(scripts::PUBLISH),
                fetch: redis::Script::new(scripts::FETCH),
            }),
        };
        Ok((broker, runtime))
    }

    /// The cluster epoch (the first part of every id).
    pub fn epoch(&self) -> Arc<str> {
        self.inner
            .epoch
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many times this node adopted a new epoch because Redis lost the cluster's data.
    pub fn epoch_changes(&self) -> u64 {
        self.inner.epoch_changes.load(Ordering::Relaxed)
    }

    /// Whether Redis answered the last command.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// The last seq this node's reader handed to its shards.
    pub fn position(&self) -> Seq {
        self.inner.cursor.load(Ordering::Acquire)
    }

    /// The Redis URL, without its password.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Starts the reader thread, which follows the cluster log into `hub`'s shards until
    /// shutdown.
    pub fn spawn_reader(
        &self,
        hub: Hub,
        shutdown: crate::shutdown::Shutdown,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        reader::spawn(self.clone(), hub, shutdown)
    }

    /// Publishes an event: takes the cluster-wide seq and stores the event in Redis. It reaches
    /// subscribers (here and on every node) through the readers. With `id_first`, `data` is a
    /// JSON object that gets `"id":<the event id>` as its first member (chat messages carry
    /// their id).
    pub async fn publish(
        &self,
        topic: &Topic,
        name: Option<&EventName>,
        data: Payload<'_>,
        id_first: bool,
        idempotency: Option<(&str, Duration)>,
    ) -> Result<Receipt, HubError> {
        // The script refuses any epoch but the one Redis holds: a publish that races a new
        // epoch is either refused or stored (and identified) under the new one.
        let epoch = self.epoch();
        let cap = if topic.is_user() {
            self.inner.caps.user
        } else if topic.is_chat() {
            CHAT_CAP
        } else {
            self.inner.caps.channel
        };
        let mut connection = self.inner.commands.clone();
        let seq: Result<u64, _> = self
            .inner
            .publish
            .key(key_seq())
            .key(key_log())
            .key(key_history(topic))
            .key(key_lost(topic))
            .key(key_delivered(topic))
            .key(key_epoch())
            .key(key_idempotency(
                topic,
                idempotency.map_or("", |(key, _)| key),
            ))
            .arg(cap)
            .arg(LOG_CAP)
            .arg(topic.as_str())
            .arg(name.map_or("", EventName::as_str))
            .arg(data.sse)
            .arg(data.json.unwrap_or(""))
            .arg(if data.json.is_some() { "1" } else { "0" })
            .arg(if id_first { "1" } else { "0" })
            .arg(if topic.is_user() { "1" } else { "0" })
            .arg(&*epoch)
            .arg(idempotency.map_or("", |(key, _)| key))
            .arg(idempotency.map_or(0, |(_, window)| {
                u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1)
            }))
            .invoke_async(&mut connection)
            .await;
        match seq {
            Ok(seq) => {
                self.inner.healthy.store(true, Ordering::Relaxed);
                Ok(Receipt {
                    seq,
                    id: format!("{epoch}-{seq}"),
                })
            }
            Err(error) => {
                self.note_failure(&error);
                Err(HubError::Unavailable)
            }
        }
    }

    /// Whether anything was ever published on `topic` (a chat room someone joined).
    pub async fn has_history(&self, topic: &Topic) -> Result<bool, HubError> {
        let mut connection = self.inner.commands.clone();
        let exists: Result<bool, _> = redis::cmd("EXISTS")
            .arg(key_history(topic))
            .query_async(&mut connection)
            .await;
        exists.map_err(|error| {
            self.note_failure(&error);
            HubError::Unavailable
        })
    }

    fn note_failure(&self, error: &redis::RedisError) {
        if self.inner.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, broker = %self.inner.url, "redis is unreachable");
        }
    }

    fn note_success(&self) {
        if !self.inner.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!(broker = %self.inner.url, "redis is reachable again");
        }
    }

    /// Moves this node to `epoch` (Redis lost the cluster's data and holds a new one): ids are
    /// handed out in it and the cursor goes to the start of its log. Called by the reader once
    /// the shards have moved.
    fn adopt_epoch(&self, epoch: Arc<str>) {
        tracing::warn!(
            broker = %self.inner.url,
            old = %self.epoch(),
            new = %epoch,
            "redis lost the cluster's data; this node continues in a new epoch"
        );
        // A new epoch's seq counter and log start over (see START_EPOCH).
        self.inner.cursor.store(0, Ordering::Release);
        *self.inner.epoch.write().unwrap_or_else(|p| p.into_inner()) = epoch;
        self.inner.epoch_changes.fetch_add(1, Ordering::Relaxed);
        // Users' delivered marks not written yet name seqs of the old epoch (the shards applied
        // their last event of it before this).
        self.inner
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Records that a user's events up to `seq` reached a stream; written to Redis in batches.
    pub(crate) fn mark_delivered(&self, topic: &Topic, seq: Seq) {
        let mut pending = self
            .inner
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mark = pending.entry(topic.clone()).or_insert(0);
        *mark = (*mark).max(seq);
    }

    /// Writes the pending delivered-through marks. Called by the reader between reads.
    async fn flush_delivered(&self, connection: &mut ConnectionManager) {
        let pending: Vec<(Topic, Seq)> = {
            let mut map = self
                .inner
                .delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.drain().collect()
        };
        let mut pending = pending.into_iter();
        while let Some((topic, seq)) = pending.next() {
            let result: Result<redis::Value, _> = self
                .inner
                .fetch
                .key(key_history(&topic))
                .key(key_delivered(&topic))
                .key(key_lost(&topic))
                .arg("mark")
                .arg(0)
                .arg(seq)
                .arg(0)
                .invoke_async(connection)
                .await;
            if result.is_err() {
                // Try this one and every one not written yet again with the next flush.
                self.mark_delivered(&topic, seq);
                for (topic, seq) in pending {
                    self.mark_delivered(&topic, seq);
                }
                return;
            }
        }
    }
}

/// Builds the frame of an event read back from Redis: encoded once per node.
pub(crate) fn frame_of(
    epoch: &str,
    seq: Seq,
    topic: &Topic,
    fields: &scripts::Fields,
) -> Option<Frame> {
    let id = crate::sse::EventId::parse(&format!("{epoch}-{seq}")).ok()?;
    let name = if fields.name.is_empty() {
        None
    } else {
        Some(EventName::parse(&fields.name).ok()?)
    };
    let with_id = |data: &str| -> String {
        if fields.id_first && data.starts_with('{') {
            let rest = &data[1..];
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!("{{\"id\":\"{}\"{sep}{rest}", id.as_str())
        } else {
            data.to_owned()
        }
    };
    let sse = with_id(&fields.sse);
    let json = fields.json.as_deref().map(with_id);
    Some(Frame::event(
        Some(&id),
        Some(topic),
        name.as_ref(),
        Payload {
            sse: &sse,
            json: json.as_deref(),
        },
    ))
}

/// The epoch Redis holds, after starting a new one if it holds none (a new cluster, or Redis
/// lost the cluster's data): every node that asks at the same time gets the same answer.
async fn join_epoch(connection: &mut ConnectionManager) -> redis::RedisResult<String> {
    redis::Script::new(scripts::START_EPOCH)
        .key(key_epoch())
        .key(key_seq())
        .key(key_log())
        .arg(new_epoch())
        .invoke_async(connection)
        .await
}

fn new_epoch() -> String {
    // Milliseconds since 2020 in base 36, as the embedded history names its lives.
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut value = ms;
    let mut digits = Vec::new();
    while value > 0 {
        let digit = (value % 36) as u8;
        digits.push(if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        });
        value /= 36;
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_else(|_| "0".to_owned())
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn key_epoch() -> String {
    format!("{PREFIX}epoch")
}

fn key_seq() -> String {
    format!("{PREFIX}seq")
}

fn key_log() -> String {
    format!("{PREFIX}log")
}

/// Where a publish's idempotency key keeps its seq, per channel.
fn key_idempotency(topic: &Topic, key: &str) -> String {
    format!("{PREFIX}k:{}:{key}", topic.as_str())
}

fn key_history(topic: &Topic) -> String {
    format!("{PREFIX}h:{}", topic.as_str())
}

fn key_delivered(topic: &Topic) -> String {
    format!("{PREFIX}d:{}", topic.as_str())
}

fn key_lost(topic: &Topic) -> String {
    format!("{PREFIX}l:{}", topic.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_room_keeps_as_many_events_as_the_embedded_hub() {
        assert_eq!(CHAT_CAP, crate::chat::HISTORY);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("redis://:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn frames_read_back_get_their_id_first_when_asked() {
        let topic = Topic::chat("lobby");
        assert_eq!(Topic::parse_stored("~chat/lobby").unwrap(), topic);
        let fields = scripts::Fields {
            topic: "~chat/lobby".into(),
            name: "message".into(),
            sse: r#"{"roomId":"lobby"}"#.into(),
            json: Some(r#"{"roomId":"lobby"}"#.into()),
            id_first: true,
            at_ms: 0,
        };
        let frame = frame_of("k1", 7, &topic, &fields).unwrap();
        assert_eq!(
            &frame.get(crate::hub::Transport::Sse)[..],
            b"event: message\nid: k1-7\ndata: {\"id\":\"k1-7\",\"roomId\":\"lobby\"}\n\n"
        );
        let plain = scripts::Fields {
            id_first: false,
            json: None,
            sse: "text".into(),
            name: String::new(),
            ..fields
        };
        let frame = frame_of("k1", 8, &topic, &plain).unwrap();
        assert_eq!(
            &frame.get(crate::hub::Transport::Sse)[..],
            b"id: k1-8\ndata: text\n\n"
        );
    }
}
