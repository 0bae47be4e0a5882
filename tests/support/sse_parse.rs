//! Incremental parser for the `text/event-stream` wire format.
//!
//! This module owns *parsing* the Server-Sent Events wire format, and only
//! that: it turns bytes into [`Item`]s. It does no IO and knows nothing about
//! hyper, sockets or runtimes; callers feed it whatever byte chunks they
//! receive. The server never parses streams, so this is the tests' own: the
//! harness ([`super::sse`]) reads every stream with it. Its unit tests are
//! `tests/sse_parser.rs`.
//!
//! It follows the WHATWG HTML Standard, section 9.2.6 "Interpreting an event
//! stream":
//!
//! * One leading UTF-8 byte order mark is stripped at the start of the stream
//!   (only there; a BOM anywhere else is ordinary content).
//! * Lines end with CRLF, LF, or CR. A CR at the end of one chunk followed by
//!   an LF at the start of the next is one line ending, not two.
//! * Each complete line is decoded as UTF-8 lossily (invalid sequences become
//!   U+FFFD). The parser works on bytes until a line is complete, so chunks
//!   may split multi-byte characters anywhere.
//! * An empty line dispatches the pending event (if its data buffer is not
//!   empty), then resets the data and event type buffers. The last event ID
//!   buffer persists across events.
//! * A line starting with `:` is a comment. Otherwise the line is split at its
//!   first `:` into field name and value (one leading space is removed from
//!   the value); a line without a colon is a field name with an empty value.
//! * Fields `event`, `data`, `id` (ignored if the value contains U+0000) and
//!   `retry` (only if the value is ASCII digits) are processed; any other
//!   field is ignored.
//! * At the end of input, an event without its terminating blank line is not
//!   dispatched, and an unterminated final line is discarded.
//!
//! Unlike a browser, the parser also reports comments ([`Item::Comment`]) and
//! valid `retry` fields ([`Item::Retry`]) so tests can observe them.
//!
//! Memory is bounded per line by [`MAX_LINE_LEN`]; see its documentation for
//! what happens to longer lines.

use std::mem;

/// Longest line, in bytes and excluding its line ending, that the parser
/// will buffer: 1 MiB.
///
/// A line longer than this is discarded in its entirety: the bytes buffered
/// so far are released, the rest of the line is skipped without buffering,
/// and once its line ending arrives the parser continues with the next line
/// as if the overlong line had never been sent. In particular a discarded
/// line is neither processed as a field nor treated as the empty line that
/// dispatches an event, so the surrounding event is still dispatched
/// normally (without the overlong line's contribution).
pub const MAX_LINE_LEN: usize = 1024 * 1024;

/// Line buffers whose capacity grew beyond this are released after each
/// line instead of being reused, so one long line does not pin a large
/// allocation for the rest of a (possibly long-lived) stream.
pub(crate) const RETAIN_LINE_CAPACITY: usize = 64 * 1024;

/// The UTF-8 encoding of U+FEFF BYTE ORDER MARK.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One item produced by the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event.
    Event(Message),
    /// A comment line (text after the leading ':' with at most one leading space removed).
    Comment(String),
    /// A valid `retry:` field (all ASCII digits), in milliseconds.
    ///
    /// Values too large for a `u64` saturate to `u64::MAX`.
    Retry(u64),
}

/// An event dispatched by a blank line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Event type; "message" when no `event:` field was given.
    pub event: String,
    /// Data buffer with the final trailing LF removed (lines joined with '\n').
    pub data: String,
    /// The `id:` value set inside this event's block, if any (None if the block had no valid id field).
    pub id: Option<String>,
    /// The parser's last-event-id buffer at dispatch time (persists across events, per spec).
    pub last_event_id: String,
}

/// Incremental, spec-conformant event stream parser.
///
/// Feed it byte chunks of any size with [`Parser::feed`]; completed items are
/// appended to the caller's vector in stream order. One parser reads one
/// stream: create a fresh parser (or a new one per connection) for each
/// stream, since the byte order mark is only recognised at the very start.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the line being assembled, without its line ending. (Crate-visible for the
    /// unit tests in `tests/sse_parser.rs`, which check its capacity.)
    pub(crate) line: Vec<u8>,
    /// Whether the stream-start BOM check has finished.
    started: bool,
    /// How many leading BOM bytes have been matched while not `started`.
    bom_matched: usize,
    /// The last byte seen ended a line with CR, so an LF arriving next is
    /// the second half of a CRLF and must be skipped.
    after_cr: bool,
    /// The current line exceeded [`MAX_LINE_LEN`] and is being skipped. (Crate-visible for
    /// the unit tests.)
    pub(crate) discarding: bool,
    /// The data buffer.
    data: String,
    /// The event type buffer.
    event_type: String,
    /// The value of a valid `id` field seen in the current block, if any.
    block_id: Option<String>,
    /// The last event ID buffer.
    last_event_id: String,
    /// The event source's "last event ID string": the buffer's value as of
    /// the most recent empty line.
    last_event_id_string: String,
    /// The reconnection time set by the last valid `retry` field.
    retry: Option<u64>,
}

impl Parser {
    /// Creates a parser positioned at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed a chunk of bytes (any split, even mid-line, mid-CRLF or mid-UTF-8 char); append completed items to `out`.
    ///
    /// Items are appended in stream order. Bytes of an incomplete final line
    /// are buffered until a later chunk completes it.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        let rest = if self.started {
            chunk
        } else {
            self.skip_bom(chunk, out)
        };
        self.feed_lines(rest, out);
    }

    /// Convenience: parse a complete byte string into items.
    ///
    /// As the spec requires, a trailing event that is not followed by an
    /// empty line is not dispatched, and an unterminated last line is
    /// discarded.
    #[must_use]
    pub fn parse_all(bytes: &[u8]) -> Vec<Item> {
        let mut parser = Self::new();
        let mut out = Vec::new();
        parser.feed(bytes, &mut out);
        out
    }

    /// Current last-event-id buffer.
    ///
    /// This reflects every valid `id` field processed so far, including one
    /// in an event block whose terminating empty line has not arrived yet.
    /// See [`Parser::last_event_id_string`] for the value a reconnecting
    /// client sends.
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The spec's "last event ID string" of the event source: the last event
    /// ID buffer as of the most recent empty line.
    ///
    /// This is the value a reconnecting client sends in `Last-Event-ID`. It
    /// differs from [`Parser::last_event_id`] only while an `id` field has
    /// been read in a block that has not yet been ended by an empty line.
    #[must_use]
    pub fn last_event_id_string(&self) -> &str {
        &self.last_event_id_string
    }

    /// Reconnection time set by the last valid retry field.
    #[must_use]
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Consumes a leading byte order mark, possibly split across chunks.
    ///
    /// Returns the part of `chunk` that remains to be parsed as lines. If
    /// the stream turns out not to start with a BOM, the BOM prefix bytes
    /// matched so far are parsed as ordinary content first.
    fn skip_bom<'a>(&mut self, mut chunk: &'a [u8], out: &mut Vec<Item>) -> &'a [u8] {
        while let Some((&byte, tail)) = chunk.split_first() {
            if BOM.get(self.bom_matched) == Some(&byte) {
                self.bom_matched += 1;
                chunk = tail;
                if self.bom_matched == BOM.len() {
                    self.started = true;
                    return chunk;
                }
            } else {
                self.started = true;
                let matched = self.bom_matched;
                if let Some(prefix) = BOM.get(..matched) {
                    self.feed_lines(prefix, out);
                }
                return chunk;
            }
        }
        chunk
    }

    /// Splits `chunk` into lines, processing each completed line.
    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut Vec<Item>) {
        if self.after_cr {
            if let Some((&first, tail)) = chunk.split_first() {
                self.after_cr = false;
                if first == b'\n' {
                    chunk = tail;
                }
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (content, rest) = chunk.split_at(pos);
            self.append(content);
            match rest {
                [b'\r', b'\n', tail @ ..] => chunk = tail,
                [b'\r'] => {
                    // The LF of a CRLF may arrive in the next chunk.
                    self.after_cr = true;
                    chunk = &[];
                }
                [_, tail @ ..] => chunk = tail,
                [] => chunk = &[],
            }
            self.finish_line(out);
        }
        self.append(chunk);
    }

    /// Appends bytes to the current line, enforcing [`MAX_LINE_LEN`].
    fn append(&mut self, bytes: &[u8]) {
        if self.discarding || bytes.is_empty() {
            return;
        }
        if bytes.len() > MAX_LINE_LEN - self.line.len() {
            self.discarding = true;
            self.line = Vec::new();
            return;
        }
        // Grow geometrically, but never beyond the cap, so the allocation
        // stays within MAX_LINE_LEN even though the length does.
        let needed = self.line.len() + bytes.len();
        if needed > self.line.capacity() {
            let target = needed
                .max(self.line.capacity().saturating_mul(2))
                .min(MAX_LINE_LEN);
            self.line.reserve_exact(target - self.line.len());
        }
        self.line.extend_from_slice(bytes);
    }

    /// Handles the end of the current line.
    fn finish_line(&mut self, out: &mut Vec<Item>) {
        if mem::take(&mut self.discarding) {
            return;
        }
        let mut line = mem::take(&mut self.line);
        self.process_line(&line, out);
        if line.capacity() <= RETAIN_LINE_CAPACITY {
            line.clear();
            self.line = line;
        }
    }

    /// Processes one complete line (without its line ending).
    fn process_line(&mut self, line: &[u8], out: &mut Vec<Item>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(comment) = line.strip_prefix(b":") {
            let text = strip_one_space(comment);
            out.push(Item::Comment(lossy(text)));
            return;
        }
        // ':' and ' ' are ASCII, so splitting the raw bytes and decoding each
        // part equals decoding the line first and splitting the string.
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let (name, rest) = line.split_at(colon);
                (name, strip_one_space(rest.get(1..).unwrap_or_default()))
            }
            None => (line, &[][..]),
        };
        match name {
            b"event" => self.event_type = lossy(value),
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            // A value containing U+0000 NULL is ignored.
            b"id" if !value.contains(&0) => {
                let id = lossy(value);
                self.last_event_id.clone_from(&id);
                self.block_id = Some(id);
            }
            // Only nonempty all-ASCII-digit values are valid.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let millis = value.iter().fold(0u64, |acc, &digit| {
                    acc.saturating_mul(10)
                        .saturating_add(u64::from(digit - b'0'))
                });
                self.retry = Some(millis);
                out.push(Item::Retry(millis));
            }
            _ => {}
        }
    }

    /// Runs the spec's "dispatch the event" steps for an empty line.
    fn dispatch(&mut self, out: &mut Vec<Item>) {
        if self.last_event_id_string != self.last_event_id {
            self.last_event_id_string.clone_from(&self.last_event_id);
        }
        let id = self.block_id.take();
        let event_type = mem::take(&mut self.event_type);
        if self.data.is_empty() {
            return;
        }
        let mut data = mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event = if event_type.is_empty() {
            String::from("message")
        } else {
            event_type
        };
        out.push(Item::Event(Message {
            event,
            data,
            id,
            last_event_id: self.last_event_id.clone(),
        }));
    }
}

/// Removes a single leading U+0020 SPACE, if present.
fn strip_one_space(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b" ").unwrap_or(bytes)
}

/// Decodes bytes as UTF-8, replacing invalid sequences with U+FFFD.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
