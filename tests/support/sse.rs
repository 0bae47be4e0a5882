//! The one raw client: an HTTP/1.1 exchange on a plain `TcpStream`, read by hand (response head,
//! then the body de-chunked or length-delimited) and fed, line by line, to the SSE parser in
//! [`super::sse_parse`].
//!
//! Plain TCP rather than reqwest, so a test controls the socket exactly: not reading makes the
//! server's writes back up (see [`connect_with_recv_buffer`]), dropping it closes the TCP
//! connection, and any header (a 10 KB `Last-Event-ID`) can be sent. A stream can be read two
//! ways, and both take from one queue:
//! - as the parser's items ([`RawClient::next_item`], [`RawClient::next_event`]): events,
//!   comments and `retry` fields, as a test of the wire format wants them;
//! - as frames ([`RawClient::next`], [`RawClient::event`], [`RawClient::opening`]): events and
//!   the id-only "position" frame (`id: X` + blank line), which dispatches no event and is
//!   therefore invisible in the parser's items, as a test of resume wants them.
//!
//! Every wait is bounded by [`TIMEOUT`] (or an explicit bound) and panics with what it last saw,
//! except [`RawClient::next`], which is cancel-safe and meant for `select!` and timeouts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::sse_parse::{Item, Message, Parser};
use super::TIMEOUT;

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The framing said so: the zero-length chunk, or all `Content-Length` bytes.
    Complete,
    /// The connection closed before the framing said the body was complete: an aborted stream.
    Eof,
    /// The connection was reset.
    Reset,
}

/// What the frame view of a stream reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A dispatched event.
    Event(Message),
    /// An id-only frame: the stream's position (no event dispatched).
    Position(String),
}

/// One entry of the queue both views read from.
#[derive(Debug)]
enum Part {
    Item(Item),
    Position(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    ChunkSize,
    ChunkData(usize),
    ChunkCrlf,
    Trailers,
    Length(usize),
    UntilEof,
    Done,
}

/// What the opening of a stream contained.
#[derive(Debug, Clone)]
pub struct Opening {
    /// The `connected` event's data.
    pub connected: Value,
    /// The `retry:` value sent with it.
    pub retry: Option<u64>,
    /// Events between `connected` and the position frame (or the `reset`).
    pub events: Vec<Message>,
    /// The `reset` event, if the opening was one.
    pub reset: Option<Message>,
    /// The position frame's id (`None` after a reset).
    pub position: Option<String>,
}

impl Opening {
    /// The connection id.
    pub fn connection_id(&self) -> String {
        self.connected["connectionId"]
            .as_str()
            .expect("connectionId")
            .to_owned()
    }

    /// The worker that owns the stream.
    pub fn worker(&self) -> u64 {
        self.connected["worker"].as_u64().expect("worker")
    }
}

/// One HTTP/1.1 exchange on its own TCP connection.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Response status code.
    pub status: u16,
    /// Response headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    framing: Framing,
    /// Every body byte received so far, de-chunked.
    pub body: Vec<u8>,
    /// The current, incomplete body line (fed to the parser once complete).
    line: Vec<u8>,
    /// Whether the current block has had an `id` line (for position frames).
    block_has_id: bool,
    parser: Parser,
    parts: VecDeque<Part>,
    connected: Option<Value>,
    end: Option<End>,
}

/// Connects within [`TIMEOUT`].
pub async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect to sluice")
}

/// Connects within [`TIMEOUT`] with the receive buffer set to `size` before connecting, so the
/// advertised window stays tiny: a reader that stalls fills the server's side quickly.
pub async fn connect_with_recv_buffer(addr: SocketAddr, size: u32) -> TcpStream {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .expect("socket");
    socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect to sluice")
}

/// A connection whose receive buffer is as small as the kernel allows (see
/// [`connect_with_recv_buffer`]).
pub async fn connect_small_window(addr: SocketAddr) -> TcpStream {
    connect_with_recv_buffer(addr, 4096).await
}

/// Writes a request head (plus `body`) on `stream`, without reading anything.
pub async fn write_request(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    tokio::time::timeout(TIMEOUT, stream.write_all(&bytes))
        .await
        .expect("writing the request timed out")
        .expect("write the request");
}

/// Opens `GET /events` with exactly the given extra request headers and reads the response head.
pub async fn open_stream(addr: SocketAddr, headers: &[(&str, &str)]) -> RawClient {
    RawClient::request(addr, "GET", "/events", headers, b"").await
}

/// Opens `GET /events` and reads through its `connected` event, which proves the stream is
/// registered in the hub. Returns the client and that event.
pub async fn subscribe(addr: SocketAddr) -> (RawClient, Message) {
    let mut client = open_stream(addr, &[]).await;
    assert_eq!(client.status, 200, "GET /events: {:?}", client.headers);
    let connected = client.next_event().await;
    assert_eq!(connected.event, "connected");
    (client, connected)
}

impl RawClient {
    /// Connects, sends one request and reads the response head.
    pub async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawClient {
        let stream = connect(addr).await;
        RawClient::send(stream, addr, method, path, headers, body).await
    }

    /// Opens `GET target` as a browser's `EventSource` would (`Accept: text/event-stream`,
    /// `Cache-Control: no-cache`, then `headers`) and reads the response head. `recv_buffer`
    /// shrinks the socket's receive buffer (to make a stalled reader back up quickly).
    pub async fn open(
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> RawClient {
        let stream = match recv_buffer {
            Some(size) => connect_with_recv_buffer(addr, size).await,
            None => connect(addr).await,
        };
        let mut all = vec![
            ("Accept", "text/event-stream"),
            ("Cache-Control", "no-cache"),
        ];
        all.extend_from_slice(headers);
        RawClient::send(stream, addr, "GET", target, &all, b"").await
    }

    /// Sends one request on `stream` and reads the response head.
    pub async fn send(
        mut stream: TcpStream,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawClient {
        write_request(&mut stream, addr, method, path, headers, body).await;
        RawClient::read_response(stream, method == "HEAD").await
    }

    /// Reads a response head from a stream whose request was already written.
    pub async fn read_response(stream: TcpStream, head_request: bool) -> RawClient {
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
            status: 0,
            headers: Vec::new(),
            framing: Framing::UntilEof,
            body: Vec::new(),
            line: Vec::new(),
            block_has_id: false,
            parser: Parser::new(),
            parts: VecDeque::new(),
            connected: None,
            end: None,
        };
        let deadline = Instant::now() + TIMEOUT;
        let head_len = loop {
            if let Some(at) = find(&client.buf, b"\r\n\r\n") {
                break at + 4;
            }
            assert!(
                client.read_some(Some(deadline)).await > 0,
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&client.buf)
            );
        };
        let head = String::from_utf8(client.buf[..head_len].to_vec()).expect("ASCII head");
        client.buf.drain(..head_len);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        client.status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').expect("header line with a colon");
            client
                .headers
                .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        client.framing = if head_request || matches!(client.status, 204 | 304) {
            Framing::Done
        } else if client
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            Framing::ChunkSize
        } else if let Some(length) = client.header("content-length") {
            Framing::Length(length.parse().expect("numeric content-length"))
        } else {
            Framing::UntilEof
        };
        if client.framing == Framing::Done || client.framing == Framing::Length(0) {
            client.framing = Framing::Done;
            client.end = Some(End::Complete);
        }
        client.decode();
        client
    }

    // -----------------------------------------------------------------------------------------
    // The response
    // -----------------------------------------------------------------------------------------

    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the response is an event stream: 200 with `text/event-stream`.
    pub fn is_stream(&self) -> bool {
        self.status == 200
            && self
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/event-stream"))
    }

    /// This response as a stream, or a panic naming the refusal. Streams are chunked over
    /// HTTP/1.1.
    pub fn stream(self) -> RawClient {
        if !self.is_stream() {
            let status = self.status;
            let body = self.body_text();
            panic!("stream refused with {status}: {body}");
        }
        assert_eq!(
            self.header("transfer-encoding"),
            Some("chunked"),
            "streams are chunked over HTTP/1.1: {:?}",
            self.headers
        );
        self
    }

    /// The refusal's status and JSON body (read to its end), or a panic if a stream opened.
    pub async fn refused(mut self) -> (u16, Value) {
        assert!(!self.is_stream(), "expected a refusal, got a stream");
        let content_type = self.header("content-type").unwrap_or_default().to_owned();
        assert!(
            self.header("content-length").is_some(),
            "response {} without content-length: {:?}",
            self.status,
            self.headers
        );
        let end = self.read_to_end().await;
        assert_eq!(end, End::Complete, "error body cut short");
        let body = self.body_text();
        assert!(
            content_type.starts_with("application/json"),
            "error content type {content_type:?} ({body})"
        );
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
        (self.status, json)
    }

    /// The body received so far, as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (after reading it to the end).
    pub async fn json(&mut self) -> Value {
        let end = self.read_to_end().await;
        assert_eq!(end, End::Complete, "body {:?}", self.body_text());
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body_text()))
    }

    /// How the body ended, once it has.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// Reads until the body ends; returns how it ended. What was parsed meanwhile stays queued.
    pub async fn read_to_end(&mut self) -> End {
        let deadline = Instant::now() + TIMEOUT;
        while self.end.is_none() {
            self.fill(deadline).await;
        }
        self.end.expect("set by the loop")
    }

    /// After the body has ended, waits for the server to close the connection and checks that
    /// it sent nothing more.
    pub async fn expect_closed(&mut self) {
        assert!(self.end.is_some(), "the body has not ended yet");
        let deadline = Instant::now() + TIMEOUT;
        let n = self.read_some(Some(deadline)).await;
        assert!(
            n == 0 && self.buf.is_empty(),
            "bytes after the end of the body: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    // -----------------------------------------------------------------------------------------
    // The stream as the parser's items
    // -----------------------------------------------------------------------------------------

    /// The next SSE item (event, comment or retry), or `None` once the body has ended.
    /// Panics if nothing arrives within [`TIMEOUT`].
    pub async fn next_item(&mut self) -> Option<Item> {
        self.next_item_within(TIMEOUT).await
    }

    /// Like [`RawClient::next_item`] with an explicit bound.
    pub async fn next_item_within(&mut self, timeout: Duration) -> Option<Item> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(part) = self.parts.pop_front() {
                if let Part::Item(item) = part {
                    return Some(item);
                }
            }
            if self.end.is_some() {
                return None;
            }
            self.fill(deadline).await;
        }
    }

    /// The next dispatched event (comments and `retry` skipped), or `None` once the body has
    /// ended. Panics if nothing arrives within `timeout`.
    pub async fn next_event_within(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item_within(left).await {
                Some(Item::Event(message)) => return Some(message),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// The next dispatched event, skipping comments and `retry` fields. Panics if the stream ends
    /// or nothing arrives within [`TIMEOUT`].
    pub async fn next_event(&mut self) -> Message {
        match self.next_event_within(TIMEOUT).await {
            Some(message) => message,
            None => panic!(
                "stream ended ({:?}) while waiting for an event; body {:?}",
                self.end,
                self.body_text()
            ),
        }
    }

    /// Events up to and including the first for which `last` holds.
    pub async fn events_until(&mut self, last: impl Fn(&Message) -> bool) -> Vec<Message> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event().await;
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Every remaining event until the body ends, within `timeout`.
    pub async fn events_to_end(&mut self, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event_within(left).await {
                Some(event) => events.push(event),
                None => return events,
            }
        }
    }

    /// Every SSE item that is parsed but not yet taken.
    pub fn drain_items(&mut self) -> Vec<Item> {
        self.parts
            .drain(..)
            .filter_map(|part| match part {
                Part::Item(item) => Some(item),
                Part::Position(_) => None,
            })
            .collect()
    }

    /// The parser's "last event ID string": what a reconnecting client sends.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id_string()
    }

    /// The data of the stream's `connected` event, once it has been parsed.
    pub fn connected(&self) -> &Value {
        self.connected
            .as_ref()
            .expect("the connected event has not arrived yet")
    }

    /// The connection id from the `connected` event.
    pub fn connection_id(&self) -> String {
        self.connected()["connectionId"]
            .as_str()
            .expect("connectionId")
            .to_owned()
    }

    /// The channels from the `connected` event.
    pub fn channels(&self) -> Vec<String> {
        self.connected()["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .map(|c| c.as_str().expect("a channel name").to_owned())
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // The stream as frames
    // -----------------------------------------------------------------------------------------

    /// Next frame (comments and `retry:` skipped). `Ok(None)`: the body ended cleanly;
    /// `Err`: the connection failed or was aborted mid-body (e.g. a slow-consumer cut-off).
    /// Unbounded and cancel-safe.
    pub async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            while let Some(part) = self.parts.pop_front() {
                match part {
                    Part::Item(Item::Event(message)) => return Ok(Some(Frame::Event(message))),
                    Part::Item(_) => {}
                    Part::Position(id) => return Ok(Some(Frame::Position(id))),
                }
            }
            match self.end {
                Some(End::Complete) => return Ok(None),
                Some(End::Eof) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "stream aborted without its final chunk",
                    ))
                }
                Some(End::Reset) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "stream reset",
                    ))
                }
                None => {}
            }
            let n = self.read_some(None).await;
            self.after_read(n);
        }
    }

    /// Frames already received and parsed but not yet returned by [`RawClient::next`].
    pub fn take_parsed(&mut self) -> Vec<Frame> {
        self.parts
            .drain(..)
            .filter_map(|part| match part {
                Part::Item(Item::Event(message)) => Some(Frame::Event(message)),
                Part::Item(_) => None,
                Part::Position(id) => Some(Frame::Position(id)),
            })
            .collect()
    }

    /// Next frame within `within`; panics on timeout, end or error.
    pub async fn frame_within(&mut self, within: Duration) -> Frame {
        match tokio::time::timeout(within, self.next()).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => panic!("stream ended while a frame was expected"),
            Ok(Err(e)) => panic!("stream failed while a frame was expected: {e}"),
            Err(_) => panic!("no frame within {within:?}"),
        }
    }

    /// Next frame within [`TIMEOUT`].
    pub async fn frame(&mut self) -> Frame {
        self.frame_within(TIMEOUT).await
    }

    /// Next frame, which must be an event.
    pub async fn event(&mut self) -> Message {
        match self.frame().await {
            Frame::Event(message) => message,
            Frame::Position(id) => panic!("expected an event, got the position frame {id}"),
        }
    }

    /// Reads the opening: `connected`, then everything up to the position frame, or up to and
    /// including a `reset` event.
    pub async fn opening(&mut self) -> Opening {
        let connected = self.event().await;
        assert_eq!(connected.event, "connected", "first event: {connected:?}");
        assert_eq!(connected.id, None, "connected carries no id");
        let mut opening = Opening {
            connected: json_of(&connected),
            retry: self.parser.retry(),
            events: Vec::new(),
            reset: None,
            position: None,
        };
        loop {
            match self.frame().await {
                Frame::Position(id) => {
                    opening.position = Some(id);
                    return opening;
                }
                Frame::Event(message) if message.event == "reset" => {
                    opening.reset = Some(message);
                    return opening;
                }
                Frame::Event(message) => opening.events.push(message),
            }
        }
    }

    /// Reads events until one with id `last` arrives; returns them all (that one included).
    /// Position frames are not expected after the opening.
    pub async fn events_through(&mut self, last: &str) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let message = self.event().await;
            let done = message.id.as_deref() == Some(last);
            out.push(message);
            if done {
                return out;
            }
        }
    }

    /// Waits for the server to end or abort the stream: `Some(true)` if it ended cleanly,
    /// `Some(false)` if it was aborted, `None` if it is still open after `within`.
    pub async fn ended_within(&mut self, within: Duration) -> Option<bool> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Err(_) => return None,
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return Some(true),
                Ok(Err(_)) => return Some(false),
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reading and decoding
    // -----------------------------------------------------------------------------------------

    /// Reads more bytes (or the end) and decodes them; panics at the deadline.
    async fn fill(&mut self, deadline: Instant) {
        let n = self.read_some(Some(deadline)).await;
        self.after_read(n);
    }

    /// Records the end on EOF, else decodes what arrived.
    fn after_read(&mut self, n: usize) {
        if n == 0 {
            if self.end.is_none() {
                self.end = Some(if self.framing == Framing::UntilEof {
                    End::Complete
                } else {
                    End::Eof
                });
            }
            return;
        }
        self.decode();
    }

    /// One read into `buf`; 0 on EOF or reset (recorded in `end`). With a deadline, panics when
    /// it passes; without one, waits as long as it takes (and is cancel-safe).
    async fn read_some(&mut self, deadline: Option<Instant>) -> usize {
        let mut chunk = vec![0u8; 64 * 1024];
        let read = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                    Ok(read) => read,
                    Err(_) => panic!(
                        "timed out waiting for data; body so far {:?} (framing {:?})",
                        String::from_utf8_lossy(&self.body),
                        self.framing
                    ),
                }
            }
            None => self.stream.read(&mut chunk).await,
        };
        match read {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                if self.end.is_none() && self.framing != Framing::Done {
                    self.end = Some(End::Reset);
                }
                0
            }
            Err(error) => panic!("read failed: {error}"),
        }
    }

    /// Moves whatever the framing allows from `buf` into the body and the parser.
    fn decode(&mut self) {
        loop {
            match self.framing {
                Framing::Done => {
                    self.end.get_or_insert(End::Complete);
                    return;
                }
                Framing::UntilEof => {
                    let data = std::mem::take(&mut self.buf);
                    self.accept(&data);
                    return;
                }
                Framing::Length(left) => {
                    let take = left.min(self.buf.len());
                    let data: Vec<u8> = self.buf.drain(..take).collect();
                    self.accept(&data);
                    self.framing = if left == take {
                        Framing::Done
                    } else {
                        Framing::Length(left - take)
                    };
                    if self.framing != Framing::Done {
                        return;
                    }
                }
                Framing::ChunkSize => {
                    let Some(at) = find(&self.buf, b"\r\n") else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                    self.buf.drain(..at + 2);
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    self.framing = if size == 0 {
                        Framing::Trailers
                    } else {
                        Framing::ChunkData(size)
                    };
                }
                Framing::ChunkData(left) => {
                    if self.buf.is_empty() {
                        return;
                    }
                    let take = left.min(self.buf.len());
                    let data: Vec<u8> = self.buf.drain(..take).collect();
                    self.accept(&data);
                    self.framing = if left == take {
                        Framing::ChunkCrlf
                    } else {
                        Framing::ChunkData(left - take)
                    };
                }
                Framing::ChunkCrlf => {
                    if self.buf.len() < 2 {
                        return;
                    }
                    assert_eq!(&self.buf[..2], b"\r\n", "chunk data not followed by CRLF");
                    self.buf.drain(..2);
                    self.framing = Framing::ChunkSize;
                }
                Framing::Trailers => {
                    let Some(at) = find(&self.buf, b"\r\n") else {
                        return;
                    };
                    self.buf.drain(..at + 2);
                    if at == 0 {
                        self.framing = Framing::Done;
                    }
                }
            }
        }
    }

    /// Takes body bytes: keeps them, and feeds them to the parser one complete line at a time,
    /// so a blank line that dispatches nothing after an `id:` line can be reported as a
    /// position frame. (Sluice ends lines with LF only.)
    fn accept(&mut self, mut data: &[u8]) {
        self.body.extend_from_slice(data);
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                None => {
                    self.line.extend_from_slice(data);
                    return;
                }
                Some(at) => {
                    self.line.extend_from_slice(&data[..=at]);
                    data = &data[at + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line);
                }
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let blank = line == b"\n";
        if line.starts_with(b"id:") || line == b"id\n" {
            self.block_has_id = true;
        }
        let mut items = Vec::new();
        self.parser.feed(line, &mut items);
        let mut dispatched = false;
        for item in items {
            if let Item::Event(message) = &item {
                dispatched = true;
                if self.connected.is_none() && message.event == "connected" {
                    self.connected = serde_json::from_str(&message.data).ok();
                }
            }
            self.parts.push_back(Part::Item(item));
        }
        if blank {
            if !dispatched && self.block_has_id {
                self.parts.push_back(Part::Position(
                    self.parser.last_event_id_string().to_owned(),
                ));
            }
            self.block_has_id = false;
        }
    }
}

/// The data of an event, as JSON.
pub fn json_of(message: &Message) -> Value {
    serde_json::from_str(&message.data)
        .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {message:?}"))
}

/// The ids of events that all carry one.
pub fn ids(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.id.clone().expect("an event with an id"))
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
