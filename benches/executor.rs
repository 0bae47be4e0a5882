//! What the per-core design buys over tokio's stock multi-thread runtime, side by side in one run
//! on one machine. Same subscriber count, same events, same queue capacity, same two worker
//! threads; every subscriber is a task that consumes its frames:
//!
//! - `sluice`: the real hub. Two OS threads, each a current-thread runtime + `LocalSet` owning
//!   half the subscribers in its [`Shard`]; a publish is one inbox message per shard
//!   ([`Hub::publish`]); each shard pushes into its subscribers' local bounded queues
//!   (`Rc<RefCell<VecDeque>>`, no atomics), and a subscriber takes every ready frame at once.
//! - `stock`: the common design. A tokio multi-thread runtime with two workers; each subscriber
//!   is a spawned task owning a bounded `tokio::sync::mpsc` receiver; the publisher walks a
//!   shared `Arc<RwLock<Vec<Sender>>>` and `try_send`s a clone of the frame to each.
//! - `stock+recv_many`: the same, with subscribers taking up to 64 frames per wake-up
//!   (`recv_many`), the stock design's best case for batching.
//!
//! The publisher is a task on the runtime (as an HTTP handler would be). A round is one burst of
//! events, and ends when every subscriber has taken every event of it. Two pacings:
//!
//! - `paced`: the publisher yields after each event (each publish is its own request, and the
//!   subscribers keep up event by event; no batching is possible);
//! - `burst`: the whole burst is published at once (a busy server: many publishes land between
//!   two polls of a subscriber, so a subscriber can take them together).
//!
//! The burst is smaller than the queue capacity, so nothing is ever dropped (the table shows
//! drops anyway). No sockets: this isolates scheduling, wake-ups and queues; the socket writes that
//! sluice's frame joining saves are not counted here (`e2e_fanout` counts them).
//!
//! Designs are run in interleaved passes (sluice, stock, stock+recv_many, sluice, ...), each pass
//! a fresh start of the design running warm-up + `--rounds` rounds in each pacing, so a noisy
//! neighbour hurts all of them alike. On a shared 2-core machine some passes run twice as slow
//! as others (another process takes a core), for every design; the table therefore reports the
//! best pass (lowest per-pass median round) as the headline, and the median over all rounds
//! beside it. Ratios are stock time / design time, measured in the same run.
//!
//! ```text
//! cargo bench --bench executor                                  # 1k and 10k subscribers
//! cargo bench --bench executor -- --subscribers 10k --events 200 --rounds 7 --passes 5
//! ```
//!
//! Run without `--bench` (as `cargo test --benches` does) it is a smoke test with 100
//! subscribers.

#[path = "support/hub.rs"]
mod hub_support;

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::hub::{Hub, Open, Recv, Shard, Subscription, Topic};
use sluice::sse::{Event, EventName};
use tokio::sync::mpsc;
use tokio::task::LocalSet;

/// The allocator the binary ships with (see `src/main.rs`), so allocation costs (the joined
/// chunks, the channels' blocks) are the ones a server pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Worker threads in both designs: one per core of the target machine.
const WORKERS: usize = 2;

/// Per-subscriber queue capacity in both designs (sluice's default `--channel-capacity`).
const CAPACITY: usize = sluice::config::DEFAULT_CHANNEL_CAPACITY;

/// Frames a stock subscriber takes per wake-up in the `recv_many` variant.
const RECV_MANY: usize = 64;

/// The options of one run.
struct Plan {
    subscribers: Vec<usize>,
    events: usize,
    rounds: usize,
    passes: usize,
}

impl Plan {
    fn from_args() -> Plan {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        let value = |name: &str| {
            let flag = format!("--{name}");
            args.iter()
                .position(|a| *a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let count = |text: &str| {
            let text = text.trim();
            match text.strip_suffix(['k', 'K']) {
                Some(k) => k.parse::<usize>().map(|k| k * 1000),
                None => text.parse(),
            }
            .unwrap_or_else(|_| panic!("not a count: {text}"))
        };
        let subscribers = value("subscribers").map_or_else(
            || {
                if full {
                    vec![1_000, 10_000]
                } else {
                    vec![100]
                }
            },
            |list| list.split(',').map(count).collect(),
        );
        let events = value("events").map_or(if full { 200 } else { 20 }, |t| count(&t));
        assert!(
            events < CAPACITY,
            "--events must stay below the queue capacity ({CAPACITY}) so nothing is dropped"
        );
        Plan {
            subscribers,
            events,
            rounds: value("rounds").map_or(if full { 7 } else { 2 }, |t| count(&t)),
            passes: value("passes").map_or(if full { 5 } else { 1 }, |t| count(&t)),
        }
    }
}

/// What the publisher is asked to do in one round.
#[derive(Debug, Clone, Copy)]
struct Burst {
    events: usize,
    /// Yield to the runtime after every event (each publish its own request, subscribers keep
    /// up event by event), or publish the whole burst at once (a busy server: many publishes
    /// land between two polls of a subscriber, which can then take them together).
    paced: bool,
}

/// Shared by the subscribers of one design: the last one to finish a round reports the time.
struct Finish {
    remaining: AtomicUsize,
    done: std_mpsc::Sender<Instant>,
}

/// A subscriber's progress: frames taken, and the total at which its current round is complete.
struct Progress {
    taken: u64,
    target: u64,
    per_round: u64,
    finish: Arc<Finish>,
}

impl Progress {
    fn new(per_round: usize, finish: Arc<Finish>) -> Progress {
        Progress {
            taken: 0,
            target: per_round as u64,
            per_round: per_round as u64,
            finish,
        }
    }

    fn took(&mut self, frames: u64) {
        self.taken += frames;
        if self.taken >= self.target {
            self.target += self.per_round;
            if self.finish.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _ = self.finish.done.send(Instant::now());
            }
        }
    }
}

/// One design, set up and idle, ready to run rounds.
trait Design {
    /// Publishes one burst and waits until every subscriber has taken it; the round's duration.
    fn round(&mut self, paced: bool) -> Duration;
    /// Frames dropped because a queue was full (should stay 0).
    fn dropped(&self) -> u64;
}

/// Runs one round: arms the finish line, asks the publisher for a burst, waits for the last
/// subscriber.
fn run_round(
    n: usize,
    finish: &Finish,
    done: &std_mpsc::Receiver<Instant>,
    publish: &mpsc::UnboundedSender<Burst>,
    burst: Burst,
) -> Duration {
    finish.remaining.store(n, Ordering::Release);
    let start = Instant::now();
    publish.send(burst).expect("the publisher is running");
    let end = done
        .recv_timeout(Duration::from_secs(120))
        .expect("every subscriber finishes the round");
    end - start
}

fn sample_frame() -> Bytes {
    let name = EventName::parse("notification").expect("a valid event name");
    Event {
        name: Some(&name),
        data: r#"{"message":"New order #12345 received","timestamp":"2024-05-01T12:34:56.789Z"}"#,
        ..Event::default()
    }
    .encode()
}

/// The sluice design, on the real hub.
struct Sluice {
    n: usize,
    events: usize,
    hub: Hub,
    finish: Arc<Finish>,
    done: std_mpsc::Receiver<Instant>,
    publish: mpsc::UnboundedSender<Burst>,
    trigger: Option<sluice::shutdown::Trigger>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Sluice {
    fn start(n: usize, events: usize, frame: &Bytes) -> Sluice {
        let (hub, inboxes) = hub_support::hub_with(WORKERS, n + 1);
        let (trigger, shutdown) = sluice::shutdown::channel();
        let (done_tx, done) = std_mpsc::channel();
        let finish = Arc::new(Finish {
            remaining: AtomicUsize::new(n),
            done: done_tx,
        });
        let (publish, publish_rx) = mpsc::unbounded_channel::<Burst>();
        let mut publish_rx = Some(publish_rx);
        let (ready_tx, ready) = std_mpsc::channel::<()>();
        let frame_len = frame.len() as u64;
        let mut workers = Vec::new();
        for inbox in inboxes {
            let index = inbox.index();
            let share = n / WORKERS + usize::from(index < n % WORKERS);
            let hub = hub.clone();
            let finish = finish.clone();
            let mut shutdown = shutdown.clone();
            let ready = ready_tx.clone();
            let publisher = publish_rx.take().map(|rx| (rx, frame.clone()));
            let worker = std::thread::Builder::new()
                .name(format!("sluice-bench-{index}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a current-thread runtime");
                    let local = LocalSet::new();
                    local.block_on(&runtime, async move {
                        let shard = Shard::new(&hub, inbox);
                        tokio::task::spawn_local(shard.clone().run(shutdown.clone()));
                        let topic = Topic::broadcast();
                        let parked = Rc::new(Cell::new(0usize));
                        for _ in 0..share {
                            let subscription = shard
                                .open(Open {
                                    topics: std::slice::from_ref(&topic),
                                    ..Open::default()
                                })
                                .expect("the limit is above n");
                            let progress = Progress::new(events, finish.clone());
                            tokio::task::spawn_local(consume_sluice(
                                subscription,
                                progress,
                                frame_len,
                                parked.clone(),
                            ));
                        }
                        if let Some((rx, frame)) = publisher {
                            tokio::task::spawn_local(publish_sluice(hub, topic, frame, rx));
                        }
                        // Every subscriber takes its opening frames and parks on its queue
                        // before the first round.
                        while parked.get() < share {
                            tokio::task::yield_now().await;
                        }
                        let _ = ready.send(());
                        shutdown.recv().await;
                    });
                })
                .expect("spawn a worker thread");
            workers.push(worker);
        }
        drop(ready_tx);
        for _ in 0..WORKERS {
            ready.recv().expect("workers start");
        }
        Sluice {
            n,
            events,
            hub,
            finish,
            done,
            publish,
            trigger: Some(trigger),
            workers,
        }
    }
}

async fn consume_sluice(
    mut subscription: Subscription,
    mut progress: Progress,
    frame_len: u64,
    parked: Rc<Cell<usize>>,
) {
    // The opening frames (`retry:` and `connected`) are queued at open and come as one chunk.
    if let Recv::Frames(opening) = std::future::poll_fn(|cx| subscription.poll_recv(cx)).await {
        black_box(opening);
    }
    parked.set(parked.get() + 1);
    while let Recv::Frames(bytes) = std::future::poll_fn(|cx| subscription.poll_recv(cx)).await {
        // Several ready frames arrive joined into one chunk of equal-sized frames.
        let frames = bytes.len() as u64 / frame_len;
        black_box(bytes);
        progress.took(frames);
    }
}

async fn publish_sluice(
    hub: Hub,
    topic: Topic,
    frame: Bytes,
    mut bursts: mpsc::UnboundedReceiver<Burst>,
) {
    let frame = sluice::hub::Frame::from_parts(frame, Bytes::new());
    while let Some(burst) = bursts.recv().await {
        for _ in 0..burst.events {
            // The pre-encoded frame, as the stock design sends; the hub still assigns the id
            // and keeps the event in its history, which is part of sluice's cost per event.
            hub.publish(&topic, |_seq, _id| frame.clone())
                .expect("the inboxes have room");
            if burst.paced {
                tokio::task::yield_now().await;
            }
        }
        tokio::task::yield_now().await;
    }
}

impl Design for Sluice {
    fn round(&mut self, paced: bool) -> Duration {
        let burst = Burst {
            events: self.events,
            paced,
        };
        run_round(self.n, &self.finish, &self.done, &self.publish, burst)
    }

    fn dropped(&self) -> u64 {
        self.hub.snapshot().slow_consumers_dropped
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(trigger) = self.trigger.take() {
            trigger.fire();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The stock design: a multi-thread runtime, an mpsc channel per subscriber, a shared sender list.
struct Stock {
    n: usize,
    events: usize,
    finish: Arc<Finish>,
    done: std_mpsc::Receiver<Instant>,
    publish: mpsc::UnboundedSender<Burst>,
    dropped: Arc<AtomicU64>,
    senders: Arc<RwLock<Vec<mpsc::Sender<Bytes>>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Stock {
    fn start(n: usize, events: usize, frame: &Bytes, batch: Option<usize>) -> Stock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .enable_all()
            .build()
            .expect("a multi-thread runtime");
        let (done_tx, done) = std_mpsc::channel();
        let finish = Arc::new(Finish {
            remaining: AtomicUsize::new(n),
            done: done_tx,
        });
        let senders = Arc::new(RwLock::new(Vec::with_capacity(n)));
        for _ in 0..n {
            let (tx, rx) = mpsc::channel::<Bytes>(CAPACITY);
            senders.write().expect("not poisoned").push(tx);
            let progress = Progress::new(events, finish.clone());
            match batch {
                None => runtime.spawn(consume_stock(rx, progress)),
                Some(limit) => runtime.spawn(consume_stock_many(rx, progress, limit)),
            };
        }
        let (publish, bursts) = mpsc::unbounded_channel::<Burst>();
        let dropped = Arc::new(AtomicU64::new(0));
        runtime.spawn(publish_stock(
            senders.clone(),
            frame.clone(),
            bursts,
            dropped.clone(),
        ));
        // Lets every subscriber park on its channel before the first round.
        runtime.block_on(async {
            for _ in 0..4 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Stock {
            n,
            events,
            finish,
            done,
            publish,
            dropped,
            senders,
            runtime: Some(runtime),
        }
    }
}

async fn consume_stock(mut rx: mpsc::Receiver<Bytes>, mut progress: Progress) {
    while let Some(frame) = rx.recv().await {
        black_box(frame);
        progress.took(1);
    }
}

async fn consume_stock_many(mut rx: mpsc::Receiver<Bytes>, mut progress: Progress, limit: usize) {
    let mut frames = Vec::with_capacity(limit);
    while rx.recv_many(&mut frames, limit).await > 0 {
        let count = frames.len() as u64;
        black_box(&frames);
        frames.clear();
        progress.took(count);
    }
}

async fn publish_stock(
    senders: Arc<RwLock<Vec<mpsc::Sender<Bytes>>>>,
    frame: Bytes,
    mut bursts: mpsc::UnboundedReceiver<Burst>,
    dropped: Arc<AtomicU64>,
) {
    while let Some(burst) = bursts.recv().await {
        for _ in 0..burst.events {
            {
                let list = senders.read().expect("not poisoned");
                for tx in list.iter() {
                    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(frame.clone()) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if burst.paced {
                tokio::task::yield_now().await;
            }
        }
        tokio::task::yield_now().await;
    }
}

impl Design for Stock {
    fn round(&mut self, paced: bool) -> Duration {
        let burst = Burst {
            events: self.events,
            paced,
        };
        run_round(self.n, &self.finish, &self.done, &self.publish, burst)
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Stock {
    fn drop(&mut self) {
        // Closing every channel ends every subscriber task.
        self.senders.write().expect("not poisoned").clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

/// How the publisher paces a burst: `paced` yields after every event, `burst` does not.
const MODES: [(&str, bool); 2] = [("paced", true), ("burst", false)];

/// The three designs compared.
const DESIGNS: [&str; 3] = ["sluice", "stock", "stock+recv_many"];

fn start(design: &str, n: usize, events: usize, frame: &Bytes) -> Box<dyn Design> {
    match design {
        "sluice" => Box::new(Sluice::start(n, events, frame)),
        "stock" => Box::new(Stock::start(n, events, frame, None)),
        _ => Box::new(Stock::start(n, events, frame, Some(RECV_MANY))),
    }
}

/// The rounds of one design in one mode, over every pass.
struct Summary {
    /// Median of all rounds of all passes.
    median: Duration,
    /// Lowest per-pass median: the design when it had the cores to itself.
    low: Duration,
}

impl Summary {
    fn of(passes: &[Vec<Duration>]) -> Summary {
        let median = |rounds: &[Duration]| {
            let mut sorted = rounds.to_vec();
            sorted.sort();
            sorted[sorted.len() / 2]
        };
        let all: Vec<Duration> = passes.iter().flatten().copied().collect();
        let per_pass: Vec<Duration> = passes.iter().map(|p| median(p)).collect();
        Summary {
            median: median(&all),
            low: per_pass.iter().copied().min().unwrap_or_default(),
        }
    }
}

fn main() {
    let plan = Plan::from_args();
    let frame = sample_frame();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "executor: {cores} cores, {WORKERS} worker threads per design, queue capacity {CAPACITY}, \
         {} events per round, {} rounds x {} interleaved passes, frame {} bytes",
        plan.events,
        plan.rounds,
        plan.passes,
        frame.len()
    );
    println!(
        "{:>11} {:>6} {:>16} {:>8} {:>9} {:>11} {:>13} {:>7} {:>9} {:>10}",
        "subscribers",
        "mode",
        "design",
        "best ms",
        "median ms",
        "events/s",
        "deliveries/s",
        "dropped",
        "vs stock",
        "(median)"
    );
    for &n in &plan.subscribers {
        // samples[mode][design][pass]: each started design runs its rounds in both modes.
        let mut samples = vec![vec![Vec::new(); DESIGNS.len()]; MODES.len()];
        let mut dropped = vec![0u64; DESIGNS.len()];
        for _ in 0..plan.passes {
            for (d, design) in DESIGNS.iter().enumerate() {
                let mut running = start(design, n, plan.events, &frame);
                for (m, &(_, paced)) in MODES.iter().enumerate() {
                    running.round(paced); // warm-up
                    let rounds: Vec<Duration> =
                        (0..plan.rounds).map(|_| running.round(paced)).collect();
                    samples[m][d].push(rounds);
                }
                dropped[d] += running.dropped();
            }
        }
        for (m, &(mode, _)) in MODES.iter().enumerate() {
            let stats: Vec<Summary> = samples[m].iter().map(|p| Summary::of(p)).collect();
            let stock = &stats[1];
            for (d, design) in DESIGNS.iter().enumerate() {
                let best = stats[d].low.as_secs_f64();
                let median = stats[d].median.as_secs_f64();
                let events_per_s = plan.events as f64 / best;
                println!(
                    "{:>11} {:>6} {:>16} {:>8.2} {:>9.2} {:>11.0} {:>13.0} {:>7} {:>8.2}x {:>9.2}x",
                    n,
                    mode,
                    design,
                    best * 1e3,
                    median * 1e3,
                    events_per_s,
                    events_per_s * n as f64,
                    dropped[d],
                    stock.low.as_secs_f64() / best,
                    stock.median.as_secs_f64() / median,
                );
            }
        }
    }
    println!(
        "round = one burst of events published and taken by every subscriber; paced = the \
         publisher yields after each event, burst = it publishes the whole burst at once; best = \
         the lowest per-pass median round (a fresh start of the design that got the cores to \
         itself), median = over all rounds of all passes; events/s and deliveries/s are from \
         best; 'vs stock' = stock time / this design's time (higher is faster), on best and on \
         median."
    );
}
