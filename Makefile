# dsip — the two commands: `make demo` (the local demo) and `make test` (the whole suite).
# Both create .venv and install everything they need; both are idempotent.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml scripts/system-packages.txt 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit vectors bench install system-deps demo-deps js-deps tpm-deps clean

demo: install demo-deps
	$(BIN)/dsip demo

test: install system-deps js-deps tpm-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src
	$(BIN)/pytest -q

install: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

system-deps:
	@scripts/install-system-packages.sh scripts/system-packages.txt

demo-deps:
	@scripts/install-system-packages.sh scripts/demo-packages.txt

# tpm2-pytss (the emergency device key in a software TPM) builds against libtss2-dev, so it
# is installed after the Debian packages, as the `tpm` extra
tpm-deps: $(VENV)/.tpm-installed

$(VENV)/.tpm-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[tpm]'
	@touch $@

# js-libp2p node for the DHT interop tests (npm registry; exact versions from the lockfile)
js-deps: interop/js/node_modules/.installed

interop/js/node_modules/.installed: interop/js/package-lock.json
	@command -v npm >/dev/null || scripts/install-system-packages.sh scripts/node-packages.txt
	cd interop/js && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy --strict src

unit: install
	$(BIN)/pytest -q

vectors: install
	$(BIN)/dsip vectors run ../shared/reference/dsip-v0.7/vectors

bench: install
	$(BIN)/python bench/envelope.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
