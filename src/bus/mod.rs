//! Where events go: the one place that knows whether this process is a self-contained hub
//! (`Embedded`, the default) or one node of a cluster sharing a Redis broker (`Cluster`,
//! `--broker`).
//!
//! Handlers, chat and the metrics sampler talk to a [`Bus`] and never see the broker: it answers
//! publish, open (with resume), the history questions they ask, health and stats for every mode.
//! Each question is one `match` over `Backend` in this file, so a new mode (a durable embedded
//! store) is one more variant here plus its arm in [`Bus::start`], and nothing else changes.
//!
//! In every mode the local fan-out is the same [`Hub`] with one shard per worker; what differs is
//! where an event gets its id and is retained before it reaches the shards:
//!
//! - `Embedded`: [`MemoryHistory`] in this process assigns the id and keeps the event; the hub
//!   hands it to the shards at once. A stream's catch-up is read from memory while it opens.
//! - `Durable` (`--data-dir`): as `Embedded`, and every event is also written to the
//!   directory's log before it is acknowledged (see `store`); a restart reads it back.
//! - `Cluster`: Redis assigns the id and keeps the event (one Lua script); this node's reader
//!   thread feeds it to the shards in cluster order. A stream opens held while its catch-up is
//!   fetched from Redis (see `broker::open`).

mod dedup;

pub use dedup::{Dedup, IdempotencyKey, KeyError};

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::{Broker, BrokerHistory, Caps};
use crate::hub::{
    Frame, History, Hub, HubError, Inbox, Limits, MemoryHistory, OpenError, Opening, Payload,
    Receipt, Seq, Settings, Shard, Subscription, Topic,
};
use crate::shutdown::Shutdown;
use crate::sse::{EventId, EventName};
use crate::store::{DurableHistory, Fsync};

/// How often expired history is dropped. Expiry is also checked on every append and replay, so
/// this only bounds how long the memory of a quiet channel lingers.
pub const HISTORY_SWEEP_PERIOD: Duration = Duration::from_secs(5);

/// What the bus is built from: the hub's settings and the retention limits, plus the broker URL
/// that makes this process a cluster node.
#[derive(Debug, Clone)]
pub struct Options {
    /// The hub's settings (`ordered_source` is set by the bus from its mode).
    pub hub: Settings,
    /// Retention of channel history.
    pub channels: Limits,
    /// Retention of users' offline queues.
    pub users: Limits,
    /// Embedded mode: bytes of retained events (history and queues together) and the largest
    /// single event accepted, in bytes. (A cluster's retention is Redis's to bound.)
    pub budget: (u64, u64),
    /// `redis://host:port/db`: run as a cluster node on this broker.
    pub broker: Option<String>,
    /// `--data-dir`: keep history and users' queues in this directory.
    pub data_dir: Option<std::path::PathBuf>,
    /// `--fsync`: when the durable store's writes reach the device.
    pub fsync: Fsync,
    /// `--idempotency-window`: how long a publish's `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
    /// `--lock-wait`: how long a durable store waits for the directory's lock.
    pub lock_wait: Duration,
}

/// The handle every handler publishes and opens through. Cloning is shallow.
#[derive(Clone, Debug)]
pub struct Bus {
    hub: Hub,
    backend: Backend,
    dedup: Arc<Dedup>,
}

/// The modes, side by side.
#[derive(Clone, Debug)]
enum Backend {
    /// History and user queues in this process's memory.
    Embedded,
    /// History, user queues and ids in this process's memory and in a directory's log.
    Durable(Arc<DurableHistory>),
    /// History, user queues and ids in Redis, shared by every node.
    Cluster(Broker),
}

/// What keeps a bus's background machinery alive (the broker connection's runtime) and what
/// is left to do once the workers stopped (flush the durable store). Held by the server.
#[derive(Debug)]
pub struct Driver {
    _runtime: Option<tokio::runtime::Runtime>,
    store: Option<Arc<DurableHistory>>,
}

impl Driver {
    /// Called once the workers stopped, so nothing writes any more: forces the durable store's
    /// log to the device. The directory's lock goes with the process.
    pub fn close(self) {
        if let Some(store) = &self.store {
            store.close();
        }
    }
}

/// What `/stats` shows of a cluster node's broker.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// The Redis URL (without password).
    pub url: String,
    /// Whether Redis is answering.
    pub connected: bool,
    /// The cluster epoch.
    pub epoch: String,
    /// New epochs this node moved to since it started (Redis came back without the cluster's
    /// data).
    pub epoch_changes: u64,
    /// Last seq this node's reader delivered.
    pub node_position: Seq,
}

/// The health of the event store, for `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Embedded: nothing outside the process to be unhealthy.
    Embedded,
    /// A cluster node whose broker answers.
    Connected,
    /// A cluster node whose broker does not answer (publishes are refused).
    Unreachable,
}

impl Bus {
    /// Builds the hub and its mode's store, and starts the mode's background thread (the history
    /// sweeper, or the broker's reader). Returns one inbox per shard for the workers.
    pub fn start(options: Options, shutdown: &Shutdown) -> io::Result<(Bus, Vec<Inbox>, Driver)> {
        let Options {
            hub: mut settings,
            channels,
            users,
            budget: (budget, max_event),
            broker,
            data_dir,
            fsync,
            idempotency_window,
            lock_wait,
        } = options;
        let dedup = Arc::new(Dedup::new(idempotency_window));
        if let (None, Some(dir)) = (&broker, data_dir) {
            settings.ordered_source = false;
            let options = crate::store::Options {
                channels,
                users,
                budget: (budget, max_event),
                fsync,
                lock_wait,
                key_window: idempotency_window,
            };
            let (history, recovered) =
                DurableHistory::open(&dir, options).map_err(io::Error::other)?;
            tracing::info!(
                dir = %dir.display(),
                events = recovered.events,
                keys = recovered.keys,
                truncated = recovered.truncated,
                took_ms = recovered.took.as_millis() as u64,
                "event log read back"
            );
            for stored in history.take_keys() {
                // Keys were validated before they were written; one that no longer parses
                // (a hand-edited log) is simply not recognised.
                if let Ok(key) = IdempotencyKey::parse(&stored.key) {
                    let receipt = Receipt {
                        seq: stored.seq,
                        id: history.format_id(stored.seq),
                    };
                    dedup.restore(stored.topic, key, receipt, stored.age);
                }
            }
            let history = Arc::new(history);
            let (hub, inboxes) = Hub::new(settings, history.clone());
            spawn_history_sweeper(history.clone(), shutdown.clone())?;
            let bus = Bus {
                hub,
                backend: Backend::Durable(history.clone()),
                dedup,
            };
            let driver = Driver {
                _runtime: None,
                store: Some(history),
            };
            return Ok((bus, inboxes, driver));
        }
        match broker {
            None => {
                settings.ordered_source = false;
                let history =
                    Arc::new(MemoryHistory::new(channels, users).with_budget(budget, max_event));
                let (hub, inboxes) = Hub::new(settings, history.clone());
                spawn_history_sweeper(history, shutdown.clone())?;
                let bus = Bus {
                    hub,
                    backend: Backend::Embedded,
                    dedup,
                };
                let driver = Driver {
                    _runtime: None,
                    store: None,
                };
                Ok((bus, inboxes, driver))
            }
            Some(url) => {
                // The cluster log is read in seq order: a missing seq never arrives later.
                settings.ordered_source = true;
                let caps = Caps {
                    channel: channels.capacity,
                    channel_ttl: channels.ttl,
                    user: users.capacity,
                    user_ttl: users.ttl,
                };
                let (broker, runtime) = Broker::connect(&url, caps)
                    .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
                let history = Arc::new(BrokerHistory::new(broker.clone()));
                let (hub, inboxes) = Hub::new(settings, history);
                broker.spawn_reader(hub.clone(), shutdown.clone())?;
                let bus = Bus {
                    hub,
                    backend: Backend::Cluster(broker),
                    dedup,
                };
                Ok((
                    bus,
                    inboxes,
                    Driver {
                        _runtime: Some(runtime),
                        store: None,
                    },
                ))
            }
        }
    }

    /// The local fan-out, for what is the same in every mode: counters, subscriber counts,
    /// live subscription changes, the connection limit. Never publish through it: that would
    /// skip the mode (a cluster's Redis) and reach this node only.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Publishes an event and answers with its id once it is retained (embedded: at once;
    /// durable: once written, and synced with `--fsync always`; in a cluster: when Redis stored
    /// it). With `key`, a repeat within the idempotency window answers the first id and
    /// publishes nothing.
    pub async fn publish(
        &self,
        topic: &Topic,
        name: Option<&EventName>,
        data: Payload<'_>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Receipt, HubError> {
        match &self.backend {
            Backend::Embedded => {
                let publish = || self.hub.publish_event(topic, name, data);
                self.dedup.run(topic, key, publish)
            }
            Backend::Durable(store) => {
                // The key is written with the event: a retry after a restart is recognised.
                let publish = || {
                    self.hub
                        .publish_event_keyed(topic, name, data, key.map(IdempotencyKey::as_str))
                };
                let receipt = self.dedup.run(topic, key, publish)?;
                if !store.log().committed(store.log().position()).await {
                    return Err(HubError::Unavailable);
                }
                Ok(receipt)
            }
            Backend::Cluster(broker) => {
                // The key is stored in Redis with the event, in the publish script: a retry
                // is recognised on any node, even after a publish whose answer timed out.
                let idempotency = key.map(|k| (k.as_str(), self.dedup.window()));
                broker.publish(topic, name, data, false, idempotency).await
            }
        }
    }

    /// Publishes an event whose JSON object carries its own id as first member (a chat
    /// message). `data(Some(id))` builds the object with the id; `data(None)` without it, for a
    /// store that inserts the id itself when it assigns it. `retain` sees each event this
    /// process assigns an id to, in id order (embedded chat rooms keep their recent messages
    /// with it; in a cluster Redis keeps them and it is not called).
    pub async fn publish_stamped(
        &self,
        topic: &Topic,
        name: &EventName,
        data: impl Fn(Option<&EventId>) -> String,
        mut retain: impl FnMut(Seq, &Frame),
    ) -> Result<Receipt, HubError> {
        match &self.backend {
            Backend::Embedded | Backend::Durable(_) => {
                let receipt = self.hub.publish(topic, |seq, id| {
                    let json = data(Some(id));
                    let frame =
                        Frame::event(Some(id), Some(topic), Some(name), Payload::json(&json));
                    retain(seq, &frame);
                    frame
                })?;
                if let Backend::Durable(store) = &self.backend {
                    if !store.log().committed(store.log().position()).await {
                        return Err(HubError::Unavailable);
                    }
                }
                Ok(receipt)
            }
            Backend::Cluster(broker) => {
                let json = data(None);
                broker
                    .publish(topic, Some(name), Payload::json(&json), true, None)
                    .await
            }
        }
    }

    /// Publishes without waiting for the answer, best effort (chat presence): from a task of the
    /// current worker in a cluster, at once when embedded. A refusal (overload, unreachable
    /// broker) drops the event like any refused publish.
    pub fn publish_detached(&self, topic: Topic, name: EventName, data: String) {
        match &self.backend {
            Backend::Embedded | Backend::Durable(_) => {
                let _ = self
                    .hub
                    .publish_event(&topic, Some(&name), Payload::json(&data));
            }
            Backend::Cluster(broker) => {
                let broker = broker.clone();
                tokio::task::spawn_local(async move {
                    let _ = broker
                        .publish(&topic, Some(&name), Payload::json(&data), false, None)
                        .await;
                });
            }
        }
    }

    /// Publishes a sample of this process's own metrics (never counted in `eventsPublished`).
    /// Embedded it is an event with an id, retained as the channel's latest. In a cluster each
    /// node's samples describe that node, so they go to this node's subscribers only, without an
    /// id. Callable from any thread.
    pub fn publish_sample(
        &self,
        topic: &Topic,
        name: &EventName,
        data: &str,
    ) -> Result<(), HubError> {
        match &self.backend {
            Backend::Embedded | Backend::Durable(_) => self
                .hub
                .publish_own(topic, Some(name), Payload::json(data))
                .map(drop),
            Backend::Cluster(_) => {
                let frame = Frame::event(None, Some(topic), Some(name), Payload::json(data));
                self.hub.publish_local(topic, frame)
            }
        }
    }

    /// Opens a stream on `shard` (this worker's): the opening frames, the catch-up when resuming
    /// (or a user's queue, or a room's recent messages), then live events, with no gap and no
    /// duplicate between them. In a cluster the catch-up is fetched from Redis while the stream
    /// is held; the returned subscription yields nothing until it is in.
    pub fn open(&self, shard: &Rc<Shard>, mut opening: Opening) -> Result<Subscription, OpenError> {
        match &self.backend {
            Backend::Embedded | Backend::Durable(_) => {
                // A room's recent messages are kept by this process's rooms.
                if let Some(recent) = opening.recent.take() {
                    opening.initial.extend(recent.local);
                }
                let initial = std::mem::take(&mut opening.initial);
                shard.open(opening.as_open(&initial))
            }
            Backend::Cluster(broker) => broker.open(shard, opening),
        }
    }

    /// Whether events of `topic` were ever published where other nodes could have published
    /// them: a chat room joined on another node exists here too. Embedded there is no
    /// elsewhere: always false.
    pub async fn has_shared_history(&self, topic: &Topic) -> Result<bool, HubError> {
        match &self.backend {
            Backend::Embedded | Backend::Durable(_) => Ok(false),
            Backend::Cluster(broker) => broker.has_history(topic).await,
        }
    }

    /// The event store's health.
    pub fn health(&self) -> Health {
        match &self.backend {
            Backend::Embedded | Backend::Durable(_) => Health::Embedded,
            Backend::Cluster(broker) if broker.is_healthy() => Health::Connected,
            Backend::Cluster(_) => Health::Unreachable,
        }
    }

    /// In a cluster: the broker's state and this node's position in the cluster log.
    pub fn cluster(&self) -> Option<ClusterState> {
        match &self.backend {
            Backend::Embedded | Backend::Durable(_) => None,
            Backend::Cluster(broker) => Some(ClusterState {
                url: broker.url().to_owned(),
                connected: broker.is_healthy(),
                epoch: broker.epoch().to_string(),
                epoch_changes: broker.epoch_changes(),
                node_position: broker.position(),
            }),
        }
    }

    /// Appends the mode's own Prometheus series to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        if let Some(cluster) = self.cluster() {
            out.push_str(&format!(
                "# HELP sluice_broker_connected Whether Redis is answering (1) or not (0).\n\
                 # TYPE sluice_broker_connected gauge\n\
                 sluice_broker_connected {}\n\
                 # HELP sluice_broker_position Seq of the last cluster event this node delivered.\n\
                 # TYPE sluice_broker_position gauge\n\
                 sluice_broker_position {}\n\
                 # HELP sluice_broker_epoch_changes_total New cluster epochs this node moved to (Redis lost its data).\n\
                 # TYPE sluice_broker_epoch_changes_total counter\n\
                 sluice_broker_epoch_changes_total {}\n",
                u8::from(cluster.connected),
                cluster.node_position,
                cluster.epoch_changes
            ));
        }
    }
}

/// Expires history on its own thread, so no worker's event loop ever walks every channel.
fn spawn_history_sweeper(history: Arc<dyn History>, shutdown: Shutdown) -> io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-history".to_owned())
        .spawn(move || {
            let tick = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while !shutdown.is_fired() {
                std::thread::sleep(tick);
                waited += tick;
                if waited >= HISTORY_SWEEP_PERIOD {
                    history.sweep();
                    waited = Duration::ZERO;
                }
            }
        })?;
    Ok(())
}
