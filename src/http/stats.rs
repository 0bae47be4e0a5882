//! `GET /stats`: the hub's counters as JSON, plus the authentication failure count.

use http::{Response, StatusCode};
use serde::Serialize;

use super::response::json;
use super::{Body, Ctx};
use crate::bus::ClusterState;
use crate::hub::HubSnapshot;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    #[serde(flatten)]
    hub: HubSnapshot,
    auth_failures: u64,
    /// Publishes refused by `--publish-rate`.
    publishes_rate_limited: u64,
    /// Connections closed at accept by `--connection-rate`.
    connections_rate_limited: u64,
    /// In a cluster: the broker's state and this node's position in the cluster log.
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<ClusterState>,
}

/// Renders a snapshot of the hub.
pub(crate) fn render(ctx: &Ctx) -> Response<Body> {
    json(
        StatusCode::OK,
        &Stats {
            hub: ctx.bus.hub().snapshot(),
            auth_failures: ctx.auth.failures(),
            publishes_rate_limited: ctx.limits.refused().0,
            connections_rate_limited: ctx.limits.refused().1,
            broker: ctx.bus.cluster(),
        },
    )
}
