#!/usr/bin/env bash
# `make test`: the linters, then every test (unit, Pulumi stacks, end-to-end on this host).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k spec`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lint.sh
echo "test: pytest"
exec .venv/bin/python -m pytest "$@"
