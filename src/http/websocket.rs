//! `GET /ws`: the WebSocket transport. The same hub, channels, ids, history and auth as
//! `/events`; one JSON text message per event (`{"id","channel","event","data"}`, see
//! `hub::Frame`), already framed by the hub so this file never encodes an event.
//!
//! After the handshake the connection is a small loop on the worker that accepted it: it writes
//! the stream's queued frames (joined, as an SSE body does), answers pings, takes
//! `{"action":"subscribe"|"unsubscribe","channel":...}` messages, and ends with a close
//! handshake. Keep-alive pings come from the shard's heartbeat tick, like SSE comments.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::events::{prepare, Kind};
use super::response::{error_response, HandlerError};
use super::{Body, Ctx};
use crate::auth::Principal;
use crate::hub::{Change, HubError, Recv, Subscription, Topic, Transport, Tripwire};
use crate::shutdown::DrainGuard;
use crate::ws::{self, CloseCode, Message, Parser};

/// Largest message a client may send. Subscription requests are tens of bytes; anything near
/// this is not one.
pub const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

/// Bytes of replies (pongs, acknowledgments) that may wait for a client that does not read them.
/// A client that keeps sending pings or commands without reading is cut off beyond this, so it
/// cannot grow the server's memory; a client that pipelines a few hundred commands is not.
const MAX_OUTBOX_BYTES: usize = 256 * 1024;

/// How long the server waits for the client's side of the close handshake before it drops the
/// connection anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Answers a WebSocket handshake: `101 Switching Protocols` with the stream already open in the
/// hub (so the connection limit, a taken id or a bad token get a plain HTTP error instead).
pub(crate) fn open(ctx: &Rc<Ctx>, request: Request<Incoming>) -> Response<Body> {
    match upgrade(ctx, request) {
        Ok(response) => response,
        Err(error) => error_response(error),
    }
}

fn upgrade(ctx: &Rc<Ctx>, mut request: Request<Incoming>) -> Result<Response<Body>, HandlerError> {
    let accept = handshake(request.version(), request.headers())?;
    // Browsers send their page's origin; a page of an origin not allowed must not ride on the
    // user's cookie (cross-site WebSocket hijacking). Non-browser clients send none.
    if request.headers().contains_key(header::ORIGIN) && ctx.cors.allow(request.headers()).is_none()
    {
        return Err(HandlerError::ForbiddenOrigin);
    }
    let prepared = prepare(ctx, &request, Kind::Public)?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    drop(request);
    let tripwire = Rc::new(Tripwire::default());
    let mut opening = prepared.opening(Transport::WebSocket);
    opening.tripwire = Some(tripwire.clone());
    let subscription = ctx.bus.open(&ctx.shard, opening)?;
    let principal = prepared.principal;
    let session = Session {
        ctx: ctx.clone(),
        subscription,
        tripwire,
        principal,
        outbox: VecDeque::new(),
        _guard: ctx.drain.clone(),
    };
    tokio::task::spawn_local(async move {
        match on_upgrade.await {
            Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => session.run(parts.io.into_inner(), &parts.read_buf).await,
                Err(_) => tracing::warn!("upgraded connection is not a TCP stream"),
            },
            Err(error) => tracing::debug!(%error, "websocket upgrade did not complete"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept)
            .map_err(|_| HandlerError::BadRequest("invalid Sec-WebSocket-Key".to_owned()))?,
    );
    Ok(response)
}

/// Checks the opening handshake (RFC 6455 §4.2.1) and returns the `Sec-WebSocket-Accept` value.
fn handshake(version: Version, headers: &HeaderMap) -> Result<String, HandlerError> {
    if version != Version::HTTP_11 {
        return Err(HandlerError::UpgradeRequired(
            "WebSocket needs an HTTP/1.1 upgrade request",
        ));
    }
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(HandlerError::UpgradeRequired(
            "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes().trim_ascii() != b"13")
    {
        return Err(HandlerError::UpgradeRequired(
            "unsupported Sec-WebSocket-Version; this server speaks 13",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|key| key.to_str().ok())
        .and_then(ws::accept_key)
        .ok_or_else(|| {
            HandlerError::BadRequest("Sec-WebSocket-Key must be the base64 of 16 bytes".to_owned())
        })
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A client's request to change its subscriptions.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    action: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: crate::hub::CommandNames,
}

#[derive(Serialize)]
struct Reply<'a, T: Serialize> {
    event: &'a str,
    data: T,
}

#[derive(Serialize)]
struct ChannelData<'a> {
    channel: &'a str,
}

#[derive(Serialize)]
struct ErrorData<'a> {
    status: u16,
    error: &'a str,
}

/// How a session ends.
enum End {
    /// Close handshake done (or the peer went away): drop the socket normally, after giving the
    /// client a moment to answer our close unless it has already finished sending.
    Closed { client_done: bool },
    /// Evicted as a slow consumer: reset the connection so the kernel frees its buffers now.
    Reset,
}

/// One upgraded connection.
struct Session {
    ctx: Rc<Ctx>,
    subscription: Subscription,
    tripwire: Rc<Tripwire>,
    principal: Option<Principal>,
    /// Frames this session writes itself (pongs, replies, its own close), before more queued
    /// events.
    outbox: VecDeque<Bytes>,
    _guard: DrainGuard,
}

impl Session {
    async fn run(mut self, mut stream: TcpStream, read_ahead: &[u8]) {
        let end = self.pump(&mut stream, read_ahead).await;
        match end {
            End::Reset => {
                let _ = stream.set_zero_linger();
            }
            End::Closed { client_done: true } => {
                let _ = stream.shutdown().await;
            }
            End::Closed { client_done: false } => {
                // Our close frame is out; give the client a moment to answer before dropping.
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 512];
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
            }
        }
    }

    async fn pump(&mut self, stream: &mut TcpStream, read_ahead: &[u8]) -> End {
        let (mut reader, mut writer) = stream.split();
        let mut parser = Parser::new(MAX_CLIENT_MESSAGE, read_ahead);
        let mut pending = Bytes::new();
        // Set once our close frame is queued: nothing is taken from the stream after it, and the
        // client's input is no longer parsed (RFC 6455 §5.5.1), only drained and dropped.
        let mut closing = false;
        // The client has finished sending (EOF).
        let mut client_done = false;
        let mut discard = [0u8; 512];
        // Messages that arrived with the handshake.
        if self.handle_input(&mut parser) {
            closing = true;
        }
        loop {
            if closing {
                // Whatever the parser held is dropped, so a client that keeps sending after an
                // error cannot grow this connection's memory.
                parser.discard();
            }
            if pending.is_empty() {
                match self.outbox.pop_front() {
                    Some(next) => pending = next,
                    None if closing => return End::Closed { client_done },
                    None => {}
                }
            }
            tokio::select! {
                biased;
                _ = self.tripwire.tripped() => return End::Reset,
                read = async {
                    if closing {
                        reader.read(&mut discard).await
                    } else {
                        reader.read_buf(parser.buffer()).await
                    }
                }, if !client_done => match read {
                    // Without a close frame the client just left: nothing more to say to it.
                    Ok(0) if !closing => return End::Closed { client_done: true },
                    Ok(0) => client_done = true,
                    Err(_) => return End::Reset,
                    Ok(_) if closing => {}
                    Ok(_) => {
                        if self.handle_input(&mut parser) {
                            closing = true;
                        }
                        if self.outbox.iter().map(Bytes::len).sum::<usize>() > MAX_OUTBOX_BYTES {
                            return End::Reset;
                        }
                    }
                },
                written = writer.write(&pending), if !pending.is_empty() => match written {
                    Ok(0) | Err(_) => return End::Reset,
                    Ok(n) => pending.advance(n),
                },
                recv = poll_fn(|cx| self.subscription.poll_recv(cx)),
                    if pending.is_empty() && !closing =>
                {
                    match recv {
                        Recv::Frames(frames) => pending = frames,
                        // The hub queued a close frame last (shutdown, idle timeout, expiry).
                        Recv::End => closing = true,
                        Recv::Evicted => return End::Reset,
                    }
                }
            }
        }
    }

    /// Handles every complete message read so far. Returns true once the session is closing.
    fn handle_input(&mut self, parser: &mut Parser) -> bool {
        loop {
            match parser.next_message() {
                Ok(None) => return false,
                Ok(Some(Message::Text(text))) => self.command(&text),
                Ok(Some(Message::Ping(payload))) => self.outbox.push_back(ws::pong(&payload)),
                Ok(Some(Message::Pong)) => {}
                Ok(Some(Message::Binary(_))) => {
                    self.outbox.push_back(ws::close(
                        CloseCode::Unsupported,
                        "binary messages are not accepted",
                    ));
                    return true;
                }
                Ok(Some(Message::Close(code))) => {
                    // Echo the client's code (RFC 6455 §5.5.1), or a normal close.
                    let reply = match code {
                        Some(code) => close_echo(code),
                        None => ws::close(CloseCode::Normal, ""),
                    };
                    self.outbox.push_back(reply);
                    return true;
                }
                Err(error) => {
                    self.outbox
                        .push_back(ws::close(error.close_code(), &error.to_string()));
                    return true;
                }
            }
        }
    }

    /// Applies a subscription command and queues the reply.
    fn command(&mut self, text: &str) {
        let reply = match self.try_command(text) {
            Ok((event, channels)) => channels
                .iter()
                .map(|topic| {
                    encode(&Reply {
                        event,
                        data: ChannelData {
                            channel: topic.as_str(),
                        },
                    })
                })
                .collect(),
            Err((status, error)) => vec![encode(&Reply {
                event: "error",
                data: ErrorData {
                    status: status.as_u16(),
                    error: &error,
                },
            })],
        };
        self.outbox.extend(reply);
    }

    fn try_command(
        &mut self,
        text: &str,
    ) -> Result<(&'static str, Vec<Topic>), (StatusCode, String)> {
        let bad = |why: String| (StatusCode::BAD_REQUEST, why);
        let command: Command = serde_json::from_str(text).map_err(|e| {
            bad(format!(
                "expected {{\"action\":\"subscribe\"|\"unsubscribe\",\"channel\":name}}: {e}"
            ))
        })?;
        let (add, event) = match command.action.as_str() {
            "subscribe" => (true, "subscribed"),
            "unsubscribe" => (false, "unsubscribed"),
            other => {
                return Err(bad(format!(
                    "unknown action '{}'",
                    crate::topic::clip(other)
                )))
            }
        };
        let names = command.channel.into_iter().chain(command.channels.0);
        let topics = names
            .map(|name| {
                Topic::parse(&name).map_err(|e| {
                    bad(format!(
                        "invalid channel '{}': {e}",
                        crate::topic::clip(&name)
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if topics.is_empty() {
            return Err(bad(
                "name a channel (\"channel\" or \"channels\")".to_owned()
            ));
        }
        // Each channel gets its own acknowledgment; a stream never holds more than this many.
        if topics.len() > crate::hub::MAX_TOPICS_PER_STREAM {
            return Err(bad(format!(
                "at most {} channels per command",
                crate::hub::MAX_TOPICS_PER_STREAM
            )));
        }
        if add {
            if let Some(principal) = &self.principal {
                if let Some(denied) = topics.iter().find(|t| !principal.may_subscribe(t)) {
                    self.ctx
                        .auth
                        .fail(crate::auth::AuthError::Forbidden(String::new()));
                    return Err((
                        StatusCode::FORBIDDEN,
                        format!("the token may not subscribe to '{denied}'"),
                    ));
                }
            }
        }
        let id = self.subscription.id().as_str().to_owned();
        let caller = self.principal.as_ref().map(|p| &p.user);
        for topic in &topics {
            match self.ctx.shard.subscribe(&id, topic, add, caller) {
                Change::Done => {}
                Change::TooMany => {
                    return Err(bad(format!(
                        "a stream may subscribe to at most {} channels",
                        crate::hub::MAX_TOPICS_PER_STREAM
                    )))
                }
                Change::NotFound | Change::Forbidden => {
                    return Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        HubError::Closed.to_string(),
                    ))
                }
            }
        }
        Ok((event, topics))
    }
}

fn close_echo(code: u16) -> Bytes {
    let code = match code {
        1001 => CloseCode::GoingAway,
        1002 => CloseCode::Protocol,
        1003 => CloseCode::Unsupported,
        1007 => CloseCode::InvalidData,
        1008 => CloseCode::Policy,
        1009 => CloseCode::TooBig,
        _ => CloseCode::Normal,
    };
    ws::close(code, "")
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    ws::text(&serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn handshake_checks() {
        let good = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            handshake(Version::HTTP_11, &headers(&good)).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(matches!(
            handshake(Version::HTTP_10, &headers(&good)),
            Err(HandlerError::UpgradeRequired(_))
        ));
        assert!(matches!(
            handshake(Version::HTTP_11, &headers(&good[1..])),
            Err(HandlerError::UpgradeRequired(_))
        ));
        let old = [good[0], good[1], ("sec-websocket-version", "8"), good[3]];
        assert!(matches!(
            handshake(Version::HTTP_11, &headers(&old)),
            Err(HandlerError::UpgradeRequired(_))
        ));
        let bad_key = [good[0], good[1], good[2], ("sec-websocket-key", "short")];
        assert!(matches!(
            handshake(Version::HTTP_11, &headers(&bad_key)),
            Err(HandlerError::BadRequest(_))
        ));
    }
}
