//! The server under abuse, against the real binary: a flood of large publishes to distinct
//! channels stays within the memory budget, one oversized event is refused, hostile lists are
//! refused at their cap, stalled readers are cut off by the write timeout, publishers and
//! reconnect storms are rate limited, credentials never reach the log, and malformed framing
//! is refused. Every case is bounded in count and time; nothing asserts on wall-clock speed.
//!
//! Settings that came with these bounds are given as `SLUICE_*` environment variables, not
//! flags, and each case checks the behaviour before the counters that came with it: run against
//! a binary from before the bounds (`SLUICE_TEST_BIN`, see tests/support), every case starts
//! and fails on the finding it reproduces (docs/benchmarks.md section 10 lists them).

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{http, Server};

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
    let server =
        Server::start_with_env(&["--workers", "1"], &[("SLUICE_MEMORY_BUDGET", "4MiB")]).await;
    let (status, first) = publish(&server, "first", "x").await;
    assert_eq!(status, 200, "{first}");
    let before = server.rss_kib();
    // 1 000 events of 40 KB on distinct channels: about 80 MB of frames if all were kept.
    let data = "y".repeat(40_000);
    for i in 0..EVENTS {
        let (status, answer) = publish(&server, &format!("c{i}"), &data).await;
        assert_eq!(status, 200, "publish {i}: {answer}");
    }
    // The first channel's event was evicted: resuming from before it is a reset.
    let id = first["id"].as_str().unwrap();
    let epoch = id.rsplit_once('-').unwrap().0;
    let opening = opening_events(&server, "first", &format!("{epoch}-0")).await;
    assert!(opening.iter().any(|e| e == "reset"), "events: {opening:?}");
    // Resident memory grew by the budget plus a constant, not by the flood.
    let grown_mib = server.rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 4 + 40, "RSS grew {grown_mib} MiB");

    let stats = server.stats().await;
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
    let server = Server::start_with_env(
        &["--workers", "1"],
        &[
            ("SLUICE_MEMORY_BUDGET", "1MiB"),
            ("SLUICE_MAX_EVENT_SHARE", "5"),
        ],
    )
    .await;
    let before = server.stats().await["historyEvents"].as_u64().unwrap();
    // 40 KB of data is about 80 KB in its two encodings: above 5 % of 1 MiB.
    let (status, answer) = publish(&server, "big", &"z".repeat(40_000)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"]
        .as_str()
        .is_some_and(|e| e.contains("budget")));
    // Small events still go through, and the refused one was never retained.
    let (status, answer) = publish(&server, "big", "small").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(server.stats().await["historyEvents"], before + 1);
}

/// Sends raw request bytes on a new connection and reads until the server closes it (or the
/// bound); returns the first status code and everything received.
async fn raw_exchange(server: &Server, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = support::connect(server.addr).await;
    stream.write_all(request).await.expect("write the request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(support::TIMEOUT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

#[tokio::test]
async fn channel_lists_and_query_strings_are_refused_at_their_caps() {
    let server = Server::start(&["--workers", "1"]).await;
    // 12 000 short names (about 50 KB, within hyper's 64 KiB request head).
    let names: Vec<String> = (0..12_000).map(|i| format!("{i:x}")).collect();
    let (status, body) = get_raw(&server, &format!("/events?channel={}", names.join(","))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 64"), "{body}");
    // 12 000 spellings of one channel used to be read (and deduplicated) in full and accepted.
    let (status, body) = get_raw(
        &server,
        &format!("/events?channel={}", ["a"; 12_000].join(",")),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("channel names"), "{body}");
    // So were thousands of unknown parameters.
    let (status, body) = get_raw(&server, &format!("/events?{}", "_=1&".repeat(2_000))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("query parameters"), "{body}");
}

/// `GET target` as raw HTTP/1.1 (reqwest refuses very long URLs); returns status and body.
async fn get_raw(server: &Server, target: &str) -> (u16, String) {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    raw_exchange(server, request.as_bytes()).await
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_off_by_the_write_timeout() {
    // Only the write timeout can evict here: the frame and byte bounds are far away.
    let server = Server::start_with_env(
        &["--workers", "1", "--channel-capacity", "100000"],
        &[
            ("SLUICE_WRITE_TIMEOUT", "1s"),
            ("SLUICE_SEND_BUFFER", "16KiB"),
            ("SLUICE_QUEUE_BYTES", "256MiB"),
        ],
    )
    .await;
    let stream = support::connect_small_window(server.addr).await;
    let stalled =
        support::RawClient::send(stream, server.addr, "GET", "/events?channel=s", &[], b"").await;
    assert_eq!(stalled.status, 200);
    server
        .wait_stats("the stream to open", |s| support::total_connections(s) == 1)
        .await;
    // About 1 MB: far more than the socket buffers on both sides hold.
    let data = "w".repeat(8_000);
    for _ in 0..125 {
        assert_eq!(publish(&server, "s", &data).await.0, 200);
    }
    let stats = server
        .wait_stats("the stalled stream to be evicted", |s| {
            support::total_connections(s) == 0
        })
        .await;
    assert_eq!(stats["slowConsumersDropped"], 1, "{stats}");
    drop(stalled);
}

#[tokio::test]
async fn a_queue_of_few_large_frames_is_as_slow_as_a_full_one() {
    // 40 frames are far below --channel-capacity (256), but 320 KB is past --queue-bytes.
    let server = Server::start_with_env(
        &["--workers", "1"],
        &[
            ("SLUICE_WRITE_TIMEOUT", "1h"),
            ("SLUICE_QUEUE_BYTES", "64KiB"),
            ("SLUICE_SEND_BUFFER", "16KiB"),
        ],
    )
    .await;
    let stream = support::connect_small_window(server.addr).await;
    let stalled =
        support::RawClient::send(stream, server.addr, "GET", "/events?channel=q", &[], b"").await;
    assert_eq!(stalled.status, 200);
    server
        .wait_stats("the stream to open", |s| support::total_connections(s) == 1)
        .await;
    let data = "q".repeat(8_000);
    for _ in 0..40 {
        assert_eq!(publish(&server, "q", &data).await.0, 200);
    }
    let stats = server
        .wait_stats("the stalled stream to be evicted", |s| {
            support::total_connections(s) == 0
        })
        .await;
    assert_eq!(stats["slowConsumersDropped"], 1, "{stats}");
    drop(stalled);
}

#[tokio::test]
async fn publishers_over_their_rate_get_429_with_retry_after() {
    let server = Server::start_with_env(
        &["--workers", "1"],
        &[("SLUICE_PUBLISH_RATE", "1"), ("SLUICE_PUBLISH_BURST", "3")],
    )
    .await;
    let mut refused = 0;
    for i in 0..10 {
        let response = http()
            .post(server.url("/api/publish"))
            .json(&json!({ "channel": "r", "data": i }))
            .send()
            .await
            .expect("POST /api/publish");
        if response.status() == 429 {
            refused += 1;
            let retry_after = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
            let body: Value = response.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("rate limit"),
                "{body}"
            );
        } else {
            assert_eq!(response.status(), 200);
        }
    }
    // A burst of 3 and one more per second: most of ten quick publishes are refused.
    assert!(refused >= 5, "{refused} refused");
    let stats = server.stats().await;
    assert_eq!(stats["publishesRateLimited"], refused, "{stats}");
    let scrape = server.prometheus().await;
    assert!(
        scrape.contains(&format!("sluice_publish_rate_limited_total {refused}")),
        "{scrape}"
    );
}

#[tokio::test]
async fn a_reconnect_storm_from_one_address_is_closed_at_accept() {
    let server =
        Server::start_with_env(&["--workers", "1"], &[("SLUICE_CONNECTION_RATE", "2")]).await;
    let mut answered = 0;
    let mut closed = 0;
    for _ in 0..20 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = support::connect(server.addr).await;
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        );
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(support::TIMEOUT, stream.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            answered += 1;
        } else {
            closed += 1;
        }
    }
    // The harness's own start-up requests took part of the first second's burst.
    assert!(
        answered >= 1 && closed >= 10,
        "{answered} answered, {closed} closed"
    );
    // Once the bucket refills, the same address is served again.
    let mut stats = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if let Ok(response) = http().get(server.url("/stats")).send().await {
            stats = response.json().await.unwrap();
            break;
        }
    }
    assert!(
        stats["connectionsRateLimited"].as_u64().unwrap() >= closed,
        "{stats}"
    );
}

#[tokio::test]
async fn credentials_never_reach_the_log() {
    const KEY: &str = "operator-key-0123456789";
    let server = Server::spawn_logging(&["--workers", "1", "--publisher-key", KEY], "debug");
    let spellings = [
        format!("token={KEY}"),
        format!("%74oken={KEY}"),
        format!("%2574oken={KEY}"),
        format!("TOKEN={KEY}"),
        format!("ToKeN={KEY}"),
        format!("x={KEY}"),
        "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl".to_owned(),
    ];
    for query in &spellings {
        let response = http()
            .post(server.url(&format!("/api/publish?{query}")))
            .header("Authorization", format!("Bearer {KEY}"))
            .header("Cookie", format!("sluice_token={KEY}"))
            .json(&json!({ "channel": "logs", "data": 1 }))
            .send()
            .await
            .expect("POST /api/publish");
        assert_eq!(response.status(), 200, "{query}");
    }
    // The percent-encoded spelling authenticates on its own: it must be redacted, not ignored.
    let response = http()
        .post(server.url(&format!("/api/publish?%74oken={KEY}")))
        .json(&json!({ "channel": "logs", "data": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = server.stderr();
    assert!(
        log.contains("/api/publish?"),
        "the requests are logged: {log}"
    );
    assert!(log.contains("REDACTED"), "{log}");
    assert!(!log.contains(KEY), "a credential reached the log:\n{log}");
    assert!(
        !log.contains("c2lnbmF0dXJl"),
        "a token reached the log:\n{log}"
    );
}

#[tokio::test]
async fn ambiguous_framing_is_refused_or_closes_the_connection() {
    let server = Server::start(&["--workers", "1"]).await;
    let host = server.addr.to_string();
    let body = r#"{"channel":"f","data":1}"#;
    let smuggled = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len(),
        body.len()
    );
    // Refused (RFC 9112 §6.1 allows a refusal or reading it as chunked) and the connection
    // closed: neither reading of its body is published, and a request smuggled behind it is
    // never read.
    let pipelined = format!("{smuggled}GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let (status, text) = raw_exchange(&server, pipelined.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let hostless = "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n";
    let (status, text) = raw_exchange(&server, hostless.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Host"), "{text}");
    let gzip = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: gzip, chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let (status, text) = raw_exchange(&server, gzip.as_bytes()).await;
    assert_eq!(status, 501, "{text}");
    assert!(text.contains("gzip"), "{text}");
    // Nothing was published.
    assert_eq!(server.stats().await["eventsPublished"], 0);
}
