#!/usr/bin/env bash
# Install falkit with the notebook extras into .venv and open JupyterLab on the tour
# notebooks (the README's first command). Extra arguments go to `jupyter lab`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[torch,notebooks,lab]"
exec jupyter lab notebooks/ "$@"
