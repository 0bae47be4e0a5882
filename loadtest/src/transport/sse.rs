//! The SSE client: `GET /events?channel=` over raw HTTP/1.1, the chunked body undone by hand,
//! and event blocks scanned (not parsed) for their id and their `"n"`/`"t"` payload.
//!
//! Ready means subscribed with a known position: on Sluice the id-only position frame that
//! follows `connected` (and any catch-up); on the baselines the response head, since they
//! register a subscriber before sending it. A reconnect sends `Last-Event-ID`. A stalled
//! connection stops reading right there.

use std::io::ErrorKind;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{record, stopped, Conn, End, SessionError, State, Thread, READY_TIMEOUT};
use crate::http1::{parse_head, Dechunker, Framing};
use crate::scan;
use crate::tally::ThreadTally;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Largest event block accepted before the stream is declared broken.
const MAX_BLOCK: usize = 1024 * 1024;

/// Where the bytes of one session are in the response.
enum Phase {
    Head,
    Body(Framing, Dechunker),
}

/// The event-stream scanner of one session: bytes of an unfinished block carry over.
struct Scanner {
    pending: Vec<u8>,
    /// `connected` has been seen (Sluice): the next id-only frame is the position.
    connected: bool,
}

/// One TCP connection's worth of the stream.
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
    let request = request(conn, &state.last_id);
    stream.write_all(request.as_bytes()).await?;
    state.tally.bytes_written += request.len() as u64;

    let mut phase = Phase::Head;
    let mut scanner = Scanner {
        pending: Vec::new(),
        connected: false,
    };
    loop {
        let readable = tokio::select! {
            biased;
            _ = stopped(stop) => return Ok(End::Stopped),
            _ = tokio::time::sleep_until(ready_by), if !state.tally.ready => {
                return Err(SessionError::Timeout)
            }
            readable = stream.readable() => readable,
        };
        readable?;
        if read_ready(conn, state, &stream, &mut phase, &mut scanner)? {
            return Ok(End::Closed);
        }
        if conn.stall && state.tally.ready {
            return Ok(super::stall(conn, &stream, stop).await);
        }
    }
}

/// Reads what the socket has into the thread's buffer and processes it; true at end of stream.
fn read_ready(
    conn: &Conn,
    state: &mut State,
    stream: &TcpStream,
    phase: &mut Phase,
    scanner: &mut Scanner,
) -> Result<bool, SessionError> {
    let mut thread = conn.thread.borrow_mut();
    let Thread { buf, tally } = &mut *thread;
    let n = match stream.try_read(buf) {
        Ok(0) => return Ok(true),
        Ok(n) => n,
        Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(false),
        Err(error) => return Err(error.into()),
    };
    state.tally.bytes_read += n as u64;
    state.tally.reads += 1;
    let input = &buf[..n];
    match phase {
        Phase::Head => {
            scanner.pending.extend_from_slice(input);
            let Some(head) = parse_head(&scanner.pending) else {
                if scanner.pending.len() > MAX_HEAD {
                    return Err(SessionError::Protocol("response head too large"));
                }
                return Ok(false);
            };
            if head.status != 200 {
                return Err(SessionError::Status(head.status));
            }
            if !conn.target.has_position() {
                state.mark_ready(conn, tally);
            }
            let rest = scanner.pending.split_off(head.len);
            scanner.pending.clear();
            let mut dechunker = Dechunker::new();
            let done = feed_body(
                conn,
                state,
                tally,
                &rest,
                head.framing,
                &mut dechunker,
                scanner,
            );
            *phase = Phase::Body(head.framing, dechunker);
            done
        }
        Phase::Body(framing, dechunker) => {
            feed_body(conn, state, tally, input, *framing, dechunker, scanner)
        }
    }
}

fn feed_body(
    conn: &Conn,
    state: &mut State,
    tally: &mut ThreadTally,
    input: &[u8],
    framing: Framing,
    dechunker: &mut Dechunker,
    scanner: &mut Scanner,
) -> Result<bool, SessionError> {
    match framing {
        Framing::Chunked => {
            dechunker
                .feed(input, |body| scanner.pending.extend_from_slice(body))
                .map_err(|_| SessionError::Protocol("bad chunked encoding"))?;
        }
        Framing::Length(_) | Framing::UntilClose => scanner.pending.extend_from_slice(input),
    }
    scanner.blocks(conn, state, tally)?;
    Ok(dechunker.is_done())
}

impl Scanner {
    /// Handles every complete block in `pending` and keeps the unfinished rest.
    fn blocks(
        &mut self,
        conn: &Conn,
        state: &mut State,
        tally: &mut ThreadTally,
    ) -> Result<(), SessionError> {
        let mut start = 0;
        while let Some(end) = crate::http1::find(&self.pending[start..], b"\n\n") {
            let block_end = start + end;
            let block = &self.pending[start..block_end];
            on_block(block, &mut self.connected, conn, state, tally);
            start = block_end + 2;
        }
        if start > 0 {
            self.pending.drain(..start);
        }
        if self.pending.len() > MAX_BLOCK {
            return Err(SessionError::Protocol("event block too large"));
        }
        Ok(())
    }
}

/// One event block: its fields are lines `name: value` (CR before LF tolerated).
fn on_block(
    block: &[u8],
    connected: &mut bool,
    conn: &Conn,
    state: &mut State,
    tally: &mut ThreadTally,
) {
    let mut has_id = false;
    let mut has_data = false;
    let mut event: &[u8] = b"";
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = field(line, b"id") {
            has_id = true;
            state.set_last_id(value);
        } else if let Some(value) = field(line, b"data") {
            has_data = true;
            scan::each_delivery(value, |delivery| {
                record(conn, &mut state.tally, delivery, tally);
            });
        } else if let Some(value) = field(line, b"event") {
            event = value;
        }
    }
    match event {
        b"connected" => *connected = true,
        b"reset" => state.tally.resets += 1,
        b"dropped" => state.tally.dropped_notices += 1,
        _ => {}
    }
    // Sluice's position frame: an id and nothing else, after `connected`.
    if *connected && has_id && !has_data && event.is_empty() {
        state.mark_ready(conn, tally);
    }
}

/// The value of `name: value` (one optional space after the colon), if `line` is that field.
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// The subscribe request, with `Last-Event-ID` when resuming.
fn request(conn: &Conn, last_id: &[u8]) -> String {
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        conn.path, conn.server
    );
    if !last_id.is_empty() {
        request.push_str("Last-Event-ID: ");
        request.push_str(&String::from_utf8_lossy(last_id));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Target, Transport};
    use crate::tally::Live;
    use crate::transport::{drive, READ_BUF};
    use std::cell::RefCell;
    use std::io::Write;
    use std::rc::Rc;
    use std::sync::Arc;

    /// A Sluice-shaped stream: connected, position, two events (one duplicated), a heartbeat,
    /// chunked, written a few bytes at a time so every boundary falls inside a token somewhere.
    fn canned_stream() -> Vec<u8> {
        let frames = [
            "event: connected\nretry: 3000\ndata: {\"connectionId\":\"s0-1\"}\n\n",
            "id: e-7\n\n",
            "id: e-8\ndata: {\"channel\":\"load\",\"data\":{\"n\":1,\"t\":5}}\n\n",
            ": heartbeat\n\n",
            "id: e-9\ndata: {\"channel\":\"load\",\"data\":{\"n\":2,\"t\":6}}\n\nid: e-9\ndata: {\"channel\":\"load\",\"data\":{\"n\":2,\"t\":6}}\n\n",
        ];
        let mut wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for frame in frames {
            wire.extend_from_slice(format!("{:x}\r\n{frame}\r\n", frame.len()).as_bytes());
        }
        wire
    }

    #[test]
    fn scans_a_chunked_stream_split_anywhere() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = listener.local_addr().expect("addr");
        let writer = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            for piece in canned_stream().chunks(3) {
                socket.write_all(piece).expect("write");
                socket.flush().expect("flush");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // Keep the connection open until the client hangs up.
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut socket, &mut rest);
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let live = Arc::new(Live::default());
        let conn = Conn {
            index: 0,
            server,
            source: std::net::Ipv4Addr::LOCALHOST,
            transport: Transport::Sse,
            target: Target::Sluice,
            path: "/events?channel=load".into(),
            start_after: None,
            expected: 2,
            stall: false,
            thread: Rc::new(RefCell::new(Thread {
                buf: vec![0; READ_BUF],
                tally: crate::tally::ThreadTally::new(),
            })),
            live: live.clone(),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let counters = live.clone();
        let tally = local.block_on(&runtime, async move {
            let task = tokio::task::spawn_local(drive(conn, stop_rx));
            // Until all three deliveries are in (bounded, so a bug fails instead of hanging).
            for _ in 0..1000 {
                if Live::get(&counters.delivered) == 3 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let _ = stop_tx.send(true);
            task.await.expect("connection task")
        });
        writer.join().expect("writer");
        assert!(tally.ready, "{tally:?}");
        assert_eq!(tally.delivered, 3);
        assert_eq!(tally.duplicates, 1);
        assert!(tally.seen.contains(1) && tally.seen.contains(2));
        assert_eq!(tally.reconnects, 0);
        assert_eq!(tally.bytes_read, canned_stream().len() as u64);
        assert_eq!(Live::get(&live.ready), 1);
    }

    #[test]
    fn fields_of_a_line() {
        assert_eq!(field(b"id: a-1", b"id"), Some(&b"a-1"[..]));
        assert_eq!(field(b"id:a-1", b"id"), Some(&b"a-1"[..]));
        assert_eq!(field(b"idx: a", b"id"), None);
        assert_eq!(field(b": heartbeat", b"data"), None);
    }
}
