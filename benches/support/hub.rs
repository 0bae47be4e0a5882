//! An in-process hub configured as the binary would be with some flags (defaults otherwise), so
//! the in-process benches (`fanout`, `executor`) follow the production translation from
//! configuration to hub settings and history.

use std::sync::Arc;

use clap::Parser;
use sluice::config::Config;
use sluice::hub::{Hub, Inbox, MemoryHistory};
use sluice::runtime::Settings;

/// A hub of `shards` shards that admits `max_connections` streams, with no heartbeat to speak of.
pub fn hub_with(shards: usize, max_connections: usize) -> (Hub, Vec<Inbox>) {
    let config = Config::try_parse_from([
        "sluice".to_owned(),
        format!("--max-connections={max_connections}"),
        "--heartbeat-interval=1h".to_owned(),
    ])
    .expect("valid flags");
    let settings = Settings::from_config(&config, shards).expect("a valid configuration");
    let options = settings.bus;
    Hub::new(
        options.hub,
        Arc::new(MemoryHistory::new(options.channels, options.users)),
    )
}
