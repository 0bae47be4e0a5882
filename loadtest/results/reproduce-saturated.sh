#!/usr/bin/env bash
# The saturated, pinned workload of docs/benchmarks.md ("Saturated, pinned: Sluice, Nchan and the
# minimal server"): 1000 SSE subscribers, `--rate max` with 1, 4 and 16 publishers in flight,
# against Sluice (`--workers=1`), nginx + Nchan (one worker), the reference server `minimal`
# (one thread, one write per delivery, TCP_NODELAY) and `minimal-nagle` (the same, Nagle on).
# The server runs on CPU $SERVER_CPUS (default 1) and the harness on CPU $CLIENT_CPUS (default
# 0). The targets run side by side in one pass: each repetition runs every target and publisher
# count once, in a rotated order, so that drift on the shared machine hits every target alike.
# Takes about 6 minutes with the defaults (3 repetitions of 12 runs of 8 s; the pass
# committed in 20261202T1338Z-saturated/ took 6).
#
# WORKLOAD=same-rate runs the pinned setup at one publish rate that every target sustains
# (RATE events/s, default 250, over 1, 4 or 16 publisher connections): when a server delivers
# faster than the one-core harness reads, `--rate max` measures the harness (its streams fall
# behind and are cut off as slow consumers), so latency is compared at the same load.
#
# WORKLOAD=paced runs the paced comparisons for the same four targets instead (unpinned, each
# server with its default workers; the minimal server is one thread either way): 1000
# subscribers × 100 events/s and 9000 × 10 events/s, 20 s each, REPS times (about 10 minutes
# with REPS=3).
#
# Every run's printed output (`NAME.txt`: the command, the load average before and after, the
# exit status) and its `--out` JSON (`NAME.json`) land in the directory given as the first
# argument, default loadtest/results/<UTC date and time>-saturated/ (or -paced/); `summary.md`
# there is the table: per target and workload the median over the repetitions of the server's
# CPU per delivery, p99 latency and deliveries/s, and the CPU-per-delivery ratios to minimal and
# to Nchan. Run from the workspace root after `cargo build --release --workspace` (it builds
# sluice, sluice-loadtest and sluice-minimal into target/release/); nginx-light and
# libnginx-mod-nchan must be installed, and python3 for the summary. REPS, DURATION, SERVER_CPUS
# and CLIENT_CPUS override the defaults.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${SLUICE_LOADTEST_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice-loadtest}
workload=${WORKLOAD:-saturated}
reps=${REPS:-3}
server_cpus=${SERVER_CPUS:-1}
same_rate=${RATE:-250}
client_cpus=${CLIENT_CPUS:-0}
out=${1:-loadtest/results/$(date -u +%Y%m%dT%H%MZ)-$workload}
mkdir -p "$out"

# shellcheck source=lib.sh
source "loadtest/results/lib.sh"

# The arguments that make each target the one-core server of the saturated workload.
target_args() {
  case $1 in
    sluice) echo "--target sluice --server-arg=--workers=1" ;;
    nchan) echo "--target nchan --nginx-workers 1" ;;
    *) echo "--target $1" ;;
  esac
}

targets=(sluice nchan minimal minimal-nagle)
case $workload in
  saturated)
    duration=${DURATION:-8s}
    loads=(p1 p4 p16)
    ;;
  paced)
    duration=${DURATION:-20s}
    loads=(c1000 c9000)
    ;;
  same-rate)
    duration=${DURATION:-8s}
    loads=(i1 i4 i16)
    ;;
  *)
    echo "WORKLOAD must be saturated, same-rate or paced" >&2
    exit 2
    ;;
esac

echo "# $workload: ${#targets[@]} targets × ${#loads[@]} loads × $reps repetitions into $out"
for ((rep = 1; rep <= reps; rep++)); do
  for load in "${loads[@]}"; do
    # Rotate the order each repetition: no target always runs first or right after another.
    for ((i = 0; i < ${#targets[@]}; i++)); do
      target=${targets[$(((i + rep - 1) % ${#targets[@]}))]}
      name="$target-$load-r$rep"
      case $load in
        p*)
          # shellcheck disable=SC2046
          run "$name" run $(target_args "$target") --spawn --connections 1000 --rate max \
            --publishers "${load#p}" --duration "$duration" --drain 10s \
            --server-cpus "$server_cpus" --client-cpus "$client_cpus"
          ;;
        i*)
          # shellcheck disable=SC2046
          run "$name" run $(target_args "$target") --spawn --connections 1000 --rate "$same_rate" \
            --publishers "${load#i}" --duration "$duration" --drain 10s \
            --server-cpus "$server_cpus" --client-cpus "$client_cpus"
          ;;
        c1000)
          run "$name" run --target "$target" --spawn --connections 1000 --rate 100 \
            --duration "$duration"
          ;;
        c9000)
          run "$name" run --target "$target" --spawn --connections 9000 --rate 10 \
            --duration "$duration"
          ;;
      esac
    done
  done
done

python3 - "$out" "${targets[*]}" "${loads[*]}" <<'EOF' | tee "$out/summary.md"
import json, statistics, sys
from pathlib import Path

out, targets, loads = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
titles = {"p1": "1 publisher", "p4": "4 publishers", "p16": "16 publishers",
          "c1000": "1k subs × 100/s", "c9000": "9k subs × 10/s",
          "i1": "1 publisher, same rate", "i4": "4 publishers, same rate",
          "i16": "16 publishers, same rate"}

def figures(target, load):
    rows = []
    for path in sorted(out.glob(f"{target}-{load}-r*.json")):
        run = json.loads(path.read_text())["runs"][0]
        d = run["delivery"]
        rows.append({
            "cpu": run["resources"]["server_cpu_us_per_delivery"],
            "p99": d["latency_ms"]["p99"],
            "rate": d["per_second"],
            "clean": d["lost"] == 0 and d["duplicated"] == 0 and d["delivered"] > 0,
            "load": run["load_average"]["start"][0],
        })
    return rows

def median(rows, key):
    return statistics.median(r[key] for r in rows) if rows else float("nan")

loadavg = []
print("| workload | target | CPU per delivery µs (median; range) | p99 ms (median) | deliveries/s (median) | CPU × minimal | CPU × Nchan | runs clean |")
print("|---|---|---|---|---|---|---|---|")
for load in loads:
    base = {t: median(figures(t, load), "cpu") for t in ("minimal", "nchan")}
    for target in targets:
        rows = figures(target, load)
        if not rows:
            continue
        loadavg += [r["load"] for r in rows]
        cpu = median(rows, "cpu")
        spread = f"{min(r['cpu'] for r in rows):.2f}–{max(r['cpu'] for r in rows):.2f}"
        clean = sum(r["clean"] for r in rows)
        print(f"| {titles[load]} | {target} | **{cpu:.2f}** ({spread}) | {median(rows, 'p99'):.1f} "
              f"| {median(rows, 'rate'):,.0f} | {cpu / base['minimal']:.2f}× | {cpu / base['nchan']:.2f}× "
              f"| {clean} of {len(rows)} |")
if loadavg:
    print(f"\nLoad average (1 min) at the start of the runs: {min(loadavg):.2f}–{max(loadavg):.2f}.")
EOF
