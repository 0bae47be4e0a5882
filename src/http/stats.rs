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
            broker: ctx.bus.cluster(),
        },
    )
}
