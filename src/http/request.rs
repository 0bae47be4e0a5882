//! Reading request bodies: content-type check, size cap before and while reading, JSON decoding.

use http::header;
use http::Request;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::response::HandlerError;

/// How long a client may take to send a request body. Bodies are small (`--max-body`); a client
/// that trickles one is holding a connection and a buffer for nothing.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Json,
    Text,
    Other,
}

/// Classifies a body by its `Content-Type`.
pub(crate) fn body_kind(headers: &http::HeaderMap) -> BodyKind {
    if is_json(headers) {
        return BodyKind::Json;
    }
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if essence.eq_ignore_ascii_case("text/plain") {
        BodyKind::Text
    } else {
        BodyKind::Other
    }
}

/// Reads a UTF-8 text body of at most `max` bytes.
pub(crate) async fn read_text(
    request: Request<Incoming>,
    max: usize,
) -> Result<String, HandlerError> {
    let body = read_limited(request, max).await?;
    String::from_utf8(body.to_vec())
        .map_err(|_| HandlerError::BadRequest("request body is not valid UTF-8".to_owned()))
}

async fn read_limited(
    request: Request<Incoming>,
    max: usize,
) -> Result<bytes::Bytes, HandlerError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(HandlerError::PayloadTooLarge(max));
    }
    let collect = Limited::new(request.into_body(), max).collect();
    Ok(tokio::time::timeout(BODY_READ_TIMEOUT, collect)
        .await
        .map_err(|_| HandlerError::Timeout)?
        .map_err(|error| {
            if error.downcast_ref::<LengthLimitError>().is_some() {
                HandlerError::PayloadTooLarge(max)
            } else {
                HandlerError::BadRequest("could not read the request body".to_owned())
            }
        })?
        .to_bytes())
}

/// Reads and decodes a JSON body of at most `max` bytes.
pub(crate) async fn read_json<T: DeserializeOwned>(
    request: Request<Incoming>,
    max: usize,
) -> Result<T, HandlerError> {
    if !is_json(request.headers()) {
        return Err(HandlerError::UnsupportedMediaType);
    }
    let body = read_limited(request, max).await?;
    serde_json::from_slice(&body).map_err(|error| HandlerError::BadRequest(json_error(&error)))
}

fn json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => format!("invalid request: {error}"),
        Category::Eof | Category::Syntax | Category::Io => format!("malformed JSON: {error}"),
    }
}

/// `application/json`, or any `+json` type, with or without parameters.
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence.is_char_boundary(essence.len() - 5)
            && essence[essence.len() - 5..].eq_ignore_ascii_case("+json")
            && essence.to_ascii_lowercase().starts_with("application/"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn with_type(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
        headers
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(&with_type(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "text/json+json",
        ] {
            assert!(!is_json(&with_type(bad)), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
