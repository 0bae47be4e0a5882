//! `GET /metrics/prometheus`: hub counters, authentication failures and the latest system sample
//! in Prometheus text format. (`GET /metrics`, the live sample stream, is opened by `events.rs`.)

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::{Body, Ctx};
use crate::metrics::prometheus;

/// Renders the scrape.
pub(crate) fn scrape(ctx: &Ctx) -> Response<Body> {
    let mut text = prometheus::render(
        &ctx.bus.hub().snapshot(),
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
    ctx.bus.render_prometheus(&mut text);
    let mut response = Response::new(Body::full(text));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
