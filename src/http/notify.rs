//! `POST /api/notify`: the tutorial's broadcast, validated and encoded once.
//!
//! Body: `{"message": <any JSON but null>, "type": "<event name>"?}`. Subscribers receive event
//! `type` (default `notification`) with data `{"message": ..., "timestamp": "<RFC 3339>"}`.

use std::time::SystemTime;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::request::read_json;
use super::response::{json, HandlerError};
use super::{Body, Ctx};
use crate::sse::{Event, EventName};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Notify {
    message: serde_json::Value,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Serialize)]
struct Payload<'a> {
    message: &'a serde_json::Value,
    timestamp: String,
}

#[derive(Serialize)]
struct Published {
    success: bool,
    clients: usize,
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
    let data = serde_json::to_string(&Payload {
        message: &notify.message,
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    })
    .map_err(|e| HandlerError::BadRequest(format!("cannot encode message: {e}")))?;
    let frame = Event {
        name: Some(name),
        data: &data,
        ..Event::default()
    }
    .encode();
    ctx.hub.publish(&ctx.broadcast, frame)?;
    Ok(json(
        StatusCode::OK,
        &Published {
            success: true,
            clients: ctx.hub.connections(),
        },
    ))
}
