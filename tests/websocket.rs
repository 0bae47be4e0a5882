//! Black-box tests of the WebSocket transport (`GET /ws`) with a real client (tokio-tungstenite)
//! and, for what a client library would never send, raw frames over TCP: JSON messages with ids
//! and channels, subscriptions by message, resume with `lastEventId`, keep-alive pings, handshake
//! and protocol errors, auth, slow consumers and shutdown.

#![allow(clippy::unwrap_used)]

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{Server, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(server: &Server, query: &str) -> Ws {
    let url = format!("ws://{}/ws{query}", server.addr);
    let (ws, response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake accepted");
    assert_eq!(response.status(), 101);
    ws
}

/// The next message of any kind, within the frame timeout.
async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("a message in time")
        .expect("the connection is open")
        .expect("a valid frame")
}

/// The next text message as JSON, skipping pings and pongs.
async fn json(ws: &mut Ws) -> Value {
    loop {
        match next(ws).await {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON text"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads the opening (`connected`, then `position`) and returns the connected data and the
/// position id.
async fn opening(ws: &mut Ws) -> (Value, String) {
    let connected = json(ws).await;
    assert_eq!(connected["event"], "connected", "{connected}");
    let position = json(ws).await;
    assert_eq!(position["event"], "position", "{position}");
    (
        connected["data"].clone(),
        position["id"].as_str().unwrap().to_owned(),
    )
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// Waits for the close frame and returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn events_arrive_as_json_with_ids_channels_and_data() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut ws = connect(&server, "?channel=a&channel=b").await;
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
    let mut ws = connect(&server, "?channel=a").await;
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
    let mut ws = connect(
        &server,
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

    // A malformed id is answered in-band with a reset carrying the current position.
    let mut lost = connect(&server, "?channel=r&lastEventId=nonsense").await;
    assert_eq!(json(&mut lost).await["event"], "connected");
    let reset = json(&mut lost).await;
    assert_eq!(reset["event"], "reset");
    assert_eq!(reset["data"]["reason"], "malformed");
    assert_eq!(reset["id"], json!(live.id));
}

#[tokio::test]
async fn heartbeats_are_pings_and_client_pings_get_pongs() {
    let server = Server::start(&["--heartbeat-interval", "300ms"]).await;
    let mut ws = connect(&server, "?channel=a").await;
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
async fn raw_request(server: &Server, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Error answers carry Content-Length; read until the body is complete.
    loop {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            assert!(n > 0, "connection closed inside the head: {text}");
            continue;
        };
        let status: u16 = text[9..12].parse().unwrap();
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
        if status == 101 || body.len() >= length || n == 0 {
            return (status, text);
        }
    }
}

fn upgrade_request(query: &str, extra: &str) -> String {
    format!(
        "GET /ws{query} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn handshake_errors_are_plain_http_errors() {
    let server = Server::start(&["--cors-origin", "http://good.example"]).await;
    let good = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    let (status, text) = raw_request(&server, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 426, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{text}"
    );
    assert!(text.contains("\"error\""), "{text}");

    let old = "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(raw_request(&server, &upgrade_request("", old)).await.0, 426);

    let bad_key = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n";
    assert_eq!(
        raw_request(&server, &upgrade_request("", bad_key)).await.0,
        400
    );

    let (status, text) = raw_request(&server, &upgrade_request("?channel=bad%20name", good)).await;
    assert_eq!(status, 400, "{text}");

    let evil = format!("{good}Origin: http://evil.example\r\n");
    let (status, text) = raw_request(&server, &upgrade_request("", &evil)).await;
    assert_eq!(status, 403, "{text}");
    let allowed = format!("{good}Origin: http://good.example\r\n");
    let (status, text) = raw_request(&server, &upgrade_request("", &allowed)).await;
    assert_eq!(status, 101, "{text}");
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
}

/// A masked client frame.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Opens a raw WebSocket (handshake by hand) and returns the stream after the 101 head.
async fn raw_ws(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let good = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    stream
        .write_all(upgrade_request("?channel=a", good).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
}

/// Reads server frames until a close frame and returns its code.
async fn raw_close_code(stream: &mut TcpStream) -> u16 {
    loop {
        let mut header = [0u8; 2];
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut header))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(header[1] & 0x80, 0, "server frames are unmasked");
        let len = match header[1] & 0x7F {
            126 => {
                let mut ext = [0u8; 2];
                stream.read_exact(&mut ext).await.unwrap();
                usize::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                stream.read_exact(&mut ext).await.unwrap();
                usize::try_from(u64::from_be_bytes(ext)).unwrap()
            }
            short => usize::from(short),
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        if header[0] & 0x0F == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test]
async fn protocol_errors_close_with_the_right_code_and_hurt_no_one_else() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut bystander = connect(&server, "?channel=a").await;
    opening(&mut bystander).await;

    // Unmasked client frame: protocol error.
    let mut raw = raw_ws(&server).await;
    raw.write_all(b"\x81\x02hi").await.unwrap();
    assert_eq!(raw_close_code(&mut raw).await, 1002);

    // A binary message: not accepted.
    let mut ws = connect(&server, "?channel=a").await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1003);

    // Invalid UTF-8 in a text frame.
    let mut raw = raw_ws(&server).await;
    raw.write_all(&client_frame(0x81, &[0xff, 0xfe]))
        .await
        .unwrap();
    assert_eq!(raw_close_code(&mut raw).await, 1007);

    // A message over the limit, refused from its header.
    let mut raw = raw_ws(&server).await;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 20).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    raw.write_all(&header).await.unwrap();
    assert_eq!(raw_close_code(&mut raw).await, 1009);

    // The client's own close is echoed.
    let mut ws = connect(&server, "?channel=a").await;
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
    let mut fast = connect(&server, "?channel=a").await;
    opening(&mut fast).await;
    // A raw client that completes the handshake and then never reads again.
    let stalled = support::connect_small_window(server.addr).await;
    let mut stalled = stalled;
    let good = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    stalled
        .write_all(upgrade_request("?channel=a", good).as_bytes())
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
    let mut ws = connect(&server, &format!("?channel=a&token={token}")).await;
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
    let mut bystander = connect(&server, "?channel=a").await;
    opening(&mut bystander).await;
    let mut raw = raw_ws(&server).await;
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
async fn fill_history(server: &support::Server, n: usize) -> String {
    let http = support::http();
    let big = "x".repeat(4096);
    let mut first = String::new();
    for i in 0..n {
        let answer: Value = http
            .post(server.url("/api/publish"))
            .json(&json!({"channel": "h", "data": big}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if i == 0 {
            first = answer["id"].as_str().unwrap().to_owned();
        }
    }
    first.rsplit_once('-').unwrap().0.to_owned()
}

/// Reads server frames until EOF; returns `(opcode, payload)` of each and how the read ended.
async fn read_to_eof(stream: &mut TcpStream) -> (Vec<(u8, Vec<u8>)>, Option<std::io::ErrorKind>) {
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 65536]);
    let error = loop {
        match tokio::time::timeout(TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) => break None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => break Some(e.kind()),
            Err(_) => panic!("no end of stream in time"),
        }
    };
    let (mut frames, mut at) = (Vec::new(), 0);
    while at + 2 <= buf.len() {
        let op = buf[at] & 0x0F;
        let (len, header) = match buf[at + 1] & 0x7F {
            126 => (
                usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]])),
                4,
            ),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[at + 2..at + 10]);
                (usize::try_from(u64::from_be_bytes(b)).unwrap(), 10)
            }
            short => (usize::from(short), 2),
        };
        if at + header + len > buf.len() {
            break;
        }
        frames.push((op, buf[at + header..at + header + len].to_vec()));
        at += header + len;
    }
    (frames, error)
}

/// Completes a WebSocket handshake by hand on `stream`.
async fn handshake_on(mut stream: TcpStream, query: &str) -> TcpStream {
    let good = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    stream
        .write_all(upgrade_request(query, good).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
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
    let mut raw = raw_ws(&server).await;
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
