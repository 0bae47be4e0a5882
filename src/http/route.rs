//! Routing: the only place that knows path strings. [`Route::parse`] is a pure table from method
//! and path to a route (path parameters validated into their newtypes); [`dispatch`] runs the
//! handler and adds CORS headers.

use std::rc::Rc;

use http::{Method, Request};
use hyper::body::Incoming;

use super::events::Kind;
use super::pages::Page;
use super::response::{error_response, HandlerError};
use super::{
    chat, events, health, metrics, notify, pages, poll, publish, script, stats, subscribe, token,
    websocket, Ctx, Reply,
};
use crate::chat::{BadRoomId, RoomId};
use crate::hub::{TopicError, Tripwire, UserId};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET /events`: open an event stream.
    Events,
    /// `GET /secure-events`: open a stream that always needs a token.
    SecureEvents,
    /// `GET /ws`: open a WebSocket stream.
    WebSocket,
    /// `GET /poll`: one long poll.
    Poll,
    /// `GET /events/:userId`: open a user's stream (with its offline queue).
    UserEvents(UserId),
    /// `POST /api/notify`: broadcast a notification.
    Notify,
    /// `POST /api/users/:userId/notify`: notify one user, queued while they are offline.
    UserNotify(UserId),
    /// `POST /api/publish`: publish on a channel.
    Publish,
    /// `POST /subscribe`: add a channel to a live stream.
    Subscribe,
    /// `POST /unsubscribe`: remove a channel from a live stream.
    Unsubscribe,
    /// `POST /token`: replace the credential of a live stream (token refresh).
    Token,
    /// `GET /sluice.js`: the browser client.
    Script,
    /// `GET /` or `GET /chat`: an embedded page.
    Page(Page),
    /// `GET /metrics`: the live system metrics stream.
    Metrics,
    /// `GET /metrics/prometheus`: a Prometheus scrape.
    Prometheus,
    /// `GET /chat/:roomId?userId=`: a chat room's stream.
    ChatStream(RoomId),
    /// `POST /chat/:roomId/message`: post to a chat room.
    ChatPost(RoomId),
    /// `GET /stats`: hub statistics.
    Stats,
    /// `GET /healthz`: liveness and readiness.
    Health,
    /// `OPTIONS` on a known path: CORS preflight.
    Preflight,
    /// A known path with a method it does not take; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// A known path whose user id is invalid.
    BadUserId(TopicError),
    /// A known path whose room id is invalid.
    BadRoomId,
    /// No such path.
    NotFound,
}

const GET: &str = "GET, HEAD, OPTIONS";
const POST: &str = "POST, OPTIONS";

impl Route {
    /// Maps a method and path to a route.
    pub(crate) fn parse(method: &Method, path: &str) -> Route {
        let (route, allow) = match path {
            "/events" => (Route::Events, GET),
            "/secure-events" => (Route::SecureEvents, GET),
            "/ws" => (Route::WebSocket, GET),
            "/poll" => (Route::Poll, GET),
            "/api/notify" => (Route::Notify, POST),
            "/api/publish" => (Route::Publish, POST),
            "/subscribe" => (Route::Subscribe, POST),
            "/unsubscribe" => (Route::Unsubscribe, POST),
            "/token" => (Route::Token, POST),
            "/sluice.js" => (Route::Script, GET),
            "/stats" => (Route::Stats, GET),
            "/healthz" => (Route::Health, GET),
            "/" => (Route::Page(Page::Dashboard), GET),
            "/chat" => (Route::Page(Page::Chat), GET),
            "/metrics" => (Route::Metrics, GET),
            "/metrics/prometheus" => (Route::Prometheus, GET),
            _ => match (parse_user_path(path), parse_room_path(path)) {
                (Some((Ok(user), true)), _) => (Route::UserEvents(user), GET),
                (Some((Ok(user), false)), _) => (Route::UserNotify(user), POST),
                (Some((Err(error), _)), _) => return Route::BadUserId(error),
                (None, Some((Ok(room), true))) => (Route::ChatStream(room), GET),
                (None, Some((Ok(room), false))) => (Route::ChatPost(room), POST),
                (None, Some((Err(_), _))) => return Route::BadRoomId,
                (None, None) => return Route::NotFound,
            },
        };
        if *method == Method::OPTIONS {
            return Route::Preflight;
        }
        let takes = if allow == POST {
            *method == Method::POST
        } else {
            *method == Method::GET || *method == Method::HEAD
        };
        if takes {
            route
        } else {
            Route::MethodNotAllowed(allow)
        }
    }
}

/// `/events/:userId` (→ `true`) or `/api/users/:userId/notify` (→ `false`), with the id
/// percent-decoded and validated.
fn parse_user_path(path: &str) -> Option<(Result<UserId, TopicError>, bool)> {
    let (raw, stream) = if let Some(rest) = path.strip_prefix("/events/") {
        (rest, true)
    } else {
        let rest = path.strip_prefix("/api/users/")?;
        (rest.strip_suffix("/notify")?, false)
    };
    if raw.contains('/') {
        return None;
    }
    let decoded = percent_decode(raw)?;
    Some((UserId::parse(&decoded), stream))
}

/// `/chat/:roomId` (→ `true`) or `/chat/:roomId/message` (→ `false`).
fn parse_room_path(path: &str) -> Option<(Result<RoomId, BadRoomId>, bool)> {
    let rest = path.strip_prefix("/chat/")?;
    let (raw, stream) = match rest.strip_suffix("/message") {
        Some(raw) => (raw, false),
        None => (rest, true),
    };
    if raw.contains('/') {
        return None;
    }
    let decoded = percent_decode(raw)?;
    Some((RoomId::parse(&decoded), stream))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Routes a request and produces its response.
pub(crate) fn dispatch(
    ctx: &Rc<Ctx>,
    tripwire: &Rc<Tripwire>,
    request: Request<Incoming>,
) -> Reply {
    tracing::debug!(
        method = %request.method(),
        target = %super::redact::target(
            &request.uri().to_string(),
            ctx.config.publisher_key.as_deref()
        ),
        "request"
    );
    if let Err(error) = super::conformance::check(&request) {
        let mut response = error_response(error);
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return Reply::Ready(Some(response));
    }
    let allowed_origin = ctx.cors.allow(request.headers());
    let route = Route::parse(request.method(), request.uri().path());
    let ready = match route {
        Route::Events => events::open(ctx, tripwire, request, Kind::Public),
        Route::SecureEvents => events::open(ctx, tripwire, request, Kind::Secure),
        Route::UserEvents(user) => events::open(ctx, tripwire, request, Kind::User(&user)),
        Route::Metrics => events::open(ctx, tripwire, request, Kind::Metrics),
        Route::WebSocket => websocket::open(ctx, request),
        Route::Prometheus => metrics::scrape(ctx),
        Route::Page(page) => pages::serve(page),
        Route::Script => script::serve(request.headers()),
        Route::ChatStream(room) => events::open(ctx, tripwire, request, Kind::Chat(&room)),
        Route::Stats => stats::render(ctx),
        Route::Health => health::check(ctx),
        Route::Preflight => ctx.cors.preflight(),
        Route::MethodNotAllowed(allow) => error_response(HandlerError::MethodNotAllowed(allow)),
        Route::BadUserId(error) => error_response(HandlerError::BadRequest(format!(
            "invalid user id: {error}"
        ))),
        Route::BadRoomId => error_response(HandlerError::BadRequest(format!(
            "invalid room id: {BadRoomId}"
        ))),
        Route::NotFound => error_response(HandlerError::NotFound),
        Route::Notify
        | Route::Poll
        | Route::ChatPost(_)
        | Route::UserNotify(_)
        | Route::Publish
        | Route::Subscribe
        | Route::Unsubscribe
        | Route::Token => {
            let ctx = ctx.clone();
            return Reply::Later(Box::pin(async move {
                let result = match route {
                    Route::Notify => notify::publish(&ctx, request, None).await,
                    Route::UserNotify(user) => notify::publish(&ctx, request, Some(&user)).await,
                    Route::Publish => publish::publish(&ctx, request).await,
                    Route::Poll => poll::poll(&ctx, request).await,
                    Route::ChatPost(room) => chat::post(&ctx, request, &room).await,
                    Route::Subscribe => subscribe::change(&ctx, request, true).await,
                    Route::Token => token::renew(&ctx, request).await,
                    _ => subscribe::change(&ctx, request, false).await,
                };
                let mut response = result.unwrap_or_else(error_response);
                ctx.cors.apply(allowed_origin, response.headers_mut());
                response
            }));
        }
    };
    let mut response = ready;
    ctx.cors.apply(allowed_origin, response.headers_mut());
    Reply::Ready(Some(response))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn room(id: &str) -> RoomId {
        RoomId::parse(id).unwrap()
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn table() {
        let cases = [
            (Method::GET, "/events", Route::Events),
            (Method::GET, "/secure-events", Route::SecureEvents),
            (Method::GET, "/ws", Route::WebSocket),
            (Method::GET, "/poll", Route::Poll),
            (Method::POST, "/poll", Route::MethodNotAllowed(GET)),
            (Method::HEAD, "/events", Route::Events),
            (
                Method::GET,
                "/events/alice",
                Route::UserEvents(user("alice")),
            ),
            (
                Method::GET,
                "/events/a%40b.c",
                Route::UserEvents(user("a@b.c")),
            ),
            (
                Method::POST,
                "/api/users/alice/notify",
                Route::UserNotify(user("alice")),
            ),
            (Method::POST, "/api/notify", Route::Notify),
            (Method::POST, "/api/publish", Route::Publish),
            (Method::POST, "/subscribe", Route::Subscribe),
            (Method::POST, "/unsubscribe", Route::Unsubscribe),
            (Method::POST, "/token", Route::Token),
            (Method::GET, "/token", Route::MethodNotAllowed(POST)),
            (Method::GET, "/sluice.js", Route::Script),
            (Method::GET, "/stats", Route::Stats),
            (Method::GET, "/healthz", Route::Health),
            (Method::GET, "/metrics", Route::Metrics),
            (Method::GET, "/metrics/prometheus", Route::Prometheus),
            (Method::GET, "/chat/lobby", Route::ChatStream(room("lobby"))),
            (
                Method::POST,
                "/chat/lobby/message",
                Route::ChatPost(room("lobby")),
            ),
            (
                Method::GET,
                "/chat/lobby/message",
                Route::MethodNotAllowed(POST),
            ),
            (Method::POST, "/chat/lobby", Route::MethodNotAllowed(GET)),
            (Method::GET, "/chat/a%20b", Route::BadRoomId),
            (Method::GET, "/chat/a/b", Route::NotFound),
            (Method::OPTIONS, "/events", Route::Preflight),
            (Method::OPTIONS, "/api/notify", Route::Preflight),
            (Method::OPTIONS, "/events/alice", Route::Preflight),
            (Method::GET, "/api/notify", Route::MethodNotAllowed(POST)),
            (Method::GET, "/subscribe", Route::MethodNotAllowed(POST)),
            (Method::POST, "/events", Route::MethodNotAllowed(GET)),
            (Method::POST, "/events/alice", Route::MethodNotAllowed(GET)),
            (
                Method::GET,
                "/api/users/alice/notify",
                Route::MethodNotAllowed(POST),
            ),
            (Method::DELETE, "/stats", Route::MethodNotAllowed(GET)),
            (Method::GET, "/", Route::Page(Page::Dashboard)),
            (Method::GET, "/chat", Route::Page(Page::Chat)),
            (Method::GET, "/nope", Route::NotFound),
            (Method::GET, "/events/a/b", Route::NotFound),
            (Method::GET, "/api/users/alice", Route::NotFound),
            (Method::OPTIONS, "/nope", Route::NotFound),
            (Method::GET, "/events/", Route::BadUserId(TopicError::Empty)),
            (
                Method::GET,
                "/events/a%20b",
                Route::BadUserId(TopicError::BadChar),
            ),
            (
                Method::GET,
                "/events/%0A",
                Route::BadUserId(TopicError::BadChar),
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(Route::parse(&method, path), expected, "{method} {path}");
        }
        assert_eq!(Route::parse(&Method::GET, "/events/%zz"), Route::NotFound);
    }
}
