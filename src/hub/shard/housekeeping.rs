//! The shard's periodic work, driven by its run loop: keep-alives on idle streams, sweeping
//! closed entries, idle timeouts, credential expiry, write progress, and ending every stream at
//! shutdown. One tick per shard, never a timer per connection.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::conn::State;
use super::Shard;
use crate::hub::frame::{farewell, Farewell};

/// The upper end of the random extra reconnection delay sent to every stream the hub ends for
/// everyone at once (shutdown, an unreachable event store): clients come back spread over this
/// window instead of all at once.
pub const SHUTDOWN_RETRY_SPREAD: Duration = Duration::from_secs(10);

/// Period of the per-shard housekeeping tick: gap check, credential expiry and idle timeout.
/// Expired streams close within this much of their `exp`.
pub(super) const HOUSEKEEPING: Duration = Duration::from_millis(500);

impl Shard {
    /// Closes streams whose credential has expired, each with a final `closed` event.
    pub(super) fn close_expired(&self) {
        let now = Instant::now();
        let mut expiries = self.expiries.borrow_mut();
        while let Some(entry) = expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let conn = entry.remove();
            conn.close_with(farewell(conn.transport, Farewell::TokenExpired));
        }
    }

    /// Queues a keep-alive (a comment, a ping) on every stream that received no event for a
    /// whole period, and sweeps closed entries. A stream that got an event meanwhile was kept
    /// alive by it; skipping it spares a busy worker a write to every stream once a period, which
    /// the events queued behind that burst would wait for. No stream is silent for two periods.
    pub fn heartbeat(&self) {
        let period = self.hub.settings().heartbeat.as_millis() / HOUSEKEEPING.as_millis();
        // Less one tick: the stamp and this beat each fall anywhere within a tick.
        let quiet = u32::try_from(period).unwrap_or(u32::MAX).saturating_sub(1);
        let now = self.tick.get();
        self.conns.borrow_mut().retain(|_, conn| {
            if now.wrapping_sub(conn.last_event_tick.get()) >= quiet {
                if let Some(frame) = self.keepalive.get(conn.transport) {
                    conn.push_heartbeat(frame);
                }
            }
            conn.state() != State::Closed
        });
        // Subscriber lists only hold closed entries if a stream closed since the last sweep.
        if self.dead.get() > 0 {
            self.compact_topics();
        }
    }

    /// Ends streams that received no event for `idle`.
    pub(super) fn close_idle(&self, idle: Duration) {
        let idle_ticks =
            u32::try_from(idle.as_millis().div_ceil(HOUSEKEEPING.as_millis())).unwrap_or(u32::MAX);
        let now = self.tick.get();
        for conn in self.conns.borrow().values() {
            // Strictly more: a stamp is taken anywhere within its tick, so `>=` could close up to
            // one tick early.
            if conn.is_open() && now.wrapping_sub(conn.last_event_tick.get()) > idle_ticks {
                conn.close_with(farewell(conn.transport, Farewell::Idle));
            }
        }
    }

    /// Evicts streams whose socket took nothing for `timeout` while frames waited: a reader that
    /// stopped reading, cut off before its queue fills (it resumes from history). Counted as a
    /// slow consumer.
    pub(super) fn close_stalled(&self, timeout: Duration) {
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
        for conn in self.conns.borrow().values() {
            let retry = self.jittered_retry();
            conn.close_with(farewell(conn.transport, Farewell::Reconnect { retry }));
        }
    }

    /// The configured reconnection delay plus a random share of [`SHUTDOWN_RETRY_SPREAD`].
    pub(super) fn jittered_retry(&self) -> Duration {
        let spread = u64::try_from(SHUTDOWN_RETRY_SPREAD.as_millis()).unwrap_or(u64::MAX);
        self.hub.settings().retry + Duration::from_millis(fastrand::u64(0..=spread))
    }

    /// Drops closed entries from the subscriber lists.
    pub(super) fn compact_topics(&self) {
        let Ok(mut topics) = self.topics.try_borrow_mut() else {
            return;
        };
        topics.retain(|_, list| {
            list.retain(|c| c.is_open());
            !list.is_empty()
        });
        self.stats
            .channels
            .store(topics.len(), std::sync::atomic::Ordering::Relaxed);
        self.dead.set(0);
    }
}
