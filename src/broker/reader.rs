//! The reader: one thread per node that follows the cluster log from the last seq it delivered
//! and hands each event to the node's shards, in seq order, encoded once. It also writes users'
//! delivered-through marks between reads. On errors it retries with backoff and continues from
//! where it stopped, so a Redis restart loses nothing Redis kept.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;

use super::redis_value::{bulk_string, xread_entries};
use super::scripts::decode_entries;
use super::{frame_of, key_epoch, key_log, Broker, RESPONSE_TIMEOUT};
use crate::hub::{Hub, HubError, Topic};
use crate::shutdown::Shutdown;

/// Events taken per read. Large enough to amortize a round trip at high rates, small enough to
/// keep one batch's frames a few hundred KiB.
const BATCH: usize = 1024;

/// How long one read blocks waiting for new events; also how often an idle node writes pending
/// delivered marks.
const BLOCK: Duration = Duration::from_millis(200);

/// Backoff between attempts while Redis is unreachable.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Starts the reader thread.
pub(super) fn spawn(
    broker: Broker,
    hub: Hub,
    mut shutdown: Shutdown,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sluice-reader".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start the broker reader");
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::select! {
                    _ = shutdown.recv() => {}
                    _ = follow(&broker, &hub) => {}
                }
            });
        })
}

async fn follow(broker: &Broker, hub: &Hub) {
    let mut backoff = MIN_BACKOFF;
    let mut connection: Option<ConnectionManager> = None;
    // After a failure the epoch is checked again: Redis may have come back without its data.
    let mut check_epoch = false;
    loop {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(BLOCK + RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(RESPONSE_TIMEOUT));
                match ConnectionManager::new_with_config(broker.inner.client.clone(), config).await
                {
                    Ok(conn) => connection.insert(conn),
                    Err(error) => {
                        broker.note_failure(&error);
                        back_off(&mut backoff).await;
                        continue;
                    }
                }
            }
        };
        if check_epoch {
            match epoch_matches(broker, conn).await {
                Ok(true) => check_epoch = false,
                Ok(false) => {
                    lost_history(broker, hub);
                    return;
                }
                Err(error) => {
                    broker.note_failure(&error);
                    back_off(&mut backoff).await;
                    continue;
                }
            }
        }
        broker.flush_delivered(conn).await;
        let cursor = broker.position();
        let reply: Result<Value, _> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(key_log())
            .arg(format!("{cursor}-0"))
            .query_async(conn)
            .await;
        let value = match reply {
            Ok(value) => value,
            Err(error) => {
                broker.note_failure(&error);
                check_epoch = true;
                back_off(&mut backoff).await;
                continue;
            }
        };
        broker.note_success();
        backoff = MIN_BACKOFF;
        let Some(list) = xread_entries(&value) else {
            continue; // Timed out with nothing new.
        };
        let events = decode_entries(list);
        if let Some((first, _)) = events.first() {
            // Every seq goes into the log (the publish script takes it and appends in one
            // step), so a hole at the start of a read means the log was trimmed past us.
            if *first > cursor + 1 {
                // This node fell further behind than the log keeps: its streams missed events.
                // They reconnect and resume from the channel streams, which keep more.
                tracing::warn!(
                    cursor,
                    first,
                    "the cluster log was trimmed past this node's position; reconnecting streams"
                );
                let _ = hub.reconnect_all();
            }
        }
        for (seq, fields) in events {
            if let Ok(topic) = Topic::parse_stored(&fields.topic) {
                if let Some(frame) = frame_of(broker.epoch(), seq, &topic, &fields) {
                    deliver(hub, seq, &topic, &frame).await;
                }
            }
            broker
                .inner
                .cursor
                .store(seq, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Waits out the current backoff and doubles it, up to [`MAX_BACKOFF`].
async fn back_off(backoff: &mut Duration) {
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// Hands an event to the shards, waiting while their inboxes are full (never skipping).
async fn deliver(hub: &Hub, seq: u64, topic: &Topic, frame: &crate::hub::Frame) {
    loop {
        match hub.deliver(seq, topic, frame) {
            Err(HubError::Overloaded) => tokio::time::sleep(Duration::from_millis(1)).await,
            _ => return,
        }
    }
}

async fn epoch_matches(broker: &Broker, conn: &mut ConnectionManager) -> redis::RedisResult<bool> {
    let epoch: Value = redis::cmd("GET").arg(key_epoch()).query_async(conn).await?;
    Ok(bulk_string(&epoch).as_deref() == Some(broker.epoch()))
}

/// Redis came back without the cluster's data (no persistence): every id handed out so far
/// names events that are gone. The node stops reading and reports unhealthy for good, so a load
/// balancer takes it out; a restart joins the new epoch.
fn lost_history(broker: &Broker, hub: &Hub) {
    tracing::error!(
        broker = %broker.inner.url,
        "redis lost the cluster's data (its epoch changed); this node stops and must be restarted"
    );
    broker
        .inner
        .lost
        .store(true, std::sync::atomic::Ordering::Relaxed);
    broker
        .inner
        .healthy
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = hub.reconnect_all();
}
