//! The server under abuse, against the real binary: a flood of large publishes to distinct
//! channels stays within the memory budget, one oversized event is refused, hostile lists are
//! refused at their cap, stalled readers are cut off by the write timeout, publishers and
//! reconnect storms are rate limited, credentials never reach the log, and malformed framing
//! is refused. Every case is bounded in count and time; nothing asserts on wall-clock speed.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{http, start, stats, Server};

/// Publishes `data` on `channel` with `POST /api/publish`; returns the status and JSON answer.
async fn publish(server: &Server, channel: &str, data: &str) -> (u16, Value) {
    let response = http()
        .post(server.url("/api/publish"))
        .json(&json!({ "channel": channel, "data": data }))
        .send()
        .await
        .expect("POST /api/publish");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_publish_flood_to_distinct_channels_stays_within_the_memory_budget() {
    const BUDGET: u64 = 4 * 1024 * 1024;
    const EVENTS: usize = 1_000;
    let server = start(&["--workers", "1", "--memory-budget", "4MiB"]);
    let (status, first) = publish(&server, "first", "x").await;
    assert_eq!(status, 200, "{first}");
    let before = server.rss_kib();
    // 1 000 events of 40 KB on distinct channels: about 80 MB of frames if all were kept.
    let data = "y".repeat(40_000);
    for i in 0..EVENTS {
        let (status, answer) = publish(&server, &format!("c{i}"), &data).await;
        assert_eq!(status, 200, "publish {i}: {answer}");
    }
    let stats = stats(&server).await;
    let held = stats["retainedBytes"].as_u64().expect("retainedBytes");
    assert!(held <= BUDGET, "held {held} > budget: {stats}");
    assert!(
        held > BUDGET / 2,
        "the budget is used, not emptied: {stats}"
    );
    assert_eq!(stats["memoryBudget"], BUDGET, "{stats}");
    assert!(
        stats["budgetEvictions"].as_u64().unwrap() > (EVENTS / 2) as u64,
        "{stats}"
    );
    // Resident memory grew by the budget plus a constant, not by the flood.
    let grown_mib = server.rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 4 + 40, "RSS grew {grown_mib} MiB");

    // The first channel's event was evicted: resuming from before it is a reset.
    let id = first["id"].as_str().unwrap();
    let epoch = id.rsplit_once('-').unwrap().0;
    let opening = opening_events(&server, "first", &format!("{epoch}-0")).await;
    assert!(opening.iter().any(|e| e == "reset"), "events: {opening:?}");
}

/// Opens `/events?channel=NAME` resuming after `last`; returns the names of its first three
/// events (`connected`, then `reset` or replayed events).
async fn opening_events(server: &Server, channel: &str, last: &str) -> Vec<String> {
    let stream = support::connect(server.addr).await;
    let mut client = support::RawClient::send(
        stream,
        server.addr,
        "GET",
        &format!("/events?channel={channel}"),
        &[("Last-Event-ID", last)],
        b"",
    )
    .await;
    assert_eq!(client.status, 200);
    let mut names = Vec::new();
    while names.len() < 2 {
        names.push(client.next_event().await.event);
    }
    names
}

#[tokio::test]
async fn an_event_larger_than_its_share_of_the_budget_is_refused_with_413() {
    let server = start(&[
        "--workers",
        "1",
        "--memory-budget",
        "1MiB",
        "--max-event-share",
        "5",
    ]);
    // 40 KB of data is about 80 KB in its two encodings: above 5 % of 1 MiB.
    let (status, answer) = publish(&server, "big", &"z".repeat(40_000)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"]
        .as_str()
        .is_some_and(|e| e.contains("budget")));
    // Small events still go through, and the refused one was never retained.
    let (status, answer) = publish(&server, "big", "small").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(stats(&server).await["historyEvents"], 1);
}
