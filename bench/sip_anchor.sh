#!/bin/bash
# One sitting of the SIP dip benchmark against the Kamailio anchor (bench/README.md, "SIP dip vs Kamailio").
#
#   bench/sip_anchor.sh [DATA_DIR]          # default /tmp/cnamd-sip-anchor; 12-18 minutes on 2 cores
#
# Uses ../shared/bench/kamailio-anchor (override with ANCHOR=DIR): generates its 1M entries once per DATA_DIR,
# loads them into cnamd's embedded PostgreSQL as global names, then, one server at a time, runs dip.sh
# (same sipp scenario, SECS=10 seconds per run):
#   Kamailio 5.6 (children=2):  UDP 10k 20k 30k 40k/s, TCP (t1, one connection) 20k 30k 40k/s, edge search
#   cnamd --workers 2:          the same rates and edge search, plus each process's CPU (spread over workers)
#   cnamd --workers 1:          UDP 10k and 20k/s (CPU per dip on the full product path)
#   memory (RSS, Pss from /proc/PID/smaps_rollup) of every server process
# Edge search: after the fixed rates, the rate 5k above the highest 0-failure rate is tried, then the edge
# run (highest 0-failure rate) and the first failing rate above it are each repeated once.
#
# One line per run on stdout (also in DATA_DIR/sitting.log). Besides dip.sh's figures each line has:
#   pg_ms      CPU of the embedded PostgreSQL during the run (not in server_cpu_ms)
#   pids_ms    CPU of each server process (cnamd: supervisor/worker/worker)
#   client_ms  CPU of sipp (and dip.sh) during the run
#   other_pct  CPU of everything else on the machine, in % of one core: > 15 means the run may be disturbed
# Before each run the script waits (up to IDLE_WAIT s per run, IDLE_BUDGET s in all) until processes other
# than the servers use < IDLE_PCT % of one core.
#
# cnamd runs with its whole product path (ACL, per-source rate limiter, metrics) but with sip.rate and
# sip.burst raised to 1e6: the default 2000/s per source address would answer one sipp source with 503s.
#
# Every process started here (Kamailio, cnamd and its PostgreSQL, sipp) is stopped on exit.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHOR:-$repo/../shared/bench/kamailio-anchor}
ANCHOR=$(cd "$ANCHOR" && pwd) || { echo "no anchor at $ANCHOR" >&2; exit 2; }
D=${1:-/tmp/cnamd-sip-anchor}
ENTRIES=${ENTRIES:-1000000}
SECS=${SECS:-10}
KPORT=${KPORT:-5070} CPORT=${CPORT:-5080} HPORT=${HPORT:-8081}
IDLE_PCT=${IDLE_PCT:-15} IDLE_WAIT=${IDLE_WAIT:-120} IDLE_BUDGET=${IDLE_BUDGET:-360}
UDP_RATES=${UDP_RATES:-"10000 20000 30000 40000"}
TCP_RATES=${TCP_RATES:-"20000 30000 40000"}
W1_RATES=${W1_RATES:-"10000 20000"}
PROFILE=${PROFILE:-0}   # 1: after the --workers 1 runs, py-spy a worker during one more 20k/s UDP run
CNAMD=$repo/.venv/bin/cnamd
TCK=$(getconf CLK_TCK)
mkdir -p "$D"
D=$(cd "$D" && pwd)
LOG=$D/sitting.log
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }

KPIDS="" SUP="" PGMAIN=""
stop_kamailio() {
  [ -n "$KPIDS" ] || return 0
  local main=${KPIDS%% *}
  kill "$main" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$main" 2>/dev/null || break; sleep 0.2; done
  for p in $KPIDS; do kill -KILL "$p" 2>/dev/null; done
  KPIDS=""
}
stop_cnamd() {
  [ -n "$SUP" ] || return 0
  local kids; kids=$(pgrep -P "$SUP")
  kill -TERM "$SUP" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$SUP" 2>/dev/null || break; sleep 0.2; done
  for p in $kids $SUP; do kill -KILL "$p" 2>/dev/null; done
  if [ -n "$PGMAIN" ] && kill -0 "$PGMAIN" 2>/dev/null; then   # the supervisor normally stops it
    kill -TERM "$PGMAIN"; for _ in $(seq 1 50); do kill -0 "$PGMAIN" 2>/dev/null || break; sleep 0.2; done
  fi
  SUP="" PGMAIN=""
}
cleanup() { trap - EXIT INT TERM; stop_kamailio; stop_cnamd; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- CPU accounting (all in clock ticks) ---------------------------------------------------------------
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
ticks() { local s=0 p; for p in "$@"; do [ -r /proc/$p/stat ] && s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }
childticks() { awk '{print $16+$17}' /proc/$$/stat; }     # sipp and dip.sh, once waited for
pgpids() { [ -n "$PGMAIN" ] && echo "$PGMAIN $(pgrep -P "$PGMAIN" | tr '\n' ' ')"; }
ms() { echo $(( $1 * 1000 / TCK )); }

idle_spent=0
wait_idle() {   # until others use < IDLE_PCT % of a core over 2 s
  local waited=0 b0 s0 b1 s1 pct
  while :; do
    b0=$(busy); s0=$(ticks $SERVER_PIDS $(pgpids)); sleep 2; b1=$(busy); s1=$(ticks $SERVER_PIDS $(pgpids))
    pct=$(( ((b1-b0) - (s1-s0)) * 100 / (2*TCK) ))
    [ $pct -lt "$IDLE_PCT" ] && { IDLE_NOTE=""; return; }
    if [ $waited -ge "$IDLE_WAIT" ] || [ $idle_spent -ge "$IDLE_BUDGET" ]; then
      IDLE_NOTE=" busy_before=${pct}%"; say "# machine still busy (${pct}% of a core) — running anyway: $(ps -eo pcpu,comm --sort=-pcpu | grep -vw ps | sed -n 2,4p | tr -s ' \n' ' ')"; return
    fi
    [ $waited = 0 ] && say "# waiting for the machine to go idle (others at ${pct}% of a core): $(ps -eo pcpu,comm --sort=-pcpu | grep -vw ps | sed -n 2,4p | tr -s ' \n' ' ')"
    sleep 8; waited=$((waited+10)); idle_spent=$((idle_spent+10))
  done
}

# run LABEL PORT TR RATE [NOTE]: one dip.sh run; sets LAST_FAILED
LAST_FAILED=""
run() {
  local label=$1 port=$2 tr=$3 rate=$4 note=${5:-}
  wait_idle
  local p pg b0 c0 t0 line b1 c1 t1 per="" el s
  pg=$(pgpids)
  declare -A before
  for p in $SERVER_PIDS; do before[$p]=$(ticks $p); done
  local pg0; pg0=$(ticks $pg)
  b0=$(busy); c0=$(childticks); t0=$(date +%s%N)
  line=$(SERVER_PIDS="$SERVER_PIDS" CALLS="$D/calls.csv" "$ANCHOR/dip.sh" "$port" "$rate" "$SECS" "$tr")
  t1=$(date +%s%N); b1=$(busy); c1=$(childticks)
  local pg1; pg1=$(ticks $pg)
  local srv=0
  for p in $SERVER_PIDS; do s=$(( $(ticks $p) - before[$p] )); srv=$((srv+s)); per="$per${per:+/}$(ms $s)"; done
  el=$(( (t1-t0)/1000000 ))
  local other=$(( (b1-b0) - srv - (pg1-pg0) - (c1-c0) ))
  [ $other -lt 0 ] && other=0
  local opct=$(( $(ms $other) * 100 / (el > 0 ? el : 1) ))
  LAST_FAILED=$(sed -n 's/.* failed=\([0-9]*\) .*/\1/p' <<<"$line")
  [ -n "$LAST_FAILED" ] || LAST_FAILED=999999
  say "$label $line pg_ms=$(ms $((pg1-pg0))) pids_ms=$per client_ms=$(ms $((c1-c0))) other_pct=$opct${IDLE_NOTE}${note:+ $note}$([ $opct -gt 15 ] && echo ' DISTURBED?')"
}

# sweep LABEL PORT TR RATE...: the fixed rates, then the edge search; prints the edge. A rate counts as
# passed only if every run at it had 0 failures (the edge run and the first failing rate are repeated once).
sweep() {
  local label=$1 port=$2 tr=$3; shift 3
  local best=0 below=0 fail=0 r f2="" note=""
  for r in "$@"; do
    run "$label" "$port" "$tr" "$r"
    if [ "$LAST_FAILED" = 0 ]; then [ $fail = 0 ] && { below=$best; best=$r; }; else [ $fail = 0 ] && fail=$r; fi
  done
  if [ $fail != 0 ]; then
    r=$((best + 5000))
    if [ $r -lt $fail ]; then
      run "$label" "$port" "$tr" "$r" "edge-step"
      if [ "$LAST_FAILED" = 0 ]; then below=$best; best=$r; else fail=$r; fi
    fi
    run "$label" "$port" "$tr" "$fail" "edge-repeat"; f2=$LAST_FAILED
  fi
  if [ $best -gt 0 ]; then
    run "$label" "$port" "$tr" "$best" "edge-repeat"
    if [ "$LAST_FAILED" != 0 ]; then
      note=" (${best}/s failed its repeat with $LAST_FAILED failures)"; fail=$best; f2=$LAST_FAILED; best=$below
    fi
  fi
  if [ $fail = 0 ]; then say "EDGE $label tr=$tr max_rate_0_failed=>=${best}/s (highest rate tried)"
  else say "EDGE $label tr=$tr max_rate_0_failed=${best}/s first_failing=${fail}/s (repeat: $f2 failures)$note"; fi
}

mem() {   # mem LABEL PID...: RSS and Pss of each process, and their Pss sum
  local label=$1 p sum=0; shift
  for p in "$@"; do
    [ -r /proc/$p/smaps_rollup ] || continue
    local rss pss
    rss=$(awk '/^Rss:/{print $2}' /proc/$p/smaps_rollup); pss=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup)
    sum=$((sum+pss))
    say "MEM $label pid=$p comm=$(cat /proc/$p/comm) $(tr '\0' ' ' </proc/$p/cmdline | cut -c1-60 | awk '{print $NF}') rss_mib=$((rss/1024)) pss_mib=$((pss/1024))"
  done
  say "MEM $label pss_sum_mib=$((sum/1024))"
}

port_free() { ! ss -lun "sport = :$1" | grep -q ":$1" && ! ss -ltn "sport = :$1" | grep -q ":$1"; }

# --- data --------------------------------------------------------------------------------------------------
say "# sitting $(date -u +%FT%TZ) on $(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
say "# cnamd $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- src || echo ' + uncommitted changes under src/'), $ENTRIES entries in $D, ${SECS}s per run"
if [ ! -s "$D/entries.csv" ] || [ "$(cat "$D/.entries" 2>/dev/null)" != "$ENTRIES" ]; then
  python3 "$ANCHOR/gen-data.py" "$D" "$ENTRIES" >/dev/null || exit 1
  rm -f "$D/.loaded" "$D/cache.snapshot"
  echo "$ENTRIES" > "$D/.entries"
fi
if [ ! -e "$D/.loaded" ]; then
  "$repo/.venv/bin/python" "$repo/bench/load_entries.py" "$D/entries.csv" --embedded-dir "$D/pg" | tee -a "$LOG" || exit 1
  touch "$D/.loaded"; rm -f "$D/cache.snapshot"
fi
SERVER_PIDS=""

# --- Kamailio ----------------------------------------------------------------------------------------------
port_free $KPORT || { echo "port $KPORT in use" >&2; exit 2; }
t=$(date +%s)
KPIDS=$("$ANCHOR/start-kamailio.sh" "$D" "$KPORT" | tail -1)
[ -n "$KPIDS" ] && kill -0 "${KPIDS%% *}" 2>/dev/null || { echo "Kamailio did not start (see $D/kamailio.log)" >&2; exit 1; }
SERVER_PIDS=$KPIDS
say "# Kamailio $(kamailio -v | sed -n 's/^version: kamailio \([^ ]*\).*/\1/p') up in $(( $(date +%s)-t ))s, pids $KPIDS"
sweep kamailio "$KPORT" u1 $UDP_RATES
sweep kamailio "$KPORT" t1 $TCP_RATES
mem kamailio $KPIDS
stop_kamailio; SERVER_PIDS=""

# --- cnamd -------------------------------------------------------------------------------------------------
start_cnamd() {   # start_cnamd WORKERS
  port_free $CPORT && port_free $HPORT || { echo "port $CPORT or $HPORT in use" >&2; exit 2; }
  local t kids; t=$(date +%s); kids=$(( $1 > 1 ? $1 : 0 ))   # --workers 1 serves in the one process
  "$CNAMD" serve --embedded-dir "$D/pg" --snapshot "$D/cache.snapshot" --sip-listen 127.0.0.1:$CPORT \
    --http-listen 127.0.0.1:$HPORT --workers "$1" --log-level warning \
    --set sip.rate=1000000 --set sip.burst=1000000 > "$D/cnamd-w$1.log" 2>&1 &
  SUP=$!
  for _ in $(seq 1 300); do
    kill -0 $SUP 2>/dev/null || { cat "$D/cnamd-w$1.log" >&2; exit 1; }
    [ -z "$PGMAIN" ] && [ -r "$D/pg/postmaster.pid" ] && PGMAIN=$(head -1 "$D/pg/postmaster.pid")
    [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$HPORT/readyz)" = 200 ] && \
      [ "$(pgrep -P $SUP | wc -l)" -ge "$kids" ] && sipsak -s "sip:ping@127.0.0.1:$CPORT" >/dev/null 2>&1 && break
    sleep 1
  done
  [ -r "$D/pg/postmaster.pid" ] && PGMAIN=$(head -1 "$D/pg/postmaster.pid")
  sleep 3   # let the workers finish settling (first digest, heartbeats)
  SERVER_PIDS="$SUP $(pgrep -P $SUP | tr '\n' ' ')"
  SERVER_PIDS=${SERVER_PIDS% }
  say "# cnamd --workers $1 ready in $(( $(date +%s)-t ))s, pids supervisor/workers: $SERVER_PIDS, postgres: $PGMAIN"
}

start_cnamd 2
mem cnamd-w2-ready $SERVER_PIDS
sweep cnamd-w2 "$CPORT" u1 $UDP_RATES
sweep cnamd-w2 "$CPORT" t1 $TCP_RATES
mem cnamd-w2-after $SERVER_PIDS
stop_cnamd; SERVER_PIDS=""

start_cnamd 1
mem cnamd-w1-ready $SERVER_PIDS
for r in $W1_RATES; do run cnamd-w1 "$CPORT" u1 "$r"; done
mem cnamd-w1-after $SERVER_PIDS
if [ "$PROFILE" = 1 ]; then
  worker=${SERVER_PIDS##* }
  pyspy=$repo/.venv/bin/py-spy
  [ -x "$pyspy" ] || "$repo/.venv/bin/pip" install -q py-spy
  "$pyspy" record --native -r 100 -d $((SECS+2)) -f raw -o "$D/pyspy-w1-20k.txt" -p "$worker" >/dev/null 2>&1 &
  spy=$!
  sleep 1; run cnamd-w1 "$CPORT" u1 20000 "under-py-spy(not-a-measurement)"
  wait $spy
  say "# py-spy: worker $worker at 20k/s UDP (collapsed stacks in $D/pyspy-w1-20k.txt)"
  python3 - "$D/pyspy-w1-20k.txt" <<'PY' | tee -a "$LOG"
import re, sys
from collections import Counter
incl, leaf, folded = Counter(), Counter(), Counter()
total = idle = 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    n = int(n)
    total += n
    frames = [re.sub(r" \(([^:)]*)(:\d+)?\)$", r" (\1)", f) for f in stack.split(";")]
    if frames[-1].startswith("epoll_pwait") or "_queue_SimpleQueue_get" in stack:
        idle += n  # the loop waiting for packets, the thread pool waiting for work
        continue
    leaf[frames[-1]] += n
    py = [f for f in frames if f.endswith(".py)")]
    if py:
        folded[py[-1]] += n
    for f in set(py):
        incl[f] += n
busy = max(total - idle, 1)
print(f"{total} samples, {idle} idle; % of the {busy} busy samples")
for title, table, k in (("inclusive per Python function", incl, 22), ("self (leaf frame)", leaf, 15),
                        ("self, native frames folded into their Python caller", folded, 15)):
    print("-- " + title)
    for name, v in table.most_common(k):
        print(f"{100 * v / busy:6.1f}% {name}")
PY
fi
stop_cnamd
say "# sitting done $(date -u +%FT%TZ); log in $LOG"
