//! What the benches that drive the real `sluice` binary share (`idle_memory`, `e2e_fanout`):
//! starting and stopping the server, reading its memory and CPU time from `/proc`, opening raw
//! SSE streams over loopback, and reading the few options a bench takes.
//!
//! These benches measure the shipped binary, not an in-process mock, because the figures they
//! report (RSS per idle stream, deliveries per second over real sockets) depend on everything the
//! binary links: hyper's buffers, tokio's I/O driver, the allocator. No timing here: each bench
//! owns its own measurement loop.

// Each bench uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// The request that opens an event stream, as an EventSource would send it (minus cookies).
pub const OPEN_STREAM: &[u8] =
    b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";

/// Streams opened from one source address before moving to the next (127.0.0.2, .3, ...): stays
/// well inside the 28k ephemeral ports of one address even with TIME_WAIT left by a previous run.
pub const STREAMS_PER_SOURCE: usize = 5_000;

/// The command line of a bench, after cargo's own arguments.
///
/// `cargo bench --bench NAME -- --tiers 1000,9000` passes `--tiers 1000,9000 --bench`; `cargo
/// test --benches` runs the same binary without `--bench`, which the benches take as "smoke test:
/// smallest sizes, shortest times".
pub struct Options {
    args: Vec<String>,
}

impl Options {
    /// Reads the process arguments.
    pub fn from_env() -> Self {
        Options {
            args: std::env::args().skip(1).collect(),
        }
    }

    /// Whether cargo runs this as a benchmark (`cargo bench`) rather than as a test.
    pub fn is_bench(&self) -> bool {
        self.args.iter().any(|a| a == "--bench")
    }

    /// `--name VALUE` or `--name=VALUE`, else the environment variable `env`.
    pub fn value(&self, name: &str, env: &str) -> Option<String> {
        self.all(name)
            .pop()
            .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
    }

    /// Every value given for a repeatable option.
    pub fn all(&self, name: &str) -> Vec<String> {
        let flag = format!("--{name}");
        let prefix = format!("--{name}=");
        let mut out = Vec::new();
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if *arg == flag {
                if let Some(value) = args.next() {
                    out.push(value.clone());
                }
            } else if let Some(value) = arg.strip_prefix(&prefix) {
                out.push(value.to_owned());
            }
        }
        out
    }

    /// A comma-separated list of counts (`1000,9000` or `1k,9k`), or `default`.
    pub fn counts(&self, name: &str, env: &str, default: &[usize]) -> Vec<usize> {
        match self.value(name, env) {
            Some(text) => text
                .split(',')
                .map(|t| parse_count(t).unwrap_or_else(|| panic!("--{name}: bad count '{t}'")))
                .collect(),
            None => default.to_vec(),
        }
    }

    /// A number of seconds (fractions allowed), or `default`.
    pub fn seconds(&self, name: &str, env: &str, default: f64) -> Duration {
        let secs = self.value(name, env).map_or(default, |t| {
            t.parse()
                .unwrap_or_else(|_| panic!("--{name}: bad seconds '{t}'"))
        });
        Duration::from_secs_f64(secs)
    }

    /// The server binary: `--bin PATH`, `SLUICE_BIN`, or the one cargo built for this bench.
    pub fn server_bin(&self) -> PathBuf {
        self.value("bin", "SLUICE_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
            PathBuf::from,
        )
    }
}

/// Parses `1000`, `1k` or `18K`.
pub fn parse_count(text: &str) -> Option<usize> {
    let text = text.trim();
    match text.strip_suffix(['k', 'K']) {
        Some(thousands) => thousands.parse::<usize>().ok()?.checked_mul(1000),
        None => text.parse().ok(),
    }
}

/// Raises this process's open-file soft limit to the hard limit; returns the new soft limit.
/// Children inherit it, so the server started afterwards gets it too (it raises nothing itself).
pub fn raise_nofile_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).expect("setrlimit(RLIMIT_NOFILE) failed")
}

/// A running `sluice` process, killed (by its PID) when dropped.
pub struct Server {
    child: Child,
    /// Kept open so the server never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The banner line, e.g. `sluice listening on http://127.0.0.1:40123 (2 workers)`.
    pub banner: String,
}

impl Server {
    /// Starts `bin --listen 127.0.0.1:0 ARGS...` and waits for its banner.
    pub fn start(bin: &std::path::Path, args: &[String]) -> io::Result<Server> {
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env(
                "SLUICE_LOG",
                std::env::var("SLUICE_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut stdout = BufReader::new(stdout);
        let mut banner = String::new();
        stdout.read_line(&mut banner)?;
        let banner = banner.trim().to_owned();
        let addr = banner
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("unexpected banner: {banner:?}")));
        };
        Ok(Server {
            child,
            _stdout: stdout,
            addr,
            banner,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now.
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    /// User and system CPU time the server has used so far.
    pub fn cpu(&self) -> (Duration, Duration) {
        cpu_split(self.pid())
    }

    /// `GET path` on a fresh connection; the response body.
    pub fn get(&self, path: &str) -> io::Result<String> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, body)| body.to_owned()))
    }

    /// Open streams per worker, from `/stats`.
    pub fn connections_per_worker(&self) -> Vec<u64> {
        let Ok(body) = self.get("/stats") else {
            return Vec::new();
        };
        let Ok(stats) = serde_json::from_str::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        stats["workers"]
            .as_array()
            .map(|workers| {
                workers
                    .iter()
                    .map(|w| w["connections"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the server (SIGKILL to its PID) and reaps it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// `VmRSS`: every resident page (anonymous, file-backed, shared), in KiB.
    pub rss_kb: u64,
    /// `RssAnon`: resident anonymous pages (the heap and stacks), in KiB.
    pub anon_kb: u64,
}

impl Memory {
    /// Reads the figures of `pid` (zeros if the process is gone).
    pub fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kb: field("VmRSS:"),
            anon_kb: field("RssAnon:"),
        }
    }
}

/// User + system CPU time of `pid` (`utime` + `stime` in `/proc/<pid>/stat`).
pub fn cpu_time(pid: u32) -> Duration {
    let (user, system) = cpu_split(pid);
    user + system
}

/// User and system CPU time of `pid`, separately (`utime`, `stime` in `/proc/<pid>/stat`).
pub fn cpu_split(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may contain spaces: count fields after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // After ')': state is field 3 of the man page, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let seconds = |t: u64| Duration::from_secs_f64(t as f64 / clock_ticks_per_second() as f64);
    (seconds(ticks(11)), seconds(ticks(12)))
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` (no libc here); 100 on every Linux we know.
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Pages the kernel has allocated to TCP socket buffers system-wide (`mem` in
/// `/proc/net/sockstat`): memory that streams cost and that no process's RSS shows.
pub fn tcp_buffer_pages() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// Kernel slab memory system-wide (`Slab` in `/proc/meminfo`), in KiB: where socket structures
/// (`tcp_sock`, the file and its dentry, epoll items) live, outside every process's RSS.
pub fn kernel_slab_kb() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The source address of the `index`-th client connection. Each run picks a random
/// 127.A.B.0/24 block (so the TIME_WAIT ports a previous run left behind are never in the way)
/// and moves to the next address after [`STREAMS_PER_SOURCE`] streams.
pub fn source_for(index: usize) -> Ipv4Addr {
    static BLOCK: std::sync::OnceLock<(u8, u8)> = std::sync::OnceLock::new();
    let (a, b) = *BLOCK.get_or_init(|| (fastrand::u8(1..=254), fastrand::u8(0..=255)));
    let step = u8::try_from(index / STREAMS_PER_SOURCE).expect("fewer than 250 source addresses");
    Ipv4Addr::new(127, a, b, 2 + step)
}

/// Opens an event stream from `source` and waits for its `event: connected` frame. Returns the
/// blocking socket, positioned after that frame.
pub fn open_stream(server: SocketAddr, source: Ipv4Addr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(10))?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(OPEN_STREAM)?;
    let mut seen = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            let text = String::from_utf8_lossy(&seen).into_owned();
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream closed before its first frame: {text:?}"),
            ));
        }
        seen.extend_from_slice(&buf[..n]);
        if let Some(at) = find(&seen, b"event: connected") {
            if find(&seen[at..], b"\n\n").is_some() {
                return Ok(stream);
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no connected frame",
            ));
        }
    }
}

/// The first position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Formats a count with thousands separators (`1 234 567`), for tables.
pub fn grouped(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    let groups: Vec<String> = digits
        .rchunks(3)
        .rev()
        .map(|group| group.iter().collect())
        .collect();
    groups.join(" ")
}

/// The machine, for the header of a results table.
pub fn machine_summary() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {model}, Linux {}", kernel.trim())
}
