#!/usr/bin/env bash
# The TLS comparisons of docs/benchmarks.md section 12 ("The same comparisons over TLS"), as run
# into this directory: TLS/HTTP/1.1, 1000 streams, Sluice serving TLS itself, nginx terminating
# TLS in front of Sluice (sluice-nginx) and Nchan with TLS; 100 events/s unpinned, then pinned
# (server on CPU 1, harness on CPU 0, one worker each) at 250 events/s and at --rate max; two
# repetitions. Run from anywhere after `cargo build --release --workspace`; writes into the
# directory given as the first argument (default: a new loadtest/results/<time>-tls-workloads/).
set -uo pipefail
cd "$(dirname "$0")/../../.."
bin=${SLUICE_LOADTEST_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice-loadtest}
out=${1:-loadtest/results/$(date -u +%Y%m%dT%H%MZ)-tls-workloads}
mkdir -p "$out"
# shellcheck source=../lib.sh
source "loadtest/results/lib.sh"

pinned() {
  case $1 in
    sluice) echo "--target sluice --server-arg=--workers=1" ;;
    sluice-nginx) echo "--target sluice-nginx --server-arg=--workers=1 --nginx-workers 1" ;;
    nchan) echo "--target nchan --nginx-workers 1" ;;
  esac
}

for rep in 1 2; do
  for t in sluice sluice-nginx nchan; do
    run "$t-paced-r$rep" run --target "$t" --spawn --tls --connections 1000 --rate 100 --duration 10s
    # shellcheck disable=SC2046
    run "$t-same-r$rep" run $(pinned "$t") --spawn --tls --connections 1000 --rate 250 \
      --duration 8s --drain 10s --server-cpus 1 --client-cpus 0
    # shellcheck disable=SC2046
    run "$t-max-r$rep" run $(pinned "$t") --spawn --tls --connections 1000 --rate max \
      --duration 8s --drain 10s --server-cpus 1 --client-cpus 0
  done
done
