#!/bin/bash
# The SIP dip's CPU per 1000 dips, cnamd --workers 1 at UDP 20k/s for 10 s, another commit's cnamd and this
# tree's alternately, twice each (the Kamailio anchor's dip.sh and call list).
#
#   bench/sip_ab_w1.sh DATA_DIR BASE_SRC     # DATA_DIR as bench/sip_anchor.sh left it (entries loaded);
#                                            # BASE_SRC: git archive COMMIT src | tar -x -C /tmp/base, with
#                                            # this tree's src/**/*.so copied beside it; /tmp/base/src
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
D=$1 BASE_SRC=$2
for round in 1 2; do
for which in base branch; do
  if [ $which = base ]; then export PYTHONPATH=$BASE_SRC; else unset PYTHONPATH; fi
  .venv/bin/cnamd serve --embedded-dir $D/pg --snapshot $D/cache.snapshot --sip-listen 127.0.0.1:5180 \
    --http-listen 127.0.0.1:8181 --workers 1 --log-level warning --set sip.rate=1000000 --set sip.burst=1000000 > $D/ab-$which.log 2>&1 &
  sup=$!
  for i in $(seq 1 120); do [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:8181/readyz)" = 200 ] && break; sleep 0.5; done
  sleep 3
  echo "$which round=$round $(SERVER_PIDS=$sup CALLS=$D/calls.csv "$repo/../shared/bench/kamailio-anchor/dip.sh" 5180 20000 10 u1) load=$(cut -d' ' -f1 /proc/loadavg)"
  kill -TERM $sup; for i in $(seq 1 100); do kill -0 $sup 2>/dev/null || break; sleep 0.2; done
done
done
