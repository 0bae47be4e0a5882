//! `POST /subscribe` and `POST /unsubscribe`: change the channels of a live stream by its
//! connection id, wherever (on whichever worker) it lives. Many channels, one connection: the
//! answer to browsers' limit of about six connections per origin over HTTP/1.1.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::publish::channel;
use super::request::read_json;
use super::response::{json, HandlerError};
use super::{Body, Ctx};
use crate::auth::{token_from, AuthError};
use crate::hub::Change;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChangeBody {
    channel: String,
    connection_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Changed<'a> {
    success: bool,
    connection_id: &'a str,
    channel: &'a str,
    subscribed: bool,
}

/// Handles both routes; `add` tells which.
pub(crate) async fn change(
    ctx: &Ctx,
    request: Request<Incoming>,
    add: bool,
) -> Result<Response<Body>, HandlerError> {
    // With auth required every caller needs a token; with auth off a token is still checked
    // when sent, because a stream opened with a token may only be changed by its owner.
    let principal = if ctx.auth.is_required()
        || token_from(request.headers(), request.uri().query()).is_some()
    {
        Some(
            ctx.auth
                .authenticate(request.headers(), request.uri().query())?,
        )
    } else {
        None
    };
    let change: ChangeBody = read_json(request, ctx.config.max_body).await?;
    let topic = channel(ctx, Some(&change.channel))?;
    if let Some(principal) = &principal {
        if add && !principal.may_subscribe(&topic) {
            return Err(ctx
                .auth
                .fail(AuthError::Forbidden(format!(
                    "the token may not subscribe to '{topic}'"
                )))
                .into());
        }
    }
    if change.connection_id.is_empty() || change.connection_id.len() > crate::hub::MAX_CONN_ID_LEN {
        return Err(HandlerError::BadRequest("invalid connectionId".to_owned()));
    }
    let caller = principal.as_ref().map(|p| &p.user);
    match ctx
        .bus
        .hub()
        .subscribe(&change.connection_id, &topic, add, caller)
        .await?
    {
        Change::Done => {}
        Change::TooMany => {
            return Err(HandlerError::BadRequest(format!(
                "a stream may subscribe to at most {} channels",
                crate::hub::MAX_TOPICS_PER_STREAM
            )))
        }
        Change::NotFound => {
            return Err(HandlerError::Missing(format!(
                "no open connection with id '{}'",
                crate::topic::clip(&change.connection_id)
            )))
        }
        Change::Forbidden => {
            return Err(ctx
                .auth
                .fail(AuthError::Forbidden(
                    "the connection belongs to another user".to_owned(),
                ))
                .into())
        }
    }
    Ok(json(
        StatusCode::OK,
        &Changed {
            success: true,
            connection_id: &change.connection_id,
            channel: topic.as_str(),
            subscribed: add,
        },
    ))
}
