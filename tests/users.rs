//! Black-box tests of per-user streams (`GET /events/:userId`) and their offline queues
//! (`POST /api/users/:userId/notify`): delivery once and in order, overflow reporting, several
//! tabs, resume, and the validation that keeps users' private channels private.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::sse_parse::Message;
use support::{ids, json_of, Opening, Server};

fn messages(events: &[Message]) -> Vec<Value> {
    events
        .iter()
        .map(|m| json_of(m)["message"].clone())
        .collect()
}

#[tokio::test]
async fn offline_events_are_delivered_on_connect_once_and_in_order() {
    let server = Server::start(&["--workers", "2"]).await;
    let history_channels = server.stats().await["historyChannels"].clone();
    let mut published = Vec::new();
    for n in 1..=5 {
        let p = server.notify_user("alice", json!(n)).await;
        assert_eq!(p.clients, 0);
        assert!(p.answer.get("channel").is_none(), "{}", p.answer);
        published.push(p.id);
    }
    let stats = server.settle().await;
    assert_eq!(stats["usersWithQueue"], 1, "{stats}");
    assert_eq!(stats["queuedUserEvents"], 5, "{stats}");
    assert_eq!(
        stats["historyChannels"], history_channels,
        "users' queues are not channels: {stats}"
    );

    let mut stream = server.stream("/events/alice", &[]).await;
    let opening = stream.opening().await;
    assert_eq!(opening.connected["channels"], json!(["~user/alice"]));
    assert!(opening.reset.is_none());
    assert_eq!(ids(&opening.events), published);
    assert_eq!(
        messages(&opening.events),
        vec![json!(1), json!(2), json!(3), json!(4), json!(5)]
    );
    for event in &opening.events {
        assert_eq!(event.event, "notification");
        let data = json_of(event);
        assert_eq!(data["userId"], "alice");
        assert!(
            data["timestamp"].is_string() && data.get("channel").is_none(),
            "{data}"
        );
    }
    assert!(
        opening.position.is_some(),
        "the opening ends with the position frame"
    );
    assert_eq!(server.stats().await["queuedUserEvents"], 0);
    drop(stream);

    // Reconnecting without Last-Event-ID (on either worker) gets none of them again.
    for _ in 0..4 {
        let mut again = server.stream("/events/alice", &[]).await;
        let opening = again.opening().await;
        assert!(
            opening.events.is_empty(),
            "delivered twice: {:?}",
            opening.events
        );
        assert!(opening.position.is_some());
    }
    // Other users' queues are separate.
    let mut bob = server.stream("/events/bob", &[]).await;
    assert!(bob.opening().await.events.is_empty());
}

#[tokio::test]
async fn an_overflowing_queue_reports_the_loss_then_delivers_the_newest() {
    let server = Server::start(&["--workers", "1", "--user-queue-size", "3"]).await;
    let mut published = Vec::new();
    for n in 1..=5 {
        published.push(server.notify_user("carol", json!(n)).await.id);
    }
    assert_eq!(server.settle().await["queuedUserEvents"], 3);
    let mut stream = server.stream("/events/carol", &[]).await;
    let opening = stream.opening().await;
    let (dropped, rest) = opening
        .events
        .split_first()
        .expect("a dropped notice and the queue");
    assert_eq!(dropped.event, "dropped", "{dropped:?}");
    assert_eq!(
        json_of(dropped),
        json!({"count": 2, "reason": "queue-overflow"})
    );
    assert_eq!(dropped.id, None);
    assert_eq!(ids(rest), published[2..].to_vec());
    assert_eq!(messages(rest), vec![json!(3), json!(4), json!(5)]);
    drop(stream);
    // The loss is reported once.
    let mut again = server.stream("/events/carol", &[]).await;
    let opening = again.opening().await;
    assert!(opening.events.is_empty(), "{:?}", opening.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_open_tab_of_a_user_gets_every_live_event() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut tabs = Vec::new();
    for query in ["", "", "?channel=news", "?id=dave-tab-4"] {
        let mut tab = server.stream(&format!("/events/dave{query}"), &[]).await;
        let opening: Opening = tab.opening().await;
        assert!(opening.events.is_empty());
        tabs.push(tab);
    }
    let mut published = Vec::new();
    for n in 0..5 {
        let p = server.notify_user("dave", json!(n)).await;
        assert_eq!(p.clients, 4, "every tab counts");
        published.push(p.id);
    }
    let news = server.publish("news", json!("headline")).await;
    for (i, tab) in tabs.iter_mut().enumerate() {
        let got = tab.events_through(&published[4]).await;
        assert_eq!(ids(&got), published, "tab {i}");
        assert_eq!(messages(&got), (0..5).map(|n| json!(n)).collect::<Vec<_>>());
    }
    let got = tabs[2].events_through(&news.id).await;
    assert_eq!(
        ids(&got),
        vec![news.id.clone()],
        "the tab with ?channel=news"
    );
    // Delivered live: nothing is queued for the next connect.
    assert_eq!(server.stats().await["queuedUserEvents"], 0);
    drop(tabs);
    let mut later = server.stream("/events/dave", &[]).await;
    assert!(later.opening().await.events.is_empty());
}

#[tokio::test]
async fn a_resumed_user_stream_gets_what_it_missed_exactly_once() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut tab = server.stream("/events/erin", &[]).await;
    tab.opening().await;
    let seen = server.notify_user("erin", json!("seen")).await;
    assert_eq!(tab.event().await.id.as_deref(), Some(seen.id.as_str()));
    let resume = tab.last_event_id().to_owned();
    assert_eq!(resume, seen.id);
    drop(tab);
    server
        .wait_stats_within(Duration::from_secs(10), "the tab to close", |s| {
            s["totalConnections"] == 0
        })
        .await;
    let missed: Vec<String> = {
        let mut out = Vec::new();
        for n in 0..2 {
            out.push(server.notify_user("erin", json!(n)).await.id);
        }
        out
    };
    assert_eq!(server.settle().await["queuedUserEvents"], 2);
    let mut tab = server
        .stream("/events/erin", &[("Last-Event-ID", &resume)])
        .await;
    let opening = tab.opening().await;
    assert!(opening.reset.is_none());
    assert_eq!(
        ids(&opening.events),
        missed,
        "the replay, without duplicates"
    );
    assert_eq!(server.stats().await["queuedUserEvents"], 0);
    drop(tab);
    let mut fresh = server.stream("/events/erin", &[]).await;
    assert!(fresh.opening().await.events.is_empty(), "not queued again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_delivered_live_are_never_reported_as_lost() {
    // A queue smaller than a burst: every event reaches the open tab, so the next connect must
    // not report any as dropped.
    let server = Server::start(&["--workers", "2", "--user-queue-size", "3"]).await;
    let mut tab = server.stream("/events/frank", &[]).await;
    tab.opening().await;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let client = reqwest::Client::new();
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for n in 0..25 {
                let (status, answer) = support::post_json_with(
                    &client,
                    &base,
                    "/api/users/frank/notify",
                    &json!({"message": task * 100 + n}),
                )
                .await;
                assert_eq!(status, 200, "{answer}");
                out.push(support::seq_of(answer["id"].as_str().unwrap()));
            }
            out
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    seqs.sort_unstable();
    let last = seqs.last().copied().unwrap();
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let message = tab.event().await;
        got.push(support::seq_of(&message.id.unwrap()));
    }
    assert_eq!(got, seqs, "the tab got every event once, in order");
    drop(tab);
    server
        .wait_stats_within(Duration::from_secs(10), "the tab to close", |s| {
            s["totalConnections"] == 0
        })
        .await;
    let mut next = server.stream("/events/frank", &[]).await;
    let opening = next.opening().await;
    assert!(
        opening.events.is_empty(),
        "events the tab received are reported lost or sent again: {:?}",
        opening.events
    );
}

#[tokio::test]
async fn invalid_user_ids_are_refused_with_400() {
    let server = Server::start(&["--workers", "1"]).await;
    for path in ["/events/a%20b", "/events/a%0Ab", "/events/%C3%A9"] {
        let (status, body) = server.open(path, &[]).await.refused().await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("user id"),
            "{body}"
        );
    }
    let long = "u".repeat(129);
    let (status, body) = server
        .open(&format!("/events/{long}"), &[])
        .await
        .refused()
        .await;
    assert_eq!(status, 400, "{body}");
    for path in ["/api/users/a%20b/notify", "/api/users/%0A/notify"] {
        let (status, body) = server.post_json(path, &json!({"message": 1})).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    // 128 bytes of allowed characters is a valid id.
    let ok = format!("{}@x.y:z_-", "u".repeat(120));
    assert_eq!(ok.len(), 128);
    let mut stream = server.stream(&format!("/events/{ok}"), &[]).await;
    stream.opening().await;
}

#[tokio::test]
async fn a_user_notification_takes_no_channel_and_a_message() {
    let server = Server::start(&["--workers", "1"]).await;
    for body in [
        json!({"message": "hi", "channel": "news"}),
        json!({"message": null}),
        json!({"type": "x"}),
        json!({"message": "hi", "type": "bad\nname"}),
    ] {
        let (status, answer) = server.post_json("/api/users/gina/notify", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert_eq!(
        server.stats().await["queuedUserEvents"],
        0,
        "nothing was queued"
    );
    let (status, answer) = server
        .post_json(
            "/api/users/gina/notify",
            &json!({"message": "ok", "type": "ping"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let mut stream = server.stream("/events/gina", &[]).await;
    let opening = stream.opening().await;
    assert_eq!(opening.events.len(), 1);
    assert_eq!(opening.events[0].event, "ping");
}

#[tokio::test]
async fn a_users_private_channel_cannot_be_named_by_clients() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut owner = server.stream("/events/x", &[]).await;
    let id = owner.opening().await.connection_id();
    for query in [
        "channel=~user/x",
        "channel=%7Euser%2Fx",
        "channel=news,~user/x",
    ] {
        let (status, body) = server
            .open(&format!("/events?{query}"), &[])
            .await
            .refused()
            .await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, body) = server
        .open("/events/y?channel=~user/x", &[])
        .await
        .refused()
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post_json(
            "/subscribe",
            &json!({"channel": "~user/x", "connectionId": id}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post_json(
            "/api/publish",
            &json!({"channel": "~user/x", "data": "spoof"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post_json(
            "/api/notify",
            &json!({"channel": "~user/x", "message": "spoof"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // The owner's stream got nothing from any of that.
    let real = server.notify_user("x", json!("real")).await;
    assert_eq!(owner.event().await.id, Some(real.id));
}

#[tokio::test]
async fn head_on_a_user_stream_leaves_the_queue_alone() {
    let server = Server::start(&[]).await;
    server.notify_user("carol", json!("waiting")).await;
    assert_eq!(server.settle().await["queuedUserEvents"], 1);
    let response = server
        .http
        .head(format!("{}/events/carol", server.base))
        .send()
        .await
        .expect("HEAD answers");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "HEAD shows the stream's headers"
    );
    assert_eq!(
        server.stats().await["queuedUserEvents"],
        1,
        "HEAD must not deliver (and so consume) the queue"
    );
    let mut stream = server.stream("/events/carol", &[]).await;
    assert_eq!(
        messages(&stream.opening().await.events),
        vec![json!("waiting")]
    );
}
