//! CORS: which origins may read responses, and the answer to preflight requests.
//!
//! The allowed origin is decided from the request before the handler runs and is always one of
//! our own header values, so nothing of the request is kept alive by the response.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::Body;

/// Request headers a browser may send cross-origin: the resume header of EventSource, the cache
/// header some polyfills add, and what authenticated JSON publishing needs.
const ALLOW_HEADERS: &str = "Last-Event-ID, Cache-Control, Authorization, Content-Type";
const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Seconds a browser may cache a preflight answer.
const MAX_AGE: &str = "86400";

/// The configured origin policy.
pub(crate) struct Cors {
    any: bool,
    origins: Vec<HeaderValue>,
}

impl Cors {
    pub(crate) fn new(configured: &[String]) -> Self {
        let any = configured.iter().any(|o| o.trim() == "*");
        let origins = configured
            .iter()
            .filter_map(|o| HeaderValue::from_str(o.trim().trim_end_matches('/')).ok())
            .collect();
        Cors { any, origins }
    }

    /// The `Access-Control-Allow-Origin` value for a request, if it is allowed.
    pub(crate) fn allow(&self, request: &HeaderMap) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = request.get(header::ORIGIN)?;
        self.origins
            .iter()
            .find(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
            .cloned()
    }

    /// Adds the CORS headers to a response.
    pub(crate) fn apply(&self, allowed: Option<HeaderValue>, headers: &mut HeaderMap) {
        if let Some(origin) = allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if !self.any {
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
                // Listed origins may send credentials (the `sluice_token` cookie with
                // `EventSource(url, {withCredentials: true})`). Browsers never allow
                // credentials with a wildcard, so `*` does not offer them.
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
    }

    /// The answer to an `OPTIONS` preflight.
    pub(crate) fn preflight(&self) -> Response<Body> {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
        response
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request_from(origin: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        headers
    }

    #[test]
    fn wildcard_allows_everyone() {
        let cors = Cors::new(&["*".to_owned()]);
        assert_eq!(cors.allow(&HeaderMap::new()).unwrap(), "*");
    }

    #[test]
    fn list_echoes_only_listed_origins() {
        let cors = Cors::new(&[
            "https://a.example".to_owned(),
            "https://b.example/".to_owned(),
        ]);
        assert_eq!(
            cors.allow(&request_from("https://b.example")).unwrap(),
            "https://b.example"
        );
        assert!(cors.allow(&request_from("https://evil.example")).is_none());
        assert!(cors.allow(&HeaderMap::new()).is_none());
    }
}
