#!/usr/bin/env bash
# Validate the Kubernetes manifests under deploy/kubernetes/ without a cluster:
#   scripts/validate_manifests.sh
# For each folder with a kustomization.yaml (the base; migrate/, backfill/ and post-deploy/,
# one Job each): every YAML file of the folder must be listed under `resources:`, every
# listed file must exist, and each resource must pass `kubernetes-validate --strict` against
# the schema of KUBERNETES_VERSION (unknown or misspelt fields, wrong types, a kind the
# schema does not know). With `kustomize` or `kubectl` on PATH, each built kustomization is
# validated too. A kustomize Component (migrate-on-start/) holds patches, not resources:
# the files its patches name must exist, and it is validated as built onto the folder
# above it, as an overlay would use it (with kustomize or kubectl only). The schemas ship
# inside the kubernetes-validate package: nothing is downloaded. Exit 1 on a finding, 2
# when the check cannot run.
# MANIFEST_TOOLS names the venv of requirements-manifests.lock (`make lint` makes it).
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

# The oldest Kubernetes release that has, as stable, everything the manifests use
# (PodDisruptionBudget.spec.unhealthyPodEvictionPolicy is GA in 1.31).
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.31.0}"
TOOLS="${MANIFEST_TOOLS:-$REPO_ROOT/.venv/manifests}"
ROOT_DIR=deploy/kubernetes

say() { printf 'validate_manifests: %s\n' "$*" >&2; }

if [ ! -x "$TOOLS/bin/kubernetes-validate" ]; then
    say "kubernetes-validate is not installed in $TOOLS (run: make lint)"
    exit 2
fi

build=()
if command -v kustomize >/dev/null 2>&1; then
    build=(kustomize build)
elif command -v kubectl >/dev/null 2>&1; then
    build=(kubectl kustomize)
else
    say "no kustomize or kubectl on PATH: the files alone are validated"
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# kubernetes-validate reports an unknown kind or apiVersion as a WARN line and exits 0:
# here it is a finding.
validate() {
    local output rc=0
    output="$("$TOOLS/bin/kubernetes-validate" --strict --quiet \
        --kubernetes-version "$KUBERNETES_VERSION" "$@" 2>&1)" || rc=$?
    if [ -n "$output" ]; then
        printf '%s\n' "$output" >&2
    fi
    [ "$rc" -eq 0 ] && ! grep -q '^WARN' <<<"$output"
}

# The kind of a kustomization.yaml: Kustomization (the default) or Component.
kind_of() {
    "$TOOLS/bin/python" -c '
import sys, yaml
print((yaml.safe_load(open(sys.argv[1])) or {}).get("kind") or "Kustomization")' "$1"
}

# The files a kustomization.yaml lists, one per line: its resources, or a component's
# patch files.
listed_in() {
    "$TOOLS/bin/python" -c '
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1])) or {}
if doc.get("kind") == "Component":
    entries = [patch["path"] for patch in doc.get("patches") or [] if "path" in patch]
else:
    entries = doc.get("resources") or []
for entry in entries:
    print(entry)' "$1"
}

# A component built onto the folder above it, the way an overlay names both.
build_component() {
    local dir="$1" overlay
    overlay="$(mktemp -d "$scratch/overlay.XXXXXX")"
    cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$overlay" "$(dirname "$dir")")
components:
  - $(realpath --relative-to="$overlay" "$dir")
YAML
    "${build[@]}" "$overlay"
}

status=0
while IFS= read -r kustomization; do
    dir="$(dirname "$kustomization")"
    kind="$(kind_of "$kustomization")"
    mapfile -t listed < <(listed_in "$kustomization")
    files=()
    for entry in "${listed[@]}"; do
        if [ -f "$dir/$entry" ]; then
            files+=("$dir/$entry")
        elif [ ! -d "$dir/$entry" ]; then
            say "$kustomization lists $entry, which is not in $dir"
            status=1
        fi
    done
    for path in "$dir"/*.yaml "$dir"/*.yml; do
        [ -e "$path" ] && [ "$(basename "$path")" != kustomization.yaml ] || continue
        if ! printf '%s\n' "${listed[@]}" | grep -qxF "$(basename "$path")"; then
            say "$path is not listed in $kustomization (resources:, or a component's patches:)"
            status=1
        fi
    done
    if [ "$kind" = Component ]; then
        # Its patches are partial resources: only the result of building it means anything.
        if [ "${#build[@]}" -eq 0 ]; then
            say "$dir: a component, validated only when built (no kustomize or kubectl)"
            continue
        fi
        built="$scratch/$(tr / _ <<<"$dir").yaml"
        say "$dir: a component, built onto $(dirname "$dir") with ${build[*]}"
        if ! build_component "$dir" >"$built"; then
            say "${build[*]} with the component $dir failed"
            status=1
        else
            validate "$built" || status=1
        fi
        continue
    fi
    if [ "${#files[@]}" -eq 0 ]; then
        say "$kustomization lists no resources"
        status=1
        continue
    fi
    say "$dir: ${#files[@]} file(s) against Kubernetes $KUBERNETES_VERSION (strict)"
    validate "${files[@]}" || status=1
    if [ "${#build[@]}" -gt 0 ]; then
        built="$scratch/$(tr / _ <<<"$dir").yaml"
        say "$dir: built with ${build[*]}"
        if ! "${build[@]}" "$dir" >"$built"; then
            say "${build[*]} $dir failed"
            status=1
        else
            validate "$built" || status=1
        fi
    fi
done < <(find "$ROOT_DIR" -name kustomization.yaml | sort)

if [ "$status" -eq 0 ]; then
    say "ok"
fi
exit "$status"
