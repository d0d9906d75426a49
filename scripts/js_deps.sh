#!/usr/bin/env bash
# Install tests/js's npm packages (the real @fal-ai/client, ws, esbuild, pinned by its
# package-lock.json) for tests/test_fal_js.py. node and npm come from Debian when missing
# and this runs as root with apt-get; otherwise it says what to install and leaves the
# test to skip (on a developer machine) or fail (under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
  else
    echo "js_deps: node and npm are missing; install them (sudo apt-get install nodejs npm)" \
      "to run tests/test_fal_js.py" >&2
    exit 0
  fi
fi
(cd tests/js && npm ci --no-audit --no-fund)
