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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Change {
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
    let change: Change = read_json(request, ctx.config.max_body).await?;
    let topic = channel(ctx, Some(&change.channel))?;
    if change.connection_id.is_empty() || change.connection_id.len() > crate::hub::MAX_CONN_ID_LEN {
        return Err(HandlerError::BadRequest("invalid connectionId".to_owned()));
    }
    if !ctx
        .hub
        .subscribe(&change.connection_id, &topic, add)
        .await?
    {
        return Err(HandlerError::Missing(format!(
            "no open connection with id '{}'",
            super::query::clip(&change.connection_id)
        )));
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
