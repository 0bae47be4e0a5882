//! The reader: one thread per node that follows the cluster log from the last seq it delivered
//! and hands each event to the node's shards, in seq order, encoded once. It also writes users'
//! delivered-through marks between reads. On errors it retries with backoff and continues from
//! where it stopped, so a Redis restart loses nothing Redis kept.
//!
//! It is also the one that notices Redis lost the cluster's data (after any error, and every
//! [`EPOCH_CHECK`] anyway): it joins the epoch Redis then holds (starting one if none), moves the
//! shards to the start of it (ending their streams, which come back and get `reset`), then the
//! broker, and reads the new log from its start.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Value;

use super::redis_value::xread_entries;
use super::scripts::decode_entries;
use super::{frame_of, join_epoch, key_log, Broker, RESPONSE_TIMEOUT};
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

/// How often the epoch is checked while reads succeed. A Redis that restarted empty breaks the
/// connection and is noticed by the failed read; this catches the rest (a `FLUSHALL`) within a
/// second, for one short script (a `GET` while the epoch is there) per second per node.
const EPOCH_CHECK: Duration = Duration::from_secs(1);

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
    let mut checked_at = Instant::now();
    loop {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(BLOCK + RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(RESPONSE_TIMEOUT))
                    // Bounds how long after Redis is back the reader notices (the reconnection
                    // attempts otherwise back off to several seconds).
                    .set_max_delay(MAX_BACKOFF);
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
        if check_epoch || checked_at.elapsed() >= EPOCH_CHECK {
            if let Err(error) = follow_epoch(broker, hub, conn).await {
                broker.note_failure(&error);
                check_epoch = true;
                back_off(&mut backoff).await;
                continue;
            }
            check_epoch = false;
            checked_at = Instant::now();
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
        let epoch = broker.epoch();
        for (seq, fields) in events {
            if let Ok(topic) = Topic::parse_stored(&fields.topic) {
                if let Some(frame) = frame_of(&epoch, seq, &topic, &fields) {
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

/// Joins the epoch Redis holds (starting a new one if Redis lost the cluster's data) and, if it
/// is not this node's, moves to it: first the shards (so nothing of the old epoch is delivered
/// after this, and streams opening meanwhile are refused: the broker's epoch is still the old
/// one, which Redis no longer holds), then the broker's epoch and cursor. The caller's next read
/// starts at the new log's beginning.
async fn follow_epoch(
    broker: &Broker,
    hub: &Hub,
    conn: &mut ConnectionManager,
) -> redis::RedisResult<()> {
    let joined = join_epoch(conn).await?;
    if *joined != *broker.epoch() {
        // A new epoch's sequence starts over (see START_EPOCH).
        hub.start_epoch(0).await;
        broker.adopt_epoch(joined.into());
    }
    Ok(())
}
