//! The HTTP API end to end against the real binary: stream headers and the `connected` frame,
//! publish → receive on several clients with byte-exact frames, every error status with its JSON
//! `error`, isolation of open streams from bad requests, CORS (wildcard and an origin list),
//! `/healthz`, and the `/stats` document including the plausibility of `averageAge`.

mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use support::sse_parse::{Item, Message};
use support::{open_stream, subscribe, RawClient, Server};

/// The data of a notification event: `{"message": ..., "timestamp": "<RFC 3339>"}`, plus the
/// channel it was published on (always `broadcast` here) when the server names it.
fn notification_data(message: &Message) -> (Value, SystemTime) {
    let data: Value = serde_json::from_str(&message.data)
        .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", message.data));
    let object = data.as_object().expect("data is a JSON object");
    for key in object.keys() {
        assert!(
            ["message", "timestamp", "channel"].contains(&key.as_str()),
            "unexpected field {key:?} in {data}"
        );
    }
    if let Some(channel) = object.get("channel") {
        assert_eq!(channel, "broadcast", "{data}");
    }
    let stamp = data["timestamp"].as_str().expect("timestamp is a string");
    let when = humantime::parse_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("timestamp {stamp:?} is not RFC 3339: {e}"));
    assert!(object.contains_key("message"), "{data}");
    (data["message"].clone(), when)
}

/// The exact bytes the encoder writes for a parsed event: `event`, `id`, one `data:` line per
/// line, blank line.
fn frame_of(event: &Message) -> String {
    let mut frame = String::new();
    if event.event != "message" {
        frame.push_str(&format!("event: {}\n", event.event));
    }
    if let Some(id) = &event.id {
        frame.push_str(&format!("id: {id}\n"));
    }
    for line in event.data.split('\n') {
        frame.push_str(&format!("data: {line}\n"));
    }
    frame.push('\n');
    frame
}

fn assert_recent(when: SystemTime) {
    let now = SystemTime::now();
    let skew = now.duration_since(when).unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(30), "timestamp off by {skew:?}");
}

#[tokio::test]
async fn stream_starts_with_headers_and_connected_event() {
    let server = Server::spawn(&["--workers", "2"]);
    let mut client = open_stream(server.addr, &[("Accept", "text/event-stream")]).await;
    assert_eq!(client.status, 200);
    assert_eq!(client.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        client.header("cache-control"),
        Some("no-cache, no-transform")
    );
    assert_eq!(client.header("x-accel-buffering"), Some("no"));
    assert_eq!(client.header("connection"), Some("keep-alive"));
    assert_eq!(client.header("transfer-encoding"), Some("chunked"));
    assert_eq!(client.header("content-encoding"), None);
    assert_eq!(client.header("content-length"), None);

    let connected = client.next_event().await;
    assert_eq!(connected.event, "connected");
    let data: Value = serde_json::from_str(&connected.data).expect("connected data is JSON");
    let id = data["connectionId"].as_str().expect("connectionId");
    let worker = data["worker"].as_u64().expect("worker");
    assert!(worker < 2, "{data}");
    let hex = id
        .strip_prefix(&format!("s{worker}-"))
        .unwrap_or_else(|| panic!("id {id:?} does not name worker {worker}"));
    assert!(
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
    // Byte-exact: the first frame on the wire, field order included. (What follows it, such as
    // catch-up and position frames, is the resume protocol's business.)
    let first = format!(
        "event: connected\nretry: 3000\ndata: {}\n\n",
        connected.data
    );
    assert!(
        client.body_text().starts_with(&first),
        "{:?}",
        client.body_text()
    );
    assert!(
        connected
            .data
            .starts_with(&format!("{{\"connectionId\":\"{id}\",\"worker\":{worker}")),
        "{:?}",
        connected.data
    );

    let custom = Server::spawn(&["--retry", "1500ms"]);
    let mut client = open_stream(custom.addr, &[]).await;
    client.next_event().await;
    assert!(
        client
            .body_text()
            .starts_with("event: connected\nretry: 1500\ndata: "),
        "{:?}",
        client.body_text()
    );
}

#[tokio::test]
async fn publish_reaches_every_client_with_exact_data() {
    let server = Server::spawn(&["--workers", "2"]);
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(subscribe(server.addr).await.0);
    }
    let message = json!({"text": "héllo wörld 🦀", "n": 42, "nested": {"list": [1, null, true]}});
    let reached = server.notify(json!({ "message": message })).await;
    assert_eq!(reached, 6, "the answer counts every open stream");

    let mut frames = Vec::new();
    for client in &mut clients {
        let before = client.body.len();
        let event = client.next_event().await;
        assert_eq!(event.event, "notification");
        let (received, when) = notification_data(&event);
        assert_eq!(received, message);
        assert_recent(when);
        // The exact frame: event line, id line if any, one data line, blank line; nothing else.
        let frame = String::from_utf8(client.body[before..].to_vec()).expect("UTF-8 frame");
        assert!(!event.data.contains('\n'), "{:?}", event.data);
        assert_eq!(frame, frame_of(&event));
        frames.push(frame);
    }
    assert!(
        frames.windows(2).all(|pair| pair[0] == pair[1]),
        "every client receives the same bytes: {frames:#?}"
    );

    // Events arrive in publish order.
    for n in 0..5 {
        server.notify(json!({ "message": n })).await;
    }
    for client in &mut clients {
        for n in 0..5 {
            let (received, _) = notification_data(&client.next_event().await);
            assert_eq!(received, json!(n));
        }
    }
}

#[tokio::test]
async fn custom_event_type_names_the_event() {
    let server = Server::spawn(&[]);
    let (mut client, _) = subscribe(server.addr).await;
    server
        .notify(json!({"message": {"orderId": 42}, "type": "order.created"}))
        .await;
    let event = client.next_event().await;
    assert_eq!(event.event, "order.created");
    assert_eq!(notification_data(&event).0, json!({"orderId": 42}));

    // Unicode and spaces are allowed in a name; only CR, LF and NUL are not.
    server
        .notify(json!({"message": "x", "type": "état changé"}))
        .await;
    assert_eq!(client.next_event().await.event, "état changé");
}

#[tokio::test]
async fn multi_line_message_round_trips() {
    let server = Server::spawn(&[]);
    let (mut client, _) = subscribe(server.addr).await;
    let text = "line one\nline two\r\nline three\rline four\n\n  indented\n";
    server.notify(json!({ "message": text })).await;
    let event = client.next_event().await;
    // The message travels as a JSON string, so its line breaks are escaped and the event is one
    // `data:` line; the parser hands back exactly what was published.
    assert!(!event.data.contains(['\n', '\r']), "{:?}", event.data);
    assert_eq!(notification_data(&event).0, json!(text));

    // A message that is itself an object whose strings hold every kind of line break.
    let object = json!({"a": "x\ny", "b": ["\r", "\r\n", ""], "c": " lead"});
    server.notify(json!({ "message": object })).await;
    assert_eq!(notification_data(&client.next_event().await).0, object);
}

/// A request that must fail, with its expected status.
struct Bad {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    allow: Option<&'static str>,
}

fn bad(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: &[u8],
    status: u16,
) -> Bad {
    Bad {
        name,
        method,
        path,
        content_type,
        body: body.to_vec(),
        status,
        allow: None,
    }
}

fn bad_requests() -> Vec<Bad> {
    const JSON: Option<&str> = Some("application/json");
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(70 * 1024));
    vec![
        bad("unknown route", "GET", "/nope", None, b"", 404),
        bad("unknown prefix", "GET", "/event", None, b"", 404),
        bad("unknown API route", "POST", "/api/nope", JSON, b"{}", 404),
        Bad {
            allow: Some("POST, OPTIONS"),
            ..bad("GET on notify", "GET", "/api/notify", None, b"", 405)
        },
        Bad {
            allow: Some("GET, HEAD, OPTIONS"),
            ..bad("POST on events", "POST", "/events", JSON, b"{}", 405)
        },
        Bad {
            allow: Some("GET, HEAD, OPTIONS"),
            ..bad("DELETE on stats", "DELETE", "/stats", None, b"", 405)
        },
        bad("malformed JSON", "POST", "/api/notify", JSON, b"{", 400),
        bad(
            "not JSON at all",
            "POST",
            "/api/notify",
            JSON,
            b"hello",
            400,
        ),
        bad("empty body", "POST", "/api/notify", JSON, b"", 400),
        bad("missing message", "POST", "/api/notify", JSON, b"{}", 400),
        bad("array body", "POST", "/api/notify", JSON, b"[1,2]", 400),
        bad(
            "null message",
            "POST",
            "/api/notify",
            JSON,
            br#"{"message":null}"#,
            400,
        ),
        bad(
            "LF in type",
            "POST",
            "/api/notify",
            JSON,
            br#"{"message":"x","type":"a\nb"}"#,
            400,
        ),
        bad(
            "CR in type",
            "POST",
            "/api/notify",
            JSON,
            br#"{"message":"x","type":"a\rb"}"#,
            400,
        ),
        bad(
            "CRLF in type",
            "POST",
            "/api/notify",
            JSON,
            br#"{"message":"x","type":"evil\r\ndata: injected"}"#,
            400,
        ),
        bad(
            "NUL in type",
            "POST",
            "/api/notify",
            JSON,
            br#"{"message":"x","type":"a\u0000b"}"#,
            400,
        ),
        bad(
            "empty type",
            "POST",
            "/api/notify",
            JSON,
            br#"{"message":"x","type":""}"#,
            400,
        ),
        bad(
            "non-string type",
            "POST",
            "/api/notify",
            JSON,
            br#"{"message":"x","type":7}"#,
            400,
        ),
        bad(
            "body over --max-body",
            "POST",
            "/api/notify",
            JSON,
            big.as_bytes(),
            413,
        ),
        bad(
            "text/plain body",
            "POST",
            "/api/notify",
            Some("text/plain"),
            br#"{"message":"x"}"#,
            415,
        ),
        bad(
            "form body",
            "POST",
            "/api/notify",
            Some("application/x-www-form-urlencoded"),
            b"message=x",
            415,
        ),
        bad(
            "no content type",
            "POST",
            "/api/notify",
            None,
            br#"{"message":"x"}"#,
            415,
        ),
    ]
}

/// Sends one bad request with reqwest and checks its status, JSON error body and `Allow`.
async fn check_bad(server: &Server, case: &Bad) {
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("a method");
    let mut request = support::http()
        .request(method, server.url(case.path))
        .body(case.body.clone());
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: request failed: {e}", case.name));
    assert_eq!(response.status().as_u16(), case.status, "{}", case.name);
    if let Some(allow) = case.allow {
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{}",
            case.name
        );
    }
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{}",
        case.name
    );
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{}: error body is not JSON: {e}", case.name));
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        !error.is_empty(),
        "{}: no `error` field in {body}",
        case.name
    );
}

#[tokio::test]
async fn every_bad_request_gets_its_status_and_json_error() {
    let server = Server::spawn(&[]);
    for case in bad_requests() {
        check_bad(&server, &case).await;
    }
    // Nothing was published by any of them.
    assert_eq!(server.stats().await["eventsPublished"], 0);
}

#[tokio::test]
async fn body_limits_follow_max_body() {
    let server = Server::spawn(&["--max-body", "1KiB"]);
    let fits = format!(r#"{{"message":"{}"}}"#, "x".repeat(900));
    let (status, answer) = server
        .post_json(
            "/api/notify",
            &serde_json::from_str(&fits).expect("valid JSON"),
        )
        .await;
    assert_eq!(status, 200);
    assert!(answer.is_object(), "a JSON answer: {answer}");

    // Declared too large: refused from the head alone, before any body byte is read.
    let stream = support::connect(server.addr).await;
    let mut raw = RawClient::send(
        stream,
        server.addr,
        "POST",
        "/api/notify",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", "2048"),
        ],
        b"",
    )
    .await;
    assert_eq!(raw.status, 413);
    assert!(raw.json().await["error"].is_string());

    // Chunked, so the size is only known while reading: the cap still holds.
    let too_big = format!(r#"{{"message":"{}"}}"#, "y".repeat(2048)).into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        too_big.chunks(256).map(|c| Ok(c.to_vec())).collect();
    let response = support::http()
        .post(server.url("/api/notify"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("chunked POST");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("JSON error");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn bad_requests_do_not_disturb_open_streams() {
    let server = Server::spawn(&["--workers", "2"]);
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(subscribe(server.addr).await.0);
    }
    let cases = bad_requests();
    // Interleave: half before, a good event, the rest after.
    let (first, second) = cases.split_at(cases.len() / 2);
    for case in first {
        check_bad(&server, case).await;
    }
    server.notify(json!({"message": "between"})).await;
    for case in second {
        check_bad(&server, case).await;
    }
    server.notify(json!({"message": "after"})).await;

    for stream in &mut streams {
        for expected in ["between", "after"] {
            match stream.next_item().await {
                Some(Item::Event(event)) => {
                    assert_eq!(event.event, "notification");
                    assert_eq!(notification_data(&event).0, json!(expected));
                }
                other => panic!("expected the {expected:?} event, got {other:?}"),
            }
        }
        assert_eq!(stream.end(), None, "the stream is still open");
    }
    let stats = server.stats().await;
    assert_eq!(stats["totalConnections"], 3, "{stats}");
    assert_eq!(stats["eventsPublished"], 2, "{stats}");
}

#[tokio::test]
async fn cors_wildcard_by_default() {
    let server = Server::spawn(&[]);
    let client = support::http();
    let response = client
        .get(server.url("/stats"))
        .header("origin", "https://anyone.example")
        .send()
        .await
        .expect("GET /stats");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "*",
        "{:?}",
        response.headers()
    );
    let mut stream = open_stream(server.addr, &[("Origin", "https://anyone.example")]).await;
    assert_eq!(stream.header("access-control-allow-origin"), Some("*"));
    stream.next_event().await;

    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/events"))
        .header("origin", "https://anyone.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .send()
        .await
        .expect("OPTIONS /events");
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn cors_preflight_allows_the_sse_headers() {
    let server = Server::spawn(&["--cors-origin=https://a.example"]);
    let client = support::http();
    for (path, method) in [
        ("/events", "GET"),
        ("/api/notify", "POST"),
        ("/stats", "GET"),
        ("/healthz", "GET"),
    ] {
        let response = client
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("origin", "https://a.example")
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "last-event-id, cache-control, authorization, content-type",
            )
            .send()
            .await
            .expect("OPTIONS");
        assert_eq!(response.status(), 204, "OPTIONS {path}");
        let headers = response.headers();
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        assert_eq!(get("access-control-allow-origin"), "https://a.example");
        assert!(
            get("vary").contains("origin"),
            "OPTIONS {path}: {headers:?}"
        );
        let allowed = get("access-control-allow-headers");
        for header in [
            "last-event-id",
            "cache-control",
            "authorization",
            "content-type",
        ] {
            assert!(
                allowed.split(',').any(|h| h.trim() == header),
                "OPTIONS {path}: {header} not in {allowed:?}"
            );
        }
        let methods = get("access-control-allow-methods");
        assert!(
            methods
                .split(',')
                .any(|m| m.trim() == method.to_ascii_lowercase()),
            "OPTIONS {path}: {method} not in {methods:?}"
        );
    }

    // Preflight only answers for known paths.
    let unknown = client
        .request(reqwest::Method::OPTIONS, server.url("/nope"))
        .send()
        .await
        .expect("OPTIONS /nope");
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn cors_origin_list_echoes_listed_origins_only() {
    let server = Server::spawn(&["--cors-origin=https://a.example"]);
    let client = support::http();

    // Listed origin: echoed, with Vary: Origin so caches keep answers per origin.
    let mut listed = open_stream(server.addr, &[("Origin", "https://a.example")]).await;
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(listed.header("vary"), Some("Origin"));
    listed.next_event().await;

    let response = client
        .post(server.url("/api/notify"))
        .header("origin", "https://a.example")
        .json(&json!({"message": "cors"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://a.example"
    );
    assert_eq!(response.headers()["vary"], "Origin");

    // Unlisted origin, or none: no allow-origin header at all (the browser then refuses).
    let mut unlisted = open_stream(server.addr, &[("Origin", "https://b.example")]).await;
    assert_eq!(unlisted.status, 200);
    assert_eq!(unlisted.header("access-control-allow-origin"), None);
    unlisted.next_event().await;
    for origin in [
        Some("https://b.example"),
        Some("https://a.example.evil"),
        None,
    ] {
        let mut request = client.get(server.url("/stats"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.expect("GET /stats");
        assert_eq!(response.status(), 200);
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "origin {origin:?}: {:?}",
            response.headers()
        );
    }
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/events"))
        .header("origin", "https://b.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("OPTIONS");
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn healthz_reports_ok() {
    let server = Server::spawn(&["--workers", "3"]);
    let response = support::http()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["workers"], 3, "{body}");
    assert_eq!(server.workers, 3);
}

#[tokio::test]
async fn stats_report_every_field() {
    let server = Server::spawn(&["--workers", "2", "--max-connections", "50"]);
    let fresh = server.stats().await;
    for field in [
        "totalConnections",
        "averageAge",
        "maxConnections",
        "peakConnections",
        "eventsPublished",
        "framesDelivered",
        "slowConsumersDropped",
        "uptime",
    ] {
        assert!(
            fresh[field].is_u64(),
            "{field} missing or not a count: {fresh}"
        );
    }
    assert_eq!(fresh["totalConnections"], 0);
    assert_eq!(fresh["averageAge"], 0, "no streams, no age: {fresh}");
    assert_eq!(fresh["maxConnections"], 50);
    assert_eq!(fresh["peakConnections"], 0);
    let workers = fresh["workers"].as_array().expect("workers array");
    assert_eq!(workers.len(), 2);
    for (index, worker) in workers.iter().enumerate() {
        assert_eq!(worker["worker"], index, "{worker}");
        for field in [
            "connections",
            "framesDelivered",
            "slowConsumersDropped",
            "inboxDepth",
        ] {
            assert!(worker[field].is_u64(), "{field}: {worker}");
        }
    }

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(subscribe(server.addr).await.0);
    }
    let opened = server.stats().await;
    let opening_frames = opened["framesDelivered"].as_u64().expect("framesDelivered");
    assert!(
        opening_frames >= 3,
        "at least each connected event: {opened}"
    );
    for n in 0..2 {
        assert_eq!(server.notify(json!({ "message": n })).await, 3);
    }
    for client in &mut clients {
        client.next_event().await;
        client.next_event().await;
    }
    // A worker with no subscriber of the channel may apply the last publish a moment after the
    // streams on the other worker received it.
    let stats = server.settle().await;
    assert_eq!(stats["totalConnections"], 3, "{stats}");
    assert_eq!(stats["peakConnections"], 3, "{stats}");
    assert_eq!(stats["eventsPublished"], 2, "{stats}");
    // Each stream was handed exactly two more frames: the two events.
    assert_eq!(stats["framesDelivered"], opening_frames + 6, "{stats}");
    assert_eq!(stats["slowConsumersDropped"], 0, "{stats}");
    let workers = stats["workers"].as_array().expect("workers");
    let sum = |field: &str| {
        workers
            .iter()
            .map(|w| w[field].as_u64().expect("a count"))
            .sum::<u64>()
    };
    assert_eq!(sum("connections"), 3, "{stats}");
    assert_eq!(sum("framesDelivered"), opening_frames + 6, "{stats}");
    assert_eq!(sum("inboxDepth"), 0, "{stats}");
    assert!(
        stats["uptime"].as_u64() >= fresh["uptime"].as_u64(),
        "{fresh} then {stats}"
    );

    drop(clients);
    let after = server
        .wait_stats("every stream closed", |s| s["totalConnections"] == 0)
        .await;
    assert_eq!(
        after["peakConnections"], 3,
        "peak is a high-water mark: {after}"
    );
    assert_eq!(after["averageAge"], 0, "{after}");
}

#[tokio::test]
async fn average_age_tracks_open_streams() {
    let server = Server::spawn(&["--workers", "2"]);
    let before_connect = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(subscribe(server.addr).await.0);
    }
    let connected = Instant::now();

    // Let the streams age; averageAge is in milliseconds.
    let aged = server
        .wait_stats("averageAge >= 300", |s| {
            s["averageAge"].as_u64().is_some_and(|age| age >= 300)
        })
        .await;
    assert!(
        aged["averageAge"].as_u64() <= aged["uptime"].as_u64(),
        "{aged}"
    );

    let asked = Instant::now();
    let stats = server.stats().await;
    let answered = Instant::now();
    let age = stats["averageAge"].as_u64().expect("averageAge");
    let millis = |d: Duration| u64::try_from(d.as_millis()).expect("a short test");
    // Both streams connected between `before_connect` and `connected`, so their mean age at the
    // moment of the answer lies between these bounds (plus clock granularity).
    let low = millis(asked - connected).saturating_sub(50);
    let high = millis(answered - before_connect) + 50;
    assert!(
        (low..=high).contains(&age),
        "averageAge {age} ms outside [{low}, {high}]: {stats}"
    );

    // A brand-new stream pulls the average down to roughly two thirds.
    let fresh = subscribe(server.addr).await.0;
    let stats = server.stats().await;
    let mixed = stats["averageAge"].as_u64().expect("averageAge");
    assert_eq!(stats["totalConnections"], 3, "{stats}");
    assert!(
        mixed < age + 50 && mixed * 3 >= age * 2 - 50,
        "averageAge {mixed} after a fresh stream joined two of age ~{age}"
    );
    drop(fresh);
    drop(clients);
}
