#!/usr/bin/env bash
# usage: scripts/interop.sh [PORT] [HOST]
# Drive an already running cnamd (demo data loaded) with real SIP peers: the sipp
# scenarios in deploy/sipp over UDP and TCP, and a sipsak OPTIONS ping. Installs
# Debian's sip-tester (sipp) and sipsak when missing. Exits non-zero on any failure.
set -u
port=${1:-5060}
host=${2:-127.0.0.1}
here=$(cd "$(dirname "$0")/.." && pwd)
scenarios="$here/deploy/sipp"

. "$here/scripts/need.sh"
need interop sipp sip-tester
need interop sipsak sipsak

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0

check() {  # name, command...
  local name=$1
  shift
  if (cd "$logs" && timeout 30 "$@") >"$logs/$name.out" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    echo "FAIL  $name"
    sed "s/^/      /" "$logs/$name.out" | tail -20; echo
    cat "$logs"/*_errors.log 2>/dev/null | sed 's/^/      /' | tail -20
    rm -f "$logs"/*_errors.log
  fi
}

for transport in u1 t1; do
  for scenario in "$scenarios"/uac-*.xml; do
    name="$(basename "$scenario" .xml)-$transport"
    check "$name" sipp "$host:$port" -sf "$scenario" -t "$transport" -m 1 -l 1 \
      -recv_timeout 5000 -timeout 20s -timeout_error -nostdin -trace_err
  done
done
check sipsak-options sipsak -s "sip:ping@$host:$port"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
