# wshub: `make demo` runs the demo, `make test` runs every test suite.
# Both create .venv and build the package into it first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.deps-installed

.PHONY: demo test develop lint stubtest clean

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Build the extension (release profile: the tests and the demo exercise the
# real fan-out path) and install it into .venv in editable mode.
develop: $(STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet

demo: develop
	$(PY) examples/demo.py

test: develop
	cargo test --quiet
	$(PY) -m mypy.stubtest wshub._native --allowlist stubtest-allowlist.txt
	$(PY) -m pytest -q

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings

clean:
	rm -rf $(VENV) target
