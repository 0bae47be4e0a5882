//! `GET /events`: opens an event stream on this worker's shard.
//!
//! The stream starts with a `retry:` field and a `connected` event carrying the connection id,
//! then (when resuming) the replay, then live events.
//! When the connection limit is reached, an EventSource client still gets a 200 (any other status
//! makes a browser give up for good) whose body is only a jittered `retry:`, then the stream
//! closes; anything else gets a 503.

use std::rc::Rc;
use std::time::Duration;

use super::query::StreamQuery;
use super::response::{error_response, HandlerError};
use super::{Body, Ctx};
use crate::auth::{AuthError, Principal};
use crate::chat::{self, Membership, RoomId};
use crate::hub::{HubError, OpenError, Opening, Recent, Topic, Transport, Tripwire, UserId};
use crate::sse;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

/// Range of the reconnection delay sent to clients refused for the connection limit: long enough
/// that a full server is not hammered, randomized so refused clients do not return in lockstep.
const OVERLOAD_RETRY_MS: std::ops::RangeInclusive<u64> = 5_000..=15_000;

/// Opens a stream. Drops the request before returning, so the stream holds nothing of it.
///
/// Channels come from `channel=` (none: the broadcast channel); the resume position from the
/// `Last-Event-ID` header, or else the `lastEventId` / `last_event_id` query parameter (the header
/// wins: a browser's automatic reconnect keeps the original URL but sends a fresh header).
/// Which stream route was asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind<'a> {
    /// `GET /events`: open unless `--auth required`.
    Public,
    /// `GET /events/:userId`: the user's private stream.
    User(&'a UserId),
    /// `GET /secure-events`: always needs a token; without `channel=` it carries every channel
    /// the token names exactly.
    Secure,
    /// `GET /metrics`: the `metrics` channel, starting with the latest sample.
    Metrics,
    /// `GET /chat/:roomId?userId=`: a chat room, starting with its recent messages.
    Chat(&'a RoomId),
}

pub(crate) fn open(
    ctx: &Rc<Ctx>,
    tripwire: &Rc<Tripwire>,
    request: Request<Incoming>,
    kind: Kind<'_>,
) -> Response<Body> {
    match open_stream(ctx, tripwire, request, kind) {
        Ok(response) => response,
        Err(error) => error_response(error),
    }
}

/// What a stream request asks for, authenticated and validated: the part every transport
/// shares.
pub(crate) struct Prepared {
    /// Channels to subscribe to (never empty).
    pub(crate) channels: Vec<Topic>,
    /// A client-chosen connection id.
    pub(crate) id: Option<String>,
    /// Where the client resumes from.
    pub(crate) last_event_id: Option<String>,
    /// The token's holder, when a token was required.
    pub(crate) principal: Option<Principal>,
    /// Who joins, for a chat room.
    pub(crate) member: Option<UserId>,
}

impl Prepared {
    /// How a stream of `transport` opens for this request; the route adds what is its own
    /// (a chat room's history, the tripwire).
    pub(crate) fn opening(&self, transport: Transport) -> Opening {
        Opening {
            topics: self.channels.clone(),
            id: self.id.clone(),
            last_event_id: self.last_event_id.clone(),
            owner: self.principal.as_ref().map(|p| p.user.clone()),
            expires_at: self.principal.as_ref().map(|p| p.expires_at),
            transport,
            ..Opening::default()
        }
    }
}

/// Authenticates and validates a stream request of `kind`, whatever its transport.
///
/// Channels come from `channel=` (none: the broadcast channel); the resume position from the
/// `Last-Event-ID` header, or else the `lastEventId` / `last_event_id` / `since` query parameter
/// (the header wins: a browser's automatic reconnect keeps the original URL but sends a fresh
/// header).
pub(crate) fn prepare(
    ctx: &Ctx,
    request: &Request<Incoming>,
    kind: Kind<'_>,
) -> Result<Prepared, HandlerError> {
    let mut query = StreamQuery::parse(request.uri().query())?;
    let principal = if matches!(kind, Kind::Secure) || ctx.auth.is_required() {
        Some(
            ctx.auth
                .authenticate(request.headers(), request.uri().query())?,
        )
    } else {
        None
    };
    let header_id = request
        .headers()
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let asked_for_none = query.channels.is_empty();
    match kind {
        // A user's stream carries the user's private channel, plus any channels asked for.
        Kind::User(user) => query.channels.insert(0, Topic::user(user)),
        Kind::Secure if asked_for_none => {
            if let Some(principal) = &principal {
                query.channels = principal
                    .subscribe
                    .iter()
                    .filter_map(|p| p.exact())
                    .filter_map(|name| Topic::parse(name).ok())
                    .collect();
            }
            if query.channels.is_empty() {
                return Err(ctx
                    .auth
                    .fail(AuthError::Forbidden(
                        "the token names no channel to subscribe to; ask with ?channel=".to_owned(),
                    ))
                    .into());
            }
        }
        Kind::Metrics => {
            query.channels = vec![Topic::parse(crate::metrics::sampler::CHANNEL)
                .map_err(|e| HandlerError::BadRequest(e.to_string()))?]
        }
        Kind::Chat(room) => query.channels = vec![room.topic()],
        _ if asked_for_none => query.channels.push(ctx.broadcast.clone()),
        _ => {}
    }
    if query.channels.len() > crate::hub::MAX_TOPICS_PER_STREAM {
        return Err(HandlerError::BadRequest(format!(
            "a stream may subscribe to at most {} channels",
            crate::hub::MAX_TOPICS_PER_STREAM
        )));
    }
    // A chat member is the token's subject when there is a token, else the `userId` parameter.
    let member = match kind {
        Kind::Chat(_) => Some(chat_member(
            ctx,
            principal.as_ref(),
            query.user_id.as_deref(),
        )?),
        _ => None,
    };
    if let Some(principal) = &principal {
        if let Kind::User(user) = kind {
            if *user != principal.user {
                return Err(ctx
                    .auth
                    .fail(AuthError::Forbidden(
                        "this is another user's stream".to_owned(),
                    ))
                    .into());
            }
        }
        if let Some(denied) = query.channels.iter().find(|t| !principal.may_subscribe(t)) {
            return Err(ctx
                .auth
                .fail(AuthError::Forbidden(format!(
                    "the token may not subscribe to '{denied}'"
                )))
                .into());
        }
    }
    Ok(Prepared {
        channels: query.channels,
        id: query.id,
        last_event_id: header_id.or(query.last_event_id),
        principal,
        member,
    })
}

fn open_stream(
    ctx: &Rc<Ctx>,
    tripwire: &Rc<Tripwire>,
    request: Request<Incoming>,
    kind: Kind<'_>,
) -> Result<Response<Body>, HandlerError> {
    let wants_stream = accepts_event_stream(request.headers());
    let version = request.version();
    let prepared = prepare(ctx, &request, kind)?;
    // HEAD learns the headers and nothing else (after the same checks as GET): opening a stream
    // would consume a user's queue or join a chat room for a body never sent.
    if request.method() == http::Method::HEAD {
        return Ok(stream_response(version, Body::empty()));
    }
    drop(request);
    let mut opening = prepared.opening(Transport::Sse);
    let member = prepared.member;
    let (membership, joined) = match (kind, member) {
        (Kind::Chat(room), Some(user)) => {
            let (membership, joined) =
                Membership::join(&ctx.rooms, ctx.bus.clone(), room.clone(), user);
            (Some(membership), Some(joined))
        }
        _ => (None, None),
    };
    // A chat stream starts with who is in the room, then the room's recent messages.
    if let (Some(joined), Kind::Chat(room)) = (&joined, kind) {
        opening.initial = vec![(0, chat::presence_frame(&joined.active))];
        opening.recent = Some(Recent {
            topic: room.topic(),
            count: chat::ON_JOIN,
            local: joined.recent.clone(),
        });
    }
    opening.latest = matches!(kind, Kind::Metrics);
    opening.tripwire = Some(tripwire.clone());
    let opened = ctx.bus.open(&ctx.shard, opening);
    match opened {
        Ok(subscription) => {
            if let (Some(membership), Some(joined)) = (&membership, &joined) {
                if joined.first {
                    chat::announce(
                        &ctx.bus,
                        membership.room(),
                        membership.user(),
                        &joined.active,
                        true,
                    );
                }
            }
            Ok(stream_response(
                version,
                Body::Stream(subscription, membership),
            ))
        }
        // Over the limit or shutting down: an EventSource client gets a 200 that only sets a
        // randomized reconnection delay (any other status would make a browser give up).
        Err(OpenError::Hub(
            HubError::TooManyConnections | HubError::Closed | HubError::Unavailable,
        )) if wants_stream => {
            let delay = Duration::from_millis(fastrand::u64(OVERLOAD_RETRY_MS));
            Ok(stream_response(
                version,
                Body::Full(Some(sse::retry(delay))),
            ))
        }
        Err(error) => Err(error.into()),
    }
}

/// Who is joining a chat room: the token's subject (a `userId` that disagrees is refused), or,
/// without a token, the required `userId` parameter.
pub(crate) fn chat_member(
    ctx: &Ctx,
    principal: Option<&Principal>,
    param: Option<&str>,
) -> Result<UserId, HandlerError> {
    match (principal, param) {
        (Some(principal), Some(param)) if param != principal.user.as_str() => Err(ctx
            .auth
            .fail(AuthError::Forbidden(
                "userId does not match the token's subject".to_owned(),
            ))
            .into()),
        (Some(principal), _) => Ok(principal.user.clone()),
        (None, Some(param)) => UserId::parse(param)
            .map_err(|e| HandlerError::BadRequest(format!("invalid userId: {e}"))),
        (None, None) => Err(HandlerError::BadRequest("userId is required".to_owned())),
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
