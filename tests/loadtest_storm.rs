//! Reconnect storms (`sluice-loadtest storm`) against the real `sluice` binary: the harness
//! kills the server (SIGKILL) while it publishes, restarts it on the same port, and every
//! stream must come back as a browser's would (after `retry:`, with `Last-Event-ID`). The
//! memory store cannot replay across a restart, so every stream gets a `reset`: what was
//! published between its last event before the cut and its first after must show as lost to
//! resets, nothing else may be lost, and nothing duplicated; the accounting must close exactly.
//! A run where the harness ignores one event on purpose must fail.
//!
//! No timing assertions.

use std::path::PathBuf;
use std::time::Duration;

use sluice_loadtest::storm::{storm, Cut, Server, StormPlan, StormReport};
use sluice_loadtest::{Launch, Plan, Rate, Target};

const CONNECTIONS: usize = 30;

fn storm_on_sluice(drop_one: bool) -> StormReport {
    let plan = Plan {
        target: Target::Sluice,
        connections: CONNECTIONS,
        rate: Rate::PerSecond(20.0),
        drain: Duration::from_secs(5),
        drop_one,
        ..Plan::default()
    };
    let settings = StormPlan {
        cut: Cut::Kill,
        before: Duration::from_secs(1),
        after: Duration::from_secs(1),
        recover: Duration::from_secs(30),
    };
    let mut launch = Launch::new(Target::Sluice, CONNECTIONS);
    launch.server_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_sluice")));
    // A short reconnection time keeps the test short; the streams honour it.
    launch.server_args = vec!["--retry=300ms".to_owned()];
    storm(&plan, &settings, Server::Spawn(launch)).expect("the storm is carried out")
}

#[test]
fn every_stream_comes_back_and_only_resets_lose_events() {
    let report = storm_on_sluice(false);
    let summary = report.summary();
    assert_eq!(report.ready, CONNECTIONS, "{summary}");
    assert_eq!(report.dropped, CONNECTIONS, "{summary}");
    assert_eq!(report.back, CONNECTIONS, "{summary}");
    assert!(report.back_after_s.p100.is_some(), "{summary}");
    assert!(report.connect_ms.count >= CONNECTIONS as u64, "{summary}");
    assert_eq!(report.server.len(), 2, "{summary}");
    let d = report.delivery;
    // The memory store answers every resume after the restart with a reset.
    assert_eq!(d.connections_reset, CONNECTIONS as u64, "{summary}");
    assert_eq!(d.lost, 0, "{summary}");
    assert_eq!(d.duplicated, 0, "{summary}");
    assert_eq!(
        d.expected,
        report.publish.ok * CONNECTIONS as u64,
        "{summary}"
    );
    // Every expected delivery either arrived or was announced lost by a reset (events whose
    // publish the kill left unanswered may arrive too; they are expected by nobody).
    assert_eq!(
        d.delivered - d.unconfirmed + d.lost_to_resets,
        d.expected,
        "{summary}"
    );
    assert!(d.delivered > 0, "{summary}");
    assert!(report.is_clean(), "{summary}");
}

#[test]
fn an_event_the_harness_drops_on_purpose_fails_the_storm() {
    let report = storm_on_sluice(true);
    let summary = report.summary();
    assert_eq!(report.back, CONNECTIONS, "{summary}");
    assert_eq!(report.delivery.lost, 1, "{summary}");
    assert_eq!(report.delivery.connections_with_loss, 1, "{summary}");
    assert_eq!(report.worst_connections.len(), 1, "{summary}");
    assert_eq!(report.worst_connections[0].index, 0, "{summary}");
    assert!(!report.is_clean(), "{summary}");
}
