//! One run from start to end: check the fd budget, publish the primer, open every connection
//! (client threads, each a current-thread runtime), wait until all are ready, publish on
//! schedule or flat out (its own thread), drain, stop, and turn the tallies, the `/proc` samples
//! and the server's `/stats` into a [`Report`].
//!
//! The phases are sequential on purpose: no event is published before every connection is
//! ready, so each ready connection must receive every accepted event, and losses and duplicates
//! are exact. Stalled connections stop reading once ready; they are left out of the delivery
//! figures and counted on their own. Owns the threads and the clock; the protocols live in
//! `transport`.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::account;
use crate::plan::{Plan, PlanError, Transport};
use crate::procfs::{self, Usage};
use crate::publisher::{self, Outcome, PublishError};
use crate::report::{self, Percentiles, Report};
use crate::source::{self, FdError, Sources};
use crate::spawn::{Launch, SpawnError, Spawned};
use crate::stats;
use crate::tally::{ConnTally, Live, ThreadTally};
use crate::tls::{Tls, TlsError};
use crate::transport::{self, now_us, Conn, Marks, Thread, READ_BUF};

/// How often the main thread samples `/proc` during the run.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How often the main thread looks at the counters.
const TICK: Duration = Duration::from_millis(100);

/// The server to load.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, to sample `/proc` (none: resources are not reported).
    pub pid: Option<u32>,
    /// How to describe it in the report.
    pub banner: String,
    /// The TLS client to reach it with (`--tls`).
    pub tls: Option<Arc<Tls>>,
    /// A second process whose memory and CPU count as the server's: the Sluice behind a proxy.
    pub upstream_pid: Option<u32>,
}

impl Endpoint {
    /// A plain server at `addr`.
    pub fn new(addr: SocketAddr, pid: Option<u32>, banner: String) -> Self {
        Endpoint {
            addr,
            pid,
            banner,
            tls: None,
            upstream_pid: None,
        }
    }

    /// The server's usage now (both processes when it has an upstream); none without a PID.
    pub(crate) fn usage(&self) -> Option<Usage> {
        let pid = self.pid?;
        let mut usage = procfs::tree_usage(pid);
        if let Some(upstream) = self.upstream_pid {
            let more = procfs::tree_usage(upstream);
            usage.rss_kib += more.rss_kib;
            usage.cpu += more.cpu;
        }
        Some(usage)
    }
}

/// A run that could not be carried out (as opposed to one that ran and found problems).
#[derive(Debug)]
pub enum RunError {
    /// The plan is invalid.
    Plan(PlanError),
    /// The connections do not fit the open-file limit.
    Fds(FdError),
    /// The server could not be started.
    Spawn(SpawnError),
    /// The primer publish failed: the server is not there or refuses publishes.
    Primer(PublishError),
    /// The server gave no id for the primer, which long polling needs.
    NoPrimerId,
    /// A thread or runtime could not be created.
    Thread(std::io::Error),
    /// The TLS client could not be set up.
    Tls(TlsError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Plan(error) => write!(f, "{error}"),
            RunError::Fds(error) => write!(f, "{error}"),
            RunError::Spawn(error) => write!(f, "{error}"),
            RunError::Primer(error) => write!(f, "the first publish failed: {error}"),
            RunError::NoPrimerId => {
                write!(
                    f,
                    "the publish answer carried no id; long polling needs one"
                )
            }
            RunError::Thread(error) => write!(f, "cannot start a client thread: {error}"),
            RunError::Tls(error) => write!(f, "TLS: {error}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Starts the server `launch` describes, runs `plan` against it, and stops it.
pub fn run_spawned(plan: &Plan, launch: &Launch) -> Result<Report, RunError> {
    plan.validate().map_err(RunError::Plan)?;
    // Raise the limit before the server starts, so it inherits the raised soft limit too.
    source::reserve_fds(plan.connections + plan.publishers).map_err(RunError::Fds)?;
    let server = Spawned::start(launch).map_err(RunError::Spawn)?;
    let mut endpoint = Endpoint::new(server.addr, Some(server.pid()), server.banner.clone());
    endpoint.upstream_pid = server.upstream_pid();
    if plan.tls {
        // The spawned server's certificate is for `localhost` (and 127.0.0.1).
        let tls = Tls::new(server.ca.as_deref(), "localhost").map_err(RunError::Tls)?;
        endpoint.tls = Some(Arc::new(tls));
    }
    let result = run(plan, &endpoint);
    server.stop();
    result
}

/// What one client thread hands back.
pub(crate) type ThreadResult = (Vec<(usize, ConnTally)>, ThreadTally);

/// Runs `plan` against a server that is already listening.
pub fn run(plan: &Plan, endpoint: &Endpoint) -> Result<Report, RunError> {
    plan.validate().map_err(RunError::Plan)?;
    let mut plan = plan.clone();
    plan.tls_client = match (plan.tls, &endpoint.tls) {
        (true, Some(tls)) => Some(tls.clone()),
        (true, None) => {
            return Err(RunError::Tls(TlsError(
                "--tls without a TLS client for the endpoint".to_owned(),
            )))
        }
        (false, _) => None,
    };
    let plan = &plan;
    source::reserve_fds(plan.connections + plan.publishers).map_err(RunError::Fds)?;
    let load_start = procfs::load_average();
    let sample = |endpoint: &Endpoint| endpoint.usage().unwrap_or_default();
    let idle = sample(endpoint);

    let primer_id = if plan.is_subscribe_only() {
        None
    } else {
        current_thread()
            .map_err(RunError::Thread)?
            .block_on(publisher::primer(plan, endpoint.addr))
            .map_err(RunError::Primer)?
    };
    let evictions_before = server_evictions(plan, endpoint);
    let start_after: Option<String> = match plan.transport {
        Transport::Poll => Some(primer_id.ok_or(RunError::NoPrimerId)?),
        Transport::Sse | Transport::Ws => None,
    };

    let live = Arc::new(Live::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let sources = Sources::new(plan.per_source);
    let ramp_started = Instant::now();
    let mut threads = Vec::with_capacity(plan.client_threads);
    for thread in 0..plan.client_threads {
        let plan = plan.clone();
        let live = live.clone();
        let stop = stop_rx.clone();
        let addr = endpoint.addr;
        let start_after = start_after.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loadtest-client-{thread}"))
            .spawn(move || {
                let clients = Clients {
                    plan,
                    server: addr,
                    sources,
                    start_after,
                    ramp_started,
                };
                client_thread(thread, clients, live, stop)
            })
            .map_err(RunError::Thread)?;
        threads.push(handle);
    }

    let bar = progress_bar(plan);
    let mut peaks = Peaks::new(ramp_started);
    let mut last_sample = (Instant::now(), sample(endpoint));
    let mut own_last = (Instant::now(), procfs::own_usage());
    let total = plan.connections as u64;
    bar.set_length(total);
    bar.set_message("connecting");
    loop {
        let done = Live::get(&live.ready) + Live::get(&live.failed);
        bar.set_position(Live::get(&live.ready));
        // A client thread only ends early if it failed; its connections will never settle.
        if done >= total || threads.iter().any(|t| t.is_finished()) || plan.cancel.is_cancelled() {
            break;
        }
        std::thread::sleep(TICK);
        peaks.maybe_sample(endpoint, &mut last_sample, &mut own_last);
    }
    let ramp = ramp_started.elapsed();
    let connected = sample(endpoint);
    let ready = Live::get(&live.ready);

    // Publishing, on its own thread.
    let publish_plan = plan.clone();
    let publish_live = live.clone();
    let addr = endpoint.addr;
    let publisher = std::thread::Builder::new()
        .name("loadtest-publisher".into())
        .spawn(move || -> std::io::Result<Outcome> {
            if publish_plan.is_subscribe_only() {
                return Ok(listen(&publish_plan));
            }
            let runtime = current_thread()?;
            let local = tokio::task::LocalSet::new();
            Ok(local.block_on(&runtime, publisher::run(&publish_plan, addr, publish_live)))
        })
        .map_err(RunError::Thread)?;
    let publish_window = (Instant::now(), sample(endpoint), procfs::own_usage());
    let publish_started_us = now_us();
    bar.set_length(plan.events().unwrap_or(0));
    bar.set_position(0);
    while !publisher.is_finished() {
        std::thread::sleep(TICK);
        bar.set_position(Live::get(&live.published));
        let cut_off = Live::get(&live.cut_off);
        bar.set_message(format!(
            "publishing, {} delivered{}",
            Live::get(&live.delivered),
            if plan.stall.is_some() {
                format!(", {cut_off} stalled cut off")
            } else {
                String::new()
            }
        ));
        peaks.maybe_sample(endpoint, &mut last_sample, &mut own_last);
    }
    let publish_end = (Instant::now(), sample(endpoint), procfs::own_usage());
    let outcome = match publisher.join() {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => return Err(RunError::Thread(error)),
        Err(_) => {
            return Err(RunError::Thread(std::io::Error::other(
                "the publisher thread panicked",
            )))
        }
    };

    // Drain: wait for deliveries in flight to the healthy connections, up to the plan's bound.
    let healthy = ready.saturating_sub(Live::get(&live.stalled));
    let expected = outcome.ok.len() * healthy;
    let drain_until = Instant::now() + plan.drain;
    bar.set_message("draining");
    while Live::get(&live.delivered) < expected
        && Instant::now() < drain_until
        && !plan.cancel.is_cancelled()
    {
        std::thread::sleep(TICK);
        peaks.maybe_sample(endpoint, &mut last_sample, &mut own_last);
    }
    // The end state, with every connection still open.
    let drained = sample(endpoint);
    let tcp_buffers_end = procfs::tcp_buffers_kib();
    let evictions = evictions_before
        .zip(server_evictions(plan, endpoint))
        .map(|(before, after)| after.saturating_sub(before));
    let _ = stop_tx.send(true);
    let mut conns: Vec<(usize, ConnTally)> = Vec::with_capacity(plan.connections);
    let mut histograms = ThreadTally::new();
    for handle in threads {
        match handle.join() {
            Ok(Ok((tallies, tally))) => {
                conns.extend(tallies);
                histograms.merge(&tally);
            }
            Ok(Err(error)) => return Err(RunError::Thread(error)),
            Err(_) => {
                return Err(RunError::Thread(std::io::Error::other(
                    "a client thread panicked",
                )))
            }
        }
    }
    bar.finish_and_clear();
    peaks.maybe_sample(endpoint, &mut last_sample, &mut own_last);

    let inputs = Inputs {
        plan,
        endpoint,
        load_start,
        idle,
        connected,
        ramp,
        publish_window,
        publish_end,
        publish_started_us,
        drained,
        tcp_buffers_end,
        evictions,
        http2_connections: plan.http2.then(|| Live::get(&live.http2_connections)),
        peaks,
        outcome,
    };
    Ok(build_report(inputs, &conns, &histograms))
}

/// A listening run's "publishing" phase: nothing is sent; the connections listen for the
/// duration (or until cancelled).
fn listen(plan: &Plan) -> Outcome {
    let mut outcome = Outcome::new(0);
    outcome.started = Instant::now();
    let until = outcome.started + plan.duration;
    while Instant::now() < until && !plan.cancel.is_cancelled() {
        std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
    }
    outcome.finished = Instant::now();
    outcome
}

/// Streams Sluice has cut off as slow consumers so far (none for the baselines, or when
/// `/stats` does not answer).
fn server_evictions(plan: &Plan, endpoint: &Endpoint) -> Option<u64> {
    plan.target
        .is_sluice()
        .then(|| stats::slow_consumers_dropped(endpoint.addr, plan.tls_client.as_deref()))
        .flatten()
}

/// A current-thread runtime with IO and timers.
pub(crate) fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// What every client thread of a run is given.
pub(crate) struct Clients {
    pub(crate) plan: Plan,
    pub(crate) server: SocketAddr,
    pub(crate) sources: Sources,
    /// Where long polls start.
    pub(crate) start_after: Option<String>,
    /// When the ramp-up began (`--ramp` paces from it).
    pub(crate) ramp_started: Instant,
}

/// One client thread: its share of the connections (every `client_threads`-th index), opened
/// with at most `connect_concurrency` attempts in flight across all threads, and with `--ramp`
/// each at its time on the schedule.
pub(crate) fn client_thread(
    thread: usize,
    clients: Clients,
    live: Arc<Live>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<ThreadResult> {
    let Clients {
        plan,
        server,
        sources,
        start_after,
        ramp_started,
    } = clients;
    let runtime = current_thread()?;
    let local = tokio::task::LocalSet::new();
    let state = Rc::new(RefCell::new(Thread {
        buf: vec![0; READ_BUF],
        tally: ThreadTally::new(),
    }));
    let path: Rc<str> = plan.subscribe_path(0).into();
    let per_connection = plan.custom.as_ref().is_some_and(|c| c.is_per_connection());
    let (host, headers, marks): (Rc<str>, Rc<str>, Marks) = match &plan.custom {
        Some(custom) => (
            custom.sub.authority.as_str().into(),
            custom.header_lines().into(),
            if custom.publish.is_some() {
                Marks::Token
            } else {
                Marks::Listen
            },
        ),
        None => (server.to_string().into(), "".into(), Marks::Json),
    };
    let ramp_started = tokio::time::Instant::from_std(ramp_started);
    let start_after: Option<Rc<str>> = start_after.map(Into::into);
    let cap = plan.connect_concurrency as u64;
    let mut group: Option<Rc<transport::http2::Group>> = None;
    let tallies = local.block_on(&runtime, async {
        let mut handles = Vec::new();
        for (ordinal, index) in (thread..plan.connections)
            .step_by(plan.client_threads)
            .enumerate()
        {
            // Pace the ramp: few attempts in flight keep the server's accept queue short.
            while in_flight(&live) >= cap && !*stop.borrow() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if let Some(rate) = plan.ramp {
                let due = ramp_started + Duration::from_secs_f64(index as f64 / rate);
                tokio::time::sleep_until(due).await;
            }
            Live::bump(&live.opened);
            if plan.http2 && ordinal % plan.streams_per_connection == 0 {
                group = Some(Rc::new(transport::http2::Group::new(
                    server,
                    sources.address(index),
                    plan.tls_client.clone(),
                    plan.streams_per_connection,
                    live.clone(),
                )));
            }
            let conn = Conn {
                index,
                server,
                source: sources.address(index),
                transport: plan.transport,
                target: plan.target,
                path: if per_connection {
                    plan.subscribe_path(index).into()
                } else {
                    path.clone()
                },
                start_after: start_after.clone(),
                expected: plan.events().unwrap_or(0),
                stall: plan.stall.is_stalled(index),
                host: host.clone(),
                headers: headers.clone(),
                marks,
                reconnect: plan.reconnect,
                drop_one: plan.drop_one && index == 0,
                tls: plan.tls_client.clone(),
                http2: group.clone(),
                thread: state.clone(),
                live: live.clone(),
            };
            handles.push((
                index,
                tokio::task::spawn_local(transport::drive(conn, stop.clone())),
            ));
        }
        let mut tallies = Vec::with_capacity(handles.len());
        for (index, handle) in handles {
            let tally = handle.await.unwrap_or_else(|error| ConnTally {
                failure: Some(format!("connection task failed: {error}")),
                ..ConnTally::default()
            });
            tallies.push((index, tally));
        }
        tallies
    });
    let histograms = state.borrow().tally.clone();
    Ok((tallies, histograms))
}

/// Connection attempts started but neither ready nor failed yet, across all threads.
fn in_flight(live: &Live) -> u64 {
    let settled = Live::get(&live.ready) + Live::get(&live.failed);
    Live::get(&live.opened).saturating_sub(settled)
}

/// Highest samples seen during the run, and the server's RSS over time.
#[derive(Debug)]
struct Peaks {
    started: Instant,
    server_rss_kib: u64,
    server_cpu_pct: f64,
    harness_rss_kib: u64,
    tcp_buffers_kib: u64,
    /// `(seconds since started, server RSS KiB)`, one per sample.
    server_rss: Vec<(f64, u64)>,
}

impl Peaks {
    fn new(started: Instant) -> Self {
        Peaks {
            started,
            server_rss_kib: 0,
            server_cpu_pct: 0.0,
            harness_rss_kib: 0,
            tcp_buffers_kib: 0,
            server_rss: Vec::new(),
        }
    }

    /// Samples the server and the harness if [`SAMPLE_EVERY`] has passed since the last sample.
    fn maybe_sample(
        &mut self,
        endpoint: &Endpoint,
        last: &mut (Instant, Usage),
        own: &mut (Instant, Usage),
    ) {
        let now = Instant::now();
        if now.duration_since(last.0) < SAMPLE_EVERY {
            return;
        }
        if let Some(usage) = endpoint.usage() {
            self.server_rss_kib = self.server_rss_kib.max(usage.rss_kib);
            self.server_rss.push((
                now.duration_since(self.started).as_secs_f64(),
                usage.rss_kib,
            ));
            self.server_cpu_pct = self
                .server_cpu_pct
                .max(procfs::cpu_percent(*last, (now, usage)));
            *last = (now, usage);
        } else {
            last.0 = now;
        }
        let usage = procfs::own_usage();
        self.harness_rss_kib = self.harness_rss_kib.max(usage.rss_kib);
        *own = (now, usage);
        self.tcp_buffers_kib = self.tcp_buffers_kib.max(procfs::tcp_buffers_kib());
    }
}

/// What the report is computed from.
struct Inputs<'a> {
    plan: &'a Plan,
    endpoint: &'a Endpoint,
    load_start: [f64; 3],
    idle: Usage,
    connected: Usage,
    ramp: Duration,
    /// (when, server, harness) as publishing started and as it ended.
    publish_window: (Instant, Usage, Usage),
    publish_end: (Instant, Usage, Usage),
    /// The first publish, unix µs (cut-off times are told from it).
    publish_started_us: u64,
    /// The server after the drain, connections still open.
    drained: Usage,
    /// The kernel's TCP buffers after the drain, KiB.
    tcp_buffers_end: u64,
    /// Streams the server cut off during the run, by its own count.
    evictions: Option<u64>,
    /// HTTP/2 connections opened (`--http2`).
    http2_connections: Option<u64>,
    peaks: Peaks,
    outcome: Outcome,
}

fn build_report(
    inputs: Inputs<'_>,
    conns: &[(usize, ConnTally)],
    histograms: &ThreadTally,
) -> Report {
    let Inputs {
        plan,
        endpoint,
        load_start,
        idle,
        connected,
        ramp,
        publish_window,
        publish_end,
        publish_started_us,
        drained,
        tcp_buffers_end,
        evictions,
        http2_connections,
        mut peaks,
        outcome,
    } = inputs;
    let ok = &outcome.ok;
    let accounts = account::account(conns, ok, histograms, publish_started_us, plan.stall);
    let publish_seconds = outcome
        .finished
        .saturating_duration_since(outcome.started)
        .as_secs_f64();
    let publish = report::Publish {
        sent: outcome.sent,
        ok: ok.len(),
        overloaded: outcome.overloaded,
        errors: outcome.errors,
        first_error: outcome.first_error.clone(),
        seconds: publish_seconds,
        rate: if publish_seconds > 0.0 {
            ok.len() as f64 / publish_seconds
        } else {
            0.0
        },
        behind_max_ms: outcome.behind_max.as_secs_f64() * 1000.0,
        round_trip_ms: Percentiles::of_us(&outcome.round_trip),
    };
    let (t0, server0, own0) = publish_window;
    let (t1, server1, own1) = publish_end;
    peaks.server_rss_kib = peaks
        .server_rss_kib
        .max(connected.rss_kib)
        .max(server1.rss_kib)
        .max(drained.rss_kib);
    peaks.tcp_buffers_kib = peaks.tcp_buffers_kib.max(tcp_buffers_end);
    let connections = plan.connections.max(1) as f64;
    let resources = report::Resources {
        server_pid: endpoint.pid,
        server_rss_mb_idle: report::mb(idle.rss_kib),
        server_rss_mb_connected: report::mb(connected.rss_kib),
        server_rss_mb_peak: report::mb(peaks.server_rss_kib),
        server_rss_mb_end: report::mb(drained.rss_kib),
        server_rss_mb_series: peaks
            .server_rss
            .iter()
            .map(|&(at, kib)| [(at * 10.0).round() / 10.0, report::mb(kib)])
            .collect(),
        kernel_tcp_mb_peak: report::mb(peaks.tcp_buffers_kib),
        kernel_tcp_mb_end: report::mb(tcp_buffers_end),
        server_kib_per_connection: connected.rss_kib.saturating_sub(idle.rss_kib) as f64
            / connections,
        server_cpu_pct: procfs::cpu_percent((t0, server0), (t1, server1)),
        server_cpu_pct_max: peaks.server_cpu_pct,
        server_cpu_us_per_delivery: cpu_per_delivery(
            drained.cpu.saturating_sub(server0.cpu),
            accounts.delivery.delivered,
        ),
        harness_cpu_pct: procfs::cpu_percent((t0, own0), (t1, own1)),
        harness_rss_mb_peak: report::mb(peaks.harness_rss_kib),
    };
    Report {
        target: plan.target,
        transport: plan.transport,
        plan: plan.clone(),
        server: endpoint.banner.clone(),
        load_average: report::LoadAverage {
            start: load_start,
            end: procfs::load_average(),
        },
        connections: report::Connections {
            requested: plan.connections,
            ready: accounts.ready,
            failed: accounts.failed,
            first_failure: accounts.first_failure,
            ramp_s: ramp.as_secs_f64(),
            connect_ms: Percentiles::of_us(&histograms.connect),
            reconnects: accounts.reconnects,
            resets: accounts.resets,
            dropped_notices: accounts.dropped_notices,
            server_evictions: evictions,
            http2_connections,
        },
        publish,
        delivery: accounts.delivery,
        stalled: accounts.stalled,
        wire: accounts.wire,
        resources,
        worst_connections: accounts.worst,
        listening: plan
            .is_subscribe_only()
            .then(|| account::listening(conns, publish_seconds)),
        ramp: plan.ramp.map(|rate| crate::ramp::bins(rate, conns)),
    }
}

/// CPU time per delivered event, µs (0 when nothing was delivered).
fn cpu_per_delivery(cpu: Duration, delivered: u64) -> f64 {
    if delivered == 0 {
        return 0.0;
    }
    cpu.as_secs_f64() * 1e6 / delivered as f64
}

/// A progress bar on stderr, or a hidden one.
fn progress_bar(plan: &Plan) -> ProgressBar {
    if !plan.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(plan.connections as u64);
    let style =
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!(
        "{}/{}",
        plan.target.as_str(),
        plan.transport.as_str()
    ));
    bar
}
