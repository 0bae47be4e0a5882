//! `POST /token`: refresh the credential of a live stream. The request carries the new token
//! (like any other: bearer header, `token` parameter or cookie) and names the stream by its
//! connection id; the stream's owning worker moves its expiry and drops the channels the new
//! token no longer grants. The stream itself never closes, so a client that refreshes before
//! `exp` keeps one connection for as long as it holds valid tokens.

use std::time::UNIX_EPOCH;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::request::read_json;
use super::response::{json, HandlerError};
use super::{Body, Ctx};
use crate::auth::AuthError;
use crate::hub::{Credential, Renewal};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RenewBody {
    connection_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Renewed<'a> {
    success: bool,
    connection_id: &'a str,
    /// The new `exp`, in seconds since the Unix epoch.
    expires_at: u64,
    /// Channels the stream lost because the new token does not allow them.
    unsubscribed: Vec<&'a str>,
}

/// Replaces the credential of the stream named in the body with the request's token.
pub(crate) async fn renew(
    ctx: &Ctx,
    request: Request<Incoming>,
) -> Result<Response<Body>, HandlerError> {
    let principal = ctx
        .auth
        .authenticate(request.headers(), request.uri().query())?;
    let body: RenewBody = read_json(request, ctx.config.max_body).await?;
    if body.connection_id.is_empty() || body.connection_id.len() > crate::hub::MAX_CONN_ID_LEN {
        return Err(HandlerError::BadRequest("invalid connectionId".to_owned()));
    }
    let expires_at = principal.expires_at;
    let credential = Credential {
        user: principal.user.clone(),
        expires_at,
        may_read: Box::new(move |topic| principal.may_subscribe(topic)),
    };
    let unsubscribed = match ctx.bus.hub().renew(&body.connection_id, credential).await? {
        Renewal::Renewed { unsubscribed } => unsubscribed,
        Renewal::NotFound => {
            return Err(HandlerError::Missing(format!(
                "no open connection with id '{}'",
                crate::topic::clip(&body.connection_id)
            )))
        }
        Renewal::OtherUser => {
            return Err(ctx
                .auth
                .fail(AuthError::Forbidden(
                    "the connection belongs to another user".to_owned(),
                ))
                .into())
        }
        Renewal::Anonymous => {
            return Err(ctx
                .auth
                .fail(AuthError::Forbidden(
                    "the connection was opened without a token; there is none to refresh"
                        .to_owned(),
                ))
                .into())
        }
    };
    Ok(json(
        StatusCode::OK,
        &Renewed {
            success: true,
            connection_id: &body.connection_id,
            expires_at: expires_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            unsubscribed: unsubscribed.iter().map(|t| t.as_str()).collect(),
        },
    ))
}
