//! `GET /metrics/prometheus`: hub counters, authentication failures and the latest system sample
//! in Prometheus text format. (`GET /metrics`, the live sample stream, is opened by `events.rs`.)

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::{Body, Ctx};
use crate::metrics::prometheus;

/// Renders the scrape.
pub(crate) fn scrape(ctx: &Ctx) -> Response<Body> {
    let mut text = prometheus::render(
        &ctx.hub.snapshot(),
        ctx.auth.failures(),
        ctx.sampler.latest().as_ref(),
    );
    let (publishes, connections) = ctx.limits.refused();
    text.push_str(&format!(
        "# HELP sluice_publish_rate_limited_total Publishes refused with 429 by --publish-rate.\n\
         # TYPE sluice_publish_rate_limited_total counter\n\
         sluice_publish_rate_limited_total {publishes}\n\
         # HELP sluice_connections_rate_limited_total Connections closed at accept by --connection-rate.\n\
         # TYPE sluice_connections_rate_limited_total counter\n\
         sluice_connections_rate_limited_total {connections}\n"
    ));
    if let Some(broker) = &ctx.broker {
        let snapshot = broker.snapshot();
        text.push_str(&format!(
            "# HELP sluice_broker_connected Whether Redis is answering (1) or not (0).\n\
             # TYPE sluice_broker_connected gauge\n\
             sluice_broker_connected {}\n\
             # HELP sluice_broker_position Seq of the last cluster event this node delivered.\n\
             # TYPE sluice_broker_position counter\n\
             sluice_broker_position {}\n",
            u8::from(snapshot.connected),
            snapshot.node_position
        ));
    }
    let mut response = Response::new(Body::full(text));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
