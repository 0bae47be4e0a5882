//! Real-browser tests of the two embedded pages, the dashboard (`GET /`) and the chat (`GET
//! /chat`), and of the three transports (EventSource, WebSocket, long polling) from a page: each
//! test starts the real `sluice` binary and runs one Node script from
//! `tests/browser/` against it, which drives Debian's headless Chromium with playwright-core.
//!
//! The scripts own the browser side (what is clicked and checked, screenshots into
//! `<target>/screenshots/`); this file only checks the prerequisites, starts the server, runs the
//! script with a time limit and reports its output. Missing prerequisites fail the test with the
//! command that installs them: a browser test that skips itself silently tests nothing.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The browser the scripts launch (the `CHROMIUM` variable overrides it, for both).
const CHROMIUM: &str = "/usr/bin/chromium";

/// The backstop on one script. Each script gives up on its own after 50 s; a healthy run takes
/// well under 15 s.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(75);

#[test]
fn dashboard_in_a_browser() {
    // A short interval, so the charts get several live samples within a second or two.
    run_script("dashboard.mjs", &["--metrics-interval", "250ms"]);
}

#[test]
fn chat_in_a_browser() {
    run_script("chat.mjs", &[]);
}

#[test]
fn sse_websocket_and_long_polling_in_a_browser() {
    run_script("transports.mjs", &["--workers", "2"]);
}

#[test]
fn ten_event_sources_over_https_and_http2_in_a_browser() {
    // A self-signed certificate for localhost; the script launches Chromium ignoring
    // certificate errors, which still negotiates TLS and ALPN as for a trusted one.
    let dir = std::env::temp_dir().join(format!("sluice-browser-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the certificate directory");
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .and_then(|params| params.self_signed(&key))
        .expect("a certificate");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write the certificate");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write the key");
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    let server = support::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let base = format!("https://localhost:{}", server.addr.port());
    run_script_against("h2streams.mjs", &base);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `sluice --listen 127.0.0.1:0 <server_args>`, runs `node <script> <base-url>
/// <screenshot-dir>` in `tests/browser/` and panics with the script's output unless it succeeds.
fn run_script(script: &str, server_args: &[&str]) {
    let server = support::start(server_args);
    let base = server.url("");
    run_script_against(script, &base);
    drop(server);
}

/// Runs `node <script> <base> <screenshot-dir>` against a server the caller keeps running.
fn run_script_against(script: &str, base: &str) {
    let dir = check_prerequisites();
    let screenshots = screenshot_dir();

    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(script)
        .arg(base)
        .arg(&screenshots)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node (checked above)");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_with_timeout(&mut child, SCRIPT_TIMEOUT);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let elapsed = started.elapsed();

    match status {
        Some(status) if status.success() => {
            println!("{script} passed in {elapsed:.1?} against {base}\n{stdout}{stderr}");
        }
        Some(status) => panic!(
            "{script} failed ({status}) after {elapsed:.1?} against {base}\n\
             --- stdout ---\n{stdout}--- stderr ---\n{stderr}\n\
             screenshots, if any: {}",
            screenshots.display()
        ),
        None => panic!(
            "{script} did not finish within {SCRIPT_TIMEOUT:?} (stopped)\n\
             --- stdout ---\n{stdout}--- stderr ---\n{stderr}"
        ),
    }
}

/// Fails with the install command for whichever prerequisite is missing; returns the scripts'
/// directory.
fn check_prerequisites() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium =
        std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
    assert!(
        chromium.is_file(),
        "the browser tests need Chromium at {}, which is missing.\n\
         Install it with: apt-get update && apt-get install -y chromium",
        chromium.display()
    );
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        node.is_ok_and(|status| status.success()),
        "the browser tests need Node.js 20 or newer (`node` on PATH), which is missing.\n\
         Install it with: apt-get update && apt-get install -y nodejs npm"
    );
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "the browser tests need playwright-core in {}/node_modules, which is missing.\n\
         Install it with: npm ci --prefix tests/browser   (from the repository root; it downloads \
         no browser)",
        dir.display()
    );
    dir
}

/// `<target>/screenshots`, next to the `tmp` directory cargo gives integration tests (so it
/// follows `CARGO_TARGET_DIR`).
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// Reads a pipe to its end on a thread, so the child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for the child; past `timeout`, sends it SIGTERM (playwright then closes its browser),
/// then SIGKILL if it lingers, and returns `None`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("poll the node process") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .arg("-s")
        .arg("TERM")
        .arg(child.id().to_string())
        .status();
    let grace = Instant::now() + Duration::from_secs(5);
    while Instant::now() < grace {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
