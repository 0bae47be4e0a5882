//! The browser side of the harness: checks the prerequisites (Debian's `chromium`, Node, the
//! npm packages of `tests/browser/`), starts the server and runs one Node script from
//! `tests/browser/` against it with a time limit, reporting the script's output. The scripts own
//! what is clicked and checked (playwright-core driving headless Chromium) and write screenshots
//! into `<target>/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::process::{drain, terminate, wait_until};
use super::Server;

/// The browser the scripts launch (the `CHROMIUM` variable overrides it, for both).
const CHROMIUM: &str = "/usr/bin/chromium";

/// The backstop on one script. Each script gives up on its own after 50 s; a healthy run takes
/// well under 15 s.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(75);

/// Starts `sluice --listen 127.0.0.1:0 <server_args>`, runs `node <script> <base-url>
/// <screenshot-dir>` in `tests/browser/` and panics with the script's output unless it succeeds.
pub fn run_script(script: &str, server_args: &[&str]) {
    let server = Server::spawn(server_args);
    run_script_against(script, &server.url(""));
    drop(server);
}

/// Runs `node <script> <base> <screenshot-dir>` against a server the caller keeps running.
pub fn run_script_against(script: &str, base: &str) {
    Script::start(script, base, &[]).finish();
}

/// A Node script of `tests/browser/` running against a server the test owns (and may restart).
pub struct Script {
    name: String,
    base: String,
    screenshots: PathBuf,
    child: Child,
    started: Instant,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Script {
    /// Runs `node <script> <base> <screenshot-dir> <extra...>` in `tests/browser/`.
    pub fn start(script: &str, base: &str, extra: &[&str]) -> Script {
        let dir = check_prerequisites();
        let screenshots = screenshot_dir();
        let mut child = Command::new("node")
            .arg(script)
            .arg(base)
            .arg(&screenshots)
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node (checked above)");
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Script {
            name: script.to_owned(),
            base: base.to_owned(),
            screenshots,
            child,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }

    /// Waits until the script creates `path` (its way of saying it reached a step). Should it
    /// exit first, or not get there within the backstop, this fails with its output.
    pub fn wait_for_file(mut self, path: &Path) -> Script {
        while !path.exists() {
            let running = matches!(self.child.try_wait(), Ok(None));
            if !running || self.started.elapsed() > SCRIPT_TIMEOUT {
                let name = self.name.clone();
                self.finish();
                panic!("{name} ended without creating {}", path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self
    }

    /// Waits for the script to end (stopping it past the backstop) and panics with its output
    /// unless it succeeded.
    pub fn finish(self) {
        let Script {
            name,
            base,
            screenshots,
            mut child,
            started,
            stdout,
            stderr,
        } = self;
        // Past the backstop, SIGTERM lets playwright close its browser; then SIGKILL.
        let status = match wait_until(&mut child, started + SCRIPT_TIMEOUT) {
            Some(status) => Some(status),
            None => {
                terminate(&mut child, Duration::from_secs(5));
                None
            }
        };
        let elapsed = started.elapsed();
        let stdout = stdout.join().expect("stdout reader");
        let stderr = stderr.join().expect("stderr reader");
        match status {
            Some(status) if status.success() => {
                println!("{name} passed in {elapsed:.1?} against {base}\n{stdout}{stderr}");
            }
            Some(status) => panic!(
                "{name} failed ({status}) after {elapsed:.1?} against {base}\n\
                 --- stdout ---\n{stdout}--- stderr ---\n{stderr}\n\
                 screenshots, if any: {}",
                screenshots.display()
            ),
            None => panic!(
                "{name} did not finish within {SCRIPT_TIMEOUT:?} (stopped)\n\
                 --- stdout ---\n{stdout}--- stderr ---\n{stderr}"
            ),
        }
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
