//! `GET /sluice.js`: the browser client (`clients/js/sluice.js`), compiled into the binary so a
//! page can `import { Sluice } from "/sluice.js"` from the hub it talks to. Its strong `ETag` is
//! a hash of the file computed at compile time, so revalidation (`If-None-Match` → 304) costs
//! no body and no hashing per request.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::Body;

const SCRIPT: &str = include_str!("../../clients/js/sluice.js");

/// How long a browser may use its copy without asking again. Short, so an upgraded hub's client
/// reaches pages within minutes; asking again is a 304 thanks to the `ETag`.
const CACHE_CONTROL: &str = "public, max-age=300";

/// FNV-1a 64 of `bytes`, as 16 lowercase hex digits between double quotes: a strong validator.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut k = 0;
    while k < 16 {
        out[1 + k] = digits[((hash >> (60 - 4 * k)) & 0xf) as usize];
        k += 1;
    }
    out
}

const ETAG_BYTES: [u8; 18] = etag_of(SCRIPT.as_bytes());
const ETAG: &str = match std::str::from_utf8(&ETAG_BYTES) {
    Ok(text) => text,
    Err(_) => "\"sluice\"",
};

/// Serves the client, or 304 when the browser's copy is current.
pub(crate) fn serve(headers: &HeaderMap) -> Response<Body> {
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == ETAG || tag == "*");
    let mut response = if fresh {
        let mut response = Response::new(Body::full(bytes::Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        Response::new(Body::full(bytes::Bytes::from_static(SCRIPT.as_bytes())))
    };
    let headers = response.headers_mut();
    if !fresh {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
    }
    headers.insert(header::ETAG, HeaderValue::from_static(ETAG));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_a_quoted_hash_that_follows_the_content() {
        assert_eq!(ETAG.len(), 18);
        assert!(ETAG.starts_with('"') && ETAG.ends_with('"'));
        assert_ne!(etag_of(b"a"), etag_of(b"b"));
        // FNV-1a 64 of the empty input is its offset basis.
        assert_eq!(&etag_of(b""), b"\"cbf29ce484222325\"");
    }

    #[test]
    fn if_none_match_answers_304() {
        let mut headers = HeaderMap::new();
        assert_eq!(serve(&headers).status(), StatusCode::OK);
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", {ETAG}")).expect("ascii"),
        );
        let response = serve(&headers);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], ETAG);
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(serve(&headers).status(), StatusCode::OK);
    }
}
