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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

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
    /// Well-formed, but from another epoch (an earlier run) or from the future.
    Foreign,
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
    /// The epoch: the part of every id that names this history's life.
    fn epoch(&self) -> &str;

    /// The highest seq handed out so far (0 before the first publish).
    fn head(&self) -> Seq;

    /// Takes the next seq, builds the frame for it with `encode`, and retains the frame on
    /// `topic`, all in one step so that retained order is seq order. Returns the seq and frame.
    fn append(
        &self,
        topic: &Topic,
        encode: &mut dyn FnMut(Seq) -> Bytes,
    ) -> Result<(Seq, Bytes), HistoryError>;

    /// Appends to `out` every retained event of `topic` with `after < seq <= upto`, in order.
    /// Fails if events in that range were evicted.
    fn replay(
        &self,
        topic: &Topic,
        after: Seq,
        upto: Seq,
        out: &mut Vec<(Seq, Bytes)>,
    ) -> Result<(), Gap>;

    /// Drops expired events and empty channels. Called periodically.
    fn sweep(&self);

    /// Channels with retained events, and events retained over all channels.
    fn size(&self) -> (usize, usize);

    /// Formats a seq as an event id.
    fn format_id(&self, seq: Seq) -> String {
        format!("{}-{}", self.epoch(), seq)
    }

    /// Reads a client's last event id.
    fn position(&self, id: &str) -> Position {
        let Some((epoch, seq)) = id.rsplit_once('-') else {
            return Position::Malformed;
        };
        if epoch.is_empty()
            || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
            || seq.is_empty()
            || !seq.bytes().all(|b| b.is_ascii_digit())
        {
            return Position::Malformed;
        }
        let Ok(seq) = seq.parse::<Seq>() else {
            return Position::Malformed;
        };
        if epoch != self.epoch() || seq > self.head() {
            return Position::Foreign;
        }
        Position::After(seq)
    }
}

struct Entry {
    seq: Seq,
    at: Instant,
    frame: Bytes,
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<Entry>,
    /// Highest seq evicted from this ring; a resume from before it has a gap.
    evicted_through: Seq,
}

impl Ring {
    fn evict_expired(&mut self, ttl: Option<Duration>, now: Instant) {
        let Some(ttl) = ttl else { return };
        while let Some(front) = self.entries.front() {
            if now.duration_since(front.at) < ttl {
                break;
            }
            self.evicted_through = front.seq;
            self.entries.pop_front();
        }
    }
}

/// The embedded history: a bounded ring per channel, in memory.
pub struct MemoryHistory {
    epoch: String,
    next: AtomicU64,
    capacity: usize,
    ttl: Option<Duration>,
    stripes: Vec<Mutex<HashMap<Topic, Ring>>>,
    /// Highest `evicted_through` of any ring removed by a sweep: a resume on a channel whose ring
    /// is gone is only safe from after this point.
    swept_through: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

impl fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("epoch", &self.epoch)
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl MemoryHistory {
    /// A history keeping up to `capacity` events per channel (0 keeps none), each for at most
    /// `ttl`. Its epoch is the start time in milliseconds, base 36: new for every process.
    pub fn new(capacity: usize, ttl: Option<Duration>) -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::with_epoch(base36(millis), capacity, ttl)
    }

    /// Like [`MemoryHistory::new`] with a chosen epoch (tests).
    pub fn with_epoch(epoch: String, capacity: usize, ttl: Option<Duration>) -> Self {
        MemoryHistory {
            epoch,
            next: AtomicU64::new(1),
            capacity,
            ttl,
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            swept_through: AtomicU64::new(0),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn stripe(&self, topic: &Topic) -> &Mutex<HashMap<Topic, Ring>> {
        let hash = self.hasher.hash_one(topic);
        &self.stripes[(hash as usize) % STRIPES]
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
    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn head(&self) -> Seq {
        self.next.load(Ordering::Acquire) - 1
    }

    fn append(
        &self,
        topic: &Topic,
        encode: &mut dyn FnMut(Seq) -> Bytes,
    ) -> Result<(Seq, Bytes), HistoryError> {
        let mut stripe = lock(self.stripe(topic));
        let seq = self.next.fetch_add(1, Ordering::AcqRel);
        let frame = encode(seq);
        if self.capacity > 0 {
            let ring = stripe.entry(topic.clone()).or_default();
            let now = Instant::now();
            ring.evict_expired(self.ttl, now);
            if ring.entries.len() >= self.capacity {
                if let Some(old) = ring.entries.pop_front() {
                    ring.evicted_through = old.seq;
                }
            }
            ring.entries.push_back(Entry {
                seq,
                at: now,
                frame: frame.clone(),
            });
        }
        Ok((seq, frame))
    }

    fn replay(
        &self,
        topic: &Topic,
        after: Seq,
        upto: Seq,
        out: &mut Vec<(Seq, Bytes)>,
    ) -> Result<(), Gap> {
        if after >= upto {
            return Ok(());
        }
        let mut stripe = lock(self.stripe(topic));
        let Some(ring) = stripe.get_mut(topic) else {
            // Nothing retained: complete unless a sweep removed events after `after`, or the
            // history keeps nothing at all and events were published since.
            if after < self.swept_through.load(Ordering::Acquire) {
                return Err(Gap::Expired);
            }
            if self.capacity == 0 {
                return Err(Gap::Expired);
            }
            return Ok(());
        };
        ring.evict_expired(self.ttl, Instant::now());
        if after < ring.evicted_through {
            return Err(Gap::Expired);
        }
        let start = ring.entries.partition_point(|e| e.seq <= after);
        for entry in ring.entries.range(start..) {
            if entry.seq > upto {
                break;
            }
            out.push((entry.seq, entry.frame.clone()));
        }
        Ok(())
    }

    fn sweep(&self) {
        let now = Instant::now();
        for stripe in &self.stripes {
            let mut stripe = lock(stripe);
            stripe.retain(|_, ring| {
                ring.evict_expired(self.ttl, now);
                if ring.entries.is_empty() {
                    self.swept_through
                        .fetch_max(ring.evicted_through, Ordering::AcqRel);
                    false
                } else {
                    true
                }
            });
        }
    }

    fn size(&self) -> (usize, usize) {
        let mut channels = 0;
        let mut events = 0;
        for stripe in &self.stripes {
            let stripe = lock(stripe);
            channels += stripe.len();
            events += stripe.values().map(|r| r.entries.len()).sum::<usize>();
        }
        (channels, events)
    }
}

fn base36(mut value: u64) -> String {
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

    fn publish(history: &MemoryHistory, name: &str) -> Seq {
        history
            .append(&topic(name), &mut |seq| Bytes::from(format!("{seq}")))
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
        let h = MemoryHistory::with_epoch("e".into(), 10, None);
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
    fn replay_stops_at_upto() {
        let h = MemoryHistory::with_epoch("e".into(), 10, None);
        for _ in 0..5 {
            publish(&h, "a");
        }
        let mut out = Vec::new();
        h.replay(&topic("a"), 1, 3, &mut out).unwrap();
        assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn eviction_by_size_is_a_gap() {
        let h = MemoryHistory::with_epoch("e".into(), 3, None);
        for _ in 0..5 {
            publish(&h, "a");
        }
        assert_eq!(seqs(&h, "a", 2).unwrap(), vec![3, 4, 5]);
        assert_eq!(seqs(&h, "a", 1), Err(Gap::Expired));
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
    }

    #[test]
    fn eviction_by_age_and_sweep() {
        let h = MemoryHistory::with_epoch("e".into(), 10, Some(Duration::from_millis(1)));
        publish(&h, "a");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
        h.sweep();
        assert_eq!(h.size(), (0, 0));
        // The ring is gone, but the sweep remembers what it dropped.
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
        assert_eq!(seqs(&h, "a", 1).unwrap(), Vec::<Seq>::new());
    }

    #[test]
    fn positions() {
        let h = MemoryHistory::with_epoch("k3x".into(), 10, None);
        publish(&h, "a");
        publish(&h, "a");
        assert_eq!(h.format_id(2), "k3x-2");
        assert_eq!(h.position("k3x-2"), Position::After(2));
        assert_eq!(h.position("k3x-0"), Position::After(0));
        assert_eq!(h.position("k3x-3"), Position::Foreign);
        assert_eq!(h.position("old-1"), Position::Foreign);
        for bad in [
            "",
            "7",
            "-1",
            "k3x-",
            "k3x--1",
            "k3x-1a",
            "k3x-99999999999999999999999",
        ] {
            assert_eq!(h.position(bad), Position::Malformed, "{bad}");
        }
    }

    #[test]
    fn epochs_differ_between_lives() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        let a = MemoryHistory::new(1, None);
        std::thread::sleep(Duration::from_millis(2));
        let b = MemoryHistory::new(1, None);
        assert_ne!(a.epoch(), b.epoch());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let h = MemoryHistory::with_epoch("e".into(), 0, None);
        publish(&h, "a");
        assert_eq!(h.size(), (0, 0));
        assert_eq!(seqs(&h, "a", 0), Err(Gap::Expired));
    }
}
