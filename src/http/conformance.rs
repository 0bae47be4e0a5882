//! Request framing checks that hyper leaves to the application (RFC 9112), made before routing.
//!
//! hyper answers some malformed requests itself, before any service runs: a request line or
//! header section over its buffer (`max_buf_size`, checked between reads, so a head that arrives
//! in one burst may pass it by up to one read) gets 431 or 414 with an empty body, bytes it
//! cannot parse get 400 with an empty body, and so does a `Transfer-Encoding` whose last coding is
//! not `chunked` (or any `Transfer-Encoding` on HTTP/1.0). A request with both
//! `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.1, the request-smuggling shape) also gets
//! 400 with an empty body: stock hyper would drop `Content-Length` and read the body as chunked;
//! Sluice's patched hyper (`patches/`) refuses it. The check below stays as defence in depth
//! should a header map ever carry both.
//!
//! What hyper accepts and this module refuses:
//! - an HTTP/1.1 request with no `Host`, or more than one (§3.2) → 400;
//! - a transfer coding other than `chunked` before the final `chunked` (hyper would read
//!   `gzip, chunked` as plain chunked text) → 501.
//!
//! Every refusal also closes the connection: once framing is in doubt, the next bytes on the
//! connection cannot be trusted to start a request.

use http::{header, HeaderMap, Request, Version};

use super::response::HandlerError;

/// Checks a request's framing headers.
pub(crate) fn check<B>(request: &Request<B>) -> Result<(), HandlerError> {
    check_parts(request.version(), request.headers())
}

fn check_parts(version: Version, headers: &HeaderMap) -> Result<(), HandlerError> {
    let has_te = headers.contains_key(header::TRANSFER_ENCODING);
    if has_te && headers.contains_key(header::CONTENT_LENGTH) {
        return Err(HandlerError::BadRequest(
            "a request may not carry both Transfer-Encoding and Content-Length".to_owned(),
        ));
    }
    if version == Version::HTTP_11 {
        let mut hosts = headers.get_all(header::HOST).iter();
        if hosts.next().is_none() {
            return Err(HandlerError::BadRequest(
                "an HTTP/1.1 request needs a Host header".to_owned(),
            ));
        }
        if hosts.next().is_some() {
            return Err(HandlerError::BadRequest(
                "a request may carry only one Host header".to_owned(),
            ));
        }
    }
    if has_te {
        for value in headers.get_all(header::TRANSFER_ENCODING) {
            let Ok(value) = value.to_str() else {
                return Err(HandlerError::BadRequest(
                    "Transfer-Encoding is not ASCII".to_owned(),
                ));
            };
            for coding in value.split(',').map(str::trim) {
                if !coding.eq_ignore_ascii_case("chunked") {
                    return Err(HandlerError::NotImplemented(format!(
                        "transfer coding '{}' is not supported (only chunked)",
                        crate::topic::clip(coding)
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn verdict(version: Version, pairs: &[(&'static str, &'static str)]) -> Option<u16> {
        match check_parts(version, &headers(pairs)) {
            Ok(()) => None,
            Err(HandlerError::BadRequest(_)) => Some(400),
            Err(HandlerError::NotImplemented(_)) => Some(501),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn framing_table() {
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        let host = ("host", "a");
        assert_eq!(verdict(HTTP_11, &[host]), None);
        assert_eq!(verdict(HTTP_11, &[host, ("content-length", "3")]), None);
        assert_eq!(
            verdict(HTTP_11, &[host, ("transfer-encoding", "chunked")]),
            None
        );
        assert_eq!(
            verdict(HTTP_11, &[host, ("transfer-encoding", "Chunked")]),
            None
        );
        assert_eq!(
            verdict(
                HTTP_11,
                &[
                    host,
                    ("transfer-encoding", "chunked"),
                    ("content-length", "3")
                ]
            ),
            Some(400)
        );
        assert_eq!(verdict(HTTP_11, &[]), Some(400));
        assert_eq!(verdict(HTTP_11, &[host, ("host", "b")]), Some(400));
        assert_eq!(verdict(HTTP_10, &[]), None);
        assert_eq!(
            verdict(HTTP_11, &[host, ("transfer-encoding", "gzip, chunked")]),
            Some(501)
        );
        assert_eq!(
            verdict(
                HTTP_11,
                &[
                    host,
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked")
                ]
            ),
            Some(501)
        );
    }
}
