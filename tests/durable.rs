//! Black-box tests of the durable store (`--data-dir`): what was acknowledged before a `kill -9`
//! is there after a restart on the same directory, with the same ids; users' queues likewise; a
//! torn tail is cut off and logged; a second process on the same directory is refused.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::sse_parse::Message;
use support::{RawClient, Server};

/// A fresh directory under the system's temp dir, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let path = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        DataDir(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(dir: &DataDir, extra: &[&str]) -> Server {
    let mut args = vec![
        "--workers",
        "2",
        "--metrics-interval",
        "1h",
        "--history-size",
        "20000",
        "--data-dir",
        dir.arg(),
    ];
    args.extend_from_slice(extra);
    Server::spawn(&args)
}

async fn kill_9(server: &mut Server) {
    server.signal("KILL");
    server
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("killed");
}

/// `POST path` with a JSON body; the status and the answer.
async fn post(client: &reqwest::Client, server: &Server, path: &str, body: Value) -> (u16, Value) {
    let response = client
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Publishes `count` events on `channel` from 8 concurrent publishers; returns the ids in seq order.
async fn publish_many(server: &Server, channel: &str, count: usize) -> Vec<String> {
    let client = support::http();
    let mut tasks = Vec::new();
    for publisher in 0..8 {
        let client = client.clone();
        let url = server.url("/api/publish");
        let channel = channel.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (publisher..count).step_by(8) {
                let response = client
                    .post(&url)
                    .json(&json!({"channel": channel, "data": n}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let answer: Value = response.json().await.unwrap();
                ids.push(answer["id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    ids.sort_by_key(|id| seq_of(id));
    ids
}

fn seq_of(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

async fn open(server: &Server, path: &str, headers: &[(&str, &str)]) -> RawClient {
    let client = RawClient::request(server.addr, "GET", path, headers, b"").await;
    assert_eq!(client.status, 200, "GET {path}");
    client
}

/// Reads events (skipping comments and id-only frames) until one with id `last`, and returns
/// the ids of the published ones (`message`/`notification`).
async fn ids_through(stream: &mut RawClient, last: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let message: Message = stream.next_event().await;
        if message.data.is_empty() {
            continue;
        }
        assert_ne!(message.event, "reset", "{message:?}");
        if message.event == "connected" {
            continue;
        }
        let id = message.id.clone().unwrap();
        let done = id == last;
        ids.push(id);
        if done {
            return ids;
        }
    }
}

#[tokio::test]
async fn acknowledged_events_survive_kill_9_and_resume_exactly() {
    let dir = DataDir::new("kill9");
    let mut first = start(&dir, &[]);
    let ids = publish_many(&first, "news", 10_000).await;
    assert_eq!(ids.len(), 10_000);
    kill_9(&mut first).await;

    let second = start(&dir, &[]);
    let mut stream = open(
        &second,
        "/events?channel=news",
        &[("Last-Event-ID", &ids[4_999])],
    )
    .await;
    let got = ids_through(&mut stream, &ids[9_999]).await;
    assert_eq!(got, ids[5_000..].to_vec(), "exactly events 5,001 to 10,000");
    // Same epoch: new ids continue after the old ones, and arrive live.
    let (status, answer) = post(
        &support::http(),
        &second,
        "/api/publish",
        json!({"channel": "news", "data": "live"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let live = answer["id"].as_str().unwrap().to_owned();
    assert!(seq_of(&live) > seq_of(&ids[9_999]), "{live}");
    assert_eq!(ids_through(&mut stream, &live).await, vec![live.clone()]);
}

#[tokio::test]
async fn users_queues_survive_kill_9_and_are_delivered_once() {
    let dir = DataDir::new("users");
    let mut first = start(&dir, &[]);
    let client = support::http();
    let mut ids = Vec::new();
    for n in 0..200 {
        let (status, answer) = post(
            &client,
            &first,
            "/api/users/alice/notify",
            json!({"message": n}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    kill_9(&mut first).await;

    let mut second = start(&dir, &[]);
    let mut stream = open(&second, "/events/alice", &[]).await;
    assert_eq!(ids_through(&mut stream, &ids[199]).await, ids);
    drop(stream);
    kill_9(&mut second).await;

    // Delivered is durable too: the queue is empty after another crash.
    let third = start(&dir, &[]);
    let (status, answer) = post(
        &client,
        &third,
        "/api/users/alice/notify",
        json!({"message": "new"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let new = answer["id"].as_str().unwrap().to_owned();
    let mut stream = open(&third, "/events/alice", &[]).await;
    assert_eq!(ids_through(&mut stream, &new).await, vec![new.clone()]);
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_logged_and_the_rest_served() {
    let dir = DataDir::new("torn");
    let mut first = start(&dir, &[]);
    let ids = publish_many(&first, "news", 10).await;
    let stats = first.stats().await;
    assert_eq!(
        stats["lastEventId"], ids[9],
        "the last record is the last event"
    );
    kill_9(&mut first).await;

    let segment = last_segment(&dir.0);
    let length = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(length - 5)
        .unwrap();

    let second = start(&dir, &[]);
    let mut stream = open(
        &second,
        "/events?channel=news",
        &[("Last-Event-ID", &ids[0])],
    )
    .await;
    assert_eq!(
        ids_through(&mut stream, &ids[8]).await,
        ids[1..9].to_vec(),
        "what was intact"
    );
    let log = second.stderr();
    assert!(log.contains("torn or corrupt"), "stderr: {log}");
    // Appends continue after the cut, and the next event on the stream is the new one: the torn
    // event is gone, nothing else came in between.
    let (status, answer) = post(
        &support::http(),
        &second,
        "/api/publish",
        json!({"channel": "news", "data": "after"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let after = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(ids_through(&mut stream, &after).await, vec![after.clone()]);
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused() {
    let dir = DataDir::new("lock");
    let _first = start(&dir, &[]);
    let (status, stderr) = Server::run_to_exit(&["--data-dir", dir.arg()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("is in use by another sluice process"),
        "{stderr}"
    );
}

#[tokio::test]
async fn every_fsync_mode_acknowledges_and_keeps_events() {
    for mode in ["always", "never", "interval"] {
        let dir = DataDir::new(&format!("fsync-{mode}"));
        let mut first = start(&dir, &["--fsync", mode]);
        let ids = publish_many(&first, "news", 400).await;
        kill_9(&mut first).await;
        let second = start(&dir, &["--fsync", mode]);
        let mut stream = open(
            &second,
            "/events?channel=news",
            &[("Last-Event-ID", &ids[0])],
        )
        .await;
        assert_eq!(
            ids_through(&mut stream, &ids[399]).await,
            ids[1..].to_vec(),
            "--fsync {mode}"
        );
    }
}
