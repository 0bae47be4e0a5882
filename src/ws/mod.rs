//! The WebSocket wire format (RFC 6455), server side, with no IO and no hyper: the opening
//! handshake's accept key ([`accept_key`]), the frames a server sends ([`frame`]) and an
//! incremental parser for the frames a client sends ([`Parser`]).
//!
//! Sluice writes its own codec instead of using a WebSocket library because of one property of
//! the protocol: server-to-client frames are never masked, so the complete frame of an event
//! (header and JSON payload) is the same bytes for every subscriber. It is built once per event
//! beside the SSE frame and shared by refcount, and a connection's writer joins ready frames into
//! one `write`, exactly as an SSE body does. Libraries build a header per send.

pub mod frame;
mod parse;

pub use frame::{close, ping, pong, text, CloseCode, Opcode};
pub use parse::{Message, ParseError, Parser};

/// The GUID the handshake appends to the client's key (RFC 6455 §1.3).
const HANDSHAKE_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`, or `None` if the key is
/// not the base64 of 16 bytes (RFC 6455 §4.2.1, item 5).
pub fn accept_key(key: &str) -> Option<String> {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let key = key.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    if decoded.len() != 16 {
        return None;
    }
    let mut hasher = Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(HANDSHAKE_GUID.as_bytes());
    Some(base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ==").as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn accept_key_refuses_keys_that_are_not_16_bytes() {
        assert_eq!(accept_key(""), None);
        assert_eq!(accept_key("not base64!"), None);
        assert_eq!(accept_key("c2hvcnQ="), None); // "short"
    }
}
