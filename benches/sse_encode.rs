//! Encoding cost of typical SSE frames with `sluice::sse::Event::encode`: a small JSON
//! notification, a 1 KiB single-line payload, and a 4 KiB payload of 64 lines (each line becomes
//! its own `data:` field, so this exercises the line splitter).
//!
//! Why: a publish is encoded exactly once and the resulting `Bytes` is shared by every
//! subscriber, so this is the only per-event serialization cost on the data path. It should be
//! small next to one HTTP request; if it ever is not, it shows here first. The `frame` group
//! measures what a publish really pays: `hub::Frame::event`, the SSE frame plus the WebSocket
//! frame of the event's JSON object (which long polling reuses).
//!
//! ```text
//! cargo bench --bench sse_encode
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use sluice::hub::{Frame, Payload, Topic};
use sluice::sse::{Event, EventId, EventName};

/// What `POST /api/notify` sends for `{"message":"hello"}`: the payload with its timestamp.
const SMALL_JSON: &str =
    r#"{"message":"New order #12345 received","timestamp":"2024-05-01T12:34:56.789Z"}"#;

fn payloads() -> Vec<(&'static str, String)> {
    let one_kib = format!(r#"{{"message":"{}"}}"#, "x".repeat(1024 - 14));
    let line = format!("{}\n", "y".repeat(63));
    let four_kib_lines = line.repeat(64);
    vec![
        ("small_json", SMALL_JSON.to_owned()),
        ("1KiB_one_line", one_kib),
        ("4KiB_64_lines", four_kib_lines),
    ]
}

fn encode(c: &mut Criterion) {
    let name = EventName::parse("notification").expect("a valid event name");
    let id = EventId::parse("k3x9-1042").expect("a valid event id");
    let mut group = c.benchmark_group("sse_encode");
    group.measurement_time(Duration::from_secs(3));
    for (label, data) in payloads() {
        let event = Event {
            name: Some(&name),
            id: Some(&id),
            retry: None,
            data: &data,
        };
        group.throughput(Throughput::Bytes(event.encode().len() as u64));
        group.bench_function(label, |b| b.iter(|| black_box(black_box(&event).encode())));
    }
    group.finish();

    let topic = Topic::parse("orders").expect("a valid channel");
    let mut group = c.benchmark_group("frame");
    group.measurement_time(Duration::from_secs(3));
    for (label, data) in payloads() {
        let payload = if label == "4KiB_64_lines" {
            Payload::text(&data)
        } else {
            Payload::json(&data)
        };
        group.bench_function(label, |b| {
            b.iter(|| {
                black_box(Frame::event(
                    Some(black_box(&id)),
                    Some(&topic),
                    Some(&name),
                    black_box(payload),
                ))
            })
        });
    }
    group.finish();
}

fn main() {
    // What `criterion_main!` expands to, minus the undocumented `pub fn` that `missing_docs`
    // would flag.
    let mut criterion = Criterion::default().configure_from_args();
    encode(&mut criterion);
    criterion.final_summary();
}
