//! An incremental parser for the frames a client sends (RFC 6455 §5): masked, possibly
//! fragmented, with control frames interleaved. It validates what the RFC says a server must
//! fail the connection for, and bounds every message by a size limit before buffering it.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{CloseCode, Opcode};

/// A complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (all fragments joined), valid UTF-8.
    Text(String),
    /// A binary message, of this many bytes (Sluice has no use for its content).
    Binary(usize),
    /// A ping with its payload, to be answered with a pong.
    Ping(Bytes),
    /// A pong (an answer to a ping, or a unilateral heartbeat).
    Pong,
    /// The client closes, with its status code if it sent one.
    Close(Option<u16>),
}

/// Why the client's input fails the connection; each maps to the close code to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The frames break the protocol.
    Protocol(&'static str),
    /// A message exceeds the size limit.
    TooBig {
        /// The limit in bytes.
        max: usize,
    },
    /// A text message (or close reason) is not UTF-8.
    InvalidUtf8,
}

impl ParseError {
    /// The close code that reports this error to the client.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ParseError::Protocol(_) => CloseCode::Protocol,
            ParseError::TooBig { .. } => CloseCode::TooBig,
            ParseError::InvalidUtf8 => CloseCode::InvalidData,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Protocol(what) => write!(f, "protocol error: {what}"),
            ParseError::TooBig { max } => write!(f, "message larger than {max} bytes"),
            ParseError::InvalidUtf8 => f.write_str("text is not valid UTF-8"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses client frames from the bytes read so far.
#[derive(Debug)]
pub struct Parser {
    buf: BytesMut,
    /// A fragmented message in progress: its opcode and the payload so far.
    partial: Option<(Opcode, Vec<u8>)>,
    max_message: usize,
}

impl Parser {
    /// A parser that refuses messages over `max_message` bytes. `initial` is what was read past
    /// the HTTP request (a client may send its first frame right behind the handshake).
    pub fn new(max_message: usize, initial: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(initial.len().max(256));
        buf.extend_from_slice(initial);
        Parser {
            buf,
            partial: None,
            max_message,
        }
    }

    /// Drops buffered input and any partial message (the connection is closing; nothing more
    /// will be parsed). Frees the buffer.
    pub fn discard(&mut self) {
        self.buf = BytesMut::new();
        self.partial = None;
    }

    /// The buffer reads go into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or the error that fails
    /// the connection.
    pub fn next_message(&mut self) -> Result<Option<Message>, ParseError> {
        loop {
            let Some(frame) = self.next_frame()? else {
                return Ok(None);
            };
            if let Some(message) = self.assemble(frame)? {
                return Ok(Some(message));
            }
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, ParseError> {
        let buf = &self.buf;
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        if buf[0] & 0x70 != 0 {
            return Err(ParseError::Protocol(
                "reserved bits set without an extension",
            ));
        }
        let opcode =
            Opcode::from_bits(buf[0] & 0x0F).ok_or(ParseError::Protocol("unknown opcode"))?;
        if buf[1] & 0x80 == 0 {
            return Err(ParseError::Protocol("client frames must be masked"));
        }
        let (len, mut at) = match buf[1] & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(ParseError::Protocol("frame length has its top bit set"));
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(ParseError::Protocol(
                    "control frames must not be fragmented",
                ));
            }
            if len > 125 {
                return Err(ParseError::Protocol("control frame payload over 125 bytes"));
            }
        } else {
            // Refuse an oversize message from its header, before buffering its payload.
            let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len()) as u64;
            if so_far + len > self.max_message as u64 {
                return Err(ParseError::TooBig {
                    max: self.max_message,
                });
            }
        }
        let len = usize::try_from(len).map_err(|_| ParseError::TooBig {
            max: self.max_message,
        })?;
        let (have, need) = (buf.len(), at + 4 + len);
        if have < need {
            self.buf.reserve(need - have);
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&self.buf[at..at + 4]);
        at += 4;
        self.buf.advance(at);
        let mut payload = self.buf.split_to(len);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        Ok(Some(Frame {
            fin,
            opcode,
            payload: payload.freeze(),
        }))
    }

    fn assemble(&mut self, frame: Frame) -> Result<Option<Message>, ParseError> {
        match frame.opcode {
            Opcode::Ping => Ok(Some(Message::Ping(frame.payload))),
            Opcode::Pong => Ok(Some(Message::Pong)),
            Opcode::Close => close_message(&frame.payload).map(Some),
            Opcode::Text | Opcode::Binary => {
                if self.partial.is_some() {
                    return Err(ParseError::Protocol(
                        "a new message began before the last one ended",
                    ));
                }
                if frame.fin {
                    return finish(frame.opcode, frame.payload.to_vec()).map(Some);
                }
                self.partial = Some((frame.opcode, frame.payload.to_vec()));
                Ok(None)
            }
            Opcode::Continuation => {
                let Some((opcode, mut payload)) = self.partial.take() else {
                    return Err(ParseError::Protocol("continuation without a message"));
                };
                payload.extend_from_slice(&frame.payload);
                if frame.fin {
                    finish(opcode, payload).map(Some)
                } else {
                    self.partial = Some((opcode, payload));
                    Ok(None)
                }
            }
        }
    }
}

struct Frame {
    fin: bool,
    opcode: Opcode,
    payload: Bytes,
}

fn finish(opcode: Opcode, payload: Vec<u8>) -> Result<Message, ParseError> {
    match opcode {
        Opcode::Text => String::from_utf8(payload)
            .map(Message::Text)
            .map_err(|_| ParseError::InvalidUtf8),
        _ => Ok(Message::Binary(payload.len())),
    }
}

fn close_message(payload: &[u8]) -> Result<Message, ParseError> {
    match payload.len() {
        0 => Ok(Message::Close(None)),
        1 => Err(ParseError::Protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            // RFC 6455 §7.4: codes a peer may send.
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(ParseError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(ParseError::InvalidUtf8);
            }
            Ok(Message::Close(Some(code)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            0..=125 => out.push(0x80 | payload.len() as u8),
            126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn parse_all(bytes: &[u8]) -> Result<Vec<Message>, ParseError> {
        let mut parser = Parser::new(1024, bytes);
        let mut out = Vec::new();
        while let Some(message) = parser.next_message()? {
            out.push(message);
        }
        Ok(out)
    }

    #[test]
    fn masked_text_message() {
        // RFC 6455 §5.7: a masked "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            parse_all(&bytes).unwrap(),
            vec![Message::Text("Hello".into())]
        );
    }

    #[test]
    fn byte_by_byte_input_gives_the_same_messages() {
        let mut bytes = client(0x01, b"Hel");
        bytes.extend(client(0x89, b"ping!")); // a control frame between fragments
        bytes.extend(client(0x80, b"lo"));
        bytes.extend(client(0x81, &[b'z'; 300]));
        bytes.extend(client(0x88, &[0x03, 0xE8, b'o', b'k']));
        let mut parser = Parser::new(1024, &[]);
        let mut out = Vec::new();
        for byte in bytes {
            parser.buffer().extend_from_slice(&[byte]);
            while let Some(message) = parser.next_message().unwrap() {
                out.push(message);
            }
        }
        assert_eq!(
            out,
            vec![
                Message::Ping(Bytes::from_static(b"ping!")),
                Message::Text("Hello".into()),
                Message::Text("z".repeat(300)),
                Message::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn protocol_violations_fail_the_connection() {
        let unmasked = [0x81, 0x02, b'h', b'i'];
        assert!(matches!(parse_all(&unmasked), Err(ParseError::Protocol(_))));
        let reserved = client(0xC1, b"x");
        assert!(matches!(parse_all(&reserved), Err(ParseError::Protocol(_))));
        let unknown = client(0x83, b"x");
        assert!(matches!(parse_all(&unknown), Err(ParseError::Protocol(_))));
        let fragmented_ping = client(0x09, b"x");
        assert!(matches!(
            parse_all(&fragmented_ping),
            Err(ParseError::Protocol(_))
        ));
        let long_ping = client(0x89, &[0; 126]);
        assert!(matches!(
            parse_all(&long_ping),
            Err(ParseError::Protocol(_))
        ));
        let orphan = client(0x80, b"x");
        assert!(matches!(parse_all(&orphan), Err(ParseError::Protocol(_))));
        let mut interleaved = client(0x01, b"a");
        interleaved.extend(client(0x81, b"b"));
        assert!(matches!(
            parse_all(&interleaved),
            Err(ParseError::Protocol(_))
        ));
        let bad_code = client(0x88, &[0x03, 0xEC]); // 1004 is reserved
        assert!(matches!(parse_all(&bad_code), Err(ParseError::Protocol(_))));
        let one_byte_close = client(0x88, &[0x03]);
        assert!(matches!(
            parse_all(&one_byte_close),
            Err(ParseError::Protocol(_))
        ));
    }

    #[test]
    fn invalid_utf8_and_size_limits() {
        let bad = client(0x81, &[0xff, 0xfe]);
        assert_eq!(parse_all(&bad), Err(ParseError::InvalidUtf8));
        // Refused from the header alone, before the payload arrives.
        let big = client(0x81, &[b'a'; 2000]);
        assert_eq!(parse_all(&big[..8]), Err(ParseError::TooBig { max: 1024 }));
        // Fragments count together.
        let mut split = client(0x01, &[b'a'; 600]);
        split.extend(client(0x80, &[b'a'; 600]));
        assert_eq!(parse_all(&split), Err(ParseError::TooBig { max: 1024 }));
        assert_eq!(ParseError::InvalidUtf8.close_code().code(), 1007);
    }

    #[test]
    fn binary_messages_are_reported_by_size() {
        assert_eq!(
            parse_all(&client(0x82, &[1, 2, 3])).unwrap(),
            vec![Message::Binary(3)]
        );
    }
}
