//! SSE events and their wire encoding (WHATWG HTML, "Server-sent events", the event stream format).
//!
//! Owns the validated field newtypes ([`EventName`], [`EventId`]) and the encoder that turns one
//! event into one immutable [`Bytes`] frame. A frame is built once per published event and then
//! shared by every subscriber, so this module is the only place that formats the wire protocol.
//! No IO, no hyper, no knowledge of connections.
//!
//! Encoding rules:
//! - every line ends in a single `\n`; an event ends with an empty line;
//! - any CR, LF or CRLF inside `data` starts a new `data:` line, so every payload round-trips;
//! - `event` and `id` values may not contain CR, LF or NUL (a NUL makes browsers ignore the id);
//!   the newtypes refuse them, so a malformed value can never reach the wire.

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// Longest accepted event name, in bytes. Names are routing labels that every frame repeats;
/// anything longer is a client bug, not a name.
pub const MAX_EVENT_NAME_LEN: usize = 128;

/// Longest accepted event id, in bytes. Browsers echo the id back in `Last-Event-ID` on every
/// reconnect, so it has to stay well inside header size limits.
pub const MAX_EVENT_ID_LEN: usize = 256;

/// Why a field value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldError {
    /// The value is empty.
    Empty,
    /// The value is longer than the field's limit.
    TooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// The value contains CR, LF or NUL, which would break the framing.
    ForbiddenChar,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Empty => f.write_str("must not be empty"),
            FieldError::TooLong { max } => write!(f, "must be at most {max} bytes"),
            FieldError::ForbiddenChar => f.write_str("must not contain CR, LF or NUL"),
        }
    }
}

impl std::error::Error for FieldError {}

fn check_field(value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::Empty);
    }
    if value.len() > max {
        return Err(FieldError::TooLong { max });
    }
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        return Err(FieldError::ForbiddenChar);
    }
    Ok(())
}

/// The `event:` field: the type a client's `addEventListener` listens for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventName(String);

impl EventName {
    /// Validates a name coming from outside (a publisher).
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        check_field(value, MAX_EVENT_NAME_LEN)?;
        Ok(EventName(value.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `id:` field: what a browser sends back as `Last-Event-ID` when it reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    /// Validates an id coming from outside (a publisher or a reconnecting client).
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        check_field(value, MAX_EVENT_ID_LEN)?;
        Ok(EventId(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One event, borrowed, ready to be encoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Event<'a> {
    /// `event:` field; `None` means the client sees a plain `message` event.
    pub name: Option<&'a EventName>,
    /// `id:` field.
    pub id: Option<&'a EventId>,
    /// `retry:` field: the reconnection delay the client should use from now on.
    pub retry: Option<Duration>,
    /// The payload; may contain any line breaks.
    pub data: &'a str,
}

impl Event<'_> {
    /// Encodes the event into a frame that ends with the blank line that dispatches it.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut buf);
        buf.freeze()
    }

    /// Appends the encoded event to `buf`.
    pub fn encode_into(&self, buf: &mut BytesMut) {
        if let Some(name) = self.name {
            put_field(buf, b"event", name.as_str());
        }
        if let Some(id) = self.id {
            put_field(buf, b"id", id.as_str());
        }
        if let Some(retry) = self.retry {
            put_retry(buf, retry);
        }
        put_multiline(buf, b"data", self.data);
        buf.put_u8(b'\n');
    }

    fn encoded_len_hint(&self) -> usize {
        let fields = self.name.map_or(0, |n| n.as_str().len() + 8)
            + self.id.map_or(0, |i| i.as_str().len() + 5)
            + self.retry.map_or(0, |_| 20);
        // "data: " + "\n" per line; most payloads are one line.
        fields + self.data.len() + 8 + 1
    }
}

/// A comment frame (`: text`), which clients ignore: used for heartbeats that keep proxies and
/// NAT tables from closing an idle stream without firing any client handler.
pub fn comment(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 4);
    if text.is_empty() {
        buf.put_slice(b":\n");
    } else {
        for line in split_lines(text) {
            buf.put_slice(b": ");
            buf.put_slice(line.as_bytes());
            buf.put_u8(b'\n');
        }
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// A frame that only sets the client's last event id (`id: <id>` and a blank line). The spec
/// updates the last event id before it checks for data, so this moves a client's resume point
/// without firing any handler.
pub fn id_only(id: &EventId) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.as_str().len() + 6);
    put_field(&mut buf, b"id", id.as_str());
    buf.put_u8(b'\n');
    buf.freeze()
}

/// A frame that only sets the client's reconnection delay.
pub fn retry(delay: Duration) -> Bytes {
    let mut buf = BytesMut::with_capacity(24);
    put_retry(&mut buf, delay);
    buf.put_u8(b'\n');
    buf.freeze()
}

fn put_field(buf: &mut BytesMut, name: &[u8], value: &str) {
    buf.put_slice(name);
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

fn put_retry(buf: &mut BytesMut, delay: Duration) {
    let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    buf.put_slice(b"retry: ");
    let mut digits = itoa_buf(millis);
    buf.put_slice(digits.as_bytes_mut());
    buf.put_u8(b'\n');
}

fn put_multiline(buf: &mut BytesMut, name: &[u8], value: &str) {
    for line in split_lines(value) {
        buf.put_slice(name);
        if line.is_empty() {
            buf.put_u8(b':');
        } else {
            buf.put_slice(b": ");
            buf.put_slice(line.as_bytes());
        }
        buf.put_u8(b'\n');
    }
}

/// Splits on CRLF, CR or LF, the three line endings of the event stream format. An empty input
/// yields one empty line, so an event with empty data is still dispatched.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(at) => {
                let after = if current[at..].starts_with("\r\n") {
                    at + 2
                } else {
                    at + 1
                };
                rest = Some(&current[after..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// A small stack buffer for formatting an integer without going through `fmt`.
struct Digits {
    bytes: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

fn itoa_buf(mut value: u64) -> Digits {
    let mut bytes = [0u8; 20];
    let mut start = bytes.len();
    loop {
        start -= 1;
        bytes[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    Digits { bytes, start }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(frame: &Bytes) -> &str {
        std::str::from_utf8(frame).unwrap()
    }

    #[test]
    fn encodes_all_fields_in_order() {
        let name = EventName::parse("notification").unwrap();
        let id = EventId::parse("7-42").unwrap();
        let frame = Event {
            name: Some(&name),
            id: Some(&id),
            retry: Some(Duration::from_millis(2500)),
            data: r#"{"message":"hi"}"#,
        }
        .encode();
        assert_eq!(
            text(&frame),
            "event: notification\nid: 7-42\nretry: 2500\ndata: {\"message\":\"hi\"}\n\n"
        );
    }

    #[test]
    fn plain_data_event() {
        let frame = Event {
            data: "hello",
            ..Event::default()
        }
        .encode();
        assert_eq!(text(&frame), "data: hello\n\n");
    }

    #[test]
    fn every_line_break_starts_a_data_line() {
        let frame = Event {
            data: "a\nb\r\nc\rd",
            ..Event::default()
        }
        .encode();
        assert_eq!(text(&frame), "data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn empty_and_trailing_lines_are_kept() {
        let empty = Event::default().encode();
        assert_eq!(text(&empty), "data:\n\n");
        let trailing = Event {
            data: "x\n",
            ..Event::default()
        }
        .encode();
        assert_eq!(text(&trailing), "data: x\ndata:\n\n");
        let blank_middle = Event {
            data: "x\n\ny",
            ..Event::default()
        }
        .encode();
        assert_eq!(text(&blank_middle), "data: x\ndata:\ndata: y\n\n");
    }

    #[test]
    fn leading_space_in_data_survives() {
        // The parser strips exactly one space after the colon, so "  x" must be written as
        // "data:   x" to come back as "  x".
        let frame = Event {
            data: "  x",
            ..Event::default()
        }
        .encode();
        assert_eq!(text(&frame), "data:   x\n\n");
    }

    #[test]
    fn comments_and_retry_frames() {
        assert_eq!(text(&comment("heartbeat")), ": heartbeat\n\n");
        assert_eq!(text(&comment("")), ":\n\n");
        assert_eq!(text(&comment("a\nb")), ": a\n: b\n\n");
        assert_eq!(text(&retry(Duration::from_secs(3))), "retry: 3000\n\n");
        assert_eq!(text(&retry(Duration::ZERO)), "retry: 0\n\n");
        let id = EventId::parse("e-9").unwrap();
        assert_eq!(text(&id_only(&id)), "id: e-9\n\n");
    }

    #[test]
    fn field_values_are_validated() {
        assert_eq!(EventName::parse(""), Err(FieldError::Empty));
        assert_eq!(EventName::parse("a\nb"), Err(FieldError::ForbiddenChar));
        assert_eq!(EventName::parse("a\rb"), Err(FieldError::ForbiddenChar));
        assert_eq!(EventId::parse("1\0"), Err(FieldError::ForbiddenChar));
        assert_eq!(
            EventId::parse(&"x".repeat(MAX_EVENT_ID_LEN + 1)),
            Err(FieldError::TooLong {
                max: MAX_EVENT_ID_LEN
            })
        );
        assert!(EventName::parse("user.updated:v2").is_ok());
        assert!(EventId::parse(&"x".repeat(MAX_EVENT_ID_LEN)).is_ok());
    }

    #[test]
    fn digits() {
        for n in [0u64, 7, 10, 999, 1_000_000, u64::MAX] {
            assert_eq!(itoa_buf(n).as_bytes_mut(), n.to_string().as_bytes());
        }
    }
}
