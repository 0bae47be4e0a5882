//! `GET /healthz`: 200 while serving, 503 once shutdown has begun (so a load balancer stops
//! routing here before the streams close).

use http::{Response, StatusCode};
use serde::Serialize;

use super::response::json;
use super::{Body, Ctx};

#[derive(Serialize)]
struct Health {
    status: &'static str,
    workers: usize,
    connections: usize,
}

/// Reports liveness and readiness.
pub(crate) fn check(ctx: &Ctx) -> Response<Body> {
    let draining = ctx.shutdown.is_fired();
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(
        status,
        &Health {
            status: if draining { "draining" } else { "ok" },
            workers: ctx.hub.shard_count(),
            connections: ctx.hub.connections(),
        },
    )
}
