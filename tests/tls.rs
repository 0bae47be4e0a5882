//! TLS and HTTP/2 end to end: certificates made here (a test CA and leaves it signs), the real
//! binary serving HTTPS with ALPN and h2c beside HTTP/1.1 on a plain port, reqwest and hyper
//! HTTP/2 clients, curl's negotiated version, certificate errors at start (exit 64), reload under
//! a live stream, and a slow-consumer eviction that resets one HTTP/2 stream only.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::{Server, TIMEOUT};

fn start(args: &[&str]) -> Server {
    Server::spawn(args)
}

/// A test CA and a directory for the files handed to the server.
struct Pki {
    dir: PathBuf,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("sluice-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Sluice test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A leaf for `localhost` and 127.0.0.1 with this serial, valid from `from` to `until` days
    /// from now; returns (cert PEM, key PEM).
    fn leaf(&self, serial: u64, from: i64, until: i64) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(until);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a valid leaf as `cert.pem` / `key.pem` (replacing them atomically).
    fn write_leaf(&self, serial: u64) {
        let (cert, key) = self.leaf(serial, -1, 30);
        write_atomic(&self.path("cert.pem"), &cert);
        write_atomic(&self.path("key.pem"), &key);
    }

    fn tls_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".to_owned(),
            self.path("cert.pem").display().to_string(),
            "--tls-key".to_owned(),
            self.path("key.pem").display().to_string(),
        ]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_atomic(path: &Path, text: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn start_tls(pki: &Pki, extra: &[&str]) -> Server {
    let mut args: Vec<String> = pki.tls_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start(&args)
}

/// A reqwest client trusting the test CA, with `localhost` resolved to the server.
fn https_client(pki: &Pki, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .connect_timeout(TIMEOUT);
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

/// A reqwest client speaking HTTP/2 with prior knowledge over plain TCP (h2c).
fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .connect_timeout(TIMEOUT)
        .build()
        .unwrap()
}

/// An open event stream read through reqwest, split into SSE events by blank lines.
struct EventStream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: String,
}

impl EventStream {
    async fn open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> (EventStream, reqwest::Version) {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = tokio::time::timeout(TIMEOUT, request.send())
            .await
            .expect("stream response within the timeout")
            .expect("stream response");
        assert_eq!(response.status(), 200, "GET {url}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "GET {url}"
        );
        let version = response.version();
        let stream = EventStream {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        };
        (stream, version)
    }

    /// The next event with a `data:` line, as (id, data), skipping comments and the opening.
    async fn next_data(&mut self) -> (Option<String>, String) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                let mut event = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    }
                }
                if let (Some(data), false) = (data, event.as_deref() == Some("connected")) {
                    return (id, data);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(other) => panic!("stream ended while waiting for an event: {other:?}"),
                Err(_) => panic!("no event within {TIMEOUT:?}; buffered: {:?}", self.buffer),
            }
        }
    }
}

async fn publish(client: &reqwest::Client, base: &str, channel: &str, data: Value) -> Value {
    let response = client
        .post(format!("{base}/api/publish"))
        .json(&json!({ "channel": channel, "data": data }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Every kind of request over `client`, which must speak `version`: a stream, a publish that
/// reaches it, a resume with `Last-Event-ID`, and each error status. The server runs with
/// `--max-body 1KiB`, so the 413 body fits in socket buffers (an HTTP/1.1 client still writing
/// a large body when the early 413 closes the connection sees a broken pipe instead).
async fn exercise(client: &reqwest::Client, base: &str, version: reqwest::Version) {
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.version(), version);
    assert_eq!(health.status(), 200);

    let url = format!("{base}/events?channel=news");
    let (mut stream, negotiated) = EventStream::open(client, &url, None).await;
    assert_eq!(negotiated, version);
    let first = publish(client, base, "news", json!("one")).await;
    let second = publish(client, base, "news", json!("two")).await;
    let (id, data) = stream.next_data().await;
    assert_eq!(id.as_deref(), first["id"].as_str());
    assert!(data.contains("\"one\""), "{data}");
    let (id, data) = stream.next_data().await;
    assert_eq!(id.as_deref(), second["id"].as_str());
    assert!(data.contains("\"two\""), "{data}");

    // Resume after the first event: the second is replayed.
    let (mut resumed, _) = EventStream::open(client, &url, first["id"].as_str()).await;
    let (id, data) = resumed.next_data().await;
    assert_eq!(id.as_deref(), second["id"].as_str());
    assert!(data.contains("\"two\""), "{data}");

    // Errors: each with its status and a JSON body.
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (client.get(format!("{base}/nowhere")), 404),
        (client.get(format!("{base}/api/publish")), 405),
        (
            client
                .post(format!("{base}/api/publish"))
                .json(&json!({"channel": "bad channel!", "data": 1})),
            400,
        ),
        (
            client
                .post(format!("{base}/api/publish"))
                .header("content-type", "text/html")
                .body("<p>"),
            415,
        ),
        (
            client
                .post(format!("{base}/api/publish"))
                .header("content-type", "application/json")
                .body(vec![b' '; 2 * 1024]),
            413,
        ),
    ];
    for (request, status) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn https_serves_http2_and_http1_by_alpn() {
    let pki = Pki::new("alpn");
    pki.write_leaf(1);
    let server = start_tls(&pki, &["--max-body", "1KiB"]);
    let base = format!("https://localhost:{}", server.addr.port());
    let h2 = https_client(&pki, server.addr, false);
    exercise(&h2, &base, reqwest::Version::HTTP_2).await;
    let h1 = https_client(&pki, server.addr, true);
    exercise(&h1, &base, reqwest::Version::HTTP_11).await;
}

#[tokio::test]
async fn a_plain_port_serves_h2c_beside_http1() {
    let server = start(&["--max-body", "1KiB"]);
    let base = format!("http://{}", server.addr);
    exercise(&h2c_client(), &base, reqwest::Version::HTTP_2).await;
    exercise(&support::http(), &base, reqwest::Version::HTTP_11).await;
}

/// `curl -w '%{http_version}'` for `args`.
fn curl_version(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(["--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn curl_negotiates_http2_over_tls_and_with_prior_knowledge() {
    let pki = Pki::new("curl");
    pki.write_leaf(1);
    let tls = start_tls(&pki, &[]);
    let port = tls.addr.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/healthz");
    let ca = pki.path("ca.pem").display().to_string();
    let common = ["--resolve", &resolve, "--cacert", &ca];
    let mut h2 = common.to_vec();
    h2.extend(["--http2", &url]);
    assert_eq!(curl_version(&h2), "2 200");
    let mut h1 = common.to_vec();
    h1.extend(["--http1.1", &url]);
    assert_eq!(curl_version(&h1), "1.1 200");

    let plain = start(&[]);
    let url = plain.url("/healthz");
    assert_eq!(curl_version(&["--http2-prior-knowledge", &url]), "2 200");
    assert_eq!(curl_version(&[&url]), "1.1 200");
}

/// Runs the binary with `args`, expecting it to refuse to start; returns stderr.
fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("SLUICE_TLS_CERT")
        .env_remove("SLUICE_TLS_KEY")
        .output()
        .expect("run sluice");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "it must not start listening");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    stderr
}

#[test]
fn unusable_certificates_are_configuration_errors() {
    let pki = Pki::new("errors");
    pki.write_leaf(1);
    let cert = pki.path("cert.pem").display().to_string();
    let key = pki.path("key.pem").display().to_string();
    let missing = pki.path("missing.pem").display().to_string();

    let stderr = refused(&["--tls-cert", &missing, "--tls-key", &key]);
    assert!(
        stderr.contains("cannot read") && stderr.contains("missing.pem"),
        "{stderr}"
    );

    let (_, other_key) = pki.leaf(2, -1, 30);
    std::fs::write(pki.path("other-key.pem"), other_key).unwrap();
    let other = pki.path("other-key.pem").display().to_string();
    let stderr = refused(&["--tls-cert", &cert, "--tls-key", &other]);
    assert!(stderr.contains("does not match"), "{stderr}");

    let (old_cert, old_key) = pki.leaf(3, -10, -1);
    std::fs::write(pki.path("old-cert.pem"), old_cert).unwrap();
    std::fs::write(pki.path("old-key.pem"), old_key).unwrap();
    let old_cert = pki.path("old-cert.pem").display().to_string();
    let old_key = pki.path("old-key.pem").display().to_string();
    let stderr = refused(&["--tls-cert", &old_cert, "--tls-key", &old_key]);
    assert!(stderr.contains("expired"), "{stderr}");

    let stderr = refused(&["--tls-cert", &key, "--tls-key", &key]);
    assert!(stderr.contains("no PEM certificate"), "{stderr}");

    let stderr = refused(&["--tls-cert", &cert]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

/// The serial number of the certificate a new TLS handshake with the server presents.
async fn served_serial(pki: &Pki, addr: SocketAddr) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("handshake within the timeout")
        .expect("handshake");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    parsed.raw_serial().to_vec()
}

async fn wait_serial(pki: &Pki, addr: SocketAddr, serial: u8) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let served = served_serial(pki, addr).await;
        if served == [serial] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still serving serial {served:?}, wanted {serial}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_certificate_reloads_under_a_live_stream() {
    let pki = Pki::new("reload");
    pki.write_leaf(1);
    let server = start_tls(&pki, &["--heartbeat-interval", "1h"]);
    let base = format!("https://localhost:{}", server.addr.port());
    let client = https_client(&pki, server.addr, false);
    assert_eq!(served_serial(&pki, server.addr).await, [1]);
    let url = format!("{base}/events?channel=live");
    let (mut stream, version) = EventStream::open(&client, &url, None).await;
    assert_eq!(version, reqwest::Version::HTTP_2);

    // New files and SIGHUP: new handshakes get the new certificate.
    pki.write_leaf(2);
    server.signal("HUP");
    wait_serial(&pki, server.addr, 2).await;

    // The stream opened under the old certificate still receives.
    publish(
        &https_client(&pki, server.addr, false),
        &base,
        "live",
        json!("after"),
    )
    .await;
    let (_, data) = stream.next_data().await;
    assert!(data.contains("\"after\""), "{data}");

    // A bad pair (a key of another certificate) is refused and the current one kept.
    let (_, other_key) = pki.leaf(9, -1, 30);
    write_atomic(&pki.path("key.pem"), &other_key);
    server.signal("HUP");
    let deadline = Instant::now() + TIMEOUT;
    while !server.stderr().contains("certificate reload failed") {
        assert!(
            Instant::now() < deadline,
            "no reload error: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served_serial(&pki, server.addr).await, [2]);

    // Replaced files are picked up without a signal too.
    pki.write_leaf(3);
    wait_serial(&pki, server.addr, 3).await;
    publish(&client, &base, "live", json!("still")).await;
    let (_, data) = stream.next_data().await;
    assert!(data.contains("\"still\""), "{data}");
}

/// Reads `body` until it ends; `Err` if it ended with an error (a reset), `Ok` with what it
/// read if it ended cleanly.
async fn read_to_end(body: &mut hyper::body::Incoming) -> Result<usize, hyper::Error> {
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            read += data.len();
        }
    }
    Ok(read)
}

#[tokio::test]
async fn evicting_one_http2_stream_leaves_the_others_on_its_connection_receiving() {
    let server = start(&["--channel-capacity", "4", "--workers", "1"]);
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // A small window per stream, a large one for the connection: the stalled stream's window
    // shuts while the connection's stays open for its siblings.
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(16 * 1024)
            .initial_connection_window_size(8 * 1024 * 1024)
            .handshake::<_, http_body_util::Empty<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let get = |path: &str| {
        hyper::Request::get(format!("http://{}{path}", server.addr))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap()
    };
    let slow = sender
        .send_request(get("/events?channel=slow"))
        .await
        .unwrap();
    let fast = sender
        .send_request(get("/events?channel=fast"))
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(fast.status(), 200);
    let mut slow = slow.into_body();
    let mut fast = fast.into_body();
    server
        .wait_stats("two streams", |s| s["totalConnections"] == 2)
        .await;

    // Flood the slow stream, whose reader reads nothing, until the hub evicts it.
    let client = support::http();
    let base = format!("http://{}", server.addr);
    let padding = "x".repeat(8 * 1024);
    let deadline = Instant::now() + TIMEOUT;
    while server.stats().await["slowConsumersDropped"] == 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled stream was never evicted"
        );
        publish(&client, &base, "slow", json!(padding)).await;
    }

    // Its sibling on the same connection still gets its events.
    publish(&client, &base, "fast", json!("still here")).await;
    let mut seen = String::new();
    while !seen.contains("still here") {
        let frame = tokio::time::timeout(TIMEOUT, fast.frame())
            .await
            .expect("the sibling stream receives within the timeout")
            .expect("the sibling stream is open")
            .expect("the sibling stream is not reset");
        if let Some(data) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(data));
        }
    }

    // The evicted stream was reset, not ended: what its window held, then an error.
    let ended = tokio::time::timeout(TIMEOUT, read_to_end(&mut slow))
        .await
        .expect("the evicted stream ends within the timeout");
    let error = ended.expect_err("the evicted stream must be reset, not ended cleanly");
    assert!(format!("{error:?}").contains("CANCEL"), "{error:?}");

    // And the connection still takes new requests.
    let health = sender.send_request(get("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn shutdown_ends_every_http2_stream_with_a_retry_then_exits() {
    let mut server = start(&["--retry", "2s"]);
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let mut bodies = Vec::new();
    for channel in ["a", "b", "c"] {
        let request =
            hyper::Request::get(format!("http://{}/events?channel={channel}", server.addr))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.into_body());
    }
    server
        .wait_stats("three streams", |s| s["totalConnections"] == 3)
        .await;

    server.signal("TERM");
    for mut body in bodies {
        let mut text = String::new();
        let ended = tokio::time::timeout(TIMEOUT, async {
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame?.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
            }
            Ok::<_, hyper::Error>(())
        })
        .await
        .expect("the stream ends within the timeout");
        ended.expect("the stream ends cleanly, not reset");
        let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
        let retry: u64 = last
            .strip_prefix("retry: ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("the last frame is a retry: {text:?}"));
        assert!((2_000..=12_000).contains(&retry), "retry {retry}");
    }
    let status = server
        .wait_exit(TIMEOUT)
        .await
        .expect("exits within the timeout");
    assert!(status.success(), "{status:?}");
    // The connection ends once its streams are done (GOAWAY, then close).
    tokio::time::timeout(TIMEOUT, connection)
        .await
        .expect("the connection closes")
        .unwrap()
        .ok();
}

/// An HTTP/2 connection over plain TCP (h2c) with a hyper client.
async fn h2c_connection(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

fn stream_request(addr: SocketAddr, channel: &str) -> hyper::Request<http_body_util::Empty<Bytes>> {
    hyper::Request::get(format!("http://{addr}/events?channel={channel}"))
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::new())
        .unwrap()
}

#[tokio::test]
async fn a_connection_opens_at_most_max_streams_per_connection_at_once() {
    let server = start(&["--max-streams-per-connection", "2"]);
    let mut sender = h2c_connection(server.addr).await;
    let first = sender
        .send_request(stream_request(server.addr, "a"))
        .await
        .unwrap();
    let _second = sender
        .send_request(stream_request(server.addr, "b"))
        .await
        .unwrap();
    // The third waits for a free stream slot: the server advertised two.
    let mut third = Box::pin(sender.send_request(stream_request(server.addr, "c")));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.as_mut())
            .await
            .is_err(),
        "a third concurrent stream was opened"
    );
    assert_eq!(server.stats().await["totalConnections"], 2);
    // Closing one lets it through.
    drop(first);
    let third = tokio::time::timeout(TIMEOUT, third)
        .await
        .expect("the third stream opens once a slot is free")
        .unwrap();
    assert_eq!(third.status(), 200);
    server
        .wait_stats("two streams", |s| s["totalConnections"] == 2)
        .await;
}

#[tokio::test]
async fn every_http2_stream_counts_toward_max_connections() {
    let server = start(&["--max-connections", "2", "--workers", "1"]);
    let mut sender = h2c_connection(server.addr).await;
    let _a = sender
        .send_request(stream_request(server.addr, "a"))
        .await
        .unwrap();
    let _b = sender
        .send_request(stream_request(server.addr, "b"))
        .await
        .unwrap();
    server
        .wait_stats("two streams", |s| s["totalConnections"] == 2)
        .await;
    // A third stream on the same connection is over the limit: a retry and an end, as on
    // HTTP/1.1, while the first two stay open.
    let third = sender
        .send_request(stream_request(server.addr, "c"))
        .await
        .unwrap();
    let body = tokio::time::timeout(TIMEOUT, third.into_body().collect())
        .await
        .expect("the refused stream ends within the timeout")
        .expect("it ends cleanly")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with("retry: ") && text.ends_with("\n\n"),
        "a lone retry frame: {text:?}"
    );
    assert_eq!(server.stats().await["totalConnections"], 2);
}
