//! `GET /stats`: the hub's counters as JSON.

use http::{Response, StatusCode};

use super::response::json;
use super::{Body, Ctx};

/// Renders a snapshot of the hub.
pub(crate) fn render(ctx: &Ctx) -> Response<Body> {
    json(StatusCode::OK, &ctx.hub.snapshot())
}
