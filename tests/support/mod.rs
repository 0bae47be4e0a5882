//! Shared harness for the black-box tests: start the real `sluice` binary on `127.0.0.1:0`, speak
//! raw HTTP/1.1 to `/events` (de-chunking by hand and feeding every body byte to sluice's own SSE
//! parser), call the JSON API with reqwest, and poll `/stats` until a condition holds.
//!
//! Every wait here is bounded by [`TIMEOUT`] (or an explicit deadline) and panics with what it
//! last saw, so a broken server fails a test instead of hanging the suite. Knows nothing of the
//! server's internals: only its command line, its stdout line and the wire.

#![allow(dead_code, clippy::unwrap_used)] // each test crate uses a different subset

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::sse::parse::{Item, Message, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound on any single wait: starting the server, a response, the next SSE item, a condition
/// on `/stats`. Generous, because a loaded CI machine is slow; a healthy run never comes close.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running `sluice` process. Dropping it sends SIGTERM (then SIGKILL if it lingers) and reaps it.
pub struct Server {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The worker count from the listening line.
    pub workers: usize,
    stderr: Arc<Mutex<Vec<u8>>>,
    exit: Option<ExitStatus>,
}

/// Starts `sluice --listen 127.0.0.1:0 <args>` and waits for its listening line.
pub fn start(args: &[&str]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    if !args.contains(&"--listen") {
        command.arg("--listen").arg("127.0.0.1:0");
    }
    command
        .args(args)
        .env("SLUICE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Settings from the developer's shell must not leak into the server under test.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SLUICE_") && key != "SLUICE_LOG" {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().expect("spawn the sluice binary");

    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut pipe = child.stderr.take().expect("piped stderr");
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });

    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading to EOF so the server can never block on a full stdout pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = match rx.recv_timeout(TIMEOUT) {
        Ok(line) => line,
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
            panic!("no listening line from sluice {args:?} ({error}); stderr:\n{log}");
        }
    };
    let (addr, workers) = parse_listening_line(&line)
        .unwrap_or_else(|| panic!("unexpected first line from sluice: {line:?}"));
    Server {
        child,
        addr,
        workers,
        stderr,
        exit: None,
    }
}

/// `sluice listening on http[s]://127.0.0.1:PORT (N workers)` → (address, N).
fn parse_listening_line(line: &str) -> Option<(SocketAddr, usize)> {
    let rest = line
        .strip_prefix("sluice listening on http://")
        .or_else(|| line.strip_prefix("sluice listening on https://"))?;
    let (addr, rest) = rest.split_once(' ')?;
    let workers = rest.strip_prefix('(')?.strip_suffix(" workers)")?;
    Some((addr.parse().ok()?, workers.parse().ok()?))
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) to the process with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg("-s")
            .arg(name)
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {} failed", self.pid());
    }

    /// Waits for the process to exit, polling; `None` if it is still running at the deadline.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on sluice");
        }
        self.exit
    }

    /// Resident memory of the process in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = Command::new("kill")
                .arg("-s")
                .arg("TERM")
                .arg(self.pid().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.try_exit().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.try_exit().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- sluice stderr ---\n{}", self.stderr());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP
// ---------------------------------------------------------------------------------------------

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

/// One HTTP/1.1 exchange on its own TCP connection, read by hand: the response head, then the
/// body de-chunked and fed, in whatever pieces the socket delivers, to [`Parser`].
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
    parser: Parser,
    items: VecDeque<Item>,
    end: Option<End>,
}

/// Opens `GET /events` with the given extra request headers and reads the response head.
pub async fn open_stream(addr: SocketAddr, headers: &[(&str, &str)]) -> RawClient {
    let stream = connect(addr).await;
    RawClient::send(stream, addr, "GET", "/events", headers, b"").await
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

/// Connects within [`TIMEOUT`].
pub async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect to sluice")
}

/// A connection whose receive buffer is as small as the kernel allows, set before connecting so
/// the advertised window stays tiny: a reader that stalls fills the server's side quickly.
pub async fn connect_small_window(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&addr.into(), TIMEOUT).unwrap();
    socket.set_nonblocking(true).unwrap();
    TcpStream::from_std(socket.into()).unwrap()
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

impl RawClient {
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
            parser: Parser::new(),
            items: VecDeque::new(),
            end: None,
        };
        let deadline = Instant::now() + TIMEOUT;
        let head_len = loop {
            if let Some(at) = find(&client.buf, b"\r\n\r\n") {
                break at + 4;
            }
            assert!(
                client.read_some(deadline).await > 0,
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

    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
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

    /// The next SSE item (event, comment or retry), or `None` once the body has ended.
    /// Panics if nothing arrives within [`TIMEOUT`].
    pub async fn next_item(&mut self) -> Option<Item> {
        self.next_item_within(TIMEOUT).await
    }

    /// Like [`RawClient::next_item`] with an explicit bound.
    pub async fn next_item_within(&mut self, timeout: Duration) -> Option<Item> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = self.items.pop_front() {
                return Some(item);
            }
            if self.end.is_some() {
                return None;
            }
            self.fill(deadline).await;
        }
    }

    /// The next dispatched event, skipping comments and `retry` fields. Panics if the stream ends
    /// or nothing arrives within [`TIMEOUT`].
    pub async fn next_event(&mut self) -> Message {
        loop {
            match self.next_item().await {
                Some(Item::Event(message)) => return message,
                Some(_) => continue,
                None => panic!(
                    "stream ended ({:?}) while waiting for an event; body {:?}",
                    self.end,
                    self.body_text()
                ),
            }
        }
    }

    /// Reads until the body ends; returns how it ended. Items parsed meanwhile stay queued for
    /// [`RawClient::next_item`].
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
        let n = self.read_some(deadline).await;
        assert!(
            n == 0 && self.buf.is_empty(),
            "bytes after the end of the body: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Every SSE item that is parsed but not yet taken.
    pub fn drain_items(&mut self) -> Vec<Item> {
        self.items.drain(..).collect()
    }

    /// Reads more bytes (or the end) and decodes them; panics at the deadline.
    async fn fill(&mut self, deadline: Instant) {
        let n = self.read_some(deadline).await;
        if n == 0 && self.end.is_none() {
            self.end = Some(if self.framing == Framing::UntilEof {
                End::Complete
            } else {
                End::Eof
            });
            return;
        }
        self.decode();
    }

    /// One read into `buf`; 0 on EOF or reset (recorded in `end`).
    async fn read_some(&mut self, deadline: Instant) -> usize {
        let mut chunk = vec![0u8; 64 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "timed out waiting for data; body so far {:?} (framing {:?})",
                String::from_utf8_lossy(&self.body),
                self.framing
            ),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Ok(Err(error))
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
            Ok(Err(error)) => panic!("read failed: {error}"),
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

    fn accept(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.body.extend_from_slice(data);
        let mut out = Vec::new();
        self.parser.feed(data, &mut out);
        self.items.extend(out);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

// ---------------------------------------------------------------------------------------------
// The JSON API through reqwest
// ---------------------------------------------------------------------------------------------

/// A reqwest client that ignores proxy settings and bounds every request by [`TIMEOUT`].
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .expect("build a reqwest client")
}

/// `POST /api/notify` with a JSON body; returns the status and the JSON answer.
pub async fn post_json(server: &Server, body: &Value) -> (u16, Value) {
    let response = http()
        .post(server.url("/api/notify"))
        .json(body)
        .send()
        .await
        .expect("POST /api/notify");
    let status = response.status().as_u16();
    let value = response.json().await.expect("a JSON answer");
    (status, value)
}

/// Publishes `message` (with an optional event type) and checks the 200 answer; returns its
/// `clients` count.
pub async fn notify(server: &Server, body: Value) -> u64 {
    let (status, answer) = post_json(server, &body).await;
    assert_eq!(status, 200, "POST /api/notify {body}: {answer}");
    assert_eq!(answer["success"], true, "{answer}");
    answer["clients"].as_u64().expect("numeric clients")
}

/// `GET /stats` as JSON.
pub async fn stats(server: &Server) -> Value {
    let response = http()
        .get(server.url("/stats"))
        .send()
        .await
        .expect("GET /stats");
    assert_eq!(response.status(), 200);
    response.json().await.expect("stats are JSON")
}

/// Polls `/stats` until `condition` holds, within [`TIMEOUT`]; returns the stats that satisfied
/// it. Panics with the last stats seen otherwise.
pub async fn wait_stats(server: &Server, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    wait_stats_within(server, what, TIMEOUT, condition).await
}

/// [`wait_stats`] with an explicit bound.
pub async fn wait_stats_within(
    server: &Server,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let current = stats(server).await;
        if condition(&current) {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last /stats: {current:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `totalConnections` figure of a stats document.
pub fn total_connections(stats: &Value) -> u64 {
    stats["totalConnections"]
        .as_u64()
        .expect("numeric totalConnections")
}
