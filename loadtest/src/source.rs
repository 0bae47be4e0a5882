//! Where connections come from, and whether they fit: loopback source addresses and the
//! open-file limit.
//!
//! Every client socket binds a source address before connecting. One address has about 28k
//! ephemeral ports, and ports stay in TIME_WAIT after a run, so each run picks a random
//! `127.A.B.0/24` block and moves to the next address every `per_source` connections. The whole of
//! 127.0.0.0/8 routes to loopback on Linux, so no setup is needed.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

/// File descriptors the harness needs besides its connections: publisher sockets, the runtime's
/// epoll and wake fds, `/proc` reads, stdio, the child's pipes.
pub const FD_MARGIN: u64 = 64;

/// The addresses of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    block: (u8, u8),
    per_source: usize,
}

impl Sources {
    /// A random block for this run.
    pub fn new(per_source: usize) -> Self {
        Sources {
            block: (fastrand::u8(1..=254), fastrand::u8(0..=255)),
            per_source: per_source.max(1),
        }
    }

    /// The source address of the `index`-th connection.
    pub fn address(&self, index: usize) -> Ipv4Addr {
        let step = (index / self.per_source).min(crate::plan::MAX_SOURCES - 1);
        let last = u8::try_from(2 + step).unwrap_or(u8::MAX);
        Ipv4Addr::new(127, self.block.0, self.block.1, last)
    }
}

/// Connects to `server` from `source` (any port), with `TCP_NODELAY`.
pub async fn connect(source: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The open-file limit cannot hold the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdError {
    /// Descriptors the run needs.
    pub needed: u64,
    /// The soft limit after raising it to the hard limit.
    pub limit: u64,
}

impl fmt::Display for FdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this run needs about {} file descriptors but RLIMIT_NOFILE allows {} (hard limit); \
             lower --connections, raise the hard limit (ulimit -Hn, /etc/security/limits.conf, \
             LimitNOFILE=), or split the connections over several client processes against \
             one server (--url)",
            self.needed, self.limit
        )
    }
}

impl std::error::Error for FdError {}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (children started later inherit it) and
/// checks that `connections` plus [`FD_MARGIN`] fit.
pub fn reserve_fds(connections: usize) -> Result<u64, FdError> {
    let needed = connections as u64 + FD_MARGIN;
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft),
    };
    if needed > limit {
        return Err(FdError { needed, limit });
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_step_every_per_source_connections() {
        let sources = Sources::new(1000);
        let first = sources.address(0);
        assert_eq!(first.octets()[0], 127);
        assert_eq!(first.octets()[3], 2);
        assert_eq!(sources.address(999), first);
        assert_eq!(sources.address(1000).octets()[3], 3);
        assert_eq!(sources.address(17_999).octets()[3], 19);
    }

    #[test]
    fn refuses_what_cannot_fit() {
        let error = reserve_fds(10_000_000).expect_err("ten million sockets do not fit");
        assert!(error.needed > error.limit);
        assert!(error.to_string().contains("several client processes"));
    }
}
