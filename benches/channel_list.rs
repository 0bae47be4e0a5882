//! Cost of reading a stream's channel list (`GET /events?channel=a,b,c,...`) against its length:
//! the query string split into pairs and the list read item by item into a
//! `sluice::hub::TopicList` (`push_encoded`), as the server does, for lists of 65 to 12 000
//! names. The `unbounded` group is the earlier reading, kept here as the baseline: it decoded the
//! whole value, deduplicated with `Vec::contains` over every name read and checked the cap only
//! after the whole list, so its cost grew with the square of the length.
//!
//! Why: a request is refused at 65 channels, but a refusal must not cost more than a few
//! accepted requests. The `capped` figures should stay flat (or at worst grow linearly, from
//! decoding the text) as the list grows.
//!
//! ```text
//! cargo bench --bench channel_list
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use sluice::hub::{Topic, TopicList, MAX_TOPICS_PER_STREAM};

/// List lengths: just over the cap, then growing by about 4× each step.
const LENGTHS: [usize; 4] = [65, 750, 3_000, 12_000];

fn query(names: usize) -> String {
    let list: Vec<String> = (0..names).map(|i| format!("channel-{i}")).collect();
    format!("channel={}", list.join(","))
}

/// What the server does: pairs split lazily, the list decoded item by item, stopping at the
/// first cap.
fn capped(query: &str) -> usize {
    let mut list = TopicList::new(MAX_TOPICS_PER_STREAM);
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "channel" && list.push_encoded(value).is_err() {
            return 0;
        }
    }
    list.len()
}

/// The earlier reading: every name parsed and deduplicated, the cap checked at the end.
fn unbounded(query: &str) -> usize {
    let mut channels: Vec<Topic> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "channel" {
            for name in value.split(',').filter(|n| !n.is_empty()) {
                let Ok(topic) = Topic::parse(name) else {
                    return 0;
                };
                if !channels.contains(&topic) {
                    channels.push(topic);
                }
            }
        }
    }
    if channels.len() > MAX_TOPICS_PER_STREAM {
        return 0;
    }
    channels.len()
}

fn lists(c: &mut Criterion) {
    for (label, read) in [
        ("capped", capped as fn(&str) -> usize),
        ("unbounded", unbounded),
    ] {
        let mut group = c.benchmark_group(format!("channel_list/{label}"));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(20);
        for names in LENGTHS {
            let text = query(names);
            group.throughput(Throughput::Elements(names as u64));
            group.bench_with_input(BenchmarkId::from_parameter(names), &text, |b, text| {
                b.iter(|| black_box(read(black_box(text))))
            });
        }
        group.finish();
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    lists(&mut criterion);
    criterion.final_summary();
}
