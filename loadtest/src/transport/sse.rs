//! The SSE client: `GET` the stream over raw HTTP/1.1, the chunked body undone by hand, the
//! event stream parsed as the standard says ([`super::event_stream`]: any line ends, comments,
//! multi-line data, `id`, `retry`), and each event's data searched for the harness's marks.
//!
//! Ready means subscribed with a known position: on Sluice the id-only position frame that
//! follows `connected` (and any catch-up), or a `reset` (which carries the position); on the
//! baselines and custom targets the response head, since they register a subscriber before
//! sending it. With `--tls` the same bytes go through rustls. A reconnect sends `Last-Event-ID` (the last id seen, as `EventSource` does). A
//! stalled connection stops reading right there.

use std::io::ErrorKind;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::event_stream::{Block, EventStream};
use super::{record_data, stopped, Conn, End, SessionError, State, Thread, READY_TIMEOUT};
use crate::http1::{parse_head, Dechunker, Framing};
use crate::tally::ThreadTally;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Where the bytes of one session are in the response.
enum Phase {
    Head,
    Body(Framing, Dechunker),
}

/// Bytes one read of a TLS stream takes (rustls keeps the rest of a record for the next read).
/// Each TLS connection has its own buffer: the shared one cannot be held across the await of a
/// TLS read.
const TLS_READ_BUF: usize = 4 * 1024;

/// The event-stream side of one session.
pub(super) struct Scanner {
    /// The response head until it is complete.
    pending: Vec<u8>,
    parser: EventStream,
    /// `connected` has been seen (Sluice): the next id-only frame is the position.
    connected: bool,
}

/// One TCP connection's worth of the stream (over TLS with `--tls`).
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
    if let Some(tls) = &conn.tls {
        let stream = tokio::select! {
            _ = stopped(stop) => return Ok(End::Stopped),
            _ = tokio::time::sleep_until(ready_by) => return Err(SessionError::Timeout),
            stream = tls.connect(stream, false) => stream?,
        };
        return secure(conn, state, stop, stream, ready_by).await;
    }
    let request = request(conn, &state.last_id);
    stream.write_all(request.as_bytes()).await?;
    state.tally.bytes_written += request.len() as u64;

    let mut phase = Phase::Head;
    let mut scanner = Scanner::new(&state.last_id);
    loop {
        let readable = tokio::select! {
            biased;
            _ = stopped(stop) => return Ok(End::Stopped),
            _ = tokio::time::sleep_until(ready_by), if !state.session_ready => {
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

/// The stream over TLS: the same request and parsing, the bytes read (decrypted) through rustls
/// into the connection's own buffer. Bytes on the wire count the decrypted bytes.
async fn secure(
    conn: &Conn,
    state: &mut State,
    stop: &mut watch::Receiver<bool>,
    mut stream: tokio_rustls::client::TlsStream<TcpStream>,
    ready_by: tokio::time::Instant,
) -> Result<End, SessionError> {
    let request = request(conn, &state.last_id);
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    state.tally.bytes_written += request.len() as u64;
    let mut buf = vec![0; TLS_READ_BUF];
    let mut phase = Phase::Head;
    let mut scanner = Scanner::new(&state.last_id);
    loop {
        let n = tokio::select! {
            biased;
            _ = stopped(stop) => return Ok(End::Stopped),
            _ = tokio::time::sleep_until(ready_by), if !state.session_ready => {
                return Err(SessionError::Timeout)
            }
            n = stream.read(&mut buf) => n,
        };
        let n = match n {
            Ok(0) => return Ok(End::Closed),
            Ok(n) => n,
            // A server that closes without close_notify (as an eviction's reset does) ends
            // the stream like a plain close.
            Err(error) if error.kind() == ErrorKind::UnexpectedEof => return Ok(End::Closed),
            Err(error) => return Err(error.into()),
        };
        state.tally.bytes_read += n as u64;
        state.tally.reads += 1;
        let done = {
            let mut thread = conn.thread.borrow_mut();
            process(
                conn,
                state,
                &mut thread.tally,
                &buf[..n],
                &mut phase,
                &mut scanner,
            )?
        };
        if done {
            return Ok(End::Closed);
        }
        if conn.stall && state.tally.ready {
            return Ok(super::stall(conn, stream.get_ref().0, stop).await);
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
    process(conn, state, tally, &buf[..n], phase, scanner)
}

/// Handles bytes of the response (head, then body); true at the end of the body.
fn process(
    conn: &Conn,
    state: &mut State,
    tally: &mut ThreadTally,
    input: &[u8],
    phase: &mut Phase,
    scanner: &mut Scanner,
) -> Result<bool, SessionError> {
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
            let mut result = Ok(());
            dechunker
                .feed(input, |body| {
                    if result.is_ok() {
                        result = scanner.feed(body, conn, state, tally);
                    }
                })
                .map_err(|_| SessionError::Protocol("bad chunked encoding"))?;
            result?;
        }
        Framing::Length(_) | Framing::UntilClose => scanner.feed(input, conn, state, tally)?,
    }
    if let Some(retry) = scanner.parser.retry() {
        state.retry = Some(retry);
    }
    Ok(dechunker.is_done())
}

impl Scanner {
    /// A scanner at the start of a response; `last_id` is the id the stream resumes from.
    pub(super) fn new(last_id: &[u8]) -> Self {
        Scanner {
            pending: Vec::new(),
            // The last event id outlives the connection, as in `EventSource`.
            parser: EventStream::with_last_event_id(last_id),
            connected: false,
        }
    }

    /// The stream's last `retry:`, if it sent one.
    pub(super) fn retry(&self) -> Option<std::time::Duration> {
        self.parser.retry()
    }

    /// Parses body bytes and handles every block that ends in them.
    pub(super) fn feed(
        &mut self,
        body: &[u8],
        conn: &Conn,
        state: &mut State,
        tally: &mut ThreadTally,
    ) -> Result<(), SessionError> {
        let connected = &mut self.connected;
        self.parser
            .feed(body, |block| on_block(block, connected, conn, state, tally))
            .map_err(|_| SessionError::Protocol("event-stream line too long"))
    }
}

/// One finished block of the stream.
fn on_block(
    block: Block<'_>,
    connected: &mut bool,
    conn: &Conn,
    state: &mut State,
    tally: &mut ThreadTally,
) {
    if block.has_id {
        state.set_last_id(block.id);
    }
    if let Some(data) = block.data {
        let id = if block.has_id { block.id } else { b"" };
        record_data(conn, state, data, id, tally);
    }
    if !conn.target.has_position() {
        return;
    }
    match block.event {
        b"connected" => *connected = true,
        b"reset" => {
            state.tally.reset();
            // A reset carries the stream's new position: it is subscribed from there.
            state.mark_ready(conn, tally);
        }
        b"dropped" => state.tally.dropped_notices += 1,
        _ => {}
    }
    // Sluice's position frame: an id and nothing else, after `connected`.
    if *connected && block.has_id && block.data.is_none() && block.event.is_empty() {
        state.mark_ready(conn, tally);
    }
}

/// The subscribe request, with `Last-Event-ID` when resuming.
fn request(conn: &Conn, last_id: &[u8]) -> String {
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{}",
        conn.path, conn.host, conn.headers
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
        let written = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let all_written = written.clone();
        let writer = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            for piece in canned_stream().chunks(3) {
                socket.write_all(piece).expect("write");
                socket.flush().expect("flush");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            all_written.store(true, std::sync::atomic::Ordering::Release);
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
            host: "127.0.0.1".into(),
            headers: "".into(),
            marks: crate::transport::Marks::Json,
            reconnect: crate::plan::Reconnect::Fast,
            drop_one: false,
            tls: None,
            http2: None,
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
            // Until all three deliveries are in and every byte was written (bounded, so a bug
            // fails instead of hanging). The stream's last bytes (the chunk's closing CRLF)
            // follow the last delivery; one more turn of this runtime, which the connection
            // task shares, lets it read them before it is stopped.
            for _ in 0..1000 {
                if Live::get(&counters.delivered) == 3
                    && written.load(std::sync::atomic::Ordering::Acquire)
                {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
}
