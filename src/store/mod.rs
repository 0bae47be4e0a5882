//! The durable embedded store (`--data-dir`): channel history and users' queues kept on disk in
//! an append-only log ([`log`]) and in memory ([`MemoryHistory`]) for reading, so a restart on
//! the same directory continues the same epoch and ids, and a client resuming after a crash or a
//! deploy gets exactly what it missed.
//!
//! Disk is the truth: every publish is written to the log (one `write` to the operating system)
//! before it is acknowledged, and the log is read back at start-up through the same retention
//! rules as a publish. Memory holds what those rules retain, so reads never touch the disk.
//!
//! The directory holds `lock` (held with an exclusive `flock` for the life of the process, so a
//! second process on the same directory is refused), `epoch` (the epoch of every id this
//! directory handed out) and `log/` (the segments). Knows nothing of HTTP or of the shards.

pub mod log;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// Closed segments that trigger a compaction: the log is rewritten as one snapshot of what
/// memory retains, so disk use stays near what the retention rules keep (plus at most this many
/// segments of appends) however long the process runs.
pub const COMPACT_AFTER_SEGMENTS: usize = 2;

/// Why a data directory cannot be opened.
#[derive(Debug)]
pub enum StoreError {
    /// Another process holds the directory's lock.
    Locked(PathBuf),
    /// The directory or a file in it cannot be read or written.
    Io(PathBuf, io::Error),
    /// The epoch file holds something this store never wrote.
    BadEpoch(PathBuf),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked(dir) => write!(
                f,
                "data directory {} is in use by another sluice process",
                dir.display()
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
    /// How long reading the log took.
    pub took: Duration,
}

/// The durable history: the memory rings, and the log that makes them survive a restart.
pub struct DurableHistory {
    memory: Arc<MemoryHistory>,
    log: Log,
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

impl DurableHistory {
    /// Opens (or creates) the store in `dir`: takes its lock, reads its epoch and its log back
    /// into memory (cutting off a torn tail), and opens the log for appending.
    ///
    /// `budget` is the memory budget of what is retained (bytes, and the largest single event):
    /// what it evicts from memory is gone for resumes, as in the memory store.
    pub fn open(
        dir: &Path,
        channels: Limits,
        users: Limits,
        budget: (u64, u64),
        fsync: Fsync,
    ) -> Result<(DurableHistory, Recovered), StoreError> {
        Self::open_with(dir, channels, users, budget, fsync, log::SEGMENT_BYTES)
    }

    fn open_with(
        dir: &Path,
        channels: Limits,
        users: Limits,
        (budget, max_event): (u64, u64),
        fsync: Fsync,
        segment_bytes: u64,
    ) -> Result<(DurableHistory, Recovered), StoreError> {
        let started = Instant::now();
        let logs = dir.join("log");
        fs::create_dir_all(&logs).map_err(io_at(&logs))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_owned())),
            Err(fs::TryLockError::Error(error)) => return Err(StoreError::Io(lock_path, error)),
        }
        // A compaction that crashed before its rename left a partial snapshot: never read.
        let _ = fs::remove_file(logs.join(SNAPSHOT_TEMP));
        let epoch = read_or_create_epoch(dir)?;
        let memory = Arc::new(
            MemoryHistory::with_epoch(epoch, channels, users).with_budget(budget, max_event),
        );

        let mut recovered = Recovered::default();
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
                    _ => memory.mark_delivered(&record.topic, record.seq),
                }
            }
            last = Some((index, intact));
        }
        let log = Log::open(&logs, last, fsync, segment_bytes).map_err(io_at(&logs))?;
        recovered.took = started.elapsed();
        Ok((
            DurableHistory {
                memory,
                log,
                _lock: lock,
            },
            recovered,
        ))
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
        let frame = match kind {
            EVENT => {
                let sse_len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                let sse = rest.get(4..4 + sse_len)?;
                let ws = rest.get(4 + sse_len..)?;
                Frame::from_parts(Bytes::copy_from_slice(sse), Bytes::copy_from_slice(ws))
            }
            DELIVERED | MARKS | SWEPT => Frame::from_parts(Bytes::new(), Bytes::new()),
            _ => return None,
        };
        Some(Record {
            kind,
            seq,
            at_ms,
            topic,
            frame,
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

    #[test]
    fn compaction_keeps_what_is_retained_and_what_was_evicted() {
        let dir = std::env::temp_dir().join(format!("sluice-compact-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let open = || {
            DurableHistory::open_with(
                &dir,
                limits(10),
                limits(10),
                (u64::MAX, u64::MAX),
                Fsync::Never,
                512,
            )
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
