#!/usr/bin/env bash
# What the api-server's browser test needs, idempotently and quietly:
#   1. Debian's chromium and chromium-driver (root and apt-get only),
#   2. the plugin's test extra (selenium) in the venv.
# The plugin itself needs neither: its console is plain files in the wheel.
# Usage: install.sh [VENV]   (default: the repository's .venv)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$(cd "$here/../.." && pwd)/.venv}

if [ "$(id -u)" != 0 ]; then
    echo "api-server install: chromium not installed (not root); the browser test will skip and say why"
elif ! command -v apt-get >/dev/null; then
    echo "api-server install: chromium not installed (no apt-get); the browser test will skip and say why"
elif ! dpkg-query -W -f='${Status}\n' chromium chromium-driver 2>/dev/null | grep -c "install ok installed" | grep -qx 2; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c "import selenium" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q "selenium>=4.20" 2>&1 | grep -v "^WARNING: Location 'file://" >&2 || true
    "$venv/bin/python" -c "import selenium"
fi
