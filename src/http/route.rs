//! Routing: the only place that knows path strings. [`Route::parse`] is a pure table from method
//! and path to a route; [`dispatch`] runs the handler and adds CORS headers.

use std::rc::Rc;

use http::{Method, Request};
use hyper::body::Incoming;

use super::response::{error_response, HandlerError};
use super::{events, health, notify, publish, stats, subscribe, Ctx, Reply};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET /events`: open an event stream.
    Events,
    /// `POST /api/notify`: broadcast a notification.
    Notify,
    /// `POST /api/publish`: publish on a channel.
    Publish,
    /// `POST /subscribe`: add a channel to a live stream.
    Subscribe,
    /// `POST /unsubscribe`: remove a channel from a live stream.
    Unsubscribe,
    /// `GET /stats`: hub statistics.
    Stats,
    /// `GET /healthz`: liveness and readiness.
    Health,
    /// `OPTIONS` on a known path: CORS preflight.
    Preflight,
    /// A known path with a method it does not take; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// No such path.
    NotFound,
}

impl Route {
    /// Maps a method and path to a route.
    pub(crate) fn parse(method: &Method, path: &str) -> Route {
        let (route, allow) = match path {
            "/events" => (Route::Events, "GET, HEAD, OPTIONS"),
            "/api/notify" => (Route::Notify, "POST, OPTIONS"),
            "/api/publish" => (Route::Publish, "POST, OPTIONS"),
            "/subscribe" => (Route::Subscribe, "POST, OPTIONS"),
            "/unsubscribe" => (Route::Unsubscribe, "POST, OPTIONS"),
            "/stats" => (Route::Stats, "GET, HEAD, OPTIONS"),
            "/healthz" => (Route::Health, "GET, HEAD, OPTIONS"),
            _ => return Route::NotFound,
        };
        if *method == Method::OPTIONS {
            return Route::Preflight;
        }
        let takes = match route {
            Route::Notify | Route::Publish | Route::Subscribe | Route::Unsubscribe => {
                *method == Method::POST
            }
            _ => *method == Method::GET || *method == Method::HEAD,
        };
        if takes {
            route
        } else {
            Route::MethodNotAllowed(allow)
        }
    }
}

/// Routes a request and produces its response.
pub(crate) fn dispatch(ctx: &Rc<Ctx>, request: Request<Incoming>) -> Reply {
    let allowed_origin = ctx.cors.allow(request.headers());
    let route = Route::parse(request.method(), request.uri().path());
    let ready = match route {
        Route::Events => events::open(ctx, request),
        Route::Stats => stats::render(ctx),
        Route::Health => health::check(ctx),
        Route::Preflight => ctx.cors.preflight(),
        Route::MethodNotAllowed(allow) => error_response(HandlerError::MethodNotAllowed(allow)),
        Route::NotFound => error_response(HandlerError::NotFound),
        Route::Notify | Route::Publish | Route::Subscribe | Route::Unsubscribe => {
            let ctx = ctx.clone();
            return Reply::Later(Box::pin(async move {
                let result = match route {
                    Route::Notify => notify::publish(&ctx, request).await,
                    Route::Publish => publish::publish(&ctx, request).await,
                    Route::Subscribe => subscribe::change(&ctx, request, true).await,
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
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            (Method::GET, "/events", Route::Events),
            (Method::HEAD, "/events", Route::Events),
            (Method::POST, "/api/notify", Route::Notify),
            (Method::POST, "/api/publish", Route::Publish),
            (Method::POST, "/subscribe", Route::Subscribe),
            (Method::POST, "/unsubscribe", Route::Unsubscribe),
            (
                Method::GET,
                "/subscribe",
                Route::MethodNotAllowed("POST, OPTIONS"),
            ),
            (Method::GET, "/stats", Route::Stats),
            (Method::GET, "/healthz", Route::Health),
            (Method::OPTIONS, "/events", Route::Preflight),
            (Method::OPTIONS, "/api/notify", Route::Preflight),
            (
                Method::GET,
                "/api/notify",
                Route::MethodNotAllowed("POST, OPTIONS"),
            ),
            (
                Method::POST,
                "/events",
                Route::MethodNotAllowed("GET, HEAD, OPTIONS"),
            ),
            (
                Method::DELETE,
                "/stats",
                Route::MethodNotAllowed("GET, HEAD, OPTIONS"),
            ),
            (Method::GET, "/", Route::NotFound),
            (Method::GET, "/events/", Route::NotFound),
            (Method::OPTIONS, "/nope", Route::NotFound),
        ];
        for (method, path, expected) in cases {
            assert_eq!(Route::parse(&method, path), expected, "{method} {path}");
        }
    }
}
