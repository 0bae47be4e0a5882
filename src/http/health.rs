//! `GET /healthz`: 200 while serving, 503 once shutdown has begun (so a load balancer stops
//! routing here before the streams close) or, in a cluster, while Redis is unreachable (open
//! streams stay up, but publishes and new catch-ups need Redis).

use http::{Response, StatusCode};
use serde::Serialize;

use super::response::json;
use super::{Body, Ctx};
use crate::bus::Health;

#[derive(Serialize)]
struct Report {
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
    let store = ctx.bus.health();
    let broker_down = store == Health::Unreachable;
    let status = if draining || broker_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(
        status,
        &Report {
            status: if draining {
                "draining"
            } else if broker_down {
                "broker-unreachable"
            } else {
                "ok"
            },
            workers: ctx.bus.hub().shard_count(),
            connections: ctx.bus.hub().connections(),
            broker: match store {
                Health::Embedded => None,
                Health::Connected => Some("connected"),
                Health::Unreachable => Some("unreachable"),
            },
        },
    )
}
