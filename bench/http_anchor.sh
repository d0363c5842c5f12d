#!/bin/bash
# One sitting of the HTTP lookup benchmark against the bare aiohttp handler (bench/README.md, "HTTP lookups vs
# a bare aiohttp handler").
#
#   bench/http_anchor.sh [DATA_DIR]          # default /tmp/cnamd-http-anchor; about 4 minutes on 2 cores
#   PIN=1 bench/http_anchor.sh [DATA_DIR]    # server and wrk on a core each (one-process runs only)
#
# Uses ../shared/bench/http-anchor (bare.py, lookup.lua; override with ANCHOR=DIR) and the Kamailio anchor's
# gen-data.py for the 1M entries and the call list (90% known numbers), generated and loaded once per DATA_DIR
# as global names. Then, one server at a time, `wrk -t1 -c50 -dSECS --latency` with lookup.lua:
#   bare.py                       /v1/lookup/{n}
#   cnamd --workers 1             /v1/lookup/{n} (trusted source), keyed /v3/phone/{d}?format=pbx (bare
#                                 digits, the issue's PBX request) and the same with /v3/phone/{n} ('+'),
#                                 and a Yealink's number search /v1/directory/yealink?term={d}
#   cnamd --workers 2             the same two
#   bare.py                       /v1/lookup/{n} again (the sitting's drift)
# One line per run: requests/s, p50, p99, and the server processes' CPU in microseconds per request, plus
# other_pct: the CPU of everything else on the machine (wrk excluded is not possible; it is in there), in %
# of one core. The machine is shared: a busy sitting shows in other_pct and in the two bare runs.
# To run another commit's cnamd in the same sitting (compiled modules are the same unless the Makefile's
# COMPILED changed): git archive COMMIT src | tar -x -C /tmp/base; copy src/**/*.so beside it; then
#   PYTHONPATH=/tmp/base/src bench/http_anchor.sh DATA_DIR
# or alternate the two in one sitting, --workers 1 only (ROUNDS times: the bare handler, BASE's cnamd, this
# tree's cnamd, each on /v1/lookup/{n} and the keyed /v3/phone/{d}?format=pbx):
#   BASE=/tmp/base/src ROUNDS=2 bench/http_anchor.sh DATA_DIR
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHOR:-$repo/../shared/bench/http-anchor}
GEN=${GEN:-$repo/../shared/bench/kamailio-anchor/gen-data.py}
D=${1:-/tmp/cnamd-http-anchor}
SECS=${SECS:-10}
CONNS=${CONNS:-50}
BPORT=${BPORT:-8091} HPORT=${HPORT:-8092} SPORT=${SPORT:-5092}
CNAMD=$repo/.venv/bin/cnamd
PY=$repo/.venv/bin/python
TCK=$(getconf CLK_TCK)
mkdir -p "$D"; D=$(cd "$D" && pwd)
LOG=$D/sitting.log
say() { echo "$*" | tee -a "$LOG"; }

if [ ! -e "$D/.loaded" ]; then
  python3 "$GEN" "$D" 1000000 >/dev/null || exit 1
  awk -F, 'NR>1{print $1"\t"$2}' "$D/entries.csv" > "$D/table.tsv"
  "$PY" "$repo/bench/load_entries.py" "$D/entries.csv" --embedded-dir "$D/pg" || exit 1
  "$CNAMD" tenant create --embedded-dir "$D/pg" --log-level warning --name Bench --region US bench >/dev/null
  "$CNAMD" apikey create --embedded-dir "$D/pg" --log-level warning --role partner --enterprise bench \
    --label bench | tail -1 > "$D/token" || exit 1
  touch "$D/.loaded"; rm -f "$D/cache.snapshot"
fi
TOKEN=$(cat "$D/token"); KEYID=${TOKEN%%.*}; SECRET=${TOKEN#*.}
PBX="/v3/phone/{d}?format=pbx&account_sid=$KEYID&auth_token=$SECRET"
PBX_E164="/v3/phone/{n}?format=pbx&account_sid=$KEYID&auth_token=$SECRET"   # the same with '+': no two readings
PHONE="/v1/directory/yealink?term={d}&account_sid=$KEYID&auth_token=$SECRET"   # a desk phone's number search

PIDS=""
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
ticks() { local s=0 p; for p in "$@"; do [ -r /proc/$p/stat ] && s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }
stop() {
  [ -n "$PIDS" ] || return 0
  local main=${PIDS%% *}; kill -TERM "$main" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$main" 2>/dev/null || break; sleep 0.2; done
  for p in $PIDS; do kill -KILL "$p" 2>/dev/null; done
  PIDS=""
}
trap 'stop' EXIT
trap 'exit 130' INT TERM
ready() {   # ready URL MAIN_PID
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || return 1
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.5
  done
  return 1
}

# bench LABEL PORT PATH_T: one wrk run against the running server (PIDS)
bench() {
  local label=$1 port=$2 path=$3 out b0 b1 s0 s1 w0 w1 rps p50 p99 n
  curl -s "http://127.0.0.1:$port$(echo "$path" | sed 's/{n}/+19576339411/; s/{d}/19576339411/')" >/dev/null
  b0=$(busy); s0=$(ticks $PIDS); w0=$(awk '{print $16+$17}' /proc/$$/stat)
  out=$(CALLS="$D/calls.csv" PATH_T="$path" $CLIENT_CPU wrk -t1 -c"$CONNS" -d"${SECS}s" --latency \
    -s "$ANCHOR/lookup.lua" "http://127.0.0.1:$port/")
  b1=$(busy); s1=$(ticks $PIDS); w1=$(awk '{print $16+$17}' /proc/$$/stat)
  rps=$(echo "$out" | awk '/^Requests\/sec/{printf "%d", $2}')
  n=$(echo "$out" | awk '/requests in/{print $1}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}'); p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  local cpu_us=$(( (s1-s0) * 1000000 / TCK / (n>0?n:1) ))
  local other=$(( ((b1-b0) - (s1-s0) - (w1-w0)) * 100 / (SECS*TCK) ))
  say "$label rps=$rps p50=$p50 p99=$p99 server_cpu_us_per_req=$cpu_us non2xx=${non2xx:-0} other_pct=$other"
}

start_bare() {
  $SERVER_CPU "$PY" "$ANCHOR/bare.py" "$BPORT" "$D/table.tsv" > "$D/bare.log" 2>&1 &
  PIDS=$!
  ready "http://127.0.0.1:$BPORT/v1/lookup/+19576339411" "$PIDS" || ready "http://127.0.0.1:$BPORT/v1/lookup/x" "$PIDS"
  for _ in $(seq 1 120); do grep -q ready "$D/bare.log" && break; sleep 0.5; done
}
start_cnamd() {   # start_cnamd WORKERS
  local kids=$(( $1 > 1 ? $1 : 0 ))
  $SERVER_CPU "$CNAMD" serve --embedded-dir "$D/pg" --snapshot "$D/cache.snapshot" --http-listen 127.0.0.1:$HPORT \
    --sip-listen 127.0.0.1:$SPORT --workers "$1" --log-level warning $CNAMD_ARGS > "$D/cnamd-w$1.log" 2>&1 &
  local sup=$!
  ready "http://127.0.0.1:$HPORT/readyz" $sup || { cat "$D/cnamd-w$1.log" >&2; exit 1; }
  for _ in $(seq 1 60); do [ "$(pgrep -P $sup | wc -l)" -ge "$kids" ] && break; sleep 0.5; done
  sleep 3
  local p kids_now=""; for p in $(pgrep -P $sup); do grep -q postgres /proc/$p/comm || kids_now="$kids_now $p"; done
  PIDS="$sup$kids_now"
}
CNAMD_ARGS=${CNAMD_ARGS:-}
# PIN=1: the server on CPU 0 and wrk on CPU 1, so that the latency is not wrk's and the
# server's fight for the same cores (one-process runs only: --workers 2 is skipped)
SERVER_CPU="" CLIENT_CPU=""
[ "${PIN:-0}" = 1 ] && SERVER_CPU="taskset -c 0" CLIENT_CPU="taskset -c 1"

if [ -n "${BASE:-}" ]; then
  say "# $(date -u +%FT%TZ) A/B${SERVER_CPU:+ PIN}: base PYTHONPATH=$BASE against $(git -C "$repo" rev-parse --short HEAD), ${SECS}s c$CONNS per run"
  for round in $(seq 1 "${ROUNDS:-2}"); do
    start_bare; bench "r$round bare-v1" $BPORT '/v1/lookup/{n}'; stop
    PYTHONPATH=$BASE start_cnamd 1; bench "r$round base-w1-v1" $HPORT '/v1/lookup/{n}'
    bench "r$round base-w1-pbx" $HPORT "$PBX"; stop
    start_cnamd 1; bench "r$round cnamd-w1-v1" $HPORT '/v1/lookup/{n}'; bench "r$round cnamd-w1-pbx" $HPORT "$PBX"; stop
  done
  exit 0
fi

say "# $(date -u +%FT%TZ)${SERVER_CPU:+ PIN (server on CPU 0, wrk on CPU 1)} $(nproc) cores, $(git -C "$repo" rev-parse --short HEAD)${PYTHONPATH:+ (cnamd from PYTHONPATH=$PYTHONPATH)}, ${SECS}s c$CONNS per run"
start_bare; bench bare-v1 $BPORT '/v1/lookup/{n}'; stop
start_cnamd 1; bench cnamd-w1-v1 $HPORT '/v1/lookup/{n}'; bench cnamd-w1-pbx $HPORT "$PBX"
bench cnamd-w1-pbx-e164 $HPORT "$PBX_E164"; bench cnamd-w1-yealink $HPORT "$PHONE"; stop
if [ -z "$SERVER_CPU" ]; then
  start_cnamd 2; bench cnamd-w2-v1 $HPORT '/v1/lookup/{n}'; bench cnamd-w2-pbx $HPORT "$PBX"; stop
fi
start_bare; bench bare-v1-again $BPORT '/v1/lookup/{n}'; stop
