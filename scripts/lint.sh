#!/usr/bin/env bash
# The linters `make test` runs first: ruff (lint and format), mypy --strict, yamllint, ansible-lint.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
export PATH="$PWD/$bin:$PATH"  # ansible-lint runs ansible-playbook from the venv
echo "lint: ruff"
"$bin/ruff" check src tests stacks policy bench
"$bin/ruff" format --check --quiet src tests stacks policy bench
echo "lint: mypy --strict src/mlseclab"
"$bin/mypy" --no-error-summary
echo "lint: mypy --strict tests/helpers (the e2e suite's shared code, which only e2e runs)"
MYPYPATH=src:tests "$bin/mypy" --no-error-summary --strict --explicit-package-bases \
  --follow-imports=silent --ignore-missing-imports tests/helpers
echo "lint: yamllint"
"$bin/yamllint" --strict .
if [ -f roles/site.yml ]; then
  echo "lint: ansible-lint (production profile)"
  "$bin/ansible-lint" --profile production --offline roles/site.yml
else
  echo "lint: ansible-lint: no playbook yet (roles/site.yml arrives with the hardening roles)"
fi
