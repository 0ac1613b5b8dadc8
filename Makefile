# Two entry points: `make run` (the whole pipeline on the embedded data) and `make test`.
# Both create .venv (Python 3.12) and install molgnn first when needed.
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DVC_NO_ANALYTICS := 1

.PHONY: install run test test-all

install:
	./scripts/bootstrap.sh

run: install
	.venv/bin/molgnn run --params params.yaml

# lint-imports first: the layering of docs/ARCHITECTURE.md (contracts in pyproject.toml) must hold.
test: install
	./scripts/install_browser.sh
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -m "not gpu" -q

test-all: install
	./scripts/install_browser.sh
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -q
