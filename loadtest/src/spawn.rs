//! Starting and stopping the server under load: the `sluice` binary, the Express baseline
//! (`node server.js`), nginx with Nchan, nginx in front of a plain Sluice (`sluice-nginx`), or
//! the reference server `sluice-minimal` (with `--nagle` for `minimal-nagle`); nginx configs are
//! written from the templates into a scratch directory. With `--server-cpus` the server runs
//! under `taskset -c LIST` (`sluice-nginx`: nginx and the Sluice behind it both). Each listens
//! on a free loopback port; each is stopped by its PID (SIGTERM, then SIGKILL for it and any
//! descendant left), and the scratch directory is removed.
//!
//! With `tls` the server serves HTTPS (ALPN `h2` and `http/1.1`): with the certificate files
//! given, or with a test CA and a leaf for `localhost`/`127.0.0.1` made here (the CA is what the
//! clients then trust). nginx terminates TLS itself (`listen … ssl http2`) and, for
//! `sluice-nginx`, proxies to Sluice over plain keep-alive HTTP/1.1 with buffering off, as
//! Sluice is deployed behind it. `http2` without TLS makes nginx listen for h2c (prior
//! knowledge); Sluice speaks h2c next to HTTP/1.1 on every plain listener anyway.
//!
//! Knows where the binaries and baselines are and how each announces that it is ready; knows
//! nothing of the workload.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::pin::CpuList;
use crate::plan::Target;

/// Longest wait for a server to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest wait for a server to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Debian's `libnginx-mod-nchan` puts the module; the first that exists is used.
const NCHAN_MODULES: [&str; 2] = [
    "/usr/lib/nginx/modules/ngx_nchan_module.so",
    "/usr/share/nginx/modules/ngx_nchan_module.so",
];

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Which server.
    pub target: Target,
    /// The `sluice` binary; default: next to this executable.
    pub server_bin: Option<PathBuf>,
    /// The `loadtest/baselines` directory.
    pub baselines: PathBuf,
    /// Connections the run will open (sizes the servers' limits).
    pub connections: usize,
    /// Extra arguments for `sluice`.
    pub server_args: Vec<String>,
    /// The loopback port to listen on (none: a free one). A storm restarts the server on the
    /// port it had.
    pub port: Option<u16>,
    /// Serve HTTPS (Sluice, `sluice-nginx`, Nchan).
    pub tls: bool,
    /// nginx targets: HTTP/2 on the listener (with TLS by ALPN, without it h2c).
    pub http2: bool,
    /// The certificate chain, key and CA to use with `tls` (none: a test CA and leaf are made).
    pub tls_files: Option<TlsFiles>,
    /// Worker processes of a spawned nginx (`nchan`, `sluice-nginx`; Sluice itself:
    /// `--server-arg=--workers=N`).
    pub nginx_workers: usize,
    /// The `sluice-minimal` binary; default: next to this executable.
    pub minimal_bin: Option<PathBuf>,
    /// Run the server on these CPUs only (`taskset -c`; `sluice-nginx`: both processes).
    pub cpus: Option<CpuList>,
}

/// Certificate files for a spawned TLS server.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
    /// The CA the clients trust (none: the system's roots).
    pub ca: Option<PathBuf>,
}

/// nginx worker processes unless told otherwise: two, like Sluice's two per-core runtimes on a
/// two-core machine.
pub const NGINX_WORKERS: usize = 2;

impl Launch {
    /// Defaults for `target`: the baselines of this source tree, `sluice` next to the executable.
    pub fn new(target: Target, connections: usize) -> Self {
        Launch {
            target,
            server_bin: None,
            baselines: default_baselines(),
            connections,
            server_args: Vec::new(),
            port: None,
            tls: false,
            http2: false,
            tls_files: None,
            nginx_workers: NGINX_WORKERS,
            minimal_bin: None,
            cpus: None,
        }
    }
}

/// `loadtest/baselines` of the source tree this harness was built from.
pub fn default_baselines() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines")
}

/// The server could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// A binary or file the server needs is not there.
    Missing {
        /// What is missing.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
    /// Starting the process failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        error: std::io::Error,
    },
    /// A custom target is started by its owner, not by the harness.
    Custom,
    /// It started but never said (or showed) that it listens.
    NotListening {
        /// The server.
        target: Target,
        /// What it printed instead, or why the wait ended.
        detail: String,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Missing { what, path, hint } => {
                write!(f, "{what} not found at {}: {hint}", path.display())
            }
            SpawnError::Io { what, error } => write!(f, "{what}: {error}"),
            SpawnError::Custom => f.write_str(
                "the harness cannot start a custom target: start it yourself, give --sub URL \
                 and --pid PID for its memory and CPU",
            ),
            SpawnError::NotListening { target, detail } => {
                write!(f, "{} did not start listening: {detail}", target.as_str())
            }
        }
    }
}

impl std::error::Error for SpawnError {}

/// A running server, stopped by PID when dropped.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Which server.
    pub target: Target,
    /// Its listening line (or the harness's description of it, for nginx).
    pub banner: String,
    /// The CA its certificate chains to, with `tls` (none: the system's roots).
    pub ca: Option<PathBuf>,
    /// The server behind it (`sluice-nginx`: the plain Sluice nginx proxies to).
    upstream: Option<Box<Spawned>>,
    scratch: Option<PathBuf>,
    stopped: bool,
}

impl Spawned {
    /// Starts the server described by `launch`.
    pub fn start(launch: &Launch) -> Result<Spawned, SpawnError> {
        match launch.target {
            Target::Sluice => start_sluice(launch),
            Target::Express => start_express(launch),
            Target::Nchan => start_nchan(launch),
            Target::SluiceNginx => start_sluice_nginx(launch),
            Target::Minimal | Target::MinimalNagle => start_minimal(launch),
            Target::Custom => Err(SpawnError::Custom),
        }
    }

    /// The process id of the server behind a proxy (`sluice-nginx`).
    pub fn upstream_pid(&self) -> Option<u32> {
        self.upstream.as_ref().map(|upstream| upstream.pid())
    }

    /// The process id (nginx: the master).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server: SIGTERM, a bounded wait, then SIGKILL for it and any descendant left.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Kills the server at once (SIGKILL), and any descendant, and waits for it.
    pub fn kill(mut self) {
        self.shutdown_with("KILL");
    }

    fn shutdown(&mut self) {
        self.shutdown_with("TERM");
    }

    fn shutdown_with(&mut self, first: &str) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = self.pid();
        let family = crate::procfs::descendants(pid);
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(first, pid);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        // nginx workers leave with their master; make sure, by their own PIDs.
        std::thread::sleep(Duration::from_millis(50));
        for child in family {
            if std::fs::metadata(format!("/proc/{child}")).is_ok() {
                signal("KILL", child);
            }
        }
        if let Some(mut upstream) = self.upstream.take() {
            upstream.shutdown_with(first);
        }
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `kill -s NAME PID` (no libc in this crate).
fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg("-s")
        .arg(name)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `program`, or `taskset -c LIST program` when the launch pins the server (taskset execs the
/// program, so the PID is the server's).
fn command(program: &Path, launch: &Launch) -> Command {
    match &launch.cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// `name` next to this executable (where cargo puts every binary of the workspace).
fn next_to_exe(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn start_sluice(launch: &Launch) -> Result<Spawned, SpawnError> {
    let bin = match &launch.server_bin {
        Some(bin) => bin.clone(),
        None => next_to_exe("sluice"),
    };
    if !bin.is_file() {
        return Err(SpawnError::Missing {
            what: "the sluice server binary",
            path: bin,
            hint: "build the workspace (`cargo build --release --workspace` builds the server and the harness \
                   into the same target directory) or pass --server-bin PATH",
        });
    }
    let max_connections = (launch.connections + 1000).max(10_000);
    let (tls_args, ca, scratch) = if launch.tls {
        let scratch = scratch_dir("sluice")?;
        let files = match tls_files(launch, &scratch) {
            Ok(files) => files,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(error);
            }
        };
        let args = vec![
            "--tls-cert".to_owned(),
            files.cert.display().to_string(),
            "--tls-key".to_owned(),
            files.key.display().to_string(),
        ];
        (args, files.ca, Some(scratch))
    } else {
        (Vec::new(), None, None)
    };
    let mut command = command(&bin, launch);
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", launch.port.unwrap_or(0)))
        .arg("--max-connections")
        .arg(max_connections.to_string())
        .args(&tls_args)
        .args(&launch.server_args)
        .env(
            "SLUICE_LOG",
            std::env::var("SLUICE_LOG").unwrap_or("warn".into()),
        );
    // The developer's SLUICE_* settings must not change the server under test.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SLUICE_") && key != "SLUICE_LOG" {
            command.env_remove(key);
        }
    }
    let mut spawned = start_with_banner(command, Target::Sluice, scratch)?;
    spawned.ca = ca;
    Ok(spawned)
}

/// A scratch directory for a spawned server's files.
fn scratch_dir(what: &str) -> Result<PathBuf, SpawnError> {
    let dir = std::env::temp_dir().join(format!(
        "sluice-loadtest-{what}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(dir.join("logs")).map_err(|error| SpawnError::Io {
        what: "cannot create a scratch dir",
        error,
    })?;
    Ok(dir)
}

/// The certificate files a TLS server is started with: the given ones, or a test CA and leaf
/// made in the server's scratch directory `dir`.
fn tls_files(launch: &Launch, dir: &Path) -> Result<TlsFiles, SpawnError> {
    if let Some(files) = &launch.tls_files {
        return Ok(files.clone());
    }
    let pki = crate::tls::TestPki::create(dir).map_err(|error| SpawnError::Io {
        what: "cannot make the test certificates",
        error: std::io::Error::other(error.0),
    })?;
    let files = TlsFiles {
        cert: pki.cert,
        key: pki.key,
        ca: Some(pki.ca),
    };
    Ok(files)
}

fn start_express(launch: &Launch) -> Result<Spawned, SpawnError> {
    let dir = launch.baselines.join("express");
    let module = dir.join("node_modules").join("express");
    if !module.is_dir() {
        return Err(SpawnError::Missing {
            what: "the Express baseline's packages",
            path: module,
            hint: "run `npm ci --prefix loadtest/baselines/express`",
        });
    }
    let mut command = command(Path::new("node"), launch);
    command
        .arg(dir.join("server.js"))
        .env("PORT", launch.port.unwrap_or(0).to_string())
        .env("HOST", "127.0.0.1");
    start_with_banner(command, Target::Express, None)
}

fn start_minimal(launch: &Launch) -> Result<Spawned, SpawnError> {
    let bin = match &launch.minimal_bin {
        Some(bin) => bin.clone(),
        None => next_to_exe("sluice-minimal"),
    };
    if !bin.is_file() {
        return Err(SpawnError::Missing {
            what: "the reference server binary",
            path: bin,
            hint: "build the harness (`cargo build --release -p sluice-loadtest` builds \
                   sluice-minimal beside sluice-loadtest)",
        });
    }
    let mut command = command(&bin, launch);
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", launch.port.unwrap_or(0)));
    if launch.target == Target::MinimalNagle {
        command.arg("--nagle");
    }
    start_with_banner(command, launch.target, None)
}

/// Runs `command` with piped stdout and waits for a line containing `listening on http://ADDR`.
fn start_with_banner(
    mut command: Command,
    target: Target,
    scratch: Option<PathBuf>,
) -> Result<Spawned, SpawnError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| SpawnError::Io {
            what: "cannot start the server",
            error,
        })?;
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            // Read to EOF so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + START_TIMEOUT;
    let mut seen = Vec::new();
    let mut spawned = Spawned {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        target,
        banner: String::new(),
        ca: None,
        upstream: None,
        scratch,
        stopped: false,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = listening_addr(&line) {
                    spawned.addr = addr;
                    spawned.banner = line;
                    return Ok(spawned);
                }
                seen.push(line);
            }
            Err(error) => {
                let detail = format!("{error}; stdout so far: {seen:?}");
                spawned.shutdown();
                return Err(SpawnError::NotListening { target, detail });
            }
        }
    }
}

/// The address in `... listening on http://ADDR ...` (or `https://`).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on ").nth(1)?;
    let rest = rest
        .strip_prefix("http://")
        .or_else(|| rest.strip_prefix("https://"))?;
    let addr = rest.split(|c: char| c.is_whitespace() || c == '/').next()?;
    addr.parse().ok()
}

fn start_nchan(launch: &Launch) -> Result<Spawned, SpawnError> {
    let module = NCHAN_MODULES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| SpawnError::Missing {
            what: "the Nchan module",
            path: PathBuf::from(NCHAN_MODULES[0]),
            hint: "apt-get install nginx-light libnginx-mod-nchan",
        })?;
    let fields = [("{{MODULE}}", module.display().to_string())];
    start_nginx(launch, "nchan", &fields, None, "nginx + nchan")
}

/// nginx terminating TLS (and HTTP/2) in front of a plain Sluice, proxying over keep-alive
/// HTTP/1.1 with buffering off. Both processes count as the server.
fn start_sluice_nginx(launch: &Launch) -> Result<Spawned, SpawnError> {
    let mut behind = launch.clone();
    behind.target = Target::Sluice;
    behind.tls = false;
    behind.port = None;
    let upstream = start_sluice(&behind)?;
    let fields = [("{{UPSTREAM}}", upstream.addr.to_string())];
    start_nginx(
        launch,
        "nginx-proxy",
        &fields,
        Some(upstream),
        "nginx in front of sluice",
    )
}

/// nginx with the config `baselines/<dir>/nginx.conf.template`, its `{{...}}` fields filled
/// (the common ones and `fields`), listening with TLS and HTTP/2 as `launch` says.
fn start_nginx(
    launch: &Launch,
    dir: &str,
    fields: &[(&str, String)],
    upstream: Option<Spawned>,
    title: &str,
) -> Result<Spawned, SpawnError> {
    let template_path = launch.baselines.join(dir).join("nginx.conf.template");
    let template = std::fs::read_to_string(&template_path).map_err(|_| SpawnError::Missing {
        what: "the nginx config template",
        path: template_path.clone(),
        hint: "pass --baselines DIR pointing at loadtest/baselines",
    })?;
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| SpawnError::Missing {
            what: "nginx",
            path: PathBuf::from("/usr/sbin/nginx"),
            hint: "apt-get install nginx-light libnginx-mod-nchan",
        })?;
    let io = |what| move |error| SpawnError::Io { what, error };
    let port = match launch.port {
        Some(port) => port,
        None => TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io("cannot find a free port"))?
            .port(),
    };
    let scratch = scratch_dir(dir)?;
    let files = match launch.tls {
        true => match tls_files(launch, &scratch) {
            Ok(files) => Some(files),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(error);
            }
        },
        false => None,
    };
    let listen = Listen {
        port,
        tls: files.as_ref().map(|f| (f.cert.as_path(), f.key.as_path())),
        http2: launch.http2,
        workers: launch.nginx_workers.max(1),
    };
    let mut config = render_nginx(&template, &scratch, &listen, launch.connections);
    for (field, value) in fields {
        config = config.replace(field, value);
    }
    let config_path = scratch.join("nginx.conf");
    let written = std::fs::write(&config_path, config).map_err(io("cannot write nginx.conf"));
    if let Err(error) = written {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(error);
    }
    let child = command(&nginx, launch)
        .arg("-p")
        .arg(&scratch)
        .arg("-c")
        .arg(&config_path)
        .arg("-e")
        .arg(scratch.join("logs").join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io("cannot start nginx"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let scheme = if launch.tls { "https" } else { "http" };
    let mut spawned = Spawned {
        child,
        addr,
        target: launch.target,
        banner: format!(
            "{title} listening on {scheme}://{addr} ({} workers{})",
            launch.nginx_workers,
            if launch.http2 { ", http2" } else { "" }
        ),
        ca: files.and_then(|f| f.ca),
        upstream: upstream.map(Box::new),
        scratch: Some(scratch.clone()),
        stopped: false,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(spawned);
        }
        let exited = matches!(spawned.child.try_wait(), Ok(Some(_)));
        if exited || Instant::now() > deadline {
            let log =
                std::fs::read_to_string(scratch.join("logs").join("error.log")).unwrap_or_default();
            spawned.shutdown();
            return Err(SpawnError::NotListening {
                target: launch.target,
                detail: format!("error.log: {log}"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How an nginx target listens.
#[derive(Debug, Clone, Copy)]
pub struct Listen<'a> {
    /// The loopback port.
    pub port: u16,
    /// The certificate chain and key, for HTTPS.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// HTTP/2 on the listener (h2c without TLS).
    pub http2: bool,
    /// Worker processes.
    pub workers: usize,
}

/// Fills a template's `{{PREFIX}}`, `{{PORT}}`, `{{LISTEN}}` (the listen parameters: `ssl`,
/// `http2`), `{{TLS}}` (the certificate directives), `{{WORKERS}}` and
/// `{{WORKER_CONNECTIONS}}`; the caller
/// fills the rest (`{{MODULE}}`, `{{UPSTREAM}}`).
pub fn render_nginx(
    template: &str,
    prefix: &Path,
    listen: &Listen<'_>,
    connections: usize,
) -> String {
    // Each worker may end up with every connection (accept is not balanced), and each client
    // connection is one fd (two behind a proxy: its upstream connection); leave room for the
    // publisher and listeners.
    let worker_connections = (2 * connections + 1024).max(4096);
    let mut params = String::new();
    if listen.tls.is_some() {
        params.push_str(" ssl");
    }
    if listen.http2 {
        params.push_str(" http2");
    }
    let tls = match listen.tls {
        Some((cert, key)) => format!(
            "ssl_certificate {}; ssl_certificate_key {};",
            cert.display(),
            key.display()
        ),
        None => "# plain HTTP".to_owned(),
    };
    template
        .replace("{{PREFIX}}", &prefix.display().to_string())
        .replace("{{PORT}}", &listen.port.to_string())
        .replace("{{LISTEN}}", &params)
        .replace("{{TLS}}", &tls)
        .replace("{{WORKERS}}", &listen.workers.to_string())
        .replace("{{WORKER_CONNECTIONS}}", &worker_connections.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines() {
        assert_eq!(
            listening_addr("sluice listening on http://127.0.0.1:4000 (2 workers)"),
            Some(SocketAddr::from(([127, 0, 0, 1], 4000)))
        );
        assert_eq!(
            listening_addr("express baseline listening on http://127.0.0.1:39999/"),
            Some(SocketAddr::from(([127, 0, 0, 1], 39999)))
        );
        assert_eq!(listening_addr("starting"), None);
    }

    #[test]
    fn the_shipped_template_renders_completely() {
        let template =
            std::fs::read_to_string(default_baselines().join("nchan/nginx.conf.template"))
                .expect("the template ships with the crate");
        let listen = Listen {
            port: 4321,
            tls: None,
            http2: false,
            workers: 1,
        };
        let config = render_nginx(&template, Path::new("/tmp/x"), &listen, 9000)
            .replace("{{MODULE}}", "/m.so");
        let unfilled = config
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .any(|line| line.contains("{{"));
        assert!(!unfilled, "{config}");
        assert!(config.contains("listen 127.0.0.1:4321"));
        assert!(config.contains("load_module /m.so;"));
        assert!(config.contains("worker_connections 19024;"));
        assert!(config.contains("worker_processes 1;"), "{config}");
    }

    #[test]
    fn the_proxy_template_renders_with_tls_and_http2() {
        let template =
            std::fs::read_to_string(default_baselines().join("nginx-proxy/nginx.conf.template"))
                .expect("the template ships with the crate");
        let listen = Listen {
            port: 4321,
            tls: Some((Path::new("/c.pem"), Path::new("/k.pem"))),
            http2: true,
            workers: 2,
        };
        let config = render_nginx(&template, Path::new("/tmp/x"), &listen, 100)
            .replace("{{UPSTREAM}}", "127.0.0.1:9");
        let unfilled = config
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .any(|line| line.contains("{{"));
        assert!(!unfilled, "{config}");
        assert!(
            config.contains("listen 127.0.0.1:4321 ssl http2"),
            "{config}"
        );
        assert!(config.contains("ssl_certificate /c.pem;"), "{config}");
        assert!(config.contains("server 127.0.0.1:9"), "{config}");
        assert!(config.contains("proxy_buffering off;"), "{config}");
        assert!(config.contains("worker_processes 2;"), "{config}");
    }

    #[test]
    fn a_missing_server_binary_is_explained() {
        let mut launch = Launch::new(Target::Sluice, 10);
        launch.server_bin = Some(PathBuf::from("/nonexistent/sluice"));
        let error = Spawned::start(&launch).expect_err("no such binary");
        assert!(
            error.to_string().contains("cargo build --release"),
            "{error}"
        );
    }
}
