#!/usr/bin/env bash
# usage: scripts/interop-daemon.sh
# `make interop`: start `cnamd serve --demo` (two workers, embedded PostgreSQL,
# loopback ports) in a scratch directory, drive it with real SIP peers
# (scripts/interop.sh: sipp scenarios over UDP and TCP, a sipsak ping; the README's
# Kamailio recipe in front of it), then stop it with SIGTERM and require a clean
# exit; then scripts/interop-upstream.sh (Kamailio as an upstream SIP dip server of
# a second daemon). Everything it starts, it stops.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cnamd="$here/.venv/bin/cnamd"
python="$here/.venv/bin/python"
sip_port=${SIP_PORT:-15060}
http_port=${HTTP_PORT:-18080}
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$work" && exec "$cnamd" serve --demo --workers 2 \
  --sip-listen "127.0.0.1:$sip_port" --http-listen "127.0.0.1:$http_port" >"$work/cnamd.log" 2>&1) &
pid=$!

"$python" "$here/scripts/wait_ready.py" "$http_port" 60 interop

status=0
"$here/scripts/interop.sh" "$sip_port" || status=$?
# the README's Kamailio recipe (deploy/integrations/kamailio-cnam.cfg) in front of it
"$here/scripts/interop-kamailio.sh" "$sip_port" || status=$?
# a second daemon (its own ports and database) asking Kamailio as an upstream SIP dip server
"$here/scripts/interop-upstream.sh" || status=$?

kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  echo "interop: cnamd did not stop within 10 s of SIGTERM" >&2
  status=1
else
  wait "$pid" || { echo "interop: cnamd exited with $?" >&2; status=1; }
fi
pid=""
if [ "$status" != 0 ]; then
  echo "--- cnamd log" >&2
  tail -50 "$work/cnamd.log" >&2
fi
exit "$status"
