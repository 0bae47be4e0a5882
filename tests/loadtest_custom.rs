//! The load harness's custom target (`--target custom`) against SSE servers that are not Sluice:
//! a tiny one written here, framed unlike Sluice (CRLF or bare CR line ends, comments, `data:`
//! lines only, the marker inside multi-line data, no chunked encoding), and the Express
//! baseline. Every published event must arrive exactly once; a listening run (no publish hook)
//! must count events and the id gaps the tiny server leaves on purpose.
//!
//! No timing assertions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_loadtest::custom::Custom;
use sluice_loadtest::spawn::Spawned;
use sluice_loadtest::{run, Endpoint, Launch, Plan, Rate, Report, Target};

/// A tiny SSE server on a free loopback port, one thread per connection:
/// - `GET /events`: `retry`, a comment, then every published body as three `data:` lines, CRLF
///   line ends, no ids;
/// - `GET /ticks`: an event every 20 ms with ids `1, 2, 3, 5, 6, …` (4 skipped on purpose), bare
///   CR line ends;
/// - `POST /publish`: the body goes to every `/events` stream; `200 ok`, keep-alive.
struct TinyServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TinyServer {
    fn start() -> TinyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let flag = stop.clone();
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(socket) = socket else { continue };
                let streams = streams.clone();
                let flag = flag.clone();
                std::thread::spawn(move || serve(socket, &streams, &flag));
            }
        });
        TinyServer { addr, stop }
    }
}

impl Drop for TinyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(socket: TcpStream, streams: &Mutex<Vec<TcpStream>>, stop: &AtomicBool) {
    let mut reader = BufReader::new(socket.try_clone().expect("clone"));
    let mut writer = socket;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
        if request_line.starts_with("GET /events") {
            // Register before the head goes out, so the harness may publish once it has it.
            let mut list = streams.lock().expect("lock");
            if writer
                .write_all(format!("{head}retry: 500\r\n: hello\r\n\r\n").as_bytes())
                .is_ok()
            {
                list.push(writer);
            }
            return;
        }
        if request_line.starts_with("GET /ticks") {
            let _ = writer.write_all(head.as_bytes());
            for id in (1..).filter(|&id| id != 4) {
                let event = format!(": tick\rid: {id}\rdata: tick {id}\r\r");
                if stop.load(Ordering::Relaxed) || writer.write_all(event.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if request_line.starts_with("POST /publish") {
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let body = String::from_utf8_lossy(&body);
            let event =
                format!(": event\r\ndata: {{\r\ndata:  \"text\": \"{body}\"\r\ndata: }}\r\n\r\n");
            streams
                .lock()
                .expect("lock")
                .retain_mut(|stream| stream.write_all(event.as_bytes()).is_ok());
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let _ = writer.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
}

fn custom_plan(custom: Custom, connections: usize) -> Plan {
    Plan {
        target: Target::Custom,
        connections,
        rate: Rate::PerSecond(20.0),
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(5),
        custom: Some(Arc::new(custom)),
        reconnect: sluice_loadtest::plan::Reconnect::AsBrowser,
        ..Plan::default()
    }
}

fn endpoint(custom: &Plan, pid: Option<u32>) -> Endpoint {
    let sub = &custom.custom.as_ref().expect("custom").sub;
    Endpoint::new(sub.addr, pid, "custom".into())
}

fn assert_every_event_once(report: &Report, connections: usize) {
    let summary = report.summary();
    assert_eq!(report.connections.ready, connections, "{summary}");
    assert_eq!(report.connections.failed, 0, "{summary}");
    assert!(report.publish.ok > 0, "{summary}");
    assert_eq!(report.publish.ok, report.publish.sent, "{summary}");
    assert_eq!(
        report.delivery.delivered,
        report.publish.ok * connections as u64,
        "{summary}"
    );
    assert_eq!(report.delivery.lost, 0, "{summary}");
    assert_eq!(report.delivery.duplicated, 0, "{summary}");
    assert!(report.delivery.latency_ms.count > 0, "{summary}");
    assert!(report.wire.bytes_read > 0, "{summary}");
    assert!(report.is_clean(), "{summary}");
}

#[test]
fn a_custom_server_with_crlf_comments_and_multiline_data_loses_nothing() {
    let server = TinyServer::start();
    let custom = Custom::new(
        &format!("http://{}/events?user={{i}}", server.addr),
        &["Authorization: Bearer test".to_owned()],
        Some(&format!("http://{}/publish", server.addr)),
        Some("hello {marker}!"),
        Some("text/plain"),
    )
    .expect("a valid custom target");
    let mut plan = custom_plan(custom, 40);
    plan.ramp = Some(100.0);
    let report = run(&plan, &endpoint(&plan, None)).expect("the run is carried out");
    assert_every_event_once(&report, 40);
    assert!(report.listening.is_none());
    // The ramp's bins account for every connection.
    let ramp = report.ramp.as_ref().expect("a ramp section");
    assert!(!ramp.bins.is_empty());
    assert_eq!(ramp.bins.iter().map(|b| b.opened).sum::<u64>(), 40);
    assert_eq!(ramp.bins.iter().map(|b| b.ready).sum::<u64>(), 40);
}

#[test]
fn a_listening_run_counts_events_and_id_gaps() {
    let server = TinyServer::start();
    let custom = Custom::new(
        &format!("http://{}/ticks", server.addr),
        &[],
        None,
        None,
        None,
    )
    .expect("a valid custom target");
    let plan = custom_plan(custom, 10);
    let report =
        run(&plan, &endpoint(&plan, Some(std::process::id()))).expect("the run is carried out");
    let summary = report.summary();
    let listening = report.listening.as_ref().expect("a listening section");
    assert_eq!(report.connections.ready, 10, "{summary}");
    assert!(listening.events >= 10, "{summary}");
    assert_eq!(report.delivery.delivered, listening.events, "{summary}");
    // Every stream skips id 4 once, and only once.
    assert_eq!(listening.id_gaps, 10, "{summary}");
    assert_eq!(listening.ids_skipped, 10, "{summary}");
    assert_eq!(listening.connections_with_gaps, 10, "{summary}");
    assert_eq!(listening.events_without_numeric_id, 0, "{summary}");
    assert!(listening.per_connection_per_s[0] > 0.0, "{summary}");
    assert_eq!(report.publish.sent, 0, "{summary}");
    // A PID was given: the resources are this process's.
    assert!(report.resources.server_rss_mb_peak > 0.0, "{summary}");
    assert!(report.is_clean(), "{summary}");
}

/// The Express baseline's directory, with its packages installed (`npm ci`).
fn express_baseline() -> PathBuf {
    let baselines = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("loadtest/baselines");
    assert!(
        baselines.join("express/node_modules/express").is_dir(),
        "this test needs the Express baseline's packages, which are missing.\n\
         Install them with: npm ci --prefix loadtest/baselines/express   (from the repository root)"
    );
    baselines
}

#[test]
fn the_express_baseline_as_a_custom_target_loses_nothing() {
    let mut launch = Launch::new(Target::Express, 50);
    launch.baselines = express_baseline();
    let server = Spawned::start(&launch).expect("the Express baseline starts");
    let custom = Custom::new(
        &format!("http://{}/events", server.addr),
        &[],
        Some(&format!("http://{}/publish", server.addr)),
        Some(r#"{"message":"{marker}","from":"loadtest"}"#),
        None,
    )
    .expect("a valid custom target");
    let plan = custom_plan(custom, 50);
    let report = run(&plan, &endpoint(&plan, Some(server.pid())));
    server.stop();
    let report = report.expect("the run is carried out");
    assert_every_event_once(&report, 50);
    assert!(report.resources.server_rss_mb_peak > 0.0);
}
