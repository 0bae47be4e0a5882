//! Graceful shutdown of the real binary: on SIGTERM (and SIGINT) every open stream receives a
//! jittered `retry:` frame and then ends cleanly, idle keep-alive connections close, `/healthz`
//! stops answering 200, and the process exits with status 0 within `--shutdown-timeout`, even
//! when a stalled reader keeps its stream from finishing.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::sse_parse::Item;
use support::{subscribe, total_connections, End, RawClient, Server};

/// Reads one stream to its end after shutdown began; returns the `retry:` it was sent.
async fn expect_retry_then_end(client: &mut RawClient, base_retry_ms: u64) -> u64 {
    let before = client.body.len();
    let retry = match client.next_item().await {
        Some(Item::Retry(ms)) => ms,
        other => panic!("expected a retry frame at shutdown, got {other:?}"),
    };
    assert_eq!(
        client.next_item().await,
        None,
        "nothing after the retry frame"
    );
    assert_eq!(
        client.end(),
        Some(End::Complete),
        "the chunked body ends cleanly"
    );
    assert_eq!(
        String::from_utf8_lossy(&client.body[before..]),
        format!("retry: {retry}\n\n"),
        "the last frame is a lone retry field"
    );
    client.expect_closed().await;
    // The configured delay plus a random spread (up to 10 s), so clients come back spread out.
    assert!(
        (base_retry_ms..=base_retry_ms + 10_000).contains(&retry),
        "retry {retry} ms with --retry {base_retry_ms} ms"
    );
    retry
}

/// `/healthz` once shutdown has begun: 503, or no answer at all because the listeners are gone.
async fn expect_not_healthy(server: &Server) {
    match support::http().get(server.url("/healthz")).send().await {
        Err(_) => {}
        Ok(response) => {
            assert_eq!(response.status(), 503, "healthz while draining");
            let body: serde_json::Value = response.json().await.expect("JSON");
            assert_eq!(body["status"], "draining", "{body}");
        }
    }
}

#[tokio::test]
async fn sigterm_sends_retry_ends_streams_and_exits_zero() {
    let timeout = Duration::from_secs(5);
    let mut server = Server::spawn(&["--workers", "2", "--shutdown-timeout", "5s"]);
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(subscribe(server.addr).await.0);
    }
    // An idle keep-alive connection that already had its answer.
    let stream = support::connect(server.addr).await;
    let mut idle = RawClient::send(stream, server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(idle.status, 200);
    idle.read_to_end().await;
    server.notify(json!({"message": "before shutdown"})).await;
    for stream in &mut streams {
        assert_eq!(stream.next_event().await.event, "notification");
    }

    let signalled = Instant::now();
    server.signal("TERM");
    let mut delays = Vec::new();
    for stream in &mut streams {
        delays.push(expect_retry_then_end(stream, 3_000).await);
    }
    assert!(
        delays.iter().any(|d| *d != delays[0]),
        "retry delays are jittered, not identical: {delays:?}"
    );
    idle.expect_closed().await;
    expect_not_healthy(&server).await;

    let status = server
        .wait_exit(timeout + Duration::from_secs(2))
        .await
        .expect("the process exits within the shutdown timeout");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        signalled.elapsed() < timeout,
        "streams that end at once need no timeout: took {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn sigint_drains_like_sigterm() {
    let mut server = Server::spawn(&["--retry", "1s", "--shutdown-timeout", "5s"]);
    let (mut stream, _) = subscribe(server.addr).await;
    server.notify(json!({"message": "before SIGINT"})).await;
    assert_eq!(stream.next_event().await.event, "notification");
    server.signal("INT");
    expect_retry_then_end(&mut stream, 1_000).await;
    let status = server
        .wait_exit(Duration::from_secs(7))
        .await
        .expect("the process exits within the shutdown timeout");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_stalled_stream_after_the_timeout() {
    const PAYLOAD: usize = 32 * 1024;
    let timeout = Duration::from_secs(1);
    // The byte bound and the write timeout would cut the stalled stream off before shutdown;
    // this scenario needs one that is still there.
    let mut server = Server::spawn(&[
        "--workers",
        "1",
        "--shutdown-timeout",
        "1s",
        "--queue-bytes",
        "64MiB",
        "--write-timeout",
        "1h",
    ]);

    // A reader that never reads, with a tiny window; and a healthy one.
    let mut stalled = support::connect_small_window(server.addr).await;
    support::write_request(&mut stalled, server.addr, "GET", "/events", &[], b"").await;
    let (mut healthy, _) = subscribe(server.addr).await;
    server
        .wait_stats("both streams open", |s| total_connections(s) == 2)
        .await;

    // Fill the stalled stream's socket and the server's write buffer, staying under the queue
    // capacity (256) so it is not evicted: its response can then never finish on its own.
    let filler = "x".repeat(PAYLOAD);
    let mut published = 0u64;
    while published < 200 {
        server
            .notify(json!({"message": {"n": published, "filler": filler}}))
            .await;
        published += 1;
        let event = healthy.next_event().await;
        assert_eq!(event.event, "notification");
    }
    let stats = server.stats().await;
    let delivered = stats["framesDelivered"].as_u64().expect("framesDelivered");
    // The healthy stream took 1 + 200 frames; the stalled one must be lagging behind.
    assert!(
        delivered < 2 * (published + 1),
        "the stalled stream is not stalled: {stats}"
    );
    assert_eq!(stats["slowConsumersDropped"], 0, "{stats}");

    let signalled = Instant::now();
    server.signal("TERM");
    expect_retry_then_end(&mut healthy, 3_000).await;
    let status = server
        .wait_exit(timeout + Duration::from_secs(4))
        .await
        .expect("the process exits once the shutdown timeout has passed");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let took = signalled.elapsed();
    assert!(
        took >= timeout - Duration::from_millis(100),
        "exited after {took:?}: it did not wait for the stalled stream to drain"
    );
    drop(stalled);
}

#[tokio::test]
async fn sigterm_right_after_the_listening_line_is_graceful() {
    // The listening line is the readiness signal scripts and supervisors wait for, so a SIGTERM
    // sent as soon as it appears must already get the graceful path (exit 0), not the default
    // action of the signal (death by SIGTERM). The window is narrow, so try a few times.
    for _ in 0..20 {
        let mut server = Server::spawn(&["--workers", "1"]);
        server.signal("TERM");
        let status = server
            .wait_exit(support::TIMEOUT)
            .await
            .expect("the process exits");
        assert_eq!(
            status.code(),
            Some(0),
            "exit status {status:?} for a SIGTERM right after the listening line"
        );
    }
}
