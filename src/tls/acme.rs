//! Automatic certificates with ACME (RFC 8555), validated by TLS-ALPN-01 (RFC 8737) on the TLS
//! port itself, so no second listener is needed.
//!
//! The protocol (account, order, finalize, download) is `instant-acme`; what is ours is the
//! challenge: a self-signed certificate for the domain carrying the `acmeIdentifier` extension,
//! put into the resolver ([`Certs`]) for handshakes that offer only `acme-tls/1`. The account and
//! the certificate are kept in `--acme-cache`, so a restart reuses them instead of ordering again.
//! The client runs on its own thread with its own small runtime: nothing here touches a worker.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::{pair_from_pem, provider, validity, Certs};
use crate::shutdown::Shutdown;

/// Renew when less than this is left of a certificate's life. Let's Encrypt certificates last
/// 90 days and Let's Encrypt itself suggests renewing with 30 left, which leaves weeks to retry.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Renew at the latest when this share of a certificate's life is left, for short-lived
/// certificates (a test CA, or a 6-day profile) where [`RENEW_BEFORE`] would mean "always".
pub const RENEW_AT_REMAINING_SHARE: f64 = 1.0 / 3.0;

/// First wait after a failed order; doubles up to [`RETRY_MAX`]. Short enough that a transient
/// outage at start heals quickly, while the doubling keeps a persistent error from hammering the
/// CA's rate limits.
pub const RETRY_FIRST: Duration = Duration::from_secs(10);

/// Longest wait between two failed orders.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// File names inside the cache directory.
const ACCOUNT_FILE: &str = "account.json";
const CERT_FILE: &str = "certificate.pem";
const KEY_FILE: &str = "key.pem";
const DOMAINS_FILE: &str = "domains";

/// A certificate's validity period: (`notBefore`, `notAfter`).
type Period = (SystemTime, SystemTime);

/// What ACME needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names the certificate is for.
    pub domains: Vec<String>,
    /// Account contact URLs (`mailto:`).
    pub contact: Option<String>,
    /// Where the account and certificate are kept.
    pub cache: PathBuf,
    /// The ACME directory URL.
    pub directory: String,
    /// A PEM root to trust for the directory's HTTPS instead of the system's.
    pub directory_ca: Option<PathBuf>,
}

/// Why obtaining or keeping a certificate failed.
#[derive(Debug)]
pub enum AcmeError {
    /// The cache directory or a file in it could not be read or written.
    Cache(PathBuf, std::io::Error),
    /// The ACME server or the protocol failed.
    Protocol(instant_acme::Error),
    /// The order reached a state we cannot go on from.
    Order(String),
    /// The CA offered no TLS-ALPN-01 challenge for a name.
    NoTlsAlpnChallenge(String),
    /// A certificate (challenge or issued) could not be built or used.
    Certificate(String),
}

impl fmt::Display for AcmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcmeError::Cache(path, error) => write!(f, "ACME cache {}: {error}", path.display()),
            AcmeError::Protocol(error) => write!(f, "ACME: {error}"),
            AcmeError::Order(state) => write!(f, "ACME order failed: {state}"),
            AcmeError::NoTlsAlpnChallenge(name) => {
                write!(
                    f,
                    "the ACME server offers no tls-alpn-01 challenge for {name}"
                )
            }
            AcmeError::Certificate(reason) => write!(f, "ACME certificate: {reason}"),
        }
    }
}

impl std::error::Error for AcmeError {}

impl From<instant_acme::Error> for AcmeError {
    fn from(error: instant_acme::Error) -> Self {
        AcmeError::Protocol(error)
    }
}

/// Prepares the cache, installs a cached certificate that is still good for these domains, and
/// starts the thread that orders and renews. Errors here are configuration errors.
pub fn start(settings: Settings, certs: Arc<Certs>, shutdown: Shutdown) -> Result<(), AcmeError> {
    std::fs::create_dir_all(&settings.cache)
        .map_err(|e| AcmeError::Cache(settings.cache.clone(), e))?;
    let mut expires = None;
    match cached(&settings) {
        Ok(Some((pair, not_after))) => {
            tracing::info!(domains = ?settings.domains, "using the cached ACME certificate");
            certs.install(Arc::new(pair));
            expires = Some(not_after);
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "ignoring the cached ACME certificate"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AcmeError::Cache(settings.cache.clone(), e))?;
    std::thread::Builder::new()
        .name("sluice-acme".to_owned())
        .spawn(move || runtime.block_on(keep(settings, certs, expires, shutdown)))
        .map_err(|e| AcmeError::Cache(PathBuf::new(), e))?;
    Ok(())
}

/// Orders whenever there is no certificate or it is due for renewal, until shutdown.
async fn keep(
    settings: Settings,
    certs: Arc<Certs>,
    mut expires: Option<Period>,
    mut shutdown: Shutdown,
) {
    let mut backoff = RETRY_FIRST;
    loop {
        let wait = expires.map_or(Duration::ZERO, |(issued, not_after)| {
            renewal_due(issued, not_after)
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.recv() => return,
        }
        let result = tokio::select! {
            result = order(&settings, &certs) => result,
            _ = shutdown.recv() => return,
        };
        certs.clear_challenges();
        match result {
            Ok((pair, period)) => {
                tracing::info!(domains = ?settings.domains, "ACME certificate issued");
                certs.install(Arc::new(pair));
                expires = Some(period);
                backoff = RETRY_FIRST;
            }
            Err(error) => {
                tracing::error!(%error, retry_in = ?backoff, "ACME order failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.recv() => return,
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// When to renew a certificate valid from `issued` to `not_after`.
pub fn renewal_due(issued: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(issued).unwrap_or(Duration::ZERO);
    let share = life.mul_f64(RENEW_AT_REMAINING_SHARE);
    let before = RENEW_BEFORE.min(share);
    not_after.checked_sub(before).unwrap_or(not_after)
}

/// The cached certificate, if it covers exactly these domains and is not due for renewal.
fn cached(settings: &Settings) -> Result<Option<(CertifiedKey, Period)>, AcmeError> {
    let domains = settings.cache.join(DOMAINS_FILE);
    let listed = match std::fs::read_to_string(&domains) {
        Ok(listed) => listed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AcmeError::Cache(domains, e)),
    };
    if listed.lines().collect::<Vec<_>>() != settings.domains {
        return Ok(None);
    }
    let read = |name: &str| {
        let path = settings.cache.join(name);
        std::fs::read(&path).map_err(|e| AcmeError::Cache(path, e))
    };
    let pair = pair_from_pem(&read(CERT_FILE)?, &read(KEY_FILE)?)
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    let period = period_of(&pair)?;
    if SystemTime::now() >= renewal_due(period.0, period.1) {
        return Ok(None);
    }
    Ok(Some((pair, period)))
}

fn period_of(pair: &CertifiedKey) -> Result<Period, AcmeError> {
    let leaf = pair
        .end_entity_cert()
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    let validity = validity(leaf).map_err(AcmeError::Certificate)?;
    Ok((validity.not_before, validity.not_after))
}

/// The account: from the cache, or created and cached.
async fn account(settings: &Settings) -> Result<Account, AcmeError> {
    let builder = || match &settings.directory_ca {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    let path = settings.cache.join(ACCOUNT_FILE);
    if let Ok(json) = std::fs::read(&path) {
        match serde_json::from_slice::<AccountCredentials>(&json) {
            Ok(credentials) => return Ok(builder()?.from_credentials(credentials).await?),
            Err(error) => tracing::warn!(%error, "ignoring the cached ACME account"),
        }
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await?;
    let json = serde_json::to_vec_pretty(&credentials)
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    write_private(&path, &json)?;
    Ok(account)
}

/// One order, from new order to an installed-ready certificate written to the cache.
async fn order(settings: &Settings, certs: &Certs) -> Result<(CertifiedKey, Period), AcmeError> {
    let account = account(settings).await?;
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(AcmeError::Order(format!("authorization {other:?}"))),
        }
        let name = authorization.identifier().to_string();
        let mut challenge = authorization
            .challenge(ChallengeType::TlsAlpn01)
            .ok_or_else(|| AcmeError::NoTlsAlpnChallenge(name.clone()))?;
        let digest = challenge.key_authorization().digest();
        certs.set_challenge(
            &name,
            Arc::new(challenge_certificate(&name, digest.as_ref())?),
        );
        challenge.set_ready().await?;
    }
    let status = order.poll_ready(&RetryPolicy::default()).await?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::Order(format!("order {status:?}")));
    }
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&RetryPolicy::default()).await?;
    let pair = pair_from_pem(chain_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    let period = period_of(&pair)?;
    write_private(&settings.cache.join(KEY_FILE), key_pem.as_bytes())?;
    write_private(&settings.cache.join(CERT_FILE), chain_pem.as_bytes())?;
    write_private(
        &settings.cache.join(DOMAINS_FILE),
        settings.domains.join("\n").as_bytes(),
    )?;
    Ok((pair, period))
}

/// The TLS-ALPN-01 answer for `name`: a self-signed certificate for it with the critical
/// `acmeIdentifier` extension holding the SHA-256 of the key authorization (RFC 8737 §3).
fn challenge_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, AcmeError> {
    let bad = |e: rcgen::Error| AcmeError::Certificate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(bad)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(bad)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension that is the whole point here.
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// Writes a file readable by its owner only (keys and account credentials), atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let fail = |e| AcmeError::Cache(path.to_owned(), e);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn renewal_is_thirty_days_before_a_ninety_day_expiry() {
        let issued = SystemTime::UNIX_EPOCH + DAY * 1000;
        let due = renewal_due(issued, issued + DAY * 90);
        assert_eq!(due, issued + DAY * 60);
    }

    #[test]
    fn short_certificates_renew_with_a_third_left() {
        let issued = SystemTime::UNIX_EPOCH + DAY * 1000;
        let due = renewal_due(issued, issued + DAY * 6);
        assert_eq!(due, issued + DAY * 4);
    }

    #[test]
    fn a_challenge_certificate_carries_the_acme_identifier() {
        let digest = [7u8; 32];
        let pair = challenge_certificate("example.com", &digest).unwrap();
        let der = pair.end_entity_cert().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let extension = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("an acmeIdentifier extension");
        assert!(extension.critical);
        // An OCTET STRING of the 32-byte digest.
        assert_eq!(&extension.value[..2], &[0x04, 32]);
        assert_eq!(&extension.value[2..], &digest);
    }
}
