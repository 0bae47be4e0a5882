//! `--ramp RATE/s`: the connections open on a schedule, and the connect latency is shown second
//! by second over the ramp, so a user sees where the server's accept path starts to fall behind
//! (latency climbing, attempts failing) as the connection count grows.
//!
//! Pure: each connection's first attempt time and connect time in, one bin per second out.

use std::collections::BTreeMap;

use crate::report::Percentiles;
use crate::tally::{new_histogram, ConnTally};

/// The ramp, second by second.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ramp {
    /// Connections opened per second, as asked.
    pub rate: f64,
    /// One bin per second since the first attempt.
    pub bins: Vec<Bin>,
}

/// The connections whose first attempt fell in one second of the ramp.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bin {
    /// Seconds since the first attempt (this bin covers `[second, second + 1)`).
    pub second: u64,
    /// Connections that started in it.
    pub opened: u64,
    /// Of those, the ones that became ready.
    pub ready: u64,
    /// First attempt → ready of those, milliseconds.
    pub connect_ms: Percentiles,
}

/// Bins the connections of a run by the second their first attempt started in.
pub fn bins(rate: f64, conns: &[(usize, ConnTally)]) -> Ramp {
    let start = conns
        .iter()
        .map(|(_, t)| t.opened_us)
        .filter(|&us| us > 0)
        .min()
        .unwrap_or(0);
    let mut by_second: BTreeMap<u64, (u64, u64, hdrhistogram::Histogram<u64>)> = BTreeMap::new();
    for (_, tally) in conns {
        if tally.opened_us == 0 {
            continue;
        }
        let second = (tally.opened_us - start) / 1_000_000;
        let bin = by_second
            .entry(second)
            .or_insert_with(|| (0, 0, new_histogram()));
        bin.0 += 1;
        if let Some(us) = tally.connect_us {
            bin.1 += 1;
            bin.2.saturating_record(us.max(1));
        }
    }
    Ramp {
        rate,
        bins: by_second
            .into_iter()
            .map(|(second, (opened, ready, histogram))| Bin {
                second,
                opened,
                ready,
                connect_ms: Percentiles::of_us(&histogram),
            })
            .collect(),
    }
}

/// The bins as text lines.
pub fn lines(ramp: &Ramp) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "ramp         {} connections/s; connect ms per second of the ramp:\n",
        ramp.rate
    );
    for bin in &ramp.bins {
        let c = &bin.connect_ms;
        let _ = writeln!(
            out,
            "  {:>4} s  {:>6} opened {:>6} ready  p50 {:>8.2}  p99 {:>8.2}  max {:>8.2}",
            bin.second, bin.opened, bin.ready, c.p50, c.p99, c.max
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(opened_us: u64, connect_us: Option<u64>) -> (usize, ConnTally) {
        (
            0,
            ConnTally {
                opened_us,
                connect_us,
                ..ConnTally::default()
            },
        )
    }

    #[test]
    fn one_bin_per_second_of_the_ramp() {
        let conns = [
            conn(5_000_000, Some(1_000)),
            conn(5_400_000, Some(3_000)),
            conn(6_100_000, None),
            conn(8_000_000, Some(20_000)),
            conn(0, None),
        ];
        let ramp = bins(2.0, &conns);
        let seen: Vec<_> = ramp
            .bins
            .iter()
            .map(|b| (b.second, b.opened, b.ready, b.connect_ms.max.round() as u64))
            .collect();
        assert_eq!(seen, [(0, 2, 2, 3), (1, 1, 0, 0), (3, 1, 1, 20)]);
        assert!(lines(&ramp).contains("opened"));
    }
}
