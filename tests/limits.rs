//! Resource limits against the real binary: the connection limit (EventSource 200 + `retry:`,
//! plain 503, and a slot freeing after a disconnect), cleanup after hundreds of connect/disconnect
//! cycles across two workers, heartbeats on idle streams, and slow consumers: a stalled reader is
//! cut off and its connection released while a fast reader receives every event in order and the
//! server's memory stays bounded.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::sse_parse::Item;
use support::{open_stream, subscribe, total_connections, End, RawClient, Server};
use tokio::net::TcpStream;

#[tokio::test]
async fn connection_limit_answers_eventsource_with_retry_and_others_with_503() {
    let server = Server::spawn(&["--workers", "2", "--max-connections", "2"]);
    let (first, _) = subscribe(server.addr).await;
    let (_second, _) = subscribe(server.addr).await;

    // An EventSource (it sends Accept: text/event-stream) gets a 200 whose whole body is one
    // `retry:` frame with a delay in 5..15 s, then the body ends.
    for _ in 0..5 {
        let mut refused = open_stream(server.addr, &[("Accept", "text/event-stream")]).await;
        assert_eq!(refused.status, 200);
        assert_eq!(refused.header("content-type"), Some("text/event-stream"));
        assert_eq!(refused.read_to_end().await, End::Complete);
        let body = refused.body_text();
        let delay: u64 = body
            .strip_prefix("retry: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("body is not a lone retry frame: {body:?}"));
        assert!((5_000..=15_000).contains(&delay), "retry {delay}");
        assert_eq!(refused.drain_items(), vec![Item::Retry(delay)]);
    }

    // Anything else gets 503 with Retry-After and a JSON error.
    for accept in [None, Some("*/*"), Some("application/json")] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let mut refused = open_stream(server.addr, &headers).await;
        assert_eq!(refused.status, 503, "Accept {accept:?}");
        let retry_after = refused.header("retry-after").expect("Retry-After");
        assert!(retry_after.parse::<u64>().is_ok(), "{retry_after:?}");
        let body = refused.json().await;
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }

    let stats = server.stats().await;
    assert_eq!(
        stats["totalConnections"], 2,
        "refusals hold no slot: {stats}"
    );
    assert_eq!(stats["peakConnections"], 2, "{stats}");

    // A client leaving frees its slot for the next one.
    drop(first);
    server
        .wait_stats("the closed stream to be released", |s| {
            total_connections(s) == 1
        })
        .await;
    let (mut third, connected) = subscribe(server.addr).await;
    assert_eq!(connected.event, "connected");
    assert_eq!(third.end(), None);
    assert_eq!(server.notify(json!({"message": "full"})).await, 2);
    assert_eq!(third.next_event().await.event, "notification");
}

#[tokio::test]
async fn hundreds_of_connect_disconnect_cycles_leave_nothing_behind() {
    const ROUNDS: usize = 30;
    const PER_ROUND: usize = 10;
    let server = Server::spawn(&["--workers", "2"]);
    let mut workers_seen = [0usize; 2];
    for _ in 0..ROUNDS {
        let opened = futures_util::future::join_all(
            (0..PER_ROUND).map(|_| async { subscribe(server.addr).await }),
        )
        .await;
        for (_, connected) in &opened {
            let data: Value = serde_json::from_str(&connected.data).expect("JSON");
            let worker = data["worker"].as_u64().expect("worker") as usize;
            workers_seen[worker] += 1;
        }
        drop(opened);
    }
    assert!(
        workers_seen.iter().all(|&n| n > 0),
        "both workers took connections: {workers_seen:?}"
    );
    let stats = server
        .wait_stats("every stream released", |s| total_connections(s) == 0)
        .await;
    for worker in stats["workers"].as_array().expect("workers") {
        assert_eq!(worker["connections"], 0, "{stats}");
    }
    let peak = stats["peakConnections"].as_u64().expect("peak");
    assert!(
        (PER_ROUND as u64..=(ROUNDS * PER_ROUND) as u64).contains(&peak),
        "peak {peak} with {PER_ROUND} streams open at once: {stats}"
    );
    assert_eq!(stats["averageAge"], 0, "{stats}");

    // The server still works normally afterwards.
    let (mut client, _) = subscribe(server.addr).await;
    assert_eq!(server.notify(json!({"message": 1})).await, 1);
    assert_eq!(client.next_event().await.event, "notification");
}

#[tokio::test]
async fn idle_streams_get_heartbeats() {
    let server = Server::spawn(&["--heartbeat-interval", "200ms"]);
    let (mut client, _) = subscribe(server.addr).await;
    let mut beats = Vec::new();
    while beats.len() < 3 {
        match client.next_item_within(Duration::from_secs(5)).await {
            Some(Item::Comment(text)) => {
                assert_eq!(text, "heartbeat");
                beats.push(Instant::now());
            }
            other => panic!("expected a heartbeat comment, got {other:?}"),
        }
    }
    // Two periods separate the first and the third beat: they are paced, not a burst.
    let span = beats[2] - beats[0];
    assert!(
        span >= Duration::from_millis(300),
        "3 heartbeats in {span:?}"
    );
    assert!(
        client
            .body_text()
            .ends_with(": heartbeat\n\n: heartbeat\n\n"),
        "{:?}",
        client.body_text()
    );
    // Heartbeats are comments: they dispatch no event, and real events still flow in between.
    server.notify(json!({"message": "between beats"})).await;
    assert_eq!(client.next_event().await.event, "notification");
}

/// Everything the slow-consumer tests need, after the flood.
struct Flooded {
    server: Server,
    /// The stalled connection (its request sent, nothing ever read).
    slow: TcpStream,
    /// The fast reader, still open.
    fast: RawClient,
    /// Events the fast reader received, as the `n` of each message, in arrival order.
    received: Vec<u64>,
    published: u64,
    peak_rss_kib: u64,
    stats: Value,
}

/// Starts a server with `--channel-capacity 8`, opens a stalled reader with a tiny receive
/// window and a fast reader, and publishes 32 KiB events until the stalled one is dropped (plus a
/// few more). The fast reader runs on its own task and must receive everything.
async fn flood_with_a_slow_consumer() -> Flooded {
    const PAYLOAD: usize = 32 * 1024;
    const MAX_EVENTS: u64 = 2_000;
    const AFTER_DROP: u64 = 20;
    let server = Server::spawn(&[
        "--workers",
        "1",
        "--channel-capacity",
        "8",
        "--shutdown-timeout",
        "1s",
    ]);

    let mut slow = support::connect_small_window(server.addr).await;
    support::write_request(&mut slow, server.addr, "GET", "/events", &[], b"").await;
    let (mut fast, _) = subscribe(server.addr).await;
    server
        .wait_stats("both streams open", |s| total_connections(s) == 2)
        .await;

    let fast_reader = tokio::spawn(async move {
        let mut received = Vec::new();
        loop {
            match fast.next_item().await {
                Some(Item::Event(event)) if event.event == "notification" => {
                    let data: Value = serde_json::from_str(&event.data).expect("JSON");
                    let n = data["message"]["n"].as_u64().expect("n");
                    received.push(n);
                    if data["message"]["last"] == true {
                        return (received, fast);
                    }
                }
                Some(_) => {}
                None => panic!("the fast stream ended: {:?}", fast.end()),
            }
        }
    });

    let filler = "x".repeat(PAYLOAD);
    let mut published = 0u64;
    let mut peak_rss_kib = 0u64;
    let mut dropped_at = None;
    while published < MAX_EVENTS {
        let last = dropped_at.is_some_and(|at| published >= at + AFTER_DROP);
        server
            .notify(json!({"message": {"n": published, "last": last, "filler": filler}}))
            .await;
        published += 1;
        if last {
            break;
        }
        if published.is_multiple_of(16) {
            peak_rss_kib = peak_rss_kib.max(server.rss_kib());
            if dropped_at.is_none() {
                let stats = server.stats().await;
                if stats["slowConsumersDropped"].as_u64() >= Some(1) {
                    dropped_at = Some(published);
                }
            }
        }
    }
    assert!(
        dropped_at.is_some(),
        "{published} events of {PAYLOAD} bytes never overflowed a queue of 8 behind a reader \
         that never reads"
    );
    let (received, fast) = tokio::time::timeout(support::TIMEOUT * 3, fast_reader)
        .await
        .expect("the fast reader finished in time")
        .expect("the fast reader did not panic");
    assert_eq!(fast.end(), None, "the fast stream is still open");
    peak_rss_kib = peak_rss_kib.max(server.rss_kib());
    let stats = server.stats().await;
    Flooded {
        server,
        slow,
        fast,
        received,
        published,
        peak_rss_kib,
        stats,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_dropped_and_fast_reader_gets_every_event() {
    let flooded = flood_with_a_slow_consumer().await;
    let stats = &flooded.stats;
    assert!(
        stats["slowConsumersDropped"].as_u64() >= Some(1),
        "the stalled reader was counted as a slow consumer: {stats}"
    );
    assert_eq!(
        stats["workers"][0]["slowConsumersDropped"], stats["slowConsumersDropped"],
        "{stats}"
    );
    let expected: Vec<u64> = (0..flooded.published).collect();
    assert!(
        flooded.received == expected,
        "the fast reader got {} of {} events, first gap at {:?}",
        flooded.received.len(),
        flooded.published,
        flooded
            .received
            .iter()
            .zip(&expected)
            .position(|(got, want)| got != want)
    );
    // Memory stays bounded: the dropped reader's backlog is not kept. (A generous bound, about
    // correctness, not speed: a server that buffered for the stalled reader would hold every
    // published byte for it.)
    assert!(
        flooded.peak_rss_kib < 200 * 1024,
        "server RSS reached {} KiB",
        flooded.peak_rss_kib
    );
    drop(flooded.slow);
    drop(flooded.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_connection_is_closed_without_it_reading() {
    let flooded = flood_with_a_slow_consumer().await;
    let server = &flooded.server;
    // The stalled reader never reads again, yet the server must let go of it: its stream slot,
    // its buffers and its socket. Only the fast reader remains.
    // It is released as soon as it is evicted; the bound is only for a loaded machine.
    server
        .wait_stats_within(
            Duration::from_secs(3),
            "the evicted stream to be released",
            |s| total_connections(s) == 1,
        )
        .await;
    // ... and the one left is the fast reader, which still receives.
    let mut fast = flooded.fast;
    server.notify(json!({"message": {"n": -1}})).await;
    assert_eq!(fast.next_event().await.event, "notification");

    // What the stalled reader finds when it finally reads: whatever was already in flight, then
    // the connection ends without the chunked terminator (an abort, so clients reconnect).
    let mut slow = RawClient::read_response(flooded.slow, false).await;
    assert_eq!(slow.status, 200);
    let end = slow.read_to_end().await;
    assert_ne!(end, End::Complete, "an evicted stream must not end cleanly");
}
