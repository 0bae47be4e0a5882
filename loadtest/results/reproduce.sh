#!/usr/bin/env bash
# Reproduces the runs whose raw output is committed below this directory, one after another,
# each with the machine's load average before and after. Writes into the directory given as the
# first argument, default loadtest/results/<UTC date and time>/. Run from the workspace root after
# `cargo build --release` and `npm ci --prefix loadtest/baselines/express`; nginx-light and
# libnginx-mod-nchan must be installed for the nchan runs. Takes about 5 minutes.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${SLUICE_LOADTEST_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice-loadtest}
out=${1:-loadtest/results/$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$out"

# shellcheck source=lib.sh
source "loadtest/results/lib.sh"

run compare-1000 compare --connections 1000 --rate 100 --duration 20s --spawn --svg "$out/compare-1000.svg"
run express-sse-1000 run --target express --transport sse --connections 1000 --rate 100 --duration 20s --spawn
run nchan-sse-1000 run --target nchan --transport sse --connections 1000 --rate 100 --duration 20s --spawn
run sluice-sse-9000 run --target sluice --transport sse --connections 9000 --rate 10 --duration 20s --spawn
run nchan-sse-9000 run --target nchan --transport sse --connections 9000 --rate 10 --duration 20s --spawn
run express-sse-9000 run --target express --transport sse --connections 9000 --rate 10 --duration 20s --spawn
run sluice-sse-18000 run --target sluice --transport sse --connections 18000 --rate 10 --duration 20s --spawn
