//! TLS handshakes per second (`sluice-loadtest handshakes`): a bounded loop of full handshakes,
//! a new TCP connection each (no session resumption), `concurrency` of them in flight, for a
//! fixed time. Each connection is closed (close_notify, then FIN) as soon as its handshake is
//! through; nothing else is sent. Reports the rate, the handshake time (TCP connect included)
//! and the server's CPU time per handshake, which does not depend on whether the server or the
//! client (sharing the machine) was the bottleneck.
//!
//! Knows nothing of SSE: any HTTPS server will do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::procfs;
use crate::run::{current_thread, Endpoint, RunError};
use crate::source::{self, Sources};
use crate::tally::new_histogram;
use crate::tls::{Tls, TlsError};

/// How long one handshake may take before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the loop does.
#[derive(Debug, Clone, Copy)]
pub struct HandshakePlan {
    /// How long to make handshakes.
    pub duration: Duration,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// Offer `h2` (else `http/1.1`) by ALPN.
    pub http2: bool,
}

/// What the loop measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HandshakeReport {
    /// The server, as the endpoint describes it.
    pub server: String,
    /// ALPN offered.
    pub alpn: &'static str,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Connections or handshakes that failed (or timed out).
    pub failed: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Wall time of the loop, seconds.
    pub seconds: f64,
    /// Completed handshakes per second.
    pub per_second: f64,
    /// TCP connect + handshake, µs: p50.
    pub p50_us: u64,
    /// The same, p99.
    pub p99_us: u64,
    /// The server's CPU over the loop, % of one core (none without a PID).
    pub server_cpu_pct: Option<f64>,
    /// The server's CPU time per completed handshake, µs (none without a PID).
    pub server_cpu_us_per_handshake: Option<f64>,
    /// This process's CPU over the loop, % of one core.
    pub harness_cpu_pct: f64,
}

impl HandshakeReport {
    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let server = match (self.server_cpu_pct, self.server_cpu_us_per_handshake) {
            (Some(pct), Some(us)) => {
                format!("{pct:.0}% of a core, {us:.0} µs of CPU per handshake")
            }
            _ => "n/a (no PID)".to_owned(),
        };
        format!(
            "server       {}\n\
             handshakes   {} in {:.1} s = {:.0}/s (ALPN {}, {} in flight), {} failed{}\n\
             time         p50 {:.2} ms, p99 {:.2} ms (TCP connect + handshake)\n\
             server CPU   {server}\n\
             harness CPU  {:.0}% of a core",
            self.server,
            self.handshakes,
            self.seconds,
            self.per_second,
            self.alpn,
            self.concurrency,
            self.failed,
            self.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.harness_cpu_pct,
        )
    }

    /// Whether every handshake succeeded and some were made.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.handshakes > 0
    }
}

/// Starts the server `launch` describes (with TLS), makes handshakes with it, and stops it.
pub fn handshakes_spawned(
    plan: &HandshakePlan,
    launch: &crate::spawn::Launch,
) -> Result<HandshakeReport, RunError> {
    let server = crate::spawn::Spawned::start(launch).map_err(RunError::Spawn)?;
    let mut endpoint = Endpoint::new(server.addr, Some(server.pid()), server.banner.clone());
    endpoint.upstream_pid = server.upstream_pid();
    let tls = Tls::new(server.ca.as_deref(), "localhost").map_err(RunError::Tls)?;
    endpoint.tls = Some(Arc::new(tls));
    let result = handshakes(plan, &endpoint);
    server.stop();
    result
}

/// Makes handshakes with `endpoint` (which must carry a TLS client) as `plan` says.
pub fn handshakes(plan: &HandshakePlan, endpoint: &Endpoint) -> Result<HandshakeReport, RunError> {
    let Some(tls) = endpoint.tls.clone() else {
        return Err(RunError::Tls(TlsError(
            "handshakes need --tls (an HTTPS server)".to_owned(),
        )));
    };
    let concurrency = plan.concurrency.max(1);
    source::reserve_fds(concurrency).map_err(RunError::Fds)?;
    let runtime = current_thread().map_err(RunError::Thread)?;
    let local = tokio::task::LocalSet::new();
    // A new source address every 10 000 connections keeps clear of the TIME_WAIT ports the
    // closed connections leave behind.
    let sources = Sources::new(10_000);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let server_before = endpoint.usage();
    let own_before = procfs::own_usage();
    let until = tokio::time::Instant::now() + plan.duration;
    let (histogram, first_error) = local.block_on(&runtime, async {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let tls = tls.clone();
            let next = next.clone();
            let failed = failed.clone();
            let addr = endpoint.addr;
            let http2 = plan.http2;
            tasks.push(tokio::task::spawn_local(async move {
                let mut histogram = new_histogram();
                let mut first_error = None;
                while tokio::time::Instant::now() < until {
                    let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let began = Instant::now();
                    let attempt = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        one(&tls, sources, index, addr, http2),
                    )
                    .await;
                    match attempt {
                        Ok(Ok(())) => {
                            let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                            histogram.saturating_record(us.max(1));
                        }
                        Ok(Err(error)) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert_with(|| error.to_string());
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert_with(|| "timed out".to_owned());
                        }
                    }
                }
                (histogram, first_error)
            }));
        }
        let mut histogram = new_histogram();
        let mut first_error = None;
        for task in tasks {
            match task.await {
                Ok((part, error)) => {
                    let _ = histogram.add(&part);
                    first_error = first_error.or(error);
                }
                Err(error) => first_error = Some(format!("handshake task failed: {error}")),
            }
        }
        (histogram, first_error)
    });
    let seconds = started.elapsed().as_secs_f64();
    let now = Instant::now();
    let handshakes = histogram.len();
    let server_cpu_pct = server_before
        .zip(endpoint.usage())
        .map(|(before, after)| procfs::cpu_percent((started, before), (now, after)));
    let server_cpu_us_per_handshake = server_cpu_pct
        .filter(|_| handshakes > 0)
        .map(|pct| pct / 100.0 * seconds * 1e6 / handshakes as f64);
    Ok(HandshakeReport {
        server: endpoint.banner.clone(),
        alpn: if plan.http2 { "h2" } else { "http/1.1" },
        concurrency,
        handshakes,
        failed: failed.load(Ordering::Relaxed),
        first_error,
        seconds,
        per_second: handshakes as f64 / seconds.max(f64::EPSILON),
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        server_cpu_pct,
        server_cpu_us_per_handshake,
        harness_cpu_pct: procfs::cpu_percent((started, own_before), (now, procfs::own_usage())),
    })
}

/// One connection: TCP connect, full handshake, close_notify, close.
async fn one(
    tls: &Tls,
    sources: Sources,
    index: usize,
    addr: std::net::SocketAddr,
    http2: bool,
) -> std::io::Result<()> {
    let tcp = source::connect(sources.address(index), addr).await?;
    let mut stream = tls.connect(tcp, http2).await?;
    // The peer may already be gone; the handshake is what was measured.
    let _ = stream.shutdown().await;
    Ok(())
}
