#!/bin/bash
# SIP dips answered from held upstream answers against dips of local names: CPU per 1000 dips of one
# cnamd --workers 1 at UDP RATE/s (default 20k) for SECS s, the two call lists alternated on the same
# daemon, ROUNDS times (bench/README.md, "Upstream sources"; issue 17's "within 5%" target).
#
#   bench/sip_upstream_ab.sh DATA_DIR [SOURCE_DIR]
#
# SOURCE_DIR: a data directory bench/http_anchor.sh or bench/sip_anchor.sh left (the anchor's 1M entries
# loaded as global names into SOURCE_DIR/pg; entries.csv; calls.csv, 90% known numbers); copied once into
# DATA_DIR, which then also holds, as upstream answers (`cnamd upstream import`), each entry's name under
# "+44" and the entry's last 10 digits: numbers no local scope names. calls-upstream.csv is calls.csv
# with every known number so renamed; the 10% unknown numbers are the same in both lists.
# One line per run: the list, then dip.sh's figures (ok, failed, achieved rate, server CPU per 1000).
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${ANCHOR:-$repo/../shared/bench/kamailio-anchor}
D=$1 SRC=${2:-}
RATE=${RATE:-20000} SECS=${SECS:-10} ROUNDS=${ROUNDS:-3} CPORT=${CPORT:-5190} HPORT=${HPORT:-8191}
CNAMD=$repo/.venv/bin/cnamd
mkdir -p "$D"
if [ ! -e "$D/.prepared" ]; then
  [ -n "$SRC" ] && [ -d "$SRC/pg" ] || { echo "first run: give SOURCE_DIR with pg/, entries.csv, calls.csv" >&2; exit 2; }
  rm -rf "$D/pg" && cp -a "$SRC/pg" "$D/pg" && rm -f "$D/pg/postmaster.pid"
  cp "$SRC/calls.csv" "$D/calls.csv"
  "$repo/.venv/bin/python" - "$SRC/entries.csv" "$D" <<'PY'
import csv, sys
entries, out = sys.argv[1], sys.argv[2]
known = set()
with open(entries) as f, open(f"{out}/upstream.csv", "w", newline="") as up:
    w = csv.writer(up)
    w.writerow(["phone", "name"])
    for row in csv.DictReader(f):
        known.add(row["number"])
        w.writerow(["+44" + row["number"][-10:], row["name"]])
with open(f"{out}/calls.csv") as f, open(f"{out}/calls-upstream.csv", "w") as calls:
    lines = f.read().splitlines()
    calls.write(lines[0] + "\n")
    for n in lines[1:]:
        calls.write(("+44" + n[-10:] if n in known else n) + "\n")
PY
  "$CNAMD" upstream import --embedded-dir "$D/pg" --log-level warning --source bench --ttl-days 3650 \
    "$D/upstream.csv" || exit 1
  rm -f "$D/cache.snapshot"*
  touch "$D/.prepared"
fi
"$CNAMD" serve --embedded-dir "$D/pg" --snapshot "$D/cache.snapshot" --sip-listen 127.0.0.1:$CPORT \
  --http-listen 127.0.0.1:$HPORT --workers 1 --log-level warning \
  --set sip.rate=1000000 --set sip.burst=1000000 > "$D/serve.log" 2>&1 &
sup=$!
trap 'kill -TERM $sup 2>/dev/null; wait $sup' EXIT
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$HPORT/readyz)" = 200 ] && break; sleep 0.5
done
pids="$sup $(pgrep -P $sup | tr '\n' ' ')"
curl -s 127.0.0.1:$HPORT/metrics | grep -E '^cnamd_cache_entries\{scope="(global|upstream)"\}'
for calls in "$D/calls.csv" "$D/calls-upstream.csv"; do  # warm-up, not counted: pages mapped in
  SERVER_PIDS="$pids" CALLS=$calls "$ANCHOR/dip.sh" $CPORT $RATE 3 u1 >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
  for list in local upstream; do
    calls=$D/calls.csv; [ $list = upstream ] && calls=$D/calls-upstream.csv
    echo "$list round=$round $(SERVER_PIDS="$pids" CALLS=$calls "$ANCHOR/dip.sh" $CPORT $RATE $SECS u1) load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
curl -s 127.0.0.1:$HPORT/metrics | grep -E '^cnamd_lookups_total\{front="sip",result="hit",scope="(global|upstream)"\}'
