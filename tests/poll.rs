//! Black-box tests of long polling (`GET /poll`) with a real HTTP client: waiting for the next
//! event, replay from `since` with no gap and no duplicate, the timeout, in-band resets, a poll
//! loop racing a publisher, errors, and answers at shutdown.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Server, TIMEOUT};

async fn poll(server: &Server, query: &str) -> (u16, Value) {
    let response = tokio::time::timeout(
        TIMEOUT,
        server
            .http
            .get(format!("{}/poll{query}", server.base))
            .send(),
    )
    .await
    .expect("an answer in time")
    .expect("GET /poll");
    let status = response.status().as_u16();
    assert_eq!(response.headers()["cache-control"], "no-store");
    (status, response.json().await.expect("a JSON answer"))
}

fn polled_ids(answer: &Value) -> Vec<String> {
    answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_poll_without_since_waits_for_the_next_event() {
    let server = Server::start(&["--workers", "2"]).await;
    let waiting = {
        let http = server.http.clone();
        let url = format!("{}/poll?channel=a", server.base);
        tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Value>().await })
    };
    server
        .wait_stats_within(TIMEOUT, "the poll is waiting", |s| {
            s["totalConnections"] == 1
        })
        .await;
    server.publish("b", json!("other channel")).await;
    let event = server.publish("a", json!({"n": 1})).await;
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(
        answer,
        json!({
            "events": [{"id": event.id, "channel": "a", "event": "message", "data": {"n": 1}}],
            "next": event.id,
        })
    );
}

#[tokio::test]
async fn since_replays_what_was_missed_then_waits_for_more() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut published = Vec::new();
    for n in 0..4 {
        published.push(server.publish("a", json!(n)).await.id);
    }
    server.publish("b", json!("not asked for")).await;
    // Every worker has applied every publish: a poll then finds them all in its catch-up (a
    // worker still behind would send the last ones live, in a later answer).
    server.settle().await;
    let (status, answer) = poll(&server, &format!("?channel=a&since={}", published[0])).await;
    assert_eq!(status, 200);
    assert_eq!(polled_ids(&answer), published[1..].to_vec());
    assert_eq!(answer["next"], json!(published[3]));
    assert_eq!(answer["events"][2]["data"], 3);

    // Polling from `next` waits for the next event.
    let next = answer["next"].as_str().unwrap().to_owned();
    let waiting = {
        let http = server.http.clone();
        let url = format!("{}/poll?channel=a&since={next}", server.base);
        tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Value>().await })
    };
    server
        .wait_stats_within(TIMEOUT, "the poll is waiting", |s| {
            s["totalConnections"] == 1
        })
        .await;
    let more = server.publish("a", json!("more")).await;
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(polled_ids(&answer), vec![more.id.clone()]);
}

#[tokio::test]
async fn an_empty_poll_answers_after_the_timeout_with_the_current_position() {
    let server = Server::start(&["--poll-timeout", "500ms"]).await;
    let last = server.publish("elsewhere", json!(1)).await;
    // Every worker has applied every publish: a poll then finds them all in its catch-up (a
    // worker still behind would send the last ones live, in a later answer).
    server.settle().await;
    let started = Instant::now();
    let (status, answer) = poll(&server, "?channel=quiet").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer, json!({"events": [], "next": last.id}));
}

#[tokio::test]
async fn unusable_since_ids_get_an_in_band_reset() {
    let server = Server::start(&["--history-size", "2"]).await;
    let first = server.publish("a", json!(1)).await;
    let mut before_last = first.clone();
    for n in 2..6 {
        before_last = server.publish("a", json!(n)).await;
    }
    let last = server.publish("a", json!(6)).await;
    // Every worker has applied every publish: a poll then finds them all in its catch-up (a
    // worker still behind would send the last ones live, in a later answer).
    server.settle().await;
    for (since, reason) in [
        ("garbage".to_owned(), "malformed"),
        ("zzzz-1".to_owned(), "unknown"),
        (first.id.clone(), "expired"),
    ] {
        let (status, answer) = poll(&server, &format!("?channel=a&since={since}")).await;
        assert_eq!(status, 200);
        let reset = &answer["events"][0];
        assert_eq!(reset["event"], "reset", "{since}: {answer}");
        assert_eq!(reset["data"]["reason"], reason, "{since}: {answer}");
        assert_eq!(answer["next"], json!(last.id), "{since}: {answer}");
        let events = answer["events"].as_array().unwrap();
        if reason == "unknown" {
            // An id of another epoch: after the reset, every event of this one still retained
            // (`--history-size 2`).
            let ids: Vec<&Value> = events[1..].iter().map(|e| &e["id"]).collect();
            assert_eq!(
                ids,
                vec![&json!(before_last.id), &json!(last.id)],
                "{answer}"
            );
        } else {
            assert_eq!(events.len(), 1, "{answer}");
        }
    }
}

#[tokio::test]
async fn a_poll_loop_racing_a_publisher_sees_every_event_exactly_once() {
    let server = Server::start(&["--workers", "2"]).await;
    let first = server.publish("race", json!("start")).await;
    let publisher = {
        let http = server.fresh_client();
        let base = server.base.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..300 {
                let channel = if n % 3 == 0 { "other" } else { "race" };
                let answer: Value = http
                    .post(format!("{base}/api/publish"))
                    .json(&json!({"channel": channel, "data": n}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if channel == "race" {
                    ids.push(answer["id"].as_str().unwrap().to_owned());
                }
            }
            ids
        })
    };
    let client = server.fresh_client();
    let mut next = first.id.clone();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 200 {
        assert!(Instant::now() < deadline, "only {} events seen", seen.len());
        let answer: Value = client
            .get(format!("{}/poll?channel=race&since={next}", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(polled_ids(&answer));
        next = answer["next"].as_str().unwrap().to_owned();
    }
    let published = publisher.await.unwrap();
    assert_eq!(seen, published, "every event once, in order");
}

#[tokio::test]
async fn bad_requests_are_refused_with_json_errors() {
    let server = Server::start(&[]).await;
    let (status, answer) = poll(&server, "?channel=bad%20name").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("channel"));
    let response = server
        .http
        .post(format!("{}/poll", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD, OPTIONS");
}

#[tokio::test]
async fn a_waiting_poll_is_answered_at_shutdown() {
    let mut process = Server::spawn(&["--metrics-interval", "1h", "--poll-timeout", "60s"]);
    let url = process.url("/poll?channel=a");
    let waiting = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.signal("TERM");
    let answer = tokio::time::timeout(TIMEOUT, waiting)
        .await
        .expect("answered before the poll timeout")
        .unwrap()
        .unwrap();
    assert_eq!(answer["events"], json!([]));
    assert!(answer["next"].is_string());
    assert!(process.wait_exit(TIMEOUT).await.unwrap().success());
}
