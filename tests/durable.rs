//! Black-box tests of the durable store (`--data-dir`): what was acknowledged before a `kill -9`
//! is there after a restart on the same directory, with the same ids; users' queues likewise; a
//! torn tail is cut off and logged; an idempotency key outlives a restart; a second process on
//! the same directory waits for the lock up to `--lock-wait`, then is refused; a rolling restart
//! (SIGTERM the old process, start the new one at once on the same port and directory) under
//! load loses and duplicates nothing.

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

/// The id of an acknowledged publish: asserts the 200 of a `(status, answer)` and returns
/// `answer["id"]`.
fn acknowledged((status, answer): (u16, Value)) -> String {
    assert_eq!(status, 200, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

/// Publishes `data` on channel `news`, asserting a 200; its id.
async fn publish_news(server: &Server, data: &str) -> String {
    acknowledged(
        server
            .post_json("/api/publish", &json!({"channel": "news", "data": data}))
            .await,
    )
}

fn seq_of(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

async fn open(server: &Server, path: &str, headers: &[(&str, &str)]) -> RawClient {
    let client = RawClient::request(server.addr, "GET", path, headers, b"").await;
    assert_eq!(client.status, 200, "GET {path}");
    client
}

/// A stream of channel `news` resumed after the event with id `last`.
async fn resume_news(server: &Server, last: &str) -> RawClient {
    open(server, "/events?channel=news", &[("Last-Event-ID", last)]).await
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
    let mut stream = resume_news(&second, &ids[4_999]).await;
    let got = ids_through(&mut stream, &ids[9_999]).await;
    assert_eq!(got, ids[5_000..].to_vec(), "exactly events 5,001 to 10,000");
    // Same epoch: new ids continue after the old ones, and arrive live.
    let live = publish_news(&second, "live").await;
    assert!(seq_of(&live) > seq_of(&ids[9_999]), "{live}");
    assert_eq!(ids_through(&mut stream, &live).await, vec![live.clone()]);
}

#[tokio::test]
async fn users_queues_survive_kill_9_and_are_delivered_once() {
    let dir = DataDir::new("users");
    let mut first = start(&dir, &[]);
    let mut ids = Vec::new();
    for n in 0..200 {
        ids.push(acknowledged(
            first
                .post_json("/api/users/alice/notify", &json!({"message": n}))
                .await,
        ));
    }
    kill_9(&mut first).await;

    let mut second = start(&dir, &[]);
    let mut stream = open(&second, "/events/alice", &[]).await;
    assert_eq!(ids_through(&mut stream, &ids[199]).await, ids);
    drop(stream);
    kill_9(&mut second).await;

    // Delivered is durable too: the queue is empty after another crash.
    let third = start(&dir, &[]);
    let new = acknowledged(
        third
            .post_json("/api/users/alice/notify", &json!({"message": "new"}))
            .await,
    );
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
    let mut stream = resume_news(&second, &ids[0]).await;
    assert_eq!(
        ids_through(&mut stream, &ids[8]).await,
        ids[1..9].to_vec(),
        "what was intact"
    );
    let log = second.stderr();
    assert!(log.contains("torn or corrupt"), "stderr: {log}");
    // Appends continue after the cut, and the next event on the stream is the new one: the torn
    // event is gone, nothing else came in between.
    let after = publish_news(&second, "after").await;
    assert_eq!(ids_through(&mut stream, &after).await, vec![after.clone()]);
}

#[tokio::test]
async fn a_second_process_that_cannot_take_the_lock_within_lock_wait_exits_64() {
    let dir = DataDir::new("lock");
    let first = start(&dir, &[]);
    // On the first one's port too: the port is shared (a handover), the lock is not.
    let listen = first.addr.to_string();
    let (status, stderr) = Server::run_to_exit(&[
        "--listen",
        &listen,
        "--data-dir",
        dir.arg(),
        "--lock-wait",
        "300ms",
    ]);
    assert_eq!(status.code(), Some(64), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("sluice:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains("is in use by another sluice process")
            && errors[0].contains("--lock-wait"),
        "{stderr}"
    );
    assert!(
        stderr.contains("waiting for it to exit"),
        "the wait is logged: {stderr}"
    );
    // The first one never noticed.
    let (status, answer) = first
        .post_json("/api/publish", &json!({"channel": "news", "data": 1}))
        .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn a_port_in_use_by_a_process_on_another_directory_is_still_refused() {
    let dir = DataDir::new("port-a");
    let other = DataDir::new("port-b");
    let first = start(&dir, &[]);
    let listen = first.addr.to_string();
    let (status, stderr) = Server::run_to_exit(&["--listen", &listen, "--data-dir", other.arg()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot start on"), "{stderr}");
}

#[tokio::test]
async fn a_retry_with_the_same_key_after_kill_9_answers_the_first_id_and_publishes_nothing() {
    let dir = DataDir::new("key-kill9");
    let mut first = start(&dir, &[]);
    let body = json!({"channel": "news", "data": "once"});
    let original = acknowledged(
        first
            .post_json_keyed("/api/publish", "deploy-1", &body)
            .await,
    );
    kill_9(&mut first).await;

    let second = start(&dir, &[]);
    let mut stream = resume_news(&second, &original).await;
    assert_eq!(
        acknowledged(
            second
                .post_json_keyed("/api/publish", "deploy-1", &body)
                .await
        ),
        original,
        "the first attempt's id"
    );
    // Another key is a new event.
    let next = acknowledged(
        second
            .post_json_keyed(
                "/api/publish",
                "deploy-2",
                &json!({"channel": "news", "data": "next"}),
            )
            .await,
    );
    assert!(seq_of(&next) > seq_of(&original), "{next}");
    assert_eq!(
        ids_through(&mut stream, &next).await,
        vec![next.clone()],
        "the retry published nothing"
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
        let mut stream = resume_news(&second, &ids[0]).await;
        assert_eq!(
            ids_through(&mut stream, &ids[399]).await,
            ids[1..].to_vec(),
            "--fsync {mode}"
        );
    }
}

/// What one resuming client of the rolling restart saw.
#[derive(Debug, Default)]
struct Seen {
    /// `(id, data)` of every event (its `data` member), in arrival order.
    events: Vec<(String, String)>,
    /// Streams opened (the first and every reconnection).
    opened: usize,
    /// Failed attempts (refused, reset, a status other than 200).
    failed: usize,
}

/// A client that resumes like a browser's `EventSource`: it keeps the last event id (from any
/// `id:` field), waits the announced `retry:` (capped) after a stream ends or an attempt fails,
/// and reconnects with `Last-Event-ID`, until it has read the event `until` names for its
/// channel.
async fn resuming_client(
    addr: std::net::SocketAddr,
    channel: String,
    until: tokio::sync::watch::Receiver<Option<String>>,
) -> Seen {
    use futures_util::StreamExt;
    use support::sse_parse::{Item, Parser};
    // No overall request timeout (a stream lasts the whole test); every wait is bounded below.
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(support::TIMEOUT)
        .build()
        .unwrap();
    let url = format!("http://{addr}/events?channel={channel}");
    let mut seen = Seen::default();
    let mut last = String::new();
    let mut retry = Duration::from_millis(200);
    let done = |seen: &Seen| {
        let target = until.borrow().clone();
        target.is_some_and(|t| seen.events.last().is_some_and(|(id, _)| *id == t))
    };
    while !done(&seen) {
        let mut request = client.get(&url).header("Accept", "text/event-stream");
        if !last.is_empty() {
            request = request.header("Last-Event-ID", &last);
        }
        let response = match request.send().await {
            Ok(response) if response.status() == 200 => response,
            _ => {
                seen.failed += 1;
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        seen.opened += 1;
        let mut body = response.bytes_stream();
        let mut parser = Parser::new();
        let mut items = Vec::new();
        while !done(&seen) {
            let chunk = tokio::time::timeout(support::TIMEOUT, body.next()).await;
            let Ok(Some(Ok(chunk))) = chunk else { break };
            parser.feed(&chunk, &mut items);
            for item in items.drain(..) {
                match item {
                    Item::Retry(ms) => retry = Duration::from_millis(ms.min(1_000)),
                    Item::Event(message) => {
                        assert_ne!(message.event, "reset", "{channel}: {message:?}");
                        if message.event == "message" {
                            let id = message.id.clone().expect("a published event has an id");
                            let event: Value = serde_json::from_str(&message.data).unwrap();
                            seen.events.push((id, event["data"].to_string()));
                        }
                    }
                    Item::Comment(_) => {}
                }
            }
            last = parser.last_event_id().to_owned();
        }
        tokio::time::sleep(retry).await;
    }
    seen
}

/// What the publisher of the rolling restart saw.
#[derive(Debug, Default)]
struct Publisher {
    /// `(channel, n, id)` of every acknowledged event.
    acked: Vec<(usize, usize, String)>,
    /// Attempts that failed and were retried with the same key, by what the publisher saw.
    refused: usize,
    broken: usize,
    statuses: Vec<u16>,
}

/// Publishes event `n` on channel `n % channels` with key `roll-n`, retrying on any failure
/// with the same key until it is acknowledged.
async fn publish_until_acked(
    client: reqwest::Client,
    addr: std::net::SocketAddr,
    channels: usize,
    n: usize,
    log: std::sync::Arc<std::sync::Mutex<Publisher>>,
) {
    let channel = n % channels;
    let body = json!({"channel": format!("roll-{channel}"), "data": n});
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "event {n} never acknowledged"
        );
        let sent = client
            .post(format!("http://{addr}/api/publish"))
            .header("Idempotency-Key", format!("roll-{n}"))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 200 => {
                if let Ok(answer) = response.json::<Value>().await {
                    let id = answer["id"].as_str().unwrap().to_owned();
                    log.lock().unwrap().acked.push((channel, n, id));
                    return;
                }
                log.lock().unwrap().broken += 1;
            }
            Ok(response) => log
                .lock()
                .unwrap()
                .statuses
                .push(response.status().as_u16()),
            Err(error) if error.is_connect() => log.lock().unwrap().refused += 1,
            Err(_) => log.lock().unwrap().broken += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Listening TCP sockets on 127.0.0.1:`port`, from `/proc/net/tcp`.
fn listeners_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_and_duplicates_nothing() {
    const CLIENTS: usize = 200;
    const CHANNELS: usize = 4;
    /// 10 s at 100 events/s; the restart comes at a third of it.
    const EVENTS: usize = 1_000;
    const RESTART_AT: usize = 300;

    let dir = DataDir::new("rolling");
    let port = support::server::free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--listen",
        listen.as_str(),
        "--workers",
        "2",
        "--metrics-interval",
        "1h",
        "--history-size",
        "20000",
        "--retry",
        "200ms",
        "--data-dir",
        dir.arg(),
    ];
    let mut old = Server::spawn_logging(&args, "info");
    let addr = old.addr;

    let mut targets = Vec::new();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let channel = c % CHANNELS;
        let (tx, rx) = tokio::sync::watch::channel(None);
        targets.push((channel, tx));
        clients.push((
            channel,
            tokio::spawn(resuming_client(addr, format!("roll-{channel}"), rx)),
        ));
    }
    // Every client is subscribed before the first event: from there on it must see them all.
    old.wait_stats("every client connected", |s| {
        support::total_connections(s) >= CLIENTS as u64
    })
    .await;

    let log = std::sync::Arc::new(std::sync::Mutex::new(Publisher::default()));
    let publisher = support::http();
    let mut publishes = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut new = None;
    for n in 0..EVENTS {
        tick.tick().await;
        if n == RESTART_AT {
            // The deploy: start the new process on the same port and directory, and SIGTERM
            // the old one as soon as the new one's listeners are bound (the kernel shows four
            // on the port): it waits for the lock while the old one drains, and connections
            // the kernel hands its listeners wait in their backlog until it serves.
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            new = Some(tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Server::spawn_logging(&args, "info")
            }));
            let bound = std::time::Instant::now() + support::TIMEOUT;
            while listeners_on(port) < 4 {
                assert!(
                    std::time::Instant::now() < bound,
                    "the new process never bound"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            old.signal("TERM");
        }
        publishes.push(tokio::spawn(publish_until_acked(
            publisher.clone(),
            addr,
            CHANNELS,
            n,
            log.clone(),
        )));
    }
    for publish in publishes {
        publish.await.unwrap();
    }
    let old_exit = old
        .wait_exit(support::TIMEOUT)
        .await
        .expect("the old process exited");
    assert!(old_exit.success(), "{old_exit:?}");
    let new = new.unwrap().await.unwrap();
    let takeover = new
        .stderr()
        .lines()
        .find(|l| l.contains("took the data directory's lock over"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("the new process waited for the lock: {}", new.stderr()));

    let log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(log.acked.len(), EVENTS);
    let mut expected: Vec<Vec<(String, String)>> = vec![Vec::new(); CHANNELS];
    let mut acked = log.acked.clone();
    acked.sort_by_key(|(_, _, id)| seq_of(id));
    for (channel, n, id) in acked {
        expected[channel].push((id, n.to_string()));
    }
    for (channel, target) in &targets {
        target.send_replace(expected[*channel].last().map(|(id, _)| id.clone()));
    }
    // Every client saw its channel's events.
    let mut reconnects = 0;
    let mut failed = 0;
    for (c, (channel, client)) in clients.into_iter().enumerate() {
        let seen = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .unwrap_or_else(|_| panic!("client {c} did not reach the last event"))
            .unwrap();
        let want = &expected[channel];
        if seen.events != *want {
            let at = (0..)
                .find(|i| seen.events.get(*i) != want.get(*i))
                .unwrap_or(0);
            panic!(
                "client {c} on roll-{channel}: got {} events, {} acknowledged; first difference \
                 at {at}: got {:?}, acknowledged {:?}",
                seen.events.len(),
                want.len(),
                &seen.events[at.saturating_sub(2)..(at + 3).min(seen.events.len())],
                &want[at.saturating_sub(2)..(at + 3).min(want.len())],
            );
        }
        reconnects += seen.opened - 1;
        failed += seen.failed;
    }
    let taken: usize = old
        .stderr()
        .lines()
        .filter(|l| l.contains("left in the accept queue"))
        .filter_map(|l| {
            l.split("taken=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    eprintln!(
        "rolling restart: {EVENTS} events acknowledged to the publisher after {} refused \
         connections, {} broken exchanges and statuses {:?}; {CLIENTS} clients reconnected \
         {reconnects} times after {failed} failed attempts; the old process served {taken} \
         connections from its accept queue at shutdown; the new one: {takeover}",
        log.refused, log.broken, log.statuses
    );
}
