//! The executor: one OS thread per worker, each running a tokio current-thread runtime with a
//! `LocalSet`, its own `SO_REUSEPORT` listener and its own hub shard.
//!
//! The kernel spreads incoming connections across the workers' listeners, so there is no shared
//! accept queue and no work stealing: a connection, its shard entry and every frame written to it
//! stay on one core. This file only builds sockets and threads; what runs on them lives in `http`
//! and `hub`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::task::LocalSet;

use crate::broker::{Broker, BrokerHistory, Caps};
use crate::chat::Rooms;
use crate::config::Config;
use crate::http::Shared;
use crate::hub::{History, Hub, Inbox, MemoryHistory, Shard};
use crate::metrics::Sampler;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::tls::Tls;

/// Pending-connection queue per listener. A reconnect storm after a restart arrives all at once;
/// a deep backlog lets the kernel hold it instead of refusing connections (capped by somaxconn).
pub const LISTEN_BACKLOG: i32 = 8192;

/// A running server.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    hub: Hub,
    trigger: Trigger,
    workers: Vec<JoinHandle<()>>,
    /// The runtime that drives the broker's Redis connection, when there is a broker.
    _broker: Option<tokio::runtime::Runtime>,
}

/// Binds the listeners and starts the workers, serving plain HTTP. Returns once every listener
/// is bound, so the address is ready for connections.
pub fn start(config: Config) -> io::Result<Server> {
    start_with(config, None)
}

/// [`start`], serving HTTPS with `tls` when it is given (the caller loads and checks the
/// certificate first, so a bad one is a configuration error, not a start-up failure).
pub fn start_with(config: Config, tls: Option<Arc<Tls>>) -> io::Result<Server> {
    let available = std::thread::available_parallelism().map_or(1, usize::from);
    let count = config.workers_for(available);
    let listeners = bind_listeners(config.listen, count)?;
    let local_addr = listeners[0].local_addr()?;
    let (channel_limits, user_limits) = config.history_limits();
    let (trigger, shutdown) = shutdown::channel();
    let (hub, inboxes, broker) = match &config.broker {
        None => {
            let history = Arc::new(MemoryHistory::new(channel_limits, user_limits));
            let (hub, inboxes) = Hub::new(config.hub_settings(count), history.clone());
            spawn_history_sweeper(history, shutdown.clone())?;
            (hub, inboxes, None)
        }
        Some(url) => {
            let caps = Caps {
                channel: channel_limits.capacity,
                channel_ttl: channel_limits.ttl,
                user: user_limits.capacity,
                user_ttl: user_limits.ttl,
            };
            let (broker, runtime) = Broker::connect(url, caps)
                .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
            let history = Arc::new(BrokerHistory::new(broker.clone()));
            let (hub, inboxes) = Hub::new(config.hub_settings(count), history);
            broker.spawn_reader(hub.clone(), shutdown.clone())?;
            (hub, inboxes, Some((broker, runtime)))
        }
    };
    let auth = Arc::new(
        config
            .auth()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
    );
    let sampler = Sampler::spawn(
        hub.clone(),
        config.metrics_interval,
        broker.is_some(),
        shutdown.clone(),
    )?;
    let shared = Shared {
        hub: hub.clone(),
        auth,
        rooms: Arc::new(Rooms::new()),
        sampler,
        broker: broker.as_ref().map(|(broker, _)| broker.clone()),
    };
    let config = Arc::new(config);
    let mut workers = Vec::with_capacity(count);
    for (listener, inbox) in listeners.into_iter().zip(inboxes) {
        let shared = shared.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        let handle = std::thread::Builder::new()
            .name(format!("sluice-worker-{}", inbox.index()))
            .spawn(move || run_worker(listener, inbox, shared, config, shutdown, tls))?;
        workers.push(handle);
    }
    Ok(Server {
        local_addr,
        hub,
        trigger,
        workers,
        _broker: broker.map(|(_, runtime)| runtime),
    })
}

impl Server {
    /// The address the listeners are bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shutdown signal, for services outside the workers (the ACME client) to stop with them.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.trigger.subscribe()
    }

    /// The hub, for publishing from the embedding program.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Stops accepting, ends every stream with a jittered `retry:`, waits for connections to
    /// close (each worker gives up after the configured shutdown timeout) and joins the workers.
    pub fn shutdown(self) {
        self.trigger.fire();
        for worker in self.workers {
            if worker.join().is_err() {
                tracing::error!("a worker thread panicked during shutdown");
            }
        }
    }
}

/// How often expired history is dropped. Expiry is also checked on every append and replay, so
/// this only bounds how long the memory of a quiet channel lingers.
pub const HISTORY_SWEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Expires history on its own thread, so no worker's event loop ever walks every channel.
fn spawn_history_sweeper(history: Arc<MemoryHistory>, shutdown: Shutdown) -> io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-history".to_owned())
        .spawn(move || {
            let tick = std::time::Duration::from_millis(100);
            let mut waited = std::time::Duration::ZERO;
            while !shutdown.is_fired() {
                std::thread::sleep(tick);
                waited += tick;
                if waited >= HISTORY_SWEEP_PERIOD {
                    history.sweep();
                    waited = std::time::Duration::ZERO;
                }
            }
        })?;
    Ok(())
}

fn run_worker(
    listener: std::net::TcpListener,
    inbox: Inbox,
    shared: Shared,
    config: Arc<Config>,
    shutdown: Shutdown,
    tls: Option<Arc<Tls>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot build a worker runtime");
            return;
        }
    };
    let local = LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot register the listener");
                return;
            }
        };
        let shard = Shard::new(&shared.hub, inbox);
        tokio::task::spawn_local(shard.clone().run(shutdown.clone()));
        let (drain, guard) = shutdown::drain();
        crate::http::serve(
            listener,
            shard,
            shared,
            config.clone(),
            shutdown,
            guard,
            tls.map(|tls| tls.acceptor()),
        )
        .await;
        if tokio::time::timeout(config.shutdown_timeout, drain.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout reached; closing the remaining connections");
        }
    });
}

/// Binds `count` listeners on one address with `SO_REUSEPORT`. With port 0 the first listener
/// picks the port and the others join it.
fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        // SO_REUSEPORT would let a second server silently share a port already in use by the
        // same user. Probe it once without the option so that case fails loudly instead.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
        drop(probe);
    }
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let listener = bind_one(bound)?;
        if bound.port() == 0 {
            bound = listener.local_addr()?;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listeners_share_one_ephemeral_port() {
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    }

    #[test]
    fn a_port_in_use_is_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        assert!(bind_listeners(addr, 2).is_err());
    }
}
