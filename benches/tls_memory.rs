//! Memory per idle event stream by transport, measured on the real binary side by side in one
//! run: plain HTTP/1.1 (the baseline), TLS + HTTP/1.1, TLS + HTTP/2 with one stream per
//! connection, and TLS + HTTP/2 with many streams sharing each connection (what a browser page
//! with several `EventSource`s does). Each transport gets a fresh server; the figure is the growth
//! of its resident memory (`VmRSS`, and `RssAnon`) over the streams opened, after a warm-up batch.
//!
//! Why: TLS adds per-connection state (rustls buffers and session keys), HTTP/2 adds per
//! connection (HPACK tables, flow control, the h2 state machine) and per stream (a stream slot, a
//! task). Those decide how many browsers a box serves once Sluice terminates TLS itself.
//!
//! ```text
//! cargo bench --bench tls_memory                          # 2 000 streams per transport
//! cargo bench --bench tls_memory -- --streams 5k --per-connection 100
//! ```
//!
//! Options (or environment): `--streams` (`SLUICE_BENCH_STREAMS`), `--per-connection`
//! (`SLUICE_BENCH_PER_CONNECTION`, streams per shared HTTP/2 connection), `--settle`
//! (`SLUICE_BENCH_SETTLE`), `--bin` (`SLUICE_BIN`), `--server-arg` (repeatable). Run without
//! `--bench` (as `cargo test --benches` does) it is a smoke test with 20 streams.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use support::{machine_summary, raise_nofile_limit, Memory, Options, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Streams opened (and held) before the baseline reading, so one-time costs (the first
/// connection on each worker, the first TLS session) are not charged to streams.
const WARMUP: usize = 50;

/// What a client holds open for one idle stream (or one shared connection). Held only for its
/// `Drop`, which closes the streams.
#[allow(dead_code)]
enum Held {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    H2(SendRequest<Empty<Bytes>>, Vec<hyper::body::Incoming>),
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    PlainHttp1,
    TlsHttp1,
    TlsHttp2,
    TlsHttp2Shared,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::PlainHttp1 => "plain HTTP/1.1",
            Transport::TlsHttp1 => "TLS HTTP/1.1",
            Transport::TlsHttp2 => "TLS HTTP/2, 1 stream/conn",
            Transport::TlsHttp2Shared => "TLS HTTP/2, shared conns",
        }
    }
}

struct Certs {
    dir: std::path::PathBuf,
    connector: tokio_rustls::TlsConnector,
    h2_connector: tokio_rustls::TlsConnector,
}

fn certs() -> Certs {
    let dir = std::env::temp_dir().join(format!("sluice-tls-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .and_then(|p| p.self_signed(&key))
        .expect("a certificate");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write the certificate");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write the key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("a root");
    let config = |alpn: &[u8]| {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    Certs {
        connector: config(b"http/1.1"),
        h2_connector: config(b"h2"),
        dir,
    }
}

const OPEN_STREAM: &[u8] = b"GET /events?channel=idle HTTP/1.1\r\nHost: localhost\r\n\r\n";

async fn read_connected<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
    let mut seen = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.expect("read the opening");
        assert!(n > 0, "stream closed before its first frame");
        seen.extend_from_slice(&buf[..n]);
        if let Some(at) = support::find(&seen, b"event: connected") {
            if support::find(&seen[at..], b"\n\n").is_some() {
                return;
            }
        }
    }
}

async fn tls(certs: &Certs, addr: SocketAddr, h2: bool) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let connector = if h2 {
        &certs.h2_connector
    } else {
        &certs.connector
    };
    connector.connect(name, tcp).await.expect("handshake")
}

async fn h2_stream(sender: &mut SendRequest<Empty<Bytes>>) -> hyper::body::Incoming {
    let request = hyper::Request::get("https://localhost/events?channel=idle")
        .body(Empty::new())
        .expect("a request");
    let mut body = sender
        .send_request(request)
        .await
        .expect("a response")
        .into_body();
    // Wait for the opening frame, so the server has registered the stream.
    let frame = body.frame().await.expect("a frame").expect("no error");
    assert!(frame.is_data());
    body
}

/// Opens `count` more streams over `transport`, appending what must be held to `held`.
async fn open(
    transport: Transport,
    certs: &Certs,
    addr: SocketAddr,
    count: usize,
    per_connection: usize,
    held: &mut Vec<Held>,
) {
    let mut left = count;
    while left > 0 {
        match transport {
            Transport::PlainHttp1 => {
                let mut tcp = TcpStream::connect(addr).await.expect("connect");
                tcp.write_all(OPEN_STREAM).await.expect("write");
                read_connected(&mut tcp).await;
                held.push(Held::Plain(tcp));
                left -= 1;
            }
            Transport::TlsHttp1 => {
                let mut stream = tls(certs, addr, false).await;
                stream.write_all(OPEN_STREAM).await.expect("write");
                read_connected(&mut stream).await;
                held.push(Held::Tls(Box::new(stream)));
                left -= 1;
            }
            Transport::TlsHttp2 | Transport::TlsHttp2Shared => {
                let streams = match transport {
                    Transport::TlsHttp2 => 1,
                    _ => per_connection.min(left),
                };
                let stream = tls(certs, addr, true).await;
                let (mut sender, connection) =
                    hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .expect("an HTTP/2 handshake");
                tokio::spawn(connection);
                let mut bodies = Vec::with_capacity(streams);
                for _ in 0..streams {
                    bodies.push(h2_stream(&mut sender).await);
                }
                held.push(Held::H2(sender, bodies));
                left -= streams;
            }
        }
    }
}

fn per(now: u64, base: u64, n: usize) -> f64 {
    (now as f64 - base as f64) / n.max(1) as f64
}

fn main() {
    let options = Options::from_env();
    let full = options.is_bench();
    let streams = options
        .value("streams", "SLUICE_BENCH_STREAMS")
        .map_or(if full { 2_000 } else { 20 }, |t| {
            support::parse_count(&t).expect("--streams: a count")
        });
    let per_connection = options
        .value("per-connection", "SLUICE_BENCH_PER_CONNECTION")
        .map_or(if full { 100 } else { 10 }, |t| {
            support::parse_count(&t).expect("--per-connection: a count")
        });
    let settle = options.seconds(
        "settle",
        "SLUICE_BENCH_SETTLE",
        if full { 1.0 } else { 0.1 },
    );
    let bin = options.server_bin();
    let limit = raise_nofile_limit();
    assert!(
        (streams + WARMUP) as u64 * 2 + 64 < limit,
        "{streams} streams need more descriptors than the limit of {limit}"
    );
    let certs = certs();
    let cert = certs.dir.join("cert.pem").display().to_string();
    let key = certs.dir.join("key.pem").display().to_string();

    println!("tls_memory: {}", machine_summary());
    println!("server: {}", bin.display());
    println!(
        "streams per transport: {streams} (+{WARMUP} warm-up); shared HTTP/2: {per_connection} \
         streams per connection; settle: {settle:?}"
    );
    println!();
    println!(
        "{:<28} {:>8} {:>6} {:>10} {:>11} {:>11}",
        "transport", "streams", "conns", "RSS KiB", "KiB/stream", "anon/stream"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    for transport in [
        Transport::PlainHttp1,
        Transport::TlsHttp1,
        Transport::TlsHttp2,
        Transport::TlsHttp2Shared,
    ] {
        let mut args = vec![format!("--max-connections={}", streams + WARMUP + 1_000)];
        if !matches!(transport, Transport::PlainHttp1) {
            args.extend([
                "--tls-cert".to_owned(),
                cert.clone(),
                "--tls-key".to_owned(),
                key.clone(),
            ]);
        }
        args.extend(options.all("server-arg"));
        let server = Server::start(&bin, &args).expect("cannot start sluice");
        let (base, now, connections): (Memory, Memory, usize) = runtime.block_on(async {
            let mut held = Vec::new();
            open(
                transport,
                &certs,
                server.addr,
                WARMUP,
                per_connection,
                &mut held,
            )
            .await;
            tokio::time::sleep(settle).await;
            let base = server.memory();
            let began = Instant::now();
            let mut more = Vec::new();
            open(
                transport,
                &certs,
                server.addr,
                streams,
                per_connection,
                &mut more,
            )
            .await;
            let _opened_in = began.elapsed();
            tokio::time::sleep(settle).await;
            let now = server.memory();
            let connections = more.len();
            drop(more);
            drop(held);
            (base, now, connections)
        });
        println!(
            "{:<28} {:>8} {:>6} {:>10} {:>11.2} {:>11.2}",
            transport.name(),
            streams,
            connections,
            now.rss_kb,
            per(now.rss_kb, base.rss_kb, streams),
            per(now.anon_kb, base.anon_kb, streams),
        );
        server.stop();
        std::thread::sleep(Duration::from_millis(200));
    }
    println!();
    println!(
        "KiB/stream = (RSS after the streams - RSS after the warm-up) / streams, one fresh server \
         per transport. Kernel socket buffers are not in RSS."
    );
    let _ = std::fs::remove_dir_all(&certs.dir);
}
