//! `POST /api/notify`: the tutorial's broadcast, validated and encoded once.
//!
//! Body: `{"message": <any JSON but null>, "type"?: "<event name>", "channel"?: "<name>"}`.
//! Subscribers of the channel (default: the broadcast channel) receive event `type` (default
//! `notification`) with data `{"message": ..., "timestamp": "<RFC 3339>", "channel": "<name>"}`.
//! Answers like `POST /api/publish`, with the event id and the channel's subscriber count.
//!
//! `POST /api/users/:userId/notify` takes the same body without `channel` and delivers to every
//! open stream of that user (`GET /events/:userId`), or queues the event until the user connects;
//! its data carries `userId` instead of `channel`.

use std::time::SystemTime;

use http::{Request, Response};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::publish::{channel, idempotency_key, key_header, send};
use super::request::read_json;
use super::response::HandlerError;
use super::{Body, Ctx};
use crate::hub::{Topic, UserId};
use crate::sse::EventName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Notify {
    message: serde_json::Value,
    #[serde(rename = "type")]
    kind: Option<String>,
    channel: Option<String>,
    #[serde(rename = "idempotencyKey")]
    idempotency_key: Option<String>,
}

#[derive(Serialize)]
struct Payload<'a> {
    message: &'a serde_json::Value,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

/// Validates, encodes once and hands the event to every shard.
pub(crate) async fn publish(
    ctx: &Ctx,
    request: Request<Incoming>,
    user: Option<&UserId>,
) -> Result<Response<Body>, HandlerError> {
    let publisher = super::rate::publisher(ctx, &request)?;
    let header_key = key_header(request.headers())?;
    let notify: Notify = read_json(request, ctx.config.max_body).await?;
    let key = idempotency_key(header_key, notify.idempotency_key.as_deref())?;
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
    let topic = match user {
        Some(_) if notify.channel.is_some() => {
            return Err(HandlerError::BadRequest(
                "a user notification takes no channel".to_owned(),
            ))
        }
        Some(user) => Topic::user(user),
        None => channel(ctx, notify.channel.as_deref())?,
    };
    ctx.auth.check_publish(&publisher, &topic)?;
    let data = serde_json::to_string(&Payload {
        message: &notify.message,
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        channel: user.is_none().then(|| topic.as_str()),
        user_id: user.map(UserId::as_str),
    })
    .map_err(|e| HandlerError::BadRequest(format!("cannot encode message: {e}")))?;
    send(
        ctx,
        &topic,
        Some(name),
        crate::hub::Payload::json(&data),
        key.as_ref(),
    )
    .await
}
