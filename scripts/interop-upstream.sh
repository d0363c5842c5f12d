#!/usr/bin/env bash
# usage: scripts/interop-upstream.sh
# cnamd's `sip` upstream source against a real SIP dip server: Kamailio
# (tests/interop/kamailio-dip-server.cfg, a carrier's CNAM dip answering 302 with
# the name in P-Asserted-Identity, or 404) asked over UDP and over TCP by a
# `cnamd serve --demo --workers 2` whose callers are sipp. Each number Kamailio
# knows is heard by sipp in cnamd's 302 on the first call and again on the second,
# which no longer goes upstream; a number it does not know is a 404 both times
# and asked once (the negative answer is held). Checked on cnamd's
# cnamd_upstream_requests_total (names within names.max_length, 15). Installs Debian's kamailio and sip-tester when
# missing (as root). Everything it starts, it stops; exits non-zero on any failure.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cnamd="$here/.venv/bin/cnamd"
python="$here/.venv/bin/python"
host=127.0.0.1
dip_port=${DIP_SERVER_PORT:-15090}
sip_port=${SIP_PORT:-15064}
http_port=${HTTP_PORT:-18084}

. "$here/scripts/need.sh"
need interop-upstream kamailio kamailio
need interop-upstream sipp sip-tester

work=$(mktemp -d)
server="" daemon=""
stop() {  # stop PID: TERM, then KILL after 5 s
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() { stop "$daemon"; stop "$server"; rm -rf "$work"; }
trap cleanup EXIT

kamailio -DD -E -f "$here/tests/interop/kamailio-dip-server.cfg" -Y "$work" -w "$work" -m 32 -M 8 \
  -l "udp:$host:$dip_port" -l "tcp:$host:$dip_port" >"$work/kamailio.log" 2>&1 &
server=$!
for _ in $(seq 1 50); do grep -q "tcp: $host" "$work/kamailio.log" 2>/dev/null && break; sleep 0.1; done
if ! kill -0 "$server" 2>/dev/null; then
  echo "interop-upstream: kamailio did not start" >&2
  tail -20 "$work/kamailio.log" >&2
  exit 1
fi

# +1555... goes over TCP (the first source covering it), the rest of +1 over UDP
sources='[{"name": "carrier-tcp", "kind": "sip", "url": "sip:'$host:$dip_port';transport=tcp", "countries": ["+1555"]},
          {"name": "carrier-udp", "kind": "sip", "url": "sip:'$host:$dip_port'", "countries": ["+1"]}]'
(cd "$work" && exec "$cnamd" serve --demo --workers 2 --sip-listen "$host:$sip_port" \
  --http-listen "$host:$http_port" --set "upstream.sources=$sources" >"$work/cnamd.log" 2>&1) &
daemon=$!
"$python" "$here/scripts/wait_ready.py" "$http_port" 60 interop-upstream || { tail -30 "$work/cnamd.log" >&2; exit 1; }

held() {  # the upstream answers every worker holds (the gauge takes the largest worker's)
  curl -s "http://$host:$http_port/metrics" | awk '/^cnamd_cache_entries\{scope="upstream"\}/{print int($2)}'
}
wait_held() {  # wait_held N: until N answers are held, at most 10 s
  for _ in $(seq 1 100); do [ "$(held)" -ge "$1" ] 2>/dev/null && return 0; sleep 0.1; done
  echo "interop-upstream: $1 upstream answers not held within 10 s (held: $(held))" >&2
  return 1
}

passed=0 failed=0
dip() {  # dip NAME CALLER EXPECTED_NAME|-  (- : expect 404)
  local name=$1 caller=$2 expect=$3 scenario="$work/$1.xml"
  if [ "$expect" = - ]; then
    sed "s/+15550000000/$caller/g" "$here/deploy/sipp/uac-404.xml" >"$scenario"
  else
    sed -e "s/+492216698712/$caller/g" -e "s/John Doe/$expect/g" \
      "$here/deploy/sipp/uac-302.xml" >"$scenario"
  fi
  if (cd "$work" && timeout 30 sipp "$host:$sip_port" -sf "$scenario" -m 1 -l 1 \
      -recv_timeout 5000 -timeout 20s -timeout_error -nostdin -trace_err) >"$work/$name.out" 2>&1; then
    passed=$((passed + 1)); echo "ok    $name"
  else
    failed=$((failed + 1)); echo "FAIL  $name"
    tail -20 "$work/$name.out" | sed 's/^/      /'
    cat "$work"/*_errors.log 2>/dev/null | tail -20 | sed 's/^/      /'; rm -f "$work"/*_errors.log
  fi
}

dip udp-first '+12025550188' 'Carrier Udp'
dip tcp-first '+15551230001' 'Carrier Tcp'
dip unknown-first '+12025550100' -
wait_held 3 || failed=$((failed + 1))
dip udp-again '+12025550188' 'Carrier Udp'
dip tcp-again '+15551230001' 'Carrier Tcp'
dip unknown-again '+12025550100' -

# each number went upstream once, over the transport its source names
metrics=$(curl -s "http://$host:$http_port/metrics")
for expect in 'source="carrier-udp",result="hit"} 1' 'source="carrier-tcp",result="hit"} 1' \
    'source="carrier-udp",result="miss"} 1'; do
  source=${expect%%,*} result=${expect#*,}; result=${result%%\}*}
  got=$(echo "$metrics" | grep '^cnamd_upstream_requests_total{' | grep "$source" | grep "$result" \
    | awk '{print int($2)}')
  if [ "$got" = "${expect##* }" ]; then
    passed=$((passed + 1)); echo "ok    requests $source $result: $got"
  else
    failed=$((failed + 1)); echo "FAIL  requests $source $result: ${got:-none}, expected ${expect##* }"
  fi
done

# and over the transport its source names (Kamailio logs each request's)
for expect in 'INVITE over udp from +12025550188' 'INVITE over tcp from +15551230001' \
    'INVITE over udp from +12025550100'; do
  if grep -qF "dip $expect" "$work/kamailio.log"; then
    passed=$((passed + 1)); echo "ok    kamailio: $expect"
  else
    failed=$((failed + 1)); echo "FAIL  kamailio never saw: $expect"
  fi
done

stop "$daemon"; daemon=""
echo "interop-upstream: $passed passed, $failed failed"
[ "$failed" = 0 ] || { tail -30 "$work/cnamd.log" >&2; exit 1; }
