//! ACME end to end against Debian's `pebble` (an ACME test CA) on loopback, started here: sluice
//! orders a certificate for `localhost`, pebble validates TLS-ALPN-01 for real by connecting to
//! sluice's TLS port, the issued certificate is served (it chains to pebble's root), written to
//! the cache, and served again from the cache after a restart while pebble is gone. With pebble
//! issuing certificates that live for a minute, sluice renews before expiry and serves the new
//! certificate while a stream opened under the old one carries on.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Server, TIMEOUT};

fn start(args: &[&str]) -> Server {
    Server::spawn(args)
}

/// How long the first certificate may take: account, order, validation, finalize, download.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running pebble, killed by its pid when dropped.
struct Pebble {
    child: Child,
    directory: String,
    management: SocketAddr,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts pebble with its HTTPS certificate signed by a CA of ours (written to `dir/ca.pem`),
/// validating TLS-ALPN-01 on `tls_port`, issuing certificates valid for `validity` seconds
/// (none: pebble's default of five years).
fn start_pebble(dir: &std::path::Path, tls_port: u16, validity: Option<u64>) -> Pebble {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = serde_json::json!({
        "pebble": {
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": dir.join("pebble-cert.pem"),
            "privateKey": dir.join("pebble-key.pem"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    if let Some(seconds) = validity {
        config["pebble"]["certificateValidityPeriod"] = serde_json::json!(seconds);
    }
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        // Validate at once instead of after a random pause of up to 15 s. Validation itself is
        // real: pebble connects to the TLS port and checks the challenge certificate.
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env_remove("PEBBLE_VA_ALWAYS_VALID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run pebble (apt-get install pebble)");
    let deadline = Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "pebble did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Pebble {
        child,
        directory: format!("https://localhost:{}/dir", listen.port()),
        management,
    }
}

/// Pebble's current root, from its management interface.
async fn pebble_root(pebble: &Pebble, ca_pem: &str) -> Vec<u8> {
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve("localhost", pebble.management)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/roots/0", pebble.management.port());
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap().to_vec()
}

/// The leaf a handshake with `addr` presents, verified against `root_pem`; `None` while the
/// server has no certificate yet (the handshake fails).
async fn served_leaf(addr: SocketAddr, root_pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .ok()?
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
}

/// Sluice's arguments for an ACME certificate for `localhost` from `directory` (whose TLS
/// `ca` signs its HTTPS), cached in `cache`.
fn acme_args(listen: &str, cache: &Path, directory: &str, ca: &Path) -> Vec<String> {
    [
        "--listen",
        listen,
        "--acme-domain",
        "localhost",
        "--acme-contact",
        "mailto:ops@localhost.localdomain",
        "--acme-cache",
        &cache.display().to_string(),
        "--acme-directory",
        directory,
        "--acme-directory-ca",
        &ca.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The first certificate `server` serves that chains to `root`, waited for up to
/// `ISSUE_TIMEOUT`.
async fn issued_leaf(server: &Server, root: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + ISSUE_TIMEOUT;
    loop {
        if let Some(leaf) = served_leaf(server.addr, root).await {
            return leaf;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate within {ISSUE_TIMEOUT:?}; sluice stderr:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client that trusts only `root` and resolves `localhost` to `server`.
fn client_trusting(root: &[u8], server: &Server) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root).unwrap())
        .resolve("localhost", server.addr)
        .build()
        .unwrap()
}

#[tokio::test]
async fn pebble_issues_a_certificate_that_is_served_cached_and_reused() {
    let dir: PathBuf = std::env::temp_dir().join(format!("sluice-acme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("cache");
    let port = free_port();
    let pebble = start_pebble(&dir, port, None);
    let ca = dir.join("ca.pem");
    let listen = format!("127.0.0.1:{port}");
    let args = |directory: &str| acme_args(&listen, &cache, directory, &ca);
    let first_args = args(&pebble.directory);
    let server = start(&first_args.iter().map(String::as_str).collect::<Vec<_>>());
    let root = pebble_root(&pebble, &std::fs::read_to_string(&ca).unwrap()).await;

    // Issued and served: a handshake verifies against pebble's root.
    let issued = issued_leaf(&server, &root).await;
    // Every route works over it.
    let client = client_trusting(&root, &server);
    let health = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_2);

    // Cached.
    for file in ["account.json", "certificate.pem", "key.pem"] {
        assert!(cache.join(file).exists(), "{file} is cached");
    }
    drop(server);

    // Restarted with pebble gone (and a directory nobody answers on): the cached certificate
    // is served at once.
    drop(pebble);
    let gone = format!("https://localhost:{}/dir", free_port());
    let restart_args = args(&gone);
    let server = start(&restart_args.iter().map(String::as_str).collect::<Vec<_>>());
    let reused = served_leaf(server.addr, &root)
        .await
        .expect("the cached certificate is served after a restart");
    assert_eq!(reused, issued);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads `response` until `needle` has arrived, or `TIMEOUT` passes; whether it arrived.
async fn read_until(response: &mut reqwest::Response, seen: &mut Vec<u8>, needle: &str) -> bool {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !String::from_utf8_lossy(seen).contains(needle) {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.extend_from_slice(&chunk),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_before_expiry_without_dropping_a_stream() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sluice-acme-renew-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    // A minute of validity: sluice renews with a third of it left, 40 s after issue.
    let pebble = start_pebble(&dir, port, Some(60));
    let ca = dir.join("ca.pem");
    let listen = format!("127.0.0.1:{port}");
    let cache = dir.join("cache");
    let args = acme_args(&listen, &cache, &pebble.directory, &ca);
    let server = start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let root = pebble_root(&pebble, &std::fs::read_to_string(&ca).unwrap()).await;
    let first = issued_leaf(&server, &root).await;
    let (_, first_cert) = x509_parser::parse_x509_certificate(&first).unwrap();
    let lifetime =
        first_cert.validity().not_after.timestamp() - first_cert.validity().not_before.timestamp();
    assert!(lifetime <= 120, "pebble issued a {lifetime} s certificate");

    // A stream opened under the first certificate (HTTP/2 over TLS).
    let client = client_trusting(&root, &server);
    let mut stream = client
        .get(format!("https://localhost:{port}/events?channel=renew"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = Vec::new();
    assert!(read_until(&mut stream, &mut seen, "event: connected").await);

    // Renewed before the first one expires: a new handshake sees another certificate.
    let renew_by = Instant::now() + Duration::from_secs(lifetime as u64) + ISSUE_TIMEOUT;
    let second = loop {
        if let Some(leaf) = served_leaf(server.addr, &root).await {
            if leaf != first {
                break leaf;
            }
        }
        assert!(
            Instant::now() < renew_by,
            "not renewed; sluice stderr:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (_, second_cert) = x509_parser::parse_x509_certificate(&second).unwrap();
    assert_ne!(second_cert.serial, first_cert.serial);
    assert!(
        second_cert.validity().not_after.timestamp() > first_cert.validity().not_after.timestamp()
    );
    // Renewed before expiry, not after it.
    assert!(
        x509_parser::time::ASN1Time::now().timestamp()
            < first_cert.validity().not_after.timestamp(),
        "renewed only after the first certificate expired"
    );

    // The stream opened before the renewal still receives events, published over a connection
    // that handshakes with the new certificate.
    let publisher = client_trusting(&root, &server);
    let published = publisher
        .post(format!("https://localhost:{port}/api/publish"))
        .json(&serde_json::json!({"channel": "renew", "data": {"after": "renewal"}}))
        .send()
        .await
        .unwrap();
    assert!(published.status().is_success(), "{}", published.status());
    assert!(
        read_until(&mut stream, &mut seen, "\"after\":\"renewal\"").await,
        "the stream opened under the first certificate got: {}",
        String::from_utf8_lossy(&seen)
    );
    drop(stream);
    drop(server);
    drop(pebble);
    let _ = std::fs::remove_dir_all(&dir);
}
