//! The executor: one OS thread per worker, each running a tokio current-thread runtime with a
//! `LocalSet`, its own `SO_REUSEPORT` listener and its own hub shard.
//!
//! The kernel spreads incoming connections across the workers' listeners, so there is no shared
//! accept queue and no work stealing: a connection, its shard entry and every frame written to it
//! stay on one core. This file only builds sockets and threads; what runs on them lives in `http`
//! and `hub`. [`Settings`] (in `settings.rs`) is the one translation from the configuration to
//! each component's settings.

mod settings;

pub use settings::Settings;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::task::LocalSet;

use crate::bus::{Bus, Driver};
use crate::chat::Rooms;
use crate::config::Config;
use crate::http::Shared;
use crate::hub::{Hub, Inbox, Shard};
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
    /// The bus's background machinery; closed after the workers stopped.
    driver: Driver,
}

/// The cores this machine offers (1 if it cannot tell).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Binds the listeners and starts the workers. Returns once every listener is bound, so the
/// address is ready for connections. `settings` are the components' settings built from
/// `config` by [`Settings::from_config`]; `config` itself still carries what needs no
/// translation (the listen address, the HTTP handlers' limits, the sampler's period).
pub fn start(config: Config, settings: Settings) -> io::Result<Server> {
    let Settings {
        workers: count,
        bus,
        auth,
        tls,
    } = settings;
    // A rolling restart: the old process on our data directory still holds the port. Share it
    // (SO_REUSEPORT) and wait for the directory's lock before serving (see `store`).
    let handing_over = || {
        config
            .data_dir
            .as_deref()
            .is_some_and(crate::store::is_locked)
    };
    let listeners = bind_listeners(config.listen, count, handing_over)?;
    let local_addr = listeners[0].local_addr()?;
    let (trigger, shutdown) = shutdown::channel();
    let (bus, inboxes, driver) = Bus::start(bus, &shutdown)?;
    let hub = bus.hub().clone();
    let auth = Arc::new(auth);
    let sampler = Sampler::spawn(bus.clone(), config.metrics_interval, shutdown.clone())?;
    let shared = Shared {
        bus,
        auth,
        rooms: Arc::new(Rooms::new()),
        sampler,
        limits: Arc::new(crate::http::Limits::new(&config)),
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
        driver,
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
    /// close (each worker gives up after the configured shutdown timeout), joins the workers and
    /// flushes the durable store, if any.
    pub fn shutdown(self) {
        self.trigger.fire();
        for worker in self.workers {
            if worker.join().is_err() {
                tracing::error!("a worker thread panicked during shutdown");
            }
        }
        self.driver.close();
    }
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
        let shard = Shard::new(shared.bus.hub(), inbox);
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
/// picks the port and the others join it. A port already in use is refused unless
/// `handing_over` says the user is the process this one takes over from.
fn bind_listeners(
    addr: SocketAddr,
    count: usize,
    handing_over: impl Fn() -> bool,
) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        // SO_REUSEPORT would let a second server silently share a port already in use by the
        // same user. Probe it once without the option so that case fails loudly instead.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        if let Err(error) = probe.bind(&addr.into()) {
            if !handing_over() {
                return Err(error);
            }
            tracing::info!(%addr, "the port is held by the sluice process on our data directory: sharing it");
        }
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
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 3, || false).unwrap();
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
        assert!(bind_listeners(addr, 2, || false).is_err());
    }
}
