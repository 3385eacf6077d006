#!/usr/bin/env bash
# Make sure a Chromium for the end-to-end test exists: Debian's package where apt is available,
# otherwise Playwright's own download.
set -euo pipefail
PY=${PY:-.venv/bin/python}
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  exit 0
fi
"$PY" -m playwright install chromium
