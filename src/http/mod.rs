//! The hyper glue: the per-worker accept loop, the HTTP/1 connection settings, and the service
//! that routes each request to its handler. Handlers live one per file beside this one.
//!
//! Connections are served with `spawn_local` on the worker that accepted them, so a stream's
//! response body, its hub entry and its socket all stay on one thread. What happens between the
//! accept and hyper (TLS, ALPN, the HTTP/2 preface, which hyper connection) lives in `conn.rs`.

mod body;
mod chat;
mod conformance;
mod conn;
mod cors;
mod events;
mod health;
mod metrics;
mod notify;
mod pages;
mod poll;
mod publish;
mod query;
mod rate;
mod redact;
mod request;
mod response;
mod route;
mod script;
mod stats;
mod subscribe;
mod token;
mod websocket;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::chat::Rooms;
use crate::config::Config;
use crate::hub::{Shard, Topic, Tripwire};
use crate::metrics::Sampler;
use crate::shutdown::{DrainGuard, Shutdown};
use crate::sse::EventName;

pub(crate) use body::Body;
pub(crate) use rate::Limits;

/// How long a client may take to send its request head. Slow-loris connections otherwise hold a
/// slot and two buffers forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connections taken from the accept queue at shutdown have to send their request.
/// They were queued before the listener closed and would be reset with it; a client that
/// connected that late has its request on the wire already, so a second is plenty.
pub const LATE_GRACE: Duration = Duration::from_secs(1);

/// Pause after an accept error such as EMFILE, so a full descriptor table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What all workers share, handed to each worker's [`serve`].
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) bus: Bus,
    pub(crate) auth: Arc<Auth>,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) sampler: Arc<Sampler>,
    pub(crate) limits: Arc<Limits>,
}

/// What every handler on one worker shares. Lives on that worker's thread only.
pub(crate) struct Ctx {
    /// Where events are published and streams opened, embedded or on a cluster.
    pub(crate) bus: Bus,
    pub(crate) auth: Arc<Auth>,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) sampler: Arc<Sampler>,
    pub(crate) shard: Rc<Shard>,
    /// Publish and connection rate limits, shared by every worker.
    pub(crate) limits: Arc<Limits>,
    pub(crate) config: Arc<Config>,
    pub(crate) cors: cors::Cors,
    pub(crate) shutdown: Shutdown,
    pub(crate) broadcast: Topic,
    pub(crate) notification: EventName,
    /// Held by connections that outlive their HTTP exchange (WebSockets), so shutdown waits for
    /// their close handshake.
    pub(crate) drain: DrainGuard,
}

/// Accepts connections until shutdown and serves each on this worker.
pub(crate) async fn serve(
    listener: TcpListener,
    shard: Rc<Shard>,
    shared: Shared,
    config: Arc<Config>,
    mut shutdown: Shutdown,
    drain: DrainGuard,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Shared {
        bus,
        auth,
        rooms,
        sampler,
        limits,
    } = shared;
    let ctx = Rc::new(Ctx {
        bus,
        auth,
        rooms,
        sampler,
        shard,
        limits,
        cors: cors::Cors::new(&config.cors_origin),
        config,
        shutdown: shutdown.clone(),
        broadcast: Topic::broadcast(),
        notification: EventName::parse("notification").expect("a valid event name"),
        drain: drain.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .writev(true)
        .max_buf_size(64 * 1024);
    let h1 = Rc::new(builder.clone());
    // For the connections taken from the accept queue at shutdown: one exchange, then close.
    builder.keep_alive(false);
    let h1_last = Rc::new(builder);
    let serve_one = |stream: tokio::net::TcpStream,
                     peer: std::net::SocketAddr,
                     h1: &Rc<http1::Builder>,
                     shutdown: Shutdown| {
        if !ctx.limits.admit_connection(peer.ip()) {
            // A reconnect storm from one address: close at once, before any buffer exists.
            return;
        }
        let _ = stream.set_nodelay(true);
        if ctx.config.send_buffer > 0 {
            // Bounds what a reader that stops reading pins in the kernel (auto-tuning grows a
            // send buffer to several MiB); the write timeout then cuts it off.
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(ctx.config.send_buffer);
        }
        let serving = conn::serve(stream, peer, ctx.clone(), h1.clone(), tls.clone(), shutdown);
        let guard = drain.clone();
        tokio::task::spawn_local(async move {
            serving.await;
            drop(guard);
        });
    };
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                if !is_transient(&error) {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
                continue;
            }
        };
        serve_one(stream, peer, &h1, shutdown.clone());
    }
    // Closing the listener resets every connection still in its accept queue: clients that
    // connected a moment ago, some with a publish on the wire. Take them first and serve them
    // under a shutdown of their own, fired after LATE_GRACE: one request is answered (a stream
    // open gets its `retry:`, as every stream does now) and the connection closes, so the
    // client's next request finds the port's next listener. Then close, and the kernel sends new
    // connections to the port's other listeners (the next process's, in a rolling restart).
    let Ok(listener) = listener.into_std() else {
        return;
    };
    let (late_trigger, late) = crate::shutdown::channel();
    let mut taken = 0usize;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            // The queue is empty (or the descriptor table full): close now.
            Err(error)
                if !is_transient(&error) || error.kind() == std::io::ErrorKind::WouldBlock =>
            {
                break;
            }
            Err(_) => continue,
        };
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(stream));
        if let Ok(stream) = stream {
            taken += 1;
            serve_one(stream, peer, &h1_last, late.clone());
        }
    }
    drop(listener);
    if taken > 0 {
        tracing::info!(
            taken,
            "serving the connections left in the accept queue at shutdown"
        );
        tokio::task::spawn_local(async move {
            tokio::time::sleep(LATE_GRACE).await;
            late_trigger.fire();
        });
    } else {
        late_trigger.fire();
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// The per-connection service. Its future is [`Reply`], not a boxed `async fn`, so requests that
/// answer at once (every stream open) keep hyper's in-flight slot small and drop the request
/// (and with it hyper's read buffer) before the stream starts.
struct Service {
    ctx: Rc<Ctx>,
    tripwire: Rc<Tripwire>,
    peer: std::net::SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Reply;

    fn call(&self, mut request: Request<Incoming>) -> Reply {
        request.extensions_mut().insert(rate::Peer(self.peer));
        route::dispatch(&self.ctx, &self.tripwire, request)
    }
}

/// A response that is either ready now or still being produced (a request body being read).
pub(crate) enum Reply {
    Ready(Option<Response<Body>>),
    Later(Pin<Box<dyn Future<Output = Response<Body>>>>),
}

impl Future for Reply {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Reply::Ready(response) => Poll::Ready(Ok(response
                .take()
                .expect("a Reply is not polled after completion"))),
            Reply::Later(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}
