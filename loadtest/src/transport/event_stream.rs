//! The `text/event-stream` format as the HTML standard defines it, parsed incrementally from
//! bytes that arrive in arbitrary pieces: lines end in CRLF, LF or CR (a CR at the end of one read
//! and an LF at the start of the next are one line end); `:` lines are comments; `data` lines of
//! one event are joined with LF; `id` sets the last event id (unless it holds a NUL) and keeps it
//! across events; `retry` takes ASCII digits only; a blank line ends the event; a leading BOM is
//! skipped.
//!
//! Every blank line that ends a block with at least one field is handed to the caller as a
//! [`Block`], with `data: None` when the block had no `data` field (the standard does not fire
//! such a block, but it still moves the last event id, which Sluice's id-only position frame
//! relies on). No IO, no allocation per event once the buffers have grown.

use std::time::Duration;

/// Longest line (or joined data) accepted before the stream is declared broken.
pub const MAX_LINE: usize = 1024 * 1024;

/// One finished block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    /// The `event` field (empty: the default, `message`).
    pub event: &'a [u8],
    /// The joined `data` lines, without the final LF; `None` when no `data` field came.
    pub data: Option<&'a [u8]>,
    /// The last event id after this block (it persists across blocks).
    pub id: &'a [u8],
    /// This block had an `id` field.
    pub has_id: bool,
}

/// A line or an event's data outgrew [`MAX_LINE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an event-stream line or event is longer than {MAX_LINE} bytes"
        )
    }
}

impl std::error::Error for TooLong {}

/// The parser's state between reads.
#[derive(Debug, Default)]
pub struct EventStream {
    /// An unfinished line carried over from the previous read.
    line: Vec<u8>,
    /// The previous read ended in CR: an LF first in the next read ends nothing.
    after_cr: bool,
    /// Whether the first bytes (and a BOM among them) are behind us.
    started: bool,
    data: Vec<u8>,
    has_data: bool,
    event: Vec<u8>,
    id: Vec<u8>,
    has_id: bool,
    /// Any field seen in the current block.
    fields: bool,
    retry: Option<u64>,
}

impl EventStream {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        EventStream::default()
    }

    /// A parser whose last event id starts as `id` (what a reconnecting `EventSource` has).
    pub fn with_last_event_id(id: &[u8]) -> Self {
        EventStream {
            id: id.to_vec(),
            ..EventStream::default()
        }
    }

    /// The reconnection time the stream last asked for (`retry:`), if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry.map(Duration::from_millis)
    }

    /// The last event id (empty: none yet).
    pub fn last_event_id(&self) -> &[u8] {
        &self.id
    }

    /// Parses `input`; calls `on_block` for each block that ends in it.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_block: impl FnMut(Block<'_>),
    ) -> Result<(), TooLong> {
        if !self.started {
            // A BOM may be split over reads; wait for three bytes or a line end.
            if self.line.len() + input.len() < 3 && memchr::memchr2(b'\n', b'\r', input).is_none() {
                self.line.extend_from_slice(input);
                return Ok(());
            }
            self.started = true;
            if !self.line.is_empty() {
                let mut head = std::mem::take(&mut self.line);
                head.extend_from_slice(input);
                let result = self.feed_started(strip_bom(&head), &mut on_block);
                return result;
            }
            input = strip_bom(input);
        }
        self.feed_started(input, &mut on_block)
    }

    fn feed_started(
        &mut self,
        mut input: &[u8],
        on_block: &mut impl FnMut(Block<'_>),
    ) -> Result<(), TooLong> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', input) {
            let (line, rest) = (&input[..end], &input[end..]);
            if self.line.is_empty() {
                self.on_line(line, on_block)?;
            } else {
                let mut carried = std::mem::take(&mut self.line);
                carried.extend_from_slice(line);
                let result = self.on_line(&carried, on_block);
                carried.clear();
                self.line = carried;
                result?;
            }
            input = match rest {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, tail @ ..] => tail,
                [] => &[],
            };
        }
        self.line.extend_from_slice(input);
        if self.line.len() > MAX_LINE {
            return Err(TooLong);
        }
        Ok(())
    }

    fn on_line(
        &mut self,
        line: &[u8],
        on_block: &mut impl FnMut(Block<'_>),
    ) -> Result<(), TooLong> {
        if line.is_empty() {
            if self.fields {
                if self.has_data {
                    // The standard removes the LF the last data line added.
                    self.data.pop();
                }
                on_block(Block {
                    event: &self.event,
                    data: self.has_data.then_some(&self.data[..]),
                    id: &self.id,
                    has_id: self.has_id,
                });
            }
            self.data.clear();
            self.event.clear();
            self.has_data = false;
            self.has_id = false;
            self.fields = false;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
                if self.data.len() > MAX_LINE {
                    return Err(TooLong);
                }
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.id.clear();
                self.id.extend_from_slice(value);
                self.has_id = true;
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .or(self.retry);
            }
            _ => return Ok(()),
        }
        self.fields = true;
        Ok(())
    }
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event, data, id) of every block, feeding `wire` in pieces of `piece` bytes.
    fn blocks(wire: &[u8], piece: usize) -> (Vec<(String, Option<String>, String)>, EventStream) {
        let mut parser = EventStream::new();
        let mut out = Vec::new();
        for part in wire.chunks(piece) {
            parser
                .feed(part, |b| {
                    let text = |x: &[u8]| String::from_utf8_lossy(x).into_owned();
                    out.push((text(b.event), b.data.map(text), text(b.id)));
                })
                .expect("within limits");
        }
        (out, parser)
    }

    fn owned(event: &str, data: Option<&str>, id: &str) -> (String, Option<String>, String) {
        (event.into(), data.map(Into::into), id.into())
    }

    #[test]
    fn every_line_end_and_every_split() {
        let variants: [&[u8]; 3] = [
            b"\xEF\xBB\xBF: hi\nid: 1\ndata: a\ndata:b\n\nevent: x\ndata\n\nretry: 250\nid: 2\n\n",
            b"\xEF\xBB\xBF: hi\r\nid: 1\r\ndata: a\r\ndata:b\r\n\r\nevent: x\r\ndata\r\n\r\nretry: 250\r\nid: 2\r\n\r\n",
            b"\xEF\xBB\xBF: hi\rid: 1\rdata: a\rdata:b\r\revent: x\rdata\r\rretry: 250\rid: 2\r\r",
        ];
        for wire in variants {
            for piece in 1..=wire.len() {
                let (seen, parser) = blocks(wire, piece);
                assert_eq!(
                    seen,
                    [
                        owned("", Some("a\nb"), "1"),
                        owned("x", Some(""), "1"),
                        owned("", None, "2"),
                    ],
                    "piece {piece} of {:?}",
                    String::from_utf8_lossy(wire)
                );
                assert_eq!(parser.retry(), Some(Duration::from_millis(250)));
                assert_eq!(parser.last_event_id(), b"2");
            }
        }
    }

    #[test]
    fn odd_fields_are_ignored_as_the_standard_says() {
        let wire = b"retry: 1s\nretry:\nid: a\0b\nfoo: bar\n\ndata:  two spaces\nid\n\n: only a comment\n\n";
        let (seen, parser) = blocks(wire, 7);
        // The first block has only ignored fields: nothing is handed out.
        assert_eq!(seen, [owned("", Some(" two spaces"), "")]);
        assert_eq!(parser.retry(), None);
    }

    #[test]
    fn lines_too_long_are_refused() {
        let mut parser = EventStream::new();
        let long = vec![b'x'; MAX_LINE + 1];
        assert_eq!(parser.feed(&long, |_| {}), Err(TooLong));
    }
}
