#!/usr/bin/env bash
# Makes the credential files that Compose (deploy/compose/secrets/) and the
# Kubernetes base's secretGenerator (deploy/k8s/base/secrets/) read: random
# values, made only where a file is missing, never committed (.gitignore).
# Put real credentials in those files instead for a real deployment.
set -euo pipefail
cd "$(dirname "$0")"
rand() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
for dir in compose/secrets k8s/base/secrets; do
  mkdir -p "$dir"
  for name in pg_password mariadb_root_password s3_access_key s3_secret_key; do
    if [ ! -s "$dir/$name" ]; then
      umask 077
      rand > "$dir/$name"
    fi
  done
done
echo "credentials in deploy/compose/secrets/ and deploy/k8s/base/secrets/"
