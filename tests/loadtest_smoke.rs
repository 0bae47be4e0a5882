//! Correctness smoke test of the load harness against the real `sluice` binary: a few hundred
//! connections per transport for a few seconds, through `sluice_loadtest`'s library API. Fails on
//! any lost or duplicated event, any connection that never became ready, or zero deliveries.
//! One more run stalls a fifth of its SSE readers and checks that the server cut off exactly
//! those while the others lost nothing. The same over TLS, and over HTTP/2 with several streams
//! per connection (stalled streams included), against a Sluice serving a test CA's certificate.
//!
//! No timing assertions: latency and throughput figures belong to `sluice-loadtest` runs (see
//! loadtest/README.md), not to a test on a shared machine.

use std::path::PathBuf;
use std::time::Duration;

use sluice_loadtest::spawn::TlsFiles;
use sluice_loadtest::tls::TestPki;
use sluice_loadtest::{run_spawned, Launch, Plan, Rate, Report, Stall, Target, Transport};

/// A small workload: 300 connections, 40 events/s for 3 s (120 events, 36 000 deliveries).
fn plan(transport: Transport) -> Plan {
    Plan {
        transport,
        target: Target::Sluice,
        connections: 300,
        rate: Rate::PerSecond(40.0),
        duration: Duration::from_secs(3),
        drain: Duration::from_secs(5),
        ..Plan::default()
    }
}

/// The slow-consumer workload: 20 SSE connections, a fifth of which stop reading once ready,
/// 100 events/s of ~60 KB for 2 s, and up to 30 s of drain.
fn stalled_plan() -> Plan {
    Plan {
        transport: Transport::Sse,
        target: Target::Sluice,
        connections: 20,
        rate: Rate::PerSecond(100.0),
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(30),
        payload_bytes: 60_000,
        stall: Stall::from_fraction(0.2).expect("a valid share"),
        ..Plan::default()
    }
}

/// The sluice binary with a 16-frame queue per stream, for `stalled_plan`.
fn stalled_launch(plan: &Plan) -> Launch {
    let mut launch = Launch::new(Target::Sluice, plan.connections);
    launch.server_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_sluice")));
    launch.server_args = vec!["--channel-capacity=16".to_owned()];
    launch
}

/// Every one of `streams` streams got each acknowledged event once, and the run is clean.
fn assert_every_stream_got_every_event_once(report: &Report, streams: u64) {
    let summary = report.summary();
    assert_eq!(report.delivery.lost, 0, "{summary}");
    assert_eq!(report.delivery.duplicated, 0, "{summary}");
    assert_eq!(
        report.delivery.delivered,
        report.publish.ok * streams,
        "{summary}"
    );
    assert!(report.is_clean(), "{summary}");
}

/// The 4 stalled readers of a 20-connection run were ready and then cut off by the server,
/// and the 16 others got every event once.
fn assert_stalled_cut_off_and_the_rest_whole(report: &Report, plan: &Plan) {
    let summary = report.summary();
    let stalled = report.stalled.as_ref().expect("a stalled section");
    assert_eq!(stalled.ready, 4, "{summary}");
    assert_eq!(stalled.cut_off, 4, "{summary}");
    assert!(report.connections.server_evictions >= Some(4), "{summary}");
    assert_eq!(report.connections.ready, plan.connections, "{summary}");
    assert_eq!(report.delivery.connections, 16, "{summary}");
    assert_every_stream_got_every_event_once(report, 16);
}

fn check(transport: Transport) {
    let plan = plan(transport);
    let mut launch = Launch::new(Target::Sluice, plan.connections);
    launch.server_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_sluice")));
    let report = run_spawned(&plan, &launch)
        .unwrap_or_else(|error| panic!("{} run failed: {error}", transport.as_str()));
    let summary = report.summary();
    assert_eq!(report.connections.ready, plan.connections, "{summary}");
    assert_eq!(report.delivery.lost, 0, "{summary}");
    assert_eq!(report.delivery.duplicated, 0, "{summary}");
    assert!(report.delivery.delivered > 0, "{summary}");
    assert_eq!(report.publish.ok, report.publish.sent, "{summary}");
    assert!(report.is_clean(), "{summary}");
}

#[test]
fn sse_delivers_every_event_exactly_once() {
    check(Transport::Sse);
}

#[test]
fn websocket_delivers_every_event_exactly_once() {
    check(Transport::Ws);
}

#[test]
fn long_polling_delivers_every_event_exactly_once() {
    check(Transport::Poll);
}

/// Slow consumers: a fifth of the connections stop reading once ready. The server (with a
/// 16-frame queue per stream) must cut each of them off, while every healthy connection still
/// gets every event exactly once. The events are ~60 KB so that a stalled socket's kernel
/// buffers (a few MB on loopback) fill within a second or two. A healthy reader that a busy
/// machine slows down may be cut off too and resume: the drain waits (up to 30 s, ending as
/// soon as everything arrived) for it to catch up, because what is checked is that nothing is
/// lost, not how fast it arrives.
#[test]
fn stalled_sse_readers_are_cut_off_and_nobody_else_loses_anything() {
    let plan = stalled_plan();
    let launch = stalled_launch(&plan);
    let report = run_spawned(&plan, &launch).expect("the run is carried out");
    let summary = report.summary();
    let stalled = report.stalled.as_ref().expect("a stalled section");
    assert_eq!(stalled.chosen, 4, "{summary}");
    assert_stalled_cut_off_and_the_rest_whole(&report, &plan);
}

/// A test CA and a leaf for `localhost`/127.0.0.1 in a fresh directory, as `--tls-cert`,
/// `--tls-key` and `--ca` would name them.
fn test_pki(name: &str) -> (PathBuf, TlsFiles) {
    let dir = std::env::temp_dir().join(format!("sluice-lt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    let pki = TestPki::create(&dir).expect("a test CA and leaf");
    let files = TlsFiles {
        cert: pki.cert,
        key: pki.key,
        ca: Some(pki.ca),
    };
    (dir, files)
}

fn tls_launch(connections: usize, files: TlsFiles) -> Launch {
    let mut launch = Launch::new(Target::Sluice, connections);
    launch.server_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_sluice")));
    launch.tls = true;
    launch.tls_files = Some(files);
    launch
}

/// The harness over TLS and HTTP/2 (`--tls --ca --http2 --streams-per-connection 10`): 200 SSE
/// streams as HTTP/2 streams, 10 on each connection, against a Sluice serving a certificate from
/// a test CA that only the harness's `--ca` trusts. Every stream gets every event once, and the
/// 200 streams ride on 20 connections.
#[test]
fn tls_http2_streams_share_connections_and_get_every_event_once() {
    let (dir, files) = test_pki("h2");
    let plan = Plan {
        connections: 200,
        rate: Rate::PerSecond(40.0),
        duration: Duration::from_secs(3),
        drain: Duration::from_secs(10),
        tls: true,
        http2: true,
        streams_per_connection: 10,
        ..Plan::default()
    };
    let report = run_spawned(&plan, &tls_launch(plan.connections, files));
    let _ = std::fs::remove_dir_all(&dir);
    let report = report.expect("the run is carried out");
    let summary = report.summary();
    assert!(summary.contains("TLS, HTTP/2, 10 streams"), "{summary}");
    assert_eq!(report.connections.ready, plan.connections, "{summary}");
    assert_eq!(report.connections.reconnects, 0, "{summary}");
    assert_eq!(report.connections.http2_connections, Some(20), "{summary}");
    assert!(report.publish.ok > 0, "{summary}");
    assert_eq!(report.publish.ok, report.publish.sent, "{summary}");
    assert_every_stream_got_every_event_once(&report, plan.connections as u64);
}

/// `--tls` over HTTP/1.1 against a Sluice the harness starts with a test CA of its own making
/// (no `--ca`: the harness trusts the CA it made for the server).
#[test]
fn tls_http1_streams_get_every_event_once() {
    let plan = Plan {
        connections: 100,
        rate: Rate::PerSecond(40.0),
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(10),
        tls: true,
        ..Plan::default()
    };
    let mut launch = Launch::new(Target::Sluice, plan.connections);
    launch.server_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_sluice")));
    launch.tls = true;
    let report = run_spawned(&plan, &launch).expect("the run is carried out");
    let summary = report.summary();
    assert!(summary.contains("(TLS, HTTP/1.1)"), "{summary}");
    assert_eq!(report.connections.ready, plan.connections, "{summary}");
    assert_eq!(report.connections.http2_connections, None, "{summary}");
    assert_every_stream_got_every_event_once(&report, plan.connections as u64);
}

/// A `--ca` that did not sign the server's certificate: the harness refuses the server (its
/// first publish fails the handshake) instead of connecting to it.
#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let (dir, files) = test_pki("wrong-ca");
    let (other_dir, other) = test_pki("other-ca");
    let wrong = TlsFiles {
        ca: other.ca.clone(),
        ..files
    };
    let plan = Plan {
        connections: 5,
        duration: Duration::from_secs(1),
        tls: true,
        http2: true,
        ..Plan::default()
    };
    let result = run_spawned(&plan, &tls_launch(plan.connections, wrong));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
    let error = result.expect_err("an untrusted certificate");
    let message = error.to_string();
    assert!(message.contains("first publish failed"), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}

/// Stalled HTTP/2 streams: a fifth of 20 streams (10 per connection, over TLS) stop giving
/// their window back once ready. The server must reset each of them (not their connection),
/// while the other streams on the same connections still get every event exactly once.
#[test]
fn stalled_http2_streams_are_reset_and_their_neighbours_lose_nothing() {
    let plan = Plan {
        tls: true,
        http2: true,
        streams_per_connection: 10,
        ..stalled_plan()
    };
    let mut launch = stalled_launch(&plan);
    launch.tls = true;
    let report = run_spawned(&plan, &launch).expect("the run is carried out");
    assert_stalled_cut_off_and_the_rest_whole(&report, &plan);
}
