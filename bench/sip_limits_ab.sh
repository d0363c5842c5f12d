#!/bin/bash
# What sharing the per-source limits between workers costs a SIP dip, beside Kamailio (bench/README.md,
# "Per-source limits across workers").
#
#   bench/sip_limits_ab.sh [DATA_DIR]     # default /tmp/cnamd-sip-anchor, prepared as sip_anchor.sh does
#
# ROUNDS (3) rounds of alternating runs at RATE (20000/s) UDP for SECS (8) s each: Kamailio (children=2,
# started once); cnamd --workers 2 and --workers 1, each started fresh for its run, with per-process limiters
# (PYTHONPATH=bench/per_process_limits: what each worker had before) and with the shared ones (as shipped).
# cnamd runs its whole product path with sip.rate = sip.burst = 1e6 (a limiter that never refuses).
# One line per run: dip.sh's figures (cpu_ms_per_1000 is the server's) and other_pct, the CPU of everything
# else on the machine in % of one core (> 15: the run may be disturbed).
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHOR:-$repo/../shared/bench/kamailio-anchor}
D=${1:-/tmp/cnamd-sip-anchor}
ROUNDS=${ROUNDS:-3} RATE=${RATE:-20000} SECS=${SECS:-8}
KPORT=${KPORT:-5070} CPORT=${CPORT:-5080} HPORT=${HPORT:-8081}
TCK=$(getconf CLK_TCK)
[ -e "$D/.loaded" ] && [ -s "$D/calls.csv" ] || { echo "no prepared data in $D (run bench/sip_anchor.sh once)" >&2; exit 2; }

PIDS="" PG=""
stop_all() {
  local p main=${PIDS%% *}
  [ -n "$main" ] && kill -TERM "$main" 2>/dev/null
  for _ in $(seq 1 100); do [ -n "$main" ] && kill -0 "$main" 2>/dev/null || break; sleep 0.2; done
  for p in $PIDS; do kill -KILL "$p" 2>/dev/null; done
  if [ -n "$PG" ] && kill -0 "$PG" 2>/dev/null; then kill -TERM "$PG"; sleep 2; fi
  PIDS="" PG=""
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
ticks() { local s=0 p; for p in "$@"; do [ -r /proc/$p/stat ] && s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }

start_cnamd() {   # start_cnamd WORKERS per-process|shared
  local extra="" kids=$(( $1 > 1 ? $1 : 0 ))
  [ "$2" = per-process ] && extra=$repo/bench/per_process_limits
  PYTHONPATH=$extra "$repo/.venv/bin/cnamd" serve --embedded-dir "$D/pg" --snapshot "$D/cache.snapshot" \
    --sip-listen 127.0.0.1:$CPORT --http-listen 127.0.0.1:$HPORT --workers "$1" --log-level warning \
    --set sip.rate=1000000 --set sip.burst=1000000 > "$D/ab-cnamd.log" 2>&1 &
  local sup=$!
  for _ in $(seq 1 300); do
    kill -0 $sup 2>/dev/null || { cat "$D/ab-cnamd.log" >&2; exit 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$HPORT/readyz)" = 200 ] && \
      [ "$(pgrep -P $sup -f 'cnamd.cli worker' | wc -l)" -ge "$kids" ] && \
      sipsak -s "sip:ping@127.0.0.1:$CPORT" >/dev/null 2>&1 && break
    sleep 1
  done
  sleep 3
  PG=$(head -1 "$D/pg/postmaster.pid" 2>/dev/null)
  PIDS="$sup $(pgrep -P $sup -f 'cnamd.cli worker' | tr '\n' ' ')"
  PIDS=${PIDS% }
}

childticks() { awk '{print $16+$17}' /proc/$$/stat; }   # sipp and dip.sh, once waited for

run() {   # run LABEL PORT
  local b0 b1 s0 s1 c0 c1 t0 t1 line el other
  b0=$(busy); s0=$(ticks $PIDS $PG); c0=$(childticks); t0=$(date +%s%N)
  line=$(SERVER_PIDS="$PIDS" CALLS="$D/calls.csv" "$ANCHOR/dip.sh" "$2" "$RATE" "$SECS" u1)
  t1=$(date +%s%N); b1=$(busy); s1=$(ticks $PIDS $PG); c1=$(childticks)
  el=$(( (t1-t0)/1000000 ))
  other=$(( ((b1-b0) - (s1-s0) - (c1-c0)) * 1000 / TCK * 100 / (el > 0 ? el : 1) ))
  echo "$1 $line other_pct=$other"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), kernel $(uname -r); cnamd $(git -C "$repo" rev-parse --short HEAD); $RATE/s UDP, ${SECS}s per run"
KPIDS=$("$ANCHOR/start-kamailio.sh" "$D" "$KPORT" | tail -1)   # loading 1M rows takes a minute: once
trap 'stop_all; PIDS=$KPIDS; stop_all' EXIT
for round in $(seq 1 "$ROUNDS"); do
  PIDS=$KPIDS; run "round=$round kamailio" $KPORT; PIDS=""
  for w in 2 1; do
    for mode in per-process shared; do
      start_cnamd $w $mode
      run "round=$round cnamd-w$w-$mode" $CPORT; stop_all
    done
  done
done
