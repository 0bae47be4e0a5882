//! `GET /` (the live dashboard) and `GET /chat` (the chat page): single self-contained HTML
//! files compiled into the binary, so they work with no internet and no files beside it.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::Body;

/// The pages Sluice serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// Live CPU, memory, connections and throughput from `/metrics` and `/stats`.
    Dashboard,
    /// Chat rooms over `/chat/:roomId`.
    Chat,
}

const DASHBOARD: &str = include_str!("pages/dashboard.html");
const CHAT: &str = include_str!("pages/chat.html");

/// Serves a page.
pub(crate) fn serve(page: Page) -> Response<Body> {
    let html = match page {
        Page::Dashboard => DASHBOARD,
        Page::Chat => CHAT,
    };
    let mut response = Response::new(Body::full(bytes::Bytes::from_static(html.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The pages load nothing from elsewhere; say so, so an injected script could not either.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        ),
    );
    response
}
