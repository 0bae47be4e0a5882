#!/bin/bash
# Over TLS: paced 1k x 100/s, pinned same-rate 250/s, pinned --rate max; sluice, sluice-nginx, nchan.
cd /work/main
out=$1; mkdir -p $out
bin=target/release/sluice-loadtest
run() { local name=$1; shift; { echo "\$ sluice-loadtest $*"; echo "# $(date -u +%FT%TZ) load average before: $(cut -d' ' -f1-3 /proc/loadavg)"; $bin "$@" --quiet --out $out/$name.json; echo "# exit status: $?"; echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"; } > $out/$name.txt 2>&1; }
targs() { case $1 in sluice) echo "--target sluice --server-arg=--workers=1";; sluice-nginx) echo "--target sluice-nginx --server-arg=--workers=1 --nginx-workers 1";; nchan) echo "--target nchan --nginx-workers 1";; esac; }
for rep in 1 2; do
for t in sluice sluice-nginx nchan; do
  run $t-paced-r$rep run --target $t --spawn --tls --connections 1000 --rate 100 --duration 10s
  run $t-same-r$rep run $(targs $t) --spawn --tls --connections 1000 --rate 250 --duration 8s --drain 10s --server-cpus 1 --client-cpus 0
  run $t-max-r$rep run $(targs $t) --spawn --tls --connections 1000 --rate max --duration 8s --drain 10s --server-cpus 1 --client-cpus 0
done
done
