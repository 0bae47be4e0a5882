#!/usr/bin/env bash
# Measures how long a Redis cluster of two Sluice nodes takes to heal when Redis comes back empty
# (docs/benchmarks.md, "Healing after Redis comes back empty"): for each outage length, start a
# redis-server without persistence and two nodes on it, publish on both, SIGKILL redis-server,
# wait out the outage, start it again empty on the same port, and time from "Redis accepts
# connections" to the first acknowledged publish on each node (one attempt every 50 ms, at most
# 20 s). Run from the workspace root after `cargo build --release`; needs `redis-server` and
# `redis-cli`. Every process is started on loopback and stopped by its PID. Takes about a minute.
# Usage: loadtest/results/reproduce-heal.sh [outage seconds ...]   (default: 0 3 10 30)
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${SLUICE_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice}
outages=("$@")
[[ ${#outages[@]} -eq 0 ]] && outages=(0 3 10 30)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

publish() {
  curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    -d '{"channel":"heal","data":1}' "127.0.0.1:$1/api/publish"
}

start_redis() {
  redis-server --bind 127.0.0.1 --port "$1" --save '' --appendonly no --dir "$2" \
    >/dev/null 2>&1 &
  redis=$!
  until redis-cli -p "$1" ping >/dev/null 2>&1; do sleep 0.01; done
}

for outage in "${outages[@]}"; do
  dir=$(mktemp -d)
  rport=$(free_port)
  start_redis "$rport" "$dir"
  nodes=() ports=()
  for _ in a b; do
    port=$(free_port)
    "$bin" --listen "127.0.0.1:$port" --workers 1 --broker "redis://127.0.0.1:$rport/0" \
      >"$dir/node-$port.log" 2>&1 &
    nodes+=($!) ports+=("$port")
  done
  for port in "${ports[@]}"; do
    until [[ $(publish "$port") == 200 ]]; do sleep 0.05; done
  done
  kill -9 "$redis"; wait "$redis" 2>/dev/null
  sleep "$outage"
  start_redis "$rport" "$dir"
  t0=$(date +%s%N)
  line="outage ${outage}s:"
  for port in "${ports[@]}"; do
    healed=""
    for _ in $(seq 400); do
      if [[ $(publish "$port") == 200 ]]; then
        healed=$(( ($(date +%s%N) - t0) / 1000000 ))
        break
      fi
      sleep 0.05
    done
    line+=" node :$port publishes after ${healed:-never} ms;"
  done
  echo "$line epochs: $(redis-cli -p "$rport" get sluice:epoch)"
  kill "${nodes[@]}"; wait "${nodes[@]}" 2>/dev/null
  kill "$redis"; wait "$redis" 2>/dev/null
  rm -rf "$dir"
done
