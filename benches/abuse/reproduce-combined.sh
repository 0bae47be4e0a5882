#!/usr/bin/env bash
# Healthy readers' delivery latency on one Sluice, quiet and then under the combined abuse of
# docs/benchmarks.md section 10: stalled readers, the 60 KB publish flood to distinct channels
# and the channel-list loop, all against the same server.
#
# The server (release build, defaults, one worker) is pinned to CPU 0 and everything else to
# CPU 1 with taskset, so the generators do not take the server's core. The healthy readers are
# `sluice-loadtest run --url ... --connections 20 --rate 20` on channel `probe`, for 20 s each
# time. Under abuse, each of these loops until the second measurement ends:
#   - `sluice-loadtest run --connections 500 --stall 0.99 --rate 100 --payload-bytes 1024` on
#     channel `stalled`, 8 s a round (the server cuts the stalled streams off within about 5 s;
#     every round opens new ones);
#   - benches/abuse/publish_flood.py, 1,000 × 60 KB publishes to distinct channels a round (the
#     default 256 MiB memory budget fills, then evicts);
#   - benches/abuse/channel_list.py, lists of 65 to 12,000 names, 50 requests per length a round.
# Prints p50 / p99 / max for both, the ratio, the server's RSS and its /stats counters.
#
# Run from the workspace root after `cargo build --release -p sluice -p sluice-loadtest`, with
# no build running. Needs 2 CPUs, taskset and python3. Takes about 70 s. Writes its JSON results
# and logs into the directory given as the first argument (default: a temporary one). Stops
# everything it starts by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
sluice=${SLUICE_BIN:-$target/release/sluice}
loadtest=${SLUICE_LOADTEST_BIN:-$target/release/sluice-loadtest}
out=${1:-$(mktemp -d)}
mkdir -p "$out"
for bin in "$sluice" "$loadtest"; do
  [[ -x $bin ]] || { echo "$bin missing: cargo build --release -p sluice -p sluice-loadtest" >&2; exit 2; }
done
[[ $(nproc) -ge 2 ]] || { echo "needs 2 CPUs (server on CPU 0, generators on CPU 1)" >&2; exit 2; }

server=
loops=()
stop_file=$out/stop
# The loops finish their current round (each bounded in time) once the stop file is there;
# then the server is stopped.
cleanup() {
  touch "$stop_file"
  for pid in "${loops[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n $server ]]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  server=
  loops=()
}
trap cleanup EXIT
rm -f "$stop_file"

taskset -c 0 "$sluice" --listen 127.0.0.1:0 --workers 1 >"$out/sluice.out" 2>"$out/sluice.err" &
server=$!
for _ in $(seq 100); do
  grep -q listening "$out/sluice.out" 2>/dev/null && break
  sleep 0.1
done
url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out/sluice.out" | head -1)
[[ -n $url ]] || { echo "no listening line from sluice" >&2; cat "$out/sluice.err" >&2; exit 1; }
port=${url##*:}
echo "sluice pid $server at $url (CPU 0); generators on CPU 1"

gen() { taskset -c 1 "$@"; }
probe() {
  echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/$1.log"
  gen "$loadtest" run --url "$url" --server-pid "$server" --connections 20 --rate 20 \
    --duration 20s --channel probe --quiet --out "$out/$1.json" >>"$out/$1.log" 2>&1 ||
    echo "# exit status: $?" >>"$out/$1.log"
  echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/$1.log"
}
# Runs "$@" again and again until the stop file appears; each round is bounded by itself.
repeat() {
  while [[ ! -e $stop_file ]]; do
    "$@" || true
  done
}

echo "quiet: 20 healthy readers, 20 events/s, 20 s"
probe quiet

echo "under abuse: stalled readers, publish flood, channel lists; healthy readers again after 3 s"
repeat gen "$loadtest" run --url "$url" --connections 500 --stall 0.99 --rate 100 \
  --payload-bytes 1024 --duration 8s --drain 1s --channel stalled --quiet >>"$out/stalled.log" 2>&1 &
loops+=("$!")
repeat gen python3 benches/abuse/publish_flood.py --port "$port" --pid "$server" \
  --events 1000 --size 60000 >>"$out/flood.log" 2>&1 &
loops+=("$!")
repeat gen python3 benches/abuse/channel_list.py --port "$port" --requests 50 \
  >>"$out/lists.log" 2>&1 &
loops+=("$!")
sleep 3
probe abuse
stats=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + "/stats", timeout=5).read().decode())' "$url")
rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$server/status")
cleanup

python3 - "$out" "$rss_kib" "$stats" <<'EOF'
import json, sys
out, rss_kib, stats = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
rows = {}
for name in ("quiet", "abuse"):
    run = json.load(open(f"{out}/{name}.json"))["runs"][0]
    lat = run["delivery"]["latency_ms"]
    rows[name] = lat
    print(f"{name:6} p50 {lat['p50']:8.2f} ms  p99 {lat['p99']:8.2f} ms  max {lat['max']:8.2f} ms"
          f"  delivered {run['delivery']['delivered']}/{run['delivery']['expected']}"
          f"  lost {run['delivery']['lost']}  load {run['load_average']['start'][0]:.1f}"
          f"-{run['load_average']['end'][0]:.1f}")
q, a = rows["quiet"], rows["abuse"]
print(f"abuse/quiet: p50 {a['p50'] / q['p50']:.2f}x  p99 {a['p99'] / q['p99']:.2f}x")
print(f"server RSS {rss_kib / 1024:.0f} MiB; retainedBytes {stats.get('retainedBytes', 0) / 2**20:.0f} MiB,"
      f" budgetEvictions {stats.get('budgetEvictions')}, slowConsumersDropped"
      f" {stats.get('slowConsumersDropped')}, eventsPublished {stats.get('eventsPublished')}")
EOF
echo "results in $out"
