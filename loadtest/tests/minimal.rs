//! The reference server `sluice-minimal` under the harness, so that the "× minimal" baseline
//! cannot silently rot: a short paced run against `--target minimal` and `minimal-nagle`
//! (spawned) must count deliveries and lose or duplicate nothing, and a short `--rate max` run
//! of the `sluice-loadtest` binary with several publishers in flight and both sides pinned
//! (`--server-cpus`, `--client-cpus`) must be clean and report the server's CPU per delivery.
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
