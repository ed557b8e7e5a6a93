#!/usr/bin/env bash
# Install what the browser test (tests/integration/test_browser.py) needs: Debian's chromium and
# Playwright for Python in .venv. Never `playwright install`: it downloads its own browser, which
# fails offline; the test drives /usr/bin/chromium instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
fi
test -x .venv/bin/python || python3 -m venv .venv
.venv/bin/pip install -q "playwright>=1.45"
chromium --version
.venv/bin/python -c "import playwright; print('playwright for python ok')"
