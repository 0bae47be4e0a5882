//! `GET /healthz`: 200 while serving, 503 once shutdown has begun (so a load balancer stops
//! routing here before the streams close) or, in a cluster, while Redis is unreachable (open
//! streams stay up, but publishes and new catch-ups need Redis).

use http::{Response, StatusCode};
use serde::Serialize;

use super::response::json;
use super::{Body, Ctx};

#[derive(Serialize)]
struct Health {
    status: &'static str,
    workers: usize,
    connections: usize,
    /// In a cluster: whether Redis answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<&'static str>,
}

/// Reports liveness and readiness.
pub(crate) fn check(ctx: &Ctx) -> Response<Body> {
    let draining = ctx.shutdown.is_fired();
    let broker_down = ctx.broker.as_ref().is_some_and(|b| !b.is_healthy());
    let status = if draining || broker_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(
        status,
        &Health {
            status: if draining {
                "draining"
            } else if broker_down {
                "broker-unreachable"
            } else {
                "ok"
            },
            workers: ctx.hub.shard_count(),
            connections: ctx.hub.connections(),
            broker: ctx.broker.as_ref().map(|b| {
                if b.is_healthy() {
                    "connected"
                } else {
                    "unreachable"
                }
            }),
        },
    )
}
