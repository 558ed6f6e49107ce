#!/usr/bin/env bash
# Installs the test tools the suite runs, on a fresh machine: Debian's
# chromium (the dashboard's end-to-end test, driven by playwright-core from
# npm; no browser is ever downloaded), prometheus (for promtool), wrk (the
# HTTP benchmark only), and schemathesis in a Python venv under .tools/.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .tools/venv/bin/schemathesis ]; then
  log "schemathesis (pip, into .tools/venv)"
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q 'schemathesis==4.*'
fi

if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  log "playwright-core (npm; no browser download)"
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent)
fi
