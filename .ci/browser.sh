#!/usr/bin/env bash
# The browser suite (issue 16): Debian's Chromium driven by Python Playwright, against the real
# binary on a fresh SQLite file per test. Installs what it needs on a bare machine; Playwright's
# own browser download cannot work here, so `playwright install` is never run.
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_VERSION=1.65.2
PYTEST_VERSION=9.2.0
VENV=${BROWSER_VENV:-.venv-browser}

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y chromium || { $SUDO apt-get update && $SUDO apt-get install -y chromium; }
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q "playwright==$PLAYWRIGHT_VERSION" "pytest==$PYTEST_VERSION"
/usr/bin/chromium --version
"$VENV/bin/python" -c "import importlib.metadata as m; print('playwright', m.version('playwright'), 'pytest', m.version('pytest'))"

if [ -z "${BOXOFFICE_BIN:-}" ]; then
  cargo build --bin boxoffice
  BOXOFFICE_BIN=$(cargo build --bin boxoffice --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*boxoffice[^"]*"' | tail -1 | sed 's/"executable":"\(.*\)"/\1/')
fi
export BOXOFFICE_BIN
echo "boxoffice binary: $BOXOFFICE_BIN"
start=$(date +%s)
"$VENV/bin/pytest" -q tests/browser "$@"
echo "browser suite: $(( $(date +%s) - start )) s"
