//! Black-box tests of channels: routing and multiplexing, name validation, the publish API
//! (JSON envelope and raw text), live subscribe/unsubscribe across workers, custom connection
//! ids, `/stats` channel counts, and the slow-consumer policies (`latest`, `drop-oldest`,
//! `disconnect`) with a reader that stops reading its socket.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{ids, json_of, post_json_with, Frame, Opening, RawClient, Server, TIMEOUT};
use tokio::time::Instant;

#[tokio::test]
async fn streams_only_receive_their_channels_and_multiplexed_ones_see_the_channel() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut only_a = server.stream("/events?channel=a", &[]).await;
    let mut only_b = server.stream("/events?channel=b", &[]).await;
    let mut both = server.stream("/events?channel=a&channel=b", &[]).await;
    let mut listed = server.stream("/events?channel=b,a", &[]).await;
    for stream in [&mut only_a, &mut only_b, &mut both, &mut listed] {
        stream.opening().await;
    }
    let a1 = server.publish("a", json!("a1")).await;
    let b1 = server.publish("b", json!({"n": "b1"})).await;
    let c1 = server.publish("c", json!("c1")).await;
    let a2 = server.publish("a", json!("a2")).await;
    let b2 = server.publish("b", json!("b2")).await;
    assert_eq!(c1.clients, 0);

    // Ids are delivered in order, so reading up to the last event of a channel proves that
    // nothing of the other channel was interleaved.
    let got = only_a.events_through(&a2.id).await;
    assert_eq!(ids(&got), vec![a1.id.clone(), a2.id.clone()]);
    assert_eq!(json_of(&got[0]), json!({"channel": "a", "data": "a1"}));
    let got = only_b.events_through(&b2.id).await;
    assert_eq!(ids(&got), vec![b1.id.clone(), b2.id.clone()]);
    assert_eq!(
        json_of(&got[0]),
        json!({"channel": "b", "data": {"n": "b1"}})
    );
    for stream in [&mut both, &mut listed] {
        let got = stream.events_through(&b2.id).await;
        assert_eq!(
            ids(&got),
            vec![a1.id.clone(), b1.id.clone(), a2.id.clone(), b2.id.clone()]
        );
        let channels: Vec<Value> = got.iter().map(|m| json_of(m)["channel"].clone()).collect();
        assert_eq!(
            channels,
            vec![json!("a"), json!("b"), json!("a"), json!("b")]
        );
    }
}

#[tokio::test]
async fn a_stream_without_channels_listens_on_broadcast() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut stream = server.stream("/events", &[]).await;
    let opening = stream.opening().await;
    assert_eq!(opening.connected["channels"], json!(["broadcast"]));
    let (status, answer) = server
        .post_json("/api/publish", &json!({"data": "to all"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["channel"], "broadcast");
    assert_eq!(answer["clients"], 1);
    let message = stream.event().await;
    assert_eq!(message.id.as_deref(), answer["id"].as_str());
    assert_eq!(
        json_of(&message),
        json!({"channel": "broadcast", "data": "to all"})
    );
    let (status, answer) = server
        .post_json("/api/notify", &json!({"message": "hi", "type": "greeting"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let message = stream.event().await;
    assert_eq!(message.event, "greeting");
    assert_eq!(message.id.as_deref(), answer["id"].as_str());
    let data = json_of(&message);
    assert_eq!(data["message"], "hi");
    assert_eq!(data["channel"], "broadcast");
}

#[tokio::test]
async fn invalid_channel_names_are_refused_with_400_json() {
    let server = Server::start(&["--workers", "1"]).await;
    let long = "a".repeat(129);
    for query in [
        "channel=a%20b".to_owned(),
        "channel=%0A".to_owned(),
        "channel=ok&channel=a%0Ab".to_owned(),
        "channel=%C3%A9".to_owned(),
        format!("channel={long}"),
    ] {
        let (status, body) = server
            .open(&format!("/events?{query}"), &[])
            .await
            .refused()
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    // 128 bytes is fine.
    let mut ok = server
        .stream(&format!("/events?channel={}", "a".repeat(128)), &[])
        .await;
    ok.opening().await;
    for channel in ["a b", "a\nb", long.as_str(), ""] {
        let (status, body) = server
            .post_json("/api/publish", &json!({"channel": channel, "data": 1}))
            .await;
        assert_eq!(status, 400, "publish on {channel:?}: {body}");
        assert!(body["error"].is_string(), "{body}");
        let (status, body) = server
            .post_json("/api/notify", &json!({"channel": channel, "message": 1}))
            .await;
        assert_eq!(status, 400, "notify on {channel:?}: {body}");
        let (status, body) = server
            .post_json(
                "/subscribe",
                &json!({"channel": channel, "connectionId": "s0-0123456789abcdef"}),
            )
            .await;
        assert_eq!(status, 400, "subscribe to {channel:?}: {body}");
    }
    let (status, body) = server.post_text("/api/publish?channel=a%20b", "text").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn publish_sends_a_json_envelope_or_raw_text() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut stream = server.stream("/events?channel=news", &[]).await;
    stream.opening().await;
    let data = json!({"title": "hello", "tags": ["x", "y"], "n": 1.5, "nested": {"ok": true}});
    let published = server
        .publish_body(&json!({"channel": "news", "event": "update", "data": data}))
        .await;
    assert_eq!(published.answer["channel"], "news");
    assert_eq!(published.clients, 1);
    let message = stream.event().await;
    assert_eq!(message.event, "update");
    assert_eq!(message.id.as_deref(), Some(published.id.as_str()));
    assert_eq!(json_of(&message), json!({"channel": "news", "data": data}));

    // Data with line breaks inside a JSON string stays one JSON value.
    let published = server.publish("news", json!("two\nlines")).await;
    let message = stream.event().await;
    assert_eq!(message.id, Some(published.id));
    assert_eq!(message.event, "message");
    assert_eq!(json_of(&message)["data"], "two\nlines");

    // text/plain goes out as is, every line break starting a new data line.
    let (status, answer) = server
        .post_text(
            "/api/publish?channel=news&event=note",
            "line one\nline two\r\nline three\rline four",
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], true);
    assert_eq!(answer["channel"], "news");
    let message = stream.event().await;
    assert_eq!(message.event, "note");
    assert_eq!(message.id.as_deref(), answer["id"].as_str());
    assert_eq!(message.data, "line one\nline two\nline three\nline four");
    let (status, answer) = server.post_text("/api/publish?channel=news", "plain").await;
    assert_eq!(status, 200, "{answer}");
    let message = stream.event().await;
    assert_eq!(
        (message.event.as_str(), message.data.as_str()),
        ("message", "plain")
    );

    // Refusals: unknown fields, bad event names, other content types.
    for body in [
        json!({"channel": "news", "data": 1, "id": "mine"}),
        json!({"channel": "news", "event": "a\nb", "data": 1}),
        json!({"channel": "news"}),
    ] {
        let (status, answer) = server.post_json("/api/publish", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let response = server
        .http
        .post(format!("{}/api/publish?channel=news", server.base))
        .header("content-type", "application/octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
}

/// Opens streams (on channel `home`) until one lives on `worker`; closes the others.
async fn stream_on_worker(server: &Server, worker: u64, channel: &str) -> (RawClient, Opening) {
    for _ in 0..200 {
        let mut stream = server
            .stream(&format!("/events?channel={channel}"), &[])
            .await;
        let opening = stream.opening().await;
        if opening.worker() == worker {
            let id = opening.connection_id();
            assert!(id.starts_with(&format!("s{worker}-")), "{id}");
            return (stream, opening);
        }
    }
    panic!("no stream landed on worker {worker} in 200 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_reach_connections_on_either_worker() {
    let server = Server::start(&["--workers", "2"]).await;
    let (mut s0, open0) = stream_on_worker(&server, 0, "home0").await;
    let (mut s1, open1) = stream_on_worker(&server, 1, "home1").await;
    let id0 = open0.connection_id();
    let id1 = open1.connection_id();
    // Requests on fresh connections land on either worker; repeat so both owners are reached
    // from both sides (subscribing twice is harmless).
    let fresh = server.fresh_client();
    for _ in 0..4 {
        for id in [&id0, &id1] {
            let (status, answer) = post_json_with(
                &fresh,
                &server.base,
                "/subscribe",
                &json!({"channel": "x", "connectionId": id}),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(
                answer,
                json!({"success": true, "connectionId": id, "channel": "x", "subscribed": true})
            );
        }
    }
    let x1 = server.publish("x", json!("x1")).await;
    assert_eq!(x1.clients, 2, "both subscriptions counted once");
    assert_eq!(ids(&s0.events_through(&x1.id).await), vec![x1.id.clone()]);
    assert_eq!(ids(&s1.events_through(&x1.id).await), vec![x1.id.clone()]);

    for _ in 0..2 {
        let (status, answer) = post_json_with(
            &fresh,
            &server.base,
            "/unsubscribe",
            &json!({"channel": "x", "connectionId": id1}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["subscribed"], false);
    }
    let x2 = server.publish("x", json!("x2")).await;
    assert_eq!(x2.clients, 1);
    let home1 = server.publish("home1", json!("sentinel")).await;
    assert_eq!(ids(&s0.events_through(&x2.id).await), vec![x2.id.clone()]);
    assert_eq!(
        ids(&s1.events_through(&home1.id).await),
        vec![home1.id.clone()],
        "no x event after unsubscribing"
    );
    // The stream's original channel is unaffected, and unsubscribing from it works too.
    let (status, _) = server
        .post_json(
            "/unsubscribe",
            &json!({"channel": "home0", "connectionId": id0}),
        )
        .await;
    assert_eq!(status, 200);
    let gone = server.publish("home0", json!("gone")).await;
    assert_eq!(gone.clients, 0);
    let x3 = server.publish("x", json!("x3")).await;
    assert_eq!(ids(&s0.events_through(&x3.id).await), vec![x3.id.clone()]);
}

#[tokio::test]
async fn subscribe_to_an_unknown_connection_is_404() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut live = server.stream("/events?channel=a", &[]).await;
    let id = live.opening().await.connection_id();
    for unknown in [
        "s0-0000000000000000",
        "s1-0123456789abcdef",
        "s9-0123456789abcdef",
        "no-such-connection",
    ] {
        for path in ["/subscribe", "/unsubscribe"] {
            let (status, body) = server
                .post_json(path, &json!({"channel": "a", "connectionId": unknown}))
                .await;
            assert_eq!(status, 404, "{path} {unknown}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("no open connection"),
                "{body}"
            );
        }
    }
    for bad in [
        json!({"channel": "a", "connectionId": ""}),
        json!({"channel": "a"}),
    ] {
        let (status, body) = server.post_json("/subscribe", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // Once the stream is gone, its id is unknown too.
    drop(live);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server
            .post_json("/subscribe", &json!({"channel": "b", "connectionId": id}))
            .await;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "closed stream {id} still subscribable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_custom_id_is_409_while_in_use_and_free_again_after() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut first = server.stream("/events?channel=a&id=tab-1", &[]).await;
    let opening = first.opening().await;
    assert_eq!(opening.connection_id(), "tab-1");
    for _ in 0..4 {
        let (status, body) = server
            .open("/events?channel=b&id=tab-1", &[])
            .await
            .refused()
            .await;
        assert_eq!(status, 409, "{body}");
        assert!(body["error"].is_string(), "{body}");
    }
    // Subscribing by a custom id works from any worker.
    let fresh = server.fresh_client();
    for _ in 0..4 {
        let (status, body) = post_json_with(
            &fresh,
            &server.base,
            "/subscribe",
            &json!({"channel": "extra", "connectionId": "tab-1"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let extra = server.publish("extra", json!(1)).await;
    assert_eq!(ids(&first.events_through(&extra.id).await), vec![extra.id]);
    // Reserved and invalid ids are refused.
    for bad in ["s0-0123456789abcdef", "a%20b", "", &"x".repeat(65)] {
        let (status, body) = server
            .open(&format!("/events?id={bad}"), &[])
            .await
            .refused()
            .await;
        assert_eq!(status, 400, "id {bad:?}: {body}");
    }
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut second = loop {
        let opened = server.open("/events?channel=b&id=tab-1", &[]).await;
        if opened.is_stream() {
            break opened.stream();
        }
        let (status, body) = opened.refused().await;
        assert_eq!(status, 409, "{body}");
        assert!(Instant::now() < deadline, "tab-1 never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let opening = second.opening().await;
    assert_eq!(opening.connection_id(), "tab-1");
    assert_eq!(opening.connected["channels"], json!(["b"]));
    // The new owner is the one that subscriptions reach now.
    let (status, _) = server
        .post_json(
            "/subscribe",
            &json!({"channel": "extra", "connectionId": "tab-1"}),
        )
        .await;
    assert_eq!(status, 200);
    let extra = server.publish("extra", json!(2)).await;
    assert_eq!(extra.clients, 1);
    assert_eq!(ids(&second.events_through(&extra.id).await), vec![extra.id]);
}

#[tokio::test]
async fn stats_count_channels_with_subscribers_and_retained_history() {
    let server = Server::start(&["--workers", "2", "--history-size", "2"]).await;
    // The server's own metrics sampler may already have published on `metrics`: count from here.
    let base = server.stats().await;
    let count = |stats: &Value, key: &str| stats[key].as_u64().unwrap();
    assert_eq!(base["channels"], 0, "{base}");
    let history_channels = count(&base, "historyChannels");
    let history_events = count(&base, "historyEvents");
    let published = count(&base, "eventsPublished");
    let mut ab = server.stream("/events?channel=a&channel=b", &[]).await;
    ab.opening().await;
    assert_eq!(server.stats().await["channels"], 2);
    let mut bc = server.stream("/events?channel=b,c", &[]).await;
    bc.opening().await;
    assert_eq!(server.stats().await["channels"], 3);
    drop(ab);
    server
        .wait_stats_within(Duration::from_secs(10), "channels 2", |s| {
            s["channels"] == 2
        })
        .await;
    for n in 0..3 {
        server.publish("b", json!(n)).await;
    }
    let last = server.publish("z", json!("z")).await;
    let stats = server.stats().await;
    assert_eq!(
        count(&stats, "historyChannels"),
        history_channels + 2,
        "{stats}"
    );
    assert_eq!(
        count(&stats, "historyEvents"),
        history_events + 3,
        "b keeps 2 of 3, z keeps 1: {stats}"
    );
    assert_eq!(stats["lastEventId"], last.id.as_str());
    assert_eq!(count(&stats, "eventsPublished"), published + 4);
    drop(bc);
    server
        .wait_stats_within(Duration::from_secs(10), "channels 0", |s| {
            s["channels"] == 0 && s["totalConnections"] == 0
        })
        .await;
}

/// Opens a stream with a tiny receive buffer, reads its opening and then stops reading.
async fn stalled_reader(server: &Server, channel: &str) -> (RawClient, Opening) {
    let mut stream = RawClient::open(
        server.addr,
        &format!("/events?channel={channel}"),
        &[],
        Some(4096),
    )
    .await
    .stream();
    let opening = stream.opening().await;
    (stream, opening)
}

/// Publishes `count` events of about 16 KiB on `channel`; returns the ids.
async fn publish_big(server: &Server, channel: &str, count: usize) -> Vec<String> {
    let filler = "x".repeat(16 * 1024);
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        ids.push(
            server
                .publish(channel, json!({"n": n, "filler": filler}))
                .await
                .id,
        );
    }
    ids
}

fn slow_dropped(stats: &Value) -> u64 {
    stats["slowConsumersDropped"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_policy_keeps_a_stalled_reader_connected_and_ends_on_the_newest() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--channel-capacity",
        "4",
        "--channel-policy",
        "gauges=latest",
        "--heartbeat-interval",
        "1h",
    ])
    .await;
    // (`metrics` itself is now the server's own sampler channel, `latest` by default.)
    let (mut stream, _) = stalled_reader(&server, "gauges").await;
    let published = publish_big(&server, "gauges", 1000).await;
    let newest = published.last().unwrap().clone();
    server.settle().await;
    assert_eq!(slow_dropped(&server.stats().await), 0);
    // Read again: a prefix of what fitted in the socket buffers, then the newest, last.
    let got = ids(&stream.events_through(&newest).await);
    assert!(
        got.windows(2)
            .all(|w| published.iter().position(|p| *p == w[0])
                < published.iter().position(|p| *p == w[1])),
        "ids leave in order"
    );
    assert!(
        got.len() < published.len(),
        "a stalled reader got all {} events: nothing was conflated",
        got.len()
    );
    assert_eq!(slow_dropped(&server.stats().await), 0, "not cut off");
    assert_eq!(server.stats().await["totalConnections"], 1);
    // Still connected: the next event arrives.
    let next = server.publish("gauges", json!("after")).await;
    assert_eq!(stream.event().await.id, Some(next.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_policy_reports_shed_events_in_band_and_keeps_the_stream() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--channel-capacity",
        "4",
        "--channel-policy",
        "feed*=drop-oldest",
        "--heartbeat-interval",
        "1h",
    ])
    .await;
    let (mut stream, _) = stalled_reader(&server, "feed/1").await;
    let published = publish_big(&server, "feed/1", 1000).await;
    let newest = published.last().unwrap().clone();
    server.settle().await;
    let mut received = Vec::new();
    let mut shed = 0u64;
    let mut notices = 0;
    loop {
        let message = stream.event().await;
        if message.event == "dropped" {
            let data = json_of(&message);
            assert_eq!(data["reason"], "slow-consumer", "{data}");
            let count = data["count"].as_u64().unwrap();
            assert!(count > 0, "{data}");
            assert_eq!(message.id, None, "the notice does not move the resume id");
            shed += count;
            notices += 1;
            continue;
        }
        let id = message.id.clone().unwrap();
        received.push(id.clone());
        if id == newest {
            break;
        }
    }
    assert!(
        notices > 0,
        "a stalled reader was never told it missed events"
    );
    assert_eq!(
        received.len() as u64 + shed,
        published.len() as u64,
        "every event is either delivered or counted as dropped"
    );
    let positions: Vec<usize> = received
        .iter()
        .map(|id| published.iter().position(|p| p == id).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order");
    let stats = server.stats().await;
    assert_eq!(slow_dropped(&stats), 0, "{stats}");
    let next = server.publish("feed/1", json!("after")).await;
    assert_eq!(stream.event().await.id, Some(next.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_policy_cuts_off_a_stalled_reader_which_then_resumes_losslessly() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--channel-capacity",
        "4",
        "--heartbeat-interval",
        "1h",
    ])
    .await;
    let (mut stream, _) = stalled_reader(&server, "plain").await;
    let published = publish_big(&server, "plain", 600).await;
    server
        .wait_stats_within(Duration::from_secs(10), "a slow-consumer cut-off", |s| {
            slow_dropped(s) == 1
        })
        .await;
    // Reading again: whatever was in flight, then the stream is aborted (not ended cleanly).
    let mut received = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Ok(Some(Frame::Event(m)))) => received.push(m.id.unwrap()),
            Ok(Ok(Some(Frame::Position(p)))) => panic!("position frame {p} mid-stream"),
            Ok(Ok(None)) => panic!("a cut-off stream must not end cleanly"),
            Ok(Err(_)) => break,
            Err(_) => panic!("the cut-off stream never ended"),
        }
    }
    assert!(received.len() < published.len());
    assert_eq!(
        received[..],
        published[..received.len()],
        "a prefix, in order"
    );
    // Resume with what the parser last saw: the rest, exactly.
    let resume = stream.last_event_id().to_owned();
    let mut again = server
        .stream("/events?channel=plain", &[("Last-Event-ID", &resume)])
        .await;
    let opening = again.opening().await;
    assert!(opening.reset.is_none(), "{:?}", opening.reset);
    let mut all = received;
    all.extend(ids(&opening.events));
    assert_eq!(all, published);
}

#[tokio::test]
async fn subscribe_stops_at_the_per_stream_channel_limit() {
    let server = Server::start(&[]).await;
    let mut live = server.stream("/events?channel=c0", &[]).await;
    let id = live.opening().await.connection_id();
    // The stream has 1 channel; 63 more fit, the 65th is refused.
    for n in 1..64 {
        let (status, body) = server
            .post_json(
                "/subscribe",
                &json!({"channel": format!("c{n}"), "connectionId": id}),
            )
            .await;
        assert_eq!(status, 200, "c{n}: {body}");
    }
    let (status, body) = server
        .post_json("/subscribe", &json!({"channel": "c64", "connectionId": id}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at most 64"),
        "{body}"
    );
    // Re-subscribing to a channel it already has is still fine.
    let (status, _) = server
        .post_json("/subscribe", &json!({"channel": "c5", "connectionId": id}))
        .await;
    assert_eq!(status, 200);
}
