//! TLS for the clients (`--tls`): one rustls client configuration per run, trusting a test CA
//! (`--ca`, or the one a spawned server was given) or the system's roots, with the server name
//! (SNI, and the name the certificate is checked against) taken from the URL's host. ALPN offers
//! `h2` only for HTTP/2 streams and `http/1.1` only for everything else, so a server that cannot
//! speak what was asked for fails the handshake instead of quietly downgrading. Sessions are not
//! resumed: every connection makes a full handshake.
//!
//! Also the test CA and its leaf for `localhost` and `127.0.0.1` that a spawned TLS target gets,
//! made with rcgen, and a stream type ([`Io`]) that is plain TCP or TLS alike for the publisher.
//! Knows nothing of SSE or the run.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A client stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// The run's TLS client side.
#[derive(Clone)]
pub struct Tls {
    /// ALPN `http/1.1`.
    http1: TlsConnector,
    /// ALPN `h2`.
    http2: TlsConnector,
    /// The name sent as SNI and checked against the certificate.
    name: ServerName<'static>,
    /// A blocking configuration (ALPN `http/1.1`) for the `/stats` sampler.
    blocking: Arc<ClientConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

/// The TLS client could not be set up.
#[derive(Debug)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl Tls {
    /// Trusts the certificates in `ca` (PEM), or the system's roots without it, and expects a
    /// certificate for `host` (a DNS name or an IP address).
    pub fn new(ca: Option<&Path>, host: &str) -> Result<Tls, TlsError> {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect())
                    .map_err(|e| TlsError(format!("--ca {}: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(TlsError(format!(
                        "--ca {}: no certificate in it",
                        path.display()
                    )));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError(format!("--ca {}: {e}", path.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsError(
                        "no system root certificates found; give --ca PATH".to_owned(),
                    ));
                }
            }
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| TlsError(format!("'{host}' is not a valid TLS server name")))?;
        let roots = Arc::new(roots);
        let config = |alpn: &[u8]| -> Result<Arc<ClientConfig>, TlsError> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError(e.to_string()))?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            // Every connection makes a full handshake, as a new visitor's browser does.
            config.resumption = rustls::client::Resumption::disabled();
            Ok(Arc::new(config))
        };
        let blocking = config(b"http/1.1")?;
        Ok(Tls {
            http1: TlsConnector::from(blocking.clone()),
            http2: TlsConnector::from(config(b"h2")?),
            name,
            blocking,
        })
    }

    /// A full handshake on `tcp`, offering `h2` (`http2`) or `http/1.1`; fails unless the server
    /// picked that protocol.
    pub async fn connect(&self, tcp: TcpStream, http2: bool) -> io::Result<TlsStream<TcpStream>> {
        let connector = if http2 { &self.http2 } else { &self.http1 };
        let stream = connector.connect(self.name.clone(), tcp).await?;
        let wanted: &[u8] = if http2 { b"h2" } else { b"http/1.1" };
        let picked = stream.get_ref().1.alpn_protocol();
        // A server without ALPN serves HTTP/1.1; HTTP/2 must have been agreed on.
        if picked == Some(wanted) || (picked.is_none() && !http2) {
            Ok(stream)
        } else {
            Err(io::Error::other(format!(
                "ALPN: the server picked {:?}, not {}",
                picked.map(String::from_utf8_lossy),
                String::from_utf8_lossy(wanted)
            )))
        }
    }

    /// A blocking TLS client over `tcp` (ALPN `http/1.1`).
    pub fn blocking(
        &self,
        tcp: std::net::TcpStream,
    ) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        let connection = rustls::ClientConnection::new(self.blocking.clone(), self.name.clone())
            .map_err(io::Error::other)?;
        Ok(rustls::StreamOwned::new(connection, tcp))
    }
}

/// A test CA and a leaf certificate it signed for `localhost` and `127.0.0.1`, written as PEM
/// files into a directory.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (what clients trust).
    pub ca: PathBuf,
    /// The leaf certificate followed by the CA (the chain a server sends).
    pub cert: PathBuf,
    /// The leaf's private key (ECDSA P-256).
    pub key: PathBuf,
}

impl TestPki {
    /// Makes the CA and the leaf and writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    pub fn create(dir: &Path) -> Result<TestPki, TlsError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let failed = |e: rcgen::Error| TlsError(format!("cannot make the test CA: {e}"));
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sluice-loadtest test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(failed)?;
        let leaf_key = KeyPair::generate().map_err(failed)?;
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(failed)?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).map_err(failed)?;
        let pki = TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let write = |path: &Path, text: String| {
            std::fs::write(path, text)
                .map_err(|e| TlsError(format!("cannot write {}: {e}", path.display())))
        };
        write(&pki.ca, ca.pem())?;
        write(&pki.cert, leaf.pem() + &ca.pem())?;
        write(&pki.key, leaf_key.serialize_pem())?;
        Ok(pki)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_pki_is_trusted_by_a_client_of_its_ca() {
        let dir = std::env::temp_dir().join(format!("lt-pki-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("dir");
        let pki = TestPki::create(&dir).expect("pki");
        assert!(Tls::new(Some(&pki.ca), "localhost").is_ok());
        assert!(Tls::new(Some(&pki.ca), "127.0.0.1").is_ok());
        // A key file is no CA.
        assert!(Tls::new(Some(&pki.key), "localhost").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
