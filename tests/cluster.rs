//! Black-box tests of multi-node fan-out on Redis (`--broker`): two real `sluice` processes and a
//! real `redis-server` (Debian's package, started here on a free loopback port with an
//! append-only file, so a restart keeps what Redis acknowledged). Publish on one node, receive on
//! the other; resume on one node with an id seen on the other; users' queues and chat history
//! shared; Redis going away and coming back mid-stream with nothing acknowledged lost; and Redis
//! coming back empty, which the nodes survive by starting a new epoch on their own.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::Redis;
use support::server::free_port;
use support::{epoch_of, ids, json_of, post_json_with, seq_of, Frame, Server, TIMEOUT};

async fn node(redis: &Redis, args: &[&str]) -> Server {
    let url = redis.url();
    let mut all = vec!["--workers", "2", "--broker", url.as_str()];
    all.extend_from_slice(args);
    Server::start(&all).await
}

/// Waits until `node` has read the cluster log through `seq` and its workers applied it.
async fn caught_up(node: &Server, seq: u64) {
    node.settle_and("the node applied the event", |s| {
        s["broker"]["nodePosition"].as_u64() >= Some(seq)
    })
    .await;
}

#[tokio::test]
async fn an_event_published_on_one_node_reaches_streams_on_both() {
    let redis = Redis::start();
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let mut on_a = a.stream("/events?channel=news", &[]).await;
    let mut on_b = b.stream("/events?channel=news", &[]).await;
    on_a.opening().await;
    on_b.opening().await;
    let first = a.publish("news", json!({"n": 1})).await;
    let second = b.publish("news", json!({"n": 2})).await;
    for stream in [&mut on_a, &mut on_b] {
        let got = stream.events_through(&second.id).await;
        let ids: Vec<_> = got.iter().map(|m| m.id.clone().unwrap()).collect();
        assert_eq!(ids, vec![first.id.clone(), second.id.clone()]);
        assert_eq!(json_of(&got[0])["data"], json!({"n": 1}));
    }
    // Both nodes hand out ids of one sequence.
    assert!(seq_of(&second.id) > seq_of(&first.id));
    assert_eq!(epoch_of(&first.id), epoch_of(&second.id));
    let stats = b.stats().await;
    assert_eq!(stats["broker"]["connected"], true, "{stats}");
    assert_eq!(b.health().await.1["broker"], "connected");
}

#[tokio::test]
async fn a_client_resumes_on_another_node_with_nothing_lost_or_repeated() {
    let redis = Redis::start();
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let mut on_a = a.stream("/events?channel=x&channel=y", &[]).await;
    on_a.opening().await;
    let seen = a.publish("x", json!("seen")).await;
    on_a.events_through(&seen.id).await;
    drop(on_a);

    // Published while the client is away, on both nodes and both channels.
    let mut missed = Vec::new();
    for n in 0..6 {
        let (server, channel) = if n % 2 == 0 { (&a, "x") } else { (&b, "y") };
        missed.push(server.publish(channel, json!(n)).await.id);
    }
    let last = a.publish("elsewhere", json!("not subscribed")).await;
    // Node b has applied everything, so all of it comes as the replay (a node still behind
    // would send the rest live, which is as good but not what this test looks at).
    caught_up(&b, last.seq).await;

    let mut on_b = b
        .stream(
            "/events?channel=x&channel=y",
            &[("Last-Event-ID", &seen.id)],
        )
        .await;
    let opening = on_b.opening().await;
    let ids: Vec<_> = opening
        .events
        .iter()
        .map(|m| m.id.clone().unwrap())
        .collect();
    assert_eq!(ids, missed, "exactly the missed events, in order");
    let live = a.publish("y", json!("live")).await;
    let next = on_b.event().await;
    assert_eq!(
        next.id.as_deref(),
        Some(live.id.as_str()),
        "then live, no repeat"
    );

    // Long polling and WebSockets resume across nodes the same way.
    let answer: Value = b
        .http
        .get(format!("{}/poll?channel=x&since={}", b.base, seen.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["events"].is_array(), "{answer}");
    let polled: Vec<_> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let on_x: Vec<_> = missed.iter().step_by(2).cloned().collect();
    assert_eq!(polled, on_x);
}

#[tokio::test]
async fn users_queues_and_chat_history_are_shared() {
    let redis = Redis::start();
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let queued = a.notify_user("bob", json!("while you were away")).await;
    // Once both nodes have applied it, it is in neither's future: a stream that opens gets it
    // from the queue. (A stream opening on a node still behind gets it live instead, once.)
    for node in [&a, &b] {
        caught_up(node, queued.seq).await;
    }
    let mut on_b = b.stream("/events/bob", &[]).await;
    let opening = on_b.opening().await;
    let ids: Vec<_> = opening
        .events
        .iter()
        .map(|m| m.id.clone().unwrap())
        .collect();
    assert_eq!(ids, vec![queued.id.clone()], "{opening:?}");
    drop(on_b);
    // Delivered once: a later stream on the other node starts empty.
    let mut on_a = a.stream("/events/bob", &[]).await;
    assert!(on_a.opening().await.events.is_empty());
    let live = a.notify_user("bob", json!("live")).await;
    assert_eq!(on_a.event().await.id.as_deref(), Some(live.id.as_str()));

    // Chat: a message posted on one node reaches a member on the other, and a newcomer on
    // the first node gets it as history.
    let mut alice = b.stream("/chat/lobby?userId=alice", &[]).await;
    alice.opening().await;
    let (status, posted) = a
        .post_json(
            "/chat/lobby/message",
            &json!({"userId": "carol", "message": "hello from a"}),
        )
        .await;
    assert_eq!(status, 200, "{posted}");
    let id = posted["id"].as_str().unwrap();
    loop {
        let message = alice.event().await;
        if message.event == "message" {
            assert_eq!(message.id.as_deref(), Some(id));
            assert_eq!(
                json_of(&message)["id"],
                json!(id),
                "the id is in the data too"
            );
            assert_eq!(json_of(&message)["message"], "hello from a");
            break;
        }
    }
    caught_up(&a, seq_of(id)).await;
    let mut dave = a.stream("/chat/lobby?userId=dave", &[]).await;
    let opening = dave.opening().await;
    let history: Vec<_> = opening
        .events
        .iter()
        .filter(|m| m.event == "message")
        .map(|m| json_of(m)["message"].clone())
        .collect();
    assert_eq!(history, vec![json!("hello from a")], "{opening:?}");
}

#[tokio::test]
async fn redis_going_away_keeps_streams_up_and_loses_nothing_acknowledged() {
    let mut redis = Redis::start();
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let mut on_b = b.stream("/events?channel=news", &[]).await;
    on_b.opening().await;
    let mut acknowledged = vec![a.publish("news", json!("before")).await.id];
    on_b.events_through(&acknowledged[0]).await;

    redis.kill();
    // Publishes are refused with a JSON error, never silently dropped.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, answer) = a
            .post_json(
                "/api/publish",
                &json!({"channel": "news", "data": "during"}),
            )
            .await;
        if status == 503 {
            assert!(
                answer["error"].as_str().unwrap().contains("unavailable"),
                "{answer}"
            );
            break;
        }
        // A publish Redis acknowledged before it died still counts.
        assert_eq!(status, 200, "{answer}");
        acknowledged.push(answer["id"].as_str().unwrap().to_owned());
        assert!(Instant::now() < deadline, "publishes never failed");
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, body) = a.health().await;
        if status == 503 {
            assert_eq!(body["status"], "broker-unreachable", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "healthz stayed {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    redis.launch();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if a.health().await.0 == 200 && b.health().await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + TIMEOUT;
    let after = loop {
        let (status, answer) = a
            .post_json("/api/publish", &json!({"channel": "news", "data": "after"}))
            .await;
        if status == 200 {
            break answer["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "publishing did not resume: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    acknowledged.push(after.clone());
    // The stream on b never dropped, and gets every acknowledged event after the first, once.
    let got = on_b.events_through(&after).await;
    let ids: Vec<_> = got.iter().map(|m| m.id.clone().unwrap()).collect();
    assert_eq!(ids, acknowledged[1..].to_vec());
}

#[tokio::test]
async fn a_broker_that_is_not_there_or_not_redis_is_a_clear_error() {
    let nobody = format!("redis://127.0.0.1:{}/0", free_port());
    let (status, stderr) = Server::run_to_exit(&["--broker", &nobody]);
    assert!(!status.success());
    assert!(stderr.contains("cannot reach the broker"), "{stderr}");
    let (status, stderr) = Server::run_to_exit(&["--broker", "http://example"]);
    assert_eq!(status.code(), Some(64));
    assert!(stderr.contains("--broker"), "{stderr}");
}

#[tokio::test]
async fn a_resume_from_before_what_redis_keeps_gets_a_reset() {
    let redis = Redis::start();
    let a = node(&redis, &["--history-size", "10"]).await;
    let seen = a.publish("t", json!("seen")).await;
    let mut last = seen.clone();
    for n in 0..30 {
        last = a.publish("t", json!(n)).await;
    }
    caught_up(&a, last.seq).await;
    let mut stream = a
        .stream("/events?channel=t", &[("Last-Event-ID", &seen.id)])
        .await;
    let opening = stream.opening().await;
    let reset = opening
        .reset
        .expect("events after the id were trimmed: a reset");
    assert_eq!(json_of(&reset)["reason"], "expired");

    // With no history at all, any resume that missed events is told so too.
    let none = node(&redis, &["--history-size", "0"]).await;
    let seen = none.publish("z", json!("seen")).await;
    let missed = none.publish("z", json!("missed")).await;
    caught_up(&none, missed.seq).await;
    let mut stream = none
        .stream("/events?channel=z", &[("Last-Event-ID", &seen.id)])
        .await;
    assert!(stream.opening().await.reset.is_some());
}

#[tokio::test]
async fn a_long_poll_while_redis_is_unreachable_is_a_503_not_an_empty_answer() {
    let mut redis = Redis::start();
    let a = node(&redis, &[]).await;
    let seen = a.publish("p", json!("seen")).await;
    let missed = a.publish("p", json!("missed")).await;
    caught_up(&a, missed.seq).await;
    redis.kill();
    let response = a
        .http
        .get(format!("{}/poll?channel=p&since={}", a.base, seen.id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn an_id_of_another_epoch_gets_a_reset_then_the_clusters_retained_events() {
    let redis = Redis::start();
    let a = node(&redis, &[]).await;
    let mut published = Vec::new();
    for n in 0..3 {
        published.push(a.publish("t", json!(n)).await);
    }
    a.publish("other", json!("not on this stream")).await;
    let last = published.last().unwrap().clone();
    caught_up(&a, last.seq).await;
    let mut stream = a
        .stream("/events?channel=t", &[("Last-Event-ID", "x0old-7")])
        .await;
    let opening = stream.opening().await;
    let reset = opening.reset.expect("an id of another epoch: a reset");
    assert_eq!(json_of(&reset)["reason"], "unknown");
    let mut got = Vec::new();
    while let support::Frame::Event(m) = stream.frame().await {
        got.push(m.id.clone().unwrap());
    }
    let wanted: Vec<String> = published.iter().map(|p| p.id.clone()).collect();
    assert_eq!(got, wanted, "this epoch's events of the channel, in order");
    let live = a.publish("t", json!("live")).await;
    match stream.frame().await {
        support::Frame::Event(m) => assert_eq!(m.id, Some(live.id)),
        support::Frame::Position(p) => panic!("a second position frame {p}"),
    }
}

#[tokio::test]
async fn a_publish_that_timed_out_while_redis_was_frozen_is_published_once_on_retry() {
    let redis = Redis::start();
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let mut stream = b.stream("/events?channel=t", &[]).await;
    stream.opening().await;
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args(["-s", name, &redis.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let body = json!({"channel": "t", "data": "once", "idempotencyKey": "order-42"});
    signal("STOP");
    let (status, answer) = a.post_json("/api/publish", &body).await;
    signal("CONT");
    assert_eq!(
        status, 503,
        "Redis was frozen past the answer timeout: {answer}"
    );
    assert_asks_for_a_retry_with_the_same_key(&answer);
    // The frozen script ran once Redis woke up: the retry, on either node, finds it.
    let (status, first) = b.post_json("/api/publish", &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = a.post_json("/api/publish", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(first["id"], again["id"]);
    let after = a.publish("t", json!("after")).await;
    let got = stream.events_through(&after.id).await;
    let ids: Vec<String> = got.iter().filter_map(|m| m.id.clone()).collect();
    assert_eq!(
        ids,
        vec![first["id"].as_str().unwrap().to_owned(), after.id.clone()],
        "the event once, then the next"
    );
}

/// A refusal whose error tells the publisher to retry with the same `Idempotency-Key`.
fn assert_asks_for_a_retry_with_the_same_key(answer: &Value) {
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("same Idempotency-Key"),
        "{answer}"
    );
}

/// Publishes `data` on `node` with an idempotency key until the node accepts it (a node whose
/// Redis came back empty refuses publishes until it joined the new epoch); the key makes a retry
/// of a publish that timed out yet was stored return that event instead of a second one.
async fn publish_until_accepted(node: &Server, data: &str, deadline: Instant) -> String {
    let body = json!({"channel": "news", "data": data, "idempotencyKey": data});
    loop {
        let (status, answer) = node.post_json("/api/publish", &body).await;
        if status == 200 {
            return answer["id"].as_str().unwrap().to_owned();
        }
        assert_eq!(status, 503, "{answer}");
        assert_asks_for_a_retry_with_the_same_key(&answer);
        assert!(
            Instant::now() < deadline,
            "publishes were still refused: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_back_empty_gets_a_new_epoch_on_every_node_without_a_restart() {
    let mut redis = Redis::start();
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let mut on_a = a.stream("/events?channel=news", &[]).await;
    let mut on_b = b.stream("/events?channel=news", &[]).await;
    on_a.opening().await;
    on_b.opening().await;
    let mut before = Vec::new();
    for n in 0..4 {
        let server = if n % 2 == 0 { &a } else { &b };
        before.push(server.publish("news", json!(n)).await.id);
    }
    let last = before.last().unwrap().clone();
    for stream in [&mut on_a, &mut on_b] {
        assert_eq!(ids(&stream.events_through(&last).await), before);
    }

    redis.restart_empty();
    // Within 15 s every node takes publishes again and is healthy, with no restart.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = vec![
        publish_until_accepted(&a, "after-on-a", deadline).await,
        publish_until_accepted(&b, "after-on-b", deadline).await,
    ];
    for server in [&a, &b] {
        loop {
            let (status, body) = server.health().await;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "healthz stayed {status}: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let new_epoch = epoch_of(&after[0]).to_owned();
    assert_ne!(new_epoch, epoch_of(&before[0]), "a new epoch");
    assert_eq!(epoch_of(&after[1]), new_epoch, "one epoch for the cluster");
    assert_eq!(seq_of(&after[0]), 1, "the sequence starts over");
    for server in [&a, &b] {
        let stats = server.stats().await;
        assert_eq!(stats["broker"]["epoch"], new_epoch.as_str(), "{stats}");
        assert_eq!(stats["broker"]["epochChanges"], 1, "{stats}");
        let scrape = server.prometheus().await;
        assert!(
            scrape.contains("\nsluice_broker_epoch_changes_total 1\n"),
            "{scrape}"
        );
    }

    // The open streams are ended with a reconnection hint, with nothing of the new epoch on
    // them; reconnecting as a browser does (its last id, of the old epoch) gets `reset`, then
    // the new epoch's events, then live ones, each once.
    for (server, mut stream, name) in [(&a, on_a, "a"), (&b, on_b, "b")] {
        let rest = stream.events_to_end(TIMEOUT).await;
        assert!(stream.end().is_some(), "the stream on {name} was not ended");
        assert_eq!(ids(&rest), Vec::<String>::new(), "on {name} after the heal");
        assert_eq!(stream.last_event_id(), last);
        let mut again = server
            .stream("/events?channel=news", &[("Last-Event-ID", &last)])
            .await;
        let opening = again.opening().await;
        let reset = opening.reset.expect("an id of the lost epoch: a reset");
        assert_eq!(json_of(&reset)["reason"], "unknown");
        let live = server.publish("news", json!(format!("live-{name}"))).await;
        after.push(live.id.clone());
        let mut got = Vec::new();
        while got.last() != Some(&live.id) {
            if let Frame::Event(message) = again.frame().await {
                got.push(message.id.unwrap());
            }
        }
        assert_eq!(
            got, after,
            "on {name}: the new epoch's events, in order, once"
        );
    }
}

/// Publishes on `base` every 10 ms until `stop`, each event with its own idempotency key and
/// retried with it on 503; returns the ids acknowledged, in order, and how many answers were 503.
async fn publish_steadily(
    base: String,
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<String>, usize) {
    let client = support::http();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for n in 0.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let key = format!("{name}-{n}");
        let body = json!({"channel": "race", "data": key, "idempotencyKey": key});
        loop {
            let (status, answer) = post_json_with(&client, &base, "/api/publish", &body).await;
            if status == 200 {
                acknowledged.push(answer["id"].as_str().unwrap().to_owned());
                break;
            }
            assert_eq!(status, 503, "{answer}");
            refused += 1;
            assert!(Instant::now() < deadline, "never accepted again: {answer}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (acknowledged, refused)
}

#[tokio::test]
async fn publishes_racing_the_new_epoch_are_refused_or_kept_never_acknowledged_and_lost() {
    let mut redis = Redis::start();
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let old_epoch = epoch_of(&a.publish("race", json!("first")).await.id).to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on_a = tokio::spawn(publish_steadily(a.base.clone(), "a", stop.clone()));
    let on_b = tokio::spawn(publish_steadily(b.base.clone(), "b", stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart_empty();
    // Both nodes in the new epoch and publishing for a while.
    for server in [&a, &b] {
        server
            .settle_and("the node moved to a new epoch", |s| {
                s["broker"]["epochChanges"] == 1 && s["broker"]["connected"] == true
            })
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acknowledged, refused_a) = on_a.await.unwrap();
    let (on_b, refused_b) = on_b.await.unwrap();
    acknowledged.extend(on_b);
    // The publishers ran across the switch: some of their attempts were refused and retried.
    assert!(refused_a + refused_b > 0, "no publish met the outage");
    let new_epoch = a.stats().await["broker"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut kept: Vec<String> = acknowledged
        .iter()
        .filter(|id| epoch_of(id) == new_epoch)
        .cloned()
        .collect();
    kept.sort_by_key(|id| seq_of(id));
    assert!(
        kept.len() >= 2,
        "publishes resumed on both nodes: {acknowledged:?}"
    );
    assert!(
        acknowledged
            .iter()
            .all(|id| epoch_of(id) == new_epoch || epoch_of(id) == old_epoch),
        "{acknowledged:?}"
    );
    // Every publish acknowledged in the new epoch is retained, once; nothing else is.
    caught_up(&b, seq_of(kept.last().unwrap())).await;
    let mut stream = b
        .stream("/events?channel=race", &[("Last-Event-ID", "x0old-1")])
        .await;
    assert!(stream.opening().await.reset.is_some());
    let mut retained = Vec::new();
    while let Frame::Event(message) = stream.frame().await {
        retained.push(message.id.unwrap());
    }
    assert_eq!(retained, kept);
}
