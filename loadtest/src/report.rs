//! The results of a run and how they are shown: the [`Report`] (serialized as JSON as is), a
//! plain-text summary, and the comparison table that sets the measured SSE, WebSocket and
//! long-polling figures beside the tutorial's claims.
//!
//! With stalled connections (`--stall`), the delivery, latency and wire figures are the healthy
//! connections' only; [`Stalled`] says what happened to the others.
//!
//! Pure formatting: no IO besides returning strings.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::plan::{Plan, Rate, Target, Transport};

/// How late a tick must have been before [`Report::publisher_behind`] speaks up, ms.
const PUBLISHER_BEHIND_MS: f64 = 1000.0;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server kind.
    pub target: Target,
    /// The client protocol.
    pub transport: Transport,
    /// The workload and client settings.
    pub plan: Plan,
    /// The server's listening line (spawned servers) or address.
    pub server: String,
    /// Machine load average (1, 5, 15 min) before and after the run.
    pub load_average: LoadAverage,
    /// Connections and how they went.
    pub connections: Connections,
    /// What the publisher did.
    pub publish: Publish,
    /// What the healthy (not stalled) subscribers received.
    pub delivery: Delivery,
    /// The stalled connections, when the plan stalls some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<Stalled>,
    /// Bytes on the wire.
    pub wire: Wire,
    /// Server and harness resources.
    pub resources: Resources,
    /// Connections that lost or duplicated events (up to 20), for diagnosis.
    pub worst_connections: Vec<ConnIssue>,
    /// A listening run (custom target without a publish hook): events per connection, id gaps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listening: Option<Listening>,
    /// With `--ramp`: connect latency second by second over the ramp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp: Option<crate::ramp::Ramp>,
}

/// What a listening run measured: the server publishes on its own, the harness counts.
#[derive(Debug, Clone, Serialize)]
pub struct Listening {
    /// How long the connections listened, seconds.
    pub seconds: f64,
    /// Events with data received, over every ready connection.
    pub events: u64,
    /// Events per second per connection: lowest, mean, highest.
    pub per_connection_per_s: [f64; 3],
    /// Times a connection's next id (the number it ends in) skipped ahead of the last + 1.
    pub id_gaps: u64,
    /// Id numbers skipped over by those gaps.
    pub ids_skipped: u64,
    /// Connections that saw at least one gap.
    pub connections_with_gaps: u64,
    /// Events whose id did not end in digits (or had none): gaps cannot be told there.
    pub events_without_numeric_id: u64,
}

/// Load averages around a run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadAverage {
    /// Before connecting.
    pub start: [f64; 3],
    /// After the drain.
    pub end: [f64; 3],
}

/// Connection figures.
#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    /// Asked for.
    pub requested: usize,
    /// Became ready before publishing started.
    pub ready: usize,
    /// Gave up (after retries) before becoming ready.
    pub failed: usize,
    /// The first failure's reason.
    pub first_failure: Option<String>,
    /// Time from the first connection attempt to the last connection ready, seconds.
    pub ramp_s: f64,
    /// Connect → ready, milliseconds.
    pub connect_ms: Percentiles,
    /// Re-opened connections after the server closed them or they failed.
    pub reconnects: u64,
    /// In-band `reset` notices received.
    pub resets: u64,
    /// In-band `dropped` notices received.
    pub dropped_notices: u64,
    /// Streams the server cut off as slow consumers during the run, by its own count (Sluice's
    /// `/stats`; none for the baselines): the stalled ones, and any other that fell behind.
    pub server_evictions: Option<u64>,
    /// HTTP/2 connections the streams were carried on, reconnections included (`--http2`).
    pub http2_connections: Option<u64>,
}

/// The connections that stopped reading once ready (`--stall`).
#[derive(Debug, Clone, Serialize)]
pub struct Stalled {
    /// The share of connections asked to stall.
    pub share: f64,
    /// Connections chosen to stall.
    pub chosen: usize,
    /// Of those, the ones that became ready and stopped reading.
    pub ready: usize,
    /// Of those, the ones the server cut off (reset) before the run ended.
    pub cut_off: usize,
    /// When they were cut off, seconds after the first publish: first, median, last.
    pub cut_off_after_s: Option<[f64; 3]>,
}

/// Publisher figures.
#[derive(Debug, Clone, Serialize)]
pub struct Publish {
    /// Publishes attempted.
    pub sent: u64,
    /// Accepted (2xx).
    pub ok: u64,
    /// Refused with 503.
    pub overloaded: u64,
    /// Other failures.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// First publish to last answer, seconds.
    pub seconds: f64,
    /// Accepted publishes per second.
    pub rate: f64,
    /// The worst tick's delay against the schedule, milliseconds.
    pub behind_max_ms: f64,
    /// Publish round trip, milliseconds.
    pub round_trip_ms: Percentiles,
}

/// Delivery figures, over the healthy connections (every ready one that does not stall).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Connections counted: ready and not stalled.
    pub connections: usize,
    /// Deliveries expected: accepted publishes × ready connections.
    pub expected: u64,
    /// Deliveries received, duplicates included.
    pub delivered: u64,
    /// Expected deliveries that never arrived, summed over connections.
    pub lost: u64,
    /// Deliveries of an event the connection already had, summed over connections.
    pub duplicated: u64,
    /// Deliveries of events whose publish was reported failed (arrived anyway).
    pub unconfirmed: u64,
    /// Connections with at least one loss.
    pub connections_with_loss: u64,
    /// Connections with at least one duplicate.
    pub connections_with_duplicates: u64,
    /// Deliveries per second, first publish to last delivery.
    pub per_second: f64,
    /// Publish → delivery latency, milliseconds.
    pub latency_ms: Percentiles,
}

/// Wire figures.
#[derive(Debug, Clone, Serialize)]
pub struct Wire {
    /// Bytes read from all subscriber sockets (heads, framing, heartbeats, control messages).
    pub bytes_read: u64,
    /// Bytes written to them (requests, poll requests, WebSocket control frames).
    pub bytes_written: u64,
    /// `bytes_read / delivered`.
    pub read_per_event: f64,
    /// `(bytes_read + bytes_written) / delivered`.
    pub total_per_event: f64,
    /// Socket reads that returned data.
    pub reads: u64,
    /// `reads / delivered`: below 1 when several events arrive in one read, above 1 when an
    /// event arrives in pieces (or heartbeats and poll heads add reads).
    pub reads_per_event: f64,
}

/// Resource figures. CPU in percent of one core (`top`'s convention; 200% is both cores here).
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// The sampled process id (nginx: the master; its workers are summed in).
    pub server_pid: Option<u32>,
    /// Server RSS before any connection, MB (MiB).
    pub server_rss_mb_idle: f64,
    /// Server RSS with every connection open, before publishing, MB.
    pub server_rss_mb_connected: f64,
    /// Highest server RSS sampled during the run, MB.
    pub server_rss_mb_peak: f64,
    /// Server RSS after the drain, connections still open, MB.
    pub server_rss_mb_end: f64,
    /// Server RSS about once a second: `[seconds since the run began, MB]`.
    pub server_rss_mb_series: Vec<[f64; 2]>,
    /// The kernel's TCP buffer memory, machine-wide (server and harness sockets): highest sample
    /// and after the drain, MB. Unread bytes of stalled readers sit here, not in any RSS.
    pub kernel_tcp_mb_peak: f64,
    /// See `kernel_tcp_mb_peak`.
    pub kernel_tcp_mb_end: f64,
    /// `(connected - idle) / connections`, KiB.
    pub server_kib_per_connection: f64,
    /// Server CPU over the publishing phase.
    pub server_cpu_pct: f64,
    /// Highest one-second server CPU sample.
    pub server_cpu_pct_max: f64,
    /// Server CPU time from the first publish to the end of the drain, divided by the events
    /// delivered, µs: the figure that carries over between machines and loads (0 when nothing
    /// was delivered or the server is not sampled).
    pub server_cpu_us_per_delivery: f64,
    /// The harness's CPU over the publishing phase (readers and publisher).
    pub harness_cpu_pct: f64,
    /// The harness's peak RSS, MB.
    pub harness_rss_mb_peak: f64,
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of_us(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// One connection that lost or duplicated events.
#[derive(Debug, Clone, Serialize)]
pub struct ConnIssue {
    /// Its index in the run.
    pub index: usize,
    /// Expected events it never received.
    pub lost: u64,
    /// Duplicates it received.
    pub duplicated: u64,
    /// Times it reconnected.
    pub reconnects: u64,
}

impl Report {
    /// A healthy run: every connection ready, nothing lost or duplicated, something delivered.
    pub fn is_clean(&self) -> bool {
        self.problems().is_empty()
    }

    /// What makes the run unhealthy, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.delivery.lost > 0 {
            problems.push(format!("{} deliveries lost", self.delivery.lost));
        }
        if self.delivery.duplicated > 0 {
            problems.push(format!(
                "{} deliveries duplicated",
                self.delivery.duplicated
            ));
        }
        if self.connections.failed > 0 {
            problems.push(format!(
                "{} connections failed ({})",
                self.connections.failed,
                self.connections.first_failure.as_deref().unwrap_or("?")
            ));
        }
        if self.delivery.delivered == 0 {
            problems.push("nothing was delivered".to_owned());
        }
        problems
    }

    /// A note when a scheduled publisher could not keep its schedule: each publisher connection
    /// waits for one answer before its next publish, so the rate it reaches is at most
    /// `publishers / round trip`. The run then measured a lower rate than it asked for, and took
    /// longer. Not a problem of the server under test, so not in [`Report::problems`].
    pub fn publisher_behind(&self) -> Option<String> {
        let Rate::PerSecond(asked) = self.plan.rate else {
            return None;
        };
        let reached = self.publish.rate;
        let behind = self.publish.behind_max_ms >= PUBLISHER_BEHIND_MS && reached < 0.95 * asked;
        behind.then(|| {
            format!(
                "note: the publisher fell behind its schedule ({reached:.1}/s of {asked}/s, up to {:.1} s late); \
                 each of the {} publisher connection(s) waits for an answer, so give more --publishers",
                self.publish.behind_max_ms / 1000.0,
                self.plan.publishers
            )
        })
    }

    /// A plain-text summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let p = &self.plan;
        let _ = writeln!(
            out,
            "== {} over {}{} — {} connections, {}{}{}{}, {}",
            self.target.as_str(),
            self.transport.as_str(),
            match (p.tls, p.http2) {
                (false, false) => String::new(),
                (true, false) => " (TLS, HTTP/1.1)".to_owned(),
                (tls, true) => format!(
                    " ({}HTTP/2, {} stream{} per connection)",
                    if tls { "TLS, " } else { "h2c, " },
                    p.streams_per_connection,
                    if p.streams_per_connection == 1 {
                        ""
                    } else {
                        "s"
                    }
                ),
            },
            p.connections,
            if self.listening.is_some() {
                "listening only".to_owned()
            } else {
                p.rate.to_string()
            },
            if p.burst > 1 {
                format!(" in bursts of {}", p.burst)
            } else {
                String::new()
            },
            if p.publishers > 1 {
                format!(" on {} publisher connections", p.publishers)
            } else {
                String::new()
            },
            if p.payload_bytes > 0 {
                format!(", {} B payloads", p.payload_bytes)
            } else {
                String::new()
            },
            humantime::format_duration(p.duration)
        );
        let _ = writeln!(out, "server       {}", self.server);
        let la = &self.load_average;
        let _ = writeln!(
            out,
            "load avg     {:.2} {:.2} {:.2} before, {:.2} {:.2} {:.2} after",
            la.start[0], la.start[1], la.start[2], la.end[0], la.end[1], la.end[2]
        );
        let c = &self.connections;
        let _ = writeln!(
            out,
            "connections  {} ready, {} failed, ramp {:.1} s, connect p50 {:.2} ms p99 {:.2} ms, {} reconnects, {} resets, {} cut off by the server",
            c.ready,
            c.failed,
            c.ramp_s,
            c.connect_ms.p50,
            c.connect_ms.p99,
            c.reconnects,
            c.resets,
            c.server_evictions
                .map_or_else(|| "n/a".to_owned(), |n| n.to_string())
        );
        if let Some(n) = c.http2_connections {
            let _ = writeln!(
                out,
                "http2        {} streams over {n} connections opened",
                c.requested
            );
        }
        if let Some(st) = &self.stalled {
            let when = st.cut_off_after_s.map_or_else(String::new, |[first, median, last]| {
                format!(
                    " ({first:.1} s / {median:.1} s / {last:.1} s after the first publish: first / median / last)"
                )
            });
            let _ = writeln!(
                out,
                "stalled      {} of {} ready stopped reading ({:.0}% asked); {} cut off by the server{when}",
                st.ready,
                st.chosen,
                st.share * 100.0,
                st.cut_off
            );
        }
        if let Some(listening) = &self.listening {
            let [min, mean, max] = listening.per_connection_per_s;
            let _ = writeln!(
                out,
                "listened     {:.1} s: {} events, per connection {:.2}/s mean ({:.2} min, {:.2} max); {} id gaps ({} ids skipped, {} connections), {} events without a numeric id",
                listening.seconds,
                listening.events,
                mean,
                min,
                max,
                listening.id_gaps,
                listening.ids_skipped,
                listening.connections_with_gaps,
                listening.events_without_numeric_id
            );
        }
        if let Some(ramp) = &self.ramp {
            out.push_str(&crate::ramp::lines(ramp));
        }
        if self.listening.is_none() {
            let pb = &self.publish;
            let late = match p.rate {
                Rate::PerSecond(_) => format!(", worst tick {:.1} ms late", pb.behind_max_ms),
                Rate::Max => String::new(),
            };
            let _ = writeln!(
                out,
                "publish      {} sent, {} ok, {} overloaded (503), {} errors, {:.1}/s accepted, round trip p50 {:.2} ms p99 {:.2} ms{late}",
                pb.sent,
                pb.ok,
                pb.overloaded,
                pb.errors,
                pb.rate,
                pb.round_trip_ms.p50,
                pb.round_trip_ms.p99
            );
            if let Some(error) = &pb.first_error {
                let _ = writeln!(out, "             first error: {error}");
            }
            if let Some(note) = self.publisher_behind() {
                let _ = writeln!(out, "             {note}");
            }
            let d = &self.delivery;
            let healthy = if self.stalled.is_some() {
                format!(" (the {} healthy connections)", d.connections)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "delivery     {} of {} expected{healthy}, lost {}, duplicated {}, {:.0} deliveries/s",
                d.delivered, d.expected, d.lost, d.duplicated, d.per_second
            );
            let l = &d.latency_ms;
            let _ = writeln!(
                out,
                "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                l.p50, l.p90, l.p99, l.p999, l.max
            );
            let w = &self.wire;
            let _ = writeln!(
                out,
                "wire         {:.1} B read per event, {:.1} B both ways per event ({} read, {} written), {:.2} reads per event",
                w.read_per_event, w.total_per_event, w.bytes_read, w.bytes_written, w.reads_per_event
            );
        }
        let r = &self.resources;
        if r.server_pid.is_none() {
            let _ = writeln!(
                out,
                "server       RSS and CPU n/a: no PID to sample (give --pid, or --spawn)"
            );
        } else {
            let _ = writeln!(
            out,
            "server       RSS {:.1} MB idle, {:.1} MB connected ({:.1} KiB/conn), {:.1} MB peak, {:.1} MB at the end; CPU {:.1}% avg, {:.1}% max, {:.2} µs per delivery",
            r.server_rss_mb_idle,
            r.server_rss_mb_connected,
            r.server_kib_per_connection,
            r.server_rss_mb_peak,
            r.server_rss_mb_end,
            r.server_cpu_pct,
            r.server_cpu_pct_max,
            r.server_cpu_us_per_delivery
        );
        }
        let _ = writeln!(
            out,
            "kernel       TCP buffers (all sockets) {:.1} MB peak, {:.1} MB at the end",
            r.kernel_tcp_mb_peak, r.kernel_tcp_mb_end
        );
        let _ = writeln!(
            out,
            "harness      CPU {:.1}% avg, RSS {:.1} MB peak",
            r.harness_cpu_pct, r.harness_rss_mb_peak
        );
        let problems = self.problems();
        let _ = writeln!(
            out,
            "verdict      {}",
            if problems.is_empty() {
                "clean: nothing lost, nothing duplicated".to_owned()
            } else {
                problems.join("; ")
            }
        );
        out
    }
}

/// The tutorial's claims, per transport: memory MB, CPU %, network overhead, latency ms.
fn claims(transport: Transport) -> [&'static str; 4] {
    match transport {
        Transport::Sse => ["45-60", "8-12", "Low", "50-100"],
        Transport::Ws => ["55-75", "10-15", "Very Low", "10-30"],
        Transport::Poll => ["80-120", "25-40", "High", "200-500"],
    }
}

/// The tutorial's table with each measured figure beside its claim. `reports` in the order of
/// the columns (SSE, WebSockets, Long Polling); a missing transport shows `n/a`.
pub fn comparison_table(reports: &[Report]) -> String {
    let column = |t: Transport| reports.iter().find(|r| r.transport == t);
    let mut out = String::new();
    let _ = writeln!(out, "| Metric | SSE | WebSockets | Long Polling |");
    let _ = writeln!(out, "|---|---|---|---|");
    type Measure = fn(&Report) -> String;
    let rows: [(&str, usize, Measure); 4] = [
        ("Memory (MB)", 0, |r| {
            format!("{:.1}", r.resources.server_rss_mb_peak)
        }),
        ("CPU (%)", 1, |r| {
            format!("{:.1}", r.resources.server_cpu_pct)
        }),
        ("Network overhead", 2, |r| {
            format!("{:.0} B/event", r.wire.total_per_event)
        }),
        ("Latency (ms)", 3, |r| {
            format!(
                "{:.2} p50, {:.2} p99",
                r.delivery.latency_ms.p50, r.delivery.latency_ms.p99
            )
        }),
    ];
    for (name, claim, measure) in rows {
        let _ = write!(out, "| {name} |");
        for transport in Transport::ALL {
            let measured = column(transport).map_or_else(|| "n/a".to_owned(), measure);
            let _ = write!(out, " {measured} (claim {}) |", claims(transport)[claim]);
        }
        out.push('\n');
    }
    let extra: [(&str, Measure); 4] = [
        ("Lost / duplicated", |r| {
            format!("{} / {}", r.delivery.lost, r.delivery.duplicated)
        }),
        ("Delivered / expected", |r| {
            format!("{} / {}", r.delivery.delivered, r.delivery.expected)
        }),
        ("Deliveries/s", |r| format!("{:.0}", r.delivery.per_second)),
        ("Harness CPU (%)", |r| {
            format!("{:.1}", r.resources.harness_cpu_pct)
        }),
    ];
    for (name, measure) in extra {
        let _ = write!(out, "| {name} |");
        for transport in Transport::ALL {
            let measured = column(transport).map_or_else(|| "n/a".to_owned(), measure);
            let _ = write!(out, " {measured} |");
        }
        out.push('\n');
    }
    out
}

/// Serializes a duration as fractional seconds.
pub fn seconds<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// KiB → MB (MiB), for the tables.
pub fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
