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
use crate::hub::Frame;
use crate::sse::{EventId, EventName};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Post {
    user_id: Option<String>,
    message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    /// The event id; left out when the store puts it in as it assigns it (in a cluster, each
    /// node when the event is read back: the id is taken inside Redis).
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
    // Members may be on other nodes of a cluster: a room exists once anyone joined it anywhere.
    let topic = room.topic();
    let exists = ctx.rooms.exists(room) || ctx.bus.has_shared_history(&topic).await?;
    if !exists {
        return Err(HandlerError::Missing(format!(
            "room '{}' does not exist (nobody is in it)",
            room.as_str()
        )));
    }
    let name = EventName::parse("message").expect("a valid event name");
    let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let rooms = &ctx.rooms;
    let data = |id: Option<&EventId>| {
        serde_json::to_string(&Message {
            id: id.map_or("", EventId::as_str),
            room_id: room.as_str(),
            user_id: user.as_str(),
            message: &post.message,
            timestamp: &timestamp,
        })
        .unwrap_or_default()
    };
    // Recorded while the id is taken, so the room's history is in id order.
    let retain = |seq, frame: &Frame| rooms.record(room, seq, frame.clone());
    let receipt = ctx.bus.publish_stamped(&topic, &name, data, retain).await?;
    Ok(json(
        StatusCode::OK,
        &Posted {
            success: true,
            id: &receipt.id,
        },
    ))
}
