//! The server's own account of a run, read from Sluice's `GET /stats`: how many streams it cut
//! off as slow consumers (`slowConsumersDropped`). The harness sees a cut-off as a reset on a
//! stalled socket; this is the server's side of the same story, and it also counts evictions of
//! connections that were not meant to stall.
//!
//! One blocking request on a fresh connection (TLS with `--tls`), from the thread that samples `/proc`. Sluice
//! only: the baselines have no such endpoint. Knows nothing of the run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http1::{parse_head, Dechunker, Framing};
use crate::tls::Tls;

/// Longest wait for the whole answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Largest answer read (a few hundred bytes per worker).
const MAX_ANSWER: usize = 256 * 1024;

/// Streams the server has cut off as slow consumers since it started; `None` if it did not
/// answer with that counter.
pub fn slow_consumers_dropped(server: SocketAddr, tls: Option<&Tls>) -> Option<u64> {
    let body = get(server, tls, "/stats")?;
    crate::scan::number_field(&body, b"\"slowConsumersDropped\":")
}

/// The body of `GET path` (`Connection: close`), if the answer is a 200.
fn get(server: SocketAddr, tls: Option<&Tls>, path: &str) -> Option<Vec<u8>> {
    let stream = TcpStream::connect_timeout(&server, TIMEOUT).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(TIMEOUT)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    match tls {
        Some(tls) => {
            let mut stream = tls.blocking(stream).ok()?;
            stream.write_all(request.as_bytes()).ok()?;
            stream.flush().ok()?;
            // A TLS server may close without close_notify: keep what arrived before that.
            let _ = stream.take(MAX_ANSWER as u64).read_to_end(&mut answer);
        }
        None => {
            let mut stream = stream;
            stream.write_all(request.as_bytes()).ok()?;
            stream
                .take(MAX_ANSWER as u64)
                .read_to_end(&mut answer)
                .ok()?;
        }
    }
    body_of(&answer)
}

/// The de-framed body of a complete 200 answer.
fn body_of(answer: &[u8]) -> Option<Vec<u8>> {
    let head = parse_head(answer)?;
    if head.status != 200 {
        return None;
    }
    let raw = &answer[head.len..];
    match head.framing {
        Framing::Chunked => {
            let mut body = Vec::new();
            let mut dechunker = Dechunker::new();
            dechunker
                .feed(raw, |piece| body.extend_from_slice(piece))
                .ok()?;
            Some(body)
        }
        Framing::Length(length) => raw.get(..length).map(<[u8]>::to_vec),
        Framing::UntilClose => Some(raw.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counter_from_either_framing() {
        let json = br#"{"totalConnections":3,"slowConsumersDropped":42,"workers":[{"slowConsumersDropped":40}]}"#;
        let plain = [
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", json.len()).into_bytes(),
            json.to_vec(),
        ]
        .concat();
        let body = body_of(&plain).expect("a body");
        assert_eq!(
            crate::scan::number_field(&body, b"\"slowConsumersDropped\":"),
            Some(42)
        );
        let chunked = [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
            format!("{:x}\r\n", json.len()).into_bytes(),
            json.to_vec(),
            b"\r\n0\r\n\r\n".to_vec(),
        ]
        .concat();
        assert_eq!(body_of(&chunked), Some(json.to_vec()));
        assert_eq!(body_of(b"HTTP/1.1 404 Not Found\r\n\r\n"), None);
    }
}
