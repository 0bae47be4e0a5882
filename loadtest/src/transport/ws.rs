//! The WebSocket client: `GET /ws?channel=` through tokio-tungstenite over a socket wrapper that
//! counts every byte both ways (the upgrade exchange and frame headers included), one JSON text
//! message per event scanned for `"id"`, `"event"` and the `"n"`/`"t"` payload.
//!
//! Ready means the server's `{"event":"position"}` message arrived. A reconnect resumes with
//! `lastEventId=`. tungstenite answers the server's pings itself while the stream is read. A
//! stalled connection stops polling the stream after the position message.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::{record, stopped, Conn, End, SessionError, State, READY_TIMEOUT};
use crate::scan;
use crate::tally::ThreadTally;

/// tungstenite's read buffer per connection. Its default (128 KiB) times 9 000 connections
/// would be a gigabyte; events are a few hundred bytes.
const READ_BUFFER: usize = 4 * 1024;

/// Largest message accepted.
const MAX_MESSAGE: usize = 1024 * 1024;

/// A socket that counts what passes through it.
#[derive(Debug)]
pub struct Counted {
    inner: TcpStream,
    /// Bytes read.
    pub read: u64,
    /// Bytes written.
    pub written: u64,
    /// Reads that returned data.
    pub reads: u64,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read += n as u64;
        self.reads += u64::from(n > 0);
        result
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.written += n as u64;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One TCP connection's worth of the stream.
pub async fn session(
    conn: &Conn,
    state: &mut State,
    stop: &mut watch::Receiver<bool>,
) -> Result<End, SessionError> {
    let ready_by = tokio::time::Instant::now() + READY_TIMEOUT;
    let stream = tokio::select! {
        _ = stopped(stop) => return Ok(End::Stopped),
        _ = tokio::time::sleep_until(ready_by) => return Err(SessionError::Timeout),
        stream = crate::source::connect(conn.source, conn.server) => stream?,
    };
    let counted = Counted {
        inner: stream,
        read: 0,
        written: 0,
        reads: 0,
    };
    let url = url(conn, &state.last_id);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE));
    let handshake = tokio_tungstenite::client_async_with_config(url, counted, Some(config));
    let mut socket = tokio::select! {
        _ = stopped(stop) => return Ok(End::Stopped),
        _ = tokio::time::sleep_until(ready_by) => return Err(SessionError::Timeout),
        result = handshake => match result {
            Ok((socket, _response)) => socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(SessionError::Status(response.status().as_u16()))
            }
            Err(error) => return Err(SessionError::WebSocket(error.to_string())),
        },
    };
    let end = loop {
        let message = tokio::select! {
            biased;
            _ = stopped(stop) => {
                // A polite close; the run is over, so its outcome does not matter.
                let _ = tokio::time::timeout(std::time::Duration::from_millis(100), socket.close(None)).await;
                break Ok(End::Stopped);
            }
            _ = tokio::time::sleep_until(ready_by), if !state.tally.ready => {
                break Err(SessionError::Timeout);
            }
            message = socket.next() => message,
        };
        match message {
            None | Some(Ok(Message::Close(_))) => break Ok(End::Closed),
            Some(Ok(Message::Text(text))) => on_message(conn, state, text.as_bytes()),
            Some(Ok(Message::Binary(bytes))) => on_message(conn, state, &bytes),
            Some(Ok(_)) => {}
            Some(Err(error)) => break Err(SessionError::WebSocket(error.to_string())),
        }
        if conn.stall && state.tally.ready {
            // Never polled again: no reads, and no pongs either.
            break Ok(super::stall(conn, &socket.get_ref().inner, stop).await);
        }
    };
    let counted = socket.get_ref();
    state.tally.bytes_read += counted.read;
    state.tally.bytes_written += counted.written;
    state.tally.reads += counted.reads;
    end
}

/// One message: an event (`"event":"message"`, with data), or a control message.
fn on_message(conn: &Conn, state: &mut State, text: &[u8]) {
    let mut thread = conn.thread.borrow_mut();
    let shared: &mut ThreadTally = &mut thread.tally;
    let event = scan::string_field(text, b"\"event\"").unwrap_or(b"message");
    if let Some(id) = scan::string_field(text, b"\"id\"") {
        state.set_last_id(id);
    }
    match event {
        b"message" => {
            if let Some((delivery, _)) = scan::next_delivery(text) {
                record(conn, &mut state.tally, delivery, shared);
            }
        }
        b"position" => state.mark_ready(conn, shared),
        b"reset" => state.tally.resets += 1,
        b"dropped" => state.tally.dropped_notices += 1,
        _ => {}
    }
}

/// `ws://server/ws?channel=…[&lastEventId=…]`.
fn url(conn: &Conn, last_id: &[u8]) -> String {
    let mut url = format!("ws://{}{}", conn.server, conn.path);
    if !last_id.is_empty() {
        url.push_str("&lastEventId=");
        url.push_str(&String::from_utf8_lossy(last_id));
    }
    url
}
