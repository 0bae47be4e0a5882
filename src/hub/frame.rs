//! One event, encoded once per transport: the SSE frame and the complete WebSocket frame of its
//! JSON form. Long polling reuses the WebSocket frame's payload (the same JSON object, sliced, not
//! copied). Every subscriber of every transport gets a refcounted clone; nothing is encoded per
//! subscriber.
//!
//! The JSON form of an event is `{"id","channel","event","data"}`: `event` defaults to `message`
//! as in EventSource, and `data` is the published JSON value (or the text as a JSON string).
//! Control events (`connected`, `reset`, …) have the same shape without `channel`.

use std::time::Duration;

use bytes::Bytes;

use super::Topic;
use crate::sse::{self, Event, EventId, EventName};
use crate::ws;

/// How a stream reaches its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// A `text/event-stream` response.
    #[default]
    Sse,
    /// A WebSocket: one JSON text message per event.
    WebSocket,
    /// A long poll: the JSON objects of the events, collected into one response.
    Poll,
}

/// What an event carries.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    /// The SSE `data` field.
    pub sse: &'a str,
    /// The data as JSON for the JSON transports, if it is JSON; `None` sends the SSE data as a
    /// JSON string.
    pub json: Option<&'a str>,
}

impl<'a> Payload<'a> {
    /// Data that is JSON and the same on every transport.
    pub fn json(data: &'a str) -> Self {
        Payload {
            sse: data,
            json: Some(data),
        }
    }

    /// Plain text: SSE carries it as is, JSON transports as a string.
    pub fn text(data: &'a str) -> Self {
        Payload {
            sse: data,
            json: None,
        }
    }
}

/// One event in every transport's encoding.
#[derive(Debug, Clone)]
pub struct Frame {
    sse: Bytes,
    /// A complete, unmasked WebSocket text frame whose payload is the event's JSON object.
    ws: Bytes,
}

impl Frame {
    /// Encodes an event for every transport.
    pub fn event(
        id: Option<&EventId>,
        channel: Option<&Topic>,
        name: Option<&EventName>,
        data: Payload<'_>,
    ) -> Frame {
        let sse = Event {
            name,
            id,
            retry: None,
            data: data.sse,
        }
        .encode();
        let json = json_object(
            id,
            channel,
            Some(name.map_or("message", EventName::as_str)),
            Some(data),
        );
        Frame {
            sse,
            ws: ws::text(&json),
        }
    }

    /// A frame from already-encoded parts (tests and benchmarks).
    pub fn from_parts(sse: Bytes, ws_frame: Bytes) -> Frame {
        Frame { sse, ws: ws_frame }
    }

    /// Bytes held by the frame's encodings (what retaining it costs).
    pub fn retained_len(&self) -> usize {
        self.sse.len() + self.ws.len()
    }

    /// The SSE encoding.
    pub fn sse(&self) -> &Bytes {
        &self.sse
    }

    /// The bytes a stream of `transport` sends: a refcount bump, never a copy.
    pub fn get(&self, transport: Transport) -> Bytes {
        match transport {
            Transport::Sse => self.sse.clone(),
            Transport::WebSocket => self.ws.clone(),
            Transport::Poll => json_of(&self.ws),
        }
    }
}

/// The JSON payload of a WebSocket text frame built by this module.
fn json_of(frame: &Bytes) -> Bytes {
    frame.slice(ws::frame::header_len_of(frame).min(frame.len())..)
}

/// A per-stream control event (`connected`, `reset`, `dropped`, `closed`) in `transport`'s
/// encoding. `data` is JSON. Built per stream, so never on the fan-out path.
pub(crate) fn control(
    transport: Transport,
    name: &EventName,
    id: Option<&EventId>,
    retry: Option<Duration>,
    data: &str,
) -> Bytes {
    match transport {
        Transport::Sse => Event {
            name: Some(name),
            id,
            retry,
            data,
        }
        .encode(),
        Transport::WebSocket => ws::text(&json_object(
            id,
            None,
            Some(name.as_str()),
            Some(Payload::json(data)),
        )),
        Transport::Poll => Bytes::from(json_object(
            id,
            None,
            Some(name.as_str()),
            Some(Payload::json(data)),
        )),
    }
}

/// Why the hub ends a stream on its own. [`farewell`] turns it into the transport's last bytes,
/// so the shard's logic never builds transport-specific frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Farewell {
    /// Shutdown, or every stream told to reconnect: come back after `retry`.
    Reconnect {
        /// The (jittered) reconnection delay.
        retry: Duration,
    },
    /// The stream's catch-up could not be read: come back after `retry`.
    Unavailable {
        /// The reconnection delay.
        retry: Duration,
    },
    /// No event for `--idle-timeout`.
    Idle,
    /// The stream's credential expired.
    TokenExpired,
}

/// The last bytes a stream of `transport` gets when the hub ends it for `why` (empty: none). A
/// long poll answers with what it has, so it never gets any. Built per closing stream, never
/// on the fan-out path.
pub(crate) fn farewell(transport: Transport, why: Farewell) -> Bytes {
    use crate::ws::CloseCode;
    match (transport, why) {
        (Transport::Poll, _) => Bytes::new(),
        (Transport::Sse, Farewell::Reconnect { retry } | Farewell::Unavailable { retry }) => {
            sse::retry(retry)
        }
        (Transport::WebSocket, Farewell::Reconnect { .. }) => {
            ws::close(CloseCode::GoingAway, "server shutting down")
        }
        (Transport::WebSocket, Farewell::Unavailable { .. }) => {
            ws::close(CloseCode::GoingAway, "event store unavailable")
        }
        (Transport::Sse, Farewell::Idle) => sse::comment("idle timeout"),
        (Transport::WebSocket, Farewell::Idle) => ws::close(CloseCode::Normal, "idle timeout"),
        (Transport::Sse | Transport::WebSocket, Farewell::TokenExpired) => {
            let name = EventName::parse("closed").expect("a valid event name");
            let closed = control(
                transport,
                &name,
                None,
                None,
                r#"{"reason":"token-expired"}"#,
            );
            if transport == Transport::Sse {
                return closed;
            }
            let mut both = closed.to_vec();
            both.extend_from_slice(&ws::close(CloseCode::Policy, "token expired"));
            Bytes::from(both)
        }
    }
}

/// The keep-alive of an idle stream in each transport, encoded once per shard: an SSE comment,
/// a WebSocket ping. A long poll ends within its timeout, long before any proxy would cut it.
#[derive(Debug, Clone)]
pub(crate) struct Keepalive {
    sse: Bytes,
    ws: Bytes,
}

impl Keepalive {
    pub(crate) fn new() -> Self {
        Keepalive {
            sse: sse::comment("heartbeat"),
            ws: ws::ping(),
        }
    }

    /// The keep-alive frame of `transport`, if it has one.
    pub(crate) fn get(&self, transport: Transport) -> Option<&Bytes> {
        match transport {
            Transport::Sse => Some(&self.sse),
            Transport::WebSocket => Some(&self.ws),
            Transport::Poll => None,
        }
    }
}

/// The frame that moves a client's resume position to `id` without delivering an event: an
/// id-only SSE frame, a `position` message on a WebSocket. Long polls answer with `next`.
pub(crate) fn position(transport: Transport, id: &EventId) -> Option<Bytes> {
    match transport {
        Transport::Sse => Some(sse::id_only(id)),
        Transport::WebSocket => Some(ws::text(&json_object(
            Some(id),
            None,
            Some("position"),
            None,
        ))),
        Transport::Poll => None,
    }
}

/// The id of an event in its JSON form, if it has one: the JSON object starts with it.
pub fn json_id(object: &[u8]) -> Option<&str> {
    let rest = object.strip_prefix(b"{\"id\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

fn json_object(
    id: Option<&EventId>,
    channel: Option<&Topic>,
    event: Option<&str>,
    data: Option<Payload<'_>>,
) -> String {
    let data_len = data.map_or(0, |d| d.json.unwrap_or(d.sse).len() + 2);
    let mut out = String::with_capacity(48 + data_len);
    out.push('{');
    let mut first = true;
    let mut field = |out: &mut String, key: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
    };
    // Ids, channel names and user ids are restricted to characters that need no escaping; only
    // event names and text data go through the JSON string encoder.
    if let Some(id) = id {
        field(&mut out, "id");
        push_string(&mut out, id.as_str());
    }
    if let Some(channel) = channel {
        field(&mut out, "channel");
        push_string(&mut out, channel.as_str());
    }
    if let Some(event) = event {
        field(&mut out, "event");
        push_string(&mut out, event);
    }
    if let Some(data) = data {
        field(&mut out, "data");
        match data.json {
            Some(json) => out.push_str(json),
            None => push_string(&mut out, data.sse),
        }
    }
    out.push('}');
    out
}

fn push_string(out: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7F)
    {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        // Serializing a &str cannot fail.
        out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(text: &str) -> EventId {
        EventId::parse(text).unwrap()
    }

    #[test]
    fn one_event_every_transport() {
        let topic = Topic::parse("news").unwrap();
        let name = EventName::parse("update").unwrap();
        let frame = Frame::event(
            Some(&id("k1-7")),
            Some(&topic),
            Some(&name),
            Payload {
                sse: r#"{"channel":"news","data":{"a":1}}"#,
                json: Some(r#"{"a":1}"#),
            },
        );
        assert_eq!(
            &frame.get(Transport::Sse)[..],
            b"event: update\nid: k1-7\ndata: {\"channel\":\"news\",\"data\":{\"a\":1}}\n\n"
        );
        let object = br#"{"id":"k1-7","channel":"news","event":"update","data":{"a":1}}"#;
        assert_eq!(&frame.get(Transport::Poll)[..], object);
        let ws = frame.get(Transport::WebSocket);
        assert_eq!(ws[0], 0x81);
        assert_eq!(usize::from(ws[1]), object.len());
        assert_eq!(&ws[2..], object);
        assert_eq!(json_id(&frame.get(Transport::Poll)), Some("k1-7"));
    }

    #[test]
    fn text_data_becomes_a_json_string_and_names_are_escaped() {
        let name = EventName::parse("say \"hi\"").unwrap();
        let frame = Frame::event(None, None, Some(&name), Payload::text("line1\nline2 \u{1}"));
        let object: serde_json::Value =
            serde_json::from_slice(&frame.get(Transport::Poll)).unwrap();
        assert_eq!(object["event"], "say \"hi\"");
        assert_eq!(object["data"], "line1\nline2 \u{1}");
        assert!(object.get("id").is_none());
        assert_eq!(json_id(&frame.get(Transport::Poll)), None);
        // Without a name, JSON says `message`, as EventSource would.
        let plain = Frame::event(None, None, None, Payload::json("1"));
        assert_eq!(
            &plain.get(Transport::Poll)[..],
            br#"{"event":"message","data":1}"#
        );
    }

    #[test]
    fn control_and_position_frames() {
        let reset = EventName::parse("reset").unwrap();
        let body = control(
            Transport::Poll,
            &reset,
            Some(&id("k1-9")),
            None,
            r#"{"reason":"expired"}"#,
        );
        assert_eq!(
            &body[..],
            br#"{"id":"k1-9","event":"reset","data":{"reason":"expired"}}"#
        );
        let sse = control(
            Transport::Sse,
            &reset,
            None,
            Some(Duration::from_secs(3)),
            "{}",
        );
        assert_eq!(&sse[..], b"event: reset\nretry: 3000\ndata: {}\n\n");
        assert_eq!(
            &position(Transport::WebSocket, &id("k1-9")).unwrap()[2..],
            br#"{"id":"k1-9","event":"position"}"#
        );
        assert_eq!(
            &position(Transport::Sse, &id("k1-9")).unwrap()[..],
            b"id: k1-9\n\n"
        );
        assert!(position(Transport::Poll, &id("k1-9")).is_none());
    }

    #[test]
    fn farewells_per_transport() {
        let retry = Duration::from_millis(4500);
        assert_eq!(
            &farewell(Transport::Sse, Farewell::Reconnect { retry })[..],
            b"retry: 4500\n\n"
        );
        assert_eq!(
            &farewell(Transport::Sse, Farewell::Idle)[..],
            b": idle timeout\n\n"
        );
        assert_eq!(
            &farewell(Transport::Sse, Farewell::TokenExpired)[..],
            b"event: closed\ndata: {\"reason\":\"token-expired\"}\n\n"
        );
        let expired = farewell(Transport::WebSocket, Farewell::TokenExpired);
        let close = ws::close(ws::CloseCode::Policy, "token expired");
        assert!(
            expired.ends_with(&close),
            "a closed message, then the close frame"
        );
        assert_eq!(expired[0], 0x81, "starting with a text frame");
        for why in [
            Farewell::Reconnect { retry },
            Farewell::Unavailable { retry },
            Farewell::Idle,
            Farewell::TokenExpired,
        ] {
            assert!(farewell(Transport::Poll, why).is_empty());
            let first = farewell(Transport::WebSocket, why)[0];
            assert!(
                first == 0x81 || first == 0x88,
                "a text or close frame: {first:#x}"
            );
        }
        let keepalive = Keepalive::new();
        assert_eq!(
            &keepalive.get(Transport::Sse).unwrap()[..],
            b": heartbeat\n\n"
        );
        assert_eq!(keepalive.get(Transport::WebSocket).unwrap(), &ws::ping());
        assert!(keepalive.get(Transport::Poll).is_none());
    }
}
