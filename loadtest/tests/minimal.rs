//! The reference server `sluice-minimal` under the harness, so that the "× minimal" baseline
//! cannot silently rot: a short paced run against `--target minimal` and `minimal-nagle`
//! (spawned) must count deliveries and lose or duplicate nothing, and a short `--rate max` run
//! of the `sluice-loadtest` binary with several publishers in flight and both sides pinned
//! (`--server-cpus`, `--client-cpus`) must be clean and report the server's CPU per delivery.
//!
//! One more test drives `sluice-minimal` over raw sockets: a subscriber that hung up is dropped,
//! and what it does not speak gets 404 or 400 with a JSON error.
//!
//! No timing assertions: the figures themselves belong to `loadtest/results/` runs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sluice_loadtest::{run_spawned, Launch, Plan, Rate, Target, Transport};

fn minimal_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice-minimal"))
}

/// 100 connections, 50 events/s for 2 s (100 events, 10 000 deliveries).
fn paced(target: Target) {
    let plan = Plan {
        transport: Transport::Sse,
        target,
        connections: 100,
        rate: Rate::PerSecond(50.0),
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(10),
        ..Plan::default()
    };
    let mut launch = Launch::new(target, plan.connections);
    launch.minimal_bin = Some(minimal_bin());
    let report = run_spawned(&plan, &launch)
        .unwrap_or_else(|error| panic!("{} run failed: {error}", target.as_str()));
    let summary = report.summary();
    assert!(
        report.server.contains("sluice-minimal listening"),
        "{summary}"
    );
    assert_eq!(report.connections.ready, plan.connections, "{summary}");
    assert_eq!(report.publish.ok, report.publish.sent, "{summary}");
    assert!(report.publish.ok > 0, "{summary}");
    assert_eq!(
        report.delivery.delivered,
        report.publish.ok * plan.connections as u64,
        "{summary}"
    );
    assert_eq!(report.delivery.lost, 0, "{summary}");
    assert_eq!(report.delivery.duplicated, 0, "{summary}");
    assert!(report.is_clean(), "{summary}");
}

#[test]
fn the_minimal_server_delivers_every_event_exactly_once() {
    paced(Target::Minimal);
}

#[test]
fn the_minimal_server_with_nagle_delivers_every_event_exactly_once() {
    paced(Target::MinimalNagle);
}

/// The saturated workload in small: `--rate max`, 4 publishers in flight, server and harness
/// pinned (to CPU 0 both, the one every machine has), through the command line.
#[test]
fn a_pinned_saturated_run_is_clean_and_reports_cpu_per_delivery() {
    let out = std::env::temp_dir().join(format!(
        "sluice-loadtest-minimal-{}.json",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-loadtest"))
        .args(["run", "--target", "minimal", "--spawn", "--quiet"])
        .args(["--connections", "50", "--rate", "max", "--publishers", "4"])
        .args(["--duration", "1s", "--drain", "10s"])
        .args(["--server-cpus", "0", "--client-cpus", "0"])
        .arg("--minimal-bin")
        .arg(minimal_bin())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("sluice-loadtest runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    let json = std::fs::read_to_string(&out).expect("--out was written");
    let _ = std::fs::remove_file(&out);
    let document: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let run = &document["runs"][0];
    assert_eq!(run["target"], "minimal", "{text}");
    assert_eq!(run["delivery"]["lost"], 0, "{text}");
    assert_eq!(run["delivery"]["duplicated"], 0, "{text}");
    let delivered = run["delivery"]["delivered"].as_u64().expect("a count");
    let published = run["publish"]["ok"].as_u64().expect("a count");
    assert!(published > 0, "{text}");
    assert_eq!(delivered, published * 50, "{text}");
    let cpu = run["resources"]["server_cpu_us_per_delivery"]
        .as_f64()
        .expect("a figure");
    assert!(cpu > 0.0, "{text}");
    assert!(text.contains("µs per delivery"), "{text}");
}

/// The reference server on its own, over raw sockets: a subscriber that hung up is dropped at
/// the first write that fails and the others keep every frame; unknown paths and a stream
/// without a channel get a precise status and a JSON error.
#[test]
fn the_minimal_server_drops_a_closed_subscriber_and_refuses_what_it_does_not_speak() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::Stdio;

    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(minimal_bin())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sluice-minimal starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let mut banner = String::new();
    BufReader::new(stdout)
        .read_line(&mut banner)
        .expect("a listening line");
    let addr = sluice_loadtest::spawn::listening_addr(&banner).expect("an address");
    let timeout = Some(Duration::from_secs(10));

    let subscribe = || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(timeout).expect("timeout");
        stream
            .write_all(b"GET /events?channel=t HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("the response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).expect("ASCII");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        stream
    };
    /// One request, one `Content-Length` answer: the status line and the body.
    fn exchange(stream: &mut TcpStream, request: &str) -> (String, String) {
        stream.write_all(request.as_bytes()).expect("request");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header line");
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.strip_prefix("Content-Length: ") {
                length = value.trim().parse().expect("a length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        (
            status.trim_end().to_owned(),
            String::from_utf8(body).expect("UTF-8"),
        )
    }

    let mut stays = subscribe();
    let leaves = subscribe();
    drop(leaves);
    let mut publisher = TcpStream::connect(addr).expect("connect");
    publisher.set_read_timeout(timeout).expect("timeout");
    let mut answers = Vec::new();
    for n in 1..=3 {
        let body = format!("{{\"n\":{n}}}");
        let request = format!(
            "POST /publish?channel=t HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, answer) = exchange(&mut publisher, &request);
        assert_eq!(status, "HTTP/1.1 200 OK", "{answer}");
        answers.push(answer);
    }
    // The write into the closed socket may succeed once (the peer's reset arrives after it);
    // the next one fails, and the subscriber is gone.
    assert_eq!(answers[2], r#"{"id":"3","subscribers":1}"#, "{answers:?}");
    let mut expected = Vec::new();
    for n in 1..=3 {
        let event = format!("data: {{\"n\":{n}}}\n\n");
        expected.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
    }
    let mut received = vec![0; expected.len()];
    stays.read_exact(&mut received).expect("every frame");
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(&expected)
    );

    for (request, status) in [
        ("GET /elsewhere HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("GET /events HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (
            "POST /publish?channel=t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
    ] {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(timeout).expect("timeout");
        let (got, body) = exchange(&mut stream, request);
        assert_eq!(got, status, "{request}");
        assert!(body.starts_with("{\"error\":"), "{body}");
    }
    drop(server);
}
