# cnamd: the README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit interop api-fuzz check-deploy bench clean config cluster

# setup.py compiles the SIP hot path with mypyc; the compiled modules shadow the
# .py files, so editing one of them rebuilds (CNAMD_PURE_PYTHON=1 skips compiling).
COMPILED := src/cnamd/sip/message.py src/cnamd/sip/dip.py src/cnamd/lookup.py src/cnamd/ratelimit.py src/cnamd/callers.py \
  src/cnamd/numbers.py src/cnamd/validity.py \
  $(addprefix src/cnamd/cache/,directory.py contexts.py resolver.py trie.py overlay.py upstream.py) \
  src/cnamd/sip/_scan.c src/cnamd/sip/_udp.c src/cnamd/cache/_index.c src/cnamd/cache/_builder.c src/cnamd/cache/_index_layout.h \
  src/cnamd/cache/_probe.h src/cnamd/cache/_held.c src/cnamd/_buckets.c

$(STAMP): pyproject.toml setup.py $(COMPILED)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

## run: start the daemon with demo data on the embedded PostgreSQL
run: $(STAMP)
	$(BIN)/cnamd serve --demo $(ARGS)

## cluster: a PostgreSQL primary and a streaming standby (embedded binaries, var/cluster),
## one daemon on the primary and two on the standby; prints how to reach each; Ctrl-C stops all
cluster: $(STAMP)
	$(BIN)/python scripts/cluster.py $(ARGS)

## test: lint, type-check and the whole test suite
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	@# as setup.py's mypyc build sees the hot path: in pip's isolated build env, without
	@# the dependencies (phonenumbers, asyncpg ... are Any there)
	$(BIN)/mypy --no-site-packages --ignore-missing-imports $(filter %.py,$(COMPILED))

# One scratch directory per checkout, emptied by pytest when the next run starts. pytest's
# default keeps three numbered sessions (about 1 GB of PostgreSQL data dirs each) and sweeps
# older ones at exit, a sweep that a stray file can turn into a failed run under
# filterwarnings=error; a fixed --basetemp has no sweep.
TEST_TMP ?= $(or $(TMPDIR),/tmp)/cnamd-test-$(shell printf %s '$(CURDIR)' | cksum | cut -d' ' -f1)

# pytest-xdist: one test process per core (TEST_WORKERS=0 runs them all in this one), each
# with its own PostgreSQL and its own directory under TEST_TMP; a module's tests stay in one
# process (--dist loadscope) so a module-scoped daemon starts once.
TEST_WORKERS ?= auto

unit: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope --basetemp=$(TEST_TMP) $(PYTEST_ARGS)

## interop: start the demo daemon and drive it with real SIP peers (sipp, sipsak; apt-get when missing)
interop: $(STAMP)
	scripts/interop-daemon.sh

## api-fuzz: start the demo daemon and fuzz its HTTP API from /openapi.json with schemathesis
## (operator, partner and anonymous; fails on any 5xx or answer the document does not describe)
api-fuzz: $(STAMP)
	scripts/api-fuzz.sh

## check-deploy: validate deploy/ (promtool on the rules and a live /metrics, systemd-analyze, Kubernetes and compose schemas)
check-deploy: $(STAMP)
	scripts/check-deploy.sh

## config: regenerate config/cnamd.example.toml from the settings' defaults
config: $(STAMP)
	$(BIN)/python scripts/gen_example_config.py

clean:
	rm -rf $(VENV) var build .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
