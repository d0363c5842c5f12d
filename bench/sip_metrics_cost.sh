#!/bin/bash
# What the metrics cost the SIP dip: CPU per 1000 dips of `cnamd serve --workers 1`
# with its metrics as shipped, against the same daemon with the SIP path's metrics
# stubbed out (bench/no_metrics/sitecustomize.py), alternating, ROUNDS times each.
#
#   bench/sip_metrics_cost.sh [DATA_DIR]   # default /tmp/cnamd-sip-anchor, made by bench/sip_anchor.sh
#
# Each run: dip.sh of the Kamailio anchor (same sipp scenario, 1M entries) at RATE
# dips/s over UDP for SECS seconds. Prints one line per run and the medians.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHOR:-$repo/../shared/bench/kamailio-anchor}
D=${1:-/tmp/cnamd-sip-anchor}
RATE=${RATE:-10000} SECS=${SECS:-10} ROUNDS=${ROUNDS:-3}
CPORT=${CPORT:-5080} HPORT=${HPORT:-8081}
[ -s "$D/calls.csv" ] && [ -d "$D/pg" ] || { echo "no anchor data in $D: run bench/sip_anchor.sh first" >&2; exit 2; }
SUP=""
stop() {
  [ -n "$SUP" ] || return 0
  kill -TERM "$SUP" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$SUP" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$SUP" 2>/dev/null; SUP=""
}
trap stop EXIT
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
run() {  # run MODE
  local mode=$1 pp=""
  [ "$mode" = stubbed ] && pp=$repo/bench/no_metrics
  PYTHONPATH=$pp "$repo/.venv/bin/cnamd" serve --embedded-dir "$D/pg" --snapshot "$D/cache.snapshot" \
    --sip-listen 127.0.0.1:$CPORT --http-listen 127.0.0.1:$HPORT --workers 1 --log-level warning \
    --set sip.rate=1000000 --set sip.burst=1000000 >"$D/metrics-cost-$mode.log" 2>&1 &
  SUP=$!
  for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$HPORT/readyz)" = 200 ] && break; sleep 0.5
  done
  sleep 3
  local b0 b1 t0 t1 line
  b0=$(busy); t0=$(date +%s%N)
  line=$(SERVER_PIDS="$SUP" CALLS="$D/calls.csv" "$ANCHOR/dip.sh" $CPORT "$RATE" "$SECS" u1)
  b1=$(busy); t1=$(date +%s%N)
  echo "$mode $line machine_busy_cores=$(echo "scale=2; ($b1-$b0)/$(getconf CLK_TCK)/(($t1-$t0)/1000000000)" | bc)"
  stop
}
echo "# $(date -u +%FT%TZ) cnamd $(git -C "$repo" rev-parse --short HEAD), $(nproc) cores, ${RATE}/s UDP, ${SECS}s per run"
results=()
for r in $(seq 1 "$ROUNDS"); do
  for mode in shipped stubbed; do
    line=$(run $mode); echo "$line"; results+=("$line")
  done
done
for mode in shipped stubbed; do
  printf '%s\n' "${results[@]}" | awk -v m=$mode '$1==m {for(i=1;i<=NF;i++) if ($i ~ /^cpu_ms_per_1000=/) {split($i,a,"="); print a[2]}}' \
    | sort -n | awk -v m=$mode '{v[NR]=$1} END {print "median " m " cpu_ms_per_1000=" v[int((NR+1)/2)]}'
done
