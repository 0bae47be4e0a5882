//! The durable embedded store (`--data-dir`): channel history and users' queues kept on disk in
//! an append-only log ([`log`]) and in memory ([`MemoryHistory`]) for reading, so a restart on
//! the same directory continues the same epoch and ids, and a client resuming after a crash or a
//! deploy gets exactly what it missed.
//!
//! Disk is the truth: every publish is written to the log (one `write` to the operating system)
//! before it is acknowledged, and the log is read back at start-up through the same retention
//! rules as a publish. Memory holds what those rules retain, so reads never touch the disk.
//!
//! Idempotency keys travel with their events: a keyed publish writes its event record and a
//! `KEY` record in one `write`, compaction rewrites the keys still inside the window, and
//! start-up hands the recent ones back ([`DurableHistory::take_keys`]) so a publisher that
//! retries across a restart gets its first id back. Logs written before keys existed read back
//! as before; a binary that predates keys skips `KEY` records and reads the events.
//!
//! The directory holds `lock` (held with an exclusive `flock` for the life of the process),
//! `epoch` (the epoch of every id this directory handed out) and `log/` (the segments). A second
//! process on the same directory waits for the lock up to `--lock-wait` before it reads anything:
//! that is the handover of a rolling restart (the old process exits, the new one takes the lock
//! and reads the log to its end, including the old one's last writes), and past the wait it is
//! refused. Knows nothing of HTTP or of the shards.

pub mod log;

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::hub::history::{Gap, HistoryError, HistorySize, Position};
use crate::hub::{Frame, History, Limits, MemoryHistory, Seq, Topic};
pub use log::Fsync;
use log::Log;

const EVENT: u8 = 1;
const DELIVERED: u8 = 2;
/// A snapshot's marks of one channel: `seq` is its floor (evicted through), `at_ms` its
/// delivered mark.
const MARKS: u8 = 3;
/// A snapshot's hub-wide floor of swept channels (in `seq`).
const SWEPT: u8 = 4;
/// The idempotency key of the event `seq` on the channel, published at `at_ms`: written with
/// its event (same `write`) and again by compaction while inside the key window.
const KEY: u8 = 5;

/// How often a process waiting for the directory's lock tries again. The lock is released when
/// the old process exits; this bounds how long the new one lets that go unnoticed.
pub const LOCK_POLL: Duration = Duration::from_millis(10);

/// Keys the store keeps for compaction at most (the oldest go first past it), as many as the
/// idempotency table remembers: ~100 bytes each, so ~10 MB at the bound.
pub const MAX_KEYS: usize = 100_000;

/// Closed segments that trigger a compaction: the log is rewritten as one snapshot of what
/// memory retains, so disk use stays near what the retention rules keep (plus at most this many
/// segments of appends) however long the process runs.
pub const COMPACT_AFTER_SEGMENTS: usize = 2;

/// Why a data directory cannot be opened.
#[derive(Debug)]
pub enum StoreError {
    /// Another process held the directory's lock for the whole of `--lock-wait`.
    Locked(PathBuf, Duration),
    /// The directory or a file in it cannot be read or written.
    Io(PathBuf, io::Error),
    /// The epoch file holds something this store never wrote.
    BadEpoch(PathBuf),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked(dir, waited) => write!(
                f,
                "data directory {} is in use by another sluice process (waited {} ms for its lock; \
                 see --lock-wait)",
                dir.display(),
                waited.as_millis()
            ),
            StoreError::Io(path, error) => write!(f, "{}: {error}", path.display()),
            StoreError::BadEpoch(path) => {
                write!(f, "{}: not an epoch written by sluice", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// What start-up found in the directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovered {
    /// Events read back (retained or not).
    pub events: u64,
    /// Segments whose tail was torn or corrupt and cut off.
    pub truncated: usize,
    /// How long reading the log took (after the lock was taken).
    pub took: Duration,
    /// Idempotency keys read back inside the window.
    pub keys: usize,
}

/// How a store is opened: the retention rules, durability, and the two waits of a restart.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Retention of channel history.
    pub channels: Limits,
    /// Retention of users' queues.
    pub users: Limits,
    /// The memory budget of what is retained (bytes, and the largest single event): what it
    /// evicts from memory is gone for resumes, as in the memory store.
    pub budget: (u64, u64),
    /// When writes reach the device.
    pub fsync: Fsync,
    /// `--lock-wait`: how long to wait for a lock another process holds (the old process of a
    /// rolling restart, draining) before giving up.
    pub lock_wait: Duration,
    /// `--idempotency-window`: keys older than this are neither read back nor compacted.
    pub key_window: Duration,
}

/// An idempotency key read back from the log, for the publish path's table.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// The channel the keyed event was published on.
    pub topic: Topic,
    /// The key, as the publisher sent it.
    pub key: String,
    /// The event's seq.
    pub seq: Seq,
    /// How long ago it was published.
    pub age: Duration,
}

/// A key kept for compaction.
struct KeptKey {
    at_ms: u64,
    topic: Topic,
    key: String,
    seq: Seq,
}

/// The durable history: the memory rings, and the log that makes them survive a restart.
pub struct DurableHistory {
    memory: Arc<MemoryHistory>,
    log: Log,
    /// Keys inside the window, oldest first, for compaction to carry over.
    keys: Mutex<VecDeque<KeptKey>>,
    key_window: Duration,
    /// What start-up read back, until the publish path takes it.
    recovered_keys: Mutex<Vec<StoredKey>>,
    /// Held for its `flock` until the process exits.
    _lock: File,
}

impl fmt::Debug for DurableHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableHistory")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io(path.to_owned(), error)
}

/// Whether another process holds the lock of the data directory `dir` right now (a sluice
/// serving it). A missing or unreadable directory is not locked.
pub fn is_locked(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join("lock")) else {
        return false;
    };
    matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock))
}

/// Takes the directory's lock, waiting up to `wait` while another process holds it.
fn take_lock(dir: &Path, wait: Duration) -> Result<File, StoreError> {
    let path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_at(&path))?;
    let started = Instant::now();
    let mut waiting = false;
    loop {
        match lock.try_lock() {
            Ok(()) => {
                if waiting {
                    tracing::info!(
                        dir = %dir.display(),
                        waited_ms = started.elapsed().as_millis() as u64,
                        "took the data directory's lock over"
                    );
                }
                return Ok(lock);
            }
            Err(fs::TryLockError::WouldBlock) => {
                let waited = started.elapsed();
                if waited >= wait {
                    return Err(StoreError::Locked(dir.to_owned(), waited));
                }
                if !waiting {
                    waiting = true;
                    tracing::warn!(
                        dir = %dir.display(),
                        lock_wait_ms = wait.as_millis() as u64,
                        "the data directory is locked by another sluice process: waiting for it \
                         to exit (a rolling restart) before serving"
                    );
                }
                std::thread::sleep(LOCK_POLL.min(wait - waited));
            }
            Err(fs::TryLockError::Error(error)) => return Err(StoreError::Io(path, error)),
        }
    }
}

impl DurableHistory {
    /// Opens (or creates) the store in `dir`: takes its lock (waiting for it up to
    /// `options.lock_wait`), reads its epoch and its log back into memory (cutting off a torn
    /// tail), and opens the log for appending.
    pub fn open(dir: &Path, options: Options) -> Result<(DurableHistory, Recovered), StoreError> {
        Self::open_with(dir, options, log::SEGMENT_BYTES)
    }

    fn open_with(
        dir: &Path,
        options: Options,
        segment_bytes: u64,
    ) -> Result<(DurableHistory, Recovered), StoreError> {
        let Options {
            channels,
            users,
            budget: (budget, max_event),
            fsync,
            lock_wait,
            key_window,
        } = options;
        let logs = dir.join("log");
        fs::create_dir_all(&logs).map_err(io_at(&logs))?;
        let lock = take_lock(dir, lock_wait)?;
        let started = Instant::now();
        // A compaction that crashed before its rename left a partial snapshot: never read.
        let _ = fs::remove_file(logs.join(SNAPSHOT_TEMP));
        let epoch = read_or_create_epoch(dir)?;
        let memory = Arc::new(
            MemoryHistory::with_epoch(epoch, channels, users).with_budget(budget, max_event),
        );

        let mut recovered = Recovered::default();
        let mut keys = VecDeque::new();
        let segments = log::segments(&logs).map_err(io_at(&logs))?;
        let now_ms = now_ms();
        let mut last = None;
        let count = segments.len();
        for (n, (index, path)) in segments.into_iter().enumerate() {
            let mut records = Vec::new();
            let intact = log::read_segment(&path, &mut |body| {
                if let Some(record) = Record::decode(body) {
                    records.push(record);
                }
            })
            .map_err(io_at(&path))?;
            let length = fs::metadata(&path).map_err(io_at(&path))?.len();
            if intact < length {
                recovered.truncated += 1;
                tracing::warn!(
                    segment = %path.display(),
                    intact,
                    length,
                    "the event log ends in a torn or corrupt record: cut off after the last intact one"
                );
                if n + 1 < count {
                    // Not the segment appends continue in: cut it here too, so the next start
                    // reads the same thing.
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_at(&path))?;
                    file.set_len(intact).map_err(io_at(&path))?;
                }
            }
            // Concurrent publishers may write neighbouring seqs in either order.
            records.sort_by_key(|r| (r.seq, r.kind));
            for record in records {
                match record.kind {
                    EVENT => {
                        recovered.events += 1;
                        let age = Duration::from_millis(now_ms.saturating_sub(record.at_ms));
                        memory.restore(&record.topic, record.seq, age, record.frame);
                    }
                    MARKS => memory.restore_marks(&record.topic, record.seq, record.at_ms),
                    SWEPT => memory.restore_swept(record.seq),
                    KEY => {
                        let fresh = now_ms.saturating_sub(record.at_ms) < key_window_ms(key_window);
                        if let (true, Some(key)) = (fresh, record.key) {
                            keys.push_back(KeptKey {
                                at_ms: record.at_ms,
                                topic: record.topic,
                                key,
                                seq: record.seq,
                            });
                        }
                    }
                    _ => memory.mark_delivered(&record.topic, record.seq),
                }
            }
            last = Some((index, intact));
        }
        let log = Log::open(&logs, last, fsync, segment_bytes).map_err(io_at(&logs))?;
        recovered.took = started.elapsed();
        // Segments are read in order, but a snapshot's keys and later appends interleave in
        // time only roughly: the window's expiry wants them oldest first.
        keys.make_contiguous().sort_by_key(|k| k.at_ms);
        while keys.len() > MAX_KEYS {
            keys.pop_front();
        }
        recovered.keys = keys.len();
        let stored = keys
            .iter()
            .map(|k| StoredKey {
                topic: k.topic.clone(),
                key: k.key.clone(),
                seq: k.seq,
                age: Duration::from_millis(now_ms.saturating_sub(k.at_ms)),
            })
            .collect();
        Ok((
            DurableHistory {
                memory,
                log,
                keys: Mutex::new(keys),
                key_window,
                recovered_keys: Mutex::new(stored),
                _lock: lock,
            },
            recovered,
        ))
    }

    /// The idempotency keys read back at start-up that are still inside the window, oldest
    /// first (once: later calls get none).
    pub fn take_keys(&self) -> Vec<StoredKey> {
        std::mem::take(&mut *lock_keys(&self.recovered_keys))
    }

    /// Forces the log to the device: the last thing a process that exits does, so a deploy
    /// loses nothing to a power cut that follows it, whatever `--fsync` says.
    pub fn close(&self) {
        match self.log.sync() {
            Ok(()) => tracing::info!("event log flushed"),
            Err(error) => tracing::error!(%error, "cannot flush the event log"),
        }
        self.log.close();
    }

    /// The memory side, for the sweeper.
    pub fn memory(&self) -> Arc<MemoryHistory> {
        self.memory.clone()
    }

    /// The log, for waiting on commits.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Rewrites the closed segments as one snapshot of what memory retains, once there are
    /// [`COMPACT_AFTER_SEGMENTS`] of them. Runs on the sweeper's thread. The snapshot is written
    /// to a temporary file, synced, and renamed over the newest closed segment before the older
    /// ones are removed: a crash at any point leaves a log that reads back the same.
    pub fn compact(&self) -> io::Result<bool> {
        let dir = self.log.dir().to_owned();
        let closed = log::segments(&dir)?.len().saturating_sub(1);
        if closed < COMPACT_AFTER_SEGMENTS {
            return Ok(false);
        }
        let current = self.log.roll()?;
        let temp = dir.join(SNAPSHOT_TEMP);
        let mut out = io::BufWriter::new(File::create(&temp)?);
        let now = now_ms();
        let mut failed = None;
        let mut put = |out: &mut io::BufWriter<File>, body: &[u8]| {
            if failed.is_none() {
                if let Err(error) = log::write_record(out, body) {
                    failed = Some(error);
                }
            }
        };
        let mut body = Vec::new();
        let swept = self
            .memory
            .snapshot(&mut |topic, floor, delivered, entries| {
                for (seq, age, frame) in entries {
                    body.clear();
                    let at = now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
                    encode(&mut body, EVENT, topic, seq, at, Some(frame));
                    put(&mut out, &body);
                }
                body.clear();
                encode(&mut body, MARKS, topic, floor, delivered, None);
                put(&mut out, &body);
            });
        body.clear();
        encode(&mut body, SWEPT, &Topic::broadcast(), swept, 0, None);
        put(&mut out, &body);
        {
            let mut keys = lock_keys(&self.keys);
            let window = key_window_ms(self.key_window);
            while keys
                .front()
                .is_some_and(|k| now.saturating_sub(k.at_ms) >= window)
            {
                keys.pop_front();
            }
            for kept in keys.iter() {
                body.clear();
                encode_key(&mut body, &kept.topic, kept.seq, kept.at_ms, &kept.key);
                put(&mut out, &body);
            }
        }
        if let Some(error) = failed {
            return Err(error);
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let snapshot = log::segment_path(&dir, current - 1);
        fs::rename(&temp, &snapshot)?;
        File::open(&dir)?.sync_all()?;
        for (index, path) in log::segments(&dir)? {
            if index < current - 1 {
                fs::remove_file(path)?;
            }
        }
        Ok(true)
    }

    fn write(&self, kind: u8, topic: &Topic, seq: Seq, frame: Option<&Frame>) -> io::Result<u64> {
        self.log
            .append(|buf| encode(buf, kind, topic, seq, now_ms(), frame))
    }
}

fn lock_keys<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn key_window_ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

/// A `KEY` record body: the common head (`kind | seq | at_ms | name_len | name`), then the key.
fn encode_key(buf: &mut Vec<u8>, topic: &Topic, seq: Seq, at_ms: u64, key: &str) {
    encode(buf, KEY, topic, seq, at_ms, None);
    buf.extend_from_slice(key.as_bytes());
}

/// The name a snapshot is written under before it replaces the segments it summarises.
const SNAPSHOT_TEMP: &str = "snapshot.tmp";

/// A record body: `kind: u8 | seq: u64 | at_ms: u64 | name_len: u16 | name`, then for an event
/// `sse_len: u32 | sse | ws` (both encodings, so a read-back event is served as published).
fn encode(buf: &mut Vec<u8>, kind: u8, topic: &Topic, seq: Seq, at_ms: u64, frame: Option<&Frame>) {
    buf.push(kind);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&at_ms.to_le_bytes());
    let name = topic.as_str().as_bytes();
    buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
    buf.extend_from_slice(name);
    if let Some(frame) = frame {
        let sse = frame.get(crate::hub::Transport::Sse);
        let ws = frame.get(crate::hub::Transport::WebSocket);
        buf.extend_from_slice(&(sse.len() as u32).to_le_bytes());
        buf.extend_from_slice(&sse);
        buf.extend_from_slice(&ws);
    }
}

fn encode_event(buf: &mut Vec<u8>, topic: &Topic, seq: Seq, at_ms: u64, frame: &Frame) {
    encode(buf, EVENT, topic, seq, at_ms, Some(frame));
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The directory's epoch, or a new one (the current time in milliseconds, base 36, like the
/// memory store's) written and synced before any id is handed out.
fn read_or_create_epoch(dir: &Path) -> Result<String, StoreError> {
    let path = dir.join("epoch");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let epoch = text.trim();
            if epoch.is_empty()
                || epoch.len() > 32
                || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(StoreError::BadEpoch(path));
            }
            Ok(epoch.to_owned())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let epoch = crate::hub::history::base36(now_ms());
            let temp = dir.join("epoch.new");
            let mut file = File::create(&temp).map_err(io_at(&temp))?;
            file.write_all(epoch.as_bytes()).map_err(io_at(&temp))?;
            file.sync_all().map_err(io_at(&temp))?;
            fs::rename(&temp, &path).map_err(io_at(&path))?;
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
            Ok(epoch)
        }
        Err(error) => Err(StoreError::Io(path, error)),
    }
}

/// One decoded record.
struct Record {
    kind: u8,
    seq: Seq,
    at_ms: u64,
    topic: Topic,
    frame: Frame,
    /// A `KEY` record's key.
    key: Option<String>,
}

impl Record {
    /// Reads a record body; `None` for one this version cannot read (skipped, not fatal).
    fn decode(body: &[u8]) -> Option<Record> {
        let kind = *body.first()?;
        let seq = u64::from_le_bytes(body.get(1..9)?.try_into().ok()?);
        let at_ms = u64::from_le_bytes(body.get(9..17)?.try_into().ok()?);
        let name_len = u16::from_le_bytes(body.get(17..19)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(body.get(19..19 + name_len)?).ok()?;
        let topic = Topic::parse_stored(name).ok()?;
        let rest = body.get(19 + name_len..)?;
        let mut key = None;
        let frame = match kind {
            EVENT => {
                let sse_len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                let sse = rest.get(4..4 + sse_len)?;
                let ws = rest.get(4 + sse_len..)?;
                Frame::from_parts(Bytes::copy_from_slice(sse), Bytes::copy_from_slice(ws))
            }
            DELIVERED | MARKS | SWEPT => Frame::from_parts(Bytes::new(), Bytes::new()),
            KEY => {
                let text = std::str::from_utf8(rest).ok()?;
                if text.is_empty()
                    || text.len() > 255
                    || !text.bytes().all(|b| b.is_ascii_graphic())
                {
                    return None;
                }
                key = Some(text.to_owned());
                Frame::from_parts(Bytes::new(), Bytes::new())
            }
            _ => return None,
        };
        Some(Record {
            kind,
            seq,
            at_ms,
            topic,
            frame,
            key,
        })
    }
}

impl History for DurableHistory {
    fn epoch(&self) -> std::sync::Arc<str> {
        self.memory.epoch()
    }

    fn head(&self) -> Seq {
        self.memory.head()
    }

    fn append(
        &self,
        topic: &Topic,
        encode: &mut dyn FnMut(Seq) -> Frame,
    ) -> Result<(Seq, Frame), HistoryError> {
        let (seq, frame) = self.memory.append(topic, encode)?;
        self.write(EVENT, topic, seq, Some(&frame))
            .map_err(|error| {
                tracing::error!(%error, "cannot write to the event log");
                HistoryError::Unavailable(error.to_string())
            })?;
        Ok((seq, frame))
    }

    fn append_keyed(
        &self,
        topic: &Topic,
        key: &str,
        encode: &mut dyn FnMut(Seq) -> Frame,
    ) -> Result<(Seq, Frame), HistoryError> {
        let (seq, frame) = self.memory.append(topic, encode)?;
        let at_ms = now_ms();
        // One write for both records: a crash keeps the event with its key or neither.
        self.log
            .append_all(2, |n, buf| match n {
                0 => encode_event(buf, topic, seq, at_ms, &frame),
                _ => encode_key(buf, topic, seq, at_ms, key),
            })
            .map_err(|error| {
                tracing::error!(%error, "cannot write to the event log");
                HistoryError::Unavailable(error.to_string())
            })?;
        let mut keys = lock_keys(&self.keys);
        if keys.len() >= MAX_KEYS {
            keys.pop_front();
        }
        keys.push_back(KeptKey {
            at_ms,
            topic: topic.clone(),
            key: key.to_owned(),
            seq,
        });
        Ok((seq, frame))
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn replay(
        &self,
        topic: &Topic,
        after: Seq,
        upto: Seq,
        out: &mut Vec<(Seq, Frame)>,
    ) -> Result<(), Gap> {
        self.memory.replay(topic, after, upto, out)
    }

    fn retained(&self, topic: &Topic, upto: Seq, out: &mut Vec<(Seq, Frame)>) {
        self.memory.retained(topic, upto, out);
    }

    fn latest(&self, topic: &Topic, upto: Seq) -> Option<(Seq, Frame)> {
        self.memory.latest(topic, upto)
    }

    fn take_undelivered(&self, topic: &Topic, upto: Seq, out: &mut Vec<(Seq, Frame)>) -> u64 {
        let lost = self.memory.take_undelivered(topic, upto, out);
        let _ = self.write(DELIVERED, topic, upto, None);
        lost
    }

    fn mark_delivered(&self, topic: &Topic, seq: Seq) {
        self.memory.mark_delivered(topic, seq);
        let _ = self.write(DELIVERED, topic, seq, None);
    }

    fn sweep(&self) {
        self.memory.sweep();
        if let Err(error) = self.compact() {
            tracing::error!(%error, "cannot compact the event log");
        }
    }

    fn size(&self) -> HistorySize {
        self.memory.size()
    }

    fn position(&self, id: &str) -> Position {
        self.memory.position(id)
    }

    fn admits(&self, bytes: usize) -> bool {
        self.memory.admits(bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(capacity: usize) -> Limits {
        Limits {
            capacity,
            ttl: None,
        }
    }

    fn options(limits: Limits) -> Options {
        Options {
            channels: limits,
            users: limits,
            budget: (u64::MAX, u64::MAX),
            fsync: Fsync::Never,
            lock_wait: Duration::ZERO,
            key_window: Duration::from_secs(600),
        }
    }

    fn publish(store: &DurableHistory, name: &str) -> Seq {
        let topic = Topic::parse(name).unwrap();
        store
            .append(&topic, &mut |seq| {
                Frame::from_parts(Bytes::from(format!("id: {seq}\n\n")), Bytes::from("ws"))
            })
            .unwrap()
            .0
    }

    fn seqs(store: &DurableHistory, name: &str, after: Seq) -> Result<Vec<Seq>, Gap> {
        let mut out = Vec::new();
        store.replay(&Topic::parse(name).unwrap(), after, store.head(), &mut out)?;
        Ok(out.into_iter().map(|(s, _)| s).collect())
    }

    fn publish_keyed(store: &DurableHistory, name: &str, key: &str) -> Seq {
        let topic = Topic::parse(name).unwrap();
        store
            .append_keyed(&topic, key, &mut |seq| {
                Frame::from_parts(Bytes::from(format!("id: {seq}\n\n")), Bytes::from("ws"))
            })
            .unwrap()
            .0
    }

    #[test]
    fn keys_come_back_after_a_restart_and_a_compaction_within_their_window() {
        let dir = std::env::temp_dir().join(format!("sluice-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let open = |window: Duration| {
            let options = Options {
                key_window: window,
                ..options(limits(10))
            };
            DurableHistory::open_with(&dir, options, 512).unwrap().0
        };
        let store = open(Duration::from_secs(600));
        let mut published = Vec::new();
        for n in 0..40 {
            published.push((
                format!("k{n}"),
                publish_keyed(&store, "a", &format!("k{n}")),
            ));
            publish(&store, "b");
        }
        assert!(store.compact().unwrap());
        published.push(("after".to_owned(), publish_keyed(&store, "b", "after")));
        drop(store);

        let store = open(Duration::from_secs(600));
        let keys: Vec<(String, Seq)> = store
            .take_keys()
            .into_iter()
            .map(|k| (k.key, k.seq))
            .collect();
        assert_eq!(
            keys, published,
            "every key, once, with its event's seq, oldest first"
        );
        assert!(store.take_keys().is_empty(), "handed out once");
        // Evicted events keep their keys: a retry must not publish again.
        let mut out = Vec::new();
        assert!(store
            .replay(&Topic::parse("a").unwrap(), 0, store.head(), &mut out)
            .is_err());
        drop(store);

        let store = open(Duration::ZERO);
        assert!(
            store.take_keys().is_empty(),
            "keys past the window are not read back"
        );
        drop(store);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_publish_after_every_shard_stopped_is_acknowledged_when_it_is_on_disk() {
        let dir = std::env::temp_dir().join(format!("sluice-stopped-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let settings = crate::hub::Settings {
            shards: 2,
            channel_capacity: 16,
            heartbeat: Duration::from_secs(15),
            idle_timeout: None,
            max_connections: 10,
            retry: Duration::from_secs(3),
            policies: Vec::new(),
            ordered_source: false,
            write_timeout: Duration::from_secs(5),
            queue_bytes: usize::MAX,
        };
        let topic = Topic::parse("news").unwrap();
        let data = crate::hub::Payload::text("late");
        // The shards' inboxes are gone, as after shutdown.
        let memory = Arc::new(MemoryHistory::new(limits(10), limits(10)));
        let (hub, inboxes) = crate::hub::Hub::new(settings.clone(), memory);
        drop(inboxes);
        assert!(matches!(
            hub.publish_event(&topic, None, data),
            Err(crate::hub::HubError::Closed)
        ));
        let store = Arc::new(
            DurableHistory::open_with(&dir, options(limits(10)), 512)
                .unwrap()
                .0,
        );
        let (hub, inboxes) = crate::hub::Hub::new(settings, store.clone());
        drop(inboxes);
        let receipt = hub
            .publish_event_keyed(&topic, None, data, Some("late-1"))
            .unwrap();
        drop((hub, store));
        let store = DurableHistory::open_with(&dir, options(limits(10)), 512)
            .unwrap()
            .0;
        assert_eq!(seqs(&store, "news", 0).unwrap(), vec![receipt.seq]);
        let keys = store.take_keys();
        assert_eq!((keys[0].key.as_str(), keys[0].seq), ("late-1", receipt.seq));
        drop(store);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_held_lock_is_waited_for_then_refused() {
        let dir = std::env::temp_dir().join(format!("sluice-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let open = |wait: Duration| {
            let options = Options {
                lock_wait: wait,
                ..options(limits(10))
            };
            DurableHistory::open_with(&dir, options, 512)
        };
        assert!(!is_locked(&dir));
        let first = open(Duration::ZERO).unwrap().0;
        assert!(is_locked(&dir));
        match open(Duration::from_millis(50)) {
            Err(StoreError::Locked(_, waited)) => assert!(waited >= Duration::from_millis(50)),
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        drop(first);
        assert!(!is_locked(&dir));
        assert!(open(Duration::ZERO).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn compaction_keeps_what_is_retained_and_what_was_evicted() {
        let dir = std::env::temp_dir().join(format!("sluice-compact-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let open = || {
            DurableHistory::open_with(&dir, options(limits(10)), 512)
                .unwrap()
                .0
        };
        let store = open();
        for _ in 0..100 {
            publish(&store, "a");
            publish(&store, "b");
        }
        let before = log::segments(&dir.join("log")).unwrap().len();
        assert!(before > 10, "{before} segments");
        assert!(store.compact().unwrap());
        let after = log::segments(&dir.join("log")).unwrap().len();
        assert_eq!(after, 2, "the snapshot and the current segment");
        let head = store.head();
        let a = seqs(&store, "a", head - 20).unwrap();
        drop(store);

        let store = open();
        assert_eq!(store.head(), head);
        assert_eq!(seqs(&store, "a", head - 20).unwrap(), a);
        assert_eq!(
            seqs(&store, "a", 5),
            Err(Gap::Expired),
            "evicted stays evicted"
        );
        assert_eq!(publish(&store, "a"), head + 1);
        drop(store);
        let _ = fs::remove_dir_all(&dir);
    }
}
