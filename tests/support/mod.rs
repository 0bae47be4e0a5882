//! The one harness for the black-box tests: every file in `tests/` that talks to the real binary
//! uses this module and nothing else for plumbing, so the test files hold scenarios only.
//! (`loadtest_smoke.rs` drives the load tool, which starts the binary itself.)
//!
//! - [`server`]: [`Server`], the `sluice` binary on `127.0.0.1:0` (stderr kept and printed when a
//!   test fails, stopped on drop), its JSON API and `/stats`, and [`Server::settle`], the one wait
//!   until every worker's inbox has drained. `SLUICE_TEST_BIN=<path>` runs the scenarios against
//!   another build of the binary (an older tree, to show a test failed before its fix).
//! - [`sse`]: [`RawClient`], the one raw HTTP/1.1 client over TCP, reading streams as parser
//!   items or as frames (with the id-only position frame).
//! - [`sse_parse`]: the client-side `text/event-stream` parser (WHATWG), which the server does
//!   not need and so does not ship.
//! - [`api`]: the API with credentials (header, query, cookie) and what a refusal must look like.
//! - [`jwt`]: token minting with a signing path separate from the server's verifier.
//! - [`ws`]: a WebSocket client (tokio-tungstenite) and raw WebSocket frames over TCP.
//! - [`redis`]: a real `redis-server` for the cluster tests.
//! - [`browser`]: runs a script of `tests/browser/` (headless Chromium) against a server.
//! - [`process`]: child processes: pipes drained, waits bounded, stops by SIGTERM then SIGKILL.
//!
//! Every wait is bounded by [`TIMEOUT`] (or an explicit bound) and panics with what it last saw,
//! so a broken server fails a test instead of hanging the suite.

// Each test crate uses a different subset.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

pub mod api;
pub mod browser;
pub mod jwt;
pub mod process;
pub mod redis;
pub mod server;
pub mod sse;
pub mod sse_parse;
pub mod ws;

// The names most scenarios use, at the top; each crate takes some of them.
#[allow(unused_imports)]
pub use server::{
    epoch_of, http, inboxes_drained, post_json_with, seq_of, total_connections, Published, Server,
};
#[allow(unused_imports)]
pub use sse::{
    connect, connect_small_window, ids, json_of, open_stream, subscribe, write_request, End, Frame,
    Opening, RawClient,
};

/// The bound on any single wait: starting the server, a response, the next SSE item or frame, a
/// condition on `/stats`. Generous, because a loaded CI machine is slow; a healthy run never
/// comes close.
pub const TIMEOUT: Duration = Duration::from_secs(10);
