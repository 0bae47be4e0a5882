//! The server under test: the real `sluice` binary, spawned on `127.0.0.1:0`, its stderr kept and
//! printed when a test fails, stopped (SIGTERM, then SIGKILL) when dropped; and the JSON API and
//! `/stats` seen from outside, including [`Server::settle`], the one wait for "every worker has
//! applied every publish".
//!
//! Knows nothing of the server's internals: only its command line, its stdout line and the wire.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::process::{drain, terminate, wait_until};
use super::sse::RawClient;
use super::TIMEOUT;

/// How often the `/stats` waits poll.
const STATS_POLL: Duration = Duration::from_millis(10);

/// A running `sluice` process. Dropping it sends SIGTERM (then SIGKILL if it lingers), reaps
/// it and removes the files it was started with.
pub struct Server {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The worker count from the listening line.
    pub workers: usize,
    /// `http://addr`.
    pub base: String,
    /// A pooled API client (no proxy, every request bounded by [`TIMEOUT`]).
    pub http: reqwest::Client,
    stderr: Arc<Mutex<Vec<u8>>>,
    exit: Option<ExitStatus>,
    files: Vec<PathBuf>,
}

impl Server {
    /// Starts `sluice --listen 127.0.0.1:0 <args>` and waits for its listening line, nothing more.
    pub fn spawn(args: &[&str]) -> Server {
        Self::spawn_with_files(args, Vec::new())
    }

    /// Starts the server quiet: the metrics sampler publishes on its own (`metrics` channel),
    /// once shortly after start and then every `--metrics-interval`. So that ids move only when
    /// a test publishes, the interval is set to an hour (unless `args` set it) and this waits
    /// until the first sample has taken its id (the head's seq is past 0). A cluster node's
    /// samples are node-local and carry no id, so there is nothing to wait for there.
    pub async fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[]).await
    }

    /// Like [`Server::start`], with more settings given as their `SLUICE_*` environment
    /// variables. A binary built before a setting existed ignores the variable but refuses the
    /// flag, so a scenario that configures its new settings this way still runs against such a
    /// binary (see [`binary`]) and fails on the behaviour it checks, not at start-up.
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let sets_interval = args.iter().any(|a| a.starts_with("--metrics-interval"));
        let mut all: Vec<&str> = Vec::new();
        if !sets_interval {
            all.extend(["--metrics-interval", "1h"]);
        }
        all.extend_from_slice(args);
        let server = Server::spawn_with(&all, Vec::new(), "warn", env);
        if !sets_interval {
            server
                .wait_stats("the first metrics sample", |s| {
                    s.get("broker").is_some()
                        || s["lastEventId"].as_str().is_some_and(|id| seq_of(id) >= 1)
                })
                .await;
        }
        server
    }

    /// Like [`Server::spawn`], with `--jwt-public-key <a file holding pem>` first.
    pub fn spawn_with_public_key(pem: &str, args: &[&str]) -> Server {
        let path = temp_file("public.pem", pem.as_bytes());
        let path_text = path.to_str().expect("a UTF-8 temporary path").to_owned();
        let mut all = vec!["--jwt-public-key", path_text.as_str()];
        all.extend_from_slice(args);
        Self::spawn_with_files(&all, vec![path])
    }

    /// Runs `sluice --listen 127.0.0.1:0 <args>` expecting it to stop by itself (a start-up
    /// error) within [`TIMEOUT`]; returns its exit status and what it wrote to stderr. Panics,
    /// after stopping it, if it is still running then.
    pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
        let mut child = command(args, "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the sluice binary");
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let status = wait_until(&mut child, Instant::now() + TIMEOUT);
        if status.is_none() {
            terminate(&mut child, Duration::from_secs(5));
        }
        let stderr = stderr.join().expect("stderr reader");
        let status =
            status.unwrap_or_else(|| panic!("sluice {args:?} did not exit; stderr:\n{stderr}"));
        (status, stderr)
    }

    /// Like [`Server::spawn`], with `SLUICE_LOG` set to `filter` (what [`Server::stderr`] holds).
    pub fn spawn_logging(args: &[&str], filter: &str) -> Server {
        Self::spawn_with(args, Vec::new(), filter, &[])
    }

    fn spawn_with_files(args: &[&str], files: Vec<PathBuf>) -> Server {
        Self::spawn_with(args, files, "warn", &[])
    }

    fn spawn_with(args: &[&str], files: Vec<PathBuf>, log: &str, env: &[(&str, &str)]) -> Server {
        let mut child = command(args, log)
            .envs(env.iter().copied())
            .spawn()
            .expect("spawn the sluice binary");

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading to EOF so the server can never block on a full stdout pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
                panic!("no listening line from sluice {args:?} ({error}); stderr:\n{log}");
            }
        };
        let (addr, workers) = parse_listening_line(&line)
            .unwrap_or_else(|| panic!("unexpected first line from sluice: {line:?}"));
        Server {
            child,
            addr,
            workers,
            base: format!("http://{addr}"),
            http: http(),
            stderr,
            exit: None,
            files,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) to the process with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg("-s")
            .arg(name)
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {} failed", self.pid());
    }

    /// Waits for the process to exit, polling; `None` if it is still running at the deadline.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on sluice");
        }
        self.exit
    }

    /// Resident memory of the process in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    // -----------------------------------------------------------------------------------------
    // Streams
    // -----------------------------------------------------------------------------------------

    /// Opens a stream as a browser's `EventSource` would (`Accept: text/event-stream`,
    /// `Cache-Control: no-cache`, plus `headers`) and reads the response head: a stream or a
    /// refusal, see [`RawClient::stream`] and [`RawClient::refused`].
    pub async fn open(&self, target: &str, headers: &[(&str, &str)]) -> RawClient {
        RawClient::open(self.addr, target, headers, None).await
    }

    /// Opens a stream that must succeed.
    pub async fn stream(&self, target: &str, headers: &[(&str, &str)]) -> RawClient {
        self.open(target, headers).await.stream()
    }

    // -----------------------------------------------------------------------------------------
    // The JSON API
    // -----------------------------------------------------------------------------------------

    /// A client that opens a new TCP connection for every request (so requests spread over the
    /// workers instead of riding one pooled connection).
    pub fn fresh_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .expect("a reqwest client")
    }

    /// `POST path` with a JSON body: status and decoded JSON answer (`Null` if not JSON).
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        post_json_with(&self.http, &self.base, path, body).await
    }

    /// [`Server::post_json`] with an `Idempotency-Key` header.
    pub async fn post_json_keyed(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` with a `text/plain` body.
    pub async fn post_text(&self, path_and_query: &str, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path_and_query))
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST text");
        let status = response.status().as_u16();
        let json = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, json)
    }

    /// `GET /healthz`: status and JSON answer.
    pub async fn health(&self) -> (u16, Value) {
        let response = self
            .http
            .get(self.url("/healthz"))
            .send()
            .await
            .expect("GET /healthz");
        let status = response.status().as_u16();
        (status, response.json().await.expect("healthz answers JSON"))
    }

    /// Publishes `data` on `channel` (`/api/publish`) and returns the answer, asserting success.
    pub async fn publish(&self, channel: &str, data: Value) -> Published {
        self.publish_body(&json!({ "channel": channel, "data": data }))
            .await
    }

    /// Publishes a full JSON body (`channel`, `event`, `data`), asserting success.
    pub async fn publish_body(&self, body: &Value) -> Published {
        let (status, answer) = self.post_json("/api/publish", body).await;
        assert_eq!(status, 200, "publish {body} answered {answer}");
        Published::from_answer(&answer)
    }

    /// `POST /api/notify` with `body` (`message`, optional `type`), asserting success; returns
    /// its `clients` count.
    pub async fn notify(&self, body: Value) -> u64 {
        let (status, answer) = self.post_json("/api/notify", &body).await;
        assert_eq!(status, 200, "POST /api/notify {body}: {answer}");
        assert_eq!(answer["success"], true, "{answer}");
        answer["clients"].as_u64().expect("numeric clients")
    }

    /// Sends a user notification, asserting success.
    pub async fn notify_user(&self, user: &str, message: Value) -> Published {
        let (status, answer) = self
            .post_json(
                &format!("/api/users/{user}/notify"),
                &json!({ "message": message }),
            )
            .await;
        assert_eq!(status, 200, "user notify answered {answer}");
        Published::from_answer(&answer)
    }

    // -----------------------------------------------------------------------------------------
    // /stats
    // -----------------------------------------------------------------------------------------

    /// `GET /stats` as JSON.
    pub async fn stats(&self) -> Value {
        let response = self
            .http
            .get(self.url("/stats"))
            .send()
            .await
            .expect("GET /stats");
        assert_eq!(response.status(), 200);
        response.json().await.expect("stats are JSON")
    }

    /// `GET /metrics/prometheus`: the text exposition.
    pub async fn prometheus(&self) -> String {
        let response = self
            .http
            .get(self.url("/metrics/prometheus"))
            .send()
            .await
            .expect("GET /metrics/prometheus");
        response.text().await.expect("the exposition is text")
    }

    /// The id of the last published event (`lastEventId` in `/stats`).
    pub async fn head(&self) -> String {
        self.stats().await["lastEventId"]
            .as_str()
            .expect("lastEventId")
            .to_owned()
    }

    /// Polls `/stats` until `condition` holds, within [`TIMEOUT`]; returns the stats that
    /// satisfied it. Panics with the last stats seen otherwise.
    pub async fn wait_stats(&self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        self.wait_stats_within(TIMEOUT, what, condition).await
    }

    /// [`Server::wait_stats`] with an explicit bound: the one `/stats` polling loop.
    pub async fn wait_stats_within(
        &self,
        within: Duration,
        what: &str,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let current = self.stats().await;
            if condition(&current) {
                return current;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; last /stats: {current:#}"
            );
            tokio::time::sleep(STATS_POLL).await;
        }
    }

    /// Waits until every worker has applied every publish it was handed (every inbox empty), so
    /// shard positions equal the last published id; returns those stats. Exact with one worker
    /// (the stats request runs on the shard's own thread).
    pub async fn settle(&self) -> Value {
        self.settle_and("every inbox drained", |_| true).await
    }

    /// [`Server::settle`] together with a further condition on the same stats (a cluster node's
    /// read position, for one).
    pub async fn settle_and(&self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        self.wait_stats(what, |s| inboxes_drained(s) && condition(s))
            .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            self.exit = terminate(&mut self.child, Duration::from_secs(5));
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        if std::thread::panicking() {
            eprintln!("--- sluice stderr ---\n{}", self.stderr());
        }
    }
}

/// The binary under test: this tree's `sluice`, or the one `SLUICE_TEST_BIN` names. The override
/// runs today's scenarios against another build, e.g. the tree before a fix, to show that a test
/// fails there (docs/benchmarks.md section 10 does this for `tests/abuse.rs`).
pub fn binary() -> PathBuf {
    std::env::var_os("SLUICE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sluice")))
}

/// `binary() --listen 127.0.0.1:0 <args>` with `SLUICE_LOG=<log>` and no other `SLUICE_*`
/// setting from the developer's shell, its pipes ready for [`Server`] to read.
fn command(args: &[&str], log: &str) -> Command {
    let mut command = Command::new(binary());
    if !args.contains(&"--listen") {
        command.arg("--listen").arg("127.0.0.1:0");
    }
    command
        .args(args)
        .env("SLUICE_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SLUICE_") && key != "SLUICE_LOG" {
            command.env_remove(key);
        }
    }
    command
}

/// A loopback port that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// `sluice listening on http[s]://127.0.0.1:PORT (N workers)` → (address, N).
fn parse_listening_line(line: &str) -> Option<(SocketAddr, usize)> {
    let rest = line
        .strip_prefix("sluice listening on http://")
        .or_else(|| line.strip_prefix("sluice listening on https://"))?;
    let (addr, rest) = rest.split_once(' ')?;
    let workers = rest.strip_prefix('(')?.strip_suffix(" workers)")?;
    Some((addr.parse().ok()?, workers.parse().ok()?))
}

/// Writes `contents` to a fresh file in the temporary directory.
pub fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "sluice-test-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).expect("write a temporary file");
    path
}

/// Whether every worker's inbox is empty in a stats document.
pub fn inboxes_drained(stats: &Value) -> bool {
    stats["workers"]
        .as_array()
        .is_some_and(|workers| workers.iter().all(|w| w["inboxDepth"] == 0))
}

/// The `totalConnections` figure of a stats document.
pub fn total_connections(stats: &Value) -> u64 {
    stats["totalConnections"]
        .as_u64()
        .expect("numeric totalConnections")
}

/// A reqwest client that ignores proxy settings and bounds every request by [`TIMEOUT`].
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .expect("build a reqwest client")
}

/// `POST base+path` with a JSON body using `client`: status and decoded JSON answer (`Null` if
/// not JSON).
pub async fn post_json_with(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let response = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    let json = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, json)
}

/// The answer to a publish.
#[derive(Debug, Clone)]
pub struct Published {
    /// The assigned event id.
    pub id: String,
    /// Its seq.
    pub seq: u64,
    /// Subscribers of the channel at publish time.
    pub clients: u64,
    /// The whole answer.
    pub answer: Value,
}

impl Published {
    fn from_answer(answer: &Value) -> Published {
        assert_eq!(answer["success"], true, "{answer}");
        let id = answer["id"]
            .as_str()
            .expect("id in publish answer")
            .to_owned();
        Published {
            seq: seq_of(&id),
            id,
            clients: answer["clients"].as_u64().expect("clients"),
            answer: answer.clone(),
        }
    }
}

/// The seq of an id `<epoch>-<seq>`.
pub fn seq_of(id: &str) -> u64 {
    id.rsplit_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or_else(|| panic!("not an event id: {id:?}"))
}

/// The epoch of an id `<epoch>-<seq>`.
pub fn epoch_of(id: &str) -> &str {
    id.rsplit_once('-')
        .map(|(epoch, _)| epoch)
        .unwrap_or_else(|| panic!("not an event id: {id:?}"))
}
