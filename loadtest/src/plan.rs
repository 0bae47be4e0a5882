//! What one run does: the transport, the server kind, the workload (connections, rate or
//! as-fast-as-accepted, bursts, duration, payload size, the share of connections that stall) and
//! the client's own knobs, validated once before anything connects.
//!
//! Also the per-server URL shapes (`Target`): where to publish and where to subscribe, so the
//! transports and the publisher never spell a path themselves; and which connections stall
//! ([`Stall`]), so that choice is one pure function.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::custom::Custom;

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
    /// Sluice behind nginx (`loadtest/baselines/nginx-proxy`): nginx terminates TLS and HTTP/2
    /// and proxies to a plain Sluice over keep-alive HTTP/1.1, unbuffered (SSE only).
    #[serde(rename = "sluice-nginx")]
    SluiceNginx,
    /// Any SSE server, described by `--sub`, `--header` and `--pub` ([`Custom`]).
    Custom,
    /// The reference server `sluice-minimal` (SSE only): one thread, blocking sockets, one
    /// `write(2)` per delivery, `TCP_NODELAY` on.
    Minimal,
    /// The same reference server with Nagle's algorithm left on for its streams, as nginx
    /// leaves it for a streaming response.
    #[serde(rename = "minimal-nagle")]
    MinimalNagle,
}

impl Target {
    /// The name used on the command line and in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Sluice => "sluice",
            Target::Express => "express",
            Target::Nchan => "nchan",
            Target::SluiceNginx => "sluice-nginx",
            Target::Custom => "custom",
            Target::Minimal => "minimal",
            Target::MinimalNagle => "minimal-nagle",
        }
    }

    /// Whether the server speaks `transport`.
    pub fn supports(self, transport: Transport) -> bool {
        self == Target::Sluice || transport == Transport::Sse
    }

    /// Path and query of the publish endpoint (a custom target's comes from its hook).
    pub fn publish_path(self, channel: &str) -> String {
        match self {
            Target::Sluice | Target::SluiceNginx => "/api/publish".to_owned(),
            Target::Express => "/publish".to_owned(),
            Target::Nchan | Target::Minimal | Target::MinimalNagle => {
                format!("/publish?channel={channel}")
            }
            Target::Custom => String::new(),
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
        self.is_sluice()
    }

    /// Whether Sluice serves the streams (alone or behind nginx): it has `/stats`.
    pub fn is_sluice(self) -> bool {
        matches!(self, Target::Sluice | Target::SluiceNginx)
    }

    /// Whether `storm` can break and restart it (a proxy in front hides the cut).
    pub fn supports_storm(self) -> bool {
        self != Target::SluiceNginx
    }

    /// Whether the harness can start this server with TLS.
    pub fn serves_tls(self) -> bool {
        matches!(self, Target::Sluice | Target::SluiceNginx | Target::Nchan)
    }
}

/// How fast the publisher publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// On a schedule: this many events per second, on average.
    PerSecond(f64),
    /// As fast as the server answers: each publisher connection sends its next publish as soon as
    /// the previous one is answered, for the whole duration.
    Max,
}

impl Rate {
    /// `max`, or a number of events per second.
    pub fn parse(text: &str) -> Result<Rate, PlanError> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        let invalid = || PlanError::Invalid {
            key: "rate",
            reason: format!("'{text}': expected events per second or `max`"),
        };
        let rate: f64 = text.parse().map_err(|_| invalid())?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(invalid());
        }
        Ok(Rate::PerSecond(rate))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::PerSecond(rate) => write!(f, "{rate} events/s"),
            Rate::Max => write!(f, "as many events/s as accepted"),
        }
    }
}

/// A number (events per second) or the string `"max"`.
impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::PerSecond(rate) => serializer.serialize_f64(*rate),
            Rate::Max => serializer.serialize_str("max"),
        }
    }
}

/// Parts per million, the unit of [`Stall`] (exact integer arithmetic for the choice).
const PPM: usize = 1_000_000;

/// The share of connections that stop reading their socket once they are ready (slow consumers
/// that never read again), spread evenly over the connection indexes: connection `i` stalls when
/// `floor((i + 1) * share)` passes `floor(i * share)`, so 0.1 is every 10th and 0.3 is 3 in every
/// 10, and `floor(connections * share)` stall in all. Kept in parts per million so the choice is
/// exact integer arithmetic, the same on every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(into = "f64")]
pub struct Stall {
    ppm: usize,
}

impl Stall {
    /// No connection stalls.
    pub const NONE: Stall = Stall { ppm: 0 };

    /// A share in `[0, 1)`, rounded to parts per million.
    pub fn from_fraction(fraction: f64) -> Result<Stall, PlanError> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(PlanError::Invalid {
                key: "stall",
                reason: format!("{fraction}: expected a share in [0, 1), e.g. 0.1"),
            });
        }
        Ok(Stall {
            ppm: (fraction * PPM as f64).round() as usize,
        })
    }

    /// The share as a fraction.
    pub fn fraction(self) -> f64 {
        self.ppm as f64 / PPM as f64
    }

    /// Whether any connection stalls.
    pub fn is_some(self) -> bool {
        self.ppm > 0
    }

    /// Whether connection `index` stalls.
    pub fn is_stalled(self, index: usize) -> bool {
        let share = |i: usize| i.saturating_mul(self.ppm) / PPM;
        share(index + 1) > share(index)
    }

    /// How many of `connections` stall.
    pub fn count(self, connections: usize) -> usize {
        connections.saturating_mul(self.ppm) / PPM
    }
}

impl From<Stall> for f64 {
    fn from(stall: Stall) -> f64 {
        stall.fraction()
    }
}

/// Largest `--payload-bytes`: the event must fit the server's default body limit (64 KiB) with
/// the publish envelope around it.
pub const MAX_PAYLOAD_BYTES: usize = 60 * 1024;

/// One run's workload and client settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// Client protocol.
    pub transport: Transport,
    /// Server kind (decides URL shapes and what readiness looks like).
    pub target: Target,
    /// Concurrent subscriber connections.
    pub connections: usize,
    /// Publish rate: events per second on a schedule, or as fast as accepted.
    pub rate: Rate,
    /// Events sent back to back per tick; ticks are `burst / rate` seconds apart (scheduled
    /// rates only).
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
    /// Size the `data` object of each event is padded to, in bytes (0: no padding, about 40).
    pub payload_bytes: usize,
    /// Which connections stop reading once ready.
    pub stall: Stall,
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
    /// The custom target's URLs, headers and publish hook (`Target::Custom` only).
    pub custom: Option<Arc<Custom>>,
    /// How a dropped SSE stream comes back.
    pub reconnect: Reconnect,
    /// Open the connections at this many per second (`--ramp`); none: as fast as
    /// `connect_concurrency` allows.
    pub ramp: Option<f64>,
    /// Test-only: connection 0 ignores the second event it receives after its first reconnect,
    /// so a test can check that a run which loses an event fails.
    #[serde(skip)]
    pub drop_one: bool,
    /// Connect over TLS (`--tls`): subscribers, publishers and `/stats` alike.
    pub tls: bool,
    /// SSE streams as HTTP/2 streams (`--http2`): over TLS as agreed by ALPN, or h2c with prior
    /// knowledge without TLS.
    pub http2: bool,
    /// HTTP/2 streams per connection (`--streams-per-connection`): N streams share one
    /// connection, so ceil(connections / N) connections carry them.
    pub streams_per_connection: usize,
    /// The TLS client the run connects with, set from the endpoint when the run starts.
    #[serde(skip)]
    pub tls_client: Option<Arc<crate::tls::Tls>>,
}

/// How a dropped SSE stream comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reconnect {
    /// After a short fixed pause ([`crate::transport`]'s `RECONNECT_PAUSE`): a load test's
    /// connections are back as soon as possible.
    Fast,
    /// As a browser's `EventSource` does: after the stream's last `retry:` (or
    /// [`BROWSER_RETRY`] before any), again after each failed attempt, with `Last-Event-ID`.
    AsBrowser,
}

/// A browser's reconnection time before a stream sets one (the standard leaves it to the user
/// agent; Chrome and Firefox use 3 s).
pub const BROWSER_RETRY: Duration = Duration::from_secs(3);

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
            rate: Rate::PerSecond(100.0),
            burst: 1,
            duration: Duration::from_secs(20),
            drain: Duration::from_secs(5),
            channel: "load".to_owned(),
            publishers: 1,
            payload_bytes: 0,
            stall: Stall::NONE,
            client_threads: 1,
            per_source: 2000,
            connect_concurrency: 256,
            progress: false,
            cancel: Cancel::default(),
            custom: None,
            reconnect: Reconnect::Fast,
            ramp: None,
            drop_one: false,
            tls: false,
            http2: false,
            streams_per_connection: 1,
            tls_client: None,
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
    /// `--target custom` without its description, or a description without `--target custom`.
    Custom(&'static str),
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
            PlanError::Custom(reason) => f.write_str(reason),
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
        match (self.target, &self.custom) {
            (Target::Custom, None) => {
                return Err(PlanError::Custom("--target custom needs --sub URL"))
            }
            (Target::Custom, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(PlanError::Custom(
                    "--sub, --pub and --header apply to --target custom only",
                ))
            }
        }
        if (self.tls || self.http2) && self.transport != Transport::Sse {
            return invalid(
                "tls",
                "--tls and --http2 carry SSE streams only (WebSocket stays on HTTP/1.1)",
            );
        }
        if self.tls && !self.target.serves_tls() && self.target != Target::Custom {
            return invalid(
                "tls",
                &format!("the {} target serves plain HTTP only", self.target.as_str()),
            );
        }
        if self.target == Target::Custom && (self.tls || self.http2) {
            return invalid(
                "tls",
                "custom targets are reached over plain HTTP/1.1 (their --sub is http://)",
            );
        }
        if self.http2 && !self.target.serves_tls() && self.target != Target::Custom {
            return invalid(
                "http2",
                &format!("the {} target speaks HTTP/1.1 only", self.target.as_str()),
            );
        }
        if self.http2 && !self.tls && matches!(self.target, Target::Nchan | Target::SluiceNginx) {
            return invalid(
                "http2",
                "nginx serves h2c only with prior knowledge on a listener of its own, so HTTP/1.1 \
                 publishes cannot share it: add --tls (HTTP/2 by ALPN)",
            );
        }
        if self.streams_per_connection == 0 {
            return invalid("streams-per-connection", "must be at least 1");
        }
        if self.streams_per_connection > 1 && !self.http2 {
            return invalid(
                "streams-per-connection",
                "only HTTP/2 puts several streams on one connection: add --http2",
            );
        }
        if let Some(ramp) = self.ramp {
            if !(ramp.is_finite() && ramp > 0.0) {
                return invalid(
                    "ramp",
                    "must be a positive number of connections per second",
                );
            }
        }
        if self.connections == 0 {
            return invalid("connections", "must be at least 1");
        }
        if let Rate::PerSecond(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return invalid("rate", "must be a positive number of events per second");
            }
        }
        if self.burst == 0 {
            return invalid("burst", "must be at least 1");
        }
        if self.rate == Rate::Max && self.burst > 1 {
            return invalid("burst", "has no meaning with --rate max");
        }
        if self.payload_bytes > MAX_PAYLOAD_BYTES {
            return invalid(
                "payload-bytes",
                "at most 61440 (the server's 64 KiB body limit)",
            );
        }
        if self.stall.is_some() && self.transport == Transport::Poll {
            return invalid(
                "stall",
                "applies to streams (sse, ws); a long poller holds no queue",
            );
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

    /// Time between bursts (none when publishing as fast as accepted).
    pub fn interval(&self) -> Option<Duration> {
        match self.rate {
            Rate::PerSecond(rate) => Some(Duration::from_secs_f64(f64::from(self.burst) / rate)),
            Rate::Max => None,
        }
    }

    /// Events the publisher will send (whole bursts, at least one); none when publishing as
    /// fast as accepted, where only the run tells.
    pub fn events(&self) -> Option<u64> {
        let interval = self.interval()?;
        let ticks = (self.duration.as_secs_f64() / interval.as_secs_f64()).ceil();
        Some((ticks.max(1.0) as u64) * u64::from(self.burst))
    }

    /// Whether the run only listens: a custom target without a publish hook.
    pub fn is_subscribe_only(&self) -> bool {
        self.custom.as_ref().is_some_and(|c| c.publish.is_none())
    }

    /// Path and query of connection `index`'s stream.
    pub fn subscribe_path(&self, index: usize) -> String {
        match &self.custom {
            Some(custom) => custom.subscribe_path(index),
            None => self.target.subscribe_path(self.transport, &self.channel),
        }
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
            rate: Rate::PerSecond(100.0),
            duration: Duration::from_secs(20),
            ..Plan::default()
        };
        assert_eq!(plan.events(), Some(2000));
        assert_eq!(plan.interval(), Some(Duration::from_millis(10)));
        let bursty = Plan {
            rate: Rate::PerSecond(100.0),
            burst: 50,
            duration: Duration::from_secs(2),
            ..Plan::default()
        };
        assert_eq!(bursty.interval(), Some(Duration::from_millis(500)));
        assert_eq!(bursty.events(), Some(200));
        let flat_out = Plan {
            rate: Rate::Max,
            ..Plan::default()
        };
        assert_eq!(flat_out.interval(), None);
        assert_eq!(flat_out.events(), None);
    }

    #[test]
    fn rates_parse() {
        assert_eq!(Rate::parse("max"), Ok(Rate::Max));
        assert_eq!(Rate::parse("MAX"), Ok(Rate::Max));
        assert_eq!(Rate::parse("250"), Ok(Rate::PerSecond(250.0)));
        assert_eq!(Rate::parse("0.5"), Ok(Rate::PerSecond(0.5)));
        for bad in ["0", "-3", "inf", "NaN", "fast", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Rate::PerSecond(100.0).to_string(), "100 events/s");
        assert_eq!(
            serde_json::to_string(&[Rate::PerSecond(2.5), Rate::Max]).expect("json"),
            "[2.5,\"max\"]"
        );
    }

    /// The indexes among the first `n` that stall.
    fn stalled(stall: Stall, n: usize) -> Vec<usize> {
        (0..n).filter(|&i| stall.is_stalled(i)).collect()
    }

    #[test]
    fn stalled_connections_are_spread_evenly() {
        let tenth = Stall::from_fraction(0.1).expect("valid");
        assert_eq!(stalled(tenth, 40), [9, 19, 29, 39]);
        assert_eq!(tenth.count(1000), 100);
        assert_eq!(stalled(tenth, 1000).len(), 100);

        let three_tenths = Stall::from_fraction(0.3).expect("valid");
        assert_eq!(stalled(three_tenths, 20), [3, 6, 9, 13, 16, 19]);
        assert_eq!(three_tenths.count(1000), 300);
        assert_eq!(stalled(three_tenths, 1000).len(), 300);
        // No two neighbours both stall below one half.
        let picks = stalled(three_tenths, 9000);
        assert!(picks.windows(2).all(|w| w[1] - w[0] >= 3));

        // A share that does not divide evenly: floor(N * share) in all, for every N.
        let odd = Stall::from_fraction(0.37).expect("valid");
        for n in [1, 7, 100, 999, 9000] {
            assert_eq!(stalled(odd, n).len(), odd.count(n), "{n}");
        }

        assert!(!Stall::NONE.is_some());
        assert!(stalled(Stall::NONE, 1000).is_empty());
        assert_eq!(Stall::from_fraction(0.0), Ok(Stall::NONE));
        assert!(Stall::from_fraction(1.0).is_err());
        assert!(Stall::from_fraction(-0.1).is_err());
        assert!(Stall::from_fraction(f64::NAN).is_err());
        assert_eq!(tenth.fraction(), 0.1);
        assert_eq!(serde_json::to_string(&tenth).expect("json"), "0.1");
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
            rate: Rate::PerSecond(0.0),
            ..Plan::default()
        };
        assert!(bad_rate.validate().is_err());
        let bursts_at_max = Plan {
            rate: Rate::Max,
            burst: 10,
            ..Plan::default()
        };
        assert!(bursts_at_max.validate().is_err());
        let stalled_pollers = Plan {
            transport: Transport::Poll,
            stall: Stall::from_fraction(0.1).expect("valid"),
            ..Plan::default()
        };
        assert!(stalled_pollers.validate().is_err());
        let huge = Plan {
            payload_bytes: MAX_PAYLOAD_BYTES + 1,
            ..Plan::default()
        };
        assert!(huge.validate().is_err());
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
        for target in [Target::Express, Target::Minimal, Target::MinimalNagle] {
            let tls = Plan {
                target,
                tls: true,
                ..Plan::default()
            };
            let Err(PlanError::Invalid { key, reason }) = tls.validate() else {
                panic!("{target:?} over TLS");
            };
            assert_eq!(key, "tls");
            assert!(reason.contains(target.as_str()), "{reason}");
            let h2c = Plan {
                target,
                http2: true,
                ..Plan::default()
            };
            assert!(
                matches!(h2c.validate(), Err(PlanError::Invalid { key: "http2", .. })),
                "{target:?} over h2c"
            );
        }
    }
}
