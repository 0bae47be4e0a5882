//! Black-box tests of event ids, history and resume (`Last-Event-ID`): a concurrent soak with
//! publishers racing reconnecting clients over two workers, and the edge cases of the resume
//! rules (malformed, foreign, future and expired ids, exact replays, the position frame).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::sse_parse::Message;
use support::{epoch_of, json_of, post_json_with, seq_of, Frame, RawClient, Server, TIMEOUT};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Concurrency soak
// ---------------------------------------------------------------------------------------------

const CHANNELS: [&str; 3] = ["c0", "c1", "c2"];
const PUBLISHERS: usize = 4;
const EVENTS_PER_PUBLISHER: usize = 900;
const SOAK_DEADLINE: Duration = Duration::from_secs(40);

/// Every published event: seq → (channel, data as published).
type Log = BTreeMap<u64, (String, Value)>;

#[derive(Debug, Clone)]
struct Received {
    seq: u64,
    id: String,
    channel: String,
    data: Value,
}

#[derive(Debug, Default)]
struct ClientLog {
    index: usize,
    channels: Vec<String>,
    first_position: Option<u64>,
    received: Vec<Received>,
    max_seq: u64,
    /// The id of the last frame consumed on the current connection.
    last_id: String,
    /// `reset` events, and any other control event that should never appear here.
    unexpected: Vec<Message>,
    /// Resuming connections, by how they sent the resume id.
    by_header: usize,
    by_query: usize,
    /// Streams the server ended or aborted (slow consumer cut-offs).
    server_ends: usize,
    /// Streams that resumed from an id ahead of the shard's position frame.
    position_behind_resume: Vec<(u64, u64)>,
    workers: BTreeSet<u64>,
    timed_out: bool,
}

impl ClientLog {
    /// Records one frame of a stream that resumed from `resumed_from` (if it did).
    fn consume(
        &mut self,
        frame: Frame,
        resumed_from: Option<u64>,
        ready: &mut Option<mpsc::UnboundedSender<usize>>,
    ) {
        match frame {
            Frame::Position(id) => {
                let position = seq_of(&id);
                if resumed_from.is_none() && self.first_position.is_none() {
                    self.first_position = Some(position);
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(self.index);
                    }
                }
                if let Some(from) = resumed_from {
                    if position < from {
                        self.position_behind_resume.push((from, position));
                    }
                }
                self.last_id = id;
            }
            Frame::Event(message) => {
                if let Some(id) = &message.id {
                    self.last_id.clone_from(id);
                }
                match message.event.as_str() {
                    "connected" => {
                        let data = json_of(&message);
                        self.workers.insert(data["worker"].as_u64().unwrap());
                    }
                    "message" => {
                        let id = message.id.clone().expect("published events carry ids");
                        let envelope = json_of(&message);
                        self.max_seq = self.max_seq.max(seq_of(&id));
                        self.received.push(Received {
                            seq: seq_of(&id),
                            id,
                            channel: envelope["channel"].as_str().unwrap().to_owned(),
                            data: envelope["data"].clone(),
                        });
                    }
                    _ => self.unexpected.push(message),
                }
            }
        }
    }

    fn max_expected(&self, log: &Log) -> Option<u64> {
        let first = self.first_position?;
        log.iter()
            .rev()
            .find(|(seq, (channel, _))| **seq > first && self.channels.contains(channel))
            .map(|(seq, _)| *seq)
    }

    fn caught_up(&self, log: &Log) -> bool {
        match self.max_expected(log) {
            None => self.first_position.is_some(),
            Some(max) => self.max_seq >= max,
        }
    }
}

/// One reading client: connects, reads, drops its connection after a random number of events
/// and reconnects with the parser's last event id string (header or query, alternately), until
/// it has seen the last event published on its channels.
async fn run_client(
    server_addr: std::net::SocketAddr,
    index: usize,
    channels: Vec<String>,
    seed: u64,
    ready: mpsc::UnboundedSender<usize>,
    mut target: watch::Receiver<Option<Arc<Log>>>,
) -> ClientLog {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut log = ClientLog {
        index,
        channels: channels.clone(),
        ..ClientLog::default()
    };
    let deadline = Instant::now() + SOAK_DEADLINE;
    let query: String = channels
        .iter()
        .map(|c| format!("channel={c}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut resume: Option<String> = None;
    let mut ready = Some(ready);
    let mut reconnects = 0usize;
    'connect: loop {
        // Alternate between the header and the query parameter.
        let by_header = (index + reconnects) % 2 != 1;
        let mut target_path = format!("/events?{query}");
        let mut headers = Vec::new();
        if let Some(id) = &resume {
            if by_header {
                headers.push(("Last-Event-ID", id.as_str()));
            } else {
                target_path.push_str(&format!("&lastEventId={id}"));
            }
        }
        let resumed_from = resume.as_deref().map(seq_of);
        if resume.is_some() {
            if by_header {
                log.by_header += 1;
            } else {
                log.by_query += 1;
            }
        }
        let mut stream = RawClient::open(server_addr, &target_path, &headers, None)
            .await
            .stream();
        let mut budget = rng.usize(50..=300);
        log.last_id.clear();
        loop {
            let known = target.borrow().clone();
            if let Some(all) = known {
                if log.caught_up(&all) {
                    return log;
                }
            }
            let frame = tokio::select! {
                frame = stream.next() => frame,
                changed = target.changed() => {
                    assert!(changed.is_ok(), "target sender dropped");
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => {
                    log.timed_out = true;
                    return log;
                }
            };
            match frame {
                Ok(Some(frame)) => {
                    log.consume(frame, resumed_from, &mut ready);
                    budget = budget.saturating_sub(1);
                }
                Ok(None) | Err(_) => {
                    log.server_ends += 1;
                    if !stream.last_event_id().is_empty() {
                        resume = Some(stream.last_event_id().to_owned());
                    }
                    reconnects += 1;
                    continue 'connect;
                }
            }
            if budget == 0 && log.first_position.is_some() {
                // Drop the TCP connection mid-stream and come back. Frames already parsed were
                // dispatched (as a browser would) before the connection goes.
                for frame in stream.take_parsed() {
                    log.consume(frame, resumed_from, &mut ready);
                }
                assert_eq!(
                    stream.last_event_id(),
                    log.last_id,
                    "the parser's last event id string is the last id the client consumed"
                );
                if !log.last_id.is_empty() {
                    resume = Some(log.last_id.clone());
                }
                drop(stream);
                reconnects += 1;
                continue 'connect;
            }
        }
    }
}

async fn run_publisher(base: String, publisher: usize, seed: u64) -> Vec<(u64, String, Value)> {
    let client = reqwest::Client::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::with_capacity(EVENTS_PER_PUBLISHER);
    for n in 0..EVENTS_PER_PUBLISHER {
        let channel = CHANNELS[rng.usize(0..CHANNELS.len())];
        let data = json!({ "p": publisher, "n": n });
        let (status, answer) = post_json_with(
            &client,
            &base,
            "/api/publish",
            &json!({ "channel": channel, "data": data }),
        )
        .await;
        assert_eq!(status, 200, "publish answered {answer}");
        let seq = seq_of(answer["id"].as_str().unwrap());
        out.push((seq, channel.to_owned(), data));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_and_reconnecting_clients_get_every_event_once_in_order() {
    let server = Server::start(&["--workers", "2", "--history-size", "10000"]).await;
    let subscriptions: [&[&str]; 6] = [
        &["c0"],
        &["c1"],
        &["c2"],
        &["c0", "c1"],
        &["c1", "c2"],
        &["c2", "c0"],
    ];
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (target_tx, target_rx) = watch::channel(None::<Arc<Log>>);
    let mut clients = Vec::new();
    for (index, channels) in subscriptions.iter().enumerate() {
        let channels = channels.iter().map(|c| (*c).to_owned()).collect();
        clients.push(tokio::spawn(run_client(
            server.addr,
            index,
            channels,
            0x5eed_0000 + index as u64,
            ready_tx.clone(),
            target_rx.clone(),
        )));
    }
    drop(ready_tx);
    for _ in 0..subscriptions.len() {
        tokio::time::timeout(TIMEOUT, ready_rx.recv())
            .await
            .expect("every client connects")
            .expect("a client died before connecting");
    }

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(run_publisher(server.base.clone(), p, 0xfeed + p as u64)))
        .collect();
    let mut log = Log::new();
    for publisher in publishers {
        let mut last = 0;
        for (seq, channel, data) in publisher.await.unwrap() {
            assert!(seq > last, "one publisher's ids increase");
            last = seq;
            assert!(
                log.insert(seq, (channel, data)).is_none(),
                "seq {seq} twice"
            );
        }
    }
    assert_eq!(log.len(), PUBLISHERS * EVENTS_PER_PUBLISHER);
    target_tx.send_replace(Some(Arc::new(log.clone())));

    let mut logs = Vec::new();
    for client in clients {
        logs.push(client.await.unwrap());
    }
    drop(target_tx);

    let mut failures = Vec::new();
    let mut workers = BTreeSet::new();
    let (mut by_header, mut by_query, mut server_ends) = (0, 0, 0);
    for client in &logs {
        workers.extend(client.workers.iter().copied());
        by_header += client.by_header;
        by_query += client.by_query;
        server_ends += client.server_ends;
        if let Some(problem) = check_client(client, &log) {
            failures.push(problem);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} clients saw wrong streams:\n{}",
        failures.len(),
        logs.len(),
        failures.join("\n")
    );
    // The run exercised what it is meant to: many resumes, both ways, on both workers.
    assert!(
        by_header >= 5 && by_query >= 5,
        "too few resumes: {by_header} by header, {by_query} by query"
    );
    assert_eq!(
        workers,
        BTreeSet::from([0, 1]),
        "streams opened on both workers"
    );
    eprintln!(
        "soak: {} events, {by_header} header resumes, {by_query} query resumes, \
         {server_ends} server-ended streams",
        log.len()
    );
}

/// Checks one client's stream against the publish log; `Some(description)` on failure.
fn check_client(client: &ClientLog, log: &Log) -> Option<String> {
    let name = format!("client {} {:?}", client.index, client.channels);
    let mut problems = Vec::new();
    if client.timed_out {
        problems.push("did not catch up before the deadline".to_owned());
    }
    if !client.unexpected.is_empty() {
        problems.push(format!(
            "control events {:?}",
            client.unexpected.iter().take(3).collect::<Vec<_>>()
        ));
    }
    let Some(first) = client.first_position else {
        return Some(format!("{name}: never got a position frame"));
    };
    let expected: Vec<u64> = log
        .iter()
        .filter(|(seq, (channel, _))| **seq > first && client.channels.contains(channel))
        .map(|(seq, _)| *seq)
        .collect();
    let got: Vec<u64> = client.received.iter().map(|r| r.seq).collect();
    let mut seen = BTreeSet::new();
    let duplicates: Vec<u64> = got.iter().copied().filter(|s| !seen.insert(*s)).collect();
    if !duplicates.is_empty() {
        problems.push(format!(
            "{} duplicate(s), first {:?}",
            duplicates.len(),
            &duplicates[..duplicates.len().min(5)]
        ));
    }
    if let Some(at) = got.windows(2).position(|w| w[0] >= w[1]) {
        problems.push(format!(
            "ids not increasing at index {at}: {} then {}",
            got[at],
            got[at + 1]
        ));
    }
    let expected_set: BTreeSet<u64> = expected.iter().copied().collect();
    let missing: Vec<u64> = expected_set.difference(&seen).copied().collect();
    let extra: Vec<u64> = seen.difference(&expected_set).copied().collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} missing, first {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "{} unexpected, first {:?}",
            extra.len(),
            &extra[..extra.len().min(5)]
        ));
    }
    for r in &client.received {
        match log.get(&r.seq) {
            Some((channel, data)) if *channel == r.channel && *data == r.data => {}
            Some((channel, data)) => {
                problems.push(format!(
                    "{} carries {}:{} but {channel}:{data} was published",
                    r.id, r.channel, r.data
                ));
                break;
            }
            None => {}
        }
    }
    if !client.position_behind_resume.is_empty() {
        problems.push(format!(
            "{} resume(s) answered with a position frame behind the resume id \
             (resume id seq, position seq): {:?}",
            client.position_behind_resume.len(),
            &client.position_behind_resume[..client.position_behind_resume.len().min(5)]
        ));
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!(
            "{name} (first position {first}, {} received, {} expected): {}",
            got.len(),
            expected.len(),
            problems.join("; ")
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Opening and exact replay
// ---------------------------------------------------------------------------------------------

fn reset_data(message: &Message) -> Value {
    assert_eq!(message.event, "reset", "{message:?}");
    json_of(message)
}

#[tokio::test]
async fn a_fresh_stream_opens_with_connected_then_the_position_frame() {
    let server = Server::start(&["--workers", "1", "--retry", "2500ms"]).await;
    server.publish("a", json!(1)).await;
    server.publish("z", json!(2)).await;
    let head = server.settle().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut stream = server.stream("/events?channel=a&channel=b", &[]).await;
    let opening = stream.opening().await;
    assert_eq!(opening.retry, Some(2500));
    assert!(opening.connection_id().starts_with("s0-"), "{opening:?}");
    assert_eq!(opening.worker(), 0);
    assert_eq!(opening.connected["channels"], json!(["a", "b"]));
    assert!(opening.reset.is_none());
    assert!(opening.events.is_empty(), "no replay without a resume id");
    assert_eq!(opening.position.as_deref(), Some(head.as_str()));
    assert_eq!(stream.last_event_id(), head);
    // Then live events.
    let live = server.publish("b", json!("live")).await;
    let message = stream.event().await;
    assert_eq!(message.id.as_deref(), Some(live.id.as_str()));
    assert_eq!(json_of(&message), json!({"channel": "b", "data": "live"}));
}

#[tokio::test]
async fn a_valid_resume_replays_exactly_the_missing_events_then_the_position() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut published = Vec::new();
    for round in 0..3 {
        for channel in ["a", "b", "c"] {
            let p = server.publish(channel, json!({"round": round})).await;
            published.push((p, channel));
        }
    }
    let head = server.settle().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let from = published[1].0.id.clone(); // the second event (b, round 0)
    let expected: Vec<(String, &str, i64)> = published
        .iter()
        .enumerate()
        .filter(|(_, (p, channel))| p.seq > seq_of(&from) && *channel != "c")
        .map(|(i, (p, channel))| (p.id.clone(), *channel, (i / 3) as i64))
        .collect();
    assert_eq!(expected.len(), 4);

    let ways: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/events?channel=a&channel=b".into(),
            vec![("Last-Event-ID", &from)],
        ),
        (format!("/events?channel=a,b&lastEventId={from}"), vec![]),
        (
            format!("/events?channel=b&channel=a&last_event_id={from}"),
            vec![],
        ),
        // The header wins over the query.
        (
            "/events?channel=a&channel=b&lastEventId=junk".into(),
            vec![("Last-Event-ID", &from)],
        ),
    ];
    for (target, headers) in &ways {
        let mut stream = server.stream(target, headers).await;
        let opening = stream.opening().await;
        assert!(opening.reset.is_none(), "{target}: {:?}", opening.reset);
        let got: Vec<(String, String, i64)> = opening
            .events
            .iter()
            .map(|m| {
                let data = json_of(m);
                (
                    m.id.clone().unwrap(),
                    data["channel"].as_str().unwrap().to_owned(),
                    data["data"]["round"].as_i64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, String, i64)> = expected
            .iter()
            .map(|(id, c, r)| (id.clone(), (*c).to_owned(), *r))
            .collect();
        assert_eq!(got, want, "{target}: replay");
        assert_eq!(
            opening.position.as_deref(),
            Some(head.as_str()),
            "{target}: the position frame closes the opening"
        );
    }

    // Resuming from the head replays nothing; then live events flow.
    let mut stream = server
        .stream("/events?channel=a", &[("Last-Event-ID", &head)])
        .await;
    let opening = stream.opening().await;
    assert!(opening.events.is_empty() && opening.reset.is_none());
    assert_eq!(opening.position.as_deref(), Some(head.as_str()));
    let live = server.publish("a", json!("live")).await;
    assert_eq!(stream.event().await.id, Some(live.id));

    // The header wins the other way round too: a bad header resets even with a good query.
    let mut stream = server
        .stream(
            &format!("/events?channel=a&lastEventId={from}"),
            &[("Last-Event-ID", "junk")],
        )
        .await;
    let opening = stream.opening().await;
    let reset = opening.reset.expect("a reset for the header's junk id");
    assert_eq!(reset_data(&reset)["reason"], "malformed");
    assert_eq!(reset_data(&reset)["lastEventId"], "junk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_live_events_meet_without_gap_or_duplicate_while_publishing() {
    // Resumes land while a publisher is busy: whatever the shard's position at open, the
    // events after the resume id arrive exactly once, in order, with the position frame
    // between the replayed ones and the live ones.
    let server = Server::start(&["--workers", "2", "--history-size", "5000"]).await;
    let first = server.publish("r", json!(0)).await;
    let base = server.base.clone();
    let publisher = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut ids = Vec::new();
        for n in 1..=600 {
            let (status, answer) = post_json_with(
                &client,
                &base,
                "/api/publish",
                &json!({"channel": if n % 3 == 0 { "other" } else { "r" }, "data": n}),
            )
            .await;
            assert_eq!(status, 200);
            ids.push((answer["id"].as_str().unwrap().to_owned(), n % 3 != 0));
        }
        ids
    });
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut stream = server
            .stream("/events?channel=r", &[("Last-Event-ID", &first.id)])
            .await;
        let opening = stream.opening().await;
        assert!(opening.reset.is_none());
        let position = seq_of(opening.position.as_deref().unwrap());
        for m in &opening.events {
            let seq = seq_of(m.id.as_deref().unwrap());
            assert!(seq <= position, "replayed {seq} after position {position}");
        }
        streams.push((stream, opening));
    }
    let ids = publisher.await.unwrap();
    let wanted: Vec<String> = ids
        .iter()
        .filter(|(_, on_r)| *on_r)
        .map(|(id, _)| id.clone())
        .collect();
    let last = wanted.last().unwrap().clone();
    for (mut stream, opening) in streams {
        let position = seq_of(opening.position.as_deref().unwrap());
        let mut got: Vec<String> = opening
            .events
            .iter()
            .map(|m| m.id.clone().unwrap())
            .collect();
        let replayed = got.len();
        for m in stream.events_through(&last).await {
            let id = m.id.unwrap();
            assert!(
                seq_of(&id) > position,
                "live {id} not after position {position}"
            );
            got.push(id);
        }
        assert_eq!(
            got, wanted,
            "replayed {replayed}, position {position}: every event after the resume id once"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Resets
// ---------------------------------------------------------------------------------------------

/// Opens a stream on channel `live` with `target`/`headers` and checks its opening is a reset
/// with `reason` at position `head`, echoing `echo` as `lastEventId`.
async fn expect_reset(
    server: &Server,
    target: &str,
    headers: &[(&str, &str)],
    reason: &str,
    head: &str,
    echo: Option<&str>,
) -> RawClient {
    let mut stream = server.stream(target, headers).await;
    let opening = stream.opening().await;
    assert!(
        opening.events.is_empty(),
        "{target}: nothing before the reset: {:?}",
        opening.events
    );
    let reset = opening.reset.clone().unwrap_or_else(|| {
        panic!(
            "{target} {}: expected a reset, got {opening:?}",
            brief(headers)
        )
    });
    let data = reset_data(&reset);
    assert_eq!(
        data["reason"],
        reason,
        "{target} {}: {data}",
        brief(headers)
    );
    assert_eq!(
        reset.id.as_deref(),
        Some(head),
        "the reset's id is the current position"
    );
    match echo {
        Some(given) => assert_eq!(data["lastEventId"], given, "{data}"),
        None => assert!(data.get("lastEventId").is_none(), "{data}"),
    }
    assert_eq!(stream.last_event_id(), head);
    stream
}

fn brief(headers: &[(&str, &str)]) -> String {
    let text = format!("{headers:?}");
    text.chars().take(80).collect()
}

/// After a reset, the next frame is the next live event (no position frame).
async fn expect_live_next(stream: &mut RawClient, id: &str) {
    match stream.frame().await {
        Frame::Event(m) => assert_eq!(m.id.as_deref(), Some(id), "{m:?}"),
        Frame::Position(p) => panic!("a position frame ({p}) after a reset"),
    }
}

#[tokio::test]
async fn malformed_last_event_ids_get_a_malformed_reset_then_live_events() {
    let server = Server::start(&["--workers", "1"]).await;
    for n in 0..3 {
        server.publish("live", json!(n)).await;
    }
    let head = server.settle().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let epoch = epoch_of(&head).to_owned();
    let junk_10k = "q".repeat(10 * 1024);
    let header_ids: Vec<String> = vec![
        "abc".into(),
        "not an id, just junk!".into(),
        "7".into(),
        "x-".into(),
        "-7".into(),
        format!("{epoch}-"),
        format!("{epoch}--1"),
        format!("{epoch}-1a"),
        format!("{epoch}- 1"),
        format!("{epoch}-99999999999999999999999"),
        "ep och-1".into(),
        junk_10k.clone(),
    ];
    let mut streams = Vec::new();
    for given in &header_ids {
        let echo = (given.len() <= 256).then_some(given.as_str());
        let stream = expect_reset(
            &server,
            "/events?channel=live",
            &[("Last-Event-ID", given)],
            "malformed",
            &head,
            echo,
        )
        .await;
        streams.push(stream);
    }
    for (query, given) in [
        ("lastEventId=abc", "abc"),
        ("last_event_id=x-", "x-"),
        ("lastEventId=%C3%A9-1", "é-1"),
        ("lastEventId=a%2Bb-1", "a+b-1"),
    ] {
        let stream = expect_reset(
            &server,
            &format!("/events?channel=live&{query}"),
            &[],
            "malformed",
            &head,
            Some(given),
        )
        .await;
        streams.push(stream);
    }
    let live = server.publish("live", json!("after")).await;
    for stream in &mut streams {
        expect_live_next(stream, &live.id).await;
    }
    // A reconnect with the reset's id is a clean resume.
    let mut again = server
        .stream("/events?channel=live", &[("Last-Event-ID", &head)])
        .await;
    let opening = again.opening().await;
    assert!(opening.reset.is_none());
    assert_eq!(
        opening
            .events
            .iter()
            .map(|m| m.id.clone().unwrap())
            .collect::<Vec<_>>(),
        vec![live.id.clone()]
    );
    assert_eq!(opening.position, Some(live.id));
}

#[tokio::test]
async fn ids_from_the_future_get_an_unknown_reset() {
    let server = Server::start(&["--workers", "1"]).await;
    for n in 0..4 {
        server.publish("live", json!(n)).await;
    }
    let head = server.settle().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let epoch = epoch_of(&head).to_owned();
    let head_seq = seq_of(&head);
    let ids = [
        format!("{epoch}-{}", head_seq + 1),
        format!("{epoch}-{}", u64::MAX),
    ];
    let mut streams = Vec::new();
    for (i, given) in ids.iter().enumerate() {
        let (target, headers) = if i % 2 == 0 {
            (
                "/events?channel=live".to_owned(),
                vec![("Last-Event-ID", given.as_str())],
            )
        } else {
            (format!("/events?channel=live&lastEventId={given}"), vec![])
        };
        streams.push(expect_reset(&server, &target, &headers, "unknown", &head, Some(given)).await);
    }
    let live = server.publish("live", json!("after")).await;
    for stream in &mut streams {
        expect_live_next(stream, &live.id).await;
    }
}

#[tokio::test]
async fn ids_of_another_epoch_get_an_unknown_reset_then_this_epochs_events() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut published = Vec::new();
    for n in 0..4 {
        published.push(server.publish("live", json!(n)).await.id);
    }
    server.publish("elsewhere", json!("not mine")).await;
    let mut head = server.settle().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let epoch = epoch_of(&head).to_owned();
    let before_first = format!("{epoch}-{}", seq_of(&published[0]) - 1);
    for (i, given) in ["x-1", "zzzzzzzz-2", &format!("{epoch}0-1")]
        .into_iter()
        .enumerate()
    {
        let (target, headers) = if i % 2 == 0 {
            (
                "/events?channel=live".to_owned(),
                vec![("Last-Event-ID", given)],
            )
        } else {
            (format!("/events?channel=live&lastEventId={given}"), vec![])
        };
        let mut stream = server.stream(&target, &headers).await;
        let opening = stream.opening().await;
        assert!(opening.events.is_empty(), "{:?}", opening.events);
        let reset = opening.reset.expect("a reset first");
        let data = reset_data(&reset);
        assert_eq!(data["reason"], "unknown", "{data}");
        assert_eq!(data["lastEventId"], given, "{data}");
        // The reset points just before the catch-up, so a reconnect during it resumes it.
        assert_eq!(reset.id.as_deref(), Some(before_first.as_str()));
        let mut got = Vec::new();
        loop {
            match stream.frame().await {
                Frame::Event(m) => got.push(m.id.clone().unwrap()),
                Frame::Position(p) => {
                    assert_eq!(p, head, "the position frame ends the catch-up");
                    break;
                }
            }
        }
        assert_eq!(
            got, published,
            "every retained event of this epoch, in order"
        );
        let live = server.publish("live", json!("after")).await;
        expect_live_next(&mut stream, &live.id).await;
        published.push(live.id.clone());
        head = live.id;
    }
}

#[tokio::test]
async fn ids_older_than_the_retained_history_get_an_expired_reset() {
    let server = Server::start(&["--workers", "1", "--history-size", "3"]).await;
    let mut ids = Vec::new();
    for n in 1..=10 {
        ids.push(server.publish("c", json!(n)).await.id);
    }
    let head = server.settle().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(head, ids[9]);
    // Retained: 8, 9, 10. Resuming after 7 is complete; after 6 or earlier is not.
    let mut first = expect_reset(
        &server,
        "/events?channel=c",
        &[("Last-Event-ID", &ids[0])],
        "expired",
        &head,
        Some(&ids[0]),
    )
    .await;
    let mut sixth = expect_reset(
        &server,
        &format!("/events?channel=c&lastEventId={}", ids[5]),
        &[],
        "expired",
        &head,
        Some(&ids[5]),
    )
    .await;
    let mut seventh = server
        .stream("/events?channel=c", &[("Last-Event-ID", &ids[6])])
        .await;
    let opening = seventh.opening().await;
    assert!(opening.reset.is_none(), "{:?}", opening.reset);
    let replayed: Vec<(String, Value)> = opening
        .events
        .iter()
        .map(|m| (m.id.clone().unwrap(), json_of(m)["data"].clone()))
        .collect();
    assert_eq!(
        replayed,
        vec![
            (ids[7].clone(), json!(8)),
            (ids[8].clone(), json!(9)),
            (ids[9].clone(), json!(10)),
        ]
    );
    assert_eq!(opening.position.as_deref(), Some(head.as_str()));
    // Live events continue on all three.
    let live = server.publish("c", json!(11)).await;
    expect_live_next(&mut first, &live.id).await;
    expect_live_next(&mut sixth, &live.id).await;
    expect_live_next(&mut seventh, &live.id).await;
    // A client that follows the reset's id resumes cleanly from there.
    let mut after_reset = server
        .stream("/events?channel=c", &[("Last-Event-ID", &head)])
        .await;
    let opening = after_reset.opening().await;
    assert!(opening.reset.is_none());
    assert_eq!(
        opening
            .events
            .iter()
            .map(|m| m.id.clone().unwrap())
            .collect::<Vec<_>>(),
        vec![live.id.clone()]
    );
    // A channel that never had an event resumes from any valid id without a reset.
    let mut quiet = server
        .stream("/events?channel=quiet", &[("Last-Event-ID", &ids[0])])
        .await;
    let opening = quiet.opening().await;
    assert!(opening.reset.is_none() && opening.events.is_empty());
    assert_eq!(opening.position, Some(live.id));
}

#[tokio::test]
async fn ids_older_than_the_history_ttl_get_an_expired_reset() {
    let server = Server::start(&["--workers", "1", "--history-ttl", "200ms"]).await;
    let one = server.publish("t", json!(1)).await;
    let two = server.publish("t", json!(2)).await;
    let head = server.settle().await["lastEventId"]
        .as_str()
        .unwrap()
        .to_owned();
    // Poll until the retained events have aged out.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = server
            .stream("/events?channel=t", &[("Last-Event-ID", &one.id)])
            .await;
        let opening = stream.opening().await;
        if let Some(reset) = opening.reset {
            let data = reset_data(&reset);
            assert_eq!(data["reason"], "expired", "{data}");
            assert_eq!(reset.id.as_deref(), Some(head.as_str()));
            break;
        }
        assert_eq!(
            opening
                .events
                .iter()
                .map(|m| m.id.clone().unwrap())
                .collect::<Vec<_>>(),
            vec![two.id.clone()],
            "before expiry the replay is complete"
        );
        assert!(Instant::now() < deadline, "events never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client that saw everything before expiry missed nothing: no reset.
    let mut stream = server
        .stream("/events?channel=t", &[("Last-Event-ID", &two.id)])
        .await;
    let opening = stream.opening().await;
    assert!(opening.reset.is_none(), "{:?}", opening.reset);
    assert!(opening.events.is_empty());
}
