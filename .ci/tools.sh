#!/usr/bin/env bash
# Installs the test tools that are not Debian packages, into the checkout
# (both folders are gitignored), idempotently:
#   .tools/bin/s3s-fs   an S3-compatible server on a folder (Rust, pinned)
#   .venv/              Python tools: moto's S3 server (a second S3 implementation)
# .ci/run calls it; run it by hand once before `cargo test` on a new machine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }

if [ ! -x .tools/bin/s3s-fs ]; then
  # 0.17 needs a newer rustc than this machine's 1.95: pinned.
  log "building s3s-fs 0.14.1 into .tools/"
  cargo install s3s-fs@0.14.1 --features binary --locked --root .tools --quiet
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import moto' 2>/dev/null; then
  log "installing Python test tools into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check -r .ci/requirements.txt
fi
