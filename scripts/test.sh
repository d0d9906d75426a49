#!/usr/bin/env bash
# Install everything into .venv and run the whole test suite (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/test_browser.py drives Debian's Chromium through Playwright; Playwright never
# downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
. scripts/_venv.sh
install_falkit "dev,torch,notebooks,ray"
# The fal SDK without its fastapi<0.137 pin (see the `fal` extra), plus what `import fal`
# and fal's own local server (tests/test_fal_apps.py compares against it) need. Not its
# pathspec<1 pin either: mypy (the house rules below) needs pathspec 1, and what falkit
# uses of fal runs with it.
python -m pip install -q --no-deps "fal==1.83.0"
python -m pip install -q isolate-proto grpc-interceptor "structlog<26" "rich<15" colorama tomli \
  "cloudpickle<3.2" opentelemetry-sdk starlette-exporter
# tests/test_fal_js.py: the real @fal-ai/client from npm (node, and Chromium through esbuild).
bash scripts/js_deps.sh
# The house rules first (STYLE.md): lint, types, and the layers contract (pyproject.toml).
ruff check falkit tests benchmarks
ruff format --check falkit tests benchmarks
mypy falkit
lint-imports
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
