//! sluice-loadtest: drives a Sluice server (or a peer baseline) with N subscriber connections of
//! one transport while publishing on a schedule, and reports latency, losses, duplicates, bytes
//! on the wire and the server's memory and CPU.
//!
//! # Layout
//!
//! - [`plan`]: what a run does ([`Plan`], [`Transport`], [`Target`]), validated once.
//! - [`run`]: one run's phases (primer, ramp-up, publish, drain, stop) and the threads.
//! - [`transport`]: one subscriber connection's life; `sse.rs`, `ws.rs`, `poll.rs` speak the
//!   protocols.
//! - [`publisher`]: the scheduled `POST`s on keep-alive connections.
//! - [`tally`]: what is counted (sequence bitmaps, histograms) without IO.
//! - [`http1`] and [`scan`]: wire parsing without allocation (response heads, de-chunking, the
//!   `"n"`/`"t"` payload).
//! - [`source`]: loopback source addresses and the open-file budget.
//! - [`spawn`]: starting and stopping `sluice`, the Express baseline and nginx + Nchan.
//! - [`procfs`]: memory and CPU of a process tree from `/proc`.
//! - [`report`] and [`chart`]: results as text, the comparison table, JSON and SVG.
//!
//! Dependencies point one way: `run → transport/publisher → tally/scan/http1`; `spawn`,
//! `procfs`, `source` and `report` are leaves.

pub mod chart;
pub mod http1;
pub mod plan;
pub mod procfs;
pub mod publisher;
pub mod report;
pub mod run;
pub mod scan;
pub mod source;
pub mod spawn;
pub mod tally;
pub mod transport;

pub use plan::{Cancel, Plan, Rate, Target, Transport};
pub use report::Report;
pub use run::{run, run_spawned, Endpoint, RunError};
pub use spawn::Launch;
