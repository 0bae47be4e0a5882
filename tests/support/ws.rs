//! The WebSocket side of the harness: a real client (tokio-tungstenite) for what a browser
//! would do, and raw frames over TCP for what a client library would never send (unmasked or
//! invalid frames, a handshake by hand on a socket with a tiny receive buffer, reading every
//! frame until EOF).

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::sse::{connect, RawClient};
use super::TIMEOUT;

/// The `Sec-WebSocket-Version` and `Sec-WebSocket-Key` lines of a valid handshake (the key is
/// RFC 6455's example, so the expected accept value is the RFC's too).
pub const GOOD_HANDSHAKE: &str =
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Sends `upgrade_request(query, extra)` on a new connection and reads the response head.
pub async fn upgrade(addr: SocketAddr, query: &str, extra: &str) -> RawClient {
    let mut stream = connect(addr).await;
    stream
        .write_all(upgrade_request(query, extra).as_bytes())
        .await
        .expect("write the upgrade request");
    RawClient::read_response(stream, false).await
}

/// A WebSocket client connection (tokio-tungstenite).
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `ws://addr/ws<query>` with a real client and checks the 101.
pub async fn connect_ws(addr: SocketAddr, query: &str) -> Ws {
    let url = format!("ws://{addr}/ws{query}");
    let (ws, response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake accepted");
    assert_eq!(response.status(), 101);
    ws
}

/// The next message of any kind, within the frame timeout.
pub async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("a message in time")
        .expect("the connection is open")
        .expect("a valid frame")
}

/// The next text message as JSON, skipping pings and pongs.
pub async fn json(ws: &mut Ws) -> Value {
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
pub async fn opening(ws: &mut Ws) -> (Value, String) {
    let connected = json(ws).await;
    assert_eq!(connected["event"], "connected", "{connected}");
    let position = json(ws).await;
    assert_eq!(position["event"], "position", "{position}");
    (
        connected["data"].clone(),
        position["id"].as_str().unwrap().to_owned(),
    )
}

/// Sends `value` as a text message.
pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// Waits for the close frame and returns its code.
pub async fn close_code(ws: &mut Ws) -> u16 {
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

/// A WebSocket upgrade request for `/ws<query>`, with `extra` header lines.
pub fn upgrade_request(query: &str, extra: &str) -> String {
    format!(
        "GET /ws{query} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\n"
    )
}

/// A masked client frame.
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Opens a raw WebSocket on `?channel=a` (handshake by hand) and returns the stream after the
/// 101 head.
pub async fn raw_ws(addr: SocketAddr) -> TcpStream {
    handshake_on(connect(addr).await, "?channel=a").await
}

/// Reads server frames until a close frame and returns its code.
pub async fn raw_close_code(stream: &mut TcpStream) -> u16 {
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

/// Reads server frames until EOF; returns `(opcode, payload)` of each and how the read ended.
pub async fn read_to_eof(
    stream: &mut TcpStream,
) -> (Vec<(u8, Vec<u8>)>, Option<std::io::ErrorKind>) {
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
pub async fn handshake_on(mut stream: TcpStream, query: &str) -> TcpStream {
    stream
        .write_all(upgrade_request(query, GOOD_HANDSHAKE).as_bytes())
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
