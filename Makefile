# The two commands a user needs: `make run` and `make test`. Both install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-containers lint lock bench bench-containers verify-migrations clean

install: $(STAMP)

$(STAMP): requirements.lock requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes \
		-r requirements-dev.lock
	@touch $(STAMP)

run: install
	$(BIN)/python -m migration_tools.embedded

test: install
	$(BIN)/python -m pytest --ignore=tests/containers $(PYTEST_ARGS)

# The container suite: needs a Docker engine (`docker compose` or `docker-compose`).
test-containers: install
	$(BIN)/python -m pytest tests/containers $(PYTEST_ARGS)

# kubernetes-validate and checkov, for the manifests in deploy/kubernetes/: a venv of their
# own (checkov needs packaging<24, which requirements-dev.lock cannot share), made on first use.
MANIFEST_VENV := $(VENV)/manifests
MANIFEST_STAMP := $(MANIFEST_VENV)/.installed

$(MANIFEST_STAMP): requirements-manifests.lock
	@test -x $(MANIFEST_VENV)/bin/python || $(PYTHON) -m venv $(MANIFEST_VENV)
	$(MANIFEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		--require-hashes -r requirements-manifests.lock
	@touch $(MANIFEST_STAMP)

# The manifests, offline: kubernetes-validate ships its schemas in the package; checkov runs
# its bundled checks with no API key (unset here, so nothing is uploaded), --skip-download
# (no policy metadata fetched) and CKV_SKIP_PACKAGE_UPDATE_CHECK (no new-version check
# against PyPI). CKV_PARSE_ERROR_FAIL: a file checkov cannot parse fails instead of being
# skipped. Skip a check for one resource with a reason, in its metadata.annotations:
#   checkov.io/skip1: CKV_K8S_xx=why
lint: install $(MANIFEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/shellcheck -x entrypoint.sh scripts/*.sh deploy/compose/*.sh .ci/run
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml \
		docker-compose.override.yml
	scripts/lint_migrations.sh
	MANIFEST_TOOLS=$(CURDIR)/$(MANIFEST_VENV) scripts/validate_manifests.sh
	env -u BC_API_KEY -u PRISMA_API_URL CKV_SKIP_PACKAGE_UPDATE_CHECK=true \
		CKV_PARSE_ERROR_FAIL=true $(MANIFEST_VENV)/bin/checkov --framework kubernetes \
		-d deploy/kubernetes --quiet --compact --skip-download

# The sha256 hashes in the three lock files, for the pins they hold (no version changes):
# run after editing a pin. Needs PyPI; also hashes files pip's configured local sources hold.
lock:
	$(PYTHON) scripts/lock_hashes.py

# A scratch database of its own (on the embedded server) unless VERIFY_ARGS names one:
# an exported DATABASE_URL is the application's database, not one to walk the history on.
verify-migrations: install
	env -u DATABASE_URL scripts/verify_migrations.sh $(VERIFY_ARGS)

bench: install
	$(BIN)/python -m bench.run

# Needs a Docker engine: the image's size and its start-up, in bench/containers/.
bench-containers: install
	$(BIN)/python -m bench.run --only containers --output bench/containers

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
