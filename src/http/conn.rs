//! One accepted connection, from its first byte to its end, on the worker that accepted it: the
//! TLS handshake and ALPN (`h2`, `http/1.1`, or an ACME validation that is closed at once), or on
//! a plain listener the HTTP/2 preface sniff (h2c with prior knowledge beside HTTP/1.1 on one
//! port); then hyper's HTTP/1.1 connection (with upgrades, for WebSocket) or its HTTP/2
//! connection with a local executor, so every stream of it runs on this thread and this shard.
//!
//! Slow consumers: on HTTP/1.1 the connection's [`Tripwire`] drops the whole connection (it holds
//! one stream at a time). On HTTP/2 each request gets its own tripwire, and the stream's task is
//! dropped when it trips, which makes the HTTP/2 layer send RST_STREAM(CANCEL) for that stream
//! alone: its body may never be polled again while the peer's flow-control window for it is shut,
//! so waiting for the body to report the eviction would hold the stream open forever.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{Ctx, Service};
use crate::hub::Tripwire;
use crate::shutdown::Shutdown;
use crate::tls::{ALPN_ACME, ALPN_H2};

/// How long a client may take to complete the TLS handshake. Like the header read timeout, it
/// keeps half-open handshakes from holding a slot and their buffers.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = super::HEADER_READ_TIMEOUT;

/// The HTTP/2 connection preface a client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Pause between two looks at a connection whose first bytes are a strict prefix of the HTTP/2
/// preface. Clients send the 24-byte preface in one segment, so this almost never runs.
const SNIFF_RETRY: Duration = Duration::from_millis(5);

/// Interval of HTTP/2 PING frames. A peer that vanished without a FIN (a phone that lost its
/// network) is found within interval + timeout instead of after minutes of TCP retransmission.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(30);

/// How long a PING may stay unanswered before the connection is closed.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Receive window of each HTTP/2 stream: what a client may send on one request before we read
/// it. Requests here are small (publish bodies are capped by `--max-body`), so the protocol's
/// 64 KiB default is right; a larger window would only let one client park more of our memory.
pub const H2_STREAM_WINDOW: u32 = 64 * 1024;

/// Receive window of a whole HTTP/2 connection: room for a few concurrent publishes.
pub const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// Most bytes HTTP/2 buffers for one stream beyond what the peer's window lets out. Sized to one
/// write batch of the hub (`MAX_BATCH_BYTES`), so a stalled stream holds at most one batch here
/// plus its window in the kernel, and its queue in the hub fills and evicts it as on HTTP/1.1.
pub const H2_SEND_BUFFER: usize = crate::hub::MAX_BATCH_BYTES;

/// A transport hyper can serve whose TCP socket we can still reach (to reset it).
trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http1,
    Http2,
}

/// Serves one accepted connection to its end.
///
/// This is the connection's task, allocated for the life of the connection at the size of its
/// largest state, so every state that is large or short-lived is boxed: the sniff's timers (freed
/// once the version is known), the TLS path (a TLS stream is several KiB), and each protocol's
/// connection. An idle plain HTTP/1.1 stream then holds a task of a few hundred bytes besides
/// hyper's connection.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Rc<Ctx>,
    h1: Rc<http1::Builder>,
    tls: Option<TlsAcceptor>,
    mut shutdown: Shutdown,
) {
    if let Some(acceptor) = tls {
        return Box::pin(serve_tls(stream, peer, ctx, &h1, acceptor, shutdown)).await;
    }
    let version = Box::pin(async {
        tokio::select! {
            version = tokio::time::timeout(super::HEADER_READ_TIMEOUT, sniff(&stream)) => {
                version.ok().flatten()
            }
            _ = shutdown.recv() => None,
        }
    })
    .await;
    match version {
        Some(Version::Http2) => Box::pin(serve_h2(stream, peer, ctx, shutdown)).await,
        Some(Version::Http1) => Box::pin(serve_h1(stream, peer, ctx, &h1, shutdown)).await,
        None => {}
    }
}

/// The TLS handshake, then the protocol ALPN chose. No await holds the TLS stream itself, so
/// this future stays small once the connection is served.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Rc<Ctx>,
    h1: &http1::Builder,
    acceptor: TlsAcceptor,
    mut shutdown: Shutdown,
) {
    let accepting = Box::pin(tokio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT,
        acceptor.accept(stream),
    ));
    let handshake = tokio::select! {
        handshake = accepting => handshake,
        _ = shutdown.recv() => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let alpn = stream.get_ref().1.alpn_protocol();
    if alpn == Some(ALPN_ACME) {
        // A TLS-ALPN-01 validation: the handshake itself was the answer.
        Box::pin(async move {
            let mut stream = stream;
            let _ = stream.shutdown().await;
        })
        .await;
    } else if alpn == Some(ALPN_H2) {
        Box::pin(serve_h2(stream, peer, ctx, shutdown)).await;
    } else {
        Box::pin(serve_h1(stream, peer, ctx, h1, shutdown)).await;
    }
}

/// Tells HTTP/2 with prior knowledge from HTTP/1.x by the first bytes, without consuming them.
/// `None` when the peer closed before sending anything.
async fn sniff(stream: &TcpStream) -> Option<Version> {
    let mut head = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut head).await.ok()?;
        if n == 0 {
            return None;
        }
        if !H2_PREFACE.starts_with(&head[..n]) {
            return Some(Version::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Version::Http2);
        }
        tokio::time::sleep(SNIFF_RETRY).await;
    }
}

/// Runs an HTTP/1.1 connection to its end: normally, through a graceful shutdown, or torn down
/// at once when its stream is evicted as a slow consumer. One function, so the connection
/// occupies one slot of this task's future, not one per nested call.
async fn serve_h1<S: Socket>(
    io: S,
    peer: SocketAddr,
    ctx: Rc<Ctx>,
    builder: &http1::Builder,
    mut shutdown: Shutdown,
) {
    let tripwire = Rc::new(Tripwire::default());
    let mut connection = builder
        .serve_connection(
            TokioIo::new(io),
            Service {
                ctx,
                tripwire: tripwire.clone(),
                peer,
            },
        )
        .with_upgrades();
    let result = tokio::select! {
        result = &mut connection => Some(result),
        _ = tripwire.tripped() => None,
        _ = shutdown.recv() => {
            // Streams end themselves (their shard sends each a retry and closes it);
            // this closes idle keep-alive connections and stops new requests.
            std::pin::Pin::new(&mut connection).graceful_shutdown();
            tokio::select! {
                result = &mut connection => Some(result),
                _ = tripwire.tripped() => None,
            }
        }
    };
    match result {
        Some(Err(error)) if !error.is_incomplete_message() => {
            tracing::debug!(%error, "connection ended with an error");
        }
        Some(_) => {}
        None => {
            // A slow consumer: reset the connection so the kernel frees its send buffer now
            // instead of retrying delivery to a reader that is not reading.
            if let Some(parts) = connection.into_parts() {
                let _ = parts.io.inner().tcp().set_zero_linger();
            }
        }
    }
}

async fn serve_h2<S: Socket>(io: S, peer: SocketAddr, ctx: Rc<Ctx>, mut shutdown: Shutdown) {
    let handoff: Rc<Handoff> = Rc::default();
    let mut builder = http2::Builder::new(LocalExec {
        handoff: handoff.clone(),
    });
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(ctx.config.max_streams_per_connection)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_SEND_BUFFER);
    let connection = builder.serve_connection(TokioIo::new(io), H2Service { ctx, handoff, peer });
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.recv() => {
            // GOAWAY: no new streams. Open streams end themselves with a jittered retry (their
            // shard ends each one), then the connection closes.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "HTTP/2 connection ended with an error");
    }
}

/// The tripwire of the request hyper has just handed to [`H2Service`], waiting for the
/// executor to spawn that request's stream task. hyper calls the service and then spawns the
/// stream's task in the same step, so the slot holds at most one tripwire and it always
/// belongs to the task spawned next.
type Handoff = Cell<Option<Rc<Tripwire>>>;

/// The per-request service of an HTTP/2 connection: a tripwire per request, not per connection.
struct H2Service {
    ctx: Rc<Ctx>,
    handoff: Rc<Handoff>,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for H2Service {
    type Response = hyper::Response<super::Body>;
    type Error = std::convert::Infallible;
    type Future = super::Reply;

    fn call(&self, mut request: hyper::Request<hyper::body::Incoming>) -> super::Reply {
        request
            .extensions_mut()
            .insert(super::rate::Peer(self.peer));
        let tripwire = Rc::new(Tripwire::default());
        let reply = super::route::dispatch(&self.ctx, &tripwire, request);
        self.handoff.set(Some(tripwire));
        reply
    }
}

/// Runs HTTP/2 stream tasks on this worker (`spawn_local`; nothing needs to be `Send`). A task
/// whose request left a tripwire in the handoff is dropped when that wire trips.
#[derive(Clone)]
struct LocalExec {
    handoff: Rc<Handoff>,
}

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, task: F) {
        match self.handoff.take() {
            Some(tripwire) => {
                tokio::task::spawn_local(async move {
                    tokio::select! {
                        _ = task => {}
                        // Dropping the task drops the stream's handles: RST_STREAM(CANCEL).
                        _ = tripwire.tripped() => {}
                    }
                });
            }
            None => {
                tokio::task::spawn_local(task);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn sniff_bytes(bytes: &'static [u8]) -> Option<Version> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(bytes).await.unwrap();
            if bytes.is_empty() {
                drop(client);
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let (server, _) = listener.accept().await.unwrap();
        let version = tokio::time::timeout(Duration::from_millis(100), sniff(&server))
            .await
            .ok()
            .flatten();
        client.await.unwrap();
        version
    }

    #[tokio::test]
    async fn the_preface_means_http2_and_anything_else_http1() {
        assert_eq!(sniff_bytes(H2_PREFACE).await, Some(Version::Http2));
        assert_eq!(
            sniff_bytes(b"GET / HTTP/1.1\r\n\r\n").await,
            Some(Version::Http1)
        );
        assert_eq!(sniff_bytes(b"PRX").await, Some(Version::Http1));
        // A strict prefix of the preface waits for more.
        assert_eq!(sniff_bytes(b"PRI * HTTP/2").await, None);
        assert_eq!(sniff_bytes(b"").await, None);
    }
}
