#!/usr/bin/env bash
# usage: scripts/api-fuzz.sh [extra schemathesis run flags]
# `make api-fuzz`: start `cnamd serve --demo` (embedded PostgreSQL, loopback ports)
# in a scratch directory and fuzz its HTTP API from its own /openapi.json with
# schemathesis, three times: as a partner key of the demo enterprise, with no
# key (a trusted loopback source), and as an operator key. A bounded number of
# examples per operation keeps the whole run to about three minutes on 2 cores.
# Fails on any server error (5xx) and on any answer the document does not
# describe: status, content type, headers or body schema. Everything it
# starts, it stops.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cnamd="$here/.venv/bin/cnamd"
python="$here/.venv/bin/python"
schemathesis="$here/.venv/bin/schemathesis"
http_port=${HTTP_PORT:-18180}
sip_port=${SIP_PORT:-15160}
examples=${API_FUZZ_EXAMPLES:-15}
seed=${API_FUZZ_SEED:-20261203}
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A generous failed-login budget: the anonymous run's 401s would otherwise turn
# every later request into a 429 and leave the handlers unfuzzed.
(cd "$work" && exec "$cnamd" serve --demo --workers 1 \
  --sip-listen "127.0.0.1:$sip_port" --http-listen "127.0.0.1:$http_port" \
  --set http.auth_failure_burst=1000000 --set http.auth_failure_rate=100000 \
  >"$work/cnamd.log" 2>&1) &
pid=$!

"$python" "$here/scripts/wait_ready.py" "$http_port" 60 api-fuzz

key() { (cd "$work" && "$cnamd" apikey create "$@" | tail -1); }
operator=$(key --role operator --label api-fuzz)
partner=$(key --role partner --enterprise demo --label api-fuzz)

base="http://127.0.0.1:$http_port"
fuzz() {
  local who=$1
  shift
  echo "=== api-fuzz: $who"
  # from the scratch directory, so its cache of past failures never steers a run;
  # one worker, so a run is repeatable (concurrent writes that deadlock in
  # PostgreSQL answer 503, which a wider run would count apart from the rest)
  (cd "$work" && "$schemathesis" run "$base/openapi.json" --url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing --max-examples "$examples" --seed "$seed" \
    --generation-database none --request-timeout 10 --no-color --workers 1 \
    --report junit --report-junit-path "$work/$who.xml" "$@")
}

# Partner first and operator last: the operator's run deletes what it finds
# (tenants, users), and revoking keys is left out so no run loses its own.
status=0
fuzz partner --generation-with-security-parameters false \
  -H "Authorization: Bearer $partner" --exclude-operation-id revokeKey "$@" || status=1
fuzz anonymous "$@" || status=1
fuzz operator --generation-with-security-parameters false \
  -H "Authorization: Bearer $operator" --exclude-operation-id revokeKey "$@" || status=1

if grep -q "unhandled error" "$work/cnamd.log"; then
  echo "api-fuzz: the daemon logged unhandled errors:" >&2
  grep -A3 "unhandled error" "$work/cnamd.log" | head -40 >&2
  status=1
fi
if [ "$status" != 0 ]; then
  echo "--- cnamd log (tail)" >&2
  tail -20 "$work/cnamd.log" >&2
fi
exit "$status"
