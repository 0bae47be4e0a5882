//! The publisher: `POST`s `{"channel":…,"data":{"n":<seq>,"t":<unix µs>}}` on keep-alive
//! HTTP/1.1 connections, either on a fixed schedule (a burst of `burst` events every
//! `burst / rate` seconds) or as fast as the server answers (`--rate max`: each connection sends
//! its next publish as soon as the previous one is answered), and remembers which sequence
//! numbers the server accepted. With `--payload-bytes` the data object carries a `"p"` string
//! that pads it to that size. A custom target's hook gets its own body template instead, with
//! the marker in place of `{marker}`, its content type and the `--header` lines.
//!
//! Over `--tls` the publishers speak HTTP/1.1 over TLS to the same listener the subscribers use
//! (a TLS listener serves nothing plain), whether the streams are HTTP/1.1 or HTTP/2: the
//! publisher's transport is not on the measured path (an event's latency runs from the time
//! stamped into it to its arrival on a stream), and one keep-alive connection costs the server
//! the same whichever version carries it.
//!
//! A publish that is refused (503 under overload, any other status, a socket error or a
//! timeout) is counted, never retried: the event is then not expected by anyone, and the error
//! shows in the results. Publishers run on their own thread so that reading thousands of sockets
//! does not delay the schedule. Knows nothing of subscribers.

use std::cell::Cell;
use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::custom::Hook;
use crate::http1::{parse_head, Dechunker, Framing};
use crate::plan::{Plan, Rate};
use crate::tally::{new_histogram, Live, SeqSet};
use crate::tls::{Io, Tls};
use crate::transport::now_us;

/// Longest wait for one publish's response.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response accepted.
const MAX_RESPONSE: usize = 1024 * 1024;

/// What the publishers did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Sequence numbers the server accepted (2xx).
    pub ok: SeqSet,
    /// Publishes attempted.
    pub sent: u64,
    /// Answers 503 (the server sheds load).
    pub overloaded: u64,
    /// Other failures: other statuses, socket errors, timeouts.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// How late the worst tick started against its schedule.
    pub behind_max: Duration,
    /// Publish round trips, µs.
    pub round_trip: Histogram<u64>,
    /// When the first publish went out.
    pub started: Instant,
    /// When the last answer came back.
    pub finished: Instant,
}

impl Outcome {
    /// Nothing published yet; room for `expected` sequence numbers.
    pub fn new(expected: u64) -> Self {
        let now = Instant::now();
        Outcome {
            ok: SeqSet::with_capacity(expected),
            sent: 0,
            overloaded: 0,
            errors: 0,
            first_error: None,
            behind_max: Duration::ZERO,
            round_trip: new_histogram(),
            started: now,
            finished: now,
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.ok.union_with(&other.ok);
        self.sent += other.sent;
        self.overloaded += other.overloaded;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.behind_max = self.behind_max.max(other.behind_max);
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.round_trip.add(&other.round_trip);
        self.started = self.started.min(other.started);
        self.finished = self.finished.max(other.finished);
    }

    fn fail(&mut self, why: impl fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why.to_string());
        }
    }
}

/// A publish that did not succeed.
#[derive(Debug)]
pub enum PublishError {
    /// Socket trouble.
    Io(io::Error),
    /// No answer within [`PUBLISH_TIMEOUT`].
    Timeout,
    /// A non-2xx answer.
    Status(u16),
    /// The answer made no sense.
    Protocol(&'static str),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Io(error) => write!(f, "publish: {error}"),
            PublishError::Timeout => write!(f, "publish: no answer within {PUBLISH_TIMEOUT:?}"),
            PublishError::Status(status) => write!(f, "publish: server answered {status}"),
            PublishError::Protocol(what) => write!(f, "publish: {what}"),
        }
    }
}

impl std::error::Error for PublishError {}

impl From<io::Error> for PublishError {
    fn from(error: io::Error) -> Self {
        PublishError::Io(error)
    }
}

/// One keep-alive connection to the publish endpoint.
struct Link {
    server: SocketAddr,
    /// The request line and headers up to `Content-Length: `.
    prefix: Vec<u8>,
    /// Size the `data` object is padded to (0: not padded).
    payload_bytes: usize,
    /// A custom target's body template (none: the built-in JSON envelope).
    hook: Option<Hook>,
    /// TLS to the server (`--tls`; a custom target's hook is plain HTTP).
    tls: Option<Arc<Tls>>,
    stream: Option<Box<dyn Io>>,
    payload: Vec<u8>,
    request: Vec<u8>,
    buf: Vec<u8>,
    response_head: Vec<u8>,
    body: Vec<u8>,
}

impl Link {
    /// The publish endpoint of `plan`'s target.
    fn of(plan: &Plan, server: SocketAddr, payload_bytes: usize) -> Self {
        let hook = plan.custom.as_ref().and_then(|c| c.publish.clone());
        let (server, host, path, content_type, headers) = match (&hook, &plan.custom) {
            (Some(hook), Some(custom)) => (
                hook.url.addr,
                hook.url.authority.clone(),
                hook.url.path.clone(),
                hook.content_type.clone(),
                custom.header_lines(),
            ),
            _ => (
                server,
                server.to_string(),
                plan.target.publish_path(&plan.channel),
                "application/json".to_owned(),
                String::new(),
            ),
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{headers}Accept: application/json\r\nContent-Length: "
        );
        Link {
            server,
            prefix: head.into_bytes(),
            payload_bytes,
            tls: if hook.is_some() {
                None
            } else {
                plan.tls_client.clone()
            },
            hook,
            stream: None,
            payload: Vec::with_capacity(256 + payload_bytes),
            request: Vec::with_capacity(512 + payload_bytes),
            buf: vec![0; 4096],
            response_head: Vec::with_capacity(512),
            body: Vec::with_capacity(256),
        }
    }

    /// Publishes `{"channel":…,"data":{"n":n,"t":now}}` (padded, for `n` > 0, with a `"p"`
    /// field); returns the status and leaves the body in `self.body`. A failed exchange drops
    /// the connection (the next one reconnects).
    async fn publish(&mut self, channel: &str, n: u64) -> Result<u16, PublishError> {
        use std::io::Write;
        self.payload.clear();
        if let Some(hook) = &self.hook {
            self.payload
                .extend_from_slice(hook.render(n, now_us()).as_bytes());
            return self.send().await;
        }
        write!(self.payload, "{{\"channel\":\"{channel}\",\"data\":")?;
        let data_start = self.payload.len();
        write!(self.payload, "{{\"n\":{n},\"t\":{}", now_us())?;
        if n > 0 && self.payload_bytes > 0 {
            let data_len = self.payload.len() - data_start;
            let pad = padding(self.payload_bytes, data_len);
            self.payload.extend_from_slice(b",\"p\":\"");
            self.payload.resize(self.payload.len() + pad, b'x');
            self.payload.push(b'"');
        }
        self.payload.extend_from_slice(b"}}");
        self.send().await
    }

    /// Sends the request for `self.payload`.
    async fn send(&mut self) -> Result<u16, PublishError> {
        use std::io::Write;
        self.request.clear();
        self.request.extend_from_slice(&self.prefix);
        write!(self.request, "{}\r\n\r\n", self.payload.len())?;
        self.request.extend_from_slice(&self.payload);
        let result = tokio::time::timeout(PUBLISH_TIMEOUT, self.exchange()).await;
        let result = result.unwrap_or(Err(PublishError::Timeout));
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self) -> Result<u16, PublishError> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let tcp = TcpStream::connect(self.server).await?;
                tcp.set_nodelay(true)?;
                let stream: Box<dyn Io> = match &self.tls {
                    Some(tls) => Box::new(tls.connect(tcp, false).await?),
                    None => Box::new(tcp),
                };
                self.stream.insert(stream)
            }
        };
        stream.write_all(&self.request).await?;
        stream.flush().await?;
        self.body.clear();
        self.response_head.clear();
        let head = loop {
            let n = stream.read(&mut self.buf).await?;
            if n == 0 {
                return Err(io::Error::from(ErrorKind::UnexpectedEof).into());
            }
            self.response_head.extend_from_slice(&self.buf[..n]);
            if let Some(head) = parse_head(&self.response_head) {
                break head;
            }
            if self.response_head.len() > MAX_RESPONSE {
                return Err(PublishError::Protocol("response head too large"));
            }
        };
        let mut dechunker = Dechunker::new();
        let first = &self.response_head[head.len..];
        let mut complete = take_body(&mut self.body, &mut dechunker, head.framing, first)?;
        while !complete {
            if self.body.len() > MAX_RESPONSE {
                return Err(PublishError::Protocol("response too large"));
            }
            let n = stream.read(&mut self.buf).await?;
            if n == 0 {
                if head.framing == Framing::UntilClose {
                    self.stream = None;
                    break;
                }
                return Err(io::Error::from(ErrorKind::UnexpectedEof).into());
            }
            complete = take_body(&mut self.body, &mut dechunker, head.framing, &self.buf[..n])?;
        }
        if head.close {
            self.stream = None;
        }
        if (200..300).contains(&head.status) {
            Ok(head.status)
        } else {
            Err(PublishError::Status(head.status))
        }
    }
}

/// Characters of `"p"` padding that make a data object of `unpadded` bytes (`{"n":…,"t":…`,
/// without the closing brace) `target` bytes long with `,"p":"…"}` added; 0 if it is already
/// that long.
fn padding(target: usize, unpadded: usize) -> usize {
    const WRAPPER: usize = r#","p":""}"#.len();
    target.saturating_sub(unpadded + WRAPPER)
}

/// Adds `input` to `body` as `framing` says; true once the body is complete.
fn take_body(
    body: &mut Vec<u8>,
    dechunker: &mut Dechunker,
    framing: Framing,
    input: &[u8],
) -> Result<bool, PublishError> {
    match framing {
        Framing::Length(length) => {
            body.extend_from_slice(input);
            Ok(body.len() >= length)
        }
        Framing::Chunked => {
            dechunker
                .feed(input, |b| body.extend_from_slice(b))
                .map_err(|_| PublishError::Protocol("bad chunked encoding"))?;
            Ok(dechunker.is_done())
        }
        Framing::UntilClose => {
            body.extend_from_slice(input);
            Ok(false)
        }
    }
}

/// Publishes one primer event (`"n":0`, counted by nobody) and returns the id the server gave it,
/// if it gives ids in its answer (Sluice does). Long pollers start after it.
pub async fn primer(plan: &Plan, server: SocketAddr) -> Result<Option<String>, PublishError> {
    let mut link = Link::of(plan, server, 0);
    link.publish(&plan.channel, 0).await?;
    let id = crate::scan::string_field(&link.body, b"\"id\"")
        .map(|id| String::from_utf8_lossy(id).into_owned());
    Ok(id)
}

/// Runs the schedule of `plan` (or publishes as fast as accepted) against `server` and returns
/// what happened.
pub async fn run(plan: &Plan, server: SocketAddr, live: Arc<Live>) -> Outcome {
    let start = tokio::time::Instant::now();
    // The next sequence number of a flat-out run, shared by its connections (one thread).
    let next = std::rc::Rc::new(Cell::new(1u64));
    let workers: Vec<_> = (0..plan.publishers)
        .map(|worker| {
            let link = Link::of(plan, server, plan.payload_bytes);
            let plan = plan.clone();
            let live = live.clone();
            let next = next.clone();
            tokio::task::spawn_local(async move {
                match plan.rate {
                    Rate::PerSecond(_) => schedule(plan, worker, link, start, live).await,
                    Rate::Max => flat_out(plan, link, start, &next, live).await,
                }
            })
        })
        .collect();
    let mut outcome = Outcome::new(plan.events().unwrap_or(0));
    for worker in workers {
        match worker.await {
            Ok(part) => outcome.merge(part),
            Err(error) => outcome.fail(format!("publisher task failed: {error}")),
        }
    }
    outcome
}

/// One publisher connection's share: at tick `k`, the events `k*burst+1 ..= (k+1)*burst` whose
/// index falls to this worker (round robin).
async fn schedule(
    plan: Plan,
    worker: usize,
    mut link: Link,
    start: tokio::time::Instant,
    live: Arc<Live>,
) -> Outcome {
    let (Some(events), Some(interval)) = (plan.events(), plan.interval()) else {
        return Outcome::new(0);
    };
    let burst = u64::from(plan.burst);
    let ticks = events / burst;
    let workers = plan.publishers as u64;
    let mut outcome = Outcome::new(events);
    let mut first = true;
    for tick in 0..ticks {
        let due = start + interval.mul_f64(tick as f64);
        tokio::time::sleep_until(due).await;
        if plan.cancel.is_cancelled() {
            break;
        }
        outcome.behind_max = outcome
            .behind_max
            .max(tokio::time::Instant::now().saturating_duration_since(due));
        for n in (tick * burst + 1)..=((tick + 1) * burst) {
            if (n - 1) % workers != worker as u64 {
                continue;
            }
            if first {
                outcome.started = Instant::now();
                first = false;
            }
            publish_one(&plan, &mut link, n, &mut outcome, &live).await;
        }
    }
    outcome
}

/// One publisher connection publishing back to back until the duration is over: each publish
/// takes the next sequence number the moment it goes out, so the numbers accepted are 1, 2, 3, …
/// without gaps other than refused publishes.
async fn flat_out(
    plan: Plan,
    mut link: Link,
    start: tokio::time::Instant,
    next: &Cell<u64>,
    live: Arc<Live>,
) -> Outcome {
    let until = start + plan.duration;
    let mut outcome = Outcome::new(0);
    outcome.started = Instant::now();
    while tokio::time::Instant::now() < until && !plan.cancel.is_cancelled() {
        let n = next.get();
        next.set(n + 1);
        publish_one(&plan, &mut link, n, &mut outcome, &live).await;
        // The answer may already be buffered, so the await above need not yield; let the
        // other connections of this thread have their turn.
        tokio::task::yield_now().await;
    }
    outcome
}

/// Publishes event `n` and counts how it went.
async fn publish_one(plan: &Plan, link: &mut Link, n: u64, outcome: &mut Outcome, live: &Live) {
    let sent_at = Instant::now();
    outcome.sent += 1;
    match link.publish(&plan.channel, n).await {
        Ok(_) => {
            outcome.ok.insert(n);
            Live::bump(&live.published);
            let us = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
            outcome.round_trip.saturating_record(us.max(1));
        }
        Err(PublishError::Status(503)) => outcome.overloaded += 1,
        Err(error) => outcome.fail(error),
    }
    outcome.finished = Instant::now();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_reaches_the_target_size() {
        let unpadded = r#"{"n":12,"t":1700000000000000"#;
        let pad = padding(256, unpadded.len());
        let data = format!(r#"{unpadded},"p":"{}"}}"#, "x".repeat(pad));
        assert_eq!(data.len(), 256);
        assert!(serde_json::from_str::<serde_json::Value>(&data).is_ok());
        // Already longer than the target: no padding.
        assert_eq!(padding(10, unpadded.len()), 0);
    }

    #[test]
    fn padded_events_still_scan() {
        let data = format!(r#"{{"n":7,"t":99,"p":"{}"}}"#, "x".repeat(3000));
        let mut seen = Vec::new();
        crate::scan::each_delivery(data.as_bytes(), |d| seen.push(d));
        assert_eq!(seen, [crate::scan::Delivery { n: 7, t: 99 }]);
    }
}
