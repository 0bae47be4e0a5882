//! Hub tests without HTTP: shards on a current-thread runtime inside a `LocalSet`, subscriptions
//! polled directly. Covers fan-out across shards (one shared frame, no copies), joining ready
//! frames into one chunk, eviction of full queues, removal of dropped streams swept by the
//! heartbeat, heartbeat timing on paused time, the hub-wide connection limit, inbox back-pressure
//! (`Overloaded` only when a shard stalls), the shutdown `retry:`, the idle timeout and a
//! broker's new epoch.

use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::LocalSet;

use super::{
    Frame, Hub, HubError, Limits, MemoryHistory, Open, OpenError, Recv, Settings, Shard,
    Subscription, Topic, INBOX_LIMIT, MAX_BATCH_BYTES,
};
use crate::shutdown::{self, Trigger};

/// Bound on any wait for a frame. Under paused time it costs nothing.
const WAIT: Duration = Duration::from_secs(5);

fn settings(shards: usize) -> Settings {
    Settings {
        shards,
        channel_capacity: 16,
        heartbeat: Duration::from_secs(15),
        idle_timeout: None,
        max_connections: 1_000,
        retry: Duration::from_secs(3),
        policies: Vec::new(),
        ordered_source: false,
        // Tests that leave frames unread on purpose (paused time) must not meet the write timeout.
        write_timeout: Duration::from_secs(3600),
        queue_bytes: usize::MAX,
    }
}

/// A hub over an in-memory history that retains nothing (these tests are about live fan-out).
fn hub(settings: Settings) -> (Hub, Vec<super::Inbox>) {
    let none = Limits {
        capacity: 0,
        ttl: None,
    };
    Hub::new(settings, Arc::new(MemoryHistory::new(none, none)))
}

/// A hub whose shards run on the current `LocalSet`.
struct Running {
    hub: Hub,
    shards: Vec<Rc<Shard>>,
    trigger: Trigger,
}

/// Builds the hub and spawns every shard's run loop. Call inside a `LocalSet`.
fn run(settings: Settings) -> Running {
    let (hub, inboxes) = hub(settings);
    let (trigger, shutdown) = shutdown::channel();
    let shards = inboxes
        .into_iter()
        .map(|inbox| {
            let shard = Shard::new(&hub, inbox);
            tokio::task::spawn_local(shard.clone().run(shutdown.clone()));
            shard
        })
        .collect();
    Running {
        hub,
        shards,
        trigger,
    }
}

/// Runs a test body on a `LocalSet` (shards are `!Send`).
async fn local<F: Future>(body: F) -> F::Output {
    LocalSet::new().run_until(body).await
}

fn broadcast() -> Topic {
    Topic::broadcast()
}

/// Opens a stream on `topics` and takes its opening frames (the `connected` event and the
/// position), so the test starts from an empty queue.
fn open_on(shard: &Rc<Shard>, topics: &[Topic]) -> Subscription {
    let mut sub = shard
        .open(Open {
            topics,
            ..Open::default()
        })
        .unwrap();
    match poll_now(&mut sub) {
        Some(Recv::Frames(opening)) => {
            let expected = format!(
                "event: connected\nretry: 3000\ndata: {{\"connectionId\":\"{}\",\"worker\":{}",
                sub.id(),
                shard.index()
            );
            assert!(
                opening.starts_with(expected.as_bytes()),
                "{:?}",
                String::from_utf8_lossy(&opening)
            );
        }
        other => panic!("no opening frames: {other:?}"),
    }
    sub
}

/// A broadcast subscription, opening frames taken.
fn subscribe(shard: &Rc<Shard>) -> Subscription {
    open_on(shard, &[broadcast()])
}

/// The next item of a subscription, waiting at most [`WAIT`].
async fn recv(sub: &mut Subscription) -> Recv {
    tokio::time::timeout(WAIT, poll_fn(|cx| sub.poll_recv(cx)))
        .await
        .unwrap_or_else(|_| panic!("nothing for {sub:?} within {WAIT:?}"))
}

/// The next chunk of frames; panics on `End` or `Evicted`.
async fn frames(sub: &mut Subscription) -> Bytes {
    match recv(sub).await {
        Recv::Frames(bytes) => bytes,
        other => panic!("expected frames, got {other:?}"),
    }
}

/// Polls once without waiting: `None` when nothing is ready.
fn poll_now(sub: &mut Subscription) -> Option<Recv> {
    match sub.poll_recv(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(recv) => Some(recv),
        Poll::Pending => None,
    }
}

fn frame(text: &str) -> Frame {
    sse(format!("data: {text}\n\n"))
}

/// A frame with only an SSE encoding.
fn sse(bytes: impl Into<Bytes>) -> Frame {
    Frame::from_parts(bytes.into(), Bytes::new())
}

/// Publishes a ready-made frame on `topic` (the id the hub assigns is not written into it).
fn publish(hub: &Hub, topic: &Topic, frame: &Frame) -> Result<(), HubError> {
    hub.publish(topic, |_, _| frame.clone()).map(|_| ())
}

#[tokio::test]
async fn publish_reaches_every_subscriber_on_every_shard() {
    local(async {
        let running = run(settings(2));
        let mut subs = Vec::new();
        for shard in &running.shards {
            for _ in 0..3 {
                let sub = subscribe(shard);
                assert_eq!(sub.id().shard(), shard.index());
                subs.push(sub);
            }
        }
        let mut elsewhere = open_on(&running.shards[0], &[Topic::parse("other").unwrap()]);
        let opened = running.hub.snapshot().frames_delivered;

        let event = frame("hello");
        publish(&running.hub, &broadcast(), &event).unwrap();
        for sub in &mut subs {
            let got = frames(sub).await;
            assert_eq!(&got, event.sse());
            // Encoded once: every subscriber holds the very same bytes, not a copy.
            assert_eq!(got.as_ptr(), event.sse().as_ptr(), "{sub:?} got a copy");
        }
        // Each shard handles a whole inbox batch before anyone else runs, so by now shard 0 has
        // also considered the subscriber of another topic, and skipped it.
        assert!(poll_now(&mut elsewhere).is_none());

        let snapshot = running.hub.snapshot();
        assert_eq!(snapshot.total_connections, 7);
        assert_eq!(snapshot.events_published, 1);
        assert_eq!(snapshot.frames_delivered, opened + 6);
        assert_eq!(snapshot.shards[0].connections, 4);
        assert_eq!(snapshot.shards[1].connections, 3);
        assert!(snapshot.shards.iter().all(|s| s.inbox_depth == 0));
        assert_eq!(running.hub.subscribers(&broadcast()), 6);
    })
    .await;
}

#[tokio::test]
async fn the_servers_own_events_reach_streams_but_are_not_counted_as_published() {
    local(async {
        let running = run(settings(1));
        let metrics = Topic::parse("metrics").unwrap();
        let mut sub = open_on(&running.shards[0], std::slice::from_ref(&metrics));
        let receipt = running
            .hub
            .publish_own(&metrics, None, super::Payload::json("{\"cpu\":1}"))
            .unwrap();
        let got = frames(&mut sub).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains(&format!("id: {}", receipt.id)), "{text}");
        assert_eq!(running.hub.snapshot().events_published, 0);
        publish(&running.hub, &metrics, &frame("counted")).unwrap();
        assert_eq!(running.hub.snapshot().events_published, 1);
    })
    .await;
}

#[tokio::test]
async fn ready_frames_are_joined_into_one_chunk() {
    local(async {
        let running = run(settings(1));
        let mut sub = subscribe(&running.shards[0]);
        let before = running.hub.snapshot().frames_delivered;
        // Waiting registers the waker; the three publishes then land in one inbox batch.
        assert!(poll_now(&mut sub).is_none());
        for text in ["a", "b", "c"] {
            publish(&running.hub, &broadcast(), &frame(text)).unwrap();
        }
        assert_eq!(frames(&mut sub).await, "data: a\n\ndata: b\n\ndata: c\n\n");
        assert!(poll_now(&mut sub).is_none(), "everything left in one chunk");
        assert_eq!(
            running.hub.snapshot().frames_delivered,
            before + 3,
            "counted per frame, not per chunk"
        );

        // Joining stops at MAX_BATCH_BYTES; a single larger frame still goes out whole.
        let big = sse(vec![b'x'; MAX_BATCH_BYTES / 2 - 1024]);
        let huge = sse(vec![b'y'; MAX_BATCH_BYTES + 1]);
        let shard = &running.shards[0];
        for chunk in [&big, &big, &big, &huge] {
            assert_eq!(shard.fan_out(&broadcast(), chunk), 1);
        }
        assert_eq!(frames(&mut sub).await.len(), 2 * big.sse().len());
        assert_eq!(&frames(&mut sub).await, big.sse());
        assert_eq!(&frames(&mut sub).await, huge.sse());
        assert!(poll_now(&mut sub).is_none());
    })
    .await;
}

#[tokio::test]
async fn full_queue_evicts_and_counts_a_slow_consumer() {
    local(async {
        let running = run(Settings {
            channel_capacity: 4,
            ..settings(1)
        });
        let shard = &running.shards[0];
        let mut slow = subscribe(shard);
        let mut fast = subscribe(shard);
        for n in 0..5 {
            let event = frame(&n.to_string());
            publish(&running.hub, &broadcast(), &event).unwrap();
            assert_eq!(
                &frames(&mut fast).await,
                event.sse(),
                "the fast reader keeps up"
            );
        }
        // The fifth frame did not fit: the slow stream is cut off and its backlog dropped.
        assert!(matches!(poll_now(&mut slow), Some(Recv::Evicted)));
        assert!(matches!(poll_now(&mut slow), Some(Recv::Evicted)));
        let snapshot = running.hub.snapshot();
        assert_eq!(snapshot.slow_consumers_dropped, 1);
        assert_eq!(snapshot.shards[0].slow_consumers_dropped, 1);

        // It is out of the fan-out: later events neither reach it nor count it again.
        for n in 5..10 {
            publish(&running.hub, &broadcast(), &frame(&n.to_string())).unwrap();
            frames(&mut fast).await;
        }
        assert_eq!(running.hub.snapshot().slow_consumers_dropped, 1);
        drop(slow);
        assert_eq!(running.hub.snapshot().total_connections, 1);
        assert_eq!(running.hub.connections(), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn dropped_subscriptions_are_swept_by_the_heartbeat() {
    local(async {
        let running = run(Settings {
            heartbeat: Duration::from_secs(1),
            ..settings(1)
        });
        let shard = running.shards[0].clone();
        for count in [10, 100] {
            let subs: Vec<Subscription> = (0..count).map(|_| subscribe(&shard)).collect();
            assert_eq!(shard.table_len(), count);
            assert_eq!(running.hub.subscribers(&broadcast()), count);
            drop(subs);
            // Counters drop at once.
            assert_eq!(running.hub.snapshot().total_connections, 0);
            assert_eq!(running.hub.connections(), 0);
            assert_eq!(running.hub.subscribers(&broadcast()), 0);
            // One heartbeat period later nothing is left in any table.
            tokio::time::sleep(Duration::from_millis(1_001)).await;
            assert_eq!(shard.table_len(), 0, "after {count} streams");
            assert_eq!(shard.topic_count(), 0, "after {count} streams");
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn heartbeat_reaches_idle_streams_on_schedule() {
    local(async {
        let running = run(settings(1));
        let beat = crate::sse::comment("heartbeat");
        let mut sub = subscribe(&running.shards[0]);
        // Nothing before the period is over...
        let early = tokio::time::timeout(
            Duration::from_millis(14_900),
            poll_fn(|cx| sub.poll_recv(cx)),
        )
        .await;
        assert!(early.is_err(), "a frame before the first period: {early:?}");
        // ...then exactly one comment, every period.
        for _ in 0..3 {
            let got = tokio::time::timeout(
                Duration::from_millis(15_100),
                poll_fn(|cx| sub.poll_recv(cx)),
            )
            .await
            .expect("a heartbeat within one period");
            match got {
                Recv::Frames(bytes) => assert_eq!(bytes, beat),
                other => panic!("expected a heartbeat, got {other:?}"),
            }
        }

        // A stream with data waiting gets no heartbeat on top of it.
        let event = frame("pending");
        publish(&running.hub, &broadcast(), &event).unwrap();
        tokio::time::sleep(Duration::from_secs(16)).await;
        assert_eq!(&frames(&mut sub).await, event.sse());
        assert!(poll_now(&mut sub).is_none());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_gets_events_gets_no_heartbeat_and_an_idle_one_does() {
    local(async {
        let running = run(settings(1));
        let beat = crate::sse::comment("heartbeat");
        let mut sub = subscribe(&running.shards[0]);
        // An event every 5 s for three periods: each one kept the stream alive.
        for n in 0..9 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let event = frame(&n.to_string());
            publish(&running.hub, &broadcast(), &event).unwrap();
            assert_eq!(
                &frames(&mut sub).await,
                event.sse(),
                "event {n}, no heartbeat"
            );
        }
        assert!(poll_now(&mut sub).is_none());
        // Then silence: a heartbeat comes within two periods.
        let got = tokio::time::timeout(Duration::from_secs(30), poll_fn(|cx| sub.poll_recv(cx)))
            .await
            .expect("a heartbeat once the stream is idle");
        match got {
            Recv::Frames(bytes) => assert_eq!(bytes, beat),
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn connection_limit_is_hub_wide() {
    local(async {
        let running = run(Settings {
            max_connections: 3,
            ..settings(2)
        });
        let [first, second] = [&running.shards[0], &running.shards[1]];
        let a = subscribe(first);
        let _b = subscribe(first);
        let _c = subscribe(second);
        for shard in [first, second] {
            let refused = shard.open(Open {
                topics: &[broadcast()],
                ..Open::default()
            });
            assert_eq!(
                refused.err(),
                Some(OpenError::Hub(HubError::TooManyConnections))
            );
        }
        assert_eq!(running.hub.connections(), 3);
        drop(a);
        let _d = subscribe(second);
        let snapshot = running.hub.snapshot();
        assert_eq!(snapshot.total_connections, 3);
        assert_eq!(snapshot.peak_connections, 3);
        assert_eq!(snapshot.max_connections, 3);
    })
    .await;
}

#[tokio::test]
async fn normal_publishing_is_never_overloaded() {
    local(async {
        // Queues deep enough for one burst: this test is about inboxes, not slow consumers.
        let running = run(Settings {
            channel_capacity: 8_192,
            ..settings(2)
        });
        let mut subs: Vec<Subscription> = running.shards.iter().map(subscribe).collect();
        let event = frame("steady");
        // Far more publishes than INBOX_LIMIT in total, with the shards keeping up between
        // bursts (and the subscribers reading, so nobody is evicted).
        for _ in 0..50 {
            for _ in 0..4_000 {
                assert_eq!(publish(&running.hub, &broadcast(), &event), Ok(()));
            }
            let deadline = tokio::time::Instant::now() + WAIT;
            while running
                .hub
                .snapshot()
                .shards
                .iter()
                .any(|s| s.inbox_depth > 0)
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "shards stopped draining"
                );
                for sub in &mut subs {
                    while let Some(Recv::Frames(_)) = poll_now(sub) {}
                }
                tokio::task::yield_now().await;
            }
            for sub in &mut subs {
                while let Some(recv) = poll_now(sub) {
                    assert!(matches!(recv, Recv::Frames(_)), "{recv:?}");
                }
            }
        }
        let snapshot = running.hub.snapshot();
        assert_eq!(snapshot.events_published, 200_000);
        assert_eq!(snapshot.slow_consumers_dropped, 0);
    })
    .await;
}

#[tokio::test]
async fn a_stalled_shard_turns_publishes_into_overloaded() {
    local(async {
        let (hub, inboxes) = hub(settings(2));
        // Shards exist but nothing runs them yet: their inboxes only fill.
        let shards: Vec<Rc<Shard>> = inboxes.into_iter().map(|i| Shard::new(&hub, i)).collect();
        let event = frame("x");
        for _ in 0..INBOX_LIMIT {
            publish(&hub, &broadcast(), &event).unwrap();
        }
        assert_eq!(
            publish(&hub, &broadcast(), &event),
            Err(HubError::Overloaded)
        );
        let snapshot = hub.snapshot();
        assert_eq!(snapshot.events_published, INBOX_LIMIT as u64);
        // All or nothing: no shard received the refused publish, and it took no id.
        assert!(snapshot.shards.iter().all(|s| s.inbox_depth == INBOX_LIMIT));
        assert_eq!(hub.history().head(), INBOX_LIMIT as u64);

        // Once the shards run again the backlog drains and publishing resumes.
        let (_trigger, shutdown) = shutdown::channel();
        for shard in &shards {
            tokio::task::spawn_local(shard.clone().run(shutdown.clone()));
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while hub.snapshot().shards.iter().any(|s| s.inbox_depth > 0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "backlog not drained"
            );
            tokio::task::yield_now().await;
        }
        assert!(shards.iter().all(|s| s.position() == INBOX_LIMIT as u64));
        assert_eq!(publish(&hub, &broadcast(), &event), Ok(()));
    })
    .await;
}

/// Parses a lone `retry: N\n\n` frame.
fn retry_ms(bytes: &[u8]) -> u64 {
    let text = std::str::from_utf8(bytes).unwrap();
    text.strip_prefix("retry: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a lone retry frame: {text:?}"))
}

#[tokio::test]
async fn shutdown_sends_every_stream_a_jittered_retry_then_ends() {
    local(async {
        let running = run(settings(2));
        let mut subs: Vec<Subscription> = running
            .shards
            .iter()
            .flat_map(|shard| (0..4).map(move |_| subscribe(shard)))
            .collect();
        running.trigger.fire();
        let mut delays = Vec::new();
        for sub in &mut subs {
            let delay = retry_ms(&frames(sub).await);
            // The configured retry plus up to 10 s of spread.
            assert!((3_000..=13_000).contains(&delay), "retry {delay}");
            delays.push(delay);
            assert!(matches!(recv(sub).await, Recv::End));
            assert!(matches!(recv(sub).await, Recv::End), "End is final");
        }
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "jittered, not identical: {delays:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn events_accepted_before_shutdown_are_delivered_before_the_retry() {
    local(async {
        let running = run(settings(2));
        let mut subs: Vec<Subscription> = running
            .shards
            .iter()
            .flat_map(|shard| (0..2).map(move |_| subscribe(shard)))
            .collect();
        // The publish is accepted (Ok with an id, counted in eventsPublished, answered 200 over
        // HTTP) before the shutdown signal; a graceful end must not lose it.
        let event = frame("last words");
        assert_eq!(publish(&running.hub, &broadcast(), &event), Ok(()));
        running.trigger.fire();
        for sub in &mut subs {
            let mut bytes = Vec::new();
            loop {
                match recv(sub).await {
                    Recv::Frames(chunk) => bytes.extend_from_slice(&chunk),
                    Recv::End => break,
                    Recv::Evicted => panic!("{sub:?} evicted"),
                }
            }
            assert!(
                bytes.starts_with(event.sse()),
                "{sub:?} never got the accepted event, only {:?}",
                String::from_utf8_lossy(&bytes)
            );
            retry_ms(&bytes[event.sse().len()..]);
        }
    })
    .await;
}

#[tokio::test]
async fn idle_timeout_ends_quiet_streams() {
    local(async {
        let running = run(Settings {
            idle_timeout: Some(Duration::from_millis(100)),
            ..settings(1)
        });
        let mut sub = subscribe(&running.shards[0]);
        // The idle clock runs on real time; WAIT bounds it.
        assert_eq!(frames(&mut sub).await, crate::sse::comment("idle timeout"));
        assert!(matches!(recv(&mut sub).await, Recv::End));
    })
    .await;
}

#[tokio::test]
async fn a_held_stream_that_fails_gets_only_the_hint_not_the_live_events_behind_it() {
    local(async {
        let running = run(settings(1));
        let shard = &running.shards[0];
        let topics = [broadcast()];
        let (mut sub, held) = shard
            .open_held(&Open {
                topics: &topics,
                ..Open::default()
            })
            .unwrap();
        publish(&running.hub, &broadcast(), &frame("live")).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            poll_now(&mut sub).is_none(),
            "nothing is released while held"
        );
        shard.fail(held);
        let text = String::from_utf8_lossy(&frames(&mut sub).await).into_owned();
        assert!(!text.contains("data: live"), "{text:?}");
        assert!(text.starts_with("retry: "), "{text:?}");
        assert!(sub.is_failed());
    })
    .await;
}

/// Frames a reader has taken so far, and a signal each time it takes more.
#[derive(Default)]
struct Progress {
    frames: std::cell::Cell<usize>,
    notify: tokio::sync::Notify,
}

/// Spawns a task per subscription that reads it to its end, as a connection task does; each
/// returns the texts of its frames' `data:` lines in order. The first one reports its progress.
fn readers(
    subs: Vec<Subscription>,
    first: Rc<Progress>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    subs.into_iter()
        .enumerate()
        .map(|(n, mut sub)| {
            let progress = (n == 0).then(|| first.clone());
            tokio::task::spawn_local(async move {
                let mut got = Vec::new();
                loop {
                    match poll_fn(|cx| sub.poll_recv(cx)).await {
                        Recv::Frames(bytes) => got.extend(
                            String::from_utf8_lossy(&bytes)
                                .lines()
                                .filter_map(|line| line.strip_prefix("data: "))
                                .map(str::to_owned),
                        ),
                        Recv::End | Recv::Evicted => return got,
                    }
                    if let Some(progress) = &progress {
                        progress.frames.set(got.len());
                        progress.notify.notify_one();
                    }
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn fan_out_wakes_are_paced_so_a_publish_in_between_joins_the_writes_still_to_come() {
    local(async {
        let running = run(Settings {
            channel_capacity: 256,
            ..settings(1)
        });
        let shard = running.shards[0].clone();
        // Several batches of wakes (64 each) per fan-out.
        let count = 300;
        let first = Rc::new(Progress::default());
        let tasks = readers(
            (0..count).map(|_| subscribe(&shard)).collect(),
            first.clone(),
        );
        let before = running.hub.snapshot().shards[0].clone();
        // A publisher in lockstep with the first stream, as one that publishes again as soon as
        // it is answered: each event follows the previous one's first delivery.
        let events = 20;
        for n in 0..events {
            publish(&running.hub, &broadcast(), &frame(&n.to_string())).unwrap();
            while first.frames.get() <= n {
                tokio::time::timeout(WAIT, first.notify.notified())
                    .await
                    .expect("the first stream gets each event");
            }
        }
        // Everything arrives, in order, to every stream; then the shutdown ends the streams.
        tokio::time::sleep(Duration::from_millis(200)).await;
        running.trigger.fire();
        let expected: Vec<String> = (0..events).map(|n| n.to_string()).collect();
        for task in tasks {
            let got = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
            assert_eq!(got, expected);
        }
        let after = running.hub.snapshot().shards[0].clone();
        let frames = after.frames_delivered - before.frames_delivered;
        let writes = after.writes - before.writes;
        // The closing retry is one more frame and one more write per stream.
        assert_eq!(frames, (events as u64 + 1) * count as u64);
        // Unpaced, every stream is written before the publisher's next turn: one write per frame.
        assert!(
            writes * 4 < frames * 3,
            "frames were not joined: {writes} writes for {frames} frames"
        );
    })
    .await;
}

#[tokio::test]
async fn a_new_epoch_ends_every_stream_and_starts_the_shards_sequence_over() {
    local(async {
        let running = run(Settings {
            ordered_source: true,
            ..settings(2)
        });
        let hub = &running.hub;
        let mut subs: Vec<Subscription> = running.shards.iter().map(subscribe).collect();
        let topics = [broadcast()];
        let (_held_sub, held) = running.shards[0]
            .open_held(&Open {
                topics: &topics,
                ..Open::default()
            })
            .unwrap();
        let old = frame("old epoch");
        for seq in 1..=3 {
            hub.deliver(seq, &broadcast(), &old).unwrap();
        }
        for sub in &mut subs {
            let mut bytes = Vec::new();
            while bytes.len() < 3 * old.sse().len() {
                bytes.extend_from_slice(&frames(sub).await);
            }
            assert_eq!(bytes, old.sse().repeat(3));
        }
        hub.start_epoch(0).await;
        // Applied on every shard when it resolves: streams told to reconnect and ended, the
        // held one too, and every shard back at the start of the new sequence.
        assert!(!held.is_open());
        assert!(running.shards.iter().all(|s| s.position() == 0));
        for sub in &mut subs {
            retry_ms(&frames(sub).await);
            assert!(matches!(recv(sub).await, Recv::End));
        }
        // The new epoch's first seq reaches a stream opened after the switch, and is not taken
        // for one already applied.
        let mut fresh = subscribe(&running.shards[1]);
        let new = frame("new epoch");
        hub.deliver(1, &broadcast(), &new).unwrap();
        assert_eq!(frames(&mut fresh).await, new.sse());
    })
    .await;
}
