//! Black-box tests of what a client gets across a restart of the memory store: a new epoch, so
//! an id of the previous run is answered with a `reset` followed by every event of the new run
//! still retained on the stream's channels, then live events.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::{epoch_of, Frame, Server};

#[tokio::test]
async fn after_a_restart_an_old_id_gets_a_reset_then_the_new_runs_events() {
    let first = Server::start(&["--workers", "2"]).await;
    let old = first.publish("news", json!("before the restart")).await;
    drop(first);

    let second = Server::start(&["--workers", "2"]).await;
    let mut published = Vec::new();
    for n in 0..3 {
        published.push(second.publish("news", json!(n)).await.id);
    }
    second.publish("other", json!("not on this stream")).await;
    assert_ne!(epoch_of(&old.id), epoch_of(&published[0]), "a new epoch");
    second.settle().await;

    let mut stream = second
        .stream("/events?channel=news", &[("Last-Event-ID", &old.id)])
        .await;
    let opening = stream.opening().await;
    let reset = opening.reset.expect("a reset");
    assert!(reset.data.contains("\"unknown\""), "{reset:?}");
    let mut got = Vec::new();
    while let Frame::Event(m) = stream.frame().await {
        got.push(m.id.clone().unwrap());
    }
    assert_eq!(got, published, "the three events of the new run, in order");
    let live = second.publish("news", json!("live")).await;
    match stream.frame().await {
        Frame::Event(m) => assert_eq!(m.id.as_deref(), Some(live.id.as_str())),
        Frame::Position(p) => panic!("a second position frame {p}"),
    }
}
