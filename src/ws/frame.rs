//! Frames a server sends. Server frames are unmasked (RFC 6455 §5.1), so each is a plain byte
//! string that can be built once and written to any number of connections.

use bytes::{BufMut, Bytes, BytesMut};

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// A continuation of a fragmented message.
    Continuation,
    /// A UTF-8 text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    /// The opcode of the 4 low bits of a frame's first byte, if it is defined.
    pub fn from_bits(bits: u8) -> Option<Opcode> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Close status codes Sluice sends (RFC 6455 §7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the purpose of the connection is fulfilled (idle timeout, the client's own close).
    Normal,
    /// 1001: the server is going away (shutdown).
    GoingAway,
    /// 1002: the client broke the protocol.
    Protocol,
    /// 1003: a kind of message the server does not take (binary).
    Unsupported,
    /// 1007: a text message that is not UTF-8.
    InvalidData,
    /// 1008: a policy reason, such as an expired credential.
    Policy,
    /// 1009: a message over the size limit.
    TooBig,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidData => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
        }
    }
}

/// Length of the header of an unmasked frame with a payload of `len` bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Length of the header of the unmasked frame that starts `frame` (read from its second byte).
/// `frame` must be a frame this module built.
pub fn header_len_of(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7F) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// Writes the header of a final, unmasked frame of `opcode` with a `len`-byte payload.
pub fn put_header(buf: &mut BytesMut, opcode: Opcode, len: usize) {
    buf.put_u8(0x80 | opcode.bits());
    match len {
        0..=125 => buf.put_u8(len as u8),
        126..=0xFFFF => {
            buf.put_u8(126);
            buf.put_u16(len as u16);
        }
        _ => {
            buf.put_u8(127);
            buf.put_u64(len as u64);
        }
    }
}

fn whole(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut buf, opcode, payload.len());
    buf.put_slice(payload);
    buf.freeze()
}

/// A complete text frame carrying `payload`.
pub fn text(payload: &str) -> Bytes {
    whole(Opcode::Text, payload.as_bytes())
}

/// A ping with an empty payload.
pub fn ping() -> Bytes {
    whole(Opcode::Ping, b"")
}

/// The pong answering a ping with `payload` (at most 125 bytes, as the parser guarantees).
pub fn pong(payload: &[u8]) -> Bytes {
    whole(Opcode::Pong, &payload[..payload.len().min(125)])
}

/// A close frame with a status code and a reason (cut to fit the 125-byte control payload on a
/// character boundary).
pub fn close(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.code().to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    whole(Opcode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(&text("hi")[..], b"\x81\x02hi");
        let medium = "x".repeat(200);
        let frame = text(&medium);
        assert_eq!(&frame[..4], &[0x81, 126, 0, 200]);
        assert_eq!(header_len_of(&frame), 4);
        assert_eq!(frame.len(), 204);
        let large = "y".repeat(70_000);
        let frame = text(&large);
        assert_eq!(frame[1], 127);
        assert_eq!(&frame[2..10], &70_000u64.to_be_bytes());
        assert_eq!(header_len_of(&frame), 10);
        assert_eq!(header_len(125), 2);
        assert_eq!(header_len(126), 4);
        assert_eq!(header_len(65_536), 10);
    }

    #[test]
    fn control_frames() {
        assert_eq!(&ping()[..], b"\x89\x00");
        assert_eq!(&pong(b"abc")[..], b"\x8A\x03abc");
        assert_eq!(
            &close(CloseCode::GoingAway, "bye")[..],
            b"\x88\x05\x03\xE9bye"
        );
        // A long reason is cut to fit, on a character boundary.
        let frame = close(CloseCode::Normal, &"é".repeat(100));
        assert!(frame.len() <= 127);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
