//! From the per-connection tallies to the report's connection, delivery and wire figures, with
//! the stalled connections (`--stall`) counted apart: once ready they never read again, so
//! counted with the others they would show as losses and hide what the healthy ones got.
//!
//! Pure: the tallies, the accepted sequence numbers and the histograms in, figures out. `run`
//! gathers the inputs; `report` shows the result.

use crate::plan::Stall;
use crate::report::{ConnIssue, Delivery, Listening, Percentiles, Stalled, Wire};
use crate::tally::{ConnTally, SeqSet, ThreadTally};

/// Connections listed in [`Accounts::worst`] at most.
const WORST_LISTED: usize = 20;

/// The figures drawn from every connection's tally.
#[derive(Debug, Clone)]
pub struct Accounts {
    /// Connections that became ready, stalled ones included.
    pub ready: usize,
    /// Connections that never became ready, stalled ones included.
    pub failed: usize,
    /// The first failure's reason.
    pub first_failure: Option<String>,
    /// Reopened healthy connections (a stalled one is never reopened).
    pub reconnects: u64,
    /// In-band `reset` notices on healthy connections.
    pub resets: u64,
    /// In-band `dropped` notices on healthy connections.
    pub dropped_notices: u64,
    /// What the healthy connections received.
    pub delivery: Delivery,
    /// The healthy connections' bytes on the wire (failed ones included: they used the wire).
    pub wire: Wire,
    /// Healthy connections that lost or duplicated events, the first [`WORST_LISTED`].
    pub worst: Vec<ConnIssue>,
    /// The stalled connections, when the plan stalls some.
    pub stalled: Option<Stalled>,
}

/// Adds up `conns` (index, tally) against the `accepted` publishes. `histograms` gives the
/// healthy connections' latency (stalled ones record none) and the delivery span;
/// `publish_started_us` is when publishing began (unix µs), to time the cut-offs from.
pub fn account(
    conns: &[(usize, ConnTally)],
    accepted: &SeqSet,
    histograms: &ThreadTally,
    publish_started_us: u64,
    stall: Stall,
) -> Accounts {
    let mut accounts = Accounts {
        ready: 0,
        failed: 0,
        first_failure: None,
        reconnects: 0,
        resets: 0,
        dropped_notices: 0,
        delivery: Delivery {
            connections: 0,
            expected: 0,
            delivered: 0,
            lost: 0,
            duplicated: 0,
            unconfirmed: 0,
            connections_with_loss: 0,
            connections_with_duplicates: 0,
            per_second: 0.0,
            latency_ms: Percentiles::of_us(&histograms.latency),
        },
        wire: Wire {
            bytes_read: 0,
            bytes_written: 0,
            read_per_event: 0.0,
            total_per_event: 0.0,
            reads: 0,
            reads_per_event: 0.0,
        },
        worst: Vec::new(),
        stalled: None,
    };
    let (mut chosen, mut stalled_ready) = (0, 0);
    let mut cut_off_after_us = Vec::new();
    let delivery = &mut accounts.delivery;
    let wire = &mut accounts.wire;
    for (index, tally) in conns {
        if tally.ready {
            accounts.ready += 1;
        } else {
            accounts.failed += 1;
            if accounts.first_failure.is_none() {
                accounts.first_failure = tally.failure.clone();
            }
        }
        if tally.stalled {
            chosen += 1;
            stalled_ready += usize::from(tally.ready);
            if let Some(at) = tally.cut_off_at_us {
                cut_off_after_us.push(at.saturating_sub(publish_started_us));
            }
            continue;
        }
        wire.bytes_read += tally.bytes_read;
        wire.bytes_written += tally.bytes_written;
        wire.reads += tally.reads;
        accounts.reconnects += tally.reconnects;
        accounts.resets += tally.resets;
        accounts.dropped_notices += tally.dropped_notices;
        delivery.delivered += tally.delivered;
        if !tally.ready {
            continue;
        }
        delivery.connections += 1;
        delivery.expected += accepted.len();
        let lost = accepted.missing_from(&tally.seen);
        delivery.lost += lost;
        delivery.duplicated += tally.duplicates;
        delivery.unconfirmed += tally.seen.missing_from(accepted);
        delivery.connections_with_loss += u64::from(lost > 0);
        delivery.connections_with_duplicates += u64::from(tally.duplicates > 0);
        if (lost > 0 || tally.duplicates > 0) && accounts.worst.len() < WORST_LISTED {
            accounts.worst.push(ConnIssue {
                index: *index,
                lost,
                duplicated: tally.duplicates,
                reconnects: tally.reconnects,
            });
        }
    }
    if delivery.delivered > 0 {
        let delivered = delivery.delivered as f64;
        wire.read_per_event = wire.bytes_read as f64 / delivered;
        wire.total_per_event = (wire.bytes_read + wire.bytes_written) as f64 / delivered;
        wire.reads_per_event = wire.reads as f64 / delivered;
    }
    let first_send_us = histograms.first_send_us;
    let span_us = histograms.last_delivery_us.saturating_sub(first_send_us);
    if span_us > 0 && first_send_us > 0 {
        delivery.per_second = delivery.delivered as f64 / (span_us as f64 / 1e6);
    }
    if stall.is_some() {
        cut_off_after_us.sort_unstable();
        accounts.stalled = Some(Stalled {
            share: stall.fraction(),
            chosen,
            ready: stalled_ready,
            cut_off: cut_off_after_us.len(),
            cut_off_after_s: spread_s(&cut_off_after_us),
        });
    }
    accounts
}

/// A listening run's figures (custom target without a publish hook): events per second per
/// connection over `seconds`, and gaps in numeric ids.
pub fn listening(conns: &[(usize, ConnTally)], seconds: f64) -> Listening {
    let mut figures = Listening {
        seconds,
        events: 0,
        per_connection_per_s: [0.0; 3],
        id_gaps: 0,
        ids_skipped: 0,
        connections_with_gaps: 0,
        events_without_numeric_id: 0,
    };
    let mut rates: Vec<f64> = Vec::with_capacity(conns.len());
    for (_, tally) in conns.iter().filter(|(_, t)| t.ready && !t.stalled) {
        let listen = &tally.listen;
        figures.events += listen.events;
        figures.id_gaps += listen.gaps;
        figures.ids_skipped += listen.skipped;
        figures.connections_with_gaps += u64::from(listen.gaps > 0);
        figures.events_without_numeric_id += listen.non_numeric;
        if seconds > 0.0 {
            rates.push(listen.events as f64 / seconds);
        }
    }
    if !rates.is_empty() {
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        figures.per_connection_per_s = [min, mean, max];
    }
    figures
}

/// First, median and last of sorted microsecond figures, in seconds.
fn spread_s(sorted_us: &[u64]) -> Option<[f64; 3]> {
    let seconds = |us: u64| us as f64 / 1e6;
    let (&first, &last) = (sorted_us.first()?, sorted_us.last()?);
    Some([
        seconds(first),
        seconds(sorted_us[sorted_us.len() / 2]),
        seconds(last),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Delivery as Event;

    /// A ready connection that received `ns` (each at 1 ms latency).
    fn received(ns: &[u64], shared: &mut ThreadTally) -> ConnTally {
        let mut tally = ConnTally::new(8);
        tally.ready = true;
        tally.bytes_read = 100 * ns.len() as u64;
        for &n in ns {
            tally.record(
                Event {
                    n,
                    t: 1_000_000 + n,
                },
                1_001_000 + n,
                shared,
            );
        }
        tally
    }

    fn accepted(ns: impl IntoIterator<Item = u64>) -> SeqSet {
        let mut set = SeqSet::with_capacity(8);
        for n in ns {
            set.insert(n);
        }
        set
    }

    #[test]
    fn stalled_connections_are_left_out_of_the_delivery_figures() {
        let mut shared = ThreadTally::new();
        let stall = Stall::from_fraction(0.5).expect("valid");
        let healthy = [
            received(&[1, 2, 3], &mut shared),
            received(&[1, 2, 3], &mut shared),
        ];
        // Stalled: ready, received nothing, cut off 2.5 s after the first publish.
        let cut = ConnTally {
            ready: true,
            stalled: true,
            cut_off_at_us: Some(12_500_000),
            bytes_read: 300,
            ..ConnTally::default()
        };
        // Stalled, never cut off.
        let open = ConnTally {
            ready: true,
            stalled: true,
            ..ConnTally::default()
        };
        let [first, second] = healthy;
        let conns = vec![(0, first), (1, cut), (2, second), (3, open)];
        let accounts = account(&conns, &accepted(1..=3), &shared, 10_000_000, stall);
        assert_eq!(accounts.ready, 4);
        assert_eq!(accounts.failed, 0);
        let d = &accounts.delivery;
        assert_eq!(d.connections, 2);
        assert_eq!(
            (d.expected, d.delivered, d.lost, d.duplicated),
            (6, 6, 0, 0)
        );
        assert_eq!(d.latency_ms.count, 6);
        assert_eq!(
            accounts.wire.bytes_read, 600,
            "stalled bytes are not counted"
        );
        assert!(accounts.worst.is_empty());
        let stalled = accounts.stalled.expect("a stalled section");
        assert_eq!((stalled.chosen, stalled.ready, stalled.cut_off), (2, 2, 1));
        assert_eq!(stalled.cut_off_after_s, Some([2.5, 2.5, 2.5]));
        assert_eq!(stalled.share, 0.5);
    }

    #[test]
    fn healthy_losses_and_duplicates_still_count() {
        let mut shared = ThreadTally::new();
        let short = received(&[1, 3, 3], &mut shared);
        let failed = ConnTally {
            failure: Some("refused".into()),
            stalled: true,
            ..ConnTally::default()
        };
        let conns = vec![(7, short), (8, failed)];
        let stall = Stall::from_fraction(0.5).expect("valid");
        let accounts = account(&conns, &accepted(1..=3), &shared, 0, stall);
        assert_eq!((accounts.ready, accounts.failed), (1, 1));
        assert_eq!(accounts.first_failure.as_deref(), Some("refused"));
        let d = &accounts.delivery;
        assert_eq!((d.connections, d.lost, d.duplicated), (1, 1, 1));
        assert_eq!(accounts.worst.len(), 1);
        assert_eq!(accounts.worst[0].index, 7);
        let stalled = accounts.stalled.expect("a stalled section");
        assert_eq!((stalled.chosen, stalled.ready, stalled.cut_off), (1, 0, 0));
        assert_eq!(stalled.cut_off_after_s, None);
    }

    #[test]
    fn without_stalling_every_ready_connection_counts() {
        let mut shared = ThreadTally::new();
        let conns: Vec<_> = (0..3)
            .map(|i| (i, received(&[1, 2], &mut shared)))
            .collect();
        let accounts = account(&conns, &accepted(1..=2), &shared, 0, Stall::NONE);
        assert_eq!(accounts.delivery.connections, 3);
        assert_eq!(accounts.delivery.delivered, 6);
        assert!(accounts.stalled.is_none());
    }

    #[test]
    fn spread_of_cut_off_times() {
        assert_eq!(spread_s(&[]), None);
        assert_eq!(
            spread_s(&[1_000_000, 2_000_000, 4_000_000]),
            Some([1.0, 2.0, 4.0])
        );
    }
}
