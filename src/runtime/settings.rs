//! The one translation from [`Config`] to each component's settings: the hub's, the bus's
//! retention limits, the authenticator (which reads the public key file, once), TLS (which reads
//! and checks the certificate and key). Pure apart from those file reads, so it is table-tested
//! here; everything that can be wrong in a configuration
//! surfaces from [`Settings::from_config`] as a [`ConfigError`] before anything starts.

use std::sync::Arc;

use crate::auth::{self, Auth, Verifier};
use crate::bus;
use crate::config::{AuthMode, ChannelPolicy, Config, ConfigError, FsyncPolicy, SlowConsumer};
use crate::hub::{self, Limits, Policy, Topic};
use crate::metrics::sampler;
use crate::store::Fsync;
use crate::tls::Tls;

/// Everything the components are built from.
#[derive(Debug)]
pub struct Settings {
    /// Worker threads (one shard each).
    pub workers: usize,
    /// The hub and its store.
    pub bus: bus::Options,
    /// Who may do what.
    pub auth: Auth,
    /// HTTPS: the certificate (read and checked here) or ACME; `None` serves plain HTTP.
    pub tls: Option<Arc<Tls>>,
}

impl Settings {
    /// Builds every component's settings for a machine with `available` cores.
    pub fn from_config(config: &Config, available: usize) -> Result<Settings, ConfigError> {
        let workers = config.workers_for(available);
        let hub = hub::Settings {
            shards: workers,
            channel_capacity: config.channel_capacity,
            heartbeat: config.heartbeat_interval,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
            retry: config.retry,
            policies: policies(&config.channel_policy)?,
            // Set by the bus from its mode.
            ordered_source: false,
            write_timeout: config.write_timeout,
            queue_bytes: config.queue_bytes,
        };
        let memory_budget = config.memory_budget as u64;
        let bus = bus::Options {
            hub,
            channels: Limits {
                capacity: config.history_size,
                ttl: Some(config.history_ttl),
            },
            users: Limits {
                capacity: config.user_queue_size,
                ttl: Some(config.user_queue_ttl),
            },
            budget: (
                memory_budget,
                memory_budget / 100 * u64::from(config.max_event_share),
            ),
            broker: config.broker.clone(),
            data_dir: config.data_dir.clone(),
            idempotency_window: config.idempotency_window,
            lock_wait: config.lock_wait,
            fsync: match config.fsync {
                FsyncPolicy::Always => Fsync::Always,
                FsyncPolicy::Interval => Fsync::Interval,
                FsyncPolicy::Never => Fsync::Never,
            },
        };
        let mode = match config.auth {
            AuthMode::Off => auth::Mode::Off,
            AuthMode::Required => auth::Mode::Required,
        };
        let auth = Auth::new(mode, verifier(config)?, config.publisher_key.clone());
        Ok(Settings {
            workers,
            bus,
            auth,
            tls: tls(config)?,
        })
    }
}

/// The configured slow-consumer policies, plus `metrics=latest` unless the configuration says
/// otherwise for that channel: a dashboard that falls behind wants the newest sample, not a
/// disconnect.
fn policies(configured: &[ChannelPolicy]) -> Result<Vec<(String, Policy)>, ConfigError> {
    let mut policies = Vec::with_capacity(configured.len() + 1);
    for ChannelPolicy { pattern, policy } in configured {
        let bare = pattern.strip_suffix('*').unwrap_or(pattern);
        if !bare.is_empty() {
            Topic::parse(bare).map_err(|e| ConfigError::Invalid {
                key: "channel-policy",
                reason: format!("'{pattern}': {e}"),
            })?;
        }
        let policy = match policy {
            SlowConsumer::Disconnect => Policy::Disconnect,
            SlowConsumer::DropOldest => Policy::DropOldest,
            SlowConsumer::Latest => Policy::Latest,
        };
        policies.push((pattern.clone(), policy));
    }
    let metrics = Topic::parse(sampler::CHANNEL).expect("a valid channel");
    if !policies
        .iter()
        .any(|(pattern, _)| covers(pattern, &metrics))
    {
        policies.push((metrics.as_str().to_owned(), Policy::Latest));
    }
    Ok(policies)
}

fn covers(pattern: &str, topic: &Topic) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.as_str().starts_with(prefix),
        None => pattern == topic.as_str(),
    }
}

/// TLS from the certificate files (read and checked now, so a bad pair is a configuration
/// error), for ACME (no certificate yet), or none.
fn tls(config: &Config) -> Result<Option<Arc<Tls>>, ConfigError> {
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let tls = Tls::from_files(cert, key).map_err(|e| ConfigError::Invalid {
            key: "tls-cert",
            reason: e.to_string(),
        })?;
        return Ok(Some(Arc::new(tls)));
    }
    if !config.acme_domain.is_empty() {
        let tls = Tls::for_acme().map_err(|e| ConfigError::Invalid {
            key: "acme-domain",
            reason: e.to_string(),
        })?;
        return Ok(Some(Arc::new(tls)));
    }
    Ok(None)
}

/// The token verifier, if a key is configured. Reads the public key file.
fn verifier(config: &Config) -> Result<Option<Verifier>, ConfigError> {
    let mut verifier = match (&config.jwt_secret, &config.jwt_public_key) {
        (Some(secret), _) => Verifier::hs256(secret.as_bytes()),
        (None, Some(path)) => {
            let pem = std::fs::read(path).map_err(|e| ConfigError::Invalid {
                key: "jwt-public-key",
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
            Verifier::from_public_pem(&pem).map_err(|reason| ConfigError::Invalid {
                key: "jwt-public-key",
                reason,
            })?
        }
        (None, None) => return Ok(None),
    };
    if !config.jwt_audience.is_empty() {
        verifier.require_audience(&config.jwt_audience);
    }
    if !config.jwt_issuer.is_empty() {
        verifier.require_issuer(&config.jwt_issuer);
    }
    Ok(Some(verifier))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        let config =
            Config::try_parse_from(std::iter::once("sluice").chain(args.iter().copied())).unwrap();
        config.validate()?;
        Settings::from_config(&config, 2)
    }

    #[test]
    fn hub_and_retention() {
        let s = settings(&["--workers=3", "--history-size=5", "--user-queue-ttl=1m"]).unwrap();
        assert_eq!(s.workers, 3);
        assert_eq!(s.bus.hub.shards, 3);
        assert_eq!(s.bus.channels.capacity, 5);
        assert_eq!(s.bus.users.ttl, Some(std::time::Duration::from_secs(60)));
        assert!(s.bus.broker.is_none());
        assert_eq!(settings(&[]).unwrap().workers, 2, "one per available core");
    }

    #[test]
    fn channel_policies() {
        let s = settings(&["--channel-policy=feed*=drop-oldest,alerts=disconnect"]).unwrap();
        let policies = &s.bus.hub.policies;
        let topic = |n| Topic::parse(n).unwrap();
        assert_eq!(
            hub::policy_for(policies, &topic("feed/1")),
            Policy::DropOldest
        );
        assert_eq!(
            hub::policy_for(policies, &topic("alerts")),
            Policy::Disconnect
        );
        assert_eq!(
            hub::policy_for(policies, &topic("other")),
            Policy::Disconnect
        );
        assert_eq!(
            hub::policy_for(policies, &topic("metrics")),
            Policy::Latest,
            "metrics keeps the newest sample unless configured"
        );
        let explicit = settings(&["--channel-policy=metrics=disconnect"]).unwrap();
        assert_eq!(
            hub::policy_for(&explicit.bus.hub.policies, &topic("metrics")),
            Policy::Disconnect
        );
        let prefix = settings(&["--channel-policy=met*=drop-oldest"]).unwrap();
        assert_eq!(
            hub::policy_for(&prefix.bus.hub.policies, &topic("metrics")),
            Policy::DropOldest
        );
        assert!(matches!(
            settings(&["--channel-policy=bad name=latest"]),
            Err(ConfigError::Invalid {
                key: "channel-policy",
                ..
            })
        ));
    }

    #[test]
    fn auth_needs_a_readable_key() {
        let ok = settings(&["--auth=required", "--jwt-secret=0123456789abcdef"]).unwrap();
        assert!(ok.auth.is_required());
        let missing = settings(&["--jwt-public-key=/nonexistent/key.pem"]);
        assert!(matches!(
            missing,
            Err(ConfigError::Invalid {
                key: "jwt-public-key",
                ..
            })
        ));
        let dir = std::env::temp_dir().join(format!("sluice-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("not-a-key.pem");
        std::fs::write(&garbage, b"not a key").unwrap();
        let bad = settings(&[&format!("--jwt-public-key={}", garbage.display())]);
        assert!(matches!(
            bad,
            Err(ConfigError::Invalid {
                key: "jwt-public-key",
                ..
            })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
