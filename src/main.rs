//! The `sluice` binary: read the configuration (and the TLS certificate), start the workers, wait
//! for SIGINT or SIGTERM, drain, exit; SIGHUP (or a changed certificate file) reloads the
//! certificate. Exit code 64 (EX_USAGE) for configuration errors, 1 for start-up failures.

use std::process::ExitCode;

use clap::Parser;
use sluice::config::Config;
use sluice::runtime::Settings;
use sluice::tls::Tls;

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
    // One crypto provider for every TLS object of the process (server and ACME client).
    let _ = rustls::crypto::ring::default_provider().install_default();
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

    // The ACME client shares the certificate resolver the workers read.
    let tls = settings.tls.clone();

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
        Err(error) if is_locked(&error) => {
            // The data directory stayed in use for all of --lock-wait: a configuration error
            // (two servers pointed at one directory), not a failure of this machine.
            eprintln!("sluice: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(error) => {
            eprintln!("sluice: cannot start on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    if let (Some(tls), false) = (&tls, config.acme_domain.is_empty()) {
        let settings = sluice::tls::acme::Settings {
            domains: config.acme_domain.clone(),
            contact: config.acme_contact.clone(),
            cache: config.acme_cache.clone().unwrap_or_default(),
            directory: config.acme_directory.clone(),
            directory_ca: config.acme_directory_ca.clone(),
        };
        if let Err(error) =
            sluice::tls::acme::start(settings, tls.certs().clone(), server.shutdown_signal())
        {
            eprintln!("sluice: {error}");
            server.shutdown();
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let workers = server.hub().shard_count();
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and scripts read this line to learn the port; keep its shape.
    println!(
        "sluice listening on {scheme}://{} ({workers} workers)",
        server.local_addr()
    );
    tracing::info!(addr = %server.local_addr(), workers, "listening");

    signals.wait(tls.as_deref());
    tracing::info!("shutting down");
    server.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Whether start-up failed because another process kept the data directory's lock.
fn is_locked(error: &std::io::Error) -> bool {
    matches!(
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<sluice::store::StoreError>()),
        Some(sluice::store::StoreError::Locked(..))
    )
}

/// Re-reads the certificate files; a bad pair is logged and the current one kept.
fn reload(tls: Option<&Tls>, why: &str) {
    let Some(tls) = tls else {
        tracing::info!(why, "no certificate files to reload");
        return;
    };
    match tls.reload() {
        Ok(true) => tracing::info!(why, "certificate reloaded"),
        Ok(false) => tracing::info!(why, "the certificate comes from ACME; nothing to reload"),
        Err(error) => {
            tracing::error!(why, %error, "certificate reload failed; keeping the current one")
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, registered on a small runtime of the main thread's own.
struct Signals {
    runtime: tokio::runtime::Runtime,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (interrupt, terminate, hangup) = runtime.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })?;
        Ok(Signals {
            runtime,
            interrupt,
            terminate,
            hangup,
        })
    }

    /// Blocks until SIGINT or SIGTERM; meanwhile reloads the certificate on SIGHUP and when its
    /// files change.
    fn wait(mut self, tls: Option<&Tls>) {
        self.runtime.block_on(async {
            let mut check = tokio::time::interval(sluice::tls::FILE_CHECK_PERIOD);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = self.interrupt.recv() => return,
                    _ = self.terminate.recv() => return,
                    _ = self.hangup.recv() => reload(tls, "SIGHUP"),
                    _ = check.tick() => {
                        if tls.is_some_and(Tls::files_changed) {
                            reload(tls, "certificate files changed");
                        }
                    }
                }
            }
        });
    }
}
