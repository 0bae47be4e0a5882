//! SSE streams as HTTP/2 streams (`--http2`): over TLS with `h2` agreed by ALPN, or over plain
//! TCP with prior knowledge (h2c). `--streams-per-connection N` puts N streams on one
//! connection: the streams of a [`Group`] share it, and the first stream that finds it missing
//! or dead opens a new one (the others wait for it), so a reconnect after the server went away
//! opens one connection per group again.
//!
//! Each stream is a `GET` with `Accept: text/event-stream` (and `Last-Event-ID` when resuming);
//! its DATA frames go through the same event-stream scanner as HTTP/1.1 ([`super::sse`]), and
//! bytes on the wire count the DATA payload. Received bytes are given back to the flow-control
//! window as soon as they are scanned. A stalled stream keeps taking DATA frames off the
//! connection (so it never blocks the others on the client side) but never gives their bytes
//! back, which closes its window at the server, as a reader that stopped reading does; the
//! server cutting it off shows as a reset of that stream.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::sse::Scanner;
use super::{stopped, Conn, End, SessionError, State, READY_TIMEOUT};
use crate::tally::Live;
use crate::tls::Tls;

/// Each stream's receive window: what a stream may be sent before it gives bytes back, and so
/// what a stalled stream takes in before its window closes at the server. Browsers open wide
/// windows for streaming (Chrome 6 MiB per stream); the protocol's 64 KiB default would cap each
/// stream at one window per round trip, which kilobyte events at 100/s outrun.
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// Largest window HTTP/2 allows.
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Streams sharing one connection, and the connection while it lives.
#[derive(Debug)]
pub struct Group {
    server: SocketAddr,
    source: Ipv4Addr,
    tls: Option<Arc<Tls>>,
    /// Streams planned on the connection (sizes its receive window).
    streams: u32,
    /// Counts the connections opened.
    live: Arc<Live>,
    send: tokio::sync::Mutex<Option<SendRequest<Bytes>>>,
}

impl Group {
    /// A group whose connection goes from `source` to `server`, with room for `streams`.
    pub fn new(
        server: SocketAddr,
        source: Ipv4Addr,
        tls: Option<Arc<Tls>>,
        streams: usize,
        live: Arc<Live>,
    ) -> Self {
        Group {
            server,
            source,
            tls,
            live,
            streams: u32::try_from(streams).unwrap_or(u32::MAX),
            send: tokio::sync::Mutex::new(None),
        }
    }

    /// A handle ready to open a stream on the group's connection, opening the connection if it
    /// is not there or has gone.
    async fn sender(&self) -> Result<SendRequest<Bytes>, SessionError> {
        let mut slot = self.send.lock().await;
        if let Some(send) = slot.as_ref() {
            if let Ok(send) = send.clone().ready().await {
                return Ok(send);
            }
        }
        *slot = None;
        let tcp = crate::source::connect(self.source, self.server).await?;
        let send = match &self.tls {
            Some(tls) => self.handshake(tls.connect(tcp, true).await?).await?,
            None => self.handshake(tcp).await?,
        };
        Live::bump(&self.live.http2_connections);
        *slot = Some(send.clone());
        send.ready().await.map_err(h2_error)
    }

    /// The HTTP/2 preface and settings on `io`; the connection is driven by a task of its own
    /// on this thread until every handle and stream of it is gone.
    async fn handshake<T>(&self, io: T) -> Result<SendRequest<Bytes>, SessionError>
    where
        T: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        // Every stream's window fits in the connection's, so streams that stall cannot use up
        // the window the others need.
        let connection_window = STREAM_WINDOW
            .saturating_mul(self.streams.max(16))
            .min(MAX_WINDOW);
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(connection_window)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(h2_error)?;
        tokio::task::spawn_local(async move {
            // Its end is seen by the streams (their reads fail) and by the next `sender`.
            let _ = connection.await;
        });
        Ok(send)
    }
}

fn h2_error(error: h2::Error) -> SessionError {
    if error.is_io() {
        match error.into_io() {
            Some(io) => SessionError::Io(io),
            None => SessionError::Http2("connection failed".to_owned()),
        }
    } else {
        SessionError::Http2(error.to_string())
    }
}

/// One HTTP/2 stream's worth of the SSE stream.
pub async fn session(
    conn: &Conn,
    state: &mut State,
    stop: &mut watch::Receiver<bool>,
) -> Result<End, SessionError> {
    let Some(group) = conn.http2.as_ref() else {
        return Err(SessionError::Protocol("no HTTP/2 connection group"));
    };
    let ready_by = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut send = tokio::select! {
        _ = stopped(stop) => return Ok(End::Stopped),
        _ = tokio::time::sleep_until(ready_by) => return Err(SessionError::Timeout),
        send = group.sender() => send?,
    };
    let scheme = if conn.tls.is_some() { "https" } else { "http" };
    let mut request = http::Request::get(format!("{scheme}://{}{}", conn.host, conn.path))
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache");
    if !state.last_id.is_empty() {
        request = request.header("last-event-id", state.last_id.as_slice());
    }
    let request = request
        .body(())
        .map_err(|_| SessionError::Protocol("cannot build the request"))?;
    // What the request carries (path, authority, Last-Event-ID); HPACK makes the frames on the
    // wire a little different, and the harness does not see them.
    state.tally.bytes_written += (conn.path.len() + conn.host.len() + state.last_id.len()) as u64;
    let (response, _) = send.send_request(request, true).map_err(h2_error)?;
    let response = tokio::select! {
        _ = stopped(stop) => return Ok(End::Stopped),
        _ = tokio::time::sleep_until(ready_by) => return Err(SessionError::Timeout),
        response = response => response.map_err(h2_error)?,
    };
    if response.status() != http::StatusCode::OK {
        return Err(SessionError::Status(response.status().as_u16()));
    }
    if !conn.target.has_position() {
        state.mark_ready(conn, &mut conn.thread.borrow_mut().tally);
    }
    let mut body = response.into_body();
    let mut scanner = Scanner::new(&state.last_id);
    let mut stalled = false;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stopped(stop) => return Ok(End::Stopped),
            _ = tokio::time::sleep_until(ready_by), if !state.session_ready => {
                return Err(SessionError::Timeout)
            }
            frame = body.data() => frame,
        };
        let data = match frame {
            None => return Ok(End::Closed),
            Some(Ok(data)) => data,
            // The server reset the stream it had stopped being able to write to.
            Some(Err(error)) if stalled && error.is_reset() => return Ok(End::CutOff),
            Some(Err(error)) => return Err(h2_error(error)),
        };
        if stalled {
            // Taken off the connection, never given back to the window.
            continue;
        }
        state.tally.bytes_read += data.len() as u64;
        state.tally.reads += 1;
        {
            let mut thread = conn.thread.borrow_mut();
            scanner.feed(&data, conn, state, &mut thread.tally)?;
        }
        if let Some(retry) = scanner.retry() {
            state.retry = Some(retry);
        }
        if conn.stall && state.tally.ready {
            stalled = true;
            Live::bump(&conn.live.stalled);
            continue;
        }
        // A window update for bytes already read cannot fail in a way that matters here: a
        // stream that is gone shows on the next read.
        let _ = body.flow_control().release_capacity(data.len());
    }
}
