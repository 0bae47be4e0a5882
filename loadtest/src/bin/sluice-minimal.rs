//! `sluice-minimal`: the reference server of the load harness (`--target minimal` and
//! `minimal-nagle`). The least an SSE hub can do per delivery: one thread, no HTTP library, no
//! async runtime, blocking sockets, and each frame written to each subscriber with exactly one
//! `write(2)`. Its CPU per delivery is the floor the other targets are measured against
//! ("× minimal").
//!
//! It speaks just enough HTTP/1.1 for the harness:
//!
//! - `GET /events?channel=C` → `200 text/event-stream`, `Transfer-Encoding: chunked` (the
//!   framing Sluice and nginx send, so the bytes on the wire match theirs). The subscriber is
//!   registered before the head is written, so the head means "subscribed".
//! - `POST /publish?channel=C` with any body (`Content-Length`) → every subscriber of `C` gets
//!   `data: <body>\n\n` (one `data:` line per line of the body) as one chunk, encoded once; then
//!   the publisher gets `200 {"id":"<n>","subscribers":<k>}` on its keep-alive connection.
//! - Anything else: `404` or `400` and the connection is closed.
//!
//! One `poll(2)` loop watches the listener, connections whose request has not arrived yet, and
//! publisher connections; subscriber sockets are only written. Every socket is blocking, so a
//! frame stays one write even when a subscriber's socket buffer is full: the write blocks the
//! whole server until that reader makes room. That is the reference's honest behaviour (no
//! queue, no copy, no second write); a stalled reader stalls everyone, so runs with `--stall`
//! say nothing about it. A subscriber that is gone is noticed when a write to it fails and is
//! dropped then. `TCP_NODELAY` is on for every stream unless `--nagle` is given; publisher
//! connections always have it (nginx applies `tcp_nodelay` to keep-alive connections too).
//!
//! Prints `sluice-minimal listening on http://ADDR (...)` once it listens; SIGTERM ends it.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;

use rustix::event::{poll, PollFd, PollFlags};
use socket2::{Domain, Socket, Type};

/// Pending connections the kernel holds for `accept` (the harness opens hundreds at once).
const BACKLOG: i32 = 4096;

/// Largest request head, and largest publish body.
const MAX_REQUEST: usize = 1024 * 1024;

/// Bytes read per `read(2)`.
const READ_BUF: usize = 64 * 1024;

const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

/// A connection whose next request has not fully arrived: a new one, or a publisher's
/// keep-alive connection between publishes.
struct Pending {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What a complete request asks for.
enum Request<'a> {
    Subscribe { channel: &'a str },
    Publish { channel: &'a str, body: &'a [u8] },
    NotFound,
    Bad,
}

struct Server {
    listener: TcpListener,
    nodelay: bool,
    pending: Vec<Pending>,
    channels: HashMap<String, Vec<TcpStream>>,
    next_id: u64,
    frame: Vec<u8>,
    read_buf: Vec<u8>,
}

fn main() -> ExitCode {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut nodelay = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nagle" => nodelay = false,
            "--listen" => match args.next().map(|a| a.parse()) {
                Some(Ok(addr)) => listen = addr,
                _ => return usage("--listen needs an address, e.g. 127.0.0.1:0"),
            },
            _ => return usage(&format!("unknown argument {arg}")),
        }
    }
    let listener = match bind(listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("sluice-minimal: cannot listen on {listen}: {error}");
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    let mode = if nodelay { "TCP_NODELAY" } else { "Nagle on" };
    println!("sluice-minimal listening on http://{addr} (one thread, {mode})");
    let _ = std::io::stdout().flush();
    let mut server = Server {
        listener,
        nodelay,
        pending: Vec::new(),
        channels: HashMap::new(),
        next_id: 0,
        frame: Vec::with_capacity(4096),
        read_buf: vec![0; READ_BUF],
    };
    match server.serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice-minimal: {error}");
            ExitCode::from(1)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("sluice-minimal: {message}\nusage: sluice-minimal [--listen ADDR] [--nagle]");
    ExitCode::from(2)
}

/// A listener with a deep backlog; non-blocking, so that one readiness accepts every
/// connection waiting.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let listener: TcpListener = socket.into();
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl Server {
    fn serve(&mut self) -> std::io::Result<()> {
        loop {
            let ready: Vec<bool> = {
                let mut fds = Vec::with_capacity(1 + self.pending.len());
                fds.push(PollFd::new(&self.listener, PollFlags::IN));
                for conn in &self.pending {
                    fds.push(PollFd::new(&conn.stream, PollFlags::IN));
                }
                match poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(error) => return Err(error.into()),
                }
                fds.iter().map(|fd| !fd.revents().is_empty()).collect()
            };
            // Back to front, so that removing a connection leaves the other indexes valid.
            for index in (0..self.pending.len()).rev() {
                if ready[index + 1] {
                    self.read_pending(index);
                }
            }
            if ready[0] {
                self.accept_all();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Accepted sockets do not inherit O_NONBLOCK on Linux; say so anyway.
                    // TCP_NODELAY for the publishers' keep-alive answers; a stream with Nagle
                    // on clears it when it subscribes.
                    if stream.set_nonblocking(false).is_err() || stream.set_nodelay(true).is_err() {
                        continue;
                    }
                    self.pending.push(Pending {
                        stream,
                        buf: Vec::new(),
                    });
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                // Out of descriptors or a connection reset before accept: not fatal.
                Err(error) => {
                    eprintln!("sluice-minimal: accept: {error}");
                    return;
                }
            }
        }
    }

    /// One `read(2)` (poll said readable, so it does not block), then every complete request.
    fn read_pending(&mut self, index: usize) {
        let n = match self.pending[index].stream.read(&mut self.read_buf) {
            Ok(0) | Err(_) => {
                self.pending.swap_remove(index);
                return;
            }
            Ok(n) => n,
        };
        let mut conn = self.pending.swap_remove(index);
        conn.buf.extend_from_slice(&self.read_buf[..n]);
        loop {
            let Some((consumed, keep)) = self.handle(&mut conn) else {
                // Incomplete: wait for more, unless it is already too large.
                if conn.buf.len() <= MAX_REQUEST {
                    self.pending.push(conn);
                }
                return;
            };
            match keep {
                Keep::Open => {
                    conn.buf.drain(..consumed);
                }
                Keep::Subscribe(channel) => return self.subscribe(channel, conn.stream),
                Keep::Close => return,
            }
        }
    }

    /// Handles the first complete request in `conn.buf`: how many bytes it took and what
    /// becomes of the connection; `None` while it is incomplete.
    fn handle(&mut self, conn: &mut Pending) -> Option<(usize, Keep)> {
        let head_end = find(&conn.buf, b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&conn.buf[..head_end]).unwrap_or("");
        let length = content_length(head);
        let Some(length) = length else {
            answer(
                &mut conn.stream,
                "400 Bad Request",
                "{\"error\":\"bad request\"}",
            );
            return Some((head_end, Keep::Close));
        };
        if length > MAX_REQUEST {
            answer(
                &mut conn.stream,
                "413 Payload Too Large",
                "{\"error\":\"too large\"}",
            );
            return Some((head_end, Keep::Close));
        }
        if conn.buf.len() < head_end + length {
            return None;
        }
        let consumed = head_end + length;
        let body = &conn.buf[head_end..consumed];
        let keep = match parse_request(head, body) {
            Request::Subscribe { channel } => Keep::Subscribe(channel.to_owned()),
            Request::Publish { channel, body } => {
                let (id, subscribers) = self.publish(channel, body);
                let json = format!("{{\"id\":\"{id}\",\"subscribers\":{subscribers}}}");
                if answer(&mut conn.stream, "200 OK", &json) {
                    Keep::Open
                } else {
                    Keep::Close
                }
            }
            Request::NotFound => {
                answer(
                    &mut conn.stream,
                    "404 Not Found",
                    "{\"error\":\"not found\"}",
                );
                Keep::Close
            }
            Request::Bad => {
                answer(
                    &mut conn.stream,
                    "400 Bad Request",
                    "{\"error\":\"bad request\"}",
                );
                Keep::Close
            }
        };
        Some((consumed, keep))
    }

    /// Registers the stream, then writes the response head (so the head means subscribed).
    fn subscribe(&mut self, channel: String, mut stream: TcpStream) {
        if !self.nodelay && stream.set_nodelay(false).is_err() {
            return;
        }
        if stream.write_all(STREAM_HEAD).is_err() {
            return;
        }
        self.channels.entry(channel).or_default().push(stream);
    }

    /// Encodes the frame once and writes it to every subscriber of `channel` with one
    /// `write(2)` each; drops the subscribers whose write fails. Returns the event's id and how
    /// many subscribers it went to.
    fn publish(&mut self, channel: &str, body: &[u8]) -> (u64, usize) {
        self.next_id += 1;
        let id = self.next_id;
        encode_chunk(&mut self.frame, body);
        let Some(subscribers) = self.channels.get_mut(channel) else {
            return (id, 0);
        };
        let frame = &self.frame[..];
        subscribers.retain_mut(|stream| match stream.write(frame) {
            Ok(n) if n == frame.len() => true,
            // A blocking send returns short only when a signal interrupts it; finish the frame.
            Ok(n) => stream.write_all(&frame[n..]).is_ok(),
            Err(_) => false,
        });
        (id, subscribers.len())
    }
}

/// What becomes of a connection after a request.
enum Keep {
    /// A publisher's keep-alive connection: back to waiting for its next request.
    Open,
    /// Becomes a subscriber of this channel, written to by publishes, never read again.
    Subscribe(String),
    /// Answered with an error (or failed): dropped, which closes it.
    Close,
}

/// The route of a complete request.
fn parse_request<'a>(head: &'a str, body: &'a [u8]) -> Request<'a> {
    let Some(line) = head.split("\r\n").next() else {
        return Request::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Request::Bad;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let channel = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("channel="))
        .filter(|c| !c.is_empty());
    match (method, path, channel) {
        ("GET", "/events", Some(channel)) => Request::Subscribe { channel },
        ("POST", "/publish", Some(channel)) => Request::Publish { channel, body },
        ("GET", "/events", None) | ("POST", "/publish", None) => Request::Bad,
        _ => Request::NotFound,
    }
}

/// `Content-Length` of a request head (0 when absent); `None` when it is not a number or the
/// body is chunked (not spoken here).
fn content_length(head: &str) -> Option<usize> {
    let mut length = 0;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
    }
    Some(length)
}

/// `frame` becomes one HTTP/1.1 chunk holding the SSE event `data: <line>\n` per line of
/// `body`, then `\n`.
fn encode_chunk(frame: &mut Vec<u8>, body: &[u8]) {
    let mut event = Vec::with_capacity(body.len() + 16);
    for line in body.split(|&b| b == b'\n') {
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        event.push(b'\n');
    }
    event.push(b'\n');
    frame.clear();
    let _ = write!(frame, "{:x}\r\n", event.len());
    frame.extend_from_slice(&event);
    frame.extend_from_slice(b"\r\n");
}

/// Writes a complete JSON response; false if the connection is gone.
fn answer(stream: &mut TcpStream, status: &str, json: &str) -> bool {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    );
    stream.write_all(response.as_bytes()).is_ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_becomes_one_chunk_of_one_event() {
        let mut frame = Vec::new();
        encode_chunk(&mut frame, br#"{"n":1}"#);
        assert_eq!(frame, b"f\r\ndata: {\"n\":1}\n\n\r\n");
        encode_chunk(&mut frame, b"a\r\nb");
        assert_eq!(frame, b"11\r\ndata: a\ndata: b\n\n\r\n");
    }

    #[test]
    fn requests_route() {
        let get = "GET /events?channel=load HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            parse_request(get, b""),
            Request::Subscribe { channel: "load" }
        ));
        let post = "POST /publish?x=1&channel=c HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(
            parse_request(post, b"{}"),
            Request::Publish {
                channel: "c",
                body: b"{}"
            }
        ));
        assert!(matches!(
            parse_request("GET /events HTTP/1.1\r\n\r\n", b""),
            Request::Bad
        ));
        assert!(matches!(
            parse_request("GET /other HTTP/1.1\r\n\r\n", b""),
            Request::NotFound
        ));
        assert_eq!(content_length(post), Some(2));
        assert_eq!(content_length(get), Some(0));
        assert_eq!(
            content_length("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
        assert_eq!(
            content_length("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            None
        );
    }
}
