//! Rate limits: token buckets per publisher (`--publish-rate`, `--publish-burst`) and per client
//! address for new connections (`--connection-rate`), shared by every worker.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` per second; each publish (or
//! accepted connection) takes one. A publisher is its token's `sub`, the operator key, or the
//! client address when anonymous, so neither a leaked token nor an open `--auth off` server lets
//! one party publish as fast as the server accepts. Both limits are off by default: a trusted
//! backend publishing through Sluice should not meet a limit it did not ask for.
//!
//! The tables are bounded: past [`MAX_KEYS`] entries, buckets that have refilled completely (they
//! carry no information) are dropped, and if that frees nothing the table starts over. The lock is
//! held for one lookup and a few float operations.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;

use super::response::HandlerError;
use super::Ctx;
use crate::auth::Publisher;

/// Most keys a limiter remembers at once (about 100 bytes each).
pub const MAX_KEYS: usize = 65_536;

/// The client address of a request, put into its extensions by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// Who a publish is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PublisherKey {
    Operator,
    User(String),
    Address(IpAddr),
}

/// One token bucket per key.
pub(crate) struct Limiter<K> {
    /// Tokens added per second.
    rate: f64,
    /// Most tokens a bucket holds.
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
    refused: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq> Limiter<K> {
    /// A limiter of `rate` per second with bursts of `burst`; `None` when `rate` is 0 (off).
    pub(crate) fn new(rate: u32, burst: Option<u32>) -> Option<Self> {
        if rate == 0 {
            return None;
        }
        Some(Limiter {
            rate: f64::from(rate),
            burst: f64::from(burst.unwrap_or(rate).max(1)),
            buckets: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        })
    }

    /// Takes a token for `key` at `now`, or says how long until one is there.
    pub(crate) fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(&key) {
            let full = Duration::from_secs_f64(self.burst / self.rate);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full);
            if buckets.len() >= MAX_KEYS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens).max(0.0) / self.rate;
        drop(buckets);
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(Duration::from_secs_f64(wait))
    }

    /// Requests refused since start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The limiters of one server.
#[derive(Default)]
pub(crate) struct Limits {
    publish: Option<Limiter<PublisherKey>>,
    connect: Option<Limiter<IpAddr>>,
}

impl Limits {
    /// The limits the configuration asks for.
    pub(crate) fn new(config: &crate::config::Config) -> Self {
        Limits {
            publish: Limiter::new(config.publish_rate, config.publish_burst),
            connect: Limiter::new(config.connection_rate, None),
        }
    }

    /// Whether a new connection from `peer` may be served.
    pub(crate) fn admit_connection(&self, peer: IpAddr) -> bool {
        self.connect
            .as_ref()
            .is_none_or(|limiter| limiter.take(peer, Instant::now()).is_ok())
    }

    /// Publishes refused and connections closed by the limits, since start.
    pub(crate) fn refused(&self) -> (u64, u64) {
        (
            self.publish.as_ref().map_or(0, Limiter::refused),
            self.connect.as_ref().map_or(0, Limiter::refused),
        )
    }
}

/// Authenticates the publisher of `request` and takes one publish from its bucket: the
/// publishing handlers' first step.
pub(crate) fn publisher(ctx: &Ctx, request: &Request<Incoming>) -> Result<Publisher, HandlerError> {
    let publisher = ctx
        .auth
        .publisher(request.headers(), request.uri().query())?;
    limit(ctx, &publisher, request)?;
    Ok(publisher)
}

/// Takes one publish from the bucket of `publisher` (the client address when anonymous).
pub(crate) fn limit(
    ctx: &Ctx,
    publisher: &Publisher,
    request: &Request<Incoming>,
) -> Result<(), HandlerError> {
    let Some(limiter) = &ctx.limits.publish else {
        return Ok(());
    };
    let key = match publisher {
        Publisher::Operator => PublisherKey::Operator,
        Publisher::User(principal) => PublisherKey::User(principal.user.as_str().to_owned()),
        Publisher::Anonymous => match request.extensions().get::<Peer>() {
            Some(Peer(addr)) => PublisherKey::Address(addr.ip()),
            None => PublisherKey::Address(IpAddr::from([0, 0, 0, 0])),
        },
    };
    limiter
        .take(key, Instant::now())
        .map_err(|wait| HandlerError::TooManyRequests(wait.as_secs_f64().ceil() as u64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limiter = Limiter::new(2, Some(3)).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", start).is_ok());
        }
        let wait = limiter.take("a", start).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        // Another key has its own bucket.
        assert!(limiter.take("b", start).is_ok());
        // Half a second later one token is back (rate 2/s), not two.
        let later = start + Duration::from_millis(500);
        assert!(limiter.take("a", later).is_ok());
        assert!(limiter.take("a", later).is_err());
        assert_eq!(limiter.refused(), 2);
        assert!(Limiter::<&str>::new(0, None).is_none());
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = Limiter::new(1, None).unwrap();
        let now = Instant::now();
        for i in 0..(MAX_KEYS as u32 + 10) {
            let _ = limiter.take(i, now);
        }
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_KEYS);
    }
}
