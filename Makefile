# The two commands a newcomer needs: `make run` (the embedded stack) and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed

.PHONY: run demo test bench schemas clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so pip takes the local CPU wheel instead of a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ragstream up

demo: $(STAMP)
	$(BIN)/ragstream demo

# Two test processes, a file each at a time (a module's services and fixtures stay in one
# process): most tests wait on brokers, outages and restarts, so two halve the wall time on two
# cores. PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= 2
test: $(STAMP) $(TRITON_STAMP) test-tools
	$(BIN)/python -m pytest -q --durations=15 -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# What the tests need beyond Python: Debian's prometheus package (promtool checks the alert rules,
# the server scrapes live workers in the dashboard test), and pgvector in the machine's PostgreSQL
# 15 with the `ragstream` database (infra/pgvector/install.sh; it checks first, so a second run is
# instant). Nothing to do when everything is there.
.PHONY: test-tools
test-tools:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; \
	fi
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO infra/pgvector/install.sh

schemas: $(STAMP)
	$(BIN)/python -m schemas.generate

clean:
	rm -rf $(VENV) .ragstream $(TRITON_VENV)

# Triton (PyTriton bundles a real tritonserver) in its own venv: nvidia-pytriton pins numpy<2.
# `ragstream triton serve` and the batch inference tests run the server from it.
$(TRITON_STAMP): ragstream/triton/requirements.txt
	test -x $(TRITON_VENV)/bin/python || $(PY) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet torch==2.13.0
	$(TRITON_VENV)/bin/pip install --quiet -r ragstream/triton/requirements.txt
	touch $(TRITON_STAMP)

.PHONY: triton
triton: $(STAMP) $(TRITON_STAMP)
	$(BIN)/ragstream triton serve
