//! `POST /api/notify`: the tutorial's broadcast, validated and encoded once.
//!
//! Body: `{"message": <any JSON but null>, "type"?: "<event name>", "channel"?: "<name>"}`.
//! Subscribers of the channel (default: the broadcast channel) receive event `type` (default
//! `notification`) with data `{"message": ..., "timestamp": "<RFC 3339>", "channel": "<name>"}`.
//! Answers like `POST /api/publish`, with the event id and the channel's subscriber count.

use std::time::SystemTime;

use http::{Request, Response};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::publish::{channel, send};
use super::request::read_json;
use super::response::HandlerError;
use super::{Body, Ctx};
use crate::sse::EventName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Notify {
    message: serde_json::Value,
    #[serde(rename = "type")]
    kind: Option<String>,
    channel: Option<String>,
}

#[derive(Serialize)]
struct Payload<'a> {
    message: &'a serde_json::Value,
    timestamp: String,
    channel: &'a str,
}

/// Validates, encodes once and hands the event to every shard.
pub(crate) async fn publish(
    ctx: &Ctx,
    request: Request<Incoming>,
) -> Result<Response<Body>, HandlerError> {
    let notify: Notify = read_json(request, ctx.config.max_body).await?;
    if notify.message.is_null() {
        return Err(HandlerError::BadRequest(
            "message must not be null".to_owned(),
        ));
    }
    let custom;
    let name = match notify.kind.as_deref() {
        None => &ctx.notification,
        Some(kind) => {
            custom = EventName::parse(kind)
                .map_err(|e| HandlerError::BadRequest(format!("invalid type: {e}")))?;
            &custom
        }
    };
    let topic = channel(ctx, notify.channel.as_deref())?;
    let data = serde_json::to_string(&Payload {
        message: &notify.message,
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        channel: topic.as_str(),
    })
    .map_err(|e| HandlerError::BadRequest(format!("cannot encode message: {e}")))?;
    send(ctx, &topic, Some(name), &data)
}
