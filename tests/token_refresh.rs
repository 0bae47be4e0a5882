//! `POST /token`: a live stream's credential replaced in place, end to end against the binary.
//!
//! Covered: a refresh moves the stream's expiry (the stream outlives its first token and keeps
//! receiving events, with no `closed`), channels the new token no longer grants end with an
//! `unsubscribed` event while the others keep flowing, and every refusal: 401 for a bad token,
//! 403 for another user's token or a stream opened without one, 404 for an unknown connection,
//! 400 for a malformed body, each with a JSON error body.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::api::{envelope, Cred};
use support::jwt::{claims, hs256, now, tamper_signature, PUBLISHER_KEY, SECRET};
use support::Server;

fn server(auth: &str) -> Server {
    Server::spawn(&[
        "--workers",
        "2",
        "--auth",
        auth,
        "--jwt-secret",
        SECRET,
        "--publisher-key",
        PUBLISHER_KEY,
    ])
}

fn short_lived(sub: &str, subscribe: &[&str], seconds: i64) -> String {
    let mut c = claims(sub, subscribe, &[]);
    c["exp"] = json!(now() + seconds);
    hs256(&c)
}

#[tokio::test]
async fn a_refreshed_stream_outlives_its_first_token_and_loses_what_is_no_longer_granted() {
    let server = server("required");
    let api = server.api();
    let first = short_lived("alice", &["feed", "extra"], 2);
    let mut sse = api
        .stream("/events?channel=feed&channel=extra", Cred::Bearer(&first))
        .await;

    let later = now() + 60;
    let mut fresh = claims("alice", &["feed"], &[]);
    fresh["exp"] = json!(later);
    let reply = api
        .post(
            "/token",
            Cred::Bearer(&hs256(&fresh)),
            &json!({"connectionId": sse.connection_id()}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({
            "success": true,
            "connectionId": sse.connection_id(),
            "expiresAt": later,
            "unsubscribed": ["extra"],
        })
    );
    let notice = sse.next_event().await;
    assert_eq!(notice.event, "unsubscribed", "{notice:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&notice.data).unwrap(),
        json!({"channel": "extra", "reason": "not-granted"})
    );

    // Well past the first token's exp (2 s, checked every 0.5 s): still open, no `closed`.
    tokio::time::sleep(Duration::from_secs(4)).await;
    api.publish_ok("extra", json!({"n": "extra"})).await;
    let id = api.publish_ok("feed", json!({"n": 1})).await;
    let event = sse.next_event().await;
    assert_eq!(event.event, "message", "{event:?}");
    assert_eq!(event.id.as_deref(), Some(id.as_str()));
    assert_eq!(envelope(&event), ("feed".to_owned(), json!({"n": 1})));
}

#[tokio::test]
async fn refusals_have_precise_statuses() {
    let server = server("off");
    let api = server.api();
    let token = hs256(&claims("alice", &["feed"], &[]));
    let owned = api
        .stream("/secure-events?channel=feed", Cred::Bearer(&token))
        .await;
    let anonymous = api.stream("/events?channel=feed", Cred::None).await;
    let body = |id: &str| json!({"connectionId": id});
    let tampered = tamper_signature(&token);
    let mallory = hs256(&claims("mallory", &["feed"], &[]));

    let cases: Vec<(&str, Cred<'_>, Value, u16)> = vec![
        ("no token", Cred::None, body(&owned.connection_id()), 401),
        (
            "a tampered token",
            Cred::Bearer(&tampered),
            body(&owned.connection_id()),
            401,
        ),
        (
            "another user's token",
            Cred::Bearer(&mallory),
            body(&owned.connection_id()),
            403,
        ),
        (
            "a stream opened without a token",
            Cred::Bearer(&token),
            body(&anonymous.connection_id()),
            403,
        ),
        (
            "an unknown connection",
            Cred::Bearer(&token),
            body("s0-0123456789abcdef"),
            404,
        ),
        (
            "an unknown custom id",
            Cred::Bearer(&token),
            body("nobody"),
            404,
        ),
        ("no connectionId", Cred::Bearer(&token), json!({}), 400),
        (
            "an unknown field",
            Cred::Bearer(&token),
            json!({"connectionId": owned.connection_id(), "extra": 1}),
            400,
        ),
        ("an empty connectionId", Cred::Bearer(&token), body(""), 400),
    ];
    for (what, cred, body, status) in cases {
        let reply = api.post("/token", cred, &body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert!(!reply.error().is_empty(), "{what}: {}", reply.body);
    }
    let reply = api
        .post_text("/token", Cred::Bearer(&token), "not json")
        .await;
    assert!(reply.status == 400 || reply.status == 415, "{}", reply.body);
    // The owner's refresh works on both streams' server.
    let reply = api
        .post(
            "/token",
            Cred::Bearer(&token),
            &body(&owned.connection_id()),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["unsubscribed"], json!([]));
}
