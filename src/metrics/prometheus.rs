//! Prometheus text exposition (format 0.0.4) of the hub's counters, the authentication failure
//! count and the latest sample. A pure function of its inputs.

use std::fmt::Write;

use super::Sample;
use crate::hub::HubSnapshot;

/// Renders everything as Prometheus text.
pub fn render(hub: &HubSnapshot, auth_failures: u64, sample: Option<&Sample>) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let single = |value: String| vec![(String::new(), value)];
    let per_worker = |f: &dyn Fn(&crate::hub::ShardSnapshot) -> String| {
        hub.shards
            .iter()
            .map(|s| (format!("{{worker=\"{}\"}}", s.worker), f(s)))
            .collect::<Vec<_>>()
    };
    metric(
        "sluice_connections",
        "gauge",
        "Open event streams.",
        &per_worker(&|s| s.connections.to_string()),
    );
    metric(
        "sluice_connections_peak",
        "gauge",
        "Most streams open at once since start.",
        &single(hub.peak_connections.to_string()),
    );
    metric(
        "sluice_connections_max",
        "gauge",
        "Configured stream limit.",
        &single(hub.max_connections.to_string()),
    );
    metric(
        "sluice_events_published_total",
        "counter",
        "Events accepted for publishing.",
        &single(hub.events_published.to_string()),
    );
    metric(
        "sluice_frames_delivered_total",
        "counter",
        "Frames handed to connections for writing.",
        &per_worker(&|s| s.frames_delivered.to_string()),
    );
    metric(
        "sluice_writes_total",
        "counter",
        "Writes of frames to streams (one or more joined frames each).",
        &per_worker(&|s| s.writes.to_string()),
    );
    metric(
        "sluice_longest_inbox_batch_seconds",
        "gauge",
        "Longest time a worker's hub loop spent applying one batch of publishes, since start.",
        &per_worker(&|s| seconds(s.longest_turn_us.inbox_batch)),
    );
    metric(
        "sluice_longest_heartbeat_seconds",
        "gauge",
        "Longest time a worker's hub loop spent queuing one round of heartbeats, since start.",
        &per_worker(&|s| seconds(s.longest_turn_us.heartbeat)),
    );
    metric(
        "sluice_longest_housekeeping_seconds",
        "gauge",
        "Longest housekeeping tick of a worker's hub loop, since start.",
        &per_worker(&|s| seconds(s.longest_turn_us.housekeeping)),
    );
    metric(
        "sluice_slow_consumers_dropped_total",
        "counter",
        "Streams cut off because their queue was full.",
        &per_worker(&|s| s.slow_consumers_dropped.to_string()),
    );
    metric(
        "sluice_inbox_depth",
        "gauge",
        "Publishes waiting in a worker's inbox.",
        &per_worker(&|s| s.inbox_depth.to_string()),
    );
    metric(
        "sluice_channels",
        "gauge",
        "Channels with at least one subscriber.",
        &single(hub.channels.to_string()),
    );
    metric(
        "sluice_history_channels",
        "gauge",
        "Channels with retained history.",
        &single(hub.history_channels.to_string()),
    );
    metric(
        "sluice_history_events",
        "gauge",
        "Events retained for resume.",
        &single(hub.history_events.to_string()),
    );
    metric(
        "sluice_user_queued_events",
        "gauge",
        "Events queued for offline users.",
        &single(hub.queued_user_events.to_string()),
    );
    metric(
        "sluice_retained_bytes",
        "gauge",
        "Bytes retained for clients that are not connected (history and user queues).",
        &single(hub.retained_bytes.to_string()),
    );
    metric(
        "sluice_memory_budget_bytes",
        "gauge",
        "Byte budget of retained events.",
        &single(hub.memory_budget.to_string()),
    );
    metric(
        "sluice_budget_evictions_total",
        "counter",
        "Retained events evicted, oldest first across channels, to stay within the budget.",
        &single(hub.budget_evictions.to_string()),
    );
    metric(
        "sluice_auth_failures_total",
        "counter",
        "Requests refused for a missing or bad credential or a lack of permission.",
        &single(auth_failures.to_string()),
    );
    metric(
        "sluice_uptime_seconds",
        "gauge",
        "Seconds since start.",
        &single(format!("{:.3}", hub.uptime_ms as f64 / 1000.0)),
    );
    if let Some(sample) = sample {
        metric(
            "sluice_process_resident_memory_bytes",
            "gauge",
            "Resident set size of the Sluice process.",
            &single(sample.process.rss.to_string()),
        );
        metric(
            "sluice_system_cpu_percent",
            "gauge",
            "System CPU use over the last sampling interval.",
            &single(sample.cpu.to_string()),
        );
        metric(
            "sluice_system_memory_total_bytes",
            "gauge",
            "Physical memory.",
            &single(sample.memory.total.to_string()),
        );
        metric(
            "sluice_system_memory_used_bytes",
            "gauge",
            "Physical memory in use.",
            &single(sample.memory.used.to_string()),
        );
    }
    out
}

/// Microseconds as Prometheus seconds.
fn seconds(us: u64) -> String {
    format!("{:.6}", us as f64 / 1e6)
}
