//! Just enough HTTP/1.1 for the clients: finding and reading a response head, and undoing chunked
//! transfer encoding as bytes arrive in arbitrary pieces, without allocating per response.
//!
//! Knows nothing of SSE, WebSocket or JSON: the transports feed it socket bytes and get back the
//! status, the body framing and de-chunked body bytes.

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body runs until the connection closes.
    UntilClose,
}

/// The parts of a response head the clients act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// How the body is framed.
    pub framing: Framing,
    /// The server said `Connection: close`.
    pub close: bool,
    /// Bytes of the head, blank line included.
    pub len: usize,
}

/// Parses the response head at the start of `buf`; `None` while it is incomplete or malformed
/// (a malformed head never completes, so the caller's timeout or size cap ends the wait).
pub fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut framing = Framing::UntilClose;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            framing = Framing::Length(value.parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    if status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Some(Head {
        status,
        framing,
        close,
        len: end,
    })
}

/// The first position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    // Every delivered byte passes through here at least once (event blocks, `"n":`), so this
    // is memchr's vectorized search rather than a window-by-window compare: with kilobyte
    // payloads the naive one cost the client a large share of a core.
    memchr::memmem::find(haystack, needle)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size line (extensions ignored), `size` so far.
    Size {
        size: usize,
        digits: bool,
        ext: bool,
    },
    /// The `\n` of the size line.
    SizeLf {
        size: usize,
    },
    /// Inside a chunk, `left` bytes to go.
    Data {
        left: usize,
    },
    /// The CRLF after a chunk's data.
    DataCr,
    DataLf,
    /// After the last chunk: trailers until a blank line (`line` bytes on the current one).
    Trailer {
        line: usize,
    },
    /// The last chunk and its trailers are through.
    Done,
}

/// Undoes `Transfer-Encoding: chunked` incrementally.
#[derive(Debug, Clone)]
pub struct Dechunker {
    state: State,
}

/// The chunked framing broke its own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError;

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed chunked encoding")
    }
}

impl std::error::Error for ChunkError {}

impl Default for Dechunker {
    fn default() -> Self {
        Dechunker::new()
    }
}

impl Dechunker {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        Dechunker {
            state: State::Size {
                size: 0,
                digits: false,
                ext: false,
            },
        }
    }

    /// The terminating chunk (and trailers) has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds wire bytes; calls `body` with each run of body bytes, in order. Returns how many
    /// input bytes were consumed: all of them, unless the body ended within `input` (the rest
    /// belongs to the next response on the connection).
    pub fn feed(&mut self, input: &[u8], mut body: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Size { size, digits, ext } => {
                    let byte = input[i];
                    i += 1;
                    self.state = match byte {
                        b'\r' if digits => State::SizeLf { size },
                        b'\n' if digits => self.after_size(size),
                        _ if ext => State::Size { size, digits, ext },
                        b';' | b' ' | b'\t' if digits => State::Size {
                            size,
                            digits,
                            ext: true,
                        },
                        _ => {
                            let digit = (byte as char).to_digit(16).ok_or(ChunkError)? as usize;
                            let size = size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(digit))
                                .ok_or(ChunkError)?;
                            State::Size {
                                size,
                                digits: true,
                                ext,
                            }
                        }
                    };
                }
                State::SizeLf { size } => {
                    if input[i] != b'\n' {
                        return Err(ChunkError);
                    }
                    i += 1;
                    self.state = self.after_size(size);
                }
                State::Data { left } => {
                    let take = left.min(input.len() - i);
                    body(&input[i..i + take]);
                    i += take;
                    self.state = if take == left {
                        State::DataCr
                    } else {
                        State::Data { left: left - take }
                    };
                }
                State::DataCr => {
                    self.state = match input[i] {
                        b'\r' => State::DataLf,
                        b'\n' => Self::next_size(),
                        _ => return Err(ChunkError),
                    };
                    i += 1;
                }
                State::DataLf => {
                    if input[i] != b'\n' {
                        return Err(ChunkError);
                    }
                    i += 1;
                    self.state = Self::next_size();
                }
                State::Trailer { line } => {
                    let byte = input[i];
                    i += 1;
                    self.state = match byte {
                        b'\n' if line == 0 => State::Done,
                        b'\n' => State::Trailer { line: 0 },
                        b'\r' => State::Trailer { line },
                        _ => State::Trailer { line: line + 1 },
                    };
                    if self.state == State::Done {
                        return Ok(i);
                    }
                }
                State::Done => return Ok(i),
            }
        }
        Ok(i)
    }

    fn after_size(&self, size: usize) -> State {
        if size == 0 {
            State::Trailer { line: 0 }
        } else {
            State::Data { left: size }
        }
    }

    fn next_size() -> State {
        State::Size {
            size: 0,
            digits: false,
            ext: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_with_length_and_chunked() {
        let head =
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"a\":1}").expect("head");
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(12));
        assert_eq!(head.len, 39);
        assert!(!head.close);
        let head = parse_head(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .expect("head");
        assert_eq!(head.status, 503);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.close);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nfoo: bar\r\n"), None);
    }

    fn dechunk_in_pieces(wire: &[u8], piece: usize) -> (Vec<u8>, usize, bool) {
        let mut decoder = Dechunker::new();
        let mut body = Vec::new();
        let mut used = 0;
        for part in wire.chunks(piece) {
            used += decoder
                .feed(part, |b| body.extend_from_slice(b))
                .expect("valid chunks");
            if decoder.is_done() {
                break;
            }
        }
        (body, used, decoder.is_done())
    }

    #[test]
    fn dechunks_whatever_the_read_sizes() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nNEXT";
        for piece in 1..wire.len() {
            let (body, used, done) = dechunk_in_pieces(wire, piece);
            assert_eq!(body, b"hello, world", "piece {piece}");
            assert!(done);
            assert_eq!(&wire[used..], b"NEXT", "piece {piece}");
        }
    }

    #[test]
    fn trailers_and_errors() {
        let (body, _, done) = dechunk_in_pieces(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", 2);
        assert_eq!(body, b"abc");
        assert!(done);
        assert_eq!(Dechunker::new().feed(b"zz\r\n", |_| {}), Err(ChunkError));
        assert_eq!(Dechunker::new().feed(b"1\r\nab", |_| {}), Err(ChunkError));
    }
}
