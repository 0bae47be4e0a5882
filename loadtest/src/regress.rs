//! Regression checks and CSV: a run's figures compared with a saved `--out` JSON
//! (`--baseline FILE --max-regress PCT`), and the same figures as CSV rows (`--format csv`).
//!
//! Which figures, and which way is worse, is one table per mode ([`RUN_FIGURES`],
//! [`STORM_FIGURES`]): each names a JSON pointer into one run of the results, so the comparison
//! works on the JSON a run writes and on what an older harness wrote alike. Pure: values in,
//! verdicts and text out.

use std::fmt::{self, Write};

use serde_json::Value;

/// Which way a figure gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    /// Higher is worse (latency, memory, CPU, bytes).
    Higher,
    /// Lower is worse (throughput).
    Lower,
}

/// One compared figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figure {
    /// Its name in tables and CSV headers.
    pub name: &'static str,
    /// Where it is in one run's JSON.
    pub pointer: &'static str,
    /// Which way is worse.
    pub worse: Worse,
}

const fn higher(name: &'static str, pointer: &'static str) -> Figure {
    Figure {
        name,
        pointer,
        worse: Worse::Higher,
    }
}

/// The figures of `run` and `compare` that a regression check compares.
pub const RUN_FIGURES: &[Figure] = &[
    higher("latency_p50_ms", "/delivery/latency_ms/p50"),
    higher("latency_p99_ms", "/delivery/latency_ms/p99"),
    higher("connect_p50_ms", "/connections/connect_ms/p50"),
    higher("connect_p99_ms", "/connections/connect_ms/p99"),
    higher("server_rss_mb_peak", "/resources/server_rss_mb_peak"),
    higher("server_cpu_pct", "/resources/server_cpu_pct"),
    higher("bytes_per_event", "/wire/total_per_event"),
    Figure {
        name: "deliveries_per_s",
        pointer: "/delivery/per_second",
        worse: Worse::Lower,
    },
];

/// The figures of `storm` that a regression check compares.
pub const STORM_FIGURES: &[Figure] = &[
    higher("back_p50_s", "/back_after_s/p50"),
    higher("back_p99_s", "/back_after_s/p99"),
    higher("back_p100_s", "/back_after_s/p100"),
    higher("reconnect_p99_ms", "/connect_ms/p99"),
    higher("server_rss_mb_peak", "/resources/server_rss_mb_peak"),
    higher("server_cpu_pct_peak", "/resources/server_cpu_pct_peak"),
];

/// CSV columns that say what a run was and whether it was clean (not compared).
const RUN_COLUMNS: &[(&str, &str)] = &[
    ("target", "/target"),
    ("transport", "/transport"),
    ("connections", "/plan/connections"),
    ("rate", "/plan/rate"),
    ("ready", "/connections/ready"),
    ("failed", "/connections/failed"),
    ("expected", "/delivery/expected"),
    ("delivered", "/delivery/delivered"),
    ("lost", "/delivery/lost"),
    ("duplicated", "/delivery/duplicated"),
    ("latency_p999_ms", "/delivery/latency_ms/p999"),
    ("load_average_1m", "/load_average/start/0"),
];

/// See [`RUN_COLUMNS`].
const STORM_COLUMNS: &[(&str, &str)] = &[
    ("target", "/target"),
    ("cut", "/storm/cut"),
    ("connections", "/plan/connections"),
    ("rate", "/plan/rate"),
    ("ready", "/ready"),
    ("dropped", "/dropped"),
    ("back", "/back"),
    ("failed_attempts", "/failed_attempts/total"),
    ("expected", "/delivery/expected"),
    ("delivered", "/delivery/delivered"),
    ("lost", "/delivery/lost"),
    ("lost_to_resets", "/delivery/lost_to_resets"),
    ("duplicated", "/delivery/duplicated"),
    ("load_average_1m", "/load_average/start/0"),
];

/// The figures and columns of a results document's `mode`.
pub fn figures_of(mode: &str) -> (&'static [Figure], &'static [(&'static str, &'static str)]) {
    if mode == "storm" {
        (STORM_FIGURES, STORM_COLUMNS)
    } else {
        (RUN_FIGURES, RUN_COLUMNS)
    }
}

/// One figure of one run against its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Which run (its index in `runs`).
    pub run: usize,
    /// Which figure.
    pub figure: Figure,
    /// The baseline's value (none: absent, null or 0, so no percentage can be taken).
    pub baseline: Option<f64>,
    /// This run's value (none: absent or null, e.g. streams that never came back).
    pub current: Option<f64>,
    /// How much worse, in percent of the baseline (negative: better).
    pub worse_by_pct: Option<f64>,
    /// Worse by more than the threshold, or missing where the baseline had it.
    pub regressed: bool,
}

/// The baseline cannot be compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegressError {
    /// Not a results document.
    NotResults(&'static str),
    /// Another mode or another set of runs.
    Mismatch(String),
}

impl fmt::Display for RegressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegressError::NotResults(what) => {
                write!(f, "the baseline is not a results file of --out: {what}")
            }
            RegressError::Mismatch(what) => write!(f, "the baseline does not match: {what}"),
        }
    }
}

impl std::error::Error for RegressError {}

/// Compares `current` (a results document as `--out` writes it) with `baseline`; a figure
/// regresses when it is worse by more than `max_pct` percent of the baseline's value.
pub fn compare(
    baseline: &Value,
    current: &Value,
    max_pct: f64,
) -> Result<Vec<Comparison>, RegressError> {
    let mode = |doc: &Value| doc.get("mode").and_then(Value::as_str).map(str::to_owned);
    let base_mode = mode(baseline).ok_or(RegressError::NotResults("no \"mode\""))?;
    let this_mode = mode(current).ok_or(RegressError::NotResults("no \"mode\" in this run"))?;
    if base_mode != this_mode {
        return Err(RegressError::Mismatch(format!(
            "it is a {base_mode} and this is a {this_mode}"
        )));
    }
    let runs = |doc: &Value| doc.get("runs").and_then(Value::as_array).cloned();
    let base_runs = runs(baseline).ok_or(RegressError::NotResults("no \"runs\""))?;
    let this_runs = runs(current).ok_or(RegressError::NotResults("no \"runs\" in this run"))?;
    if base_runs.len() != this_runs.len() {
        return Err(RegressError::Mismatch(format!(
            "{} runs there, {} here",
            base_runs.len(),
            this_runs.len()
        )));
    }
    let (figures, _) = figures_of(&this_mode);
    let mut comparisons = Vec::new();
    for (run, (base, this)) in base_runs.iter().zip(&this_runs).enumerate() {
        for key in ["/target", "/transport"] {
            if base.pointer(key) != this.pointer(key) {
                return Err(RegressError::Mismatch(format!(
                    "run {run}: {key} is {} there, {} here",
                    base.pointer(key).unwrap_or(&Value::Null),
                    this.pointer(key).unwrap_or(&Value::Null)
                )));
            }
        }
        for &figure in figures {
            let number = |doc: &Value| doc.pointer(figure.pointer).and_then(Value::as_f64);
            let baseline = number(base).filter(|&b| b > 0.0);
            let current = number(this);
            let worse_by_pct = baseline.zip(current).map(|(b, c)| match figure.worse {
                Worse::Higher => (c - b) / b * 100.0,
                Worse::Lower => (b - c) / b * 100.0,
            });
            let regressed = match (baseline, worse_by_pct) {
                (Some(_), Some(pct)) => pct > max_pct,
                // The baseline had a figure and this run has none (e.g. never all back).
                (Some(_), None) => true,
                (None, _) => false,
            };
            comparisons.push(Comparison {
                run,
                figure,
                baseline,
                current,
                worse_by_pct,
                regressed,
            });
        }
    }
    Ok(comparisons)
}

/// The comparisons as a text table.
pub fn table(comparisons: &[Comparison], max_pct: f64) -> String {
    let mut out = format!("regression check (worse by more than {max_pct}% fails):\n");
    let value = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    for c in comparisons {
        let verdict = match (c.regressed, c.baseline) {
            (true, _) => "REGRESSED",
            (false, None) => "not compared (no baseline figure)",
            (false, Some(_)) => "ok",
        };
        let _ = writeln!(
            out,
            "  run {} {:<22} baseline {:>10}  now {:>10}  worse by {:>8}  {verdict}",
            c.run,
            c.figure.name,
            value(c.baseline),
            value(c.current),
            c.worse_by_pct
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%")),
        );
    }
    out
}

/// A results document's runs as CSV: a header, then one row per run.
pub fn csv(document: &Value) -> String {
    let mode = document
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("run");
    let (figures, columns) = figures_of(mode);
    let names: Vec<&str> = columns
        .iter()
        .map(|(name, _)| *name)
        .chain(figures.iter().map(|f| f.name))
        .collect();
    let mut out = names.join(",");
    out.push('\n');
    let pointers: Vec<&str> = columns
        .iter()
        .map(|(_, pointer)| *pointer)
        .chain(figures.iter().map(|f| f.pointer))
        .collect();
    for run in document
        .get("runs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let cells: Vec<String> = pointers
            .iter()
            .map(|pointer| cell(run.pointer(pointer)))
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// One CSV cell: numbers as they are, strings quoted when they need it, null as empty.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) if text.contains([',', '"', '\n']) => {
            format!("\"{}\"", text.replace('"', "\"\""))
        }
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn results(p99: f64, rss: f64, per_second: f64) -> Value {
        json!({
            "mode": "run",
            "runs": [{
                "target": "sluice", "transport": "sse",
                "plan": {"connections": 10, "rate": 5.0},
                "connections": {"ready": 10, "failed": 0, "connect_ms": {"p50": 1.0, "p99": 2.0}},
                "delivery": {"latency_ms": {"p50": 1.0, "p99": p99, "p999": 3.0}, "per_second": per_second,
                             "expected": 50, "delivered": 50, "lost": 0, "duplicated": 0},
                "resources": {"server_rss_mb_peak": rss, "server_cpu_pct": 0.0},
                "wire": {"total_per_event": 100.0},
                "load_average": {"start": [0.5, 0.4, 0.3]}
            }]
        })
    }

    #[test]
    fn worse_past_the_threshold_regresses_either_way() {
        let base = results(10.0, 100.0, 1000.0);
        let same = compare(&base, &results(10.5, 104.0, 990.0), 10.0).expect("comparable");
        assert!(same.iter().all(|c| !c.regressed), "{same:?}");
        // CPU was 0 in the baseline: not compared.
        let cpu = same.iter().find(|c| c.figure.name == "server_cpu_pct");
        assert_eq!(cpu.map(|c| c.baseline), Some(None));

        let slower = compare(&base, &results(12.0, 100.0, 1000.0), 10.0).expect("comparable");
        let regressed: Vec<_> = slower.iter().filter(|c| c.regressed).collect();
        assert_eq!(regressed.len(), 1);
        assert_eq!(regressed[0].figure.name, "latency_p99_ms");
        assert_eq!(regressed[0].worse_by_pct, Some(20.0));

        let less_throughput = compare(&base, &results(10.0, 100.0, 800.0), 10.0).expect("ok");
        let regressed: Vec<_> = less_throughput.iter().filter(|c| c.regressed).collect();
        assert_eq!(regressed.len(), 1);
        assert_eq!(regressed[0].figure.name, "deliveries_per_s");
        assert!(table(&less_throughput, 10.0).contains("REGRESSED"));
    }

    #[test]
    fn mismatched_baselines_are_refused() {
        let base = results(1.0, 1.0, 1.0);
        let mut storm = results(1.0, 1.0, 1.0);
        storm["mode"] = json!("storm");
        assert!(matches!(
            compare(&base, &storm, 5.0),
            Err(RegressError::Mismatch(_))
        ));
        assert!(compare(&json!({}), &base, 5.0).is_err());
        let mut other_target = results(1.0, 1.0, 1.0);
        other_target["runs"][0]["target"] = json!("nchan");
        assert!(compare(&base, &other_target, 5.0).is_err());
    }

    #[test]
    fn csv_rows() {
        let text = csv(&results(10.0, 100.0, 1000.0));
        let mut lines = text.lines();
        let header = lines.next().expect("a header");
        assert!(header.starts_with("target,transport,connections,rate,"));
        assert!(header.ends_with("deliveries_per_s"));
        let row = lines.next().expect("a row");
        assert!(
            row.starts_with("sluice,sse,10,5.0,10,0,50,50,0,0,3.0,0.5,"),
            "{row}"
        );
        assert_eq!(
            row.split(',').count(),
            header.split(',').count(),
            "{header}\n{row}"
        );
        assert_eq!(cell(Some(&json!("a,b"))), "\"a,b\"");
        assert_eq!(cell(None), "");
    }
}
