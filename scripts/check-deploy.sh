#!/usr/bin/env bash
# usage: scripts/check-deploy.sh        (make check-deploy; .ci/run calls it)
# Validates everything in deploy/ that can be checked on this machine, offline:
#   - Prometheus alert rules: promtool check rules, and promtool test rules
#     (deploy/prometheus/alerts_test.yml)
#   - a live /metrics: starts `cnamd serve --demo --workers 2` on loopback, sends
#     a dip and a lookup, then `promtool check metrics` on the merged exposition,
#     and every cnamd_* name the alerts and the Grafana dashboard use must be in it
#   - the systemd unit: systemd-analyze verify (ExecStart pointed at this
#     checkout's cnamd, as /opt/cnamd is not installed here) and
#     systemd-analyze security --offline with an exposure threshold
#   - Kubernetes manifests: kubernetes-validate --strict (schemas bundled, offline)
#   - docker-compose.yml: check-jsonschema against the compose spec it vendors
#   - Dockerfile: multi-stage, and the final stage runs as a non-root user
#     (no Docker daemon here to build it)
# Debian's prometheus (promtool) and systemd (systemd-analyze) are installed with
# apt-get when missing and we are root. Everything it starts, it stops.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv/bin"
deploy="$here/deploy"
k8s_version=${K8S_VERSION:-1.30.0}
security_threshold=${SYSTEMD_EXPOSURE_MAX:-30}  # tenths: 30 = exposure 3.0 ("OK")
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
step() { echo "check-deploy: $*"; }

. "$here/scripts/need.sh"
need check-deploy promtool prometheus --no-install-recommends
need check-deploy systemd-analyze systemd --no-install-recommends

step "promtool check rules / test rules"
promtool check rules "$deploy/prometheus/alerts.yml"
(cd "$deploy/prometheus" && promtool test rules alerts_test.yml)

step "a live /metrics from cnamd serve --demo --workers 2"
free_port() { "$venv/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
sip_port=$(free_port)
# one upstream source (nothing listens there) so its labelled metrics exist
(cd "$work" && exec "$venv/cnamd" serve --demo --workers 2 \
  --sip-listen "127.0.0.1:$sip_port" --http-listen "127.0.0.1:$http_port" \
  --set 'upstream.sources=[{"name": "check", "url": "http://127.0.0.1:9"}]' \
  >"$work/cnamd.log" 2>&1) &
pid=$!
if ! "$venv/python" "$here/scripts/wait_ready.py" "$http_port" 90 check-deploy ||
  ! "$venv/python" - "$http_port" "$sip_port" "$work/metrics.txt" <<'PY'
import socket, sys, time, urllib.request
http, sip, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
base = f"http://127.0.0.1:{http}"
# one dip and one lookup, so the histograms and lookup counters have live values
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(3)
    s.sendto(
        (f"INVITE sip:+492216698700@127.0.0.1:{sip} SIP/2.0\r\n"
         "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-check;rport\r\n"
         "From: <sip:+492216698712@127.0.0.1>;tag=c\r\nTo: <sip:+492216698700@127.0.0.1>\r\n"
         "Call-ID: check-deploy\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
         ).encode(), ("127.0.0.1", sip))
    assert s.recv(65535).startswith(b"SIP/2.0 302"), "the dip was not answered 302"
urllib.request.urlopen(base + "/v1/lookup/+492216698712?tenant=demo", timeout=3).read()
time.sleep(1.5)  # each worker adds its tallies once a second
with urllib.request.urlopen(base + "/metrics", timeout=3) as resp:
    open(out, "wb").write(resp.read())
PY
then
  tail -30 "$work/cnamd.log" >&2
  exit 1
fi
promtool check metrics <"$work/metrics.txt"
"$venv/python" - "$work/metrics.txt" "$deploy/prometheus/alerts.yml" "$deploy/grafana/dashboards/cnamd.json" <<'PY'
import json, re, sys
from prometheus_client.parser import text_string_to_metric_families
live = set()
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    live |= {s.name for s in family.samples}
used = set(re.findall(r"\bcnamd_[a-z_]+", open(sys.argv[2]).read()))
dashboard = json.load(open(sys.argv[3]))
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        used |= set(re.findall(r"\bcnamd_[a-z_]+", target["expr"]))
missing = sorted(used - live)
if missing:
    sys.exit(f"check-deploy: alerts or dashboard use metrics the daemon does not export: {missing}")
print(f"check-deploy: the alerts and the dashboard use {len(used)} names, all exported")
PY
kill -TERM "$pid"
wait "$pid" || { echo "check-deploy: cnamd exited with $?" >&2; exit 1; }
pid=""

step "systemd-analyze verify / security"
unit="$work/cnamd.service"
sed "s#/opt/cnamd/bin/cnamd#$venv/cnamd#g" "$deploy/systemd/cnamd.service" >"$unit"
systemd-analyze verify "$unit"
systemd-analyze security --offline=true --threshold="$security_threshold" "$unit" | tail -1

step "kubernetes-validate --strict (Kubernetes $k8s_version)"
"$venv/kubernetes-validate" --strict --quiet -k "$k8s_version" "$deploy"/kubernetes/*.yaml

step "docker-compose.yml against the compose spec"
"$venv/check-jsonschema" --builtin-schema vendor.compose-spec "$deploy/docker-compose.yml"

step "Dockerfile: multi-stage, non-root"
dockerfile="$deploy/Dockerfile"
stages=$(grep -cE '^FROM ' "$dockerfile")
user=$(awk '/^FROM /{u=""} /^USER /{u=$2} END{print u}' "$dockerfile")
[ "$stages" -ge 2 ] || { echo "check-deploy: $dockerfile has $stages stage(s); want a build and a run stage" >&2; exit 1; }
case "${user%%:*}" in
  "" | root | 0) echo "check-deploy: the final stage of $dockerfile runs as root" >&2; exit 1 ;;
esac
grep -q 'COPY --from=build' "$dockerfile" || { echo "check-deploy: the run stage copies nothing from the build" >&2; exit 1; }
step "all passed"
