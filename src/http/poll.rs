//! `GET /poll?channel=...&since=<id>`: long polling on the same hub, channels, ids and history as
//! `/events`.
//!
//! A poll is a short-lived stream: it opens at `since` exactly as an SSE stream resumes from
//! `Last-Event-ID` (so the replay of `(since, now]` and the live events after it meet with no gap
//! and no duplicate), answers as soon as anything is queued, or after `--poll-timeout` with
//! nothing. The answer is `{"events":[...],"next":"<id>"}`; each event is the JSON object the hub
//! built once for the JSON transports, copied into the array, and `next` is what the client
//! polls with next. Without `since`, the poll waits for the next event from now.

use std::future::poll_fn;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::events::{prepare, Kind};
use super::response::HandlerError;
use super::{Body, Ctx};
use crate::hub::{json_id, HubError, Transport};

/// Most events in one answer. A client far behind gets the rest on its next poll (from history),
/// so one answer stays a bounded buffer.
pub const MAX_POLL_EVENTS: usize = 1000;

/// Handles one long poll.
pub(crate) async fn poll(
    ctx: &Rc<Ctx>,
    request: Request<Incoming>,
) -> Result<Response<Body>, HandlerError> {
    let mut opening = prepare(ctx, &request, Kind::Public)?.opening(Transport::Poll);
    let since = opening.last_event_id.clone();
    drop(request);
    // A poll is a moment, not a connection: it takes no client-chosen id (that would collide
    // with the client's next poll).
    opening.id = None;
    let mut subscription = ctx.bus.open(&ctx.shard, opening)?;
    let mut events = Vec::new();
    // Shutdown ends the stream (the shard closes it), which answers the poll at once.
    let _ = tokio::time::timeout(
        ctx.config.poll_timeout,
        poll_fn(|cx| subscription.poll_take(cx, &mut events, MAX_POLL_EVENTS)),
    )
    .await;
    if subscription.is_failed() {
        // The catch-up could not be read (the broker is unreachable): answering with an empty
        // list and a `next` would skip what the client has not seen.
        return Err(HandlerError::Hub(HubError::Unavailable));
    }
    let next = match events.iter().rev().find_map(|event| json_id(event)) {
        Some(id) => id.to_owned(),
        // Still waiting for its catch-up at the timeout: the client stays where it was.
        None if subscription.is_held() => since.unwrap_or_else(|| subscription.start_id()),
        None => subscription.start_id(),
    };
    drop(subscription);
    Ok(answer(&events, &next))
}

/// `{"events":[e1,e2,...],"next":"<id>"}`; the events are already JSON.
fn answer(events: &[Bytes], next: &str) -> Response<Body> {
    let size: usize = events.iter().map(|e| e.len() + 1).sum::<usize>() + next.len() + 32;
    let mut body = BytesMut::with_capacity(size);
    body.put_slice(b"{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(event);
    }
    // Ids are `<base36>-<digits>`: nothing to escape.
    body.put_slice(b"],\"next\":\"");
    body.put_slice(next.as_bytes());
    body.put_slice(b"\"}");
    let mut response = Response::new(Body::full(body.freeze()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answer_is_a_json_array_and_next() {
        let events = [
            Bytes::from_static(br#"{"id":"k-1","event":"message","data":1}"#),
            Bytes::from_static(br#"{"id":"k-2","event":"message","data":"two"}"#),
        ];
        let body = collect(answer(&events, "k-2"));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["next"], "k-2");
        assert_eq!(value["events"][1]["data"], "two");
        let body = collect(answer(&[], "k-9"));
        assert_eq!(&body[..], br#"{"events":[],"next":"k-9"}"#);
    }

    fn collect(response: Response<Body>) -> Bytes {
        use http_body_util::BodyExt;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes()
    }
}
