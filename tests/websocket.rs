//! Black-box tests of the WebSocket transport (`GET /ws`) with a real client (tokio-tungstenite)
//! and, for what a client library would never send, raw frames over TCP: JSON messages with ids
//! and channels, subscriptions by message, resume with `lastEventId`, keep-alive pings, handshake
//! and protocol errors, auth, slow consumers and shutdown.

#![allow(clippy::unwrap_used)]

mod support;

use futures_util::SinkExt;
use serde_json::json;
use support::ws::{
    client_frame, close_code, connect_ws, handshake_on, json, next, opening, raw_close_code,
    raw_ws, read_to_eof, send, upgrade, upgrade_request, GOOD_HANDSHAKE,
};
use support::{epoch_of, RawClient, Server, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn events_arrive_as_json_with_ids_channels_and_data() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut ws = connect_ws(server.addr, "?channel=a&channel=b").await;
    let (connected, _) = opening(&mut ws).await;
    assert!(connected["connectionId"].as_str().unwrap().starts_with('s'));
    assert_eq!(connected["channels"], json!(["a", "b"]));

    let a = server.publish("a", json!({"n": 1, "s": "x\ny"})).await;
    let named = server
        .publish_body(&json!({"channel": "b", "event": "update", "data": [1, 2]}))
        .await;
    let (status, text) = server
        .post_text("/api/publish?channel=b", "plain\ntext")
        .await;
    assert_eq!(status, 200, "{text}");
    server.publish("c", json!("not subscribed")).await;

    assert_eq!(
        json(&mut ws).await,
        json!({"id": a.id, "channel": "a", "event": "message", "data": {"n": 1, "s": "x\ny"}})
    );
    assert_eq!(
        json(&mut ws).await,
        json!({"id": named.id, "channel": "b", "event": "update", "data": [1, 2]})
    );
    assert_eq!(
        json(&mut ws).await,
        json!({"id": text["id"], "channel": "b", "event": "message", "data": "plain\ntext"})
    );
    // `c` never arrives: the next message is the one published after it.
    let last = server.publish("a", json!("last")).await;
    assert_eq!(json(&mut ws).await["id"], json!(last.id));
}

#[tokio::test]
async fn subscriptions_change_by_message_and_bad_messages_get_an_error_reply() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut ws = connect_ws(server.addr, "?channel=a").await;
    opening(&mut ws).await;

    send(&mut ws, json!({"action": "subscribe", "channel": "c"})).await;
    assert_eq!(
        json(&mut ws).await,
        json!({"event": "subscribed", "data": {"channel": "c"}})
    );
    let c = server.publish("c", json!("for c")).await;
    assert_eq!(c.clients, 1);
    assert_eq!(json(&mut ws).await["id"], json!(c.id));

    send(&mut ws, json!({"action": "unsubscribe", "channels": ["c"]})).await;
    assert_eq!(json(&mut ws).await["event"], "unsubscribed");
    server.publish("c", json!("not any more")).await;
    let marker = server.publish("a", json!("marker")).await;
    assert_eq!(json(&mut ws).await["id"], json!(marker.id));

    for (bad, status) in [
        (json!("not an object"), 400),
        (json!({"action": "dance", "channel": "a"}), 400),
        (json!({"action": "subscribe", "channel": "bad name"}), 400),
        (json!({"action": "subscribe"}), 400),
        (
            json!({"action": "unsubscribe", "channels": (0..300).map(|n| format!("c{n}")).collect::<Vec<_>>()}),
            400,
        ),
    ] {
        send(&mut ws, bad.clone()).await;
        let reply = json(&mut ws).await;
        assert_eq!(reply["event"], "error", "{bad} → {reply}");
        assert_eq!(reply["data"]["status"], status, "{bad} → {reply}");
    }
    // The connection survives bad messages.
    let after = server.publish("a", json!("still here")).await;
    assert_eq!(json(&mut ws).await["id"], json!(after.id));
}

#[tokio::test]
async fn resume_with_last_event_id_replays_exactly_what_was_missed() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(server.publish("r", json!(n)).await);
    }
    // Both workers have applied all five, so wherever the connection lands, they come as the
    // replay (a worker still behind would send the last ones live, after the position).
    server.settle().await;
    let mut ws = connect_ws(
        server.addr,
        &format!("?channel=r&lastEventId={}", published[1].id),
    )
    .await;
    assert_eq!(json(&mut ws).await["event"], "connected");
    for expected in &published[2..] {
        assert_eq!(json(&mut ws).await["id"], json!(expected.id));
    }
    let position = json(&mut ws).await;
    assert_eq!(
        position,
        json!({"id": published[4].id, "event": "position"})
    );
    let live = server.publish("r", json!("live")).await;
    assert_eq!(json(&mut ws).await["id"], json!(live.id));

    // A malformed id is answered in-band with a reset carrying the current position: that of
    // the worker the connection lands on, so both must have applied the live event first.
    server.settle().await;
    let mut lost = connect_ws(server.addr, "?channel=r&lastEventId=nonsense").await;
    assert_eq!(json(&mut lost).await["event"], "connected");
    let reset = json(&mut lost).await;
    assert_eq!(reset["event"], "reset");
    assert_eq!(reset["data"]["reason"], "malformed");
    assert_eq!(reset["id"], json!(live.id));
}

#[tokio::test]
async fn heartbeats_are_pings_and_client_pings_get_pongs() {
    let server = Server::start(&["--heartbeat-interval", "300ms"]).await;
    let mut ws = connect_ws(server.addr, "?channel=a").await;
    opening(&mut ws).await;
    // The first message after the opening is the heartbeat ping.
    match next(&mut ws).await {
        Message::Ping(payload) => assert!(payload.is_empty()),
        other => panic!("expected a ping, got {other:?}"),
    }
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    loop {
        match next(&mut ws).await {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Message::Ping(_) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

/// Sends a raw HTTP request and returns the status line and the whole response text.
#[tokio::test]
async fn handshake_errors_are_plain_http_errors() {
    let server = Server::start(&["--cors-origin", "http://good.example"]).await;
    let good = GOOD_HANDSHAKE;

    let mut plain = RawClient::request(server.addr, "GET", "/ws", &[], b"").await;
    assert_eq!(plain.status, 426, "{:?}", plain.headers);
    assert_eq!(
        plain.header("sec-websocket-version"),
        Some("13"),
        "{:?}",
        plain.headers
    );
    let body = plain.json().await;
    assert!(body["error"].is_string(), "{body}");

    let old = "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(upgrade(server.addr, "", old).await.status, 426);

    let bad_key = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n";
    assert_eq!(upgrade(server.addr, "", bad_key).await.status, 400);

    let mut bad_channel = upgrade(server.addr, "?channel=bad%20name", good).await;
    let body = bad_channel.json().await;
    assert_eq!(bad_channel.status, 400, "{body}");

    let evil = format!("{good}Origin: http://evil.example\r\n");
    let mut refused = upgrade(server.addr, "", &evil).await;
    let body = refused.json().await;
    assert_eq!(refused.status, 403, "{body}");
    let allowed = format!("{good}Origin: http://good.example\r\n");
    let accepted = upgrade(server.addr, "", &allowed).await;
    assert_eq!(accepted.status, 101, "{:?}", accepted.headers);
    assert_eq!(
        accepted.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{:?}",
        accepted.headers
    );
}

#[tokio::test]
async fn protocol_errors_close_with_the_right_code_and_hurt_no_one_else() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut bystander = connect_ws(server.addr, "?channel=a").await;
    opening(&mut bystander).await;

    // Unmasked client frame: protocol error.
    let mut raw = raw_ws(server.addr).await;
    raw.write_all(b"\x81\x02hi").await.unwrap();
    assert_eq!(raw_close_code(&mut raw).await, 1002);

    // A binary message: not accepted.
    let mut ws = connect_ws(server.addr, "?channel=a").await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1003);

    // Invalid UTF-8 in a text frame.
    let mut raw = raw_ws(server.addr).await;
    raw.write_all(&client_frame(0x81, &[0xff, 0xfe]))
        .await
        .unwrap();
    assert_eq!(raw_close_code(&mut raw).await, 1007);

    // A message over the limit, refused from its header.
    let mut raw = raw_ws(server.addr).await;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 20).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    raw.write_all(&header).await.unwrap();
    assert_eq!(raw_close_code(&mut raw).await, 1009);

    // The client's own close is echoed.
    let mut ws = connect_ws(server.addr, "?channel=a").await;
    ws.close(None).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1000);

    let event = server.publish("a", json!("still delivered")).await;
    assert_eq!(json(&mut bystander).await["id"], json!(event.id));
}

#[tokio::test]
async fn shutdown_closes_with_going_away() {
    let mut process = Server::spawn(&["--metrics-interval", "1h"]);
    let url = format!("ws://{}/ws?channel=a", process.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    opening(&mut ws).await;
    process.signal("TERM");
    assert_eq!(close_code(&mut ws).await, 1001);
    let status = process
        .wait_exit(TIMEOUT)
        .await
        .expect("exits after the drain");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_reader_that_stops_is_cut_off_and_the_others_keep_up() {
    let server = Server::start(&["--workers", "1", "--channel-capacity", "16"]).await;
    let mut fast = connect_ws(server.addr, "?channel=a").await;
    opening(&mut fast).await;
    // A raw client that completes the handshake and then never reads again.
    let stalled = support::connect_small_window(server.addr).await;
    let mut stalled = stalled;
    stalled
        .write_all(upgrade_request("?channel=a", GOOD_HANDSHAKE).as_bytes())
        .await
        .unwrap();

    let big = "x".repeat(16 * 1024);
    for _ in 0..200 {
        let last = server.publish("a", json!(big)).await.id;
        // The fast reader reads as it goes.
        let got = json(&mut fast).await;
        assert_eq!(got["id"], json!(last));
    }
    server
        .wait_stats_within(TIMEOUT, "the stalled reader is evicted", |s| {
            s["slowConsumersDropped"].as_u64() >= Some(1) && s["totalConnections"] == 1
        })
        .await;
    // The fast reader is untouched.
    let after = server.publish("a", json!("after")).await;
    assert_eq!(json(&mut fast).await["id"], json!(after.id));
}

#[tokio::test]
async fn auth_required_applies_to_websockets_and_their_subscriptions() {
    let server = Server::start(&["--auth", "required", "--jwt-secret", support::jwt::SECRET]).await;
    let url = format!("ws://{}/ws?channel=a", server.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let token = support::jwt::hs256(&support::jwt::claims("alice", &["a", "b"], &[]));
    let mut ws = connect_ws(server.addr, &format!("?channel=a&token={token}")).await;
    opening(&mut ws).await;
    send(&mut ws, json!({"action": "subscribe", "channel": "secret"})).await;
    let reply = json(&mut ws).await;
    assert_eq!(reply["event"], "error", "{reply}");
    assert_eq!(reply["data"]["status"], 403, "{reply}");
    send(&mut ws, json!({"action": "subscribe", "channel": "b"})).await;
    assert_eq!(json(&mut ws).await["event"], "subscribed");
}

#[tokio::test]
async fn a_client_that_floods_pings_without_reading_is_cut_off() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut bystander = connect_ws(server.addr, "?channel=a").await;
    opening(&mut bystander).await;
    let mut raw = raw_ws(server.addr).await;
    // Thousands of pings, never reading a pong: the server must not queue pongs forever.
    let ping = client_frame(0x89, &[b'p'; 100]);
    let mut burst = Vec::new();
    for _ in 0..64 {
        burst.extend_from_slice(&ping);
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    let cut_off = loop {
        if std::time::Instant::now() > deadline {
            break false;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(1), raw.write_all(&burst)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break true,
            // Our own send buffer is full because the server stopped reading: also fine, as
            // long as the server then drops us; keep trying until the write errors.
            Err(_) => {}
        }
    };
    assert!(cut_off, "the flooding client was never disconnected");
    let event = server.publish("a", json!("others unaffected")).await;
    assert_eq!(json(&mut bystander).await["id"], json!(event.id));
}

/// Publishes `n` events of 4 KiB on channel `h`; returns the epoch of their ids.
async fn fill_history(server: &Server, n: usize) -> String {
    let big = "x".repeat(4096);
    let first = server.publish("h", json!(big)).await;
    for _ in 1..n {
        server.publish("h", json!(big)).await;
    }
    epoch_of(&first.id).to_owned()
}

#[tokio::test]
async fn input_after_a_protocol_error_is_dropped_not_buffered() {
    let server = Server::spawn(&["--workers", "1", "--metrics-interval", "1h"]);
    let epoch = fill_history(&server, 500).await;
    let before = server.rss_kib();
    // A client that does not read its 2 MiB replay keeps the server's writer blocked.
    let stream = support::connect_small_window(server.addr).await;
    let mut ws = handshake_on(stream, &format!("?channel=h&lastEventId={epoch}-0")).await;
    ws.write_all(b"\x81\x02hi").await.unwrap(); // unmasked: a protocol error
    let junk = vec![0u8; 1 << 20];
    let mut sent = 0usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline && sent < 200 << 20 {
        match tokio::time::timeout(std::time::Duration::from_secs(2), ws.write_all(&junk)).await {
            Ok(Ok(())) => sent += junk.len(),
            _ => break,
        }
    }
    let after = server.rss_kib();
    assert!(
        after < before + 32 * 1024,
        "{} MiB sent after the error grew the server from {} to {} MiB",
        sent >> 20,
        before >> 10,
        after >> 10
    );
}

#[tokio::test]
async fn a_client_close_then_fin_gets_the_close_echo_and_nothing_after_it() {
    let server = Server::spawn(&["--workers", "1", "--metrics-interval", "1h"]);
    let epoch = fill_history(&server, 200).await;
    let stream = support::connect_small_window(server.addr).await;
    let mut ws = handshake_on(stream, &format!("?channel=h&lastEventId={epoch}-0")).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    ws.write_all(&client_frame(0x88, &[0x03, 0xE8]))
        .await
        .unwrap();
    // A command after our close must not be applied or answered (RFC 6455 §5.5.1).
    let late = json!({"action": "subscribe", "channel": "late"}).to_string();
    ws.write_all(&client_frame(0x81, late.as_bytes()))
        .await
        .unwrap();
    ws.shutdown().await.unwrap();
    let (frames, error) = read_to_eof(&mut ws).await;
    assert_eq!(error, None, "the connection was reset instead of closed");
    let close = frames.iter().position(|(op, _)| *op == 0x8);
    let close = close.unwrap_or_else(|| panic!("no close echo among {} frames", frames.len()));
    assert!(frames[close].1.starts_with(&[0x03, 0xE8]));
    assert_eq!(close, frames.len() - 1, "frames after the close");
}

#[tokio::test]
async fn a_client_that_pipelines_hundreds_of_commands_gets_every_reply() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut raw = raw_ws(server.addr).await;
    // 300 commands in one write: all land in one read on the server.
    let mut burst = Vec::new();
    for n in 0..300 {
        let command = json!({"action": "unsubscribe", "channel": format!("c{n}")}).to_string();
        burst.extend(client_frame(0x81, command.as_bytes()));
    }
    raw.write_all(&burst).await.unwrap();
    let mut replies = 0;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while replies < 300 {
        let n = tokio::time::timeout(TIMEOUT, raw.read(&mut chunk))
            .await
            .expect("replies in time")
            .expect("the connection stays up");
        assert!(n > 0, "the server closed after {replies} replies");
        buf.extend_from_slice(&chunk[..n]);
        replies = String::from_utf8_lossy(&buf)
            .matches("\"unsubscribed\"")
            .count();
    }
}
