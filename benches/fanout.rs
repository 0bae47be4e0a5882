//! In-process fan-out through the real hub API: one shard with 1k or 10k subscribers of one
//! topic, one frame published per iteration, measured three ways (criterion reports elements/s =
//! deliveries/s):
//!
//! - `fan_out`: only [`Shard::fan_out`], the per-shard hot loop (a refcount bump and a waker
//!   per subscriber); the queues are drained outside the timed section;
//! - `fan_out+drain`: the loop plus draining every [`Subscription`] with `poll_recv`, polled
//!   directly with a no-op waker: the hub's whole cost per delivery, without the executor;
//! - `fan_out+tasks`: every subscription is a task on a current-thread runtime + `LocalSet` (as in
//!   the server); a delivery includes waking and scheduling that task and its `poll_recv`.
//!
//! Why: this is the per-subscriber cost the design promises to keep at "a refcount bump, no
//! allocation, no lock". If it grows (an allocation or a log line in the loop), it shows here.
//! No sockets: `e2e_fanout` measures the binary end to end.
//!
//! ```text
//! cargo bench --bench fanout
//! ```

#[path = "support/hub.rs"]
mod hub_support;

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use sluice::hub::{Frame, Hub, Open, Payload, Recv, Shard, Subscription, Topic};
use sluice::sse::EventName;
use tokio::sync::Notify;
use tokio::task::LocalSet;

/// The allocator the binary ships with (see `src/main.rs`), so allocation costs (the joined
/// chunks, the channels' blocks) are the ones a server pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Subscriber counts per shard.
const SUBSCRIBERS: [usize; 2] = [1_000, 10_000];

/// One shard with `n` subscriptions to one topic, and the frame that gets published.
struct Fixture {
    shard: Rc<Shard>,
    subscriptions: Vec<Subscription>,
    topic: Topic,
    frame: Frame,
    /// Kept so the hub outlives its shard.
    _hub: Hub,
}

fn fixture(n: usize) -> Fixture {
    let (hub, mut inboxes) = hub_support::hub_with(1, n + 1);
    let shard = Shard::new(&hub, inboxes.pop().expect("one inbox per shard"));
    let topic = Topic::broadcast();
    let subscriptions = (0..n)
        .map(|_| {
            shard
                .open(Open {
                    topics: std::slice::from_ref(&topic),
                    ..Open::default()
                })
                .expect("the limit is above n")
        })
        .collect();
    let name = EventName::parse("notification").expect("a valid event name");
    let frame = Frame::event(
        None,
        Some(&topic),
        Some(&name),
        Payload::json(
            r#"{"message":"New order #12345 received","timestamp":"2024-05-01T12:34:56.789Z"}"#,
        ),
    );
    let mut fixture = Fixture {
        shard,
        subscriptions,
        topic,
        frame,
        _hub: hub,
    };
    // Takes the opening frames (`retry:`, `connected`) and registers every subscription's waker,
    // as a live stream has.
    drain(&mut fixture.subscriptions);
    fixture
}

/// Takes everything queued on every subscription; returns the number of chunks.
fn drain(subscriptions: &mut [Subscription]) -> u64 {
    let mut cx = Context::from_waker(Waker::noop());
    let mut chunks = 0;
    for subscription in subscriptions {
        loop {
            match subscription.poll_recv(&mut cx) {
                Poll::Ready(Recv::Frames(bytes)) => {
                    black_box(bytes);
                    chunks += 1;
                }
                Poll::Pending => break,
                Poll::Ready(other) => panic!("subscription ended: {other:?}"),
            }
        }
    }
    chunks
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(3));
    for n in SUBSCRIBERS {
        group.throughput(Throughput::Elements(n as u64));

        let mut f = fixture(n);
        group.bench_with_input(BenchmarkId::new("fan_out", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    f.shard.fan_out(&f.topic, &f.frame);
                    timed += start.elapsed();
                    drain(&mut f.subscriptions);
                }
                timed
            });
        });
        group.bench_with_input(BenchmarkId::new("fan_out+drain", n), &n, |b, _| {
            b.iter(|| {
                f.shard.fan_out(&f.topic, &f.frame);
                drain(&mut f.subscriptions)
            });
        });
        drop(f);

        group.bench_with_input(BenchmarkId::new("fan_out+tasks", n), &n, |b, &n| {
            tasks(b, n);
        });
    }
    group.finish();
}

/// Every subscription drained by its own task on a current-thread runtime + `LocalSet`; one
/// iteration = one `fan_out` and every task having taken its frame.
fn tasks(b: &mut criterion::Bencher<'_>, n: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let local = LocalSet::new();
    let Fixture {
        shard,
        subscriptions,
        topic,
        frame,
        _hub,
    } = fixture(n);
    let remaining = Rc::new(Cell::new(0usize));
    let done = Rc::new(Notify::new());
    for mut subscription in subscriptions {
        let remaining = remaining.clone();
        let done = done.clone();
        local.spawn_local(async move {
            while let Recv::Frames(bytes) =
                std::future::poll_fn(|cx| subscription.poll_recv(cx)).await
            {
                black_box(bytes);
                let left = remaining.get() - 1;
                remaining.set(left);
                if left == 0 {
                    done.notify_one();
                }
            }
        });
    }
    let round = || async {
        remaining.set(n);
        shard.fan_out(&topic, &frame);
        done.notified().await;
    };
    // Polls every task once, so each is parked on its subscription as in a server.
    local.block_on(&runtime, round());
    b.iter_custom(|iters| {
        local.block_on(&runtime, async {
            let start = Instant::now();
            for _ in 0..iters {
                round().await;
            }
            start.elapsed()
        })
    });
}

fn main() {
    // What `criterion_main!` expands to, minus the undocumented `pub fn` that `missing_docs`
    // would flag.
    let mut criterion = Criterion::default().configure_from_args();
    fan_out(&mut criterion);
    criterion.final_summary();
}
