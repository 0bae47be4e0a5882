#!/usr/bin/env bash
# Reproduces the TLS figures of docs/benchmarks.md ("TLS and HTTP/2 through the harness"), one
# run after another, each with the machine's load average before and after: Sluice serving TLS
# itself, Sluice behind nginx terminating TLS (`sluice-nginx`: nginx-light, ssl + http2,
# proxying to a plain Sluice over keep-alive HTTP/1.1, buffering off) and nginx + Nchan with TLS,
# side by side:
#   - idle RSS per stream: 2000 streams over TLS/HTTP/1.1, TLS/HTTP/2 with one stream per
#     connection, and TLS/HTTP/2 with 100 streams per connection (RSS connected - RSS idle,
#     both processes for sluice-nginx);
#   - server CPU per delivery over TLS at 1000 streams x 100 events/s (TLS/HTTP/1.1 and
#     TLS/HTTP/2 with 100 streams per connection), and again at 25 events/s;
#   - full TLS handshakes per second on one worker (`handshakes`, 10 s each);
#   - what stalled HTTP/2 streams hold in Sluice (50 of 100 streams on one connection stop
#     giving their window back; RSS at the end against the same run without stalls).
# Every spawned server gets a test CA and a leaf for localhost made by the harness.
# Writes into the directory given as the first argument, default
# loadtest/results/<UTC date and time>-tls/, then prints a summary table (also into summary.txt). Run from the workspace
# root after `cargo build --release --workspace`; nginx-light and libnginx-mod-nchan must be
# installed. Takes about 11 minutes. ONLY="name name …" runs just those runs (into the same
# directory); SUMMARY_ONLY=1 only prints the table of a directory already written.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${SLUICE_LOADTEST_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice-loadtest}
out=${1:-loadtest/results/$(date -u +%Y%m%dT%H%MZ)-tls}
mkdir -p "$out"

run() {
  local name=$1
  shift
  if [[ -n ${SUMMARY_ONLY:-} || ( -n ${ONLY:-} && " $ONLY " != *" $name "* ) ]]; then
    return
  fi
  {
    echo "\$ sluice-loadtest $*"
    echo "# $(date -u +%FT%TZ) load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$bin" "$@" --out "$out/$name.json"
    echo "# exit status: $?"
    echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  } 2>&1 | tee "$out/$name.txt"
}

targets="sluice sluice-nginx nchan"

# Idle memory: the RSS is read with every stream open, before the single publish.
idle="run --spawn --tls --connections 2000 --rate 1 --duration 1s --quiet"
for t in $targets; do
  run "idle-$t-h1" $idle --target "$t"
  run "idle-$t-h2" $idle --target "$t" --http2
  run "idle-$t-h2x100" $idle --target "$t" --http2 --streams-per-connection 100
done

# CPU per delivery: 1000 streams, 100 events/s for 20 s (100 000 deliveries/s). Four publisher
# connections, so a slow publish answer (the worker busy writing 1000 TLS records) does not hold
# the schedule back.
load="run --spawn --tls --connections 1000 --rate 100 --duration 20s --publishers 4 --quiet"
for t in $targets; do
  run "cpu-$t-h1" $load --target "$t"
  run "cpu-$t-h2x100" $load --target "$t" --http2 --streams-per-connection 100
done

# The same at 25 events/s, a rate every target keeps on a busy machine, so the CPU per delivery
# is compared at one rate (a server that falls behind delivers at a lower rate, with less
# batching per write).
low="run --spawn --tls --connections 1000 --rate 25 --duration 20s --publishers 4 --quiet"
for t in $targets; do
  run "cpu25-$t-h1" $low --target "$t"
  run "cpu25-$t-h2x100" $low --target "$t" --http2 --streams-per-connection 100
done

# Handshakes on one worker: Sluice with --workers=1, nginx with one worker process.
for t in $targets; do
  run "handshakes-$t" handshakes --spawn --target "$t" --server-arg=--workers=1 \
    --nginx-workers 1 --concurrency 16 --duration 10s
done

# Stalled HTTP/2 streams: 100 streams on one TLS connection, 8 KB events at 100/s for 5 s; half
# of them stop giving their window back once ready. With the default bounds (1 MiB of queue,
# 5 s write timeout; a frame cap far above) they are cut off when their queue's bytes run out;
# with the bounds raised out of reach (stall-held) they stay, so the RSS at the end holds what
# they parked. The run without stalls is the reference for both.
stall="run --spawn --tls --http2 --streams-per-connection 100 --connections 100 --rate 100 --duration 5s --payload-bytes 8000 --drain 10s --quiet --server-arg=--channel-capacity=100000"
run stall-none $stall
run stall-half $stall --stall 0.5
run stall-held $stall --stall 0.5 --server-arg=--queue-bytes=64MiB --server-arg=--write-timeout=60s

python3 - "$out" <<'EOF' | tee "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["runs"][0]
targets = ["sluice", "sluice-nginx", "nchan"]
print("\nidle KiB per stream (RSS connected - idle) / streams")
print(f"{'target':14} {'TLS/H1':>8} {'TLS/H2 1':>9} {'TLS/H2 x100':>12}")
for t in targets:
    cells = []
    for mode in ["h1", "h2", "h2x100"]:
        r = load(f"idle-{t}-{mode}")
        cells.append("-" if r is None else f"{r['resources']['server_kib_per_connection']:.1f}")
    print(f"{t:14} {cells[0]:>8} {cells[1]:>9} {cells[2]:>12}")
for prefix, rate_title in [("cpu", "100/s"), ("cpu25", "25/s")]:
    print(f"\nserver CPU per delivery, µs (CPU % avg x 10^4 / deliveries per s), 1000 x {rate_title}")
    print(f"{'target':14} {'TLS/H1':>26} {'TLS/H2 x100':>26}")
    for t in targets:
        cells = []
        for mode in ["h1", "h2x100"]:
            r = load(f"{prefix}-{t}-{mode}")
            if r is None:
                cells.append("-")
                continue
            cpu = r["resources"]["server_cpu_pct"]
            rate = r["delivery"]["per_second"]
            lost = r["delivery"]["lost"]
            cells.append(f"{cpu * 1e4 / rate:.2f} ({cpu:.0f}%, {rate / 1000:.1f}k/s){'' if lost == 0 else ' LOST'}")
        print(f"{t:14} {cells[0]:>26} {cells[1]:>26}")
print("\nfull TLS handshakes on one worker")
for t in targets:
    r = load(f"handshakes-{t}")
    if r is None:
        continue
    print(f"{t:14} {r['per_second']:8.0f}/s  server {r['server_cpu_us_per_handshake'] or 0:7.0f} µs CPU each  ({r['server_cpu_pct'] or 0:.0f}% of a core, harness {r['harness_cpu_pct']:.0f}%), {r['failed']} failed")
none = load("stall-none")
print("\nstalled HTTP/2 streams (50 of 100 on one connection) against none stalled")
for name in ["stall-half", "stall-held"]:
    run = load(name)
    if not (none and run):
        continue
    stalled = run["stalled"]["ready"]
    delta = (run["resources"]["server_rss_mb_end"] - none["resources"]["server_rss_mb_end"]) * 1024
    after = run["stalled"]["cut_off_after_s"]
    print(f"{name}: {stalled} stalled, {run['stalled']['cut_off']} cut off"
          f"{'' if not after else f' ({after[1]:.1f} s after the first publish)'}; "
          f"RSS at the end {run['resources']['server_rss_mb_end']:.1f} MB vs {none['resources']['server_rss_mb_end']:.1f} MB "
          f"= {delta / max(stalled, 1):.1f} KiB per stalled stream; peak {run['resources']['server_rss_mb_peak']:.1f} vs "
          f"{none['resources']['server_rss_mb_peak']:.1f} MB; kernel TCP buffers peak "
          f"{run['resources']['kernel_tcp_mb_peak']:.1f} vs {none['resources']['kernel_tcp_mb_peak']:.1f} MB; "
          f"healthy latency p99 {run['delivery']['latency_ms']['p99']:.1f} ms vs {none['delivery']['latency_ms']['p99']:.1f} ms, "
          f"lost {run['delivery']['lost']}")
EOF
