//! Sluice: a Server-Sent Events hub on raw hyper, one current-thread runtime per core.
//!
//! # Layout
//!
//! - [`config`]: every tunable, from flags and `SLUICE_*` variables, parsed and checked. A leaf.
//! - [`runtime`]: [`runtime::Settings`], the one translation from the configuration to each
//!   component's settings; then one OS thread per worker, each with a tokio current-thread
//!   runtime, its own `SO_REUSEPORT` listener and its own [`hub::Shard`]. Starting and stopping.
//! - [`shutdown`]: the shutdown signal and the drain.
//! - `http`: the hyper glue (accept loop, routing, one file per handler, error → status mapping).
//!   Private: nothing imports it.
//! - [`chat`]: rooms, presence and recent messages.
//! - [`bus`]: the one seam between the embedded hub and a Redis cluster. [`bus::Bus`] answers
//!   publish, open (with resume), history questions, health and stats for every mode.
//! - [`store`]: the durable embedded store (`--data-dir`): an append-only log read back at start.
//! - [`broker`]: the cluster mode's Redis side (scripts, reader, held opening). Only `bus` uses it.
//! - [`hub`]: fan-out without HTTP. [`hub::Hub`] is the cheap-clone handle publishers use;
//!   each [`hub::Shard`] (a folder: run loop, opening, housekeeping, per-stream queue) owns one
//!   worker's connections and subscriber index.
//! - [`auth`]: tokens and what they allow.
//! - [`metrics`]: the system sampler and the Prometheus rendering.
//! - [`topic`]: validated channel and user names. A leaf.
//! - [`sse`]: the SSE wire format without IO: encoding frames once.
//! - [`ws`]: the WebSocket wire format without IO: handshake key, server frames, client frame parser.
//! - [`tls`]: certificates for HTTPS: PEM loading and checks, the swappable resolver (reload,
//!   ACME renewal) and the ACME client (TLS-ALPN-01).
//!
//! Dependencies point one way: `http → chat → bus → broker → hub → sse, ws, topic`, and
//! `metrics → bus`; `runtime` builds all of them. `config`, `topic` and `shutdown` are leaves,
//! `auth` uses only `topic`.
//!
//! # The data path
//!
//! A publish is validated and encoded once into a `Bytes` frame, then handed to every shard's
//! inbox (one message per shard). Each shard pushes a clone of the frame (a refcount bump) into
//! the bounded queue of each local subscriber; a full queue disconnects that subscriber instead of
//! slowing anyone else. A stream's response body drains its queue, joining every ready frame into
//! one chunk so they leave in one write.

pub mod auth;
pub mod broker;
pub mod bus;
pub mod chat;
pub mod config;
mod http;
pub mod hub;
pub mod metrics;
pub mod runtime;
pub mod shutdown;
pub mod sse;
pub mod store;
pub mod tls;
pub mod topic;
pub mod ws;
