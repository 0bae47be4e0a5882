//! `sluice-loadtest storm`: a reconnect storm. N streams are opened and events published at
//! the plan's rate; then every connection breaks at once (the spawned server is restarted on
//! its port after SIGTERM or SIGKILL, or, with `--url`, the user is told to cut) and every
//! stream comes back as a browser's `EventSource` would: after the stream's `retry:`, again
//! after each failed attempt, with `Last-Event-ID`. Publishing goes on throughout.
//!
//! Measured: when 50 / 99 / 100 % of the streams were back (ready again) after the cut, the
//! connect latency of the reconnects, the attempts that failed and why, the server's CPU and
//! RSS peak from the cut until every stream was back, and per connection the events lost and
//! duplicated across the storm. A `reset` notice (Sluice's memory store after a restart cannot
//! replay what the old process held) excuses what was published between the last event before
//! it and the first after it: those are reported as lost to resets, apart from real losses.
//!
//! Owns the storm's phases and its figures; the connections, the publisher and the process
//! handling are the ones `run` uses.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::plan::{Cancel, Plan, Reconnect, Target};
use crate::procfs::{self, Usage};
use crate::publisher::{self, Outcome};
use crate::report::{self, ConnIssue, LoadAverage, Percentiles};
use crate::run::{client_thread, current_thread, Clients, Endpoint, RunError};
use crate::source::{self, Sources};
use crate::spawn::{Launch, Spawned};
use crate::tally::{new_histogram, AttemptError, ConnTally, Live, SeqSet};
use crate::transport::now_us;

/// How often the storm samples `/proc` and looks at the counters.
const TICK: Duration = Duration::from_millis(100);

/// How long a publishing phase may be at most (the publisher is stopped long before).
const PUBLISH_BOUND: Duration = Duration::from_secs(3600);

/// With `--url`, how long the streams must stay as they are (all dropped ones back) before the
/// storm is taken as over.
const SETTLE: Duration = Duration::from_secs(1);

/// How the connections are broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cut {
    /// SIGTERM to the spawned server (it may close its streams gracefully), then a restart.
    Term,
    /// SIGKILL to the spawned server, then a restart.
    Kill,
    /// The user cuts (`--url`): the harness says when, and takes the first dropped stream as
    /// the moment.
    Manual,
}

/// The storm's own settings.
#[derive(Debug, Clone, Serialize)]
pub struct StormPlan {
    /// How the connections are broken.
    pub cut: Cut,
    /// Publishing before the cut.
    #[serde(serialize_with = "crate::report::seconds")]
    pub before: Duration,
    /// Publishing after every stream is back.
    #[serde(serialize_with = "crate::report::seconds")]
    pub after: Duration,
    /// Longest wait, from the cut, for every stream to come back.
    #[serde(serialize_with = "crate::report::seconds")]
    pub recover: Duration,
}

/// Where the server comes from.
#[derive(Debug, Clone)]
pub enum Server {
    /// Started (and restarted) by the harness.
    Spawn(Launch),
    /// Already running; the user cuts.
    Running(Endpoint),
}

/// What a storm measured.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// The server kind.
    pub target: Target,
    /// The workload.
    pub plan: Plan,
    /// The storm's settings.
    pub storm: StormPlan,
    /// The server before the cut, and after the restart (spawned).
    pub server: Vec<String>,
    /// Machine load average before and after.
    pub load_average: LoadAverage,
    /// Connections ready before the cut.
    pub ready: usize,
    /// Connections that never became ready.
    pub failed: usize,
    /// Ready connections whose stream went down after the cut.
    pub dropped: usize,
    /// Of those, the ones that were back (ready again) before the run ended.
    pub back: usize,
    /// Seconds from the cut until 50 %, 99 % and 100 % of the dropped streams were back (none:
    /// that share never came back).
    pub back_after_s: BackAfter,
    /// Spawned: from the signal until the new server listened, seconds.
    pub server_down_s: Option<f64>,
    /// The sampled process (none: no RSS or CPU figures).
    pub server_pid: Option<u32>,
    /// Reconnect attempt → ready, over the attempts that started after the cut, milliseconds.
    pub connect_ms: Percentiles,
    /// Reconnect attempts after the cut that failed, by cause.
    pub failed_attempts: FailedAttempts,
    /// Publishes: sent, accepted, refused or failed (the server was down).
    pub publish: Publish,
    /// Events across the storm.
    pub delivery: Delivery,
    /// The server's resources.
    pub resources: Resources,
    /// Connections that lost (beyond resets) or duplicated events, the first 20.
    pub worst_connections: Vec<ConnIssue>,
}

/// When a share of the streams was back.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BackAfter {
    /// Half of them.
    pub p50: Option<f64>,
    /// 99 %.
    pub p99: Option<f64>,
    /// Every one.
    pub p100: Option<f64>,
}

/// Failed reconnect attempts by cause.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FailedAttempts {
    /// All of them.
    pub total: u64,
    /// Connection refused: nothing listened.
    pub refused: u64,
    /// Reset or closed before the stream was ready (accept trouble, or a server that answers
    /// and closes with a `retry:` hint).
    pub closed: u64,
    /// Not ready in time.
    pub timeout: u64,
    /// Answered with another status than 200.
    pub status: u64,
    /// Anything else.
    pub other: u64,
}

/// The publisher during the storm.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Publish {
    /// Attempted.
    pub sent: u64,
    /// Accepted (2xx): these are expected on every connection.
    pub ok: u64,
    /// Refused or failed (503s included): expected nowhere.
    pub failed: u64,
    /// The first failure.
    pub first_error: Option<String>,
}

/// Events across the storm, over the connections that were ready.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Delivery {
    /// Accepted publishes × ready connections.
    pub expected: u64,
    /// Deliveries, duplicates included.
    pub delivered: u64,
    /// Distinct events received whose publish was not confirmed (the server went down before
    /// it answered): delivered, but expected by nobody.
    pub unconfirmed: u64,
    /// Expected deliveries that never came and no reset excuses.
    pub lost: u64,
    /// Expected deliveries that never came, published while a stream was between a `reset`
    /// and its next event: the server said it could not replay them.
    pub lost_to_resets: u64,
    /// Deliveries of an event the connection already had.
    pub duplicated: u64,
    /// Connections with a loss no reset excuses.
    pub connections_with_loss: u64,
    /// Connections with a duplicate.
    pub connections_with_duplicates: u64,
    /// `reset` notices received.
    pub resets: u64,
    /// Connections that received one.
    pub connections_reset: u64,
}

/// The server's resources around the storm. CPU in % of one core.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Resources {
    /// The server's RSS with every stream open, before the cut, MB.
    pub server_rss_mb_before: f64,
    /// Highest RSS sampled from the cut until every stream was back, MB.
    pub server_rss_mb_peak: f64,
    /// Highest one-second CPU sample in that window (or the window's average, if higher or
    /// if the window was shorter than a second).
    pub server_cpu_pct_peak: f64,
    /// CPU averaged over that window.
    pub server_cpu_pct_storm: f64,
}

impl StormReport {
    /// What makes the storm a failure, in words: streams not back, events lost (beyond what
    /// resets excuse) or duplicated, connections that never became ready, nothing delivered.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.dropped == 0 {
            problems.push("no stream went down".to_owned());
        }
        if self.back < self.dropped {
            problems.push(format!(
                "{} of {} streams never came back",
                self.dropped - self.back,
                self.dropped
            ));
        }
        if self.failed > 0 {
            problems.push(format!("{} connections never became ready", self.failed));
        }
        if self.delivery.lost > 0 {
            problems.push(format!("{} deliveries lost", self.delivery.lost));
        }
        if self.delivery.duplicated > 0 {
            problems.push(format!(
                "{} deliveries duplicated",
                self.delivery.duplicated
            ));
        }
        if self.delivery.delivered == 0 && !self.plan.is_subscribe_only() {
            problems.push("nothing was delivered".to_owned());
        }
        problems
    }

    /// A clean storm: see [`StormReport::problems`].
    pub fn is_clean(&self) -> bool {
        self.problems().is_empty()
    }

    /// A plain-text summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let p = &self.plan;
        let _ = writeln!(
            out,
            "== storm on {} — {} connections, {}, cut by {}",
            self.target.as_str(),
            p.connections,
            p.rate,
            match self.storm.cut {
                Cut::Term => "SIGTERM and restart",
                Cut::Kill => "SIGKILL and restart",
                Cut::Manual => "hand",
            }
        );
        for server in &self.server {
            let _ = writeln!(out, "server       {server}");
        }
        let la = &self.load_average;
        let _ = writeln!(
            out,
            "load avg     {:.2} {:.2} {:.2} before, {:.2} {:.2} {:.2} after",
            la.start[0], la.start[1], la.start[2], la.end[0], la.end[1], la.end[2]
        );
        let secs = |s: Option<f64>| s.map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s"));
        let b = &self.back_after_s;
        let _ = writeln!(
            out,
            "streams      {} ready, {} dropped, {} back; 50% back after {}, 99% after {}, 100% after {}{}",
            self.ready,
            self.dropped,
            self.back,
            secs(b.p50),
            secs(b.p99),
            secs(b.p100),
            self.server_down_s
                .map_or_else(String::new, |s| format!("; server down {s:.2} s"))
        );
        let c = &self.connect_ms;
        let f = &self.failed_attempts;
        let _ = writeln!(
            out,
            "reconnects   connect p50 {:.2} ms p99 {:.2} ms max {:.2} ms; {} failed attempts ({} refused, {} closed before ready, {} timed out, {} bad status, {} other)",
            c.p50, c.p99, c.max, f.total, f.refused, f.closed, f.timeout, f.status, f.other
        );
        let pb = &self.publish;
        let _ = writeln!(
            out,
            "publish      {} sent, {} accepted, {} refused or failed{}",
            pb.sent,
            pb.ok,
            pb.failed,
            pb.first_error
                .as_ref()
                .map_or_else(String::new, |e| format!(" (first: {e})"))
        );
        let d = &self.delivery;
        let _ = writeln!(
            out,
            "delivery     {} of {} expected ({} unconfirmed), lost {}, lost to resets {} ({} resets on {} connections), duplicated {}",
            d.delivered,
            d.expected,
            d.unconfirmed,
            d.lost,
            d.lost_to_resets,
            d.resets,
            d.connections_reset,
            d.duplicated
        );
        let r = &self.resources;
        if self.server_pid.is_none() {
            let _ = writeln!(
                out,
                "server       RSS and CPU n/a: no PID to sample (give --pid, or --spawn)"
            );
        } else {
            let _ = writeln!(
            out,
            "server       RSS {:.1} MB before the cut, {:.1} MB peak during the storm; CPU {:.1}% peak, {:.1}% average from the cut until all were back",
            r.server_rss_mb_before, r.server_rss_mb_peak, r.server_cpu_pct_peak, r.server_cpu_pct_storm
        );
        }
        let problems = self.problems();
        let _ = writeln!(
            out,
            "verdict      {}",
            if problems.is_empty() {
                "clean: every stream back, nothing lost or duplicated beyond what resets announced"
                    .to_owned()
            } else {
                problems.join("; ")
            }
        );
        out
    }
}

/// Runs a storm. `plan.reconnect` is set to [`Reconnect::AsBrowser`] whatever it was.
pub fn storm(plan: &Plan, settings: &StormPlan, server: Server) -> Result<StormReport, RunError> {
    let mut plan = plan.clone();
    plan.reconnect = Reconnect::AsBrowser;
    plan.validate().map_err(RunError::Plan)?;
    if plan.tls || plan.http2 || !plan.target.supports_storm() {
        return Err(RunError::Plan(crate::plan::PlanError::Invalid {
            key: "tls",
            reason: "a storm runs over plain HTTP/1.1 against sluice, express, nchan or custom"
                .to_owned(),
        }));
    }
    source::reserve_fds(plan.connections + plan.publishers).map_err(RunError::Fds)?;
    let load_start = procfs::load_average();
    let (mut spawned, mut endpoint, mut launch) = match server {
        Server::Spawn(launch) => {
            let spawned = Spawned::start(&launch).map_err(RunError::Spawn)?;
            let endpoint = Endpoint::new(spawned.addr, Some(spawned.pid()), spawned.banner.clone());
            (Some(spawned), endpoint, Some(launch))
        }
        Server::Running(endpoint) => (None, endpoint, None),
    };
    let mut banners = vec![endpoint.banner.clone()];
    let result = (|| {
        if !plan.is_subscribe_only() {
            current_thread()
                .map_err(RunError::Thread)?
                .block_on(publisher::primer(&plan, endpoint.addr))
                .map_err(RunError::Primer)?;
        }
        let live = Arc::new(Live::default());
        live.cut_on_first_drop
            .store(settings.cut == Cut::Manual, Ordering::Relaxed);
        let (stop_tx, stop_rx) = watch::channel(false);
        let sources = Sources::new(plan.per_source);
        let ramp_started = Instant::now();
        let mut threads = Vec::with_capacity(plan.client_threads);
        for thread in 0..plan.client_threads {
            let clients = Clients {
                plan: plan.clone(),
                server: endpoint.addr,
                sources,
                start_after: None,
                ramp_started,
            };
            let live = live.clone();
            let stop = stop_rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("storm-client-{thread}"))
                    .spawn(move || client_thread(thread, clients, live, stop))
                    .map_err(RunError::Thread)?,
            );
        }
        let total = plan.connections as u64;
        while Live::get(&live.ready) + Live::get(&live.failed) < total
            && !threads.iter().any(|t| t.is_finished())
            && !plan.cancel.is_cancelled()
        {
            std::thread::sleep(TICK);
        }
        let ready = Live::get(&live.ready);
        let before_cut = endpoint.pid.map(procfs::tree_usage).unwrap_or_default();

        // Publish throughout, until told to stop.
        let mut publish_plan = plan.clone();
        publish_plan.duration = PUBLISH_BOUND;
        let stop_publishing = Cancel::default();
        publish_plan.cancel = stop_publishing.clone();
        let publisher = if plan.is_subscribe_only() {
            None
        } else {
            let live = live.clone();
            let addr = endpoint.addr;
            Some(
                std::thread::Builder::new()
                    .name("storm-publisher".into())
                    .spawn(move || -> std::io::Result<Outcome> {
                        let runtime = current_thread()?;
                        let local = tokio::task::LocalSet::new();
                        Ok(local.block_on(&runtime, publisher::run(&publish_plan, addr, live)))
                    })
                    .map_err(RunError::Thread)?,
            )
        };
        wait(settings.before, &plan.cancel);

        // The cut.
        let mut server_down_s = None;
        let cut_us;
        let mut cut_at = Instant::now();
        match (spawned.take(), launch.as_mut()) {
            (Some(old), Some(launch)) => {
                cut_us = now_us();
                live.cut_at_us.store(cut_us, Ordering::Relaxed);
                launch.port = Some(endpoint.addr.port());
                match settings.cut {
                    Cut::Kill => old.kill(),
                    Cut::Term | Cut::Manual => old.stop(),
                }
                let new = Spawned::start(launch).map_err(RunError::Spawn)?;
                server_down_s = Some(cut_at.elapsed().as_secs_f64());
                endpoint.pid = Some(new.pid());
                banners.push(format!("after the restart: {}", new.banner));
                spawned = Some(new);
            }
            _ => {
                eprintln!(
                    "sluice-loadtest storm: CUT NOW: restart the server at {} or break the \
                     network; waiting up to {} for the streams to drop and come back",
                    endpoint.addr,
                    humantime::format_duration(settings.recover)
                );
                let deadline = Instant::now() + settings.recover;
                while Live::get(&live.cut_at_us) == 0
                    && Instant::now() < deadline
                    && !plan.cancel.is_cancelled()
                {
                    std::thread::sleep(TICK);
                }
                cut_us = Live::get(&live.cut_at_us);
                // `--recover` counts from the cut, not from the request to cut.
                cut_at = Instant::now();
            }
        }

        // Until every stream is back, sampling the (new) server.
        let mut peak = Peak::default();
        let mut last = (
            Instant::now(),
            endpoint.pid.map(procfs::tree_usage).unwrap_or_default(),
        );
        let window_start = last;
        let deadline = cut_at + settings.recover;
        let mut settled_since: Option<Instant> = None;
        loop {
            let back = Live::get(&live.back);
            let done = match settings.cut {
                Cut::Term | Cut::Kill => back >= ready,
                Cut::Manual => {
                    let all = cut_us > 0 && back >= Live::get(&live.drops).min(ready);
                    let since = *settled_since.get_or_insert_with(Instant::now);
                    if !all {
                        settled_since = None;
                    }
                    all && since.elapsed() >= SETTLE
                }
            };
            if done || Instant::now() >= deadline || plan.cancel.is_cancelled() {
                break;
            }
            std::thread::sleep(TICK);
            peak.sample(endpoint.pid, &mut last);
        }
        peak.sample(endpoint.pid, &mut last);
        let storm_cpu = endpoint.pid.map_or(0.0, |pid| {
            procfs::cpu_percent(window_start, (Instant::now(), procfs::tree_usage(pid)))
        });
        peak.cpu_pct = peak.cpu_pct.max(storm_cpu);
        wait(settings.after, &plan.cancel);
        stop_publishing.cancel();
        let outcome = match publisher.map(std::thread::JoinHandle::join) {
            None => Outcome::new(0),
            Some(Ok(Ok(outcome))) => outcome,
            Some(Ok(Err(error))) => return Err(RunError::Thread(error)),
            Some(Err(_)) => {
                return Err(RunError::Thread(std::io::Error::other(
                    "the publisher thread panicked",
                )))
            }
        };
        // Deliveries still in flight (without resets every ready stream gets every event).
        let expected = outcome.ok.len() * ready;
        let drain_until = Instant::now() + plan.drain;
        while Live::get(&live.delivered) < expected
            && Instant::now() < drain_until
            && !plan.cancel.is_cancelled()
        {
            std::thread::sleep(TICK);
        }
        let _ = stop_tx.send(true);
        let mut conns = Vec::with_capacity(plan.connections);
        for handle in threads {
            match handle.join() {
                Ok(Ok((tallies, _))) => conns.extend(tallies),
                Ok(Err(error)) => return Err(RunError::Thread(error)),
                Err(_) => {
                    return Err(RunError::Thread(std::io::Error::other(
                        "a client thread panicked",
                    )))
                }
            }
        }
        let figures = account(&conns, &outcome.ok, cut_us);
        Ok(StormReport {
            target: plan.target,
            plan: plan.clone(),
            storm: settings.clone(),
            server: banners.clone(),
            load_average: LoadAverage {
                start: load_start,
                end: procfs::load_average(),
            },
            ready: figures.ready,
            failed: figures.failed,
            dropped: figures.dropped,
            back: figures.back,
            back_after_s: figures.back_after_s,
            server_down_s,
            server_pid: endpoint.pid,
            connect_ms: figures.connect_ms,
            failed_attempts: figures.failed_attempts,
            publish: Publish {
                sent: outcome.sent,
                ok: outcome.ok.len(),
                failed: outcome.errors + outcome.overloaded,
                first_error: outcome.first_error.clone(),
            },
            delivery: figures.delivery,
            resources: Resources {
                server_rss_mb_before: report::mb(before_cut.rss_kib),
                server_rss_mb_peak: report::mb(peak.rss_kib),
                server_cpu_pct_peak: peak.cpu_pct,
                server_cpu_pct_storm: storm_cpu,
            },
            worst_connections: figures.worst,
        })
    })();
    if let Some(server) = spawned {
        server.stop();
    }
    result
}

/// Sleeps `duration` unless the run is cancelled.
fn wait(duration: Duration, cancel: &Cancel) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !cancel.is_cancelled() {
        std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
    }
}

/// The server's highest RSS and one-second CPU during the storm.
#[derive(Debug, Default)]
struct Peak {
    rss_kib: u64,
    cpu_pct: f64,
}

impl Peak {
    fn sample(&mut self, pid: Option<u32>, last: &mut (Instant, Usage)) {
        let Some(pid) = pid else { return };
        let now = Instant::now();
        let usage = procfs::tree_usage(pid);
        self.rss_kib = self.rss_kib.max(usage.rss_kib);
        if now.duration_since(last.0) >= Duration::from_secs(1) {
            self.cpu_pct = self.cpu_pct.max(procfs::cpu_percent(*last, (now, usage)));
            *last = (now, usage);
        }
    }
}

/// The storm's figures drawn from the tallies.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// See [`StormReport`].
    pub ready: usize,
    /// See [`StormReport`].
    pub failed: usize,
    /// See [`StormReport`].
    pub dropped: usize,
    /// See [`StormReport`].
    pub back: usize,
    /// See [`StormReport`].
    pub back_after_s: BackAfter,
    /// See [`StormReport`].
    pub connect_ms: Percentiles,
    /// See [`StormReport`].
    pub failed_attempts: FailedAttempts,
    /// See [`StormReport`].
    pub delivery: Delivery,
    /// See [`StormReport`].
    pub worst: Vec<ConnIssue>,
}

/// Connections listed in [`Figures::worst`] at most.
const WORST_LISTED: usize = 20;

/// Adds up the tallies of a storm cut at `cut_us` (unix µs) against the `accepted` publishes.
pub fn account(conns: &[(usize, ConnTally)], accepted: &SeqSet, cut_us: u64) -> Figures {
    let mut figures = Figures::default();
    let mut connect = new_histogram();
    let mut back_after_us = Vec::new();
    for (index, tally) in conns {
        if !tally.ready {
            figures.failed += 1;
            continue;
        }
        figures.ready += 1;
        let dropped = cut_us > 0 && tally.drops_us.iter().any(|&at| at >= cut_us);
        if dropped {
            figures.dropped += 1;
            if let Some(session) = tally.sessions.iter().find(|s| s.ended_us >= cut_us) {
                figures.back += 1;
                back_after_us.push(session.ended_us - cut_us);
            }
        }
        for session in tally.sessions.iter().filter(|s| s.started_us >= cut_us) {
            connect.saturating_record((session.ended_us - session.started_us).max(1));
        }
        for attempt in tally
            .attempts_failed
            .iter()
            .filter(|a| a.started_us >= cut_us)
        {
            let f = &mut figures.failed_attempts;
            f.total += 1;
            match attempt.error {
                Some(AttemptError::Refused) => f.refused += 1,
                Some(AttemptError::Closed) | None => f.closed += 1,
                Some(AttemptError::Timeout) => f.timeout += 1,
                Some(AttemptError::Status) => f.status += 1,
                Some(AttemptError::Other) => f.other += 1,
            }
        }
        let d = &mut figures.delivery;
        d.expected += accepted.len();
        d.delivered += tally.delivered;
        d.unconfirmed += tally.seen.missing_from(accepted);
        d.duplicated += tally.duplicates;
        d.resets += tally.resets;
        d.connections_reset += u64::from(tally.resets > 0);
        let missing = accepted.missing_from(&tally.seen);
        let excused: u64 = tally
            .reset_gaps
            .iter()
            .map(|&(after, before)| {
                (after.saturating_add(1)..before)
                    .filter(|&n| accepted.contains(n) && !tally.seen.contains(n))
                    .count() as u64
            })
            .sum();
        let excused = excused.min(missing);
        let lost = missing - excused;
        d.lost += lost;
        d.lost_to_resets += excused;
        d.connections_with_loss += u64::from(lost > 0);
        d.connections_with_duplicates += u64::from(tally.duplicates > 0);
        if (lost > 0 || tally.duplicates > 0) && figures.worst.len() < WORST_LISTED {
            figures.worst.push(ConnIssue {
                index: *index,
                lost,
                duplicated: tally.duplicates,
                reconnects: tally.reconnects,
            });
        }
    }
    back_after_us.sort_unstable();
    let share = |q: f64| {
        let needed = ((figures.dropped as f64) * q).ceil().max(1.0) as usize;
        back_after_us
            .get(needed - 1)
            .map(|&us| us as f64 / 1e6)
            .filter(|_| figures.dropped > 0)
    };
    figures.back_after_s = BackAfter {
        p50: share(0.5),
        p99: share(0.99),
        p100: share(1.0),
    };
    figures.connect_ms = Percentiles::of_us(&connect);
    figures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Delivery as Event;
    use crate::tally::{Attempt, ThreadTally};

    fn accepted(ns: impl IntoIterator<Item = u64>) -> SeqSet {
        let mut set = SeqSet::with_capacity(64);
        for n in ns {
            set.insert(n);
        }
        set
    }

    /// A connection that received `before`, went down at 1000, was back at `back`, got a reset
    /// if `reset`, then received `after`.
    fn conn(before: &[u64], back: u64, reset: bool, after: &[u64]) -> ConnTally {
        let mut shared = ThreadTally::new();
        let mut tally = ConnTally::new(64);
        tally.ready = true;
        for &n in before {
            tally.record(Event { n, t: 1 }, 2, &mut shared);
        }
        tally.drops_us.push(1_000);
        tally.attempts_failed.push(Attempt {
            started_us: 1_100,
            ended_us: 1_101,
            error: Some(AttemptError::Refused),
        });
        tally.sessions.push(Attempt {
            started_us: back - 500,
            ended_us: back,
            error: None,
        });
        if reset {
            tally.reset();
        }
        for &n in after {
            tally.record(Event { n, t: 1 }, 2, &mut shared);
        }
        tally
    }

    #[test]
    fn resets_excuse_their_gap_and_nothing_else() {
        let ok = accepted(1..=10);
        let conns = vec![
            // Resumed: nothing lost; 11 arrived though its publish was never confirmed.
            (
                0,
                conn(&[1, 2, 3], 2_000, false, &[4, 5, 6, 7, 8, 9, 10, 11]),
            ),
            // Reset: 4 and 5 excused; 9 lost for real.
            (1, conn(&[1, 2, 3], 3_000, true, &[6, 7, 8, 10])),
            // Duplicate after the resume.
            (
                2,
                conn(&[1, 2, 3], 5_000, false, &[3, 4, 5, 6, 7, 8, 9, 10]),
            ),
        ];
        let figures = account(&conns, &ok, 1_000);
        assert_eq!((figures.ready, figures.dropped, figures.back), (3, 3, 3));
        let d = figures.delivery;
        assert_eq!(d.expected, 30);
        assert_eq!((d.lost, d.lost_to_resets, d.duplicated), (1, 2, 1));
        assert_eq!((d.delivered, d.unconfirmed), (11 + 7 + 11, 1));
        assert_eq!((d.resets, d.connections_reset), (1, 1));
        assert_eq!(figures.worst.len(), 2);
        assert_eq!(figures.failed_attempts.refused, 3);
        let b = figures.back_after_s;
        assert_eq!(
            (b.p50, b.p99, b.p100),
            (Some(0.002), Some(0.004), Some(0.004))
        );
        assert_eq!(figures.connect_ms.count, 3);
    }

    #[test]
    fn a_stream_that_never_came_back_leaves_100_percent_open() {
        let mut gone = conn(&[1], 2_000, false, &[]);
        gone.sessions.clear();
        let conns = vec![(0, conn(&[1], 2_000, false, &[2])), (1, gone)];
        let figures = account(&conns, &accepted(1..=2), 1_000);
        assert_eq!((figures.dropped, figures.back), (2, 1));
        assert_eq!(figures.back_after_s.p50, Some(0.001));
        assert_eq!(figures.back_after_s.p100, None);
        assert_eq!(figures.delivery.lost, 1);
    }
}
