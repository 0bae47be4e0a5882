//! The on-disk log of the durable store: numbered segment files of length- and CRC-framed
//! records, appended by publishers under one mutex, fsynced by a committer thread that covers
//! every write made before it started (group commit), and read back in full at start-up.
//!
//! Knows records and files only; what a record means to the history is `store::mod`'s business.
//!
//! A record on disk is `len: u32 LE | crc32(body): u32 LE | body` with `len` the body's length.
//! A reader that meets a short header, a length past the end of the file, a length above
//! [`MAX_RECORD`] or a CRC mismatch treats the rest of that segment as a torn write: the last
//! segment is truncated there (logged), so appends continue from the last good record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// A segment is closed and a new one started past this size: large enough that rolling is rare,
/// small enough that a torn tail or a corrupt file costs little and start-up reads stream.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Bigger bodies are not records but corruption (an event is capped by the request body limit,
/// far below this).
pub const MAX_RECORD: u32 = 16 * 1024 * 1024;

/// How often `--fsync interval` flushes written records to the device.
pub const FSYNC_INTERVAL: Duration = Duration::from_millis(200);

/// Longest a publish waits for its group commit with `--fsync always`. A healthy device answers
/// in milliseconds; past this the device is failing or stalled, and the publisher gets a 503
/// (its event is written, so a retry with the same idempotency key answers its id).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

const HEADER: usize = 8;

/// When written records are forced to the device (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before a publish is acknowledged, by a group commit shared by every publish waiting.
    Always,
    /// Every [`FSYNC_INTERVAL`]: an acknowledged publish survives a crash of the process at once
    /// and a power loss after the interval.
    Interval,
    /// Left to the operating system: survives a crash of the process, not a power loss.
    Never,
}

impl Fsync {
    /// Reads `always`, `interval` or `never`.
    pub fn parse(text: &str) -> Option<Fsync> {
        match text {
            "always" => Some(Fsync::Always),
            "interval" => Some(Fsync::Interval),
            "never" => Some(Fsync::Never),
            _ => None,
        }
    }
}

struct Writer {
    file: File,
    index: u64,
    bytes: u64,
    /// Bytes written since start, across segments: the position group commits are judged by.
    written: u64,
    buf: Vec<u8>,
}

struct Shared {
    writer: Mutex<Writer>,
    segment_bytes: u64,
    wake: Condvar,
    dir: PathBuf,
    closed: Mutex<bool>,
}

/// The append side of the log. Cloning is shallow.
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
    synced: watch::Receiver<u64>,
    fsync: Fsync,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The path of segment `index` in `dir`.
pub fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:020}.log"))
}

/// The segments in `dir`, oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let index = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(index) = index {
            out.push((index, path));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads every intact record of the segment at `path` into `each`; returns the length of the
/// intact prefix, which is the file's length unless its tail is torn or corrupt.
pub fn read_segment(path: &Path, each: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
    let data = fs::read(path)?;
    let mut at = 0usize;
    while data.len() - at >= HEADER {
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let crc = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        let start = at + HEADER;
        if len > MAX_RECORD || data.len() - start < len as usize {
            break;
        }
        let body = &data[start..start + len as usize];
        if crc32(body) != crc {
            break;
        }
        each(body);
        at = start + len as usize;
    }
    Ok(at as u64)
}

/// Writes one framed record to `out` (a snapshot being built).
pub fn write_record(out: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&crc32(body).to_le_bytes())?;
    out.write_all(body)
}

impl Log {
    /// Opens the log in `dir` for appending after the segment `last` (whose intact length is
    /// `intact`; it is truncated to it), and starts the committer thread `fsync` asks for.
    pub fn open(
        dir: &Path,
        last: Option<(u64, u64)>,
        fsync: Fsync,
        segment_bytes: u64,
    ) -> io::Result<Log> {
        let (index, bytes) = last.unwrap_or((1, 0));
        let path = segment_path(dir, index);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        file.set_len(bytes)?;
        let mut file = file;
        io::Seek::seek(&mut file, io::SeekFrom::Start(bytes))?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer {
                file,
                index,
                bytes,
                written: 0,
                buf: Vec::with_capacity(4096),
            }),
            segment_bytes,
            wake: Condvar::new(),
            dir: dir.to_owned(),
            closed: Mutex::new(false),
        });
        let (tx, synced) = watch::channel(0u64);
        if fsync != Fsync::Never {
            let committer = shared.clone();
            std::thread::Builder::new()
                .name("sluice-fsync".to_owned())
                .spawn(move || commit_loop(&committer, &tx, fsync))?;
        }
        Ok(Log {
            shared,
            synced,
            fsync,
        })
    }

    /// Appends one record (the body built by `body` into the given buffer) with a single
    /// `write` to the operating system, so it survives a crash of this process once this
    /// returns. Returns the log position after it, for [`Log::committed`].
    pub fn append(&self, mut body: impl FnMut(&mut Vec<u8>)) -> io::Result<u64> {
        self.append_all(1, |_, buf| body(buf))
    }

    /// Appends `count` records (record `n`'s body built by `body(n, buf)`) with a single
    /// `write`, so a crash of this process keeps all of them or none. Returns the log position
    /// after the last, for [`Log::committed`].
    pub fn append_all(
        &self,
        count: usize,
        mut body: impl FnMut(usize, &mut Vec<u8>),
    ) -> io::Result<u64> {
        let mut writer = lock(&self.shared.writer);
        let writer = &mut *writer;
        writer.buf.clear();
        for n in 0..count {
            let start = writer.buf.len();
            writer.buf.extend_from_slice(&[0; HEADER]);
            body(n, &mut writer.buf);
            let len = writer.buf.len() - start - HEADER;
            let len32 = u32::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_RECORD)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
            let crc = crc32(&writer.buf[start + HEADER..]);
            writer.buf[start..start + 4].copy_from_slice(&len32.to_le_bytes());
            writer.buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
        }
        if writer.bytes > 0 && writer.bytes + writer.buf.len() as u64 > self.shared.segment_bytes {
            self.next_segment(writer)?;
        }
        if let Err(error) = writer.file.write_all(&writer.buf) {
            // Whatever part of the records reached the file is a torn tail: cut it off, so the
            // next record does not follow garbage.
            let _ = writer.file.set_len(writer.bytes);
            let _ = io::Seek::seek(&mut writer.file, io::SeekFrom::Start(writer.bytes));
            return Err(error);
        }
        writer.bytes += writer.buf.len() as u64;
        writer.written += writer.buf.len() as u64;
        let end = writer.written;
        if self.fsync == Fsync::Always {
            self.shared.wake.notify_one();
        }
        Ok(end)
    }

    fn next_segment(&self, writer: &mut Writer) -> io::Result<()> {
        // The closed segment is made durable before the committer can only see the new one.
        if self.fsync != Fsync::Never {
            writer.file.sync_data()?;
        }
        let index = writer.index + 1;
        writer.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.shared.dir, index))?;
        writer.index = index;
        writer.bytes = 0;
        Ok(())
    }

    /// Closes the current segment (synced) and starts the next; returns the new one's index.
    /// Every record appended before this call is in an earlier segment.
    pub fn roll(&self) -> io::Result<u64> {
        let mut writer = lock(&self.shared.writer);
        self.next_segment(&mut writer)?;
        Ok(writer.index)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The log position after everything written so far.
    pub fn position(&self) -> u64 {
        lock(&self.shared.writer).written
    }

    /// Waits until the record that ended at `end` is as durable as `--fsync` promises before
    /// an acknowledgement: on the device with `always`, at once otherwise. `false` if the
    /// device did not confirm it within [`COMMIT_TIMEOUT`].
    pub async fn committed(&self, end: u64) -> bool {
        if self.fsync != Fsync::Always {
            return true;
        }
        let mut synced = self.synced.clone();
        let outcome = tokio::time::timeout(COMMIT_TIMEOUT, synced.wait_for(|s| *s >= end)).await;
        matches!(outcome, Ok(Ok(_)))
    }

    /// Forces everything written so far to the device, whatever `--fsync` says: the last word
    /// of a process that exits.
    pub fn sync(&self) -> io::Result<()> {
        lock(&self.shared.writer).file.sync_data()
    }

    /// Stops the committer after a last fsync.
    pub fn close(&self) {
        *lock(&self.shared.closed) = true;
        self.shared.wake.notify_one();
    }
}

/// The committer: fsyncs whatever was written since the last fsync, then tells the waiting
/// publishers how far the device has it. With `always` it runs again as soon as something new
/// was written, so every publish that arrived during one fsync shares the next one.
fn commit_loop(shared: &Shared, synced: &watch::Sender<u64>, fsync: Fsync) {
    loop {
        let (file, target) = {
            let mut writer = lock(&shared.writer);
            loop {
                let closed = *lock(&shared.closed);
                if writer.written > *synced.borrow() || closed {
                    break;
                }
                let wait = match fsync {
                    Fsync::Always => Duration::from_millis(100),
                    _ => FSYNC_INTERVAL,
                };
                writer = shared
                    .wake
                    .wait_timeout(writer, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            (writer.file.try_clone(), writer.written)
        };
        match file.and_then(|f| f.sync_data()) {
            Ok(()) => {
                synced.send_replace(target);
            }
            Err(error) => tracing::error!(%error, "cannot fsync the event log"),
        }
        if *lock(&shared.closed) {
            return;
        }
        if fsync == Fsync::Interval {
            std::thread::sleep(FSYNC_INTERVAL);
        }
    }
}

/// CRC-32 (IEEE 802.3, the zlib polynomial), table-driven.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc = CRC_TABLE[((crc ^ u32::from(*byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("sluice-log-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let log = Log::open(&dir, None, Fsync::Never, SEGMENT_BYTES).unwrap();
        for n in 0..3u8 {
            log.append(|buf| buf.extend_from_slice(&[n; 10])).unwrap();
        }
        let (_, path) = segments(&dir).unwrap().pop().unwrap();
        let full = fs::metadata(&path).unwrap().len();
        assert_eq!(full, 3 * 18);
        // Tear the last record in half.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 5)
            .unwrap();
        let mut bodies = Vec::new();
        let intact = read_segment(&path, &mut |b| bodies.push(b.to_vec())).unwrap();
        assert_eq!(intact, 2 * 18);
        assert_eq!(bodies, vec![vec![0u8; 10], vec![1u8; 10]]);
        // A flipped byte fails its CRC.
        let mut data = fs::read(&path).unwrap();
        data[HEADER + 18] ^= 1;
        fs::write(&path, &data).unwrap();
        let mut count = 0;
        assert_eq!(read_segment(&path, &mut |_| count += 1).unwrap(), 18);
        assert_eq!(count, 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
