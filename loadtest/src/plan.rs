//! What one run does: the transport, the server kind, the workload (connections, rate, bursts,
//! duration) and the client's own knobs, validated once before anything connects.
//!
//! Also the per-server URL shapes (`Target`): where to publish and where to subscribe, so the
//! transports and the publisher never spell a path themselves.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The client protocol of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET /events`, `text/event-stream`.
    Sse,
    /// `GET /ws`, one JSON text message per event.
    Ws,
    /// `GET /poll?since=`, a JSON batch per request.
    Poll,
}

impl Transport {
    /// Every transport, in the order `compare` runs them.
    pub const ALL: [Transport; 3] = [Transport::Sse, Transport::Ws, Transport::Poll];

    /// The name used on the command line and in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::Poll => "poll",
        }
    }

    /// The column title of the comparison table.
    pub fn title(self) -> &'static str {
        match self {
            Transport::Sse => "SSE",
            Transport::Ws => "WebSockets",
            Transport::Poll => "Long Polling",
        }
    }
}

/// The kind of server under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Sluice itself.
    Sluice,
    /// The Express baseline in `loadtest/baselines/express` (SSE only).
    Express,
    /// nginx with Nchan, from `loadtest/baselines/nchan` (SSE only).
    Nchan,
}

impl Target {
    /// The name used on the command line and in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Sluice => "sluice",
            Target::Express => "express",
            Target::Nchan => "nchan",
        }
    }

    /// Whether the server speaks `transport`.
    pub fn supports(self, transport: Transport) -> bool {
        self == Target::Sluice || transport == Transport::Sse
    }

    /// Path and query of the publish endpoint.
    pub fn publish_path(self, channel: &str) -> String {
        match self {
            Target::Sluice => "/api/publish".to_owned(),
            Target::Express => "/publish".to_owned(),
            Target::Nchan => format!("/publish?channel={channel}"),
        }
    }

    /// Path and query a subscriber of `transport` opens.
    pub fn subscribe_path(self, transport: Transport, channel: &str) -> String {
        match transport {
            Transport::Sse => format!("/events?channel={channel}"),
            Transport::Ws => format!("/ws?channel={channel}"),
            Transport::Poll => format!("/poll?channel={channel}"),
        }
    }

    /// Whether a stream announces readiness in-band (Sluice's position frame or message). The
    /// baselines register a subscriber before they send the response head, so the head is the
    /// signal there.
    pub fn has_position(self) -> bool {
        self == Target::Sluice
    }
}

/// One run's workload and client settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// Client protocol.
    pub transport: Transport,
    /// Server kind (decides URL shapes and what readiness looks like).
    pub target: Target,
    /// Concurrent subscriber connections.
    pub connections: usize,
    /// Average publish rate, events per second.
    pub rate: f64,
    /// Events sent back to back per tick; ticks are `burst / rate` seconds apart.
    pub burst: u32,
    /// How long the publisher publishes.
    #[serde(serialize_with = "crate::report::seconds")]
    pub duration: Duration,
    /// Longest wait, after the last publish, for deliveries still in flight.
    #[serde(serialize_with = "crate::report::seconds")]
    pub drain: Duration,
    /// Channel every connection subscribes to and the publisher publishes on.
    pub channel: String,
    /// Publisher keep-alive connections (publishes are spread over them).
    pub publishers: usize,
    /// Client threads, each with its own current-thread runtime.
    pub client_threads: usize,
    /// Connections per loopback source address (127.x.y.2, .3, …).
    pub per_source: usize,
    /// Connection attempts in flight at once while ramping up.
    pub connect_concurrency: usize,
    /// Show a progress bar on stderr.
    #[serde(skip)]
    pub progress: bool,
    /// Set to end the run early (Ctrl-C): publishing stops, connections close, the server stops.
    #[serde(skip)]
    pub cancel: Cancel,
}

/// A flag that ends a run early; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks the run to end.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the run was asked to end.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            transport: Transport::Sse,
            target: Target::Sluice,
            connections: 1000,
            rate: 100.0,
            burst: 1,
            duration: Duration::from_secs(20),
            drain: Duration::from_secs(5),
            channel: "load".to_owned(),
            publishers: 1,
            client_threads: 1,
            per_source: 2000,
            connect_concurrency: 256,
            progress: false,
            cancel: Cancel::default(),
        }
    }
}

/// A plan that cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A value is out of its valid range.
    Invalid {
        /// The flag.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The target does not speak the transport.
    Unsupported {
        /// The server kind.
        target: Target,
        /// The transport asked for.
        transport: Transport,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Invalid { key, reason } => write!(f, "invalid --{key}: {reason}"),
            PlanError::Unsupported { target, transport } => write!(
                f,
                "the {} baseline speaks SSE only, not {}",
                target.as_str(),
                transport.as_str()
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// Most source addresses: 127.x.y.2 to 127.x.y.251.
pub const MAX_SOURCES: usize = 250;

impl Plan {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), PlanError> {
        let invalid = |key, reason: &str| {
            Err(PlanError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if !self.target.supports(self.transport) {
            return Err(PlanError::Unsupported {
                target: self.target,
                transport: self.transport,
            });
        }
        if self.connections == 0 {
            return invalid("connections", "must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return invalid("rate", "must be a positive number of events per second");
        }
        if self.burst == 0 {
            return invalid("burst", "must be at least 1");
        }
        if self.duration.is_zero() {
            return invalid("duration", "must be greater than zero");
        }
        if self.publishers == 0 || self.client_threads == 0 || self.connect_concurrency == 0 {
            return invalid(
                "publishers",
                "publishers, client threads and connect concurrency must be at least 1",
            );
        }
        if self.per_source == 0 || self.per_source > 28_000 {
            return invalid(
                "per-source",
                "must be 1..=28000 (the ephemeral port range of one address)",
            );
        }
        if self.sources() > MAX_SOURCES {
            return invalid(
                "per-source",
                "too few connections per source address for this many connections",
            );
        }
        let valid_channel = !self.channel.is_empty()
            && self
                .channel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_channel {
            return invalid("channel", "use ASCII letters, digits, '-', '_' or '.'");
        }
        Ok(())
    }

    /// Time between bursts.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst) / self.rate)
    }

    /// Events the publisher will send (whole bursts, at least one).
    pub fn events(&self) -> u64 {
        let ticks = (self.duration.as_secs_f64() / self.interval().as_secs_f64()).ceil();
        (ticks.max(1.0) as u64) * u64::from(self.burst)
    }

    /// Source addresses needed for the connections.
    pub fn sources(&self) -> usize {
        self.connections.div_ceil(self.per_source.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_interval_follow_rate_and_burst() {
        let plan = Plan {
            rate: 100.0,
            duration: Duration::from_secs(20),
            ..Plan::default()
        };
        assert_eq!(plan.events(), 2000);
        assert_eq!(plan.interval(), Duration::from_millis(10));
        let bursty = Plan {
            rate: 100.0,
            burst: 50,
            duration: Duration::from_secs(2),
            ..Plan::default()
        };
        assert_eq!(bursty.interval(), Duration::from_millis(500));
        assert_eq!(bursty.events(), 200);
    }

    #[test]
    fn validation() {
        assert_eq!(Plan::default().validate(), Ok(()));
        let ws_on_express = Plan {
            transport: Transport::Ws,
            target: Target::Express,
            ..Plan::default()
        };
        assert!(matches!(
            ws_on_express.validate(),
            Err(PlanError::Unsupported { .. })
        ));
        let bad_rate = Plan {
            rate: 0.0,
            ..Plan::default()
        };
        assert!(bad_rate.validate().is_err());
        let bad_channel = Plan {
            channel: "a b".into(),
            ..Plan::default()
        };
        assert!(bad_channel.validate().is_err());
        let many = Plan {
            connections: 18_000,
            per_source: 1000,
            ..Plan::default()
        };
        assert_eq!(many.sources(), 18);
        assert_eq!(many.validate(), Ok(()));
    }
}
