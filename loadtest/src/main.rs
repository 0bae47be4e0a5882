//! The `sluice-loadtest` command: `run` (one transport against one server, a built-in one or a
//! custom SSE server), `compare` (SSE, WebSocket and long polling back to back against Sluice,
//! printed beside the tutorial's claims) and `storm` (every stream broken at once, then back).
//! Parses flags, runs, prints (text or CSV), writes `--out` JSON and an `--svg` chart, compares
//! with a `--baseline`, and sets the exit status.
//!
//! Exit status: 0 when every run was clean; 1 when any run lost or duplicated an event, had a
//! connection fail, or delivered nothing (a storm: a stream that never came back); 2 for usage
//! errors; 3 when a run could not be carried out (server missing, fd limit, server not
//! answering, baseline unreadable); 4 when a figure regressed past `--max-regress` against the
//! `--baseline`; 130 after SIGINT/SIGTERM, which ends the run early and still stops a spawned
//! server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_loadtest::custom::Custom;
use sluice_loadtest::handshake::{self, HandshakePlan};
use sluice_loadtest::pin::CpuList;
use sluice_loadtest::spawn::TlsFiles;
use sluice_loadtest::storm::{self, Cut, StormPlan, StormReport};
use sluice_loadtest::tls::Tls;
use sluice_loadtest::{
    chart, regress, run, run_spawned, Cancel, Endpoint, Launch, Plan, Rate, Report, Stall, Target,
    Transport,
};

#[derive(Debug, Parser)]
#[command(
    name = "sluice-loadtest",
    version,
    about = "Load harness for Sluice: SSE, WebSocket and long-polling clients, plus peer baselines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One transport against one server.
    Run {
        /// Client protocol.
        #[arg(long, value_enum, default_value = "sse")]
        transport: TransportArg,
        /// Server kind. express, nchan, minimal and minimal-nagle speak SSE only and need --spawn
        /// or a --url of theirs; minimal is the reference server sluice-minimal (one thread, one
        /// write per delivery, TCP_NODELAY), minimal-nagle the same with Nagle on; custom is any
        /// SSE server, described by --sub (and --pub, --header).
        #[arg(long, value_enum, default_value = "sluice")]
        target: TargetArg,
        #[command(flatten)]
        custom: CustomArgs,
        #[command(flatten)]
        common: Common,
    },
    /// A reconnect storm: open the streams, publish, break every connection at once (restart
    /// the spawned server, or cut it yourself with --url), and measure how the streams come
    /// back as browsers would (retry:, Last-Event-ID) and what was lost or duplicated.
    Storm {
        /// Server kind.
        #[arg(long, value_enum, default_value = "sluice")]
        target: TargetArg,
        /// How to break the connections of a spawned server: term (SIGTERM, then restart on the
        /// same port) or kill (SIGKILL, then restart). With --url the harness tells you when to
        /// cut.
        #[arg(long, value_enum, default_value = "term")]
        cut: CutArg,
        /// Publishing before the cut.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        before: Duration,
        /// Publishing after every stream is back.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        after: Duration,
        /// Longest wait, from the cut, for every stream to come back.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        recover: Duration,
        /// Test-only: connection 0 ignores the second event after it comes back.
        #[arg(long, hide = true)]
        drop_one: bool,
        #[command(flatten)]
        custom: CustomArgs,
        #[command(flatten)]
        common: Common,
    },
    /// SSE, WebSocket and long polling back to back against Sluice (a fresh server for each when
    /// --spawn), printed as the tutorial's table with the measured values beside its claims.
    Compare {
        #[command(flatten)]
        common: Common,
    },
    /// Full TLS handshakes per second: a new connection each (no resumption), closed as soon as
    /// the handshake is through, for --duration; with the server's CPU time per handshake.
    Handshakes {
        /// Server kind (all three serve TLS when spawned).
        #[arg(long, value_enum, default_value = "sluice")]
        target: TargetArg,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// How long to make handshakes.
        #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Offer h2 by ALPN (default http/1.1).
        #[arg(long)]
        http2: bool,
        /// A running server, https://HOST:PORT (loopback).
        #[arg(long, conflicts_with = "spawn")]
        url: Option<String>,
        /// PID of the server at --url, for its CPU.
        #[arg(long, alias = "pid")]
        server_pid: Option<u32>,
        /// Start the server with TLS on a free loopback port (a test CA and leaf, or
        /// --tls-cert/--tls-key), stop it at the end.
        #[arg(long)]
        spawn: bool,
        #[command(flatten)]
        tls: TlsArgs,
        /// The sluice binary for --spawn; default: `sluice` next to this executable.
        #[arg(long)]
        server_bin: Option<PathBuf>,
        /// Extra argument for a spawned sluice (repeatable), e.g. --server-arg=--workers=1.
        #[arg(long, allow_hyphen_values = true)]
        server_arg: Vec<String>,
        /// Worker processes of a spawned nginx (sluice-nginx, nchan).
        #[arg(long, default_value_t = sluice_loadtest::spawn::NGINX_WORKERS)]
        nginx_workers: usize,
        /// The baselines directory; default: this source tree's.
        #[arg(long)]
        baselines: Option<PathBuf>,
        /// Write the results as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Which CA to trust and which certificate a spawned server gets.
#[derive(Debug, Args)]
struct TlsArgs {
    /// PEM of the CA to trust over TLS (default: the system's roots; with --spawn and no
    /// --tls-cert, the test CA the harness made for the server).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// With --spawn: the server's certificate chain (PEM) instead of a test one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// With --spawn: the key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.ca.clone(),
        })
    }
}

#[derive(Debug, Args)]
struct Common {
    /// Subscriber connections.
    #[arg(long, short = 'c', default_value_t = 1000)]
    connections: usize,
    /// Publish rate, events per second (averaged over bursts), or `max`: publish as fast as the
    /// server answers, on every --publishers connection, for --duration.
    #[arg(long, short = 'r', default_value = "100", value_parser = parse_rate)]
    rate: Rate,
    /// Events published back to back per tick; ticks are burst/rate seconds apart.
    #[arg(long, default_value_t = 1)]
    burst: u32,
    /// How long to publish (e.g. 20s, 1m).
    #[arg(long, short = 'd', default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Longest wait after the last publish for deliveries still in flight.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// A running server, e.g. http://127.0.0.1:3000 (loopback).
    #[arg(long, conflicts_with = "spawn")]
    url: Option<String>,
    /// PID of the server at --url (or of a custom target), to sample its memory and CPU from
    /// /proc.
    #[arg(long, alias = "pid")]
    server_pid: Option<u32>,
    /// Start the server (or baseline) on a free loopback port, sample it, stop it at the end.
    #[arg(long)]
    spawn: bool,
    /// The sluice binary for --spawn; default: `sluice` next to this executable.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra argument for a spawned sluice (repeatable), e.g. --server-arg=--workers=1.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// The baselines directory (express/, nchan/); default: this source tree's.
    #[arg(long)]
    baselines: Option<PathBuf>,
    /// The sluice-minimal binary for --spawn of minimal and minimal-nagle; default: next to
    /// this executable.
    #[arg(long)]
    minimal_bin: Option<PathBuf>,
    /// Run the spawned server on these CPUs only (taskset -c syntax, e.g. 1 or 0,2-3).
    #[arg(long, value_parser = CpuList::parse)]
    server_cpus: Option<CpuList>,
    /// Run the harness (its client threads and publishers) on these CPUs only, e.g. 0.
    #[arg(long, value_parser = CpuList::parse)]
    client_cpus: Option<CpuList>,
    /// Channel to subscribe and publish on.
    #[arg(long, default_value = "load")]
    channel: String,
    /// Publisher keep-alive connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Pad each event's data object to this many bytes (a "p" string field); 0: no padding.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Share of the connections (every k-th, spread evenly) that stop reading their socket once
    /// ready and never read again: slow consumers. They are left out of the delivery figures,
    /// never reconnected, and reported with how many the server cut off.
    #[arg(long, default_value = "0", value_parser = parse_stall)]
    stall: Stall,
    /// Client threads reading the subscriber sockets (each a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Connections per loopback source address (127.x.y.2, .3, ...).
    #[arg(long, default_value_t = 2000)]
    per_source: usize,
    /// Connection attempts in flight at once during the ramp-up.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write an SVG chart of the results here (run and compare).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Open the connections at this many per second (e.g. 500/s) and show the connect latency
    /// second by second over the ramp.
    #[arg(long, value_parser = parse_ramp)]
    ramp: Option<f64>,
    /// How to print the results: text, or csv (a header and one row per run).
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// A results file written earlier with --out: compare this run's figures with it.
    #[arg(long, requires = "max_regress")]
    baseline: Option<PathBuf>,
    /// With --baseline: the exit status is 4 when a figure is worse by more than this many
    /// percent of its baseline value.
    #[arg(long, requires = "baseline")]
    max_regress: Option<f64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Connect over TLS (https): streams, publishes and /stats. With --spawn the server gets a
    /// test CA and a leaf for localhost/127.0.0.1 (or --tls-cert/--tls-key).
    #[arg(long)]
    tls: bool,
    #[command(flatten)]
    tls_args: TlsArgs,
    /// SSE streams as HTTP/2 streams: over TLS as agreed by ALPN, h2c (prior knowledge)
    /// without --tls. Spawned nginx targets listen with http2 too.
    #[arg(long)]
    http2: bool,
    /// HTTP/2 streams per connection: the streams go over ceil(connections / N) connections.
    #[arg(long, default_value_t = 1)]
    streams_per_connection: usize,
    /// Worker processes of a spawned nginx (sluice-nginx, nchan; 1 for the saturated pinned
    /// workload).
    #[arg(long, alias = "nchan-workers", default_value_t = sluice_loadtest::spawn::NGINX_WORKERS)]
    nginx_workers: usize,
}

/// A custom target (`--target custom`).
#[derive(Debug, Args)]
struct CustomArgs {
    /// The stream URL of a custom target, http://HOST:PORT/PATH; {i} becomes the connection's
    /// index (0, 1, …).
    #[arg(long)]
    sub: Option<String>,
    /// A request header K:V for the custom target's streams and publishes (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Where to POST the custom target's events. Without it the run only listens.
    #[arg(long = "pub")]
    publish: Option<String>,
    /// The publish body; {marker} becomes the event's marker (lt-<seq>-<unix µs>), which the
    /// harness then looks for anywhere in the received data. Default {"marker":"{marker}"}.
    #[arg(long)]
    pub_body: Option<String>,
    /// The publish body's Content-Type (default application/json).
    #[arg(long)]
    pub_type: Option<String>,
}

impl CustomArgs {
    fn build(&self) -> Result<Option<Arc<Custom>>, String> {
        let Some(sub) = &self.sub else {
            if self.publish.is_some() || !self.headers.is_empty() {
                return Err("--pub and --header need --target custom --sub URL".to_owned());
            }
            return Ok(None);
        };
        Custom::new(
            sub,
            &self.headers,
            self.publish.as_deref(),
            self.pub_body.as_deref(),
            self.pub_type.as_deref(),
        )
        .map(|c| Some(Arc::new(c)))
        .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Text,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CutArg {
    Term,
    Kill,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    Sse,
    Ws,
    Poll,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TargetArg {
    Sluice,
    Express,
    Nchan,
    /// nginx terminating TLS and HTTP/2 in front of a plain Sluice.
    SluiceNginx,
    Custom,
    Minimal,
    MinimalNagle,
}

impl From<TransportArg> for Transport {
    fn from(arg: TransportArg) -> Self {
        match arg {
            TransportArg::Sse => Transport::Sse,
            TransportArg::Ws => Transport::Ws,
            TransportArg::Poll => Transport::Poll,
        }
    }
}

impl From<TargetArg> for Target {
    fn from(arg: TargetArg) -> Self {
        match arg {
            TargetArg::Sluice => Target::Sluice,
            TargetArg::Express => Target::Express,
            TargetArg::Nchan => Target::Nchan,
            TargetArg::SluiceNginx => Target::SluiceNginx,
            TargetArg::Custom => Target::Custom,
            TargetArg::Minimal => Target::Minimal,
            TargetArg::MinimalNagle => Target::MinimalNagle,
        }
    }
}

/// Exit status when a run was not clean.
const EXIT_UNCLEAN: u8 = 1;
/// Exit status for usage errors (clap's own convention).
const EXIT_USAGE: u8 = 2;
/// Exit status when a run could not be carried out.
const EXIT_FAILED: u8 = 3;
/// Exit status when a figure regressed past `--max-regress`.
const EXIT_REGRESSED: u8 = 4;
/// Exit status after SIGINT or SIGTERM (128 + SIGINT, the shell's convention).
const EXIT_INTERRUPTED: u8 = 130;

/// Cancels the run on SIGINT or SIGTERM, from a thread of its own, so that the connections close
/// and a spawned server is stopped by its PID instead of being left behind.
fn cancel_on_signal(cancel: Cancel) {
    let spawned = std::thread::Builder::new()
        .name("loadtest-signals".into())
        .spawn(move || {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let (Ok(mut interrupt), Ok(mut terminate)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                eprintln!("sluice-loadtest: interrupted; stopping");
                cancel.cancel();
            });
        });
    if let Err(error) = spawned {
        eprintln!(
            "sluice-loadtest: no signal handling ({error}); Ctrl-C may leave a spawned server"
        );
    }
}

impl Command {
    fn common(&self) -> Option<&Common> {
        match self {
            Command::Run { common, .. }
            | Command::Storm { common, .. }
            | Command::Compare { common } => Some(common),
            Command::Handshakes { .. } => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts, so that every thread of the harness inherits the mask.
    if let Some(cpus) = cli.command.common().and_then(|c| c.client_cpus.as_ref()) {
        if let Err(error) = cpus.pin_current_thread() {
            eprintln!("sluice-loadtest: --client-cpus {cpus}: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let cancel = Cancel::default();
    cancel_on_signal(cancel.clone());
    match cli.command {
        Command::Run {
            transport,
            target,
            custom,
            common,
        } => runs(
            vec![(transport.into(), target.into())],
            &custom,
            &common,
            "run",
            cancel,
        ),
        Command::Compare { common } if common.tls || common.http2 => {
            eprintln!(
                "sluice-loadtest: compare runs WebSocket and long polling too, which stay on plain \
                 HTTP/1.1: use `run --tls [--http2]`"
            );
            ExitCode::from(EXIT_USAGE)
        }
        Command::Compare { common } => runs(
            Transport::ALL
                .iter()
                .map(|&t| (t, Target::Sluice))
                .collect(),
            &CustomArgs {
                sub: None,
                headers: Vec::new(),
                publish: None,
                pub_body: None,
                pub_type: None,
            },
            &common,
            "compare",
            cancel,
        ),
        Command::Storm {
            target,
            cut,
            before,
            after,
            recover,
            drop_one,
            custom,
            common,
        } => {
            let settings = StormPlan {
                cut: match (&common.url, cut) {
                    (Some(_), _) => Cut::Manual,
                    (None, CutArg::Term) => Cut::Term,
                    (None, CutArg::Kill) => Cut::Kill,
                },
                before,
                after,
                recover,
            };
            storm_command(target.into(), settings, drop_one, &custom, &common, cancel)
        }
        Command::Handshakes {
            target,
            concurrency,
            duration,
            http2,
            url,
            server_pid,
            spawn,
            tls,
            server_bin,
            server_arg,
            nginx_workers,
            baselines,
            out,
        } => {
            let target: Target = target.into();
            if !target.serves_tls() {
                eprintln!("sluice-loadtest: handshakes: --target sluice, sluice-nginx or nchan");
                return ExitCode::from(EXIT_USAGE);
            }
            if nginx_workers == 0 {
                eprintln!("sluice-loadtest: --nginx-workers must be at least 1");
                return ExitCode::from(EXIT_USAGE);
            }
            let plan = HandshakePlan {
                duration,
                concurrency,
                http2,
            };
            let mut launch = Launch::new(target, concurrency);
            launch.server_bin = server_bin;
            launch.server_args = server_arg;
            launch.tls = true;
            launch.http2 = http2;
            launch.tls_files = tls.files();
            launch.nginx_workers = nginx_workers;
            if let Some(dir) = baselines {
                launch.baselines = dir;
            }
            let result = match (url, spawn) {
                (Some(url), _) => match https_endpoint(&url, server_pid, tls.ca.as_deref()) {
                    Ok(endpoint) => handshake::handshakes(&plan, &endpoint),
                    Err(message) => {
                        eprintln!("sluice-loadtest: {message}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                },
                (None, true) => handshake::handshakes_spawned(&plan, &launch),
                (None, false) => {
                    eprintln!("sluice-loadtest: give --spawn or --url https://HOST:PORT");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            match result {
                Ok(report) => {
                    println!("{}", report.summary());
                    if let Some(path) = out {
                        let document = serde_json::json!({
                            "command": std::env::args().collect::<Vec<_>>(),
                            "mode": "handshakes",
                            "runs": [report],
                        });
                        let text = serde_json::to_string_pretty(&document).unwrap_or_default();
                        if let Err(error) = std::fs::write(&path, text + "\n") {
                            eprintln!("sluice-loadtest: cannot write {}: {error}", path.display());
                            return ExitCode::from(EXIT_FAILED);
                        }
                    }
                    if report.is_clean() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("sluice-loadtest: some handshakes failed");
                        ExitCode::from(EXIT_UNCLEAN)
                    }
                }
                Err(error) => {
                    eprintln!(
                        "sluice-loadtest: handshakes on {}: {error}",
                        target.as_str()
                    );
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
    }
}

/// The endpoint at `https://HOST:PORT` with a TLS client for HOST trusting `ca`.
fn https_endpoint(
    url: &str,
    pid: Option<u32>,
    ca: Option<&std::path::Path>,
) -> Result<Endpoint, String> {
    let (addr, host, secure) =
        parse_url(url).ok_or_else(|| format!("--url {url}: expected https://HOST:PORT"))?;
    if !secure {
        return Err(format!("--url {url}: expected https://HOST:PORT"));
    }
    let tls = Tls::new(ca, &host).map_err(|e| e.to_string())?;
    let mut endpoint = Endpoint::new(addr, pid, format!("{url} (not spawned)"));
    endpoint.tls = Some(Arc::new(tls));
    Ok(endpoint)
}

/// The plan and where the server comes from, or the exit status of a usage error.
fn prepare(
    transport: Transport,
    target: Target,
    custom: &CustomArgs,
    common: &Common,
    cancel: &Cancel,
) -> Result<(Plan, Option<Endpoint>), ExitCode> {
    let usage = |message: String| {
        eprintln!("sluice-loadtest: {message}");
        ExitCode::from(EXIT_USAGE)
    };
    let custom = custom.build().map_err(usage)?;
    let mut plan = plan(common, transport, target);
    plan.cancel = cancel.clone();
    plan.custom = custom.clone();
    if target == Target::Custom {
        plan.reconnect = sluice_loadtest::plan::Reconnect::AsBrowser;
    }
    plan.validate().map_err(|e| usage(e.to_string()))?;
    let endpoint = match (&custom, &common.url) {
        (Some(custom), _) => {
            if common.spawn {
                return Err(usage(
                    "a custom target is not spawned: start it yourself, give --sub and --pid"
                        .to_owned(),
                ));
            }
            Some(Endpoint::new(
                custom.sub.addr,
                common.server_pid,
                format!(
                    "custom target http://{}{} (not spawned)",
                    custom.sub.authority, custom.sub.path
                ),
            ))
        }
        (None, Some(url)) => match parse_url(url) {
            Some((addr, host, secure)) => {
                if secure != common.tls {
                    return Err(usage(format!(
                        "--url {url}: use https:// with --tls and http:// without it"
                    )));
                }
                let mut endpoint =
                    Endpoint::new(addr, common.server_pid, format!("{url} (not spawned)"));
                if common.tls {
                    let tls = Tls::new(common.tls_args.ca.as_deref(), &host)
                        .map_err(|e| usage(e.to_string()))?;
                    endpoint.tls = Some(Arc::new(tls));
                }
                Some(endpoint)
            }
            None => return Err(usage(format!("--url {url}: expected http://HOST:PORT"))),
        },
        (None, None) if common.spawn => None,
        (None, None) => return Err(usage("give --spawn or --url URL".to_owned())),
    };
    if common.server_cpus.is_some() && endpoint.is_some() {
        return Err(usage(
            "--server-cpus pins a spawned server: give --spawn (or pin yours with taskset)"
                .to_owned(),
        ));
    }
    if common.nginx_workers == 0 {
        return Err(usage("--nginx-workers must be at least 1".to_owned()));
    }
    if common.server_pid.is_some() && endpoint.is_none() {
        return Err(usage(
            "--server-pid goes with --url or a custom target".to_owned(),
        ));
    }
    Ok((plan, endpoint))
}

/// `run` and `compare`.
fn runs(
    runs: Vec<(Transport, Target)>,
    custom: &CustomArgs,
    common: &Common,
    title: &str,
    cancel: Cancel,
) -> ExitCode {
    let mut reports = Vec::new();
    for (transport, target) in runs {
        if cancel.is_cancelled() {
            break;
        }
        let (plan, endpoint) = match prepare(transport, target, custom, common, &cancel) {
            Ok(prepared) => prepared,
            Err(status) => return status,
        };
        let result = match &endpoint {
            Some(endpoint) => run(&plan, endpoint),
            None => run_spawned(&plan, &launch(common, target)),
        };
        match result {
            Ok(report) => {
                if common.format == FormatArg::Text {
                    println!("{}", report.summary());
                }
                reports.push(report);
            }
            Err(error) => {
                eprintln!(
                    "sluice-loadtest: {} over {}: {error}",
                    target.as_str(),
                    transport.as_str()
                );
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    if title == "compare" && common.format == FormatArg::Text {
        println!("{}", sluice_loadtest::report::comparison_table(&reports));
    }
    let document = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "mode": title,
        "runs": reports,
        "table": (title == "compare")
            .then(|| sluice_loadtest::report::comparison_table(&reports)),
    });
    if let Err(error) = write_svg(common, title, &reports) {
        eprintln!("sluice-loadtest: {error}");
        return ExitCode::from(EXIT_FAILED);
    }
    let clean = reports.iter().all(Report::is_clean);
    finish(common, &document, &cancel, clean)
}

/// `storm`.
fn storm_command(
    target: Target,
    settings: StormPlan,
    drop_one: bool,
    custom: &CustomArgs,
    common: &Common,
    cancel: Cancel,
) -> ExitCode {
    let (mut plan, endpoint) = match prepare(Transport::Sse, target, custom, common, &cancel) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    plan.drop_one = drop_one;
    let server = match endpoint {
        Some(endpoint) => storm::Server::Running(endpoint),
        None => storm::Server::Spawn(launch(common, target)),
    };
    let report: StormReport = match storm::storm(&plan, &settings, server) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("sluice-loadtest: storm on {}: {error}", target.as_str());
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if common.format == FormatArg::Text {
        println!("{}", report.summary());
    }
    let clean = report.is_clean();
    let document = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "mode": "storm",
        "runs": [report],
    });
    finish(common, &document, &cancel, clean)
}

/// CSV, `--out`, the `--baseline` check, and the exit status.
fn finish(common: &Common, document: &serde_json::Value, cancel: &Cancel, clean: bool) -> ExitCode {
    if common.format == FormatArg::Csv {
        print!("{}", regress::csv(document));
    }
    if let Some(path) = &common.out {
        let written = serde_json::to_string_pretty(document)
            .map_err(|e| format!("cannot encode the results: {e}"))
            .and_then(|text| {
                std::fs::write(path, text + "\n")
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))
            });
        if let Err(error) = written {
            eprintln!("sluice-loadtest: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    }
    let mut regressed = false;
    if let (Some(path), Some(max_pct)) = (&common.baseline, common.max_regress) {
        let baseline = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the baseline {}: {e}", path.display()))
            .and_then(|text| {
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| format!("the baseline {} is not JSON: {e}", path.display()))
            })
            .and_then(|baseline| {
                regress::compare(&baseline, document, max_pct).map_err(|e| e.to_string())
            });
        match baseline {
            Ok(comparisons) => {
                eprint!("{}", regress::table(&comparisons, max_pct));
                regressed = comparisons.iter().any(|c| c.regressed);
            }
            Err(error) => {
                eprintln!("sluice-loadtest: {error}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    if cancel.is_cancelled() {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    if !clean {
        eprintln!("sluice-loadtest: not clean (see the verdict lines)");
        return ExitCode::from(EXIT_UNCLEAN);
    }
    if regressed {
        eprintln!("sluice-loadtest: regressed past --max-regress against the baseline");
        return ExitCode::from(EXIT_REGRESSED);
    }
    ExitCode::SUCCESS
}

fn plan(common: &Common, transport: Transport, target: Target) -> Plan {
    Plan {
        transport,
        target,
        connections: common.connections,
        rate: common.rate,
        burst: common.burst,
        payload_bytes: common.payload_bytes,
        stall: common.stall,
        duration: common.duration,
        drain: common.drain,
        channel: common.channel.clone(),
        publishers: common.publishers,
        client_threads: common.client_threads,
        per_source: common.per_source,
        connect_concurrency: common.connect_concurrency,
        progress: !common.quiet,
        cancel: Cancel::default(),
        custom: None,
        reconnect: sluice_loadtest::plan::Reconnect::Fast,
        ramp: common.ramp,
        drop_one: false,
        tls: common.tls,
        http2: common.http2,
        streams_per_connection: common.streams_per_connection,
        tls_client: None,
    }
}

fn launch(common: &Common, target: Target) -> Launch {
    let mut launch = Launch::new(target, common.connections);
    launch.server_bin = common.server_bin.clone();
    launch.server_args = common.server_arg.clone();
    launch.tls = common.tls;
    launch.http2 = common.http2;
    launch.tls_files = common.tls_args.files();
    launch.nginx_workers = common.nginx_workers;
    launch.minimal_bin = common.minimal_bin.clone();
    launch.cpus = common.server_cpus.clone();
    if let Some(dir) = &common.baselines {
        launch.baselines = dir.clone();
    }
    launch
}

/// `--rate`: a number of events per second or `max`.
fn parse_rate(text: &str) -> Result<Rate, String> {
    Rate::parse(text).map_err(|error| error.to_string())
}

/// `--ramp`: connections per second, `500` or `500/s`.
fn parse_ramp(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix("/s").unwrap_or(text);
    match number.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "'{text}': expected connections per second, e.g. 500/s"
        )),
    }
}

/// `--stall`: a share in [0, 1).
fn parse_stall(text: &str) -> Result<Stall, String> {
    let fraction: f64 = text
        .parse()
        .map_err(|_| format!("'{text}': expected a share such as 0.1"))?;
    Stall::from_fraction(fraction).map_err(|error| error.to_string())
}

/// `http://HOST:PORT[/...]`, `https://HOST:PORT[/...]` or `HOST:PORT` → the first address it
/// resolves to, the host (the TLS server name) and whether it is https.
fn parse_url(url: &str) -> Option<(SocketAddr, String, bool)> {
    let (rest, secure) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("http://").unwrap_or(url), false),
    };
    let authority = rest.split('/').next()?;
    let addr = authority.to_socket_addrs().ok()?.next()?;
    let host = match authority.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    Some((addr, host.to_owned(), secure))
}

/// `--svg`.
fn write_svg(common: &Common, title: &str, reports: &[Report]) -> Result<(), String> {
    if let Some(path) = &common.svg {
        let heading = format!(
            "sluice-loadtest {title}: {} connections, {}",
            common.connections, common.rate
        );
        chart::write_svg(path, &heading, reports).map_err(|e| e.to_string())?;
    }
    Ok(())
}
