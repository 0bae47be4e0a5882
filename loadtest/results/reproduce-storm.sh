#!/usr/bin/env bash
# Reproduces the reconnect storms of docs/benchmarks.md (section 9), one after another, each with
# the machine's load average before and after: Sluice with its memory store, with its durable
# store (`--data-dir`, a fresh temporary directory per run), Sluice on Redis,
# nginx + Nchan and the Express baseline, each cut by SIGTERM and by SIGKILL and restarted on its
# port. Writes into the directory given as the first argument, default
# loadtest/results/<UTC date and time>-storm/. Run from the workspace root after
# `cargo build --release --workspace` and `npm ci --prefix loadtest/baselines/express`; the Redis runs need
# `redis-server` (started here on a free loopback port, stopped by its PID at the end). Takes
# about 5 minutes. ONLY="name name …" runs just those runs (into the same directory).
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${SLUICE_LOADTEST_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice-loadtest}
out=${1:-loadtest/results/$(date -u +%Y%m%dT%H%MZ)-storm}
mkdir -p "$out"

# shellcheck source=lib.sh
source "loadtest/results/lib.sh"

storm="storm --spawn --connections 1000 --rate 100 --before 5s --after 5s"
run sluice-term $storm --cut term
run sluice-kill $storm --cut kill
# Sluice with its durable store: the restarted process opens the same --data-dir, so ids continue.
data_dir=$(mktemp -d)
run sluice-data-term $storm --cut term --server-arg=--data-dir=$data_dir/term
run sluice-data-kill $storm --cut kill --server-arg=--data-dir=$data_dir/kill
rm -rf "$data_dir"
run nchan-term $storm --cut term --target nchan
run nchan-kill $storm --cut kill --target nchan
run express-term $storm --cut term --target express
run express-kill $storm --cut kill --target express

# Sluice with its history in Redis: a restarted node resumes from the ids it handed out before.
if command -v redis-server >/dev/null 2>&1; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis_dir=$(mktemp -d)
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$redis_dir" >/dev/null 2>&1 &
  redis_pid=$!
  sleep 1
  run sluice-redis-term $storm --cut term --server-arg=--broker=redis://127.0.0.1:$port
  run sluice-redis-kill $storm --cut kill --server-arg=--broker=redis://127.0.0.1:$port
  kill "$redis_pid"
  wait "$redis_pid" 2>/dev/null
  rm -rf "$redis_dir"
fi
