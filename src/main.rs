//! The `sluice` binary: read the configuration, start the workers, wait for SIGINT or SIGTERM,
//! drain, exit. Exit code 64 (EX_USAGE) for configuration errors, 1 for start-up failures.

use std::process::ExitCode;

use clap::Parser;
use sluice::config::Config;

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
    if let Err(error) = config.validate() {
        eprintln!("sluice: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let server = match sluice::runtime::start(config.clone()) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("sluice: cannot listen on {}: {error}", config.listen);
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

    if let Err(error) = wait_for_signal() {
        eprintln!("sluice: cannot wait for signals: {error}");
        server.shutdown();
        return ExitCode::FAILURE;
    }
    tracing::info!("shutting down");
    server.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    })
}
