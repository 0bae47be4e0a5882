#!/usr/bin/env bash
# Reproduces the runs of loadtest/results/*-scale/, one after another, each with the machine's
# load average before and after: slow consumers (--stall) over SSE and WebSocket, publish
# throughput (--rate max), and fan-out at higher rates. Writes into the directory given as the
# first argument, default loadtest/results/<UTC date and time>-scale/. Run from the workspace root
# after `cargo build --release`. Sluice only; takes about 8 minutes. ONLY="name name …" runs just
# those runs (into the same directory).
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${SLUICE_LOADTEST_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice-loadtest}
out=${1:-loadtest/results/$(date -u +%Y%m%dT%H%MZ)-scale}
mkdir -p "$out"

# shellcheck source=lib.sh
source "loadtest/results/lib.sh"

# Slow consumers: 4 KiB events, so a stalled socket's kernel buffers (~4-5 MB on loopback) and
# then its 256-frame queue fill within the 20 s.
slow="--connections 1000 --rate 100 --duration 20s --payload-bytes 4096 --spawn"
run stall-sse-0.0 run --transport sse $slow --stall 0
run stall-sse-0.1 run --transport sse $slow --stall 0.1
run stall-sse-0.3 run --transport sse $slow --stall 0.3
run stall-ws-0.0 run --transport ws $slow --stall 0
run stall-ws-0.1 run --transport ws $slow --stall 0.1

# Publish throughput: every publisher connection publishes back to back for 10 s.
run max-10-p1 run --connections 10 --rate max --publishers 1 --duration 10s --spawn
run max-10-p4 run --connections 10 --rate max --publishers 4 --duration 10s --spawn
run max-10-p16 run --connections 10 --rate max --publishers 16 --duration 10s --spawn
run max-1000-p1 run --connections 1000 --rate max --publishers 1 --duration 10s --spawn
run max-1000-p16 run --connections 1000 --rate max --publishers 16 --duration 10s --spawn
# Twice more: at 1000 subscribers the outcome is not the same every time.
run max-1000-p16-2 run --connections 1000 --rate max --publishers 16 --duration 10s --spawn
run max-1000-p16-3 run --connections 1000 --rate max --publishers 16 --duration 10s --spawn
# The same as max-10-p16 with 256x longer stream queues: are the evictions above readers that
# fall behind, or bursts the queues cannot hold?
run max-10-p16-cap65536 run --connections 10 --rate max --publishers 16 --duration 10s --spawn --server-arg=--channel-capacity=65536

# Fan-out at higher rates than the first results (100 events/s at 1k, 10 at 9k). One publisher
# connection (the default, as in the first results) waits for each answer before the next
# publish, so it cannot go faster than 1 / round trip: the -p16 runs deal the schedule over 16.
run fanout-1000-r100 run --connections 1000 --rate 100 --duration 20s --spawn
run fanout-9000-r10 run --connections 9000 --rate 10 --duration 20s --spawn
# These two ran once with one publisher connection, which fell behind (328 of 1000/s, 20 of
# 50/s) and so published for 61 s and 51 s. Their output is kept; they are left out here so no
# run goes past 20 s.
# run fanout-1000-r1000 run --connections 1000 --rate 1000 --duration 20s --spawn
# run fanout-9000-r50 run --connections 9000 --rate 50 --duration 20s --spawn
run fanout-1000-r100-p16 run --connections 1000 --rate 100 --duration 20s --publishers 16 --spawn
run fanout-1000-r1000-p16 run --connections 1000 --rate 1000 --duration 20s --publishers 16 --spawn
run fanout-9000-r10-p16 run --connections 9000 --rate 10 --duration 20s --publishers 16 --spawn
run fanout-9000-r50-p16 run --connections 9000 --rate 50 --duration 20s --publishers 16 --spawn
