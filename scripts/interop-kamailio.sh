#!/usr/bin/env bash
# usage: scripts/interop-kamailio.sh [CNAMD_SIP_PORT] [HOST]
# The README's Kamailio recipe against an already running cnamd (demo data loaded):
# deploy/integrations/kamailio-cnam.cfg runs as is between a sipp caller and a sipp
# "PBX", which checks the INVITE it gets: a known caller arrives with cnamd's name in
# P-Asserted-Identity, an unknown one without. Installs Debian's kamailio and sip-tester
# when missing (as root). Everything it starts, it stops; exits non-zero on any failure.
set -u
cnamd_port=${1:-5060}
host=${2:-127.0.0.1}
proxy_port=${KAMAILIO_PORT:-15070}
pbx_port=${PBX_PORT:-15080}
here=$(cd "$(dirname "$0")/.." && pwd)
recipe="$here/deploy/integrations"

. "$here/scripts/need.sh"
need interop-kamailio kamailio kamailio
need interop-kamailio sipp sip-tester

work=$(mktemp -d)
proxy=""
cleanup() {
  if [ -n "$proxy" ] && kill -0 "$proxy" 2>/dev/null; then
    kill -TERM "$proxy" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$proxy" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$proxy" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

kamailio -DD -E -f "$recipe/kamailio-cnam.cfg" -Y "$work" -w "$work" -m 32 -M 8 \
  -l "udp:$host:$proxy_port" \
  -A "CNAMD_URI=\"sip:$host:$cnamd_port\"" -A "PBX_URI=\"sip:$host:$pbx_port\"" \
  >"$work/kamailio.log" 2>&1 &
proxy=$!
for _ in $(seq 1 50); do grep -q "udp: $host" "$work/kamailio.log" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
if ! kill -0 "$proxy" 2>/dev/null; then
  echo "interop-kamailio: kamailio did not start" >&2
  tail -20 "$work/kamailio.log" >&2
  exit 1
fi

passed=0
failed=0
call() {  # name, caller number, PBX scenario
  local name=$1 caller=$2 pbx=$3
  (cd "$work" && timeout 30 sipp -sf "$recipe/sipp/$pbx" -i "$host" -p "$pbx_port" -m 1 \
    -timeout 20s -timeout_error -nostdin -trace_err) >"$work/$name-pbx.out" 2>&1 &
  local pbx_pid=$!
  sleep 0.3
  local status=0
  (cd "$work" && timeout 30 sipp "$host:$proxy_port" -sf "$recipe/sipp/uac-call.xml" \
    -key caller "$caller" -i "$host" -m 1 -recv_timeout 5000 -timeout 20s -timeout_error \
    -nostdin -trace_err) >"$work/$name-caller.out" 2>&1 || status=1
  wait "$pbx_pid" || status=1
  if [ "$status" = 0 ]; then
    passed=$((passed + 1))
    echo "ok    kamailio-$name"
  else
    failed=$((failed + 1))
    echo "FAIL  kamailio-$name"
    for f in "$work/$name-caller.out" "$work/$name-pbx.out" "$work"/*_errors.log; do
      [ -f "$f" ] && sed "s/^/      /" "$f" | tail -15
    done
    rm -f "$work"/*_errors.log
  fi
}

call named +492216698712 uas-named.xml
call unnamed +15555550100 uas-unnamed.xml

if [ "$failed" != 0 ]; then
  echo "--- kamailio log" >&2
  tail -30 "$work/kamailio.log" >&2
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
