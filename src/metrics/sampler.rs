//! The metrics sampler: one thread for the whole process (never per connection) that reads
//! `sysinfo` every `--metrics-interval`, publishes one pre-serialized `metrics` event on the
//! `metrics` channel, and keeps the latest sample for Prometheus.
//!
//! It runs on its own OS thread because a `sysinfo` refresh reads `/proc` files (blocking IO)
//! and must never stall a worker's event loop. CPU usage is measured over the interval between
//! two refreshes, not since boot.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::bus::Bus;
use crate::hub::{Hub, Topic};
use crate::shutdown::Shutdown;
use crate::sse::EventName;

/// The channel samples are published on.
pub const CHANNEL: &str = "metrics";

/// How often the sampler looks at the shutdown signal while waiting for the next sample.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// Memory figures, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Memory {
    /// Physical memory.
    pub total: u64,
    /// In use (total minus available).
    pub used: u64,
    /// `used / total`, in percent.
    pub percentage: f64,
}

/// Sluice's own figures.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    /// Resident set size, in bytes.
    pub rss: u64,
    /// Open streams.
    pub connections: usize,
    /// Events published per second over the last interval.
    pub published_per_sec: f64,
    /// Frames handed to connections per second over the last interval.
    pub delivered_per_sec: f64,
}

/// One sample, as sent in the `metrics` event.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Sample {
    /// System CPU use over the last interval, in percent of all cores.
    pub cpu: f64,
    /// System memory.
    pub memory: Memory,
    /// Seconds since Sluice started.
    pub uptime: u64,
    /// When the sample was taken (RFC 3339).
    pub timestamp: String,
    /// Sluice's own figures.
    pub process: Process,
}

/// The latest sample, shared with the Prometheus endpoint.
#[derive(Debug, Default)]
pub struct Sampler {
    latest: Mutex<Option<Sample>>,
}

impl Sampler {
    /// The most recent sample, if one was taken.
    pub fn latest(&self) -> Option<Sample> {
        self.latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn store(&self, sample: Sample) {
        *self
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sample);
    }

    /// Starts the sampler thread. It takes its first sample at once and stops on shutdown.
    /// Samples are published with [`Bus::publish_sample`].
    pub fn spawn(
        bus: Bus,
        interval: Duration,
        mut shutdown: Shutdown,
    ) -> std::io::Result<Arc<Sampler>> {
        let sampler = Arc::new(Sampler::default());
        let shared = sampler.clone();
        std::thread::Builder::new()
            .name("sluice-metrics".to_owned())
            .spawn(move || {
                let topic = Topic::parse(CHANNEL).expect("a valid channel name");
                let name = EventName::parse(CHANNEL).expect("a valid event name");
                let pid = sysinfo::get_current_pid().ok();
                let started = Instant::now();
                let mut system = match System::new() {
                    Ok(system) => system,
                    Err(error) => {
                        tracing::error!(%error, "system metrics are unavailable on this platform");
                        return;
                    }
                };
                system.refresh_cpu_usage();
                let hub = bus.hub();
                let mut last = (Instant::now(), hub.snapshot());
                // A short first wait gives the CPU figure a real interval to measure.
                let mut wait = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(100));
                loop {
                    if sleep_unless_shutdown(wait, &mut shutdown) {
                        return;
                    }
                    wait = interval;
                    let sample = take(&mut system, pid, hub, &mut last, started);
                    let Ok(data) = serde_json::to_string(&sample) else {
                        continue;
                    };
                    // Failure means overload or shutdown; the next sample tries again.
                    let _ = bus.publish_sample(&topic, &name, &data);
                    shared.store(sample);
                }
            })?;
        Ok(sampler)
    }
}

/// Sleeps for `total`, waking early on shutdown. Returns whether shutdown fired.
fn sleep_unless_shutdown(total: Duration, shutdown: &mut Shutdown) -> bool {
    let deadline = Instant::now() + total;
    loop {
        if shutdown.is_fired() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(SHUTDOWN_POLL));
    }
}

fn take(
    system: &mut System,
    pid: Option<Pid>,
    hub: &Hub,
    last: &mut (Instant, crate::hub::HubSnapshot),
    started: Instant,
) -> Sample {
    system.refresh_cpu_usage();
    system.refresh_memory();
    let rss = pid
        .and_then(|pid| {
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory(),
            );
            system.process(pid).map(|p| p.memory())
        })
        .unwrap_or(0);
    let now = Instant::now();
    let snapshot = hub.snapshot();
    let elapsed = now.duration_since(last.0).as_secs_f64().max(1e-3);
    let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / elapsed;
    let process = Process {
        rss,
        connections: snapshot.total_connections,
        published_per_sec: round(rate(snapshot.events_published, last.1.events_published)),
        delivered_per_sec: round(rate(snapshot.frames_delivered, last.1.frames_delivered)),
    };
    *last = (now, snapshot);
    let total = system.total_memory();
    let used = system.used_memory();
    Sample {
        cpu: round(f64::from(system.global_cpu_usage()).clamp(0.0, 100.0)),
        memory: Memory {
            total,
            used,
            percentage: percent(used, total),
        },
        uptime: started.elapsed().as_secs(),
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        process,
    }
}

/// `part / whole` in percent, two decimals; 0 when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    round(part as f64 * 100.0 / whole as f64)
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(5, 0), 0.0);
    }

    #[test]
    fn sample_shape() {
        let sample = Sample {
            cpu: 12.5,
            memory: Memory {
                total: 100,
                used: 40,
                percentage: 40.0,
            },
            uptime: 7,
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            process: Process {
                rss: 1,
                connections: 2,
                published_per_sec: 3.0,
                delivered_per_sec: 4.0,
            },
        };
        let json: serde_json::Value = serde_json::to_value(&sample).unwrap();
        assert_eq!(json["cpu"], 12.5);
        assert_eq!(json["memory"]["total"], 100);
        assert_eq!(json["memory"]["used"], 40);
        assert_eq!(json["memory"]["percentage"], 40.0);
        assert_eq!(json["uptime"], 7);
        assert_eq!(json["process"]["publishedPerSec"], 3.0);
        assert_eq!(json["process"]["deliveredPerSec"], 4.0);
    }
}
