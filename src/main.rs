//! The `sluice` binary: read the configuration, start the workers, wait for SIGINT or SIGTERM,
//! drain, exit. Exit code 64 (EX_USAGE) for configuration errors, 1 for start-up failures.

use std::process::ExitCode;

use clap::Parser;
use sluice::config::Config;
use sluice::runtime::Settings;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `EX_USAGE` from sysexits.h.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) => {
            let usage = error.use_stderr();
            let _ = error.print();
            return if usage {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let settings = match config
        .validate()
        .and_then(|()| Settings::from_config(&config, sluice::runtime::available_cores()))
    {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("sluice: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // Signal handlers go in before the workers start serving: a SIGTERM that arrives right after
    // the listening line must drain, not kill the process with the default action.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("sluice: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let server = match sluice::runtime::start(config.clone(), settings) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("sluice: cannot start on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let workers = server.hub().shard_count();
    // Tests and scripts read this line to learn the port; keep its shape.
    println!(
        "sluice listening on http://{} ({workers} workers)",
        server.local_addr()
    );
    tracing::info!(addr = %server.local_addr(), workers, "listening");

    signals.wait();
    tracing::info!("shutting down");
    server.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGINT and SIGTERM, registered on a small runtime of the main thread's own.
struct Signals {
    runtime: tokio::runtime::Runtime,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (interrupt, terminate) = runtime.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })?;
        Ok(Signals {
            runtime,
            interrupt,
            terminate,
        })
    }

    /// Blocks until either signal arrives.
    fn wait(mut self) {
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        });
    }
}
