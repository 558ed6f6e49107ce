#!/usr/bin/env bash
# Installs the test tools, into the checkout where they are not Debian
# packages (.tools/, .venv/ and tests/e2e/node_modules/ are gitignored),
# idempotently: it installs only what is missing.
#   .tools/bin/s3s-fs   an S3-compatible server on a folder (Rust, pinned)
#   .venv/              Python tools (.ci/requirements.txt): moto's S3 server
#                       (a second S3 implementation), schemathesis (fuzzes
#                       the API from its OpenAPI document)
#   Debian packages     chromium (the dashboard's end-to-end test), prometheus
#                       (promtool checks /metrics), wrk (the HTTP benchmark),
#                       nodejs and npm
#   tests/e2e/          playwright-core from npm, which drives Debian's
#                       chromium: no browser is ever downloaded
# .ci/run calls it; run it by hand once before `cargo test` on a new machine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
# openssl makes the CA and server certificates of the TLS tests (tests/it/tls.rs).
command -v openssl >/dev/null || need_apt+=(openssl)
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

if [ ! -x .tools/bin/s3s-fs ]; then
  # 0.17 needs a newer rustc than this machine's 1.95: pinned.
  log "building s3s-fs 0.14.1 into .tools/"
  cargo install s3s-fs@0.14.1 --features binary --locked --root .tools --quiet
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
# Installed again whenever .ci/requirements.txt changes.
if ! cmp -s .ci/requirements.txt .venv/requirements.installed; then
  log "installing Python test tools into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check -r .ci/requirements.txt
  cp .ci/requirements.txt .venv/requirements.installed
fi

if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  log "installing playwright-core (npm; no browser download)"
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent)
fi
