//! Memory and CPU of a process tree, from `/proc/<pid>/status` (`VmRSS`) and `/proc/<pid>/stat`
//! (`utime + stime`), summed over the process and its descendants (nginx's master and workers),
//! plus the machine's load average and the kernel's TCP buffer memory (`/proc/net/sockstat`),
//! which no RSS includes.
//!
//! Reads only; a process that is gone reads as zeros. Knows nothing of the run.

use std::time::{Duration, Instant};

/// Memory and CPU time of a process tree at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// User + system CPU time used so far.
    pub cpu: Duration,
}

/// The usage of `root` and every process below it.
pub fn tree_usage(root: u32) -> Usage {
    let mut usage = Usage::default();
    for pid in std::iter::once(root).chain(descendants(root)) {
        let (rss_kib, cpu) = (rss_kib(pid), cpu_time(pid));
        usage.rss_kib += rss_kib;
        usage.cpu += cpu;
    }
    usage
}

/// This process's usage.
pub fn own_usage() -> Usage {
    let pid = std::process::id();
    Usage {
        rss_kib: rss_kib(pid),
        cpu: cpu_time(pid),
    }
}

/// CPU use between two readings, in percent of one core (as `top` shows it).
pub fn cpu_percent(before: (Instant, Usage), after: (Instant, Usage)) -> f64 {
    let wall = after.0.saturating_duration_since(before.0).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    after.1.cpu.saturating_sub(before.1.cpu).as_secs_f64() / wall * 100.0
}

/// Every process whose parent chain leads to `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent(pid)?)))
        .collect();
    let mut found = vec![root];
    let mut at = 0;
    while at < found.len() {
        let current = found[at];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == current)
                .map(|(pid, _)| *pid),
        );
        at += 1;
    }
    found.remove(0);
    found
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and parens).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| {
        rest.split_whitespace().map(str::to_owned).collect()
    })
}

fn parent(pid: u32) -> Option<u32> {
    // After ')': state (field 3 of proc(5)) is index 0, ppid (field 4) index 1.
    stat_fields(pid).get(1)?.parse().ok()
}

/// `utime + stime` (fields 14 and 15 of proc(5)).
fn cpu_time(pid: u32) -> Duration {
    let fields = stat_fields(pid);
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let total = ticks(11) + ticks(12);
    Duration::from_secs_f64(total as f64 / clock_ticks_per_second() as f64)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Memory the kernel holds for TCP socket buffers, machine-wide (`TCP: … mem <pages>` in
/// `/proc/net/sockstat`), KiB. Bytes a stalled reader has not read sit here, not in any RSS.
pub fn tcp_buffers_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    sockstat_tcp_pages(&text) * page_size() / 1024
}

/// The `mem` figure (pages) of the `TCP:` line.
fn sockstat_tcp_pages(sockstat: &str) -> u64 {
    let Some(line) = sockstat.lines().find(|l| l.starts_with("TCP:")) else {
        return 0;
    };
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mem" {
            return words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    0
}

/// The page size as `getconf` reports it (no libc here); 4096 if it cannot tell.
fn page_size() -> u64 {
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| getconf("PAGESIZE").unwrap_or(4096))
}

/// A positive number from `getconf NAME`.
fn getconf(name: &str) -> Option<u64> {
    std::process::Command::new("getconf")
        .arg(name)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&value| value > 0)
}

/// `sysconf(_SC_CLK_TCK)` as `getconf` reports it (no libc here); 100 on every Linux we know.
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| getconf("CLK_TCK").unwrap_or(100))
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    [
        values.next().unwrap_or(0.0),
        values.next().unwrap_or(0.0),
        values.next().unwrap_or(0.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let usage = own_usage();
        assert!(usage.rss_kib > 0);
        let tree = tree_usage(std::process::id());
        // The tree includes this process; other test threads may free memory between the two
        // reads, so the later one can be a little lower, never far.
        assert!(
            tree.rss_kib >= usage.rss_kib / 2,
            "{} vs {}",
            tree.rss_kib,
            usage.rss_kib
        );
        assert!(load_average()[0] >= 0.0);
    }

    #[test]
    fn sockstat_tcp_memory() {
        let text =
            "sockets: used 11\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 27\nUDP: inuse 0 mem 3\n";
        assert_eq!(sockstat_tcp_pages(text), 27);
        assert_eq!(sockstat_tcp_pages("UDP: inuse 0 mem 3\n"), 0);
        assert!(page_size() >= 4096);
    }

    #[test]
    fn finds_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let found = descendants(std::process::id()).contains(&child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found);
    }

    #[test]
    fn cpu_percent_of_a_second() {
        let t0 = Instant::now();
        let before = Usage::default();
        let after = Usage {
            rss_kib: 0,
            cpu: Duration::from_millis(500),
        };
        let pct = cpu_percent((t0, before), (t0 + Duration::from_secs(1), after));
        assert!((pct - 50.0).abs() < 1e-9);
    }
}
