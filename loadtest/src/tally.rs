//! What the clients count: which sequence numbers each connection received (a bitmap, so losses
//! and duplicates are exact), bytes on the wire, reconnects, whether a stalled connection was cut
//! off, and the latency and connect-time histograms that all connections of one client thread
//! share.
//!
//! No IO and no clocks: the transports call in with what they read, and `run` merges the
//! per-connection and per-thread tallies at the end.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::scan::Delivery;

/// Highest latency or connect time the histograms track, in µs (one minute). Larger values are
/// clamped to it: a delivery a minute late is a failure whatever its exact figure.
const HIGHEST_US: u64 = 60_000_000;

/// Significant digits of the histograms: 0.1% resolution, about 30 KiB per histogram.
const SIGFIG: u8 = 3;

/// A set of sequence numbers from 1, as a growable bitmap.
#[derive(Debug, Clone, Default)]
pub struct SeqSet {
    words: Vec<u64>,
    count: u64,
}

impl SeqSet {
    /// An empty set with room for numbers up to `expected` without reallocating.
    pub fn with_capacity(expected: u64) -> Self {
        let words = usize::try_from(expected / 64 + 1).unwrap_or(0);
        SeqSet {
            words: Vec::with_capacity(words),
            count: 0,
        }
    }

    /// Adds `n`; false if it was already there.
    pub fn insert(&mut self, n: u64) -> bool {
        let Ok(word) = usize::try_from(n / 64) else {
            return false;
        };
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (n % 64);
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.count += u64::from(fresh);
        fresh
    }

    /// Whether `n` is in the set.
    pub fn contains(&self, n: u64) -> bool {
        usize::try_from(n / 64)
            .ok()
            .and_then(|word| self.words.get(word))
            .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
    }

    /// How many numbers are in the set.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds every number of `other`.
    pub fn union_with(&mut self, other: &SeqSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
        self.count = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
    }

    /// How many numbers of `self` are missing from `other`.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let theirs = other.words.get(i).copied().unwrap_or(0);
                u64::from((w & !theirs).count_ones())
            })
            .sum()
    }
}

/// One connection's account, returned by its task when the run stops.
#[derive(Debug, Clone, Default)]
pub struct ConnTally {
    /// Sequence numbers received (primer events excluded).
    pub seen: SeqSet,
    /// Deliveries, duplicates included.
    pub delivered: u64,
    /// Deliveries of a sequence number this connection had already received.
    pub duplicates: u64,
    /// Bytes read from the socket(s), response heads and framing included.
    pub bytes_read: u64,
    /// Bytes written to the socket(s): requests, and WebSocket pongs.
    pub bytes_written: u64,
    /// Socket reads that returned data (how many pieces the bytes came in).
    pub reads: u64,
    /// Times the connection was re-opened after the server closed it or it failed.
    pub reconnects: u64,
    /// In-band `reset` notices (the server could not replay after a reconnect).
    pub resets: u64,
    /// In-band `dropped` notices.
    pub dropped_notices: u64,
    /// The connection became ready (subscribed, position known) before the publisher started.
    pub ready: bool,
    /// The connection is one of the stalled ones: once ready it never read again, so it takes
    /// no part in the delivery figures.
    pub stalled: bool,
    /// When the server cut a stalled connection off (reset it), unix µs.
    pub cut_off_at_us: Option<u64>,
    /// Why the connection gave up, if it did.
    pub failure: Option<String>,
    /// When the first attempt started, unix µs.
    pub opened_us: u64,
    /// First attempt → ready, µs (none: never ready).
    pub connect_us: Option<u64>,
    /// When a ready stream went down, unix µs, each time.
    pub drops_us: Vec<u64>,
    /// Sessions after the first that became ready (reconnects that worked).
    pub sessions: Vec<Attempt>,
    /// Reconnect attempts that failed (refused, reset, timed out, refused by status).
    pub attempts_failed: Vec<Attempt>,
    /// The highest sequence number received so far.
    pub max_n: u64,
    /// A `reset` arrived: the highest number received before it, until the next delivery.
    pub pending_reset: Option<u64>,
    /// `(a, b)`: a `reset` came between receiving `a` and `b`, so the server said it could not
    /// replay what was published in between; numbers strictly inside are excused losses.
    pub reset_gaps: Vec<(u64, u64)>,
    /// A listening run (no publish hook): what the ids said.
    pub listen: Listen,
}

/// One reconnect attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// When it started, unix µs.
    pub started_us: u64,
    /// When it became ready or failed, unix µs.
    pub ended_us: u64,
    /// Why it failed (none: it became ready).
    pub error: Option<AttemptError>,
}

/// Why a reconnect attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptError {
    /// The connection was refused (nothing listening).
    Refused,
    /// The connection was reset or closed before the stream was ready (a server that refuses
    /// for now may answer and close, with a `retry:` hint).
    Closed,
    /// Not ready in time.
    Timeout,
    /// The server answered with another status than 200.
    Status,
    /// Anything else (a protocol error).
    Other,
}

impl AttemptError {
    /// Classifies a failed session (`None`: closed before it was ready).
    pub fn of(error: Option<&crate::transport::SessionError>) -> AttemptError {
        use crate::transport::SessionError;
        use std::io::ErrorKind;
        match error {
            None => AttemptError::Closed,
            Some(SessionError::Io(e)) => match e.kind() {
                ErrorKind::ConnectionRefused => AttemptError::Refused,
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof => AttemptError::Closed,
                ErrorKind::TimedOut => AttemptError::Timeout,
                _ => AttemptError::Other,
            },
            Some(SessionError::Timeout) => AttemptError::Timeout,
            Some(SessionError::Status(_)) => AttemptError::Status,
            Some(
                SessionError::Protocol(_) | SessionError::WebSocket(_) | SessionError::Http2(_),
            ) => AttemptError::Other,
        }
    }
}

/// What a listening connection saw: events, and gaps in numeric ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listen {
    /// Events with data.
    pub events: u64,
    /// First and last event, unix µs.
    pub first_us: u64,
    /// See `first_us`.
    pub last_us: u64,
    /// The number the last id ended in, if it ended in digits.
    pub last_id: Option<u64>,
    /// Times an id skipped ahead of the previous one + 1.
    pub gaps: u64,
    /// Numbers skipped over by those gaps.
    pub skipped: u64,
    /// Events whose id did not end in digits (gaps cannot be told).
    pub non_numeric: u64,
}

impl Listen {
    /// One event with `id` (empty: none) at `now_us`.
    pub fn event(&mut self, id: &[u8], now_us: u64) {
        self.events += 1;
        if self.first_us == 0 {
            self.first_us = now_us;
        }
        self.last_us = now_us;
        let digits = id.iter().rev().take_while(|b| b.is_ascii_digit()).count();
        let number = std::str::from_utf8(&id[id.len() - digits..])
            .ok()
            .and_then(|d| d.parse::<u64>().ok());
        let Some(number) = number else {
            self.non_numeric += 1;
            return;
        };
        if let Some(last) = self.last_id {
            if number > last + 1 {
                self.gaps += 1;
                self.skipped += number - last - 1;
            }
        }
        self.last_id = Some(number);
    }
}

impl ConnTally {
    /// A tally with bitmap room for `expected` sequence numbers.
    pub fn new(expected: u64) -> Self {
        ConnTally {
            seen: SeqSet::with_capacity(expected),
            ..ConnTally::default()
        }
    }

    /// A listening run's event with `id`.
    pub fn listen(&mut self, id: &[u8], now_us: u64) {
        self.delivered += 1;
        self.listen.event(id, now_us);
    }

    /// A `reset` notice: what is published until the next delivery may never come.
    pub fn reset(&mut self) {
        self.resets += 1;
        self.pending_reset = Some(self.max_n);
    }

    /// Records a delivery: the bitmap here, the latency in `shared`. Primer events (n = 0) only
    /// count their bytes.
    pub fn record(&mut self, delivery: Delivery, now_us: u64, shared: &mut ThreadTally) {
        if delivery.n == 0 {
            return;
        }
        if let Some(before) = self.pending_reset.take() {
            self.reset_gaps.push((before, delivery.n));
        }
        self.max_n = self.max_n.max(delivery.n);
        self.delivered += 1;
        if !self.seen.insert(delivery.n) {
            self.duplicates += 1;
        }
        shared.record_latency(now_us.saturating_sub(delivery.t));
        shared.first_send_us = match shared.first_send_us {
            0 => delivery.t,
            first => first.min(delivery.t),
        };
        shared.last_delivery_us = shared.last_delivery_us.max(now_us);
    }
}

/// What the connections of one client thread share: the histograms.
#[derive(Debug, Clone)]
pub struct ThreadTally {
    /// Publish → delivery latency, µs.
    pub latency: Histogram<u64>,
    /// Connect → ready, µs.
    pub connect: Histogram<u64>,
    /// Earliest send time among delivered events, unix µs (0: none yet).
    pub first_send_us: u64,
    /// Latest delivery, unix µs.
    pub last_delivery_us: u64,
}

impl Default for ThreadTally {
    fn default() -> Self {
        ThreadTally::new()
    }
}

impl ThreadTally {
    /// Empty histograms.
    pub fn new() -> Self {
        ThreadTally {
            latency: new_histogram(),
            connect: new_histogram(),
            first_send_us: 0,
            last_delivery_us: 0,
        }
    }

    /// Records one delivery's latency.
    pub fn record_latency(&mut self, us: u64) {
        self.latency.saturating_record(us.clamp(1, HIGHEST_US));
    }

    /// Records one connection's time to ready.
    pub fn record_connect(&mut self, us: u64) {
        self.connect.saturating_record(us.clamp(1, HIGHEST_US));
    }

    /// Adds another thread's histograms to these.
    pub fn merge(&mut self, other: &ThreadTally) {
        // Same bounds on both sides, so `add` cannot fail; ignore the impossible error.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect.add(&other.connect);
        self.first_send_us = match (self.first_send_us, other.first_send_us) {
            (0, theirs) => theirs,
            (mine, 0) => mine,
            (mine, theirs) => mine.min(theirs),
        };
        self.last_delivery_us = self.last_delivery_us.max(other.last_delivery_us);
    }
}

/// Counters every thread bumps as it goes, for the progress bar and for deciding when the ramp-up
/// and the drain are over. The exact figures come from the tallies at the end.
#[derive(Debug, Default)]
pub struct Live {
    /// Connections whose first attempt started.
    pub opened: AtomicU64,
    /// Connections that became ready.
    pub ready: AtomicU64,
    /// Connections that gave up before becoming ready.
    pub failed: AtomicU64,
    /// Deliveries of counted events (primers excluded), duplicates included.
    pub delivered: AtomicU64,
    /// Publishes the server accepted.
    pub published: AtomicU64,
    /// Stalled connections that became ready and stopped reading.
    pub stalled: AtomicU64,
    /// Stalled connections the server cut off.
    pub cut_off: AtomicU64,
    /// Ready streams that went down.
    pub drops: AtomicU64,
    /// A storm's cut, unix µs (0: none yet).
    pub cut_at_us: AtomicU64,
    /// The first stream that goes down sets `cut_at_us` (a storm against `--url`).
    pub cut_on_first_drop: std::sync::atomic::AtomicBool,
    /// Connections ready again after the cut.
    pub back: AtomicU64,
    /// HTTP/2 connections opened (`--http2`): the streams share them.
    pub http2_connections: AtomicU64,
}

impl Live {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A histogram with the harness's bounds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, SIGFIG).expect("constant, valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_set_counts_losses_and_duplicates() {
        let mut published = SeqSet::with_capacity(10);
        for n in 1..=200 {
            published.insert(n);
        }
        let mut seen = SeqSet::with_capacity(10);
        for n in (1..=200).filter(|n| n % 50 != 0) {
            assert!(seen.insert(n));
        }
        assert!(!seen.insert(7));
        assert_eq!(seen.len(), 196);
        assert!(seen.contains(199) && !seen.contains(150));
        assert_eq!(published.missing_from(&seen), 4);
        assert_eq!(seen.missing_from(&published), 0);
    }

    #[test]
    fn listening_counts_id_gaps() {
        let mut listen = Listen::default();
        for (id, at) in [
            ("e-1", 10),
            ("e-2", 20),
            ("e-5", 30),
            ("e-6", 40),
            ("x", 50),
        ] {
            listen.event(id.as_bytes(), at);
        }
        listen.event(b"", 60);
        listen.event(b"9", 70);
        assert_eq!(listen.events, 7);
        assert_eq!((listen.gaps, listen.skipped), (2, 4));
        assert_eq!(listen.non_numeric, 2);
        assert_eq!((listen.first_us, listen.last_us), (10, 70));
    }

    #[test]
    fn a_reset_marks_the_gap_it_excuses() {
        let mut shared = ThreadTally::new();
        let mut conn = ConnTally::new(8);
        conn.record(Delivery { n: 1, t: 1 }, 2, &mut shared);
        conn.record(Delivery { n: 2, t: 1 }, 2, &mut shared);
        conn.reset();
        conn.record(Delivery { n: 6, t: 1 }, 2, &mut shared);
        conn.record(Delivery { n: 7, t: 1 }, 2, &mut shared);
        assert_eq!(conn.reset_gaps, [(2, 6)]);
        assert_eq!(conn.resets, 1);
    }

    #[test]
    fn record_skips_primers_and_counts_duplicates() {
        let mut shared = ThreadTally::new();
        let mut conn = ConnTally::new(4);
        conn.record(Delivery { n: 0, t: 1 }, 10, &mut shared);
        conn.record(Delivery { n: 1, t: 1_000 }, 3_000, &mut shared);
        conn.record(Delivery { n: 1, t: 1_000 }, 4_000, &mut shared);
        assert_eq!(conn.delivered, 2);
        assert_eq!(conn.duplicates, 1);
        assert_eq!(shared.latency.len(), 2);
        assert_eq!(shared.latency.min(), 2_000);
    }
}
