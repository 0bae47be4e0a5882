//! `POST /api/publish`: publish one event on a channel.
//!
//! JSON body `{"channel"?: name, "event"?: name, "data": any JSON}`: subscribers receive the
//! event with data `{"channel": name, "data": <data>}`, so a stream that multiplexes several
//! channels can tell them apart. A `text/plain` body with `?channel=&event=` in the URL is sent
//! as-is instead (line breaks become `data:` lines), for single-channel text streams.
//! Answers `{"success": true, "id": "<event id>", "channel": name, "clients": N}`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::request::{body_kind, read_json, read_text, BodyKind};
use super::response::{json, HandlerError};
use super::{Body, Ctx};
use crate::bus::IdempotencyKey;
use crate::hub::{Payload, Topic};
use crate::sse::EventName;
use crate::topic::clip;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    channel: Option<String>,
    event: Option<String>,
    data: serde_json::Value,
    #[serde(rename = "idempotencyKey")]
    idempotency_key: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct Published<'a> {
    pub(crate) success: bool,
    pub(crate) id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) channel: Option<&'a str>,
    pub(crate) clients: usize,
}

/// Handles `POST /api/publish`.
pub(crate) async fn publish(
    ctx: &Ctx,
    request: Request<Incoming>,
) -> Result<Response<Body>, HandlerError> {
    match body_kind(request.headers()) {
        BodyKind::Json => publish_json(ctx, request).await,
        BodyKind::Text => publish_text(ctx, request).await,
        BodyKind::Other => Err(HandlerError::UnsupportedMediaType),
    }
}

async fn publish_json(
    ctx: &Ctx,
    request: Request<Incoming>,
) -> Result<Response<Body>, HandlerError> {
    let publisher = super::rate::publisher(ctx, &request)?;
    let header_key = key_header(request.headers())?;
    let publish: Publish = read_json(request, ctx.config.max_body).await?;
    let key = idempotency_key(header_key, publish.idempotency_key.as_deref())?;
    let topic = channel(ctx, publish.channel.as_deref())?;
    ctx.auth.check_publish(&publisher, &topic)?;
    let name = event_name(publish.event.as_deref())?;
    // JSON transports carry the channel beside the data; an SSE stream gets it in an envelope.
    let raw = serde_json::to_string(&publish.data)
        .map_err(|e| HandlerError::BadRequest(format!("cannot encode data: {e}")))?;
    // Channel names are restricted to characters that need no JSON escaping.
    let envelope = format!("{{\"channel\":\"{}\",\"data\":{raw}}}", topic.as_str());
    send(
        ctx,
        &topic,
        name.as_ref(),
        Payload {
            sse: &envelope,
            json: Some(&raw),
        },
        key.as_ref(),
    )
    .await
}

async fn publish_text(
    ctx: &Ctx,
    request: Request<Incoming>,
) -> Result<Response<Body>, HandlerError> {
    let mut channel_param = None;
    let mut event_param = None;
    if let Some(query) = request.uri().query() {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "channel" => channel_param = Some(value.into_owned()),
                "event" => event_param = Some(value.into_owned()),
                _ => {}
            }
        }
    }
    let topic = channel(ctx, channel_param.as_deref())?;
    let name = event_name(event_param.as_deref())?;
    let publisher = super::rate::publisher(ctx, &request)?;
    ctx.auth.check_publish(&publisher, &topic)?;
    let key = idempotency_key(key_header(request.headers())?, None)?;
    let text = read_text(request, ctx.config.max_body).await?;
    send(
        ctx,
        &topic,
        name.as_ref(),
        Payload::text(&text),
        key.as_ref(),
    )
    .await
}

/// Encodes once (with the id the bus assigns) and publishes.
/// `clients` counts this node's subscribers.
pub(crate) async fn send(
    ctx: &Ctx,
    topic: &Topic,
    name: Option<&EventName>,
    data: Payload<'_>,
    key: Option<&IdempotencyKey>,
) -> Result<Response<Body>, HandlerError> {
    let receipt = ctx
        .bus
        .publish(topic, name, data, key)
        .await
        .map_err(HandlerError::refused_publish)?;
    Ok(json(
        StatusCode::OK,
        &Published {
            success: true,
            id: &receipt.id,
            channel: if topic.is_user() {
                None
            } else {
                Some(topic.as_str())
            },
            clients: ctx.bus.hub().subscribers(topic),
        },
    ))
}

/// The `Idempotency-Key` header, validated.
pub(crate) fn key_header(headers: &http::HeaderMap) -> Result<Option<String>, HandlerError> {
    headers
        .get("idempotency-key")
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                HandlerError::BadRequest(
                    "invalid Idempotency-Key: must be visible ASCII characters only".to_owned(),
                )
            })
        })
        .transpose()
}

/// The publish's idempotency key, from the header or the JSON body (which must agree if both
/// are given).
pub(crate) fn idempotency_key(
    header: Option<String>,
    body: Option<&str>,
) -> Result<Option<IdempotencyKey>, HandlerError> {
    let text = match (header.as_deref(), body) {
        (Some(a), Some(b)) if a != b => {
            return Err(HandlerError::BadRequest(
                "the Idempotency-Key header and idempotencyKey differ".to_owned(),
            ))
        }
        (Some(text), _) | (None, Some(text)) => text,
        (None, None) => return Ok(None),
    };
    IdempotencyKey::parse(text)
        .map(Some)
        .map_err(|e| HandlerError::BadRequest(format!("invalid Idempotency-Key: {e}")))
}

/// The channel named in a request, or the broadcast channel.
pub(crate) fn channel(ctx: &Ctx, name: Option<&str>) -> Result<Topic, HandlerError> {
    match name {
        None => Ok(ctx.broadcast.clone()),
        Some(name) => Topic::parse(name).map_err(|e| {
            HandlerError::BadRequest(format!("invalid channel '{}': {e}", clip(name)))
        }),
    }
}

fn event_name(name: Option<&str>) -> Result<Option<EventName>, HandlerError> {
    name.map(|n| {
        EventName::parse(n).map_err(|e| HandlerError::BadRequest(format!("invalid event: {e}")))
    })
    .transpose()
}
