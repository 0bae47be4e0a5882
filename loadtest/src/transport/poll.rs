//! The long-polling client: `GET /poll?channel=&since=<id>` in a loop on one keep-alive
//! HTTP/1.1 connection, each answer's `events` scanned for deliveries and its `"next"` used as
//! the following `since`.
//!
//! The first request asks for everything after the primer event the run published before any
//! connection opened, so a poller is ready as soon as its TCP connection is up: nothing published
//! later can slip past it. Its connect time is therefore the TCP connect time. Every request's
//! bytes and every response's head count as wire bytes.

use std::io::ErrorKind;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{record, stopped, Conn, End, SessionError, State, Thread, READY_TIMEOUT};
use crate::http1::{find, parse_head, Dechunker, Framing, Head};
use crate::scan;

/// Largest response head or body accepted.
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// One response being read.
struct Response {
    head: Option<Head>,
    dechunker: Dechunker,
    /// Bytes of the head (and whatever came with it).
    head_bytes: Vec<u8>,
    /// The body, de-chunked.
    bytes: Vec<u8>,
}

/// One keep-alive connection's worth of polls.
pub async fn session(
    conn: &Conn,
    state: &mut State,
    stop: &mut watch::Receiver<bool>,
) -> Result<End, SessionError> {
    let ready_by = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut stream = tokio::select! {
        _ = stopped(stop) => return Ok(End::Stopped),
        _ = tokio::time::sleep_until(ready_by) => return Err(SessionError::Timeout),
        stream = crate::source::connect(conn.source, conn.server) => stream?,
    };
    state.mark_ready(conn, &mut conn.thread.borrow_mut().tally);
    let mut response = Response {
        head: None,
        dechunker: Dechunker::new(),
        head_bytes: Vec::new(),
        bytes: Vec::new(),
    };
    let mut request = String::new();
    loop {
        write_request(&mut request, conn, &state.last_id);
        tokio::select! {
            biased;
            _ = stopped(stop) => return Ok(End::Stopped),
            written = stream.write_all(request.as_bytes()) => written?,
        }
        state.tally.bytes_written += request.len() as u64;
        response.head = None;
        response.dechunker = Dechunker::new();
        response.head_bytes.clear();
        response.bytes.clear();
        loop {
            let readable = tokio::select! {
                biased;
                _ = stopped(stop) => return Ok(End::Stopped),
                readable = stream.readable() => readable,
            };
            readable?;
            match read_ready(conn, state, &stream, &mut response)? {
                Progress::More => continue,
                Progress::Complete => break,
                Progress::Eof => return Ok(End::Closed),
            }
        }
        let Some(head) = response.head else {
            return Err(SessionError::Protocol("response without a head"));
        };
        if head.status != 200 {
            return Err(SessionError::Status(head.status));
        }
        on_body(conn, state, &response.bytes);
        if head.close {
            return Ok(End::Closed);
        }
    }
}

enum Progress {
    More,
    Complete,
    Eof,
}

/// Reads what the socket has into the thread's buffer and adds it to `response`.
fn read_ready(
    conn: &Conn,
    state: &mut State,
    stream: &TcpStream,
    response: &mut Response,
) -> Result<Progress, SessionError> {
    let mut thread = conn.thread.borrow_mut();
    let Thread { buf, .. } = &mut *thread;
    let n = match stream.try_read(buf) {
        Ok(0) => {
            let until_close = response
                .head
                .is_some_and(|h| h.framing == Framing::UntilClose);
            return Ok(if until_close {
                Progress::Complete
            } else {
                Progress::Eof
            });
        }
        Ok(n) => n,
        Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(Progress::More),
        Err(error) => return Err(error.into()),
    };
    state.tally.bytes_read += n as u64;
    state.tally.reads += 1;
    let mut input = &buf[..n];
    if response.head.is_none() {
        response.head_bytes.extend_from_slice(input);
        let Some(head) = parse_head(&response.head_bytes) else {
            if response.head_bytes.len() > MAX_RESPONSE {
                return Err(SessionError::Protocol("response head too large"));
            }
            return Ok(Progress::More);
        };
        response.head = Some(head);
        // The body's first bytes came with the head.
        input = &response.head_bytes[head.len..];
    }
    let Some(head) = response.head else {
        return Ok(Progress::More);
    };
    match head.framing {
        Framing::Chunked => {
            response
                .dechunker
                .feed(input, |b| response.bytes.extend_from_slice(b))
                .map_err(|_| SessionError::Protocol("bad chunked encoding"))?;
            if response.dechunker.is_done() {
                return Ok(Progress::Complete);
            }
        }
        Framing::Length(length) => {
            response.bytes.extend_from_slice(input);
            if response.bytes.len() >= length {
                response.bytes.truncate(length);
                return Ok(Progress::Complete);
            }
        }
        Framing::UntilClose => response.bytes.extend_from_slice(input),
    }
    if response.bytes.len() > MAX_RESPONSE {
        return Err(SessionError::Protocol("response too large"));
    }
    Ok(Progress::More)
}

/// `{"events":[…],"next":"<id>"}`: every delivery, control notices, and the next position.
fn on_body(conn: &Conn, state: &mut State, body: &[u8]) {
    let mut thread = conn.thread.borrow_mut();
    scan::each_delivery(body, |delivery| {
        record(conn, &mut state.tally, delivery, &mut thread.tally);
    });
    state.tally.resets += occurrences(body, b"\"event\":\"reset\"");
    state.tally.dropped_notices += occurrences(body, b"\"event\":\"dropped\"");
    if let Some(next) = scan::string_field(body, b"\"next\"") {
        state.set_last_id(next);
    }
}

fn occurrences(mut haystack: &[u8], needle: &[u8]) -> u64 {
    let mut count = 0;
    while let Some(at) = find(haystack, needle) {
        count += 1;
        haystack = &haystack[at + needle.len()..];
    }
    count
}

/// `GET /poll?channel=…&since=…`, written into a reused buffer.
fn write_request(request: &mut String, conn: &Conn, since: &[u8]) {
    use std::fmt::Write;
    request.clear();
    // Writing into a String cannot fail.
    let _ = write!(request, "GET {}", conn.path);
    if !since.is_empty() {
        request.push_str("&since=");
        request.push_str(&String::from_utf8_lossy(since));
    }
    let _ = write!(request, " HTTP/1.1\r\nHost: {}\r\n\r\n", conn.server);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_control_notices() {
        let body = br#"{"events":[{"event":"reset","id":"a-9"},{"event":"message"}],"next":"a-9"}"#;
        assert_eq!(occurrences(body, b"\"event\":\"reset\""), 1);
        assert_eq!(occurrences(body, b"\"event\":\"dropped\""), 0);
    }
}
