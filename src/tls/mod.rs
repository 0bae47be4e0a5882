//! TLS: the certificate chain and key (read from PEM files or obtained by ACME), their checks, and
//! the swappable resolver that every worker's handshake reads.
//!
//! A handshake asks [`Certs`] for the current pair; a reload or an ACME renewal swaps that pair
//! atomically, so new handshakes see the new certificate while open connections keep the session
//! they negotiated. The crypto provider is `ring` (it builds with a C compiler alone). Knows
//! nothing of HTTP: `http::conn` takes the acceptor and the negotiated ALPN protocol from here.

pub mod acme;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN protocol id of an ACME TLS-ALPN-01 validation (RFC 8737).
pub const ALPN_ACME: &[u8] = b"acme-tls/1";

/// How often the certificate files' modification times are compared, so a certificate replaced
/// on disk (by certbot, a secret mount, an operator) is picked up without a SIGHUP. A `stat` of
/// two files every few seconds costs nothing measurable.
pub const FILE_CHECK_PERIOD: Duration = Duration::from_secs(2);

/// Why a certificate or key could not be used.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The certificate file holds no PEM certificate.
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    NoKey(PathBuf),
    /// The key is not one rustls can sign with.
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The leaf certificate does not parse.
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key does not belong to the leaf certificate.
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The leaf certificate's validity period has ended.
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// Its `notAfter`.
        not_after: String,
    },
    /// The leaf certificate's validity period has not begun.
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Its `notBefore`.
        not_before: String,
    },
    /// The TLS configuration could not be built.
    Config(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::NoCertificate(path) => {
                write!(f, "{} holds no PEM certificate", path.display())
            }
            TlsError::NoKey(path) => write!(f, "{} holds no PEM private key", path.display()),
            TlsError::BadKey { path, reason } => {
                write!(f, "unusable private key in {}: {reason}", path.display())
            }
            TlsError::BadCertificate { path, reason } => {
                write!(f, "unusable certificate in {}: {reason}", path.display())
            }
            TlsError::Mismatch { cert, key } => write!(
                f,
                "the key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Expired { path, not_after } => write!(
                f,
                "the certificate in {} expired on {not_after}",
                path.display()
            ),
            TlsError::NotYetValid { path, not_before } => write!(
                f,
                "the certificate in {} is not valid before {not_before}",
                path.display()
            ),
            TlsError::Config(reason) => write!(f, "cannot build the TLS configuration: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The crypto provider every TLS object of the process uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate resolver: the current pair, swapped whole by reload or renewal, and the
/// TLS-ALPN-01 challenge certificates of an ACME order in progress.
#[derive(Debug, Default)]
pub struct Certs {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Certs {
    /// Makes `pair` the certificate of every later handshake.
    pub fn install(&self, pair: Arc<CertifiedKey>) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(pair);
        }
    }

    /// Whether a certificate is installed (ACME may not have one yet).
    pub fn is_ready(&self) -> bool {
        self.current.read().is_ok_and(|c| c.is_some())
    }

    /// The current pair.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Answers TLS-ALPN-01 validation handshakes for `domain` with `pair`.
    pub(crate) fn set_challenge(&self, domain: &str, pair: Arc<CertifiedKey>) {
        if let Ok(mut challenges) = self.challenges.lock() {
            challenges.insert(domain.to_ascii_lowercase(), pair);
        }
    }

    /// Forgets every challenge certificate.
    pub(crate) fn clear_challenges(&self) {
        if let Ok(mut challenges) = self.challenges.lock() {
            challenges.clear();
        }
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let is_acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ALPN_ACME));
        if is_acme {
            // RFC 8737: a validation handshake offers only acme-tls/1 and must get the challenge
            // certificate for the name it asks for, never the served one.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.lock().ok()?.get(&name).cloned();
        }
        self.current()
    }
}

/// TLS for the listeners: the resolver, the rustls configuration built on it, and where the
/// pair comes from.
#[derive(Debug)]
pub struct Tls {
    certs: Arc<Certs>,
    config: Arc<ServerConfig>,
    files: Option<Files>,
}

/// The certificate and key files, and their modification times when last read.
#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl Tls {
    /// Reads and checks the pair in `cert` and `key` (PEM). Every problem is reported here, at
    /// start, never at the first handshake.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let files = Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
            stamp: Mutex::new(None),
        };
        let stamp = files.modified();
        let pair = load_pair(cert, key)?;
        if let Ok(mut slot) = files.stamp.lock() {
            *slot = stamp;
        }
        let tls = Tls::with_certs(Arc::new(Certs::default()), Some(files), false)?;
        tls.certs.install(Arc::new(pair));
        Ok(tls)
    }

    /// TLS whose certificate comes from ACME: none until the first order completes, and
    /// `acme-tls/1` offered so validation handshakes reach the challenge certificates.
    pub fn for_acme() -> Result<Tls, TlsError> {
        Tls::with_certs(Arc::new(Certs::default()), None, true)
    }

    fn with_certs(certs: Arc<Certs>, files: Option<Files>, acme: bool) -> Result<Tls, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        if acme {
            config.alpn_protocols.push(ALPN_ACME.to_vec());
        }
        Ok(Tls {
            certs,
            config: Arc::new(config),
            files,
        })
    }

    /// The acceptor the workers hand each new connection to.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// The resolver, for ACME to install certificates into.
    pub fn certs(&self) -> &Arc<Certs> {
        &self.certs
    }

    /// Re-reads the files and, if the new pair passes every check, makes it the certificate of
    /// later handshakes. On error the old pair stays. Does nothing without files (ACME).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let stamp = files.modified();
        if let Ok(mut slot) = files.stamp.lock() {
            *slot = stamp;
        }
        let pair = load_pair(&files.cert, &files.key)?;
        self.certs.install(Arc::new(pair));
        Ok(true)
    }

    /// Whether either file's modification time changed since it was last read.
    pub fn files_changed(&self) -> bool {
        let Some(files) = &self.files else {
            return false;
        };
        let now = files.modified();
        now.is_some() && files.stamp.lock().is_ok_and(|stamp| *stamp != now)
    }
}

impl Files {
    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let cert = std::fs::metadata(&self.cert)
            .and_then(|m| m.modified())
            .ok()?;
        let key = std::fs::metadata(&self.key)
            .and_then(|m| m.modified())
            .ok()?;
        Some((cert, key))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Reads a chain and its key and checks them: parseable, matching, and valid now.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain_pem = read(cert)?;
    let key_pem = read(key)?;
    pair_from_pem(&chain_pem, &key_pem).map_err(|error| error.at(cert, key))
}

/// What went wrong with a PEM pair, before it is told which files it came from.
#[derive(Debug)]
pub(crate) enum PairError {
    NoCertificate,
    NoKey,
    BadKey(String),
    BadCertificate(String),
    Mismatch,
    Expired(String),
    NotYetValid(String),
}

impl PairError {
    fn at(self, cert: &Path, key: &Path) -> TlsError {
        let cert = cert.to_owned();
        match self {
            PairError::NoCertificate => TlsError::NoCertificate(cert),
            PairError::NoKey => TlsError::NoKey(key.to_owned()),
            PairError::BadKey(reason) => TlsError::BadKey {
                path: key.to_owned(),
                reason,
            },
            PairError::BadCertificate(reason) => TlsError::BadCertificate { path: cert, reason },
            PairError::Mismatch => TlsError::Mismatch {
                cert,
                key: key.to_owned(),
            },
            PairError::Expired(not_after) => TlsError::Expired {
                path: cert,
                not_after,
            },
            PairError::NotYetValid(not_before) => TlsError::NotYetValid {
                path: cert,
                not_before,
            },
        }
    }
}

impl fmt::Display for PairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairError::NoCertificate => f.write_str("no PEM certificate"),
            PairError::NoKey => f.write_str("no PEM private key"),
            PairError::BadKey(reason) => write!(f, "unusable private key: {reason}"),
            PairError::BadCertificate(reason) => write!(f, "unusable certificate: {reason}"),
            PairError::Mismatch => f.write_str("the key does not match the certificate"),
            PairError::Expired(at) => write!(f, "the certificate expired on {at}"),
            PairError::NotYetValid(at) => write!(f, "the certificate is not valid before {at}"),
        }
    }
}

/// Parses and checks a PEM chain (leaf first) and its PEM key.
pub(crate) fn pair_from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, PairError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PairError::BadCertificate(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(PairError::NoCertificate);
    };
    let validity = validity(leaf).map_err(PairError::BadCertificate)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PairError::NoKey,
        other => PairError::BadKey(other.to_string()),
    })?;
    let pair = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => PairError::Mismatch,
        other => PairError::BadKey(other.to_string()),
    })?;
    let now = SystemTime::now();
    if now > validity.not_after {
        return Err(PairError::Expired(validity.not_after_text));
    }
    if now < validity.not_before {
        return Err(PairError::NotYetValid(validity.not_before_text));
    }
    Ok(pair)
}

/// A certificate's validity period.
#[derive(Debug, Clone)]
pub(crate) struct Validity {
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    not_before_text: String,
    not_after_text: String,
}

/// Reads the validity period of a DER certificate.
pub(crate) fn validity(cert: &CertificateDer<'_>) -> Result<Validity, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let period = parsed.validity();
    let at = |t: &x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    Ok(Validity {
        not_before: at(&period.not_before),
        not_after: at(&period.not_after),
        not_before_text: period.not_before.to_string(),
        not_after_text: period.not_after.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn self_signed(
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    #[test]
    fn a_valid_pair_loads() {
        let (cert, key) = self_signed(
            now() - time::Duration::days(1),
            now() + time::Duration::days(1),
        );
        assert!(pair_from_pem(cert.as_bytes(), key.as_bytes()).is_ok());
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let (cert, key) = self_signed(
            now() - time::Duration::days(10),
            now() - time::Duration::days(1),
        );
        let error = pair_from_pem(cert.as_bytes(), key.as_bytes()).unwrap_err();
        assert!(matches!(error, PairError::Expired(_)), "{error}");
    }

    #[test]
    fn a_future_certificate_is_refused() {
        let (cert, key) = self_signed(
            now() + time::Duration::days(1),
            now() + time::Duration::days(10),
        );
        let error = pair_from_pem(cert.as_bytes(), key.as_bytes()).unwrap_err();
        assert!(matches!(error, PairError::NotYetValid(_)), "{error}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed(
            now() - time::Duration::days(1),
            now() + time::Duration::days(1),
        );
        let (_, other_key) = self_signed(
            now() - time::Duration::days(1),
            now() + time::Duration::days(1),
        );
        let error = pair_from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(matches!(error, PairError::Mismatch), "{error}");
    }

    #[test]
    fn missing_items_are_named() {
        let (cert, key) = self_signed(
            now() - time::Duration::days(1),
            now() + time::Duration::days(1),
        );
        assert!(matches!(
            pair_from_pem(b"", key.as_bytes()).unwrap_err(),
            PairError::NoCertificate
        ));
        assert!(matches!(
            pair_from_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err(),
            PairError::NoKey
        ));
    }

    #[test]
    fn acme_handshakes_get_only_challenge_certificates() {
        let certs = Certs::default();
        assert!(!certs.is_ready());
        let (cert, key) = self_signed(
            now() - time::Duration::days(1),
            now() + time::Duration::days(1),
        );
        let pair = Arc::new(pair_from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
        certs.install(pair.clone());
        assert!(certs.is_ready());
        certs.set_challenge("Example.COM", pair);
        assert_eq!(certs.challenges.lock().unwrap().len(), 1);
        assert!(certs.challenges.lock().unwrap().contains_key("example.com"));
        certs.clear_challenges();
        assert!(certs.challenges.lock().unwrap().is_empty());
    }
}
