//! One subscriber connection's life, whatever the transport: connect, become ready, count
//! deliveries until told to stop, and reconnect (resuming from the last id seen) when the server
//! closes the connection or it fails. A stalled connection instead stops reading once ready and
//! only watches for the server cutting it off; it is never reopened.
//!
//! Every session after the first is recorded (when it was tried, when it was ready or why it
//! failed, when a ready stream went down), which is what a reconnect storm is measured from. A
//! dropped stream comes back after a short fixed pause, or as a browser's `EventSource` would
//! (after the stream's `retry:`), as the plan says.
//!
//! The protocol of each transport lives in its own file ([`sse`], [`ws`], [`poll`]; SSE over
//! HTTP/2 in [`http2`]; the SSE wire format in [`event_stream`]); this file owns the retry policy and what a connection
//! shares with the other connections of its thread.
//! Nothing here knows about the publisher or the server process.

pub mod event_stream;
pub mod http2;
pub mod poll;
pub mod sse;
pub mod ws;

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::plan::{Reconnect, Target, Transport, BROWSER_RETRY};
use crate::scan::Delivery;
use crate::tally::{Attempt, AttemptError, ConnTally, Live, ThreadTally};

/// Longest wait for a connection to become ready (TCP connect, request, handshake, catch-up).
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Attempts before a connection that never became ready gives up.
pub const CONNECT_ATTEMPTS: u32 = 3;

/// Pause before a reconnect, so a server that refuses everyone is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// How often a stalled connection asks its socket for a pending error, besides waiting for the
/// error readiness the reset raises.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Bytes one socket read takes, into the thread's shared buffer.
pub const READ_BUF: usize = 16 * 1024;

/// What the connections of one client thread share. The runtime is single-threaded, so a
/// `RefCell` borrow never spans an `.await`: the read buffer and the histograms are borrowed only
/// while a read's bytes are processed.
#[derive(Debug)]
pub struct Thread {
    /// Scratch buffer for socket reads.
    pub buf: Vec<u8>,
    /// Histograms.
    pub tally: ThreadTally,
}

/// Everything one connection needs.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Index among all connections of the run.
    pub index: usize,
    /// The server.
    pub server: SocketAddr,
    /// The source address to bind.
    pub source: Ipv4Addr,
    /// Protocol.
    pub transport: Transport,
    /// Server kind (decides readiness).
    pub target: Target,
    /// Path and query to subscribe with.
    pub path: Rc<str>,
    /// Where a long poll starts (the primer's id): events after it are delivered.
    pub start_after: Option<Rc<str>>,
    /// Sequence numbers expected (bitmap capacity; 0 when unknown).
    pub expected: u64,
    /// Once ready, never read again (a slow consumer).
    pub stall: bool,
    /// The `Host` header's value.
    pub host: Rc<str>,
    /// Extra request lines (`--header`), each ending in CRLF.
    pub headers: Rc<str>,
    /// How the events carry the harness's sequence numbers.
    pub marks: Marks,
    /// How a dropped stream comes back.
    pub reconnect: Reconnect,
    /// Test-only: ignore the second event after the first reconnect (see `Plan::drop_one`).
    pub drop_one: bool,
    /// TLS to the server (`--tls`).
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// The HTTP/2 connection this stream shares (`--http2`); none: a stream is its own
    /// HTTP/1.1 connection.
    pub http2: Option<Rc<http2::Group>>,
    /// The thread's shared state.
    pub thread: Rc<RefCell<Thread>>,
    /// Cross-thread counters.
    pub live: Arc<Live>,
}

/// How received events carry the harness's sequence number and send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marks {
    /// `"n":<seq>` and `"t":<µs>` in a JSON body (the built-in targets).
    Json,
    /// The marker `lt-<seq>-<µs>` anywhere in the data (custom targets with a publish hook).
    Token,
    /// None: the run only listens, and every event with data counts (custom targets without a
    /// publish hook).
    Listen,
}

/// How a session (one TCP connection) ended.
#[derive(Debug)]
pub enum End {
    /// The run told the connection to stop.
    Stopped,
    /// The server closed the connection.
    Closed,
    /// The server cut off a stalled connection (it reset it).
    CutOff,
}

/// A session failed.
#[derive(Debug)]
pub enum SessionError {
    /// A socket error.
    Io(io::Error),
    /// Nothing happened within [`READY_TIMEOUT`].
    Timeout,
    /// The server answered with something else than a stream.
    Status(u16),
    /// The bytes made no sense.
    Protocol(&'static str),
    /// The WebSocket layer failed.
    WebSocket(String),
    /// The HTTP/2 layer failed (a stream reset, a GOAWAY, a protocol error).
    Http2(String),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Io(error) => write!(f, "socket: {error}"),
            SessionError::Timeout => write!(f, "not ready within {READY_TIMEOUT:?}"),
            SessionError::Status(status) => write!(f, "server answered {status}"),
            SessionError::Protocol(what) => write!(f, "protocol: {what}"),
            SessionError::WebSocket(what) => write!(f, "websocket: {what}"),
            SessionError::Http2(what) => write!(f, "http2: {what}"),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<io::Error> for SessionError {
    fn from(error: io::Error) -> Self {
        SessionError::Io(error)
    }
}

/// A connection's own running state, kept across its sessions.
#[derive(Debug)]
pub struct State {
    /// The account returned at the end.
    pub tally: ConnTally,
    /// The last event id seen, for resuming (`Last-Event-ID`, `lastEventId=`, `since=`).
    pub last_id: Vec<u8>,
    /// When the first attempt started (for the connect time).
    pub started: Instant,
    /// When the current session's attempt started, unix µs.
    pub attempt_us: u64,
    /// The current session became ready.
    pub session_ready: bool,
    /// The stream's last `retry:` (kept across sessions, as `EventSource` keeps it).
    pub retry: Option<Duration>,
    /// Whether this connection was counted in `Live::back` (back after the storm's cut).
    pub back: bool,
    /// Test-only countdown (see `Plan::drop_one`): deliveries after the first reconnect until
    /// the one to ignore.
    pub drop_countdown: Option<u8>,
}

impl State {
    /// Marks the session ready (once per session). The first time, the connect time goes into
    /// the thread's histogram; later sessions are recorded as reconnects, and the first one after
    /// a storm's cut counts the connection as back.
    pub fn mark_ready(&mut self, conn: &Conn, shared: &mut ThreadTally) {
        if self.session_ready {
            return;
        }
        self.session_ready = true;
        if !self.tally.ready {
            self.tally.ready = true;
            let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
            shared.record_connect(us);
            self.tally.connect_us = Some(us);
            Live::bump(&conn.live.ready);
            return;
        }
        let now = now_us();
        self.tally.sessions.push(Attempt {
            started_us: self.attempt_us,
            ended_us: now,
            error: None,
        });
        let cut = Live::get(&conn.live.cut_at_us);
        if cut > 0 && now >= cut && !self.back {
            self.back = true;
            Live::bump(&conn.live.back);
        }
        if conn.drop_one && self.drop_countdown.is_none() {
            self.drop_countdown = Some(2);
        }
    }

    /// Whether the test-only knob swallows this delivery.
    pub fn is_dropped_on_purpose(&mut self) -> bool {
        match self.drop_countdown {
            Some(1) => {
                self.drop_countdown = Some(0);
                true
            }
            Some(left) if left > 1 => {
                self.drop_countdown = Some(left - 1);
                false
            }
            _ => false,
        }
    }

    /// Remembers `id` as the resume position.
    pub fn set_last_id(&mut self, id: &[u8]) {
        self.last_id.clear();
        self.last_id.extend_from_slice(id);
    }
}

/// Runs one connection until `stop` turns true; returns its account.
pub async fn drive(conn: Conn, mut stop: watch::Receiver<bool>) -> ConnTally {
    let mut state = State {
        tally: ConnTally {
            stalled: conn.stall,
            ..ConnTally::new(conn.expected)
        },
        last_id: Vec::with_capacity(32),
        started: Instant::now(),
        attempt_us: 0,
        session_ready: false,
        retry: None,
        back: false,
        drop_countdown: None,
    };
    if let Some(start) = &conn.start_after {
        state.set_last_id(start.as_bytes());
    }
    let mut failed_attempts = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        state.attempt_us = now_us();
        if state.tally.opened_us == 0 {
            state.tally.opened_us = state.attempt_us;
        }
        state.session_ready = false;
        let result = match conn.transport {
            Transport::Sse if conn.http2.is_some() => {
                http2::session(&conn, &mut state, &mut stop).await
            }
            Transport::Sse => sse::session(&conn, &mut state, &mut stop).await,
            Transport::Ws => ws::session(&conn, &mut state, &mut stop).await,
            Transport::Poll => poll::session(&conn, &mut state, &mut stop).await,
        };
        let error = match result {
            Ok(End::Stopped) => break,
            Ok(End::CutOff) => {
                // Not reopened: a slow consumer that was cut off stays off for this run.
                state.tally.cut_off_at_us = Some(now_us());
                Live::bump(&conn.live.cut_off);
                stopped(&mut stop).await;
                break;
            }
            Ok(End::Closed) => None,
            Err(error) => Some(error),
        };
        if *stop.borrow() {
            break;
        }
        if state.tally.ready && state.session_ready {
            // A stream that was up went down.
            let now = now_us();
            if conn.live.cut_on_first_drop.load(Ordering::Relaxed) {
                // The first stream down marks the storm's cut (when the user cuts).
                let _ = conn.live.cut_at_us.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Live::bump(&conn.live.drops);
            state.tally.drops_us.push(now);
        } else if state.tally.ready {
            // A reconnect attempt that failed.
            state.tally.attempts_failed.push(Attempt {
                started_us: state.attempt_us,
                ended_us: now_us(),
                error: Some(AttemptError::of(error.as_ref())),
            });
        }
        if state.tally.ready {
            state.tally.reconnects += 1;
        } else {
            failed_attempts += 1;
            if failed_attempts >= CONNECT_ATTEMPTS {
                let why = error.map_or_else(
                    || "closed before it was ready".to_owned(),
                    |e| e.to_string(),
                );
                state.tally.failure = Some(why);
                Live::bump(&conn.live.failed);
                break;
            }
        }
        let pause = match conn.reconnect {
            Reconnect::Fast => RECONNECT_PAUSE,
            Reconnect::AsBrowser => state.retry.unwrap_or(BROWSER_RETRY),
        };
        tokio::select! {
            _ = stop.wait_for(|&stopped| stopped) => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    state.tally
}

/// A stalled connection's remaining life: the socket stays open and is never read again, until
/// the run stops or the server cuts it off. The server resets an evicted stream (zero linger), so
/// the cut-off shows as a pending socket error (`ECONNRESET`): waited for as error readiness, and
/// asked for every [`STALL_CHECK`] in case readiness never says.
pub async fn stall(conn: &Conn, stream: &TcpStream, stop: &mut watch::Receiver<bool>) -> End {
    Live::bump(&conn.live.stalled);
    // Error readiness without a pending error would return at once forever; after one such
    // wake-up only the timer is used.
    let mut watch_readiness = true;
    loop {
        tokio::select! {
            biased;
            _ = stopped(stop) => return End::Stopped,
            _ = stream.ready(Interest::ERROR), if watch_readiness => {
                watch_readiness = false;
            }
            _ = tokio::time::sleep(STALL_CHECK) => {}
        }
        if is_reset(stream) {
            return End::CutOff;
        }
    }
}

/// Whether the socket holds an error (consumed by the asking): the peer reset it.
fn is_reset(stream: &TcpStream) -> bool {
    matches!(stream.take_error(), Ok(Some(_)) | Err(_))
}

/// Records a delivery in the connection's tally and the thread's latency histogram.
pub fn record(conn: &Conn, tally: &mut ConnTally, delivery: Delivery, shared: &mut ThreadTally) {
    if delivery.n > 0 {
        Live::bump(&conn.live.delivered);
    }
    tally.record(delivery, now_us(), shared);
}

/// Finds the deliveries in one event's data, as `conn.marks` says, and records them (a listening
/// run records the event itself, with its id).
pub fn record_data(
    conn: &Conn,
    state: &mut State,
    data: &[u8],
    id: &[u8],
    shared: &mut ThreadTally,
) {
    let mut each = |delivery: Delivery| {
        if delivery.n > 0 && state.is_dropped_on_purpose() {
            return;
        }
        record(conn, &mut state.tally, delivery, shared);
    };
    match conn.marks {
        Marks::Json => crate::scan::each_delivery(data, &mut each),
        Marks::Token => crate::scan::each_marker(data, &mut each),
        Marks::Listen => {
            Live::bump(&conn.live.delivered);
            state.tally.listen(id, now_us());
        }
    }
}

/// Microseconds since the Unix epoch (the clock the publisher stamps events with).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Waits until the run stops.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the run is over either way.
    let _ = stop.wait_for(|&stopped| stopped).await;
}
