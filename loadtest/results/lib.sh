# Shared by the reproduce-*.sh scripts (sourced, not run): `run NAME ARGS...` runs
# `sluice-loadtest ARGS... --quiet --out $out/NAME.json` with the command and the machine's load
# average before and after, printed and kept in $out/NAME.txt. The caller sets $bin (the
# sluice-loadtest binary) and $out (the results directory). With ONLY="name name ..." set, runs
# whose NAME is not listed are skipped.
run() {
  local name=$1
  shift
  if [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]]; then
    return
  fi
  {
    echo "\$ sluice-loadtest $*"
    echo "# $(date -u +%FT%TZ) load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$bin" "$@" --quiet --out "$out/$name.json"
    echo "# exit status: $?"
    echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  } 2>&1 | tee "$out/$name.txt"
}
