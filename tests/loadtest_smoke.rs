//! Correctness smoke test of the load harness against the real `sluice` binary: a few hundred
//! connections per transport for a few seconds, through `sluice_loadtest`'s library API. Fails on
//! any lost or duplicated event, any connection that never became ready, or zero deliveries.
//! One more run stalls a fifth of its SSE readers and checks that the server cut off exactly
//! those while the others lost nothing.
//!
//! No timing assertions: latency and throughput figures belong to `sluice-loadtest` runs (see
//! loadtest/README.md), not to a test on a shared machine.

use std::path::PathBuf;
use std::time::Duration;

use sluice_loadtest::{run_spawned, Launch, Plan, Rate, Stall, Target, Transport};

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
    let plan = Plan {
        transport: Transport::Sse,
        target: Target::Sluice,
        connections: 20,
        rate: Rate::PerSecond(100.0),
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(30),
        payload_bytes: 60_000,
        stall: Stall::from_fraction(0.2).expect("a valid share"),
        ..Plan::default()
    };
    let mut launch = Launch::new(Target::Sluice, plan.connections);
    launch.server_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_sluice")));
    launch.server_args = vec!["--channel-capacity=16".to_owned()];
    let report = run_spawned(&plan, &launch).expect("the run is carried out");
    let summary = report.summary();
    let stalled = report.stalled.as_ref().expect("a stalled section");
    assert_eq!(stalled.chosen, 4, "{summary}");
    assert_eq!(stalled.ready, 4, "{summary}");
    assert_eq!(stalled.cut_off, 4, "{summary}");
    assert!(report.connections.server_evictions >= Some(4), "{summary}");
    assert_eq!(report.connections.ready, plan.connections, "{summary}");
    assert_eq!(report.delivery.connections, 16, "{summary}");
    assert_eq!(report.delivery.lost, 0, "{summary}");
    assert_eq!(report.delivery.duplicated, 0, "{summary}");
    assert_eq!(
        report.delivery.delivered,
        report.publish.ok * 16,
        "{summary}"
    );
    assert!(report.is_clean(), "{summary}");
}
