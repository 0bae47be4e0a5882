//! Every tunable of the server, read from command-line flags or `SLUICE_*` environment variables
//! (a flag wins over its variable), validated once, with units in the types.
//!
//! A leaf: it imports nothing from the rest of the crate. It parses and checks what it can check
//! alone; `runtime::Settings::from_config` turns it into each component's settings (and reads
//! the files it names) in one place.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Default per-connection queue length. At one frame per event, 256 pending frames is several
/// seconds of a busy channel: enough to ride out a GC pause or a congested link, small enough
/// that a stalled reader is cut off (and resumes) long before it matters for memory.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 256;

/// Default cap on concurrent streams, per the connection manager Sluice replaces.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default cap on request bodies: 64 KiB holds any reasonable event, and caps what one bad request
/// can make the server buffer.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Default events retained per channel. A client that was away for 1 000 events of its channels
/// is better served by a `reset` and a fresh fetch than by a replay burst; at a few hundred bytes
/// per event that is a few hundred KiB per busy channel.
pub const DEFAULT_HISTORY_SIZE: usize = 1_000;

/// Default per-user offline queue, as in the connection manager Sluice replaces.
pub const DEFAULT_USER_QUEUE_SIZE: usize = 1_000;

/// Default byte budget of everything retained for clients that are not connected (history and
/// user queues). Well below any server's memory, and enough for a thousand busy channels' full
/// histories of small events; past it the oldest events go first, across channels.
pub const DEFAULT_MEMORY_BUDGET: usize = 256 * 1024 * 1024;

/// Default share of the memory budget (percent) one event may take. An event bigger than that
/// would evict a large part of everyone's history on its own.
pub const DEFAULT_MAX_EVENT_SHARE: u8 = 5;

/// Default `SO_SNDBUF` of stream sockets. The kernel doubles what is set (bookkeeping), so a
/// stalled reader pins at most about 128 KiB of kernel memory instead of the several MiB that
/// send-buffer auto-tuning grows to; 64 KiB still holds hundreds of typical events.
pub const DEFAULT_SEND_BUFFER: usize = 64 * 1024;

/// Default cap on concurrent HTTP/2 streams per connection: RFC 9113 asks for at least 100, and
/// nginx uses 128. Every stream also counts toward `--max-connections`, so this bounds how much of
/// that budget one client connection can take, not the total.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Default ACME directory: Let's Encrypt production.
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The server's configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A single-binary Server-Sent Events hub"
)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Worker threads, each with its own runtime, listener and shard. Default: available cores.
    #[arg(long, env = "SLUICE_WORKERS")]
    pub workers: Option<usize>,

    /// Frames that may wait for one stream before it is disconnected as a slow consumer.
    #[arg(long, env = "SLUICE_CHANNEL_CAPACITY", default_value_t = DEFAULT_CHANNEL_CAPACITY)]
    pub channel_capacity: usize,

    /// Period of the `: heartbeat` comment sent to idle streams (e.g. `15s`, `500ms`).
    #[arg(long, env = "SLUICE_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Reconnection delay announced to clients in the `retry:` field at connect.
    #[arg(long, env = "SLUICE_RETRY", default_value = "3s", value_parser = parse_duration)]
    pub retry: Duration,

    /// Most concurrent streams. Past it, EventSource clients get a jittered `retry:` and a close;
    /// other requests get 503.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Largest accepted request body (bytes, or with a suffix: `64KiB`, `1MiB`, `64k`).
    #[arg(long, env = "SLUICE_MAX_BODY", default_value = "64KiB", value_parser = parse_size)]
    pub max_body: usize,

    /// Origins allowed by CORS, comma-separated; `*` allows any.
    #[arg(
        long,
        env = "SLUICE_CORS_ORIGIN",
        default_value = "*",
        value_delimiter = ','
    )]
    pub cors_origin: Vec<String>,

    /// Close streams that received no event (heartbeats aside) for this long. Off by default.
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Events retained per channel for resume (`Last-Event-ID`). 0 disables history.
    #[arg(long, env = "SLUICE_HISTORY_SIZE", default_value_t = DEFAULT_HISTORY_SIZE)]
    pub history_size: usize,

    /// Longest time an event is retained for resume (e.g. `1h`).
    #[arg(long, env = "SLUICE_HISTORY_TTL", default_value = "1h", value_parser = parse_duration)]
    pub history_ttl: Duration,

    /// Events queued per user while none of the user's streams is open; oldest dropped first.
    #[arg(long, env = "SLUICE_USER_QUEUE_SIZE", default_value_t = DEFAULT_USER_QUEUE_SIZE)]
    pub user_queue_size: usize,

    /// How long a queued user event waits for the user to connect.
    #[arg(long, env = "SLUICE_USER_QUEUE_TTL", default_value = "24h", value_parser = parse_duration)]
    pub user_queue_ttl: Duration,

    /// Slow-consumer policy of a channel, `NAME=disconnect|drop-oldest|latest`; NAME may end in
    /// `*` to match a prefix. Repeatable, or comma-separated. Default for all: disconnect.
    #[arg(long, env = "SLUICE_CHANNEL_POLICY", value_delimiter = ',', value_parser = parse_policy)]
    pub channel_policy: Vec<ChannelPolicy>,

    /// Period of the system metrics sample published on the `metrics` channel (`GET /metrics`).
    #[arg(long, env = "SLUICE_METRICS_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub metrics_interval: Duration,

    /// `off`: only `/secure-events` needs a token. `required`: every stream, subscription,
    /// publish and chat route needs one.
    #[arg(long, env = "SLUICE_AUTH", default_value = "off", value_parser = parse_auth_mode)]
    pub auth: AuthMode,

    /// HS256 secret for verifying tokens.
    #[arg(long, env = "SLUICE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with an RSA (RS256) or EC P-256 (ES256) public key for verifying tokens.
    #[arg(long, env = "SLUICE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<std::path::PathBuf>,

    /// Required token audience (`aud`); repeatable or comma-separated.
    #[arg(long, env = "SLUICE_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// Required token issuer (`iss`); repeatable or comma-separated.
    #[arg(long, env = "SLUICE_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,

    /// Operator key: a bearer credential that may publish to any channel.
    #[arg(long, env = "SLUICE_PUBLISHER_KEY", hide_env_values = true)]
    pub publisher_key: Option<String>,

    /// How long a long poll (`GET /poll`) waits for an event before answering with none. Below
    /// the 30 s that many proxies and load balancers allow an idle response.
    #[arg(long, env = "SLUICE_POLL_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub poll_timeout: Duration,

    /// Redis URL (`redis://host:port/db`) for multi-node fan-out and shared history. Without it
    /// the hub is embedded in the process and needs nothing.
    #[arg(long, env = "SLUICE_BROKER")]
    pub broker: Option<String>,

    /// Byte budget of everything retained for clients that are not connected (channel history
    /// and users' offline queues, counted in bytes of frames held). Oldest events go first.
    #[arg(long, env = "SLUICE_MEMORY_BUDGET", default_value = "256MiB", value_parser = parse_size)]
    pub memory_budget: usize,

    /// Largest share of `--memory-budget` one event may take, in percent; a larger event is
    /// refused with 413.
    #[arg(long, env = "SLUICE_MAX_EVENT_SHARE", default_value_t = DEFAULT_MAX_EVENT_SHARE)]
    pub max_event_share: u8,

    /// `SO_SNDBUF` of each accepted socket (bytes, or `64KiB`); 0 leaves the kernel's
    /// auto-tuning. Bounds the kernel memory a reader that stopped reading can pin.
    #[arg(long, env = "SLUICE_SEND_BUFFER", default_value = "64KiB", value_parser = parse_size)]
    pub send_buffer: usize,

    /// Bytes that may wait for one stream before it is disconnected as a slow consumer (with
    /// `--channel-capacity`, whichever is reached first).
    #[arg(long, env = "SLUICE_QUEUE_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub queue_bytes: usize,

    /// A stream whose socket accepts no bytes for this long is cut off (it resumes from
    /// history when it reads again).
    #[arg(long, env = "SLUICE_WRITE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Publishes per second allowed to one publisher (token subject, publisher key, or client
    /// address when anonymous); 0 means no limit. Over it: 429 with `Retry-After`.
    #[arg(long, env = "SLUICE_PUBLISH_RATE", default_value_t = 0)]
    pub publish_rate: u32,

    /// Publishes one publisher may send in a burst above `--publish-rate` (default: one
    /// second's worth).
    #[arg(long, env = "SLUICE_PUBLISH_BURST")]
    pub publish_burst: Option<u32>,

    /// New connections per second accepted from one client address (burst: one second's
    /// worth); 0 means no limit. Past it, connections are closed at once.
    #[arg(long, env = "SLUICE_CONNECTION_RATE", default_value_t = 0)]
    pub connection_rate: u32,
    /// Keep channel history and users' queues in this directory (created if missing), so they
    /// survive a restart and ids continue. Without it they live in memory only.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// With `--data-dir`: when written events are forced to the device. `interval` (every
    /// 200 ms), `always` (before the publish is acknowledged, one fsync shared by every publish
    /// waiting) or `never`. Every mode writes an event to the operating system before answering,
    /// so an acknowledged publish survives a crash of the process; this decides about power loss.
    #[arg(long, env = "SLUICE_FSYNC", default_value = "interval", value_parser = parse_fsync)]
    pub fsync: FsyncPolicy,

    /// How long a publish's `Idempotency-Key` is remembered: a repeat within it answers the
    /// first id and publishes nothing. Longer than any publisher's retry loop, short enough
    /// that the table of keys stays small.
    #[arg(long, env = "SLUICE_IDEMPOTENCY_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub idempotency_window: Duration,

    /// With `--data-dir`: how long to wait for the directory's lock while another process holds
    /// it. A rolling restart starts the new process while the old one drains: the new one binds
    /// the port, waits here (requests queue in its accept backlog), then reads the log and
    /// serves. Past the wait it exits with a configuration error.
    #[arg(long, env = "SLUICE_LOCK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub lock_wait: Duration,

    /// How long shutdown waits for streams to end before the process exits anyway.
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// PEM certificate chain (leaf first). With `--tls-key`, `--listen` serves HTTPS (HTTP/2 and
    /// HTTP/1.1 by ALPN). Re-read on SIGHUP and when the file changes.
    #[arg(long, env = "SLUICE_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519) of `--tls-cert`.
    #[arg(long, env = "SLUICE_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Most concurrent streams on one HTTP/2 connection. Each also counts toward
    /// `--max-connections`.
    #[arg(long, env = "SLUICE_MAX_STREAMS_PER_CONNECTION", default_value_t = DEFAULT_MAX_STREAMS_PER_CONNECTION)]
    pub max_streams_per_connection: u32,

    /// Domain to get a certificate for with ACME (TLS-ALPN-01 on `--listen`, which must be
    /// reachable on port 443 by that name). Repeatable or comma-separated. Needs `--acme-cache`.
    #[arg(long, env = "SLUICE_ACME_DOMAIN", value_delimiter = ',')]
    pub acme_domain: Vec<String>,

    /// Contact for the ACME account, e.g. `mailto:ops@example.com`.
    #[arg(long, env = "SLUICE_ACME_CONTACT")]
    pub acme_contact: Option<String>,

    /// Directory where the ACME account and certificates are kept across restarts.
    #[arg(long, env = "SLUICE_ACME_CACHE")]
    pub acme_cache: Option<std::path::PathBuf>,

    /// ACME directory URL.
    #[arg(long, env = "SLUICE_ACME_DIRECTORY", default_value = DEFAULT_ACME_DIRECTORY)]
    pub acme_directory: String,

    /// PEM root certificate to trust for the ACME directory's HTTPS instead of the built-in roots
    /// (a private or test ACME server).
    #[arg(long, env = "SLUICE_ACME_DIRECTORY_CA")]
    pub acme_directory_ca: Option<std::path::PathBuf>,
}

/// When the durable store forces writes to the device (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before acknowledging a publish (group commit).
    Always,
    /// Periodically.
    Interval,
    /// Never: left to the operating system.
    Never,
}

/// Who needs a token (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Only `/secure-events` needs one.
    #[default]
    Off,
    /// Every stream, subscription, publish and chat route needs one.
    Required,
}

/// What happens to a stream of a channel that falls behind (`--channel-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    /// `disconnect`: cut it off; it resumes from history.
    Disconnect,
    /// `drop-oldest`: shed its oldest pending frame and tell it how many it missed.
    DropOldest,
    /// `latest`: keep only the newest pending event of the channel.
    Latest,
}

/// One `--channel-policy NAME=POLICY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPolicy {
    /// A channel name, or a prefix ending in `*`.
    pub pattern: String,
    /// The policy.
    pub policy: SlowConsumer,
}

/// A configuration that parsed but makes no sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A value is out of its valid range.
    Invalid {
        /// The flag.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid { key, reason } => write!(f, "invalid --{key}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks the values that clap cannot check by type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.workers == Some(0) {
            return invalid("workers", "must be at least 1");
        }
        if let Some(url) = &self.broker {
            if !url.starts_with("redis://") {
                return invalid("broker", "must be a redis://host:port/db URL");
            }
        }
        if self.broker.is_some() && self.data_dir.is_some() {
            return invalid(
                "data-dir",
                "cannot be combined with --broker (Redis keeps the history)",
            );
        }
        if self.poll_timeout.is_zero() {
            return invalid("poll-timeout", "must be more than zero");
        }
        if self.channel_capacity == 0 {
            return invalid("channel-capacity", "must be at least 1");
        }
        if self.metrics_interval < Duration::from_millis(100) {
            return invalid("metrics-interval", "must be at least 100ms");
        }
        if self.heartbeat_interval.is_zero() {
            return invalid("heartbeat-interval", "must be greater than zero");
        }
        if self.max_connections == 0 {
            return invalid("max-connections", "must be at least 1");
        }
        if self.max_body == 0 {
            return invalid("max-body", "must be at least 1 byte");
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return invalid(
                "idle-timeout",
                "must be greater than zero (omit it to disable)",
            );
        }
        if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
            return invalid(
                "jwt-secret",
                "give either --jwt-secret or --jwt-public-key, not both",
            );
        }
        if self.jwt_secret.as_deref().is_some_and(|s| s.len() < 16) {
            return invalid("jwt-secret", "must be at least 16 bytes");
        }
        if self.publisher_key.as_deref().is_some_and(|k| k.len() < 16) {
            return invalid("publisher-key", "must be at least 16 bytes");
        }
        if self.auth == AuthMode::Required
            && self.jwt_secret.is_none()
            && self.jwt_public_key.is_none()
        {
            return invalid("auth", "required needs --jwt-secret or --jwt-public-key");
        }
        if self.user_queue_ttl.is_zero() {
            return invalid("user-queue-ttl", "must be greater than zero");
        }
        if self.history_ttl.is_zero() {
            return invalid("history-ttl", "must be greater than zero");
        }
        if self.memory_budget < 64 * 1024 {
            return invalid("memory-budget", "must be at least 64KiB");
        }
        if !(1..=100).contains(&self.max_event_share) {
            return invalid("max-event-share", "must be a percentage from 1 to 100");
        }
        if self.queue_bytes < self.max_body {
            return invalid("queue-bytes", "must be at least --max-body");
        }
        if self.write_timeout.is_zero() {
            return invalid("write-timeout", "must be greater than zero");
        }
        if self.publish_burst == Some(0) {
            return invalid("publish-burst", "must be at least 1");
        }
        if self.cors_origin.iter().any(|o| o.trim().is_empty()) {
            return invalid("cors-origin", "origins must not be empty");
        }
        self.validate_tls()
    }

    /// The TLS and ACME flags that only make sense together. The files themselves are read and
    /// checked by `runtime::Settings::from_config`.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return invalid("tls-key", "--tls-cert needs --tls-key"),
            (None, Some(_)) => return invalid("tls-cert", "--tls-key needs --tls-cert"),
            _ => {}
        }
        if self.max_streams_per_connection == 0 {
            return invalid("max-streams-per-connection", "must be at least 1");
        }
        if self.acme_domain.is_empty() {
            return Ok(());
        }
        if self.tls_cert.is_some() {
            return invalid(
                "acme-domain",
                "give either --acme-domain or --tls-cert/--tls-key, not both",
            );
        }
        if self.acme_cache.is_none() {
            return invalid(
                "acme-cache",
                "--acme-domain needs --acme-cache to keep the account and certificates",
            );
        }
        if let Some(bad) = self.acme_domain.iter().find(|d| {
            d.is_empty()
                || d.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        }) {
            return invalid("acme-domain", &format!("{bad:?} is not a DNS name"));
        }
        if !self.acme_directory.starts_with("https://") {
            return invalid("acme-directory", "must be an https:// URL");
        }
        Ok(())
    }

    /// Worker threads to run on a machine with `available` cores.
    pub fn workers_for(&self, available: usize) -> usize {
        cores_to_use(available, self.workers)
    }
}

/// Workers to start: the explicit count if given, else one per available core (at least one).
pub fn cores_to_use(available: usize, requested: Option<usize>) -> usize {
    requested.unwrap_or(available).max(1)
}

fn parse_fsync(text: &str) -> Result<FsyncPolicy, String> {
    match text.trim() {
        "always" => Ok(FsyncPolicy::Always),
        "interval" => Ok(FsyncPolicy::Interval),
        "never" => Ok(FsyncPolicy::Never),
        other => Err(format!(
            "unknown fsync mode '{other}' (always, interval or never)"
        )),
    }
}

fn parse_auth_mode(text: &str) -> Result<AuthMode, String> {
    match text.trim() {
        "off" => Ok(AuthMode::Off),
        "required" => Ok(AuthMode::Required),
        other => Err(format!("unknown auth mode '{other}' (off or required)")),
    }
}

fn parse_policy(text: &str) -> Result<ChannelPolicy, String> {
    let (name, policy) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not NAME=POLICY"))?;
    let policy = match policy.trim() {
        "disconnect" => SlowConsumer::Disconnect,
        "drop-oldest" => SlowConsumer::DropOldest,
        "latest" => SlowConsumer::Latest,
        other => {
            return Err(format!(
                "unknown policy '{other}' (disconnect, drop-oldest or latest)"
            ))
        }
    };
    Ok(ChannelPolicy {
        pattern: name.trim().to_owned(),
        policy,
    })
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{e} (examples: 15s, 500ms, 2m)"))
}

/// Parses a byte size: a plain number, or a number with `k`/`KiB`/`KB`, `m`/`MiB`/`MB` (all
/// binary multiples, case-insensitive).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 65536, 64KiB, 1MiB)"))?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown size unit '{other}' (use KiB or MiB)")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
    }

    #[test]
    fn tls_and_acme_flags_must_fit_together() {
        let invalid = |args: &[&str]| match parse(args).unwrap().validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            Ok(()) => panic!("{args:?} was accepted"),
        };
        assert_eq!(invalid(&["--tls-cert=c.pem"]), "tls-key");
        assert_eq!(invalid(&["--tls-key=k.pem"]), "tls-cert");
        assert_eq!(
            invalid(&["--max-streams-per-connection=0"]),
            "max-streams-per-connection"
        );
        assert_eq!(invalid(&["--acme-domain=example.com"]), "acme-cache");
        assert_eq!(
            invalid(&[
                "--acme-domain=example.com",
                "--acme-cache=/tmp/acme",
                "--tls-cert=c.pem",
                "--tls-key=k.pem"
            ]),
            "acme-domain"
        );
        assert_eq!(
            invalid(&["--acme-domain=bad name", "--acme-cache=/tmp/acme"]),
            "acme-domain"
        );
        assert_eq!(
            invalid(&[
                "--acme-domain=example.com",
                "--acme-cache=/tmp/acme",
                "--acme-directory=http://insecure/dir"
            ]),
            "acme-directory"
        );
        let ok = parse(&[
            "--acme-domain=example.com,www.example.com",
            "--acme-cache=/tmp/acme",
        ])
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.acme_domain, ["example.com", "www.example.com"]);
        assert_eq!(ok.acme_directory, DEFAULT_ACME_DIRECTORY);
        assert_eq!(
            ok.max_streams_per_connection,
            DEFAULT_MAX_STREAMS_PER_CONNECTION
        );
    }

    #[test]
    fn defaults() {
        let cfg = parse(&[]).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(cfg.max_body, 64 * 1024);
        assert_eq!(cfg.max_connections, 10_000);
        assert_eq!(cfg.cors_origin, vec!["*".to_owned()]);
        assert_eq!(cfg.idle_timeout, None);
        assert_eq!(cfg.lock_wait, Duration::from_secs(30));
        cfg.validate().unwrap();
    }

    #[test]
    fn flags() {
        let cfg = parse(&[
            "--listen=127.0.0.1:0",
            "--workers=3",
            "--heartbeat-interval=250ms",
            "--max-body=1MiB",
            "--cors-origin=https://a.example,https://b.example",
            "--idle-timeout=2m",
            "--lock-wait=1500ms",
        ])
        .unwrap();
        assert_eq!(cfg.lock_wait, Duration::from_millis(1500));
        assert_eq!(cfg.workers, Some(3));
        assert_eq!(cfg.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(cfg.max_body, 1024 * 1024);
        assert_eq!(cfg.cors_origin.len(), 2);
        assert_eq!(cfg.idle_timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn channel_policies() {
        let cfg = parse(&[
            "--channel-policy=metrics=latest",
            "--channel-policy",
            "feed*=drop-oldest,alerts=disconnect",
        ])
        .unwrap();
        let policy = |pattern: &str, policy| ChannelPolicy {
            pattern: pattern.to_owned(),
            policy,
        };
        assert_eq!(
            cfg.channel_policy,
            vec![
                policy("metrics", SlowConsumer::Latest),
                policy("feed*", SlowConsumer::DropOldest),
                policy("alerts", SlowConsumer::Disconnect),
            ]
        );
        assert!(parse(&["--channel-policy=metrics"]).is_err());
        assert!(parse(&["--channel-policy=metrics=fastest"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--heartbeat-interval=soon"]).is_err());
        assert!(parse(&["--max-body=12parsecs"]).is_err());
        assert!(parse(&["--listen=nowhere"]).is_err());
        for args in [
            &["--workers=0"][..],
            &["--channel-capacity=0"],
            &["--heartbeat-interval=0s"],
            &["--max-connections=0"],
            &["--idle-timeout=0s"],
            &["--poll-timeout=0s"],
        ] {
            let cfg = parse(args).unwrap();
            assert!(cfg.validate().is_err(), "{args:?}");
        }
    }

    #[test]
    fn auth_settings() {
        assert_eq!(parse(&[]).unwrap().auth, AuthMode::Off);
        let required = parse(&["--auth=required"]).unwrap();
        assert!(required.validate().is_err(), "required without a key");
        let ok = parse(&["--auth=required", "--jwt-secret=0123456789abcdef"]).unwrap();
        ok.validate().unwrap();
        assert!(parse(&["--jwt-secret=short"]).unwrap().validate().is_err());
        assert!(parse(&["--auth=maybe"]).is_err());
    }

    #[test]
    fn worker_count() {
        for (available, requested, expected) in [
            (2, None, 2),
            (8, None, 8),
            (0, None, 1),
            (2, Some(4), 4),
            (16, Some(1), 1),
        ] {
            assert_eq!(cores_to_use(available, requested), expected);
        }
    }

    #[test]
    fn abuse_limits() {
        let cfg = parse(&[]).unwrap();
        assert_eq!(cfg.memory_budget, DEFAULT_MEMORY_BUDGET);
        assert_eq!(cfg.send_buffer, DEFAULT_SEND_BUFFER);
        assert_eq!(cfg.write_timeout, Duration::from_secs(5));
        assert_eq!(cfg.queue_bytes, 1 << 20);
        assert_eq!((cfg.publish_rate, cfg.connection_rate), (0, 0));
        assert!(cfg.validate().is_ok());
        for bad in [
            &["--memory-budget", "1KiB"][..],
            &["--max-event-share", "0"],
            &["--max-event-share", "101"],
            &["--write-timeout", "0s"],
            &["--publish-burst", "0"],
            &["--queue-bytes", "1KiB"],
        ] {
            assert!(parse(bad).unwrap().validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("2 MiB"), Ok(2 * 1024 * 1024));
        assert!(parse_size("").is_err());
        assert!(parse_size("KiB").is_err());
        assert_eq!(parse_size("1GiB"), Ok(1024 * 1024 * 1024));
        assert!(parse_size("1TiB").is_err());
    }
}
