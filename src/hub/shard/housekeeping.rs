//! The shard's periodic work, driven by its run loop: keep-alives on idle streams, sweeping
//! closed entries, idle timeouts, credential expiry, and ending every stream at shutdown. One
//! tick per shard, never a timer per connection.

use std::time::{Duration, Instant};

use super::conn::State;
use super::Shard;
use crate::hub::frame::{farewell, Farewell};

/// The upper end of the random extra reconnection delay sent to every stream at shutdown: clients
/// come back spread over this window instead of all at once.
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

    /// Queues a keep-alive (a comment, a ping) on every idle stream and sweeps closed entries.
    pub fn heartbeat(&self) {
        self.conns.borrow_mut().retain(|_, conn| {
            if let Some(frame) = self.keepalive.get(conn.transport) {
                conn.push_heartbeat(frame);
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

    /// Sends every stream a jittered `retry:` and ends it, so reconnects spread out.
    pub fn close_all(&self) {
        let base = self.hub.settings().retry;
        let spread = u64::try_from(SHUTDOWN_RETRY_SPREAD.as_millis()).unwrap_or(u64::MAX);
        for conn in self.conns.borrow().values() {
            let retry = base + Duration::from_millis(fastrand::u64(0..=spread));
            conn.close_with(farewell(conn.transport, Farewell::Reconnect { retry }));
        }
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
