//! Memory per idle event stream, measured on the real binary: start `sluice`, open N idle SSE
//! connections over loopback (raw TCP, each waits for its `event: connected` frame), and report
//! the growth of the server's resident memory (`VmRSS`, and `RssAnon` = heap and stacks) divided
//! by N, for tiers of 1k, 9k and 18k streams.
//!
//! Why: an SSE hub's capacity is mostly idle streams, so user-space bytes per stream decide how
//! many fit in a box. The figure depends on everything the binary links (hyper's per-connection
//! buffers, tokio's I/O registration, the task, the allocator), so only the shipped binary gives a
//! true number. Kernel socket buffers are outside any process's RSS; the table shows the system's
//! TCP buffer pages (`/proc/net/sockstat`) separately.
//!
//! Tiers are cumulative in one server process: a warm-up batch is opened first (so one-time
//! costs such as the first connection on each worker are not charged to streams), then the baseline
//! is read, then streams are added up to each tier. "KiB/stream" is (RSS - baseline) / streams;
//! "marginal" is the growth since the previous tier over the streams added since.
//!
//! ```text
//! cargo bench --bench idle_memory                            # 1k, 9k, 18k streams
//! cargo bench --bench idle_memory -- --tiers 1k,9k           # other tiers
//! cargo bench --bench idle_memory -- --bin /path/to/sluice --server-arg=--workers=1
//! MIMALLOC_PURGE_DELAY=0 cargo bench --bench idle_memory     # the server inherits MIMALLOC_*
//! ```
//!
//! Options (or environment): `--tiers` (`SLUICE_BENCH_TIERS`), `--warmup` (`SLUICE_BENCH_WARMUP`,
//! streams opened before the baseline), `--settle` (`SLUICE_BENCH_SETTLE`, seconds to wait
//! before each reading), `--bin` (`SLUICE_BIN`), `--server-arg` (repeatable). Run without
//! `--bench` (as `cargo test --benches` does) it is a smoke test with 50 streams. The client's and
//! the server's descriptor soft limit is raised to the hard limit (20,000 here), which caps the
//! largest tier at about 19,800 streams.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{
    grouped, kernel_slab_kb, machine_summary, open_stream, raise_nofile_limit, source_for,
    tcp_buffer_pages, Options, Server,
};

/// Descriptors the server and this client need besides one per stream (listeners, epoll, the
/// runtime, stdio, and the `/stats` requests).
const SPARE_FDS: u64 = 64;

fn main() {
    let options = Options::from_env();
    let full = options.is_bench();
    let tiers = options.counts(
        "tiers",
        "SLUICE_BENCH_TIERS",
        if full { &[1_000, 9_000, 18_000] } else { &[50] },
    );
    let warmup = options
        .value("warmup", "SLUICE_BENCH_WARMUP")
        .map_or(if full { 100 } else { 10 }, |t| {
            support::parse_count(&t).expect("--warmup: a count")
        });
    let settle = options.seconds(
        "settle",
        "SLUICE_BENCH_SETTLE",
        if full { 1.0 } else { 0.1 },
    );
    let bin = options.server_bin();
    let largest = tiers.iter().copied().max().unwrap_or(0) + warmup;

    let limit = raise_nofile_limit();
    if (largest as u64) + SPARE_FDS > limit {
        eprintln!(
            "idle_memory: {largest} streams need more than the descriptor limit of {limit}; \
             use smaller --tiers"
        );
        std::process::exit(2);
    }
    let mut server_args = vec![format!("--max-connections={}", largest + 1_000)];
    server_args.extend(options.all("server-arg"));
    let server = Server::start(&bin, &server_args).expect("cannot start sluice");

    println!("idle_memory: {}", machine_summary());
    println!("server: {} ({})", bin.display(), server.banner);
    println!("server args: {}", server_args.join(" "));
    let allocator_env: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MIMALLOC_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "allocator env: {}",
        if allocator_env.is_empty() {
            "(none)".to_owned()
        } else {
            allocator_env.join(" ")
        }
    );
    println!("descriptor limit: {limit}; warm-up streams: {warmup}; settle: {settle:?}");

    std::thread::sleep(settle);
    let start = server.memory();
    let mut streams: Vec<TcpStream> = Vec::with_capacity(largest);
    open_up_to(&server, &mut streams, warmup);
    std::thread::sleep(settle);
    let base = server.memory();
    let base_tcp = tcp_buffer_pages();
    let base_slab = kernel_slab_kb();
    println!(
        "RSS at start {} KiB (anon {} KiB); after {warmup} warm-up streams {} KiB (anon {} KiB)",
        start.rss_kb, start.anon_kb, base.rss_kb, base.anon_kb
    );
    println!();
    println!(
        "{:>8} {:>10} {:>10} {:>11} {:>11} {:>9} {:>10} {:>10} {:>7}",
        "streams",
        "RSS KiB",
        "anon KiB",
        "KiB/stream",
        "anon/stream",
        "marginal",
        "slab/strm",
        "tcpbuf/st",
        "open s"
    );
    let mut previous = (0usize, base);
    for &tier in &tiers {
        let began = Instant::now();
        open_up_to(&server, &mut streams, warmup + tier);
        let opened_in = began.elapsed();
        std::thread::sleep(settle);
        let now = server.memory();
        let per = |kb: u64, from: u64, n: usize| (kb as f64 - from as f64) / n.max(1) as f64;
        // sockstat counts 4 KiB pages.
        let buffers = match (base_tcp, tcp_buffer_pages()) {
            (Some(before), Some(after)) => format!("{:.2}", per(after * 4, before * 4, tier)),
            _ => "n/a".to_owned(),
        };
        let slab = match (base_slab, kernel_slab_kb()) {
            (Some(before), Some(after)) => format!("{:.2}", per(after, before, tier)),
            _ => "n/a".to_owned(),
        };
        println!(
            "{:>8} {:>10} {:>10} {:>11.2} {:>11.2} {:>9.2} {:>10} {:>10} {:>7.2}",
            grouped(tier as u64),
            now.rss_kb,
            now.anon_kb,
            per(now.rss_kb, base.rss_kb, tier),
            per(now.anon_kb, base.anon_kb, tier),
            per(now.rss_kb, previous.1.rss_kb, tier - previous.0),
            slab,
            buffers,
            opened_in.as_secs_f64(),
        );
        previous = (tier, now);
    }
    let per_worker = server.connections_per_worker();
    println!();
    println!("streams per worker (from /stats): {per_worker:?}");
    println!(
        "KiB/stream = (RSS - RSS after warm-up) / streams; marginal = growth since the previous \
         tier / streams added. Kernel memory is not in RSS: slab/strm (socket structures) and \
         tcpbuf/st (TCP buffer pages, /proc/net/sockstat) are system-wide growth per stream in \
         KiB, both ends of each loopback connection included, so only indicative."
    );
    // Server first: its side then holds the TIME_WAIT state, not this client's ports.
    server.stop();
    drop(streams);
}

/// Opens streams until `streams` holds `target` of them.
fn open_up_to(server: &Server, streams: &mut Vec<TcpStream>, target: usize) {
    while streams.len() < target {
        let index = streams.len();
        let stream = open_stream(server.addr, source_for(index))
            .unwrap_or_else(|e| panic!("opening stream {index}: {e}"));
        streams.push(stream);
    }
    // Every stream got its first frame, so the server has registered it; a short pause lets the
    // allocator's deferred work (mimalloc purges after a delay) settle before reading RSS.
    std::thread::sleep(Duration::from_millis(50));
}
