//! sluice-loadtest: drives a Sluice server (or a peer baseline, or any SSE server described on
//! the command line) with N subscriber connections of one transport while publishing on a
//! schedule (or as fast as the server accepts, or not at all: listening only), optionally with a
//! share of stalled readers, and reports latency, losses, duplicates, bytes on the wire, slow
//! consumers cut off, and the server's memory and CPU. A storm breaks every connection at once
//! and measures how the streams come back.
//!
//! # Layout
//!
//! - [`plan`]: what a run does ([`Plan`], [`Transport`], [`Target`]), validated once.
//! - [`custom`]: a custom target's stream URL, headers and publish hook, and the marker.
//! - [`run`]: one run's phases (primer, ramp-up, publish, drain, stop) and the threads.
//! - [`storm`]: a reconnect storm's phases (cut, restart, back) and its figures.
//! - [`transport`]: one subscriber connection's life; `sse.rs`, `ws.rs`, `poll.rs` speak the
//!   protocols.
//! - [`publisher`]: the scheduled (or back-to-back) `POST`s on keep-alive connections.
//! - [`tally`]: what is counted (sequence bitmaps, histograms) without IO.
//! - [`account`]: the tallies added up into the report's figures, stalled connections apart.
//! - [`http1`] and [`scan`]: wire parsing without allocation (response heads, de-chunking, the
//!   `"n"`/`"t"` payload).
//! - [`source`]: loopback source addresses and the open-file budget.
//! - [`spawn`]: starting and stopping `sluice`, the Express baseline and nginx + Nchan.
//! - [`pin`]: `--server-cpus` / `--client-cpus`, the CPU lists of the pinned workloads.
//! - [`procfs`]: memory and CPU of a process tree from `/proc`, kernel TCP buffer memory.
//! - [`handshake`]: full TLS handshakes per second (`handshakes`).
//! - [`tls`]: the TLS client (`--tls`, `--ca`) and the test CA a spawned TLS server gets.
//! - [`stats`]: Sluice's own counters (`GET /stats`): streams it cut off as slow consumers.
//! - [`report`] and [`chart`]: results as text, the comparison table, JSON and SVG.
//! - [`regress`]: results compared with a saved baseline, and as CSV.
//! - [`ramp`]: connect latency second by second over a `--ramp`.
//!
//! Dependencies point one way: `storm → run → transport/publisher → tally/scan/http1` and
//! `run → account/ramp → tally/report`; `spawn`, `pin`, `procfs`, `stats`, `source`, `custom`,
//! `regress` and `report` are leaves.

pub mod account;
pub mod chart;
pub mod custom;
pub mod handshake;
pub mod http1;
pub mod pin;
pub mod plan;
pub mod procfs;
pub mod publisher;
pub mod ramp;
pub mod regress;
pub mod report;
pub mod run;
pub mod scan;
pub mod source;
pub mod spawn;
pub mod stats;
pub mod storm;
pub mod tally;
pub mod tls;
pub mod transport;

pub use plan::{Cancel, Plan, Rate, Stall, Target, Transport};
pub use report::Report;
pub use run::{run, run_spawned, Endpoint, RunError};
pub use spawn::Launch;
