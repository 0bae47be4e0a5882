//! Building responses: JSON bodies, and the one mapping from every handler error to its HTTP
//! status and `{"error": ...}` body.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

use super::Body;
use crate::auth::AuthError;
use crate::hub::{HubError, OpenError};

/// Why a handler could not do what was asked.
#[derive(Debug)]
pub(crate) enum HandlerError {
    /// No such route.
    NotFound,
    /// The route exists but not for this method; carries the `Allow` header value.
    MethodNotAllowed(&'static str),
    /// The request is malformed (JSON, fields, parameters).
    BadRequest(String),
    /// The body is larger than the configured limit (in bytes).
    PayloadTooLarge(usize),
    /// A text field is longer than its limit (in characters).
    TooLong {
        /// The field.
        field: &'static str,
        /// The limit in characters.
        max: usize,
    },
    /// The request body did not arrive in time.
    Timeout,
    /// The body is not JSON.
    UnsupportedMediaType,
    /// The hub refused the operation.
    Hub(HubError),
    /// The hub refused a publish: retrying with the same idempotency key is safe.
    PublishRefused(HubError),
    /// A named resource (connection, room, user) does not exist.
    Missing(String),
    /// The request conflicts with live state (a connection id in use).
    Conflict(String),
    /// Authentication failed (401) or the caller may not do this (403).
    Auth(AuthError),
    /// A WebSocket request that cannot be upgraded as asked (426, with the version we speak).
    UpgradeRequired(&'static str),
    /// A browser page of an origin that is not allowed opened a WebSocket (403).
    ForbiddenOrigin,
    /// Over a rate limit (429); carries the whole seconds after which a retry may succeed.
    TooManyRequests(u64),
    /// The request uses an HTTP feature this server does not implement (501), such as a
    /// transfer coding other than `chunked`.
    NotImplemented(String),
}

impl From<AuthError> for HandlerError {
    fn from(error: AuthError) -> Self {
        HandlerError::Auth(error)
    }
}

impl From<OpenError> for HandlerError {
    fn from(error: OpenError) -> Self {
        match error {
            OpenError::Hub(error) => HandlerError::Hub(error),
            OpenError::IdTaken => HandlerError::Conflict(
                "connection id is already in use by a live stream".to_owned(),
            ),
        }
    }
}

impl HandlerError {
    /// A publish the hub refused: an event too large for the retention budget is the
    /// publisher's to fix (413); anything else is worth retrying with the same idempotency key.
    pub(crate) fn refused_publish(error: HubError) -> Self {
        match error {
            HubError::TooLarge => HandlerError::Hub(error),
            other => HandlerError::PublishRefused(other),
        }
    }
}

impl From<HubError> for HandlerError {
    fn from(error: HubError) -> Self {
        HandlerError::Hub(error)
    }
}

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "2";

/// Converts an error into its response. Every status the API answers with an error comes from here.
pub(crate) fn error_response(error: HandlerError) -> Response<Body> {
    let (status, message) = match &error {
        HandlerError::NotFound => (StatusCode::NOT_FOUND, "not found".to_owned()),
        HandlerError::MethodNotAllowed(_) => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_owned(),
        ),
        HandlerError::BadRequest(reason) => (StatusCode::BAD_REQUEST, reason.clone()),
        HandlerError::PayloadTooLarge(max) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {max} bytes"),
        ),
        HandlerError::TooLong { field, max } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{field} is longer than {max} characters"),
        ),
        HandlerError::Timeout => (
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time".to_owned(),
        ),
        HandlerError::UnsupportedMediaType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request body must be application/json".to_owned(),
        ),
        HandlerError::Hub(HubError::TooLarge) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            HubError::TooLarge.to_string(),
        ),
        HandlerError::Hub(hub) => (StatusCode::SERVICE_UNAVAILABLE, hub.to_string()),
        HandlerError::PublishRefused(hub) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{hub}; retry with the same Idempotency-Key so it is published once"),
        ),
        HandlerError::Missing(what) => (StatusCode::NOT_FOUND, what.clone()),
        HandlerError::Conflict(why) => (StatusCode::CONFLICT, why.clone()),
        HandlerError::Auth(AuthError::NotConfigured) => (
            StatusCode::NOT_IMPLEMENTED,
            AuthError::NotConfigured.to_string(),
        ),
        HandlerError::Auth(auth) if auth.is_unauthenticated() => {
            (StatusCode::UNAUTHORIZED, auth.to_string())
        }
        HandlerError::Auth(auth) => (StatusCode::FORBIDDEN, auth.to_string()),
        HandlerError::UpgradeRequired(why) => (StatusCode::UPGRADE_REQUIRED, (*why).to_owned()),
        HandlerError::ForbiddenOrigin => (
            StatusCode::FORBIDDEN,
            "this origin may not open WebSockets here (see --cors-origin)".to_owned(),
        ),
        HandlerError::TooManyRequests(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded, retry later".to_owned(),
        ),
        HandlerError::NotImplemented(what) => (StatusCode::NOT_IMPLEMENTED, what.clone()),
    };
    let mut response = json(status, &ErrorBody { error: &message });
    let headers = response.headers_mut();
    match error {
        HandlerError::MethodNotAllowed(allow) => {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        HandlerError::UpgradeRequired(_) => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        HandlerError::Hub(HubError::TooLarge) => {}
        HandlerError::TooManyRequests(secs) => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        HandlerError::Hub(_) | HandlerError::PublishRefused(_) => {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        HandlerError::Auth(auth) if auth.is_unauthenticated() => {
            // RFC 6750: a missing token gets a bare challenge, a bad one says invalid_token.
            let challenge = if auth == AuthError::Missing {
                HeaderValue::from_static("Bearer realm=\"sluice\"")
            } else {
                HeaderValue::from_static("Bearer realm=\"sluice\", error=\"invalid_token\"")
            };
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        _ => {}
    }
    response
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// A JSON response with the given status.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
