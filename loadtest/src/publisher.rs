//! The publisher: `POST`s `{"channel":…,"data":{"n":<seq>,"t":<unix µs>}}` on keep-alive
//! HTTP/1.1 connections, on a fixed schedule (a burst of `burst` events every `burst / rate`
//! seconds), and remembers which sequence numbers the server accepted.
//!
//! A publish that is refused (503 under overload, any other status, a socket error or a
//! timeout) is counted, never retried: the event is then not expected by anyone, and the error
//! shows in the results. Publishers run on their own thread so that reading thousands of sockets
//! does not delay the schedule. Knows nothing of subscribers.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http1::{parse_head, Dechunker, Framing};
use crate::plan::{Plan, Target};
use crate::tally::{new_histogram, Live, SeqSet};
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
    fn new(expected: u64) -> Self {
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
    stream: Option<TcpStream>,
    request: Vec<u8>,
    buf: Vec<u8>,
    response_head: Vec<u8>,
    body: Vec<u8>,
}

impl Link {
    fn new(server: SocketAddr, path: &str) -> Self {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: "
        );
        Link {
            server,
            prefix: head.into_bytes(),
            stream: None,
            request: Vec::with_capacity(256),
            buf: vec![0; 4096],
            response_head: Vec::with_capacity(512),
            body: Vec::with_capacity(256),
        }
    }

    /// Publishes `{"channel":…,"data":{"n":n,"t":now}}`; returns the status and leaves the body
    /// in `self.body`. A failed exchange drops the connection (the next one reconnects).
    async fn publish(&mut self, channel: &str, n: u64) -> Result<u16, PublishError> {
        use std::io::Write;
        let mut payload = [0u8; 192];
        let mut cursor = io::Cursor::new(&mut payload[..]);
        write!(
            cursor,
            "{{\"channel\":\"{channel}\",\"data\":{{\"n\":{n},\"t\":{}}}}}",
            now_us()
        )
        .map_err(|_| PublishError::Protocol("channel name too long"))?;
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        self.request.clear();
        self.request.extend_from_slice(&self.prefix);
        write!(self.request, "{len}\r\n\r\n")?;
        self.request.extend_from_slice(&payload[..len]);
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
                let stream = TcpStream::connect(self.server).await?;
                stream.set_nodelay(true)?;
                self.stream.insert(stream)
            }
        };
        stream.write_all(&self.request).await?;
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
pub async fn primer(
    server: SocketAddr,
    target: Target,
    channel: &str,
) -> Result<Option<String>, PublishError> {
    let mut link = Link::new(server, &target.publish_path(channel));
    link.publish(channel, 0).await?;
    let id = crate::scan::string_field(&link.body, b"\"id\"")
        .map(|id| String::from_utf8_lossy(id).into_owned());
    Ok(id)
}

/// Runs the schedule of `plan` against `server` and returns what happened.
pub async fn run(plan: &Plan, server: SocketAddr, live: Arc<Live>) -> Outcome {
    let path = plan.target.publish_path(&plan.channel);
    let start = tokio::time::Instant::now();
    let workers: Vec<_> = (0..plan.publishers)
        .map(|worker| {
            let link = Link::new(server, &path);
            let plan = plan.clone();
            let live = live.clone();
            tokio::task::spawn_local(async move { schedule(plan, worker, link, start, live).await })
        })
        .collect();
    let mut outcome = Outcome::new(plan.events());
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
    let events = plan.events();
    let burst = u64::from(plan.burst);
    let ticks = events / burst;
    let workers = plan.publishers as u64;
    let mut outcome = Outcome::new(events);
    let mut first = true;
    for tick in 0..ticks {
        let due = start + plan.interval().mul_f64(tick as f64);
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
    }
    outcome
}
