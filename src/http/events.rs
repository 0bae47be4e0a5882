//! `GET /events`: opens an event stream on this worker's shard.
//!
//! The stream starts with a `retry:` field and a `connected` event carrying the connection id.
//! When the connection limit is reached, an EventSource client still gets a 200 (any other status
//! makes a browser give up for good) whose body is only a jittered `retry:`, then the stream
//! closes; anything else gets a 503.

use std::rc::Rc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use serde::Serialize;

use super::response::{error_response, HandlerError};
use super::{Body, Ctx};
use crate::hub::{ConnId, HubError};
use crate::sse::{self, Event};

/// Range of the reconnection delay sent to clients refused for the connection limit: long enough
/// that a full server is not hammered, randomized so refused clients do not return in lockstep.
const OVERLOAD_RETRY_MS: std::ops::RangeInclusive<u64> = 5_000..=15_000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Connected<'a> {
    connection_id: &'a str,
    worker: usize,
}

/// Opens a stream. Drops the request before returning, so the stream holds nothing of it.
pub(crate) fn open(ctx: &Rc<Ctx>, request: Request<Incoming>) -> Response<Body> {
    let wants_stream = accepts_event_stream(request.headers());
    let version = request.version();
    drop(request);
    let topics = [ctx.broadcast.clone()];
    let retry = ctx.config.retry;
    let worker = ctx.shard.index();
    let opened = ctx.shard.open(&topics, |id: &ConnId| {
        let data = serde_json::to_string(&Connected {
            connection_id: id.as_str(),
            worker,
        })
        .ok()?;
        Some(
            Event {
                name: Some(&ctx.connected),
                retry: Some(retry),
                data: &data,
                ..Event::default()
            }
            .encode(),
        )
    });
    match opened {
        Ok(subscription) => stream_response(version, Body::Stream(subscription)),
        Err(HubError::TooManyConnections) if wants_stream => {
            let delay = Duration::from_millis(fastrand::u64(OVERLOAD_RETRY_MS));
            stream_response(version, Body::Full(Some(sse::retry(delay))))
        }
        Err(error) => error_response(HandlerError::Hub(error)),
    }
}

fn stream_response(version: Version, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    set_stream_headers(version, response.headers_mut());
    response
}

/// The headers every event stream carries: no caching or transformation by proxies, no nginx
/// buffering, and never a content encoding.
fn set_stream_headers(version: Version, headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if version == Version::HTTP_11 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// A stream body made of a single frame (used by tests of the response headers).
#[cfg(test)]
fn single(frame: &'static str) -> Body {
    Body::Full(Some(bytes::Bytes::from_static(frame.as_bytes())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stream_headers() {
        let response = stream_response(Version::HTTP_11, single("data: x\n\n"));
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache, no-transform");
        assert_eq!(headers["x-accel-buffering"], "no");
        assert_eq!(headers[header::CONNECTION], "keep-alive");
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
        let h2 = stream_response(Version::HTTP_2, single("data: x\n\n"));
        assert!(h2.headers().get(header::CONNECTION).is_none());
    }

    #[test]
    fn accept_detection() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_event_stream(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(!accepts_event_stream(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("Text/Event-Stream"),
        );
        assert!(accepts_event_stream(&headers));
    }
}
