//! `POST /chat/:roomId/message`: post to a chat room. (The room's stream is opened by
//! `events.rs`, which also joins and leaves the room.)
//!
//! Body `{"userId", "message"}`. With a token, the poster is the token's subject and a `userId`
//! that disagrees is refused. Members receive event `message` with data
//! `{"id", "roomId", "userId", "message", "timestamp"}`, where `id` is the event's own id (unique,
//! unlike a timestamp). 404 when the room has no members, 400 for an empty message, 413 over
//! [`MAX_MESSAGE_CHARS`](crate::chat::MAX_MESSAGE_CHARS) characters.

use std::time::SystemTime;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::events::chat_member;
use super::request::read_json;
use super::response::{json, HandlerError};
use super::{Body, Ctx};
use crate::auth::{token_from, AuthError, Publisher};
use crate::chat::{RoomId, MAX_MESSAGE_CHARS};
use crate::hub::{Frame, Payload};
use crate::sse::EventName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Post {
    user_id: Option<String>,
    message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    /// The event id; in a cluster it is put in by each node when the event is read back
    /// (the id is taken inside Redis).
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    room_id: &'a str,
    user_id: &'a str,
    message: &'a str,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct Posted<'a> {
    success: bool,
    id: &'a str,
}

/// Handles a post to `room`.
pub(crate) async fn post(
    ctx: &Ctx,
    request: Request<Incoming>,
    room: &RoomId,
) -> Result<Response<Body>, HandlerError> {
    let has_token = token_from(request.headers(), request.uri().query()).is_some();
    let principal = if ctx.auth.is_required() || has_token {
        match super::rate::publisher(ctx, &request)? {
            Publisher::User(principal) => Some(principal),
            // The operator key may post as anyone it names.
            Publisher::Operator | Publisher::Anonymous => None,
        }
    } else {
        super::rate::limit(ctx, &Publisher::Anonymous, &request)?;
        None
    };
    let post: Post = read_json(request, ctx.config.max_body).await?;
    let user = chat_member(ctx, principal.as_ref(), post.user_id.as_deref())?;
    if let Some(principal) = &principal {
        if ctx.auth.is_required() && !principal.may_publish(&room.topic()) {
            return Err(ctx
                .auth
                .fail(AuthError::Forbidden(format!(
                    "the token may not post to room '{}'",
                    room.as_str()
                )))
                .into());
        }
    }
    if post.message.trim().is_empty() {
        return Err(HandlerError::BadRequest(
            "message must not be empty".to_owned(),
        ));
    }
    let chars = post.message.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(HandlerError::TooLong {
            field: "message",
            max: MAX_MESSAGE_CHARS,
        });
    }
    let exists = match &ctx.broker {
        // Members may be on other nodes: a room exists once anyone joined it anywhere.
        Some(broker) => ctx.rooms.exists(room) || broker.has_history(&room.topic()).await?,
        None => ctx.rooms.exists(room),
    };
    if !exists {
        return Err(HandlerError::Missing(format!(
            "room '{}' does not exist (nobody is in it)",
            room.as_str()
        )));
    }
    let name = EventName::parse("message").expect("a valid event name");
    let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    if let Some(broker) = &ctx.broker {
        let data = serde_json::to_string(&Message {
            id: "",
            room_id: room.as_str(),
            user_id: user.as_str(),
            message: &post.message,
            timestamp: &timestamp,
        })
        .unwrap_or_default();
        let receipt = broker
            .publish(&room.topic(), Some(&name), Payload::json(&data), true)
            .await?;
        return Ok(json(
            StatusCode::OK,
            &Posted {
                success: true,
                id: &receipt.id,
            },
        ));
    }
    let rooms = &ctx.rooms;
    let topic = room.topic();
    let receipt = ctx.hub.publish(&topic, |seq, id| {
        let data = serde_json::to_string(&Message {
            id: id.as_str(),
            room_id: room.as_str(),
            user_id: user.as_str(),
            message: &post.message,
            timestamp: &timestamp,
        })
        .unwrap_or_default();
        let frame = Frame::event(Some(id), Some(&topic), Some(&name), Payload::json(&data));
        // Recorded while the id is taken, so the room's history is in id order.
        rooms.record(room, seq, frame.clone());
        frame
    })?;
    Ok(json(
        StatusCode::OK,
        &Posted {
            success: true,
            id: &receipt.id,
        },
    ))
}
