//! Authentication and per-channel authorization, end to end against the real binary.
//!
//! Tokens are minted here with a signing path of their own (`hmac`, `p256`, `rsa`); the server
//! has no signing code and verifies with `jsonwebtoken`. Covered: which tokens are accepted and
//! why others are refused (status, JSON error, `WWW-Authenticate`), the three token sources, the
//! publish and subscribe permission matrices, impersonation attempts, expiry of a live stream and
//! lossless resume with a fresh token, the `authFailures` counter, and a property test that no
//! event of a channel a token does not allow ever reaches its stream.

#![allow(clippy::unwrap_used)]

mod support;

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use support::api::{envelope, Api, Cred, Outcome, Problems, Reply};
use support::jwt::{
    claims, hmac_sha256, hmac_sha384, hs256, hs256_with, jws, now, swap_payload, tamper_signature,
    unsigned, EcKey, RsaKey, PUBLISHER_KEY, SECRET,
};
use support::sse_parse::Message;
use support::{RawClient, Server};

/// A server with two workers, so that `/subscribe` and publishes also cross shards.
fn server_with(args: &[&str]) -> Server {
    Server::spawn(&[&["--workers", "2"], args].concat())
}

/// `--auth required` with a public key (ES256 or RS256) and two workers.
fn key_server(pem: &str) -> Server {
    Server::spawn_with_public_key(pem, &["--workers", "2", "--auth", "required"])
}

/// `--auth required` with the HS256 test secret and the operator key.
fn required_server() -> Server {
    server_with(&[
        "--auth",
        "required",
        "--jwt-secret",
        SECRET,
        "--publisher-key",
        PUBLISHER_KEY,
    ])
}

/// `--auth off` (the default) with the HS256 test secret and the operator key.
fn off_server() -> Server {
    server_with(&["--jwt-secret", SECRET, "--publisher-key", PUBLISHER_KEY])
}

/// Bound for waits on stream expiry: a token lives at most 2 s here and the shard checks every
/// 0.5 s, so this is several times what a healthy run needs.
const EXPIRY_BOUND: Duration = Duration::from_secs(15);

/// The `case` marker of a test event, wherever the route put it.
fn marker(message: &Message) -> Option<String> {
    let (_, data) = envelope(message);
    data.get("case")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            // A text/plain publish carries the body as is: here, a JSON object.
            serde_json::from_str::<Value>(&message.data)
                .ok()
                .and_then(|v| v["case"].as_str().map(str::to_owned))
        })
}

/// Whether a token pattern covers a channel, modelled independently of the server.
fn pattern_allows(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

// ---------------------------------------------------------------------------------------------
// Which tokens are accepted
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn valid_hs256_token_opens_every_stream_route_and_receives_events() {
    let server = required_server();
    let api = server.api();
    let token = hs256(&claims("alice", &["news", "sport", "room/*"], &[]));

    let mut news = api
        .stream("/events?channel=news", Cred::Bearer(&token))
        .await;
    assert_eq!(news.channels(), ["news"]);
    // Without `channel`, /secure-events takes every exact channel of the `subscribe` claim.
    let mut secure = api.stream("/secure-events", Cred::Bearer(&token)).await;
    assert_eq!(secure.channels(), ["news", "sport"]);
    let mut own = api.stream("/events/alice", Cred::Bearer(&token)).await;
    assert_eq!(own.channels(), ["~user/alice"]);

    let id = api.publish_ok("news", json!({"n": 1})).await;
    let (epoch, seq) = id.rsplit_once('-').expect("ids are <epoch>-<seq>");
    assert!(!epoch.is_empty() && seq.parse::<u64>().is_ok(), "{id}");
    for sse in [&mut news, &mut secure] {
        let event = sse.next_event().await;
        assert_eq!(event.event, "message");
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
        assert_eq!(envelope(&event), ("news".to_owned(), json!({"n": 1})));
        assert_eq!(sse.last_event_id(), id);
    }

    let reply = api
        .post(
            "/api/users/alice/notify",
            Cred::Bearer(PUBLISHER_KEY),
            &json!({"message": "hi"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let event = own.next_event().await;
    assert_eq!(event.event, "notification");
    assert_eq!(envelope(&event), ("~user/alice".to_owned(), json!("hi")));
}

#[tokio::test]
async fn es256_server_accepts_only_es256_tokens_from_its_key() {
    let key = EcKey::from_seed("sluice auth test: the server's key");
    let other = EcKey::from_seed("sluice auth test: somebody else's key");
    let pem = key.public_pem();
    let server = key_server(&pem);
    let api = server.api();
    let c = claims("alice", &["news"], &[]);
    let es_header = json!({"alg": "ES256", "typ": "JWT"});
    let cases: Vec<(&str, String, Outcome)> = vec![
        ("valid ES256", key.es256(&c), Outcome::Ok),
        (
            "ES256 signed by another key",
            other.es256(&c),
            Outcome::BadToken,
        ),
        (
            "ES256 with a tampered signature",
            tamper_signature(&key.es256(&c)),
            Outcome::BadToken,
        ),
        (
            "ES256 signature over other claims",
            swap_payload(&key.es256(&c), &claims("bob", &["*"], &["*"])),
            Outcome::BadToken,
        ),
        (
            "HS256 with the HS test secret (wrong algorithm)",
            hs256(&c),
            Outcome::BadToken,
        ),
        (
            "HS256 keyed with the PEM public key (algorithm confusion)",
            hs256_with(pem.as_bytes(), &c),
            Outcome::BadToken,
        ),
        (
            "HS256 keyed with the PEM minus its final newline (algorithm confusion)",
            hs256_with(pem.trim_end().as_bytes(), &c),
            Outcome::BadToken,
        ),
        (
            "ES256 header over an HMAC made with the PEM",
            jws(&es_header, &c, |input| hmac_sha256(pem.as_bytes(), input)),
            Outcome::BadToken,
        ),
        ("alg none", unsigned("none", &c), Outcome::BadToken),
    ];
    let mut problems = Problems::default();
    for (what, token, outcome) in &cases {
        let reply = api.probe("/events?channel=news", Cred::Bearer(token)).await;
        problems.check(what, &reply, *outcome);
    }
    problems.assert_none();
}

#[tokio::test]
async fn rs256_server_accepts_only_rs256_tokens_from_its_key() {
    let key = RsaKey::generate();
    let pem = key.public_pem();
    let server = key_server(&pem);
    let api = server.api();
    let c = claims("alice", &["news"], &[]);
    let ec = EcKey::from_seed("sluice auth test: an EC key");
    let cases: Vec<(&str, String, Outcome)> = vec![
        ("valid RS256", key.rs256(&c), Outcome::Ok),
        (
            "RS256 with a tampered signature",
            tamper_signature(&key.rs256(&c)),
            Outcome::BadToken,
        ),
        (
            "HS256 keyed with the PEM public key (algorithm confusion)",
            hs256_with(pem.as_bytes(), &c),
            Outcome::BadToken,
        ),
        ("ES256 (wrong algorithm)", ec.es256(&c), Outcome::BadToken),
        ("alg none", unsigned("none", &c), Outcome::BadToken),
    ];
    let mut problems = Problems::default();
    for (what, token, outcome) in &cases {
        let reply = api.probe("/events?channel=news", Cred::Bearer(token)).await;
        problems.check(what, &reply, *outcome);
    }
    problems.assert_none();
}

#[tokio::test]
async fn refused_tokens_get_401_with_invalid_token_challenge() {
    let server = required_server();
    let api = server.api();
    let good = claims("alice", &["news"], &[]);
    let without = |claim: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(claim);
        c
    };
    let with = |claim: &str, value: Value| {
        let mut c = good.clone();
        c[claim] = value;
        c
    };
    let hs_header = json!({"alg": "HS256", "typ": "JWT"});
    // (what, token, a word the error message should contain)
    let cases: Vec<(&str, String, &str)> = vec![
        ("not a JWT", "not-a-jwt".to_owned(), ""),
        ("two segments", "eyJhbGciOiJIUzI1NiJ9.e30".to_owned(), ""),
        ("segments that are not base64url", "a.b.c".to_owned(), ""),
        ("over 8 KiB", "x".repeat(9 * 1024), ""),
        ("tampered signature", tamper_signature(&hs256(&good)), ""),
        (
            "signature over other claims",
            swap_payload(&hs256(&good), &claims("alice", &["*"], &["*"])),
            "",
        ),
        (
            "signed with another secret",
            hs256_with(b"another-secret-0123456789abcdef", &good),
            "",
        ),
        (
            "HS384 with the right secret (wrong algorithm)",
            jws(&json!({"alg": "HS384"}), &good, |input| {
                hmac_sha384(SECRET.as_bytes(), input)
            }),
            "",
        ),
        (
            "ES256 header over a valid HS256 signature",
            jws(&json!({"alg": "ES256"}), &good, |input| {
                hmac_sha256(SECRET.as_bytes(), input)
            }),
            "",
        ),
        ("alg none", unsigned("none", &good), ""),
        ("alg None", unsigned("None", &good), ""),
        ("alg NONE", unsigned("NONE", &good), ""),
        (
            "alg none with a valid HS256 signature attached",
            jws(&json!({"alg": "none"}), &good, |input| {
                hmac_sha256(SECRET.as_bytes(), input)
            }),
            "",
        ),
        (
            "expired a minute ago",
            hs256(&with("exp", json!(now() - 60))),
            "expired",
        ),
        (
            "expired long ago",
            hs256(&with("exp", json!(1_000_000))),
            "expired",
        ),
        (
            "not valid for another minute (nbf)",
            hs256(&with("nbf", json!(now() + 60))),
            "valid",
        ),
        ("no sub", hs256(&without("sub")), "sub"),
        ("no exp", hs256(&without("exp")), "exp"),
        ("sub is a number", hs256(&with("sub", json!(42))), "sub"),
        ("exp is a string", hs256(&with("exp", json!("soon"))), "exp"),
        (
            "subscribe is not a list",
            hs256(&with("subscribe", json!("news"))),
            "subscribe",
        ),
        ("sub is empty", hs256(&with("sub", json!(""))), "sub"),
        (
            "sub is not a valid user id",
            hs256(&with("sub", json!("alice smith"))),
            "sub",
        ),
        (
            "payload is not JSON",
            format!(
                "{}.{}.{}",
                support::jwt::b64(hs_header.to_string().as_bytes()),
                support::jwt::b64(b"not json"),
                support::jwt::b64(&hmac_sha256(SECRET.as_bytes(), b"x"))
            ),
            "",
        ),
    ];
    let mut problems = Problems::default();
    for (what, token, word) in &cases {
        for path in ["/events?channel=news", "/secure-events"] {
            let reply = api.probe(path, Cred::Bearer(token)).await;
            problems.check(&format!("{what} on {path}"), &reply, Outcome::BadToken);
            if reply.status == 401 && !reply.error().contains(word) {
                problems.push(format!(
                    "{what} on {path}: error {:?} does not mention {word:?}",
                    reply.error()
                ));
            }
        }
    }
    problems.assert_none();
}

#[tokio::test]
async fn missing_token_gets_401_with_bare_challenge_on_every_guarded_route() {
    let server = required_server();
    let api = server.api();
    let mut problems = Problems::default();
    for path in [
        "/events",
        "/events?channel=news",
        "/events/alice",
        "/secure-events",
        "/secure-events?channel=news",
    ] {
        let reply = api.probe(path, Cred::None).await;
        problems.check(&format!("GET {path}"), &reply, Outcome::NoToken);
    }
    let body = json!({"message": "x", "channel": "news"});
    let reply = api.post("/api/notify", Cred::None, &body).await;
    problems.check("POST /api/notify", &reply, Outcome::NoToken);
    let reply = api
        .post(
            "/api/users/alice/notify",
            Cred::None,
            &json!({"message": "x"}),
        )
        .await;
    problems.check("POST /api/users/alice/notify", &reply, Outcome::NoToken);
    let reply = api.publish(Cred::None, "news", json!(1)).await;
    problems.check("POST /api/publish (JSON)", &reply, Outcome::NoToken);
    let reply = api
        .post_text("/api/publish?channel=news", Cred::None, "x")
        .await;
    problems.check("POST /api/publish (text)", &reply, Outcome::NoToken);
    for add in [true, false] {
        let reply = api
            .change(Cred::None, "s0-0000000000000000", "news", add)
            .await;
        problems.check(
            &format!("POST /subscribe (add: {add})"),
            &reply,
            Outcome::NoToken,
        );
    }
    problems.assert_none();
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_configured() {
    let server = server_with(&[
        "--auth",
        "required",
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        "sluice-test",
        "--jwt-issuer",
        "https://issuer.test",
    ]);
    let api = server.api();
    let with = |aud: Value, iss: Value| {
        let mut c = claims("alice", &["news"], &[]);
        c["aud"] = aud;
        c["iss"] = iss;
        hs256(&c)
    };
    let iss = json!("https://issuer.test");
    let cases: Vec<(&str, String, Outcome)> = vec![
        (
            "right aud and iss",
            with(json!("sluice-test"), iss.clone()),
            Outcome::Ok,
        ),
        (
            "aud list containing ours",
            with(json!(["other", "sluice-test"]), iss.clone()),
            Outcome::Ok,
        ),
        (
            "wrong aud",
            with(json!("other"), iss.clone()),
            Outcome::BadToken,
        ),
        (
            "aud list without ours",
            with(json!(["other", "more"]), iss.clone()),
            Outcome::BadToken,
        ),
        (
            "wrong iss",
            with(json!("sluice-test"), json!("https://evil.test")),
            Outcome::BadToken,
        ),
    ];
    let mut problems = Problems::default();
    for (what, token, outcome) in &cases {
        let reply = api.probe("/events?channel=news", Cred::Bearer(token)).await;
        problems.check(what, &reply, *outcome);
        if *outcome == Outcome::BadToken && !reply.error().contains("audience") {
            problems.push(format!("{what}: error {:?}", reply.error()));
        }
    }
    problems.assert_none();
}

/// `--jwt-audience` and `--jwt-issuer` say the token must be *for* this server: a token that
/// names no audience (or no issuer) at all must not pass.
#[tokio::test]
async fn audience_and_issuer_are_required_when_configured() {
    let server = server_with(&[
        "--auth",
        "required",
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        "sluice-test",
        "--jwt-issuer",
        "https://issuer.test",
    ]);
    let api = server.api();
    let mut no_aud = claims("alice", &["news"], &[]);
    no_aud["iss"] = json!("https://issuer.test");
    let mut no_iss = claims("alice", &["news"], &[]);
    no_iss["aud"] = json!("sluice-test");
    let mut problems = Problems::default();
    for (what, c) in [
        ("token without aud", &no_aud),
        ("token without iss", &no_iss),
    ] {
        let reply = api
            .probe("/events?channel=news", Cred::Bearer(&hs256(c)))
            .await;
        problems.check(what, &reply, Outcome::BadToken);
    }
    problems.assert_none();
}

#[tokio::test]
async fn no_key_configured_is_501() {
    let server = server_with(&[]);
    let api = server.api();
    let token = hs256(&claims("alice", &["news"], &["news"]));
    let mut problems = Problems::default();
    let reply = api.probe("/secure-events", Cred::None).await;
    problems.check(
        "GET /secure-events, no token",
        &reply,
        Outcome::NotConfigured,
    );
    let reply = api
        .probe("/secure-events?channel=news", Cred::Bearer(&token))
        .await;
    problems.check(
        "GET /secure-events with a token",
        &reply,
        Outcome::NotConfigured,
    );
    let reply = api
        .change(Cred::Bearer(&token), "s0-0000000000000000", "news", true)
        .await;
    problems.check(
        "POST /subscribe with a token",
        &reply,
        Outcome::NotConfigured,
    );
    // With auth off, the public routes stay open.
    let reply = api.probe("/events", Cred::None).await;
    problems.check("GET /events, no token", &reply, Outcome::Ok);
    problems.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Where the token comes from
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_is_read_from_header_query_or_cookie() {
    let server = required_server();
    let api = server.api();
    let token = hs256(&claims("alice", &["news"], &["news"]));
    let bad = tamper_signature(&token);
    let mut problems = Problems::default();
    let sources = [
        ("Authorization header", Cred::Bearer(&token)),
        ("?token=", Cred::Query(&token)),
        ("sluice_token cookie", Cred::Cookie(&token)),
    ];
    for (source, cred) in sources {
        for path in [
            "/secure-events?channel=news",
            "/events?channel=news",
            "/events/alice",
        ] {
            let reply = api.probe(path, cred).await;
            problems.check(&format!("GET {path} via {source}"), &reply, Outcome::Ok);
        }
        let body = json!({"message": {"source": source}, "channel": "news"});
        let reply = api.post("/api/notify", cred, &body).await;
        problems.check(
            &format!("POST /api/notify via {source}"),
            &reply,
            Outcome::Ok,
        );
        let reply = api.post_text("/api/publish?channel=news", cred, "{}").await;
        problems.check(
            &format!("POST /api/publish (text) via {source}"),
            &reply,
            Outcome::Ok,
        );
        let bad_cred = match cred {
            Cred::Bearer(_) => Cred::Bearer(&bad),
            Cred::Query(_) => Cred::Query(&bad),
            _ => Cred::Cookie(&bad),
        };
        let reply = api.probe("/secure-events?channel=news", bad_cred).await;
        problems.check(
            &format!("tampered token via {source}"),
            &reply,
            Outcome::BadToken,
        );
    }
    // The scheme is case-insensitive.
    let lower = vec![("authorization".to_owned(), format!("bearer {token}"))];
    let reply = api
        .probe_with("/secure-events?channel=news", Cred::None, &lower)
        .await;
    problems.check("lower-case bearer scheme", &reply, Outcome::Ok);
    // Header, then query, then cookie: the first one present is the one checked.
    let bad_header = vec![("authorization".to_owned(), format!("Bearer {bad}"))];
    let reply = api
        .probe_with(
            "/secure-events?channel=news",
            Cred::Query(&token),
            &bad_header,
        )
        .await;
    problems.check("bad header, good query", &reply, Outcome::BadToken);
    let good_cookie = vec![("cookie".to_owned(), format!("sluice_token={token}"))];
    let reply = api
        .probe_with(
            "/secure-events?channel=news",
            Cred::Query(&bad),
            &good_cookie,
        )
        .await;
    problems.check("bad query, good cookie", &reply, Outcome::BadToken);
    let reply = api
        .probe_with(
            "/secure-events?channel=news",
            Cred::Bearer(&token),
            &good_cookie,
        )
        .await;
    problems.check("good header, good cookie", &reply, Outcome::Ok);
    // Another cookie with a similar name is not the token.
    let lookalike = vec![("cookie".to_owned(), format!("xsluice_token={token}"))];
    let reply = api
        .probe_with("/secure-events?channel=news", Cred::None, &lookalike)
        .await;
    problems.check("cookie xsluice_token", &reply, Outcome::NoToken);
    problems.assert_none();
}

/// A page on another origin that connects with `new EventSource(url, {withCredentials: true})`
/// so the `sluice_token` cookie is sent: the browser only hands it the stream if the response
/// names the origin exactly and carries `Access-Control-Allow-Credentials: true`.
#[tokio::test]
async fn cookie_token_works_for_a_credentialed_cross_origin_event_source() {
    let origin = "https://app.example.test";
    let server = server_with(&[
        "--auth",
        "required",
        "--jwt-secret",
        SECRET,
        "--cors-origin",
        origin,
    ]);
    let api = server.api();
    let token = hs256(&claims("alice", &["news"], &[]));
    let headers = vec![("origin".to_owned(), origin.to_owned())];
    let reply = api
        .probe_with(
            "/secure-events?channel=news",
            Cred::Cookie(&token),
            &headers,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some(origin),
        "{:?}",
        reply.headers
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true"),
        "without it a browser refuses a credentialed EventSource: {:?}",
        reply.headers
    );
}

// ---------------------------------------------------------------------------------------------
// Who may read and publish what
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn subscribe_permissions_exact_prefix_and_own_channel() {
    let server = required_server();
    let api = server.api();
    let token = hs256(&claims("alice", &["news", "room/*"], &[]));
    let mut problems = Problems::default();
    let cases = [
        ("/events?channel=news", Outcome::Ok),
        ("/events?channel=room/lobby", Outcome::Ok),
        ("/events?channel=news&channel=room/a/b", Outcome::Ok),
        ("/events?channel=rooms", Outcome::Forbidden),
        ("/events?channel=room", Outcome::Forbidden),
        ("/events?channel=sport", Outcome::Forbidden),
        ("/events?channel=news,sport", Outcome::Forbidden),
        ("/events", Outcome::Forbidden), // the broadcast channel is not in the claim
        ("/events/alice", Outcome::Ok),
        ("/events/alice?channel=news", Outcome::Ok),
        ("/events/alice?channel=sport", Outcome::Forbidden),
        ("/secure-events", Outcome::Ok),
        ("/secure-events?channel=room/x", Outcome::Ok),
        ("/secure-events?channel=sport", Outcome::Forbidden),
    ];
    for (path, outcome) in cases {
        let reply = api.probe(path, Cred::Bearer(&token)).await;
        problems.check(&format!("GET {path}"), &reply, outcome);
    }
    // A token naming only prefixes gives /secure-events nothing to subscribe to by default.
    let prefixes = hs256(&claims("alice", &["room/*"], &[]));
    let reply = api.probe("/secure-events", Cred::Bearer(&prefixes)).await;
    problems.check(
        "GET /secure-events, prefix-only claim",
        &reply,
        Outcome::Forbidden,
    );

    // Changing a live stream: the caller's token must allow the channel.
    let mut sse = api
        .stream("/events?channel=news", Cred::Bearer(&token))
        .await;
    let id = sse.connection_id();
    let reply = api.change(Cred::Bearer(&token), &id, "room/x", true).await;
    problems.check("subscribe room/x", &reply, Outcome::Ok);
    let reply = api.change(Cred::Bearer(&token), &id, "sport", true).await;
    problems.check("subscribe sport", &reply, Outcome::Forbidden);
    let reply = api.change(Cred::Bearer(&token), &id, "news", false).await;
    problems.check("unsubscribe news", &reply, Outcome::Ok);
    problems.assert_none();

    api.publish_ok("sport", json!({"case": "sport"})).await;
    api.publish_ok("news", json!({"case": "news"})).await;
    api.publish_ok("room/x", json!({"case": "room/x"})).await;
    let events = sse
        .events_until(|m| marker(m).as_deref() == Some("room/x"))
        .await;
    let got: Vec<_> = events.iter().filter_map(marker).collect();
    assert_eq!(got, ["room/x"], "{events:?}");
}

#[derive(Debug, Clone, Copy)]
enum PublishRoute {
    Json,
    Text,
    Notify,
}

#[tokio::test]
async fn publish_permissions_exact_prefix_and_publisher_key() {
    let server = required_server();
    let api = server.api();
    let watched = ["news", "room/lobby", "rooms", "room", "sport", "broadcast"];
    let watcher = hs256(&claims("watcher", &["*"], &[]));
    let path = format!("/events?channel={},sentinel", watched.join(","));
    let mut stream = api.stream(&path, Cred::Bearer(&watcher)).await;
    let bob_token = hs256(&claims("bob", &[], &[]));
    let mut bob = api.stream("/events/bob", Cred::Bearer(&bob_token)).await;

    let writer = hs256(&claims("writer", &[], &["news", "room/*"]));
    let reader = hs256(&claims("reader", &["*"], &[]));
    let wrong_key = "wrong-publisher-key-0123456789ab";
    let mut near_key = PUBLISHER_KEY.to_owned();
    near_key.pop();
    near_key.push('!');
    let cases: Vec<(&str, Cred<'_>, &str, Outcome)> = vec![
        (
            "token, exact channel",
            Cred::Bearer(&writer),
            "news",
            Outcome::Ok,
        ),
        (
            "token, prefix channel",
            Cred::Bearer(&writer),
            "room/lobby",
            Outcome::Ok,
        ),
        (
            "token, prefix needs its slash (rooms)",
            Cred::Bearer(&writer),
            "rooms",
            Outcome::Forbidden,
        ),
        (
            "token, prefix needs its slash (room)",
            Cred::Bearer(&writer),
            "room",
            Outcome::Forbidden,
        ),
        (
            "token, other channel",
            Cred::Bearer(&writer),
            "sport",
            Outcome::Forbidden,
        ),
        (
            "token without publish claim",
            Cred::Bearer(&reader),
            "news",
            Outcome::Forbidden,
        ),
        ("no credential", Cred::None, "news", Outcome::NoToken),
        (
            "publisher key",
            Cred::Bearer(PUBLISHER_KEY),
            "sport",
            Outcome::Ok,
        ),
        (
            "publisher key in ?token=",
            Cred::Query(PUBLISHER_KEY),
            "rooms",
            Outcome::Ok,
        ),
        (
            "wrong key",
            Cred::Bearer(wrong_key),
            "news",
            Outcome::BadToken,
        ),
        (
            "key with its last char changed",
            Cred::Bearer(&near_key),
            "news",
            Outcome::BadToken,
        ),
    ];
    let mut problems = Problems::default();
    let mut accepted = BTreeSet::new();
    let mut n = 0;
    for route in [PublishRoute::Json, PublishRoute::Text, PublishRoute::Notify] {
        for (what, cred, channel, outcome) in &cases {
            n += 1;
            let label = format!("{route:?} {n}: {what} -> {channel}");
            let payload = json!({"case": label});
            let reply = match route {
                PublishRoute::Json => api.publish(*cred, channel, payload).await,
                PublishRoute::Text => {
                    let path = format!("/api/publish?channel={channel}");
                    api.post_text(&path, *cred, &payload.to_string()).await
                }
                PublishRoute::Notify => {
                    let body = json!({"message": payload, "channel": channel});
                    api.post("/api/notify", *cred, &body).await
                }
            };
            problems.check(&label, &reply, *outcome);
            if reply.status == 200 {
                accepted.insert(label);
            }
        }
    }
    // The broadcast channel (`/api/notify` without a channel) needs its own permission.
    for (what, cred, outcome) in [
        ("token", Cred::Bearer(&writer), Outcome::Forbidden),
        ("publisher key", Cred::Bearer(PUBLISHER_KEY), Outcome::Ok),
    ] {
        let label = format!("broadcast notify by {what}");
        let body = json!({"message": {"case": label}});
        let reply = api.post("/api/notify", cred, &body).await;
        problems.check(&label, &reply, outcome);
        if reply.status == 200 {
            accepted.insert(label);
        }
    }
    // A user's channel: `~user/<id>` in the publish claim, or the key.
    let user_cases: Vec<(&str, String, Outcome)> = vec![
        ("writer token", writer.clone(), Outcome::Forbidden),
        (
            "token for ~user/alice",
            hs256(&claims("alice", &[], &["~user/alice"])),
            Outcome::Forbidden,
        ),
        (
            "token for ~user/bob",
            hs256(&claims("carol", &[], &["~user/bob"])),
            Outcome::Ok,
        ),
        (
            "token for ~user/*",
            hs256(&claims("carol", &[], &["~user/*"])),
            Outcome::Ok,
        ),
        ("publisher key", PUBLISHER_KEY.to_owned(), Outcome::Ok),
    ];
    let mut accepted_bob = BTreeSet::new();
    for (what, token, outcome) in &user_cases {
        let label = format!("notify bob by {what}");
        let body = json!({"message": {"case": label}});
        let reply = api
            .post("/api/users/bob/notify", Cred::Bearer(token), &body)
            .await;
        problems.check(&label, &reply, *outcome);
        if reply.status == 200 {
            accepted_bob.insert(label);
        }
    }

    // Exactly the accepted publishes were delivered; nothing refused leaked through.
    api.publish_ok("sentinel", json!({"case": "end"})).await;
    let events = stream
        .events_until(|m| marker(m).as_deref() == Some("end"))
        .await;
    let delivered: BTreeSet<String> = events
        .iter()
        .filter_map(marker)
        .filter(|m| m != "end")
        .collect();
    if delivered != accepted {
        problems.push(format!(
            "delivered to the watcher but refused: {:?}; accepted but not delivered: {:?}",
            delivered.difference(&accepted).collect::<Vec<_>>(),
            accepted.difference(&delivered).collect::<Vec<_>>()
        ));
    }
    let body = json!({"message": {"case": "end"}});
    let reply = api
        .post("/api/users/bob/notify", Cred::Bearer(PUBLISHER_KEY), &body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let events = bob
        .events_until(|m| marker(m).as_deref() == Some("end"))
        .await;
    let delivered: BTreeSet<String> = events
        .iter()
        .filter_map(marker)
        .filter(|m| m != "end")
        .collect();
    if delivered != accepted_bob {
        problems.push(format!(
            "bob's stream got {delivered:?}, expected {accepted_bob:?}"
        ));
    }
    problems.assert_none();
}

#[tokio::test]
async fn auth_off_still_checks_tokens_that_are_sent() {
    let server = off_server();
    let api = server.api();
    let reader = hs256(&claims("alice", &["news"], &[]));
    let mut problems = Problems::default();
    let reply = api.probe("/events", Cred::None).await;
    problems.check("GET /events, no token", &reply, Outcome::Ok);
    let reply = api.probe("/events/alice", Cred::None).await;
    problems.check("GET /events/alice, no token", &reply, Outcome::Ok);
    let reply = api.probe("/secure-events?channel=news", Cred::None).await;
    problems.check("GET /secure-events, no token", &reply, Outcome::NoToken);
    let reply = api
        .probe("/secure-events?channel=news", Cred::Bearer(&reader))
        .await;
    problems.check("GET /secure-events with a token", &reply, Outcome::Ok);
    let reply = api.publish(Cred::None, "news", json!(1)).await;
    problems.check("anonymous JSON publish", &reply, Outcome::Ok);
    let body = json!({"message": 1, "channel": "news"});
    let reply = api.post("/api/notify", Cred::None, &body).await;
    problems.check("anonymous notify", &reply, Outcome::Ok);
    // A token that is sent is verified and its permissions apply.
    let reply = api.post("/api/notify", Cred::Bearer(&reader), &body).await;
    problems.check("notify with a read-only token", &reply, Outcome::Forbidden);
    let reply = api
        .post_text("/api/publish?channel=news", Cred::Bearer(&reader), "x")
        .await;
    problems.check(
        "text publish with a read-only token",
        &reply,
        Outcome::Forbidden,
    );
    let reply = api.publish(Cred::Bearer(&reader), "news", json!(1)).await;
    problems.check(
        "JSON publish with a read-only token",
        &reply,
        Outcome::Forbidden,
    );
    let reply = api.publish(Cred::Bearer("garbage"), "news", json!(1)).await;
    problems.check(
        "JSON publish with a garbage token",
        &reply,
        Outcome::BadToken,
    );
    let reply = api
        .post("/api/notify", Cred::Bearer("garbage"), &body)
        .await;
    problems.check("notify with a garbage token", &reply, Outcome::BadToken);
    problems.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Impersonation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn impersonation_attempts_are_refused_with_auth_required() {
    let server = required_server();
    let api = server.api();
    let alice = hs256(&claims(
        "alice",
        &["news", "sport", "~user/*"],
        &["news", "~user/alice"],
    ));
    let bob = hs256(&claims("bob", &["sport"], &[]));
    let mut problems = Problems::default();

    // Another user's stream: `sub` must be the user, whatever the subscribe claim says.
    let reply = api.probe("/events/bob", Cred::Bearer(&alice)).await;
    problems.check(
        "GET /events/bob with alice's token",
        &reply,
        Outcome::Forbidden,
    );
    let reply = api.probe("/events/alice", Cred::Bearer(&alice)).await;
    problems.check("GET /events/alice with alice's token", &reply, Outcome::Ok);

    // Notifying another user needs `~user/<them>` in the publish claim.
    let mut bob_stream = api.stream("/events/bob", Cred::Bearer(&bob)).await;
    let body = json!({"message": {"case": "from alice"}});
    let reply = api
        .post("/api/users/bob/notify", Cred::Bearer(&alice), &body)
        .await;
    problems.check("notify bob with alice's token", &reply, Outcome::Forbidden);

    // Changing alice's stream with bob's token (which allows the channel) or with none.
    let mut alice_stream = api
        .stream("/secure-events?channel=news", Cred::Bearer(&alice))
        .await;
    let id = alice_stream.connection_id();
    let reply = api.change(Cred::Bearer(&bob), &id, "sport", true).await;
    problems.check("bob subscribes alice's stream", &reply, Outcome::Forbidden);
    let reply = api.change(Cred::Bearer(&bob), &id, "news", false).await;
    problems.check(
        "bob unsubscribes alice's stream",
        &reply,
        Outcome::Forbidden,
    );
    let reply = api.change(Cred::None, &id, "sport", true).await;
    problems.check(
        "no token subscribes alice's stream",
        &reply,
        Outcome::NoToken,
    );
    problems.assert_none();

    // Nothing of that changed what either stream receives.
    let reply = api
        .post(
            "/api/users/bob/notify",
            Cred::Bearer(PUBLISHER_KEY),
            &json!({"message": {"case": "end"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let events = bob_stream
        .events_until(|m| marker(m).as_deref() == Some("end"))
        .await;
    assert_eq!(
        events.len(),
        1,
        "bob got more than the key's notice: {events:?}"
    );
    api.publish_ok("sport", json!({"case": "sport"})).await;
    api.publish_ok("news", json!({"case": "news"})).await;
    let events = alice_stream
        .events_until(|m| marker(m).as_deref() == Some("news"))
        .await;
    assert_eq!(events.len(), 1, "alice's stream was changed: {events:?}");
}

#[tokio::test]
async fn a_token_opened_stream_is_changed_only_by_its_owner_with_auth_off() {
    let server = off_server();
    let api = server.api();
    let alice = hs256(&claims("alice", &["news", "sport"], &[]));
    let bob = hs256(&claims("bob", &["news", "sport"], &[]));
    let mut stream = api
        .stream("/secure-events?channel=news", Cred::Bearer(&alice))
        .await;
    let id = stream.connection_id();
    let mut problems = Problems::default();
    for (what, cred, add) in [
        ("bob subscribes", Cred::Bearer(&bob), true),
        ("bob unsubscribes", Cred::Bearer(&bob), false),
        ("no token subscribes", Cred::None, true),
        ("no token unsubscribes", Cred::None, false),
    ] {
        let channel = if add { "sport" } else { "news" };
        let reply = api.change(cred, &id, channel, add).await;
        problems.check(what, &reply, Outcome::Forbidden);
    }
    let reply = api.change(Cred::Bearer(&alice), &id, "sport", true).await;
    problems.check("alice subscribes her own stream", &reply, Outcome::Ok);

    // A stream opened without a token has no owner: anyone may change it (auth is off).
    let open = api.stream("/events?channel=news", Cred::None).await;
    let reply = api
        .change(Cred::None, &open.connection_id(), "sport", true)
        .await;
    problems.check(
        "no token subscribes an anonymous stream",
        &reply,
        Outcome::Ok,
    );
    problems.assert_none();

    api.publish_ok("sport", json!({"case": "sport"})).await;
    let event = stream.next_event().await;
    assert_eq!(marker(&event).as_deref(), Some("sport"));
}

// ---------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------

fn is_token_expired(message: &Message) -> bool {
    message.event == "closed"
        && serde_json::from_str::<Value>(&message.data).ok()
            == Some(json!({"reason": "token-expired"}))
}

#[tokio::test]
async fn expiry_closes_the_stream_and_a_fresh_token_resumes_without_loss() {
    let server = required_server();
    let api = server.api();
    let mut short = claims("alice", &["feed"], &[]);
    short["exp"] = json!(now() + 2);
    let mut sse = api
        .stream("/events?channel=feed", Cred::Bearer(&hs256(&short)))
        .await;

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(api.publish_ok("feed", json!({"n": n})).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let event = sse.next_event().await;
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
        assert_eq!(envelope(&event).1, json!({"n": n}));
    }

    // The token runs out: a final `closed` event, then the body ends.
    let rest = sse.events_to_end(EXPIRY_BOUND).await;
    assert!(
        sse.end().is_some(),
        "the stream did not end within {EXPIRY_BOUND:?}: {rest:?}"
    );
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(is_token_expired(&rest[0]), "{rest:?}");
    // What a browser's `closed` handler reads as `event.lastEventId`: where to resume.
    assert_eq!(rest[0].last_event_id, ids[2]);
    let resume_from = sse.last_event_id().to_owned();
    assert_eq!(resume_from, ids[2]);

    // Missed while away.
    for n in 3..6 {
        ids.push(api.publish_ok("feed", json!({"n": n})).await);
    }
    let fresh = hs256(&claims("alice", &["feed"], &[]));
    let headers = vec![("last-event-id".to_owned(), resume_from)];
    let mut again = api
        .open_with("/events?channel=feed", Cred::Bearer(&fresh), &headers)
        .await
        .unwrap_or_else(|r| panic!("reconnect refused: {} {}", r.status, r.body));
    ids.push(api.publish_ok("feed", json!({"n": 6})).await);
    let events = again
        .events_until(|m| envelope(m).1 == json!({"n": 6}))
        .await;
    let got: Vec<(Option<String>, Value)> = events
        .iter()
        .map(|m| (m.id.clone(), envelope(m).1))
        .collect();
    let expected: Vec<(Option<String>, Value)> = (3..7)
        .map(|n| (Some(ids[n].clone()), json!({"n": n})))
        .collect();
    assert_eq!(
        got, expected,
        "every missed event once, in order, then live ones"
    );
}

#[tokio::test]
async fn token_within_the_connect_leeway_is_accepted_then_closed_at_once() {
    let server = required_server();
    let api = server.api();
    // Expired 2 s ago: inside the 5 s leeway of the connect check, so the stream opens, and the
    // shard, which applies no leeway, closes it on its next tick.
    let mut c = claims("alice", &["feed"], &[]);
    c["exp"] = json!(now() - 2);
    let mut sse = api
        .stream("/events?channel=feed", Cred::Bearer(&hs256(&c)))
        .await;
    let rest = sse.events_to_end(EXPIRY_BOUND).await;
    assert!(sse.end().is_some());
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(is_token_expired(&rest[0]), "{rest:?}");
    // Past the leeway it is refused outright.
    c["exp"] = json!(now() - 30);
    let reply = api
        .probe("/events?channel=feed", Cred::Bearer(&hs256(&c)))
        .await;
    if let Some(problem) = support::api::expect(&reply, Outcome::BadToken) {
        panic!("{problem}");
    }
}

// ---------------------------------------------------------------------------------------------
// The refusal counter
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn auth_failures_counts_each_refusal_once() {
    let server = required_server();
    let api = server.api();
    assert_eq!(api.auth_failures().await, 0);
    let alice = hs256(&claims("alice", &["news"], &["news"]));
    let bob = hs256(&claims("bob", &["news"], &[]));
    let mut expired = claims("alice", &["news"], &[]);
    expired["exp"] = json!(now() - 60);
    let expired = hs256(&expired);
    let stream = api
        .stream("/events?channel=news", Cred::Bearer(&alice))
        .await;
    let id = stream.connection_id();
    let mut failures = 0;
    let mut problems = Problems::default();

    macro_rules! step {
        ($what:expr, $counts:expr, $reply:expr) => {{
            let reply: Reply = $reply;
            if $counts {
                failures += 1;
            }
            let now = api.auth_failures().await;
            if now != failures {
                problems.push(format!(
                    "{}: authFailures {now}, expected {failures} (status {})",
                    $what, reply.status
                ));
                failures = now;
            }
        }};
    }
    step!(
        "missing token",
        true,
        api.probe("/events", Cred::None).await
    );
    step!(
        "tampered token",
        true,
        api.probe(
            "/events?channel=news",
            Cred::Bearer(&tamper_signature(&alice))
        )
        .await
    );
    step!(
        "expired token",
        true,
        api.probe("/secure-events", Cred::Bearer(&expired)).await
    );
    step!(
        "forbidden channel",
        true,
        api.probe("/events?channel=sport", Cred::Bearer(&alice))
            .await
    );
    step!(
        "another user's stream",
        true,
        api.probe("/events/bob", Cred::Bearer(&alice)).await
    );
    step!(
        "forbidden notify",
        true,
        api.post(
            "/api/notify",
            Cred::Bearer(&bob),
            &json!({"message": 1, "channel": "news"})
        )
        .await
    );
    step!(
        "wrong publisher key",
        true,
        api.post(
            "/api/notify",
            Cred::Bearer("wrong-publisher-key-0123456789"),
            &json!({"message": 1, "channel": "news"})
        )
        .await
    );
    step!(
        "subscribe on another user's stream",
        true,
        api.change(Cred::Bearer(&bob), &id, "news", true).await
    );
    step!(
        "valid stream",
        false,
        api.probe("/events?channel=news", Cred::Bearer(&bob)).await
    );
    step!(
        "valid notify",
        false,
        api.post(
            "/api/notify",
            Cred::Bearer(&alice),
            &json!({"message": 1, "channel": "news"})
        )
        .await
    );
    step!(
        "publisher key",
        false,
        api.publish(Cred::Bearer(PUBLISHER_KEY), "news", json!(1))
            .await
    );
    step!(
        "own subscribe",
        false,
        api.change(Cred::Bearer(&alice), &id, "news", true).await
    );
    step!("stats", false, api.get("/stats", Cred::None).await);
    drop(stream);
    problems.assert_none();
    assert_eq!(api.auth_failures().await, failures);
}

// ---------------------------------------------------------------------------------------------
// Property: no event of a channel the token does not allow reaches its stream
// ---------------------------------------------------------------------------------------------

const CHANNELS: [&str; 5] = ["a", "b", "abc", "a/x", "b/z"];
const PATTERNS: [&str; 9] = [
    "a", "b", "a/*", "b/*", "ab*", "a/x", "~user/*", "~user/u1", "~user/u2",
];
/// Every token may read it and every stream carries it: published last, it proves that
/// everything published before has been delivered (streams receive in id order).
const SENTINEL: &str = "sentinel";

#[derive(Debug, Clone)]
enum OpenPlan {
    /// `/secure-events` without `channel`.
    Secure,
    /// `/events?channel=...`.
    Events(Vec<usize>),
    /// `/events/<own id>?channel=...`.
    User(Vec<usize>),
}

#[derive(Debug, Clone)]
struct ClientPlan {
    subscribe: Vec<usize>,
    publish: Vec<usize>,
    open: OpenPlan,
}

#[derive(Debug, Clone)]
enum Action {
    /// `actor` adds or removes `channel` on `target`'s stream.
    Change {
        actor: usize,
        target: usize,
        channel: usize,
        add: bool,
    },
    /// Publish on a channel: by the key (`by == 2`, `/api/publish`) or a client's token
    /// (`/api/notify`).
    Publish { by: usize, channel: usize },
    /// Notify user `user` (u1 or u2): by the key or a client's token.
    NotifyUser { by: usize, user: usize },
}

fn client_plan() -> impl Strategy<Value = ClientPlan> {
    let patterns: Vec<usize> = (0..PATTERNS.len()).collect();
    let channels: Vec<usize> = (0..CHANNELS.len()).collect();
    (
        proptest::sample::subsequence(patterns.clone(), 1..=5),
        proptest::sample::subsequence(patterns, 0..=4),
        // Most streams should open (asking for few channels, maybe none besides the sentinel)
        // and then grow with `/subscribe`; some ask for more and are likely refused.
        prop_oneof![
            1 => Just(OpenPlan::Secure),
            2 => proptest::sample::subsequence(channels.clone(), 0..=2).prop_map(OpenPlan::Events),
            1 => proptest::sample::subsequence(channels, 0..=1).prop_map(OpenPlan::User),
        ],
    )
        .prop_map(|(subscribe, publish, open)| ClientPlan {
            subscribe,
            publish,
            open,
        })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        // Mostly a client changing its own stream (adding more often than removing), sometimes
        // the other client trying to change it.
        4 => (0..2usize, 0..4usize, 0..CHANNELS.len(), 0..3usize).prop_map(
            |(target, impostor, channel, add)| Action::Change {
                actor: if impostor == 0 { 1 - target } else { target },
                target,
                channel,
                add: add > 0,
            }
        ),
        // The key (`by == 2`) publishes more often than either token.
        4 => (0..4usize, 0..CHANNELS.len())
            .prop_map(|(by, channel)| Action::Publish { by: by.min(2), channel }),
        1 => (0..3usize, 0..2usize).prop_map(|(by, user)| Action::NotifyUser { by, user }),
    ]
}

/// One client of a case: its token's claims, modelled, and its stream if it was let in.
struct Client {
    user: String,
    subscribe: Vec<String>,
    publish: Vec<String>,
    token: String,
    stream: Option<RawClient>,
    /// The stream's channels now.
    channels: BTreeSet<String>,
}

impl Client {
    fn may_read(&self, channel: &str) -> bool {
        channel == format!("~user/{}", self.user)
            || self.subscribe.iter().any(|p| pattern_allows(p, channel))
    }

    fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| pattern_allows(p, channel))
    }
}

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

/// What the property test saw, to make sure it was not vacuous.
#[derive(Debug, Default)]
struct Tally {
    /// Events of the case checked on a stream (sentinels aside).
    delivered: Cell<usize>,
    /// Requests refused with 403.
    refused: Cell<usize>,
}

impl Tally {
    fn count(&self, cell: fn(&Tally) -> &Cell<usize>) {
        let cell = cell(self);
        cell.set(cell.get() + 1);
    }
}

async fn run_case(
    api: &Api,
    tally: &Tally,
    case: usize,
    plans: &[ClientPlan; 2],
    actions: &[Action],
) -> Result<(), TestCaseError> {
    let mut clients = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let user = format!("u{}", i + 1);
        let mut subscribe: Vec<String> = plan
            .subscribe
            .iter()
            .map(|&p| PATTERNS[p].to_owned())
            .collect();
        subscribe.push(SENTINEL.to_owned());
        let publish: Vec<String> = plan
            .publish
            .iter()
            .map(|&p| PATTERNS[p].to_owned())
            .collect();
        let sub_refs: Vec<&str> = subscribe.iter().map(String::as_str).collect();
        let pub_refs: Vec<&str> = publish.iter().map(String::as_str).collect();
        let token = hs256(&claims(&user, &sub_refs, &pub_refs));
        let mut client = Client {
            user,
            subscribe,
            publish,
            token,
            stream: None,
            channels: BTreeSet::new(),
        };
        let (path, wanted): (String, Vec<String>) = match &plan.open {
            OpenPlan::Secure => {
                let exact = client
                    .subscribe
                    .iter()
                    .filter(|p| !p.ends_with('*') && !p.starts_with('~'))
                    .cloned()
                    .collect();
                ("/secure-events".to_owned(), exact)
            }
            OpenPlan::Events(chs) | OpenPlan::User(chs) => {
                let mut names: Vec<String> = chs.iter().map(|&c| CHANNELS[c].to_owned()).collect();
                names.push(SENTINEL.to_owned());
                let query = format!("?channel={}", names.join(","));
                if matches!(plan.open, OpenPlan::User(_)) {
                    names.insert(0, format!("~user/{}", client.user));
                    (format!("/events/{}{query}", client.user), names)
                } else {
                    (format!("/events{query}"), names)
                }
            }
        };
        let allowed = wanted.iter().all(|c| client.may_read(c));
        match api.open(&path, Cred::Bearer(&client.token)).await {
            Ok(sse) => {
                ensure(allowed, || {
                    format!("GET {path} accepted for {:?}", client.subscribe)
                })?;
                ensure(sse.channels() == wanted, || {
                    format!(
                        "GET {path}: channels {:?}, expected {wanted:?}",
                        sse.channels()
                    )
                })?;
                client.channels = wanted.into_iter().collect();
                client.stream = Some(sse);
            }
            Err(reply) => {
                tally.count(|t| &t.refused);
                ensure(!allowed && reply.status == 403, || {
                    format!(
                        "GET {path} for {:?}: {} {}",
                        client.subscribe, reply.status, reply.body
                    )
                })?;
            }
        }
        clients.push(client);
    }

    // Marker → the clients whose stream must receive it.
    let mut expected: HashMap<String, Vec<usize>> = HashMap::new();
    for (n, action) in actions.iter().enumerate() {
        let label = format!("k{case}-{n}");
        match *action {
            Action::Change {
                actor,
                target,
                channel,
                add,
            } => {
                let Some(target_stream) = &clients[target].stream else {
                    continue;
                };
                let id = target_stream.connection_id();
                let channel = CHANNELS[channel];
                let reply = api
                    .change(Cred::Bearer(&clients[actor].token), &id, channel, add)
                    .await;
                let ok = (!add || clients[actor].may_read(channel)) && actor == target;
                ensure(reply.status == if ok { 200 } else { 403 }, || {
                    format!("{action:?}: {} {}", reply.status, reply.body)
                })?;
                if !ok {
                    tally.count(|t| &t.refused);
                }
                if ok {
                    let set = &mut clients[target].channels;
                    if add {
                        set.insert(channel.to_owned());
                    } else {
                        set.remove(channel);
                    }
                }
            }
            Action::Publish { by, channel } => {
                let channel = CHANNELS[channel];
                let payload = json!({"case": label});
                let (reply, ok) = if by == 2 {
                    (
                        api.publish(Cred::Bearer(PUBLISHER_KEY), channel, payload)
                            .await,
                        true,
                    )
                } else {
                    let body = json!({"message": payload, "channel": channel});
                    let reply = api
                        .post("/api/notify", Cred::Bearer(&clients[by].token), &body)
                        .await;
                    (reply, clients[by].may_publish(channel))
                };
                ensure(reply.status == if ok { 200 } else { 403 }, || {
                    format!("{action:?}: {} {}", reply.status, reply.body)
                })?;
                if !ok {
                    tally.count(|t| &t.refused);
                }
                if ok {
                    let receivers = (0..2)
                        .filter(|&i| {
                            clients[i].stream.is_some() && clients[i].channels.contains(channel)
                        })
                        .collect();
                    expected.insert(label, receivers);
                }
            }
            Action::NotifyUser { by, user } => {
                let channel = format!("~user/u{}", user + 1);
                let (cred, ok) = if by == 2 {
                    (Cred::Bearer(PUBLISHER_KEY), true)
                } else {
                    (
                        Cred::Bearer(&clients[by].token),
                        clients[by].may_publish(&channel),
                    )
                };
                let path = format!("/api/users/u{}/notify", user + 1);
                let reply = api
                    .post(&path, cred, &json!({"message": {"case": label}}))
                    .await;
                ensure(reply.status == if ok { 200 } else { 403 }, || {
                    format!("{action:?}: {} {}", reply.status, reply.body)
                })?;
                if !ok {
                    tally.count(|t| &t.refused);
                }
                if ok {
                    let receivers = (0..2)
                        .filter(|&i| {
                            clients[i].stream.is_some() && clients[i].channels.contains(&channel)
                        })
                        .collect();
                    expected.insert(label, receivers);
                }
            }
        }
    }

    let end = format!("k{case}-end");
    api.publish_ok(SENTINEL, json!({"case": end})).await;
    for (i, client) in clients.iter_mut().enumerate() {
        let Some(stream) = client.stream.as_mut() else {
            continue;
        };
        let events = stream
            .events_until(|m| marker(m).as_deref() == Some(end.as_str()))
            .await;
        let mut seen = BTreeSet::new();
        for event in &events {
            if event.event != "message" && event.event != "notification" {
                continue;
            }
            let (channel, _) = envelope(event);
            // The property: whatever reaches the stream is on a channel its token may read.
            let reads = client.subscribe.clone();
            let user = client.user.clone();
            ensure(
                channel == format!("~user/{user}")
                    || reads.iter().any(|p| pattern_allows(p, &channel)),
                || {
                    format!("{user}'s stream (may read {reads:?}) got an event of {channel:?}: {event:?}")
                },
            )?;
            let Some(label) = marker(event) else { continue };
            if !label.starts_with(&format!("k{case}-")) || label == end {
                continue; // queued for the user in an earlier case: checked above, no more
            }
            tally.count(|t| &t.delivered);
            ensure(seen.insert(label.clone()), || {
                format!("client {i} got {label} twice")
            })?;
            ensure(expected.get(&label).is_some_and(|r| r.contains(&i)), || {
                format!(
                    "client {i} got {label}, not expected: {:?}",
                    expected.get(&label)
                )
            })?;
        }
        for (label, receivers) in &expected {
            ensure(!receivers.contains(&i) || seen.contains(label), || {
                format!("client {i} missed {label}")
            })?;
        }
    }
    Ok(())
}

#[test]
fn no_event_of_an_unauthorized_channel_reaches_a_stream() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = required_server();
    let api = server.api();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = Cell::new(0usize);
    let tally = Tally::default();
    let strategy = (
        client_plan(),
        client_plan(),
        proptest::collection::vec(action(), 4..32),
    );
    let result = runner.run(&strategy, |(first, second, actions)| {
        let n = case.get();
        case.set(n + 1);
        runtime.block_on(run_case(&api, &tally, n, &[first, second], &actions))
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!("property test: {tally:?}");
    assert!(
        tally.delivered.get() > 0 && tally.refused.get() > 0,
        "the cases exercised nothing: {tally:?}"
    );
}
