#!/usr/bin/env bash
# Install falkit with the notebook extras into .venv and open JupyterLab on the tour
# notebooks (the README's first command). Extra arguments go to `jupyter lab`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
install_falkit "torch,notebooks,lab"
exec jupyter lab notebooks/ "$@"
