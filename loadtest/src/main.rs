//! The `sluice-loadtest` command: `run` (one transport against one server) and `compare` (SSE,
//! WebSocket and long polling back to back against Sluice, printed beside the tutorial's claims).
//! Parses flags, runs, prints, writes `--out` JSON and an `--svg` chart, and sets the exit status.
//!
//! Exit status: 0 when every run was clean; 1 when any run lost or duplicated an event, had a
//! connection fail, or delivered nothing; 2 for usage errors; 3 when a run could not be carried
//! out (server missing, fd limit, server not answering); 130 after SIGINT/SIGTERM, which ends the
//! run early and still stops a spawned server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_loadtest::{
    chart, run, run_spawned, Cancel, Endpoint, Launch, Plan, Rate, Report, Stall, Target, Transport,
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
        /// Server kind. express and nchan speak SSE only and need --spawn or a --url of theirs.
        #[arg(long, value_enum, default_value = "sluice")]
        target: TargetArg,
        #[command(flatten)]
        common: Common,
    },
    /// SSE, WebSocket and long polling back to back against Sluice (a fresh server for each when
    /// --spawn), printed as the tutorial's table with the measured values beside its claims.
    Compare {
        #[command(flatten)]
        common: Common,
    },
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
    #[arg(long, conflicts_with = "spawn", required_unless_present = "spawn")]
    url: Option<String>,
    /// PID of the server at --url, to sample its memory and CPU from /proc.
    #[arg(long, requires = "url")]
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
    /// Write an SVG chart of the results here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
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
        }
    }
}

/// Exit status when a run was not clean.
const EXIT_UNCLEAN: u8 = 1;
/// Exit status for usage errors (clap's own convention).
const EXIT_USAGE: u8 = 2;
/// Exit status when a run could not be carried out.
const EXIT_FAILED: u8 = 3;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (runs, common, title): (Vec<(Transport, Target)>, Common, &str) = match cli.command {
        Command::Run {
            transport,
            target,
            common,
        } => (vec![(transport.into(), target.into())], common, "run"),
        Command::Compare { common } => (
            Transport::ALL
                .iter()
                .map(|&t| (t, Target::Sluice))
                .collect(),
            common,
            "compare",
        ),
    };
    let endpoint = match &common.url {
        Some(url) => match parse_url(url) {
            Some(addr) => Some(Endpoint {
                addr,
                pid: common.server_pid,
                banner: format!("{url} (not spawned)"),
            }),
            None => {
                eprintln!("sluice-loadtest: --url {url}: expected http://HOST:PORT");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => None,
    };

    let cancel = Cancel::default();
    cancel_on_signal(cancel.clone());
    let mut reports = Vec::new();
    for (transport, target) in runs {
        if cancel.is_cancelled() {
            break;
        }
        let mut plan = plan(&common, transport, target);
        plan.cancel = cancel.clone();
        if let Err(error) = plan.validate() {
            eprintln!("sluice-loadtest: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
        let result = match &endpoint {
            Some(endpoint) => run(&plan, endpoint),
            None => run_spawned(&plan, &launch(&common, target)),
        };
        match result {
            Ok(report) => {
                println!("{}", report.summary());
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
    if title == "compare" {
        println!("{}", sluice_loadtest::report::comparison_table(&reports));
    }
    if let Err(error) = write_outputs(&common, title, &reports) {
        eprintln!("sluice-loadtest: {error}");
        return ExitCode::from(EXIT_FAILED);
    }
    if cancel.is_cancelled() {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    if reports.iter().all(Report::is_clean) {
        ExitCode::SUCCESS
    } else {
        eprintln!("sluice-loadtest: not clean (see the verdict lines)");
        ExitCode::from(EXIT_UNCLEAN)
    }
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
    }
}

fn launch(common: &Common, target: Target) -> Launch {
    let mut launch = Launch::new(target, common.connections);
    launch.server_bin = common.server_bin.clone();
    launch.server_args = common.server_arg.clone();
    if let Some(dir) = &common.baselines {
        launch.baselines = dir.clone();
    }
    launch
}

/// `--rate`: a number of events per second or `max`.
fn parse_rate(text: &str) -> Result<Rate, String> {
    Rate::parse(text).map_err(|error| error.to_string())
}

/// `--stall`: a share in [0, 1).
fn parse_stall(text: &str) -> Result<Stall, String> {
    let fraction: f64 = text
        .parse()
        .map_err(|_| format!("'{text}': expected a share such as 0.1"))?;
    Stall::from_fraction(fraction).map_err(|error| error.to_string())
}

/// `http://HOST:PORT[/...]` or `HOST:PORT` → the first address it resolves to.
fn parse_url(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split('/').next()?;
    authority.to_socket_addrs().ok()?.next()
}

/// `--out` (JSON: the command line and every report) and `--svg`.
fn write_outputs(common: &Common, title: &str, reports: &[Report]) -> Result<(), String> {
    if let Some(path) = &common.out {
        let document = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>(),
            "mode": title,
            "runs": reports,
            "table": (title == "compare")
                .then(|| sluice_loadtest::report::comparison_table(reports)),
        });
        let text = serde_json::to_string_pretty(&document)
            .map_err(|e| format!("cannot encode the results: {e}"))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &common.svg {
        let heading = format!(
            "sluice-loadtest {title}: {} connections, {}",
            common.connections, common.rate
        );
        chart::write_svg(path, &heading, reports).map_err(|e| e.to_string())?;
    }
    Ok(())
}
