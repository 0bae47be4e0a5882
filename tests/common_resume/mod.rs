//! Support for the resume, channels and users integration tests: spawning the real `sluice`
//! binary, a raw HTTP/1.1 event-stream client that can stall, drop or resume its connection at
//! will, and small helpers for the JSON API.
//!
//! The stream client speaks HTTP over a plain `TcpStream` (not reqwest) so a test controls the
//! socket exactly: not reading from it makes the server's writes back up, dropping it closes the
//! TCP connection, and any header (a 10 KB `Last-Event-ID`) can be sent. Bodies are de-chunked
//! here and parsed with the crate's own WHATWG parser; the client also reports the id-only
//! "position" frame (`id: X` + blank line), which dispatches no event and is therefore invisible
//! in the parser's items.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::sse_parse::{Item, Message, Parser};
use bytes::{Buf, BytesMut};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

/// Default bound for waiting on a single frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `sluice` process, stopped when dropped.
pub struct Server {
    /// Kept for its `Drop`, which stops the process.
    #[allow(dead_code)]
    process: crate::support::Server,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub base: String,
    /// A pooled HTTP client for API calls.
    pub http: reqwest::Client,
}

impl Server {
    /// Starts `sluice --listen 127.0.0.1:0 <args>` and waits for its "listening" line.
    ///
    /// The server publishes system metrics on its own (`metrics` channel): once shortly after
    /// start, then every `--metrics-interval`. So that ids move only when a test publishes, the
    /// interval is set to an hour (unless `args` set it) and [`Server::quiet`] waits for that
    /// first sample.
    pub async fn start(args: &[&str]) -> Server {
        let server = Server::spawn(args);
        if !args.iter().any(|a| a.starts_with("--metrics-interval")) {
            server.quiet().await;
        }
        server
    }

    /// Waits (at most 5 s) until the metrics sampler's first event is published.
    pub async fn quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.stats().await["eventsPublished"].as_u64() >= Some(1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the server (through the shared harness in `tests/support`) without waiting for
    /// anything but its "listening" line.
    pub fn spawn(args: &[&str]) -> Server {
        let mut all: Vec<&str> = Vec::new();
        if !args.iter().any(|a| a.starts_with("--metrics-interval")) {
            all.extend(["--metrics-interval", "1h"]);
        }
        all.extend_from_slice(args);
        let process = crate::support::start(&all);
        let addr = process.addr;
        Server {
            process,
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    /// A client that opens a new TCP connection for every request (so requests spread over the
    /// workers instead of riding one pooled connection).
    pub fn fresh_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("a reqwest client")
    }

    /// `POST path` with a JSON body: status and decoded JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        post_json_with(&self.http, &self.base, path, body).await
    }

    /// `POST path` with a `text/plain` body.
    pub async fn post_text(&self, path_and_query: &str, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path_and_query}", self.base))
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST text");
        let status = response.status().as_u16();
        let json = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, json)
    }

    /// Publishes `data` on `channel` (JSON API) and returns the answer, asserting success.
    pub async fn publish(&self, channel: &str, data: Value) -> Published {
        self.publish_body(&serde_json::json!({ "channel": channel, "data": data }))
            .await
    }

    /// Publishes a full JSON body (`channel`, `event`, `data`), asserting success.
    pub async fn publish_body(&self, body: &Value) -> Published {
        let (status, answer) = self.post_json("/api/publish", body).await;
        assert_eq!(status, 200, "publish {body} answered {answer}");
        Published::from_answer(&answer)
    }

    /// Sends a user notification, asserting success.
    pub async fn notify_user(&self, user: &str, message: Value) -> Published {
        let (status, answer) = self
            .post_json(
                &format!("/api/users/{user}/notify"),
                &serde_json::json!({ "message": message }),
            )
            .await;
        assert_eq!(status, 200, "user notify answered {answer}");
        Published::from_answer(&answer)
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/stats", self.base))
            .send()
            .await
            .expect("GET /stats")
            .json()
            .await
            .expect("stats JSON")
    }

    /// Waits until every worker has applied every publish it was handed (inbox depth 0), so
    /// shard positions equal the last published id. Exact with one worker (the stats request
    /// runs on the shard's own thread).
    pub async fn settle(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.stats().await;
            let idle = stats["workers"]
                .as_array()
                .is_some_and(|ws| ws.iter().all(|w| w["inboxDepth"] == 0));
            if idle {
                return stats;
            }
            assert!(Instant::now() < deadline, "workers never drained: {stats}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The id of the last published event (`lastEventId` in `/stats`).
    pub async fn head(&self) -> String {
        self.stats().await["lastEventId"]
            .as_str()
            .expect("lastEventId")
            .to_owned()
    }

    /// Polls `/stats` until `check` holds, or panics after `within` with the last snapshot.
    pub async fn wait_for_stats(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let stats = self.stats().await;
            if check(&stats) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens a stream: `target` is the path and query, `headers` extra request headers.
    pub async fn open(&self, target: &str, headers: &[(&str, &str)]) -> Opened {
        SseClient::open(self.addr, target, headers, None).await
    }

    /// Opens a stream that must succeed.
    pub async fn stream(&self, target: &str, headers: &[(&str, &str)]) -> SseClient {
        self.open(target, headers).await.stream()
    }
}

/// `POST base+path` with a JSON body using `client`.
pub async fn post_json_with(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let response = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    let json = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, json)
}

/// The answer to a publish.
#[derive(Debug, Clone)]
pub struct Published {
    /// The assigned event id.
    pub id: String,
    /// Its seq.
    pub seq: u64,
    /// Subscribers of the channel at publish time.
    pub clients: u64,
    /// The whole answer.
    pub answer: Value,
}

impl Published {
    fn from_answer(answer: &Value) -> Published {
        assert_eq!(answer["success"], true, "{answer}");
        let id = answer["id"]
            .as_str()
            .expect("id in publish answer")
            .to_owned();
        Published {
            seq: seq_of(&id),
            id,
            clients: answer["clients"].as_u64().expect("clients"),
            answer: answer.clone(),
        }
    }
}

/// The seq of an id `<epoch>-<seq>`.
pub fn seq_of(id: &str) -> u64 {
    id.rsplit_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or_else(|| panic!("not an event id: {id:?}"))
}

/// The epoch of an id `<epoch>-<seq>`.
pub fn epoch_of(id: &str) -> &str {
    id.rsplit_once('-')
        .map(|(epoch, _)| epoch)
        .unwrap_or_else(|| panic!("not an event id: {id:?}"))
}

/// The data of an event, as JSON.
pub fn json_of(message: &Message) -> Value {
    serde_json::from_str(&message.data)
        .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {message:?}"))
}

/// What the stream client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A dispatched event.
    Event(Message),
    /// An id-only frame: the stream's position (no event dispatched).
    Position(String),
}

/// The result of a stream request.
#[derive(Debug)]
pub enum Opened {
    /// 200 with `text/event-stream`.
    Stream(Box<SseClient>),
    /// Anything else, with its body.
    Refused {
        /// HTTP status.
        status: u16,
        /// Content type.
        content_type: String,
        /// Body text.
        body: String,
    },
}

impl Opened {
    /// The stream, or a panic naming the refusal.
    pub fn stream(self) -> SseClient {
        match self {
            Opened::Stream(stream) => *stream,
            Opened::Refused { status, body, .. } => {
                panic!("stream refused with {status}: {body}")
            }
        }
    }

    /// The refusal's status and JSON body, or a panic if a stream opened.
    pub fn refused(self) -> (u16, Value) {
        match self {
            Opened::Stream(_) => panic!("expected a refusal, got a stream"),
            Opened::Refused {
                status,
                content_type,
                body,
            } => {
                assert!(
                    content_type.starts_with("application/json"),
                    "error content type {content_type:?} ({body})"
                );
                let json = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
                (status, json)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(usize),
    DataEnd,
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

/// A raw HTTP/1.1 event-stream client.
#[derive(Debug)]
pub struct SseClient {
    sock: TcpStream,
    raw: BytesMut,
    chunk: Chunk,
    line: Vec<u8>,
    block_has_id: bool,
    parser: Parser,
    items: Vec<Item>,
    pending: VecDeque<Frame>,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

impl SseClient {
    /// Sends `GET target` with `headers`; `recv_buffer` shrinks the socket's receive buffer
    /// (to make a stalled reader back up quickly).
    pub async fn open(
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Opened {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut sock = timeout(FRAME_TIMEOUT, socket.connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let mut request = format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\n"
        );
        for (name, value) in headers {
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        sock.write_all(request.as_bytes())
            .await
            .expect("send request");

        let mut raw = BytesMut::with_capacity(64 * 1024);
        let head_end = loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                break end;
            }
            let n = timeout(FRAME_TIMEOUT, sock.read_buf(&mut raw))
                .await
                .unwrap_or_else(|_| panic!("no response head for GET {target}"))
                .expect("read response head");
            assert!(
                n > 0,
                "connection closed before the response head (GET {target})"
            );
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        raw.advance(head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let content_type = header("content-type").unwrap_or_default();
        if status == 200 && content_type.starts_with("text/event-stream") {
            assert_eq!(
                header("transfer-encoding").as_deref(),
                Some("chunked"),
                "streams are chunked over HTTP/1.1: {headers:?}"
            );
            let mut client = SseClient {
                sock,
                raw: BytesMut::new(),
                chunk: Chunk::Size,
                line: Vec::new(),
                block_has_id: false,
                parser: Parser::new(),
                items: Vec::new(),
                pending: VecDeque::new(),
                headers,
            };
            client.raw = raw;
            client.process();
            return Opened::Stream(Box::new(client));
        }
        let body = if let Some(length) = header("content-length").and_then(|v| v.parse().ok()) {
            while raw.len() < length {
                let n = timeout(FRAME_TIMEOUT, sock.read_buf(&mut raw))
                    .await
                    .expect("error body timed out")
                    .expect("read error body");
                assert!(n > 0, "connection closed inside the error body");
            }
            raw.split_to(length)
        } else {
            panic!("response {status} without content-length: {headers:?}");
        };
        Opened::Refused {
            status,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The parser's "last event ID string": what a reconnecting client sends.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id_string()
    }

    /// Next frame (comments and `retry:` skipped). `Ok(None)`: the body ended cleanly;
    /// `Err`: the connection failed or was aborted mid-body (e.g. a slow-consumer cut-off).
    /// Cancel-safe.
    pub async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Ok(Some(frame));
            }
            if self.chunk == Chunk::Done {
                return Ok(None);
            }
            let n = self.sock.read_buf(&mut self.raw).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "stream aborted without its final chunk",
                ));
            }
            self.process();
        }
    }

    /// Frames already received and parsed but not yet returned by [`SseClient::next`].
    pub fn take_parsed(&mut self) -> Vec<Frame> {
        self.pending.drain(..).collect()
    }

    /// Next frame within `within`; panics on timeout, end or error.
    pub async fn frame_within(&mut self, within: Duration) -> Frame {
        match timeout(within, self.next()).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => panic!("stream ended while a frame was expected"),
            Ok(Err(e)) => panic!("stream failed while a frame was expected: {e}"),
            Err(_) => panic!("no frame within {within:?}"),
        }
    }

    /// Next frame within [`FRAME_TIMEOUT`].
    pub async fn frame(&mut self) -> Frame {
        self.frame_within(FRAME_TIMEOUT).await
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

    /// Waits for the server to end or abort the stream; `true` if it ended cleanly.
    pub async fn ended_within(&mut self, within: Duration) -> Option<bool> {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Err(_) => return None,
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return Some(true),
                Ok(Err(_)) => return Some(false),
            }
        }
    }

    /// Decodes the chunked body and turns complete lines into frames.
    fn process(&mut self) {
        loop {
            match self.chunk {
                Chunk::Done => return,
                Chunk::Size => {
                    let Some(end) = find(&self.raw, b"\r\n") else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                    self.raw.advance(end + 2);
                    let hex = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(hex, 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    self.chunk = if size == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if self.raw.is_empty() {
                        return;
                    }
                    let take = left.min(self.raw.len());
                    let data = self.raw.split_to(take);
                    self.body(&data);
                    self.chunk = if take == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take)
                    };
                }
                Chunk::DataEnd => {
                    if self.raw.len() < 2 {
                        return;
                    }
                    assert_eq!(&self.raw[..2], b"\r\n", "chunk not followed by CRLF");
                    self.raw.advance(2);
                    self.chunk = Chunk::Size;
                }
            }
        }
    }

    /// Feeds body bytes to the parser one complete line at a time, so a blank line that
    /// dispatches nothing after an `id:` line can be reported as a position frame. (Sluice ends
    /// lines with LF only.)
    fn body(&mut self, mut data: &[u8]) {
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
        self.parser.feed(line, &mut self.items);
        let mut dispatched = false;
        for item in self.items.drain(..) {
            match item {
                Item::Event(message) => {
                    dispatched = true;
                    self.pending.push_back(Frame::Event(message));
                }
                Item::Comment(_) | Item::Retry(_) => {}
            }
        }
        if blank {
            if !dispatched && self.block_has_id {
                self.pending.push_back(Frame::Position(
                    self.parser.last_event_id_string().to_owned(),
                ));
            }
            self.block_has_id = false;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
