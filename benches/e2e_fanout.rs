//! End-to-end fan-out through the real binary at saturation: N open event streams (1k by
//! default) read by this process, and publishers POSTing `/api/notify` over several keep-alive
//! connections as fast as the system takes them. Reports events published per second, frames
//! delivered per second (counted by the readers, off the wire), and the server's CPU time per
//! delivery (`utime + stime` from `/proc/<pid>/stat`).
//!
//! Why: this is the number the design is for (one publish, N socket writes), and it includes
//! everything the in-process benches leave out: HTTP parsing, syscalls, the kernel's loopback.
//! Client and server share the machine's cores (2 here), so the table shows both processes' CPU
//! use: the readers parsing N sockets cost a large share, and deliveries/s is a floor for what the
//! server alone could do. Server CPU per delivery is the figure that carries to other machines.
//!
//! Saturation without shedding: publishers pause while more than `--window` events (128) are
//! published but not yet read by the average stream, which keeps queues below their capacity
//! (256), so the server never evicts a stream for being slow (the table reports evictions;
//! `--window 0` removes the limit and shows the shedding instead).
//!
//! How many publishes are in flight decides the figure: with few publisher connections each event
//! reaches each stream in its own write, with many, several events wait in a stream's queue and
//! leave joined in one write, so CPU per delivery falls and deliveries/s rise at the price of
//! queueing delay (`lag ms`). The default run sweeps 4, 32 and 128 publisher connections.
//!
//! ```text
//! cargo bench --bench e2e_fanout                          # 1k streams; 4, 32, 128 publishers
//! cargo bench --bench e2e_fanout -- --streams 1k,9k --secs 10 --publishers 32 --window 64
//! ```
//!
//! Cluster: `--broker redis://127.0.0.1:6399/0 --nodes 1,2` starts that many nodes on the broker,
//! spreads the streams over them and publishes to the first (the `emb` rows are the embedded hub).
//!
//! Options (or environment): `--streams` (`SLUICE_BENCH_STREAMS`), `--secs`
//! (`SLUICE_BENCH_SECS`, measured time after a 1 s warm-up), `--publishers` (a list),
//! `--window`,
//! `--bin` (`SLUICE_BIN`), `--server-arg` (repeatable). Run without `--bench` (as `cargo test
//! --benches` does) it is a smoke test with 20 streams for half a second.

mod support;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{
    cpu_time, grouped, machine_summary, open_stream, raise_nofile_limit, source_for, Options,
    Server,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The message every publish carries; the server wraps it with a timestamp.
const MESSAGE: &str = "New order #12345 received";

/// Bytes a reader takes per `read`: several joined frames fit.
const READ_BUF: usize = 8 * 1024;

/// Counters shared by the reader and publisher threads.
#[derive(Default)]
struct Counters {
    /// Event frames read off all streams.
    delivered: AtomicU64,
    /// Publishes sent (answered or not): what the window counts, so that concurrent publishers
    /// cannot overshoot it together.
    sent: AtomicU64,
    /// Publishes answered 200.
    published: AtomicU64,
    /// Publishes answered otherwise (503 when a shard inbox is full).
    refused: AtomicU64,
    /// Streams that ended (evicted as slow, or closed).
    ended: AtomicU64,
    /// Tells publishers to stop.
    stop: AtomicBool,
}

/// One measurement's settings.
struct Plan {
    streams: Vec<usize>,
    secs: Duration,
    warmup: Duration,
    publishers: Vec<usize>,
    window: u64,
    /// Node counts to run (with `broker`): 1, 2, ...
    nodes: Vec<usize>,
    /// A Redis URL every node gets as `--broker`; none: the embedded hub.
    broker: Option<String>,
}

fn main() {
    let options = Options::from_env();
    let full = options.is_bench();
    let plan = Plan {
        streams: options.counts(
            "streams",
            "SLUICE_BENCH_STREAMS",
            if full { &[1_000] } else { &[20] },
        ),
        secs: options.seconds("secs", "SLUICE_BENCH_SECS", if full { 5.0 } else { 0.5 }),
        warmup: Duration::from_secs_f64(if full { 1.0 } else { 0.2 }),
        publishers: options.counts(
            "publishers",
            "SLUICE_BENCH_PUBLISHERS",
            if full { &[4, 32, 128] } else { &[4] },
        ),
        window: options
            .value("window", "SLUICE_BENCH_WINDOW")
            .map_or(128, |t| t.parse().expect("--window: a number")),
        nodes: options.counts("nodes", "SLUICE_BENCH_NODES", &[1]),
        broker: options.value("broker", "SLUICE_BENCH_BROKER"),
    };
    if plan.broker.is_none() && plan.nodes.iter().any(|&n| n > 1) {
        eprintln!("e2e_fanout: --nodes above 1 needs --broker redis://host:port/db");
        std::process::exit(64);
    }
    let limit = raise_nofile_limit();
    let bin = options.server_bin();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("e2e_fanout: {}", machine_summary());
    println!(
        "server: {}; window {} events; {:?} measured after {:?} warm-up; client and server \
         share the {cores} cores",
        bin.display(),
        if plan.window == 0 {
            "unlimited".to_owned()
        } else {
            plan.window.to_string()
        },
        plan.secs,
        plan.warmup
    );
    if let Some(broker) = &plan.broker {
        println!("nodes share the broker {broker}; streams are spread over the nodes round-robin, publishers post to the first node");
    }
    println!(
        "{:>5} {:>8} {:>5} {:>10} {:>13} {:>6} {:>12} {:>7} {:>12} {:>12} {:>8} {:>8} {:>6}",
        "nodes",
        "streams",
        "pubs",
        "events/s",
        "deliveries/s",
        "lag ms",
        "server ns/dl",
        "kernel",
        "server cores",
        "client cores",
        "evicted",
        "refused",
        "ended"
    );
    for &streams in &plan.streams {
        if streams as u64 + 200 > limit {
            eprintln!("e2e_fanout: {streams} streams exceed the descriptor limit of {limit}");
            continue;
        }
        let mut server_args = vec![
            format!("--max-connections={}", streams + 100),
            // No heartbeats during the run: every frame counted is an event.
            "--heartbeat-interval=1h".to_owned(),
        ];
        server_args.extend(options.all("server-arg"));
        if let Some(broker) = &plan.broker {
            server_args.push(format!("--broker={broker}"));
        }
        for &nodes in &plan.nodes {
            for &publishers in &plan.publishers {
                match run(&bin, &server_args, nodes, streams, publishers, &plan) {
                    Ok(row) => println!("{row}"),
                    Err(error) => eprintln!("e2e_fanout: {streams} streams: {error}"),
                }
            }
        }
    }
    println!(
        "deliveries/s = event frames read by the clients per second; server ns/dl = server CPU \
         time (user+system, all nodes; Redis not included) per delivery; kernel = the system share of that time (socket \
         writes); cores = CPU seconds per second of each process; lag ms = events published but \
         not yet read by the average stream at the end, in milliseconds of publishing: the \
         queueing delay that buys the batching."
    );
}

/// One tier: start a server, open the streams, publish for the warm-up and the measured time.
fn run(
    bin: &std::path::Path,
    server_args: &[String],
    nodes: usize,
    streams: usize,
    publishers: usize,
    plan: &Plan,
) -> io::Result<String> {
    let servers = (0..nodes.max(1))
        .map(|_| Server::start(bin, server_args))
        .collect::<io::Result<Vec<_>>>()?;
    let mut sockets = Vec::with_capacity(streams);
    for index in 0..streams {
        let server = &servers[index % servers.len()];
        let socket = open_stream(server.addr, source_for(index))?;
        socket.set_nonblocking(true)?;
        sockets.push(socket);
    }
    let counters = Arc::new(Counters::default());

    let readers = {
        let counters = counters.clone();
        std::thread::Builder::new()
            .name("e2e-readers".into())
            .spawn(move || read_all(sockets, &counters))?
    };
    let publisher_thread = {
        let counters = counters.clone();
        let addr = servers[0].addr;
        let (count, window) = (publishers, plan.window);
        std::thread::Builder::new()
            .name("e2e-publishers".into())
            .spawn(move || publish_all(addr, count, window, streams as u64, &counters))?
    };

    std::thread::sleep(plan.warmup);
    let start = Snapshot::take(&servers, &counters);
    std::thread::sleep(plan.secs);
    let end = Snapshot::take(&servers, &counters);

    counters.stop.store(true, Ordering::Release);
    let publish_result = publisher_thread.join().expect("publisher thread");
    let evicted = servers.iter().map(server_evictions).sum::<Option<u64>>();
    // Ends every stream, which ends the readers.
    for server in servers {
        server.stop();
    }
    readers.join().expect("reader thread");
    publish_result?;

    let secs = (end.at - start.at).as_secs_f64();
    let delivered = end.delivered - start.delivered;
    let published = end.published - start.published;
    let server_user = (end.server_user - start.server_user).as_secs_f64();
    let server_system = (end.server_system - start.server_system).as_secs_f64();
    let server_cpu = server_user + server_system;
    let client_cpu = (end.client_cpu - start.client_cpu).as_secs_f64();
    let events_per_s = published as f64 / secs;
    Ok(format!(
        "{:>5} {:>8} {:>5} {:>10} {:>13} {:>6.1} {:>12.0} {:>6.0}% {:>12.2} {:>12.2} {:>8} {:>8} {:>6}",
        if plan.broker.is_some() {
            nodes.to_string()
        } else {
            "emb".to_owned()
        },
        grouped(streams as u64),
        publishers,
        grouped(events_per_s as u64),
        grouped((delivered as f64 / secs) as u64),
        end.lag(streams) * 1e3 / events_per_s.max(1.0),
        if delivered == 0 {
            f64::NAN
        } else {
            server_cpu * 1e9 / delivered as f64
        },
        100.0 * server_system / server_cpu.max(f64::MIN_POSITIVE),
        server_cpu / secs,
        client_cpu / secs,
        evicted.map_or("n/a".to_owned(), |n| n.to_string()),
        counters.refused.load(Ordering::Relaxed),
        counters.ended.load(Ordering::Relaxed),
    ))
}

/// Counters and CPU times at one instant.
struct Snapshot {
    at: Instant,
    delivered: u64,
    published: u64,
    server_user: Duration,
    server_system: Duration,
    client_cpu: Duration,
}

impl Snapshot {
    /// Events published but not yet read by the average stream.
    fn lag(&self, streams: usize) -> f64 {
        self.published as f64 - self.delivered as f64 / streams.max(1) as f64
    }

    fn take(servers: &[Server], counters: &Counters) -> Snapshot {
        let (server_user, server_system) = servers
            .iter()
            .map(Server::cpu)
            .fold((Duration::ZERO, Duration::ZERO), |(u, s), (du, ds)| {
                (u + du, s + ds)
            });
        Snapshot {
            at: Instant::now(),
            delivered: counters.delivered.load(Ordering::Acquire),
            published: counters.published.load(Ordering::Acquire),
            server_user,
            server_system,
            client_cpu: cpu_time(std::process::id()),
        }
    }
}

/// Streams the server disconnected as slow consumers, from `/stats`.
fn server_evictions(server: &Server) -> Option<u64> {
    let body = server.get("/stats").ok()?;
    let stats: serde_json::Value = serde_json::from_str(&body).ok()?;
    stats["slowConsumersDropped"].as_u64()
}

/// Reads every stream on one current-thread runtime until each ends, counting event frames.
fn read_all(sockets: Vec<std::net::TcpStream>, counters: &Arc<Counters>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for socket in sockets {
            let stream = TcpStream::from_std(socket).expect("register the socket");
            let counters = counters.clone();
            tasks.spawn(async move {
                read_stream(stream, &counters).await;
                counters.ended.fetch_add(1, Ordering::Relaxed);
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

/// Counts the frames of one stream: every frame ends with a blank line (`\n\n`), which nothing
/// else in the stream contains (chunk-size lines end in `\r\n`, and no frame starts with `\n`).
async fn read_stream(mut stream: TcpStream, counters: &Counters) {
    let mut buf = vec![0u8; READ_BUF];
    let mut last = 0u8;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let mut frames = u64::from(last == b'\n' && chunk[0] == b'\n');
        frames += chunk.windows(2).filter(|w| w == b"\n\n").count() as u64;
        last = chunk[n - 1];
        if frames > 0 {
            counters.delivered.fetch_add(frames, Ordering::Release);
        }
    }
}

/// Runs `count` publisher connections on one current-thread runtime until told to stop.
fn publish_all(
    addr: SocketAddr,
    count: usize,
    window: u64,
    streams: u64,
    counters: &Arc<Counters>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            let counters = counters.clone();
            tasks.spawn(async move { publish(addr, window, streams, &counters).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.map_err(io::Error::other)??;
        }
        Ok(())
    })
}

/// One keep-alive publisher connection: POST, read the answer, repeat.
async fn publish(
    addr: SocketAddr,
    window: u64,
    streams: u64,
    counters: &Counters,
) -> io::Result<()> {
    let body = format!(r#"{{"message":"{MESSAGE}"}}"#);
    let request = format!(
        "POST /api/notify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let mut response_body = Vec::new();
    while !counters.stop.load(Ordering::Acquire) {
        if window > 0 {
            // Streams the server cut off no longer read; averaging over the live ones keeps the
            // publishers going (the table reports the evictions, which void the row).
            let live = streams
                .saturating_sub(counters.ended.load(Ordering::Acquire))
                .max(1);
            let read = counters.delivered.load(Ordering::Acquire) / live;
            let sent = counters.sent.fetch_add(1, Ordering::AcqRel);
            if sent >= read + window {
                counters.sent.fetch_sub(1, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
        }
        stream.get_mut().write_all(request.as_bytes()).await?;
        // Status line, headers (only Content-Length matters), body.
        line.clear();
        stream.read_line(&mut line).await?;
        let ok = line.starts_with("HTTP/1.1 200");
        let mut length = 0usize;
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the publisher connection",
                ));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        response_body.resize(length, 0);
        stream.read_exact(&mut response_body).await?;
        if ok {
            counters.published.fetch_add(1, Ordering::Release);
        } else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
