//! Black-box tests of idempotent publishes: a publish repeated with the same `Idempotency-Key`
//! (header) or `idempotencyKey` (JSON body) within the window answers the first id and
//! publishes nothing, on every publish route, with the memory store and the durable one.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{RawClient, Server};

async fn post(server: &Server, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    match key {
        Some(key) => server.post_json_keyed(path, key, &body).await,
        None => server.post_json(path, &body).await,
    }
}

async fn post_text(server: &Server, key: &str, text: &str) -> (u16, Value) {
    let response = support::http()
        .post(server.url("/api/publish?channel=news"))
        .header("Content-Type", "text/plain")
        .header("Idempotency-Key", key)
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn id(answer: &Value) -> String {
    answer["id"].as_str().unwrap().to_owned()
}

async fn open(server: &Server, path: &str) -> RawClient {
    let mut client = RawClient::request(server.addr, "GET", path, &[], b"").await;
    assert_eq!(client.status, 200);
    assert_eq!(client.next_event().await.event, "connected");
    client
}

/// Publishes on every route twice with one key each and checks one event per key arrives.
async fn repeats_publish_once(server: &Server) {
    let mut news = open(server, "/events?channel=news").await;

    let (s1, a1) = post(
        server,
        "/api/publish",
        Some("k-1"),
        json!({"channel": "news", "data": 1}),
    )
    .await;
    let (s2, a2) = post(
        server,
        "/api/publish",
        Some("k-1"),
        json!({"channel": "news", "data": 1}),
    )
    .await;
    assert_eq!((s1, s2), (200, 200), "{a1} {a2}");
    assert_eq!(id(&a1), id(&a2), "the first answer's id");

    let body_key = json!({"channel": "news", "data": 2, "idempotencyKey": "k-2"});
    let (_, b1) = post(server, "/api/publish", None, body_key.clone()).await;
    let (_, b2) = post(server, "/api/publish", None, body_key).await;
    assert_eq!(id(&b1), id(&b2));

    let (_, c1) = post(
        server,
        "/api/notify",
        Some("k-3"),
        json!({"channel": "news", "message": 3}),
    )
    .await;
    let (_, c2) = post(
        server,
        "/api/notify",
        Some("k-3"),
        json!({"channel": "news", "message": 3}),
    )
    .await;
    assert_eq!(id(&c1), id(&c2));

    let (_, t1) = post_text(server, "k-4", "four").await;
    let (_, t2) = post_text(server, "k-4", "four").await;
    assert_eq!(id(&t1), id(&t2));

    // A key already used on another channel is a new publish there.
    let (_, other) = post(
        server,
        "/api/publish",
        Some("k-1"),
        json!({"channel": "sport", "data": 1}),
    )
    .await;
    assert_ne!(id(&other), id(&a1));

    let (_, last) = post(
        server,
        "/api/publish",
        None,
        json!({"channel": "news", "data": "end"}),
    )
    .await;
    let mut got = Vec::new();
    loop {
        let message = news.next_event().await;
        let event_id = message.id.unwrap();
        got.push(event_id.clone());
        if event_id == id(&last) {
            break;
        }
    }
    assert_eq!(
        got,
        vec![id(&a1), id(&b1), id(&c1), id(&t1), id(&last)],
        "each once"
    );

    let mut alice = open(server, "/events/alice").await;
    let (_, u1) = post(
        server,
        "/api/users/alice/notify",
        Some("k-5"),
        json!({"message": 5}),
    )
    .await;
    let (_, u2) = post(
        server,
        "/api/users/alice/notify",
        Some("k-5"),
        json!({"message": 5}),
    )
    .await;
    assert_eq!(id(&u1), id(&u2));
    let (_, u3) = post(
        server,
        "/api/users/alice/notify",
        None,
        json!({"message": 6}),
    )
    .await;
    assert_eq!(alice.next_event().await.id.unwrap(), id(&u1));
    assert_eq!(alice.next_event().await.id.unwrap(), id(&u3));
}

#[tokio::test]
async fn the_memory_store_publishes_a_repeated_key_once() {
    let server = Server::spawn(&["--workers", "2", "--metrics-interval", "1h"]);
    repeats_publish_once(&server).await;
}

#[tokio::test]
async fn the_durable_store_publishes_a_repeated_key_once() {
    let dir = std::env::temp_dir().join(format!("sluice-idempotency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::spawn(&[
        "--workers",
        "2",
        "--metrics-interval",
        "1h",
        "--fsync",
        "always",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    repeats_publish_once(&server).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_keys_are_refused_with_400() {
    let server = Server::spawn(&["--workers", "1", "--metrics-interval", "1h"]);
    let long = "k".repeat(256);
    for (header, body) in [
        (Some("a b"), None),
        (Some(long.as_str()), None),
        (None, Some("")),
        (Some("one"), Some("two")),
    ] {
        let mut data = json!({"channel": "news", "data": 1});
        if let Some(body) = body {
            data["idempotencyKey"] = json!(body);
        }
        let (status, answer) = post(&server, "/api/publish", header, data).await;
        assert_eq!(status, 400, "{header:?} {body:?}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("dempotency"),
            "{answer}"
        );
    }
}
