#!/usr/bin/env bash
# End-to-end suite, on a throw-away kind cluster (the default) or on an existing cluster
# (E2E_EXISTING_CLUSTER=1). On kind it builds the operator and proxy images, loads them into kind,
# creates the cluster and deletes it at the end. Either way it installs the Helm chart, applies
# every example, waits for Ready, checks the proxy logged which family its wildcard binds got (dual
# stack or the IPv4 fallback), sends traffic through each proxy's Service with zmq-proxy-probe in a
# Job (shared queue round trips, forwarder with subscriptions, pipeline, capture), runs a CURVE
# forwarder with keys in Secrets against allowed, unknown-key and NULL pyzmq peers, changes a port
# and checks the new one, deletes a pod under load and checks nothing is lost, runs three-replica
# federations of XSUB/XPUB, PULL/PUSH and ROUTER/DEALER with pyzmq peers on the Service only (every
# message delivered once; then a pod deleted and a rolling update under load, loss and longest gap
# reported), scales the shared queue to 3 (a federation), checks the PodDisruptionBudget grants one
# eviction and refuses a second (429), pauses
# and resumes the pipeline through spec.paused with pyzmq peers streaming through it, connects a
# backend by label selector to a Deployment of pyzmq workers and scales them 3, 5, 2 under load
# (every request answered, new workers answering within 10 s of Ready), replaces an earlier
# version's StatefulSet (made by hand) by the Deployment with a Ready pod throughout, injects the
# sidecar of examples/sidecar/ into a pyzmq publisher whose ipc:///zmq/out messages must reach a
# remote subscriber through a CURVE hub in another namespace, and deletes its pod under load
# (nothing it sent before SIGTERM lost), deletes a
# ZmqProxy and checks its children are garbage-collected, checks that the invalid example is
# refused, reads the operator's metrics, uninstalls the chart and deletes the cluster.
#
# kind mode needs docker (with a running engine), kind, kubectl and helm; existing-cluster mode
# needs kubectl and helm. When one is missing it prints one line naming what is missing and exits 0
# as skipped; it never reports a pass it did not run. One line per check, then `N passed, N
# failed`; the exit status is non-zero on any failure.
#
# Existing-cluster mode (E2E_EXISTING_CLUSTER=1) uses the current context of $KUBECONFIG, never
# creates or deletes a cluster, builds and loads no images, and removes only what it created: its
# two namespaces, its Helm release, and the CRD only when the CRD was not there before the run.
# Proxy pods and the probe Jobs use the images as given, which the nodes must be able to get:
#   E2E_OPERATOR_IMAGE     operator image, repository:tag or repository@sha256:... (required)
#   E2E_PROXY_IMAGE        proxy image, likewise (required)
#   E2E_IMAGE_PULL_POLICY  pull policy of every pod the suite starts (default IfNotPresent)
#   E2E_NAMESPACE_PREFIX   prefix of its namespaces <prefix>-system and <prefix> (default zmq-e2e)
#
# Both modes:
#   E2E_PYTHON_IMAGE  image of the restart and CURVE checks' libzmq peers (default
#                     python:3.12-slim; pyzmq is installed into /tmp when the image lacks it)
#   E2E_ZMQ_PROXY     a zmq-proxy binary for `keygen` (default: zmq-proxy on PATH, then
#                     target/release or target/debug; kind mode falls back to the proxy image)
#
# kind mode environment:
#   E2E_CLUSTER       kind cluster name (default zmq-proxy-e2e)
#   E2E_NODE_IMAGE    kind node image (default: the v1.32.2 image of kind v0.27.0, pinned by digest
#                     as kind's release notes ask; another kind release wants its own node image)
#   E2E_KEEP_CLUSTER  1: leave the cluster running at the end, for debugging (after a failure with
#                     the chart and the proxies as the failure left them)
#   E2E_SKIP_BUILD    1: use images zmq-proxy-operator:e2e and zmq-proxy:e2e already built
#   E2E_COUNT         messages per probe (default 1000)
#   E2E_ARTIFACTS     directory for diagnostics on failure (default ./e2e-artifacts)
set -euo pipefail

# Only shell builtins before the skip decision: the suite must be able to say what is missing
# even on a machine with almost nothing on its PATH.
HERE="${BASH_SOURCE[0]%/*}"
[[ "$HERE" == "${BASH_SOURCE[0]}" ]] && HERE="."
ROOT="$(cd "$HERE/../.." && pwd)"
# chart-check.sh installs pinned helm and kubectl here; use them when the machine has none.
[[ -d "$ROOT/.tools/bin" ]] && PATH="$PATH:$ROOT/.tools/bin"

EXISTING="${E2E_EXISTING_CLUSTER:-0}"
missing=()
if [[ "$EXISTING" == "1" ]]; then
  needs="kubectl and helm, and a current kubectl context"
  for tool in kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [[ " ${missing[*]} " != *" kubectl "* ]] && ! kubectl config current-context >/dev/null 2>&1; then
    missing+=("a current kubectl context")
  fi
else
  needs="docker with a running engine, kind, kubectl and helm; or E2E_EXISTING_CLUSTER=1 with kubectl and helm"
  for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [[ " ${missing[*]} " != *" docker "* ]] && ! docker info >/dev/null 2>&1; then
    missing+=("a running Docker engine")
  fi
fi
if ((${#missing[@]})); then
  list=""
  for m in "${missing[@]}"; do list+="${list:+, }$m"; done
  echo "e2e: skipped: ${list} not available (needs ${needs})"
  exit 0
fi

CLUSTER="${E2E_CLUSTER:-zmq-proxy-e2e}"
NODE_IMAGE="${E2E_NODE_IMAGE:-kindest/node:v1.32.2@sha256:f226345927d7e348497136874b6d207e0b32cc52154ad8323129352923a3142f}"
COUNT="${E2E_COUNT:-1000}"
ARTIFACTS="${E2E_ARTIFACTS:-$ROOT/e2e-artifacts}"
RELEASE="zmq-proxy-operator"
if [[ "$EXISTING" == "1" ]]; then
  OPERATOR_IMAGE="${E2E_OPERATOR_IMAGE:-}"
  PROXY_IMAGE="${E2E_PROXY_IMAGE:-}"
  PULL_POLICY="${E2E_IMAGE_PULL_POLICY:-IfNotPresent}"
  NS="${E2E_NAMESPACE_PREFIX:-zmq-e2e}"
  SYSTEM_NS="${NS}-system"
  RELEASE="${NS}-operator"
  KCTX="$(kubectl config current-context)"
else
  OPERATOR_IMAGE="zmq-proxy-operator:e2e"
  PROXY_IMAGE="zmq-proxy:e2e"
  PULL_POLICY="Never"
  SYSTEM_NS="zmq-system"
  NS="zmq-e2e"
  KCTX="kind-${CLUSTER}"
fi

PASSED=0
FAILED=0
CLUSTER_CREATED=0
# What this run made on an existing cluster, so cleanup removes that and nothing else.
MADE_NAMESPACES=()
MADE_RELEASE=0
MADE_CRD=0

log() { printf '%s e2e: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
k() { kubectl --context "$KCTX" "$@"; }
pass() { PASSED=$((PASSED + 1)); log "ok - $1"; }
fail() { FAILED=$((FAILED + 1)); log "not ok - $1"; }

diagnostics() {
  mkdir -p "$ARTIFACTS"
  log "collecting diagnostics into $ARTIFACTS"
  # One command per file: a missing resource type (the CRD never installed) must not hide the rest.
  {
    k get nodes -o wide
    k get all -A -o wide
    k get zmqproxies -A -o wide
    k get jobs -A -o wide
  } >"$ARTIFACTS/cluster.txt" 2>&1
  k get events -A --sort-by=.lastTimestamp >"$ARTIFACTS/events.txt" 2>&1
  k get zmqproxies -A -o yaml >"$ARTIFACTS/zmqproxies.yaml" 2>&1
  k -n "$NS" get deployments,replicasets,statefulsets,services -o yaml >"$ARTIFACTS/children.yaml" 2>&1
  helm --kube-context "$KCTX" status "$RELEASE" -n "$SYSTEM_NS" --show-resources \
    >"$ARTIFACTS/helm-status.txt" 2>&1
  k -n "$SYSTEM_NS" describe pods >"$ARTIFACTS/operator-pods.txt" 2>&1
  k -n "$SYSTEM_NS" logs -l app.kubernetes.io/name=zmq-proxy-operator --all-containers \
    --tail=-1 --prefix >"$ARTIFACTS/operator.log" 2>&1
  k -n "$SYSTEM_NS" logs -l app.kubernetes.io/name=zmq-proxy-operator --all-containers \
    --tail=-1 --prefix --previous >"$ARTIFACTS/operator-previous.log" 2>&1
  k -n "$NS" logs -l app.kubernetes.io/name=zmq-proxy --tail=500 --prefix \
    >"$ARTIFACTS/proxies.log" 2>&1
  k -n "$NS" logs -l app.kubernetes.io/name=zmq-proxy-probe --tail=100 --prefix \
    >"$ARTIFACTS/probes.log" 2>&1
  k -n "$NS" describe pods >"$ARTIFACTS/pods.txt" 2>&1
  # Node-level logs (kubelet, containerd, control plane): image loading and admission problems.
  ((CLUSTER_CREATED)) && kind export logs "$ARTIFACTS/kind" --name "$CLUSTER" >/dev/null 2>&1
  return 0
}

# Existing cluster: removes what the run created, in reverse order, and reports what it could not.
remove_what_was_made() {
  if ((MADE_RELEASE)) && helm --kube-context "$KCTX" status "$RELEASE" -n "$SYSTEM_NS" >/dev/null 2>&1; then
    helm --kube-context "$KCTX" uninstall "$RELEASE" -n "$SYSTEM_NS" --wait --timeout 120s >/dev/null 2>&1 \
      || log "could not uninstall release $RELEASE"
  fi
  local ns
  for ns in "${MADE_NAMESPACES[@]}"; do
    k delete namespace "$ns" --ignore-not-found --wait=true --timeout=180s >/dev/null 2>&1 \
      || log "could not delete namespace $ns"
  done
  if ((MADE_CRD)); then
    k delete crd zmqproxies.zmqproxy.io --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 \
      || log "could not delete crd zmqproxies.zmqproxy.io"
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT
  set +e
  if { ((CLUSTER_CREATED)) || [[ "$EXISTING" == "1" ]]; } && { ((FAILED)) || ((rc)); }; then
    diagnostics
  fi
  if [[ "$EXISTING" == "1" ]]; then
    if [[ "${E2E_KEEP_CLUSTER:-0}" == "1" ]]; then
      log "keeping what the run created (namespaces ${MADE_NAMESPACES[*]:-none}, release $RELEASE)"
    else
      remove_what_was_made
    fi
  fi
  if ((CLUSTER_CREATED)); then
    if [[ "${E2E_KEEP_CLUSTER:-0}" == "1" ]]; then
      # Kept for debugging: the chart stays too, exactly as the failure left it.
      log "keeping kind cluster $CLUSTER (context $KCTX); remove it with: kind delete cluster --name $CLUSTER"
    else
      # Deleting the cluster removes the release with it; the run's own `helm uninstall` step is
      # what checks uninstalling, so a failed run does not wait for a second one here.
      log "deleting kind cluster $CLUSTER"
      kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || log "could not delete kind cluster $CLUSTER"
    fi
  fi
  echo "e2e: ${PASSED} passed, ${FAILED} failed"
  if ((rc == 0 && FAILED > 0)); then rc=1; fi
  exit "$rc"
}
trap cleanup EXIT

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: polls COMMAND once a second until it succeeds.
wait_for() {
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 1
  done
}

# ---- cluster, images, chart ------------------------------------------------------------------
# build_image DOCKERFILE TAG: builds into the local image store, where `kind load` reads it.
build_image() {
  local revision
  revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  if docker buildx version >/dev/null 2>&1; then
    # --load: a docker-container builder (docker/setup-buildx-action's default, Docker Desktop's
    # own builders) keeps the result in its cache otherwise and `kind load` finds no image.
    # No provenance or SBOM attestations: with Docker's containerd image store they make the image
    # an index whose attestation manifest `docker save` leaves out, and the node's
    # `ctr import --all-platforms` then fails with "content digest ... not found" (kind#3795).
    docker buildx build --load --provenance=false --sbom=false \
      -f "$1" -t "$2" --build-arg REVISION="$revision" "$ROOT"
  else
    DOCKER_BUILDKIT=1 docker build -f "$1" -t "$2" --build-arg REVISION="$revision" "$ROOT"
  fi
}

# image_parts IMAGE: "repository tag digest" of repository:tag or repository@sha256:... (a
# registry's :port stays in the repository).
image_parts() {
  local image="$1" repo tag="" digest=""
  if [[ "$image" == *@* ]]; then
    repo="${image%%@*}" digest="${image#*@}"
  elif [[ "${image##*/}" == *:* ]]; then
    repo="${image%:*}" tag="${image##*:}"
  else
    repo="$image"
  fi
  echo "$repo ${tag:-latest} $digest"
}

if [[ "$EXISTING" == "1" ]]; then
  if [[ -z "$OPERATOR_IMAGE" || -z "$PROXY_IMAGE" ]]; then
    log "E2E_EXISTING_CLUSTER=1 needs E2E_OPERATOR_IMAGE and E2E_PROXY_IMAGE (images the nodes can get)"
    exit 1
  fi
  for ns in "$SYSTEM_NS" "$NS"; do
    if k get namespace "$ns" >/dev/null 2>&1; then
      log "namespace $ns already exists on $KCTX; delete it or set E2E_NAMESPACE_PREFIX"
      exit 1
    fi
  done
  if k get crd zmqproxies.zmqproxy.io >/dev/null 2>&1; then
    log "the ZmqProxy CRD is already installed on $KCTX: it is used as it is and left in place"
  else
    MADE_CRD=1
  fi
  log "existing cluster: context $KCTX, operator $OPERATOR_IMAGE, proxy $PROXY_IMAGE, pull policy $PULL_POLICY"
else
# Checked before the builds, which take minutes. The list is captured first: `kind get clusters |
# grep -q` under pipefail can report a SIGPIPE'd kind as "not found", and the run would then take
# over (and finally delete) someone's cluster.
existing="$(kind get clusters 2>/dev/null || true)"
if grep -qx -- "$CLUSTER" <<<"$existing"; then
  log "kind cluster $CLUSTER already exists; delete it first or set E2E_CLUSTER"
  exit 1
fi

if [[ "${E2E_SKIP_BUILD:-0}" != "1" ]]; then
  log "building $OPERATOR_IMAGE and $PROXY_IMAGE"
  build_image "$ROOT/docker/Dockerfile.operator" "$OPERATOR_IMAGE"
  build_image "$ROOT/docker/Dockerfile.proxy" "$PROXY_IMAGE"
fi
for image in "$OPERATOR_IMAGE" "$PROXY_IMAGE"; do
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    log "image $image is not in the local Docker image store (E2E_SKIP_BUILD=1 needs both built)"
    exit 1
  fi
done

log "creating kind cluster $CLUSTER ($NODE_IMAGE)"
CLUSTER_CREATED=1
kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 180s
log "loading $OPERATOR_IMAGE and $PROXY_IMAGE into the nodes"
kind load docker-image "$OPERATOR_IMAGE" "$PROXY_IMAGE" --name "$CLUSTER"
# Pods use imagePullPolicy Never: an image the node's containerd does not hold fails here, by
# name, rather than later as ErrImageNeverPull behind a Ready timeout.
for node in $(kind get nodes --name "$CLUSTER"); do
  for image in "$OPERATOR_IMAGE" "$PROXY_IMAGE"; do
    if ! docker exec "$node" crictl inspecti "docker.io/library/$image" >/dev/null 2>&1; then
      log "image docker.io/library/$image is not on node $node after kind load"
      docker exec "$node" crictl images >&2 || true
      exit 1
    fi
  done
done

fi

log "installing the chart"
# The operator's namespace enforces the restricted Pod Security Standard too: the chart's
# hardened defaults must pass it.
k create namespace "$SYSTEM_NS"
MADE_NAMESPACES+=("$SYSTEM_NS")
k label namespace "$SYSTEM_NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
read -r op_repo op_tag op_digest <<<"$(image_parts "$OPERATOR_IMAGE")"
read -r px_repo px_tag px_digest <<<"$(image_parts "$PROXY_IMAGE")"
MADE_RELEASE=1
helm --kube-context "$KCTX" install "$RELEASE" "$ROOT/charts/zmq-proxy-operator" \
  --namespace "$SYSTEM_NS" \
  --set-string image.repository="$op_repo",image.tag="$op_tag",image.digest="$op_digest" \
  --set image.pullPolicy="$PULL_POLICY" \
  --set-string proxyImage.repository="$px_repo",proxyImage.tag="$px_tag",proxyImage.digest="$px_digest" \
  --set proxyImage.pullPolicy="$PULL_POLICY" \
  --set logFormat=text \
  --set sidecarWebhook.enabled=true \
  --wait --timeout 180s
pass "chart installed and the operator is available"

if k get crd zmqproxies.zmqproxy.io >/dev/null; then
  pass "CRD installed by the chart"
else
  fail "CRD installed by the chart"
fi

# The proxies' namespace enforces the restricted Pod Security Standard, so a proxy pod (or the
# probe) that needs any privilege fails here rather than in a user's cluster.
k create namespace "$NS"
MADE_NAMESPACES=("$NS" "${MADE_NAMESPACES[@]}")
k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted >/dev/null

# ---- every example becomes Ready ------------------------------------------------------------
declare -A EXAMPLE_OF=(
  [tasks]=shared-queue [events]=forwarder [jobs]=pipeline [audited]=with-capture [steered]=with-steering
)
for name in tasks events jobs audited steered; do
  k -n "$NS" apply -f "$ROOT/examples/${EXAMPLE_OF[$name]}.yaml" >/dev/null
done
conditions() { # conditions NAME: type=status(reason: message) of each condition, for failures
  k -n "$NS" get zmqproxy "$1" \
    -o 'jsonpath={range .status.conditions[*]}{.type}={.status}({.reason}: {.message}) {end}' 2>&1 || true
}
# One deadline for all five: they start together, and a cluster where none comes up must not
# wait five full timeouts in a row.
ready_deadline=$((SECONDS + 240))
for name in tasks events jobs audited steered; do
  left=$((ready_deadline - SECONDS)); ((left > 10)) || left=10
  if k -n "$NS" wait "zmqproxy/$name" --for=condition=Ready --timeout="${left}s" >/dev/null; then
    pass "examples/${EXAMPLE_OF[$name]}.yaml ($name) is Ready"
  else
    fail "examples/${EXAMPLE_OF[$name]}.yaml ($name) is Ready: $(conditions "$name")"
  fi
done

endpoint() { # endpoint NAME ROLE: the endpoint the object's status reports for ROLE
  k -n "$NS" get zmqproxy "$1" -o "jsonpath={.status.endpoints.$2}"
}

got="$(endpoint tasks frontend)" || got=""
if [[ "$got" == "tcp://tasks.${NS}.svc:5555" ]]; then
  pass "status.endpoints.frontend is tcp://tasks.${NS}.svc:5555"
else
  fail "status.endpoints.frontend is tcp://tasks.${NS}.svc:5555 (got '$got')"
fi

# The operator reports what it wrote as Events on the object.
events="$(k -n "$NS" get events --field-selector involvedObject.kind=ZmqProxy,involvedObject.name=tasks \
  -o 'jsonpath={.items[*].reason}')" || events=""
if [[ " $events " == *" Created "* ]]; then
  pass "the operator recorded Events on tasks ($events)"
else
  fail "the operator recorded Events on tasks (reasons: '$events')"
fi

# ---- which addresses the proxy listens on ---------------------------------------------------
# A wildcard bind (`tcp://*:PORT`) is one dual-stack IPv6 socket where the pod has IPv6 and IPv4
# 0.0.0.0 where it has not; the proxy logs which it got for each listener. Either is a pass: the
# line says which one this cluster's pods get.
bind_families() { # bind_families POD: "ENDPOINT: MESSAGE; " for each wildcard bind POD logged
  k -n "$NS" logs "$1" 2>/dev/null |
    grep -E 'listening on every IPv6 and IPv4 address|IPv6 unavailable on this host' |
    sed -n 's/.*"message":"\([^"]*\)","endpoint":"\([^"]*\)".*/\2: \1; /p' | tr -d '\n'
}
tasks_pod="$(k -n "$NS" get pods -l app.kubernetes.io/instance=tasks -o 'jsonpath={.items[0].metadata.name}' 2>/dev/null)" || tasks_pod=""
binds="$(bind_families "$tasks_pod")" || binds=""
if [[ "$binds" == *":5555: "* && "$binds" == *":5556: "* ]]; then
  pass "$tasks_pod logged the family of its wildcard binds: $binds"
else
  fail "${tasks_pod:-the tasks pod} logged the family of its wildcard binds 5555 and 5556 (got: '${binds}'; $(k -n "$NS" logs "$tasks_pod" 2>&1 | head -5 | tr '\n' ' '))"
fi

# ---- traffic through each Service -----------------------------------------------------------
# probe JOB ARGS...: runs zmq-proxy-probe in a Job and prints its JSON report on stdout (the
# caller captures it); progress and the Job's pod status on failure go to stderr. Fails with the Job.
probe() {
  local job="$1"; shift
  local args="" a
  for a in "$@" --output json; do args+="            - \"${a}\""$'\n'; done
  k -n "$NS" delete job "$job" --ignore-not-found --wait=true >/dev/null || return 1
  # The pod passes the restricted Pod Security Standard the namespace enforces: non-root with
  # the image's numeric user, RuntimeDefault seccomp, no privilege escalation, no capabilities.
  if ! k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: ${job}
  labels: {app.kubernetes.io/name: zmq-proxy-probe}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 180
  ttlSecondsAfterFinished: 600
  template:
    metadata:
      labels: {app.kubernetes.io/name: zmq-proxy-probe}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: probe
          image: ${PROXY_IMAGE}
          imagePullPolicy: ${PULL_POLICY}
          command: ["/usr/local/bin/zmq-proxy-probe"]
          args:
${args}          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities: {drop: [ALL]}
EOF
  then
    log "cannot create job/$job" >&2
    return 1
  fi
  local succeeded=""
  # Bounded twice: the probe's own --timeout, then the Job's activeDeadlineSeconds (180s).
  wait_for "job/$job to finish" 200 job_finished "$job" >&2 || true
  succeeded="$(k -n "$NS" get job "$job" -o 'jsonpath={.status.succeeded}' 2>/dev/null)" || true
  if [[ "$succeeded" != "1" ]]; then
    log "job/$job did not succeed; its pod:" >&2
    k -n "$NS" get pods -l "job-name=$job" -o wide >&2 || true
    k -n "$NS" get pods -l "job-name=$job" \
      -o 'jsonpath={range .items[*].status.containerStatuses[*]}{.state}{"\n"}{end}' >&2 || true
  fi
  # The report is the probe's one JSON line; anything else in the log stays out of it.
  k -n "$NS" logs "job/$job" 2>/dev/null | grep '^{' | tail -1 || true
  [[ "$succeeded" == "1" ]] || { echo " (job/$job did not succeed)"; return 1; }
}
job_finished() {
  local s
  s="$(k -n "$NS" get job "$1" -o 'jsonpath={.status.succeeded}{.status.failed}')"
  [[ -n "$s" ]]
}

# assert_report NAME REPORT KEY=VALUE...: the probe's JSON report has each integer KEY=VALUE.
assert_report() {
  local name="$1" report="$2"; shift 2
  local kv ok=1
  [[ "$report" == *'"ok":true'* && "$report" != *"did not succeed"* ]] || ok=0
  for kv in "$@"; do
    [[ "$report" == *"\"${kv%%=*}\":${kv#*=},"* || "$report" == *"\"${kv%%=*}\":${kv#*=}}"* ]] || ok=0
  done
  if ((ok)); then pass "$name"; else fail "$name: $report"; fi
}

report="$(probe probe-shared-queue --pattern shared-queue \
  --frontend "$(endpoint tasks frontend)" --backend "$(endpoint tasks backend)" \
  --count "$COUNT" --timeout 120s)" || true
assert_report "shared queue: $COUNT REQ/REP round trips through tasks" "$report" \
  "sent=$COUNT" "received=$COUNT" "intact=$COUNT"

report="$(probe probe-forwarder --pattern forwarder \
  --frontend "$(endpoint events frontend)" --backend "$(endpoint events backend)" \
  --count "$COUNT" --timeout 120s)" || true
assert_report "forwarder: subscribed topic delivered, unsubscribed topic filtered (events)" "$report" \
  "sent=$COUNT" "received=$COUNT" "intact=$COUNT" "unexpected=0" "unsubscribed_sent=$COUNT"

report="$(probe probe-pipeline --pattern pipeline \
  --frontend "$(endpoint jobs frontend)" --backend "$(endpoint jobs backend)" \
  --count "$COUNT" --timeout 120s)" || true
assert_report "pipeline: every pushed message pulled once (jobs)" "$report" \
  "sent=$COUNT" "received=$COUNT" "intact=$COUNT"

report="$(probe probe-capture --pattern shared-queue \
  --frontend "$(endpoint audited frontend)" --backend "$(endpoint audited backend)" \
  --capture "$(endpoint audited capture)" --capture-socket sub \
  --count "$COUNT" --timeout 120s)" || true
assert_report "capture: every request and reply copied to the PUB capture (audited)" "$report" \
  "sent=$COUNT" "received=$COUNT" "captured=$((2 * COUNT))" "capture_expected=$((2 * COUNT))"

report="$(probe probe-steering --pattern pipeline \
  --frontend "$(endpoint steered frontend)" --backend "$(endpoint steered backend)" \
  --count "$COUNT" --timeout 120s)" || true
assert_report "pipeline with a control socket forwards (steered)" "$report" \
  "sent=$COUNT" "received=$COUNT" "intact=$COUNT"
got="$(endpoint steered control)" || got=""
if [[ "$got" == "tcp://steered.${NS}.svc:5558" ]]; then
  pass "status.endpoints.control of steered is tcp://steered.${NS}.svc:5558"
else
  fail "status.endpoints.control of steered is tcp://steered.${NS}.svc:5558 (got '$got')"
fi

# ---- a pod restart under load loses nothing -------------------------------------------------
# Real libzmq peers (pyzmq) stream through the jobs pipeline while its pod is deleted: the old
# pod stays up, unready, for its lame-duck period, then closes each connection so the peers
# reconnect to the replacement, which by then is behind the Service.
PYTHON_IMAGE="${E2E_PYTHON_IMAGE:-python:3.12-slim}"
# A stock image is pulled when missing even on kind; an image of the suite's own is not.
PYTHON_PULL_POLICY="IfNotPresent"
[[ "$EXISTING" == "1" ]] && PYTHON_PULL_POLICY="$PULL_POLICY"
# peers_job NAME DEADLINE_S SCRIPT ARG...: runs tests/e2e/SCRIPT ARG... in the python image as
# the Job NAME (the script comes from a ConfigMap of the same name), hardened like the probes.
peers_job() {
  local name="$1" deadline="$2" script="$3" args="" a
  shift 3
  for a in "$@"; do args+=", \"$a\""; done
  k -n "$NS" delete job "$name" --ignore-not-found --wait=true >/dev/null 2>&1
  k -n "$NS" delete configmap "$name" --ignore-not-found >/dev/null 2>&1
  k -n "$NS" create configmap "$name" --from-file="$ROOT/tests/e2e/$script" >/dev/null || return 1
  k -n "$NS" apply -f - >/dev/null <<JOB
apiVersion: batch/v1
kind: Job
metadata:
  name: ${name}
  labels: {app.kubernetes.io/name: zmq-proxy-probe}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: ${deadline}
  template:
    metadata:
      labels: {app.kubernetes.io/name: zmq-proxy-probe}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: peers
          image: ${PYTHON_IMAGE}
          imagePullPolicy: ${PYTHON_PULL_POLICY}
          command: ["python3", "/scripts/${script}"${args}]
          env: [{name: HOME, value: /tmp}]
          volumeMounts: [{name: scripts, mountPath: /scripts}, {name: tmp, mountPath: /tmp}]
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities: {drop: [ALL]}
      volumes:
        - {name: scripts, configMap: {name: ${name}}}
        - {name: tmp, emptyDir: {}}
JOB
}
restart_peers_streaming() { k -n "$NS" logs job/restart-peers 2>/dev/null | grep -qx streaming; }
replacement_ready() { # replacement_ready OLD_UID: a jobs pod other than OLD_UID is Ready
  # By uid, which is never reused.
  k -n "$NS" get pods -l app.kubernetes.io/instance=jobs \
    -o jsonpath='{range .items[*]}{.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -v "^$1 " | grep -q " True$"
}
restart_check() {
  local front back
  front="$(endpoint jobs frontend)" && back="$(endpoint jobs backend)" || return 1
  peers_job restart-peers 240 restart_peers.py --frontend "$front" --backend "$back" || return 1
  wait_for "the restart peers to stream" 180 restart_peers_streaming || return 1
  local old old_uid t0
  old="$(k -n "$NS" get pods -l app.kubernetes.io/instance=jobs -o jsonpath='{.items[0].metadata.name}')" || return 1
  old_uid="$(k -n "$NS" get pod "$old" -o jsonpath='{.metadata.uid}')" || return 1
  t0=$SECONDS
  k -n "$NS" delete pod "$old" --wait=false >/dev/null || return 1
  wait_for "the replacement pod to be Ready" 120 replacement_ready "$old_uid" || return 1
  echo "ready_s=$((SECONDS - t0))"
  wait_for "job/restart-peers to finish" 240 job_finished restart-peers || return 1
  k -n "$NS" logs job/restart-peers | grep '^{' | tail -1
}
report="$(restart_check)" || report="${report:-} (the restart check did not complete)"
ready_s="$(sed -n 's/^ready_s=\([0-9]*\)$/\1/p' <<<"$report")"
report="$(grep -v '^ready_s=' <<<"$report" | tr '\n' ' ')"
json_num() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" <<<"$report"; }
# Every peer lost its connection to the old pod and reconnected (the stream outlasts the lame
# duck and the drain), messages went through the replacement afterwards, nothing was lost, and
# the longest gap is no longer than the replacement's start (polled once a second) plus about a
# second.
if [[ "$(json_num lost)" == "0" && "$(json_num duplicated)" == "0" && -n "$(json_num outage_s)" && -n "$ready_s" &&
  "$(json_num reconnected)" == "4" && "$(json_num after_reconnect)" -gt 0 ]] 2>/dev/null &&
  awk -v o="$(json_num outage_s)" -v r="$ready_s" 'BEGIN { exit !(o <= r + 2) }'; then
  pass "pod deleted under load: all 4 peers reconnected to the replacement, nothing lost, longest gap $(json_num outage_s)s, replacement Ready within ${ready_s}s ($report)"
else
  fail "pod deleted under load: all 4 peers reconnect, nothing lost, gap within the replacement's start + 2s (Ready within ${ready_s:-?}s): $report"
fi

# ---- CURVE: a secured forwarder with its keys in a Secret and ConfigMaps ---------------------
# Keys from `zmq-proxy keygen --zcert` (a local binary: E2E_ZMQ_PROXY, else zmq-proxy on PATH,
# else target/{release,debug}/zmq-proxy; in kind mode else the proxy image under docker), stored
# as the example's header says; then real pyzmq
# CURVE peers: an allowed publisher and subscriber get messages through, a client with an unknown
# key and a NULL client get nothing and deliver nothing.
zmq_proxy_bin() {
  local c
  for c in "${E2E_ZMQ_PROXY:-}" "$(command -v zmq-proxy 2>/dev/null || true)" \
    "$ROOT/target/release/zmq-proxy" "$ROOT/target/debug/zmq-proxy"; do
    [[ -n "$c" && -x "$c" ]] && { echo "$c"; return 0; }
  done
  return 1
}
# keygen DIR NAME: writes the zcert pair DIR/NAME and DIR/NAME_secret.
keygen() {
  local bin
  if bin="$(zmq_proxy_bin)"; then
    "$bin" keygen --zcert "$1/$2" >/dev/null
  elif [[ "$EXISTING" != "1" ]]; then
    docker run --rm --user "$(id -u):$(id -g)" -v "$1:/keys" "$PROXY_IMAGE" keygen --zcert "/keys/$2" >/dev/null
  else
    echo "no zmq-proxy binary for keygen (set E2E_ZMQ_PROXY)"
    return 1
  fi
}
secure_events_security() { k -n "$NS" get zmqproxy secure-events -o 'jsonpath={.status.security}'; }
curve_check() {
  local keys="$CURVE_KEYS" front back who
  for who in server alice bob mallory; do
    keygen "$keys" "$who" || return 1
  done
  # The server's secret key, to check below that it never shows in a log.
  sed -n 's/^ *secret-key = "\(.*\)"$/\1/p' "$keys/server_secret" >"$ARTIFACTS_TMP/server.z85"
  k -n "$NS" create secret generic secure-events-curve --from-file="$keys/server_secret" >/dev/null || return 1
  k -n "$NS" create configmap secure-events-publishers --from-file="$keys/alice" >/dev/null || return 1
  k -n "$NS" create configmap secure-events-subscribers --from-file="$keys/bob" >/dev/null || return 1
  # The peers' own keys and the server's public certificate, for the peers' Job only.
  k -n "$NS" create secret generic curve-peers --from-file="$keys/server" \
    --from-file="$keys/alice_secret" --from-file="$keys/bob_secret" \
    --from-file="$keys/mallory_secret" >/dev/null || return 1
  k -n "$NS" create configmap curve-peers --from-file="$ROOT/tests/e2e/curve_peers.py" >/dev/null || return 1
  k -n "$NS" apply -f "$ROOT/examples/secure-forwarder.yaml" >/dev/null || return 1
  k -n "$NS" wait zmqproxy/secure-events --for=condition=Ready --timeout=180s >/dev/null || return 1
  echo "ready security=$(secure_events_security)"
  front="$(endpoint secure-events frontend)" && back="$(endpoint secure-events backend)" || return 1
  k -n "$NS" apply -f - >/dev/null <<JOB || return 1
apiVersion: batch/v1
kind: Job
metadata:
  name: curve-peers
  labels: {app.kubernetes.io/name: zmq-proxy-probe}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 180
  template:
    metadata:
      labels: {app.kubernetes.io/name: zmq-proxy-probe}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        fsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: peers
          image: ${PYTHON_IMAGE}
          imagePullPolicy: ${PYTHON_PULL_POLICY}
          command: ["python3", "/scripts/curve_peers.py", "--frontend", "${front}", "--backend", "${back}", "--keys", "/keys"]
          env: [{name: HOME, value: /tmp}]
          volumeMounts:
            - {name: scripts, mountPath: /scripts, readOnly: true}
            - {name: keys, mountPath: /keys, readOnly: true}
            - {name: tmp, mountPath: /tmp}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities: {drop: [ALL]}
      volumes:
        - {name: scripts, configMap: {name: curve-peers}}
        - {name: keys, secret: {secretName: curve-peers, defaultMode: 0440}}
        - {name: tmp, emptyDir: {}}
JOB
  wait_for "job/curve-peers to finish" 200 job_finished curve-peers || return 1
  k -n "$NS" logs job/curve-peers | grep '^{' | tail -1
}
ARTIFACTS_TMP="$(mktemp -d)"
CURVE_KEYS="$(mktemp -d)"
report="$(curve_check 2>&1)" || report="${report:-} (the CURVE check did not complete)"
security="$(secure_events_security 2>/dev/null)" || security=""
if [[ "$security" == *'"frontend":"CURVE"'* && "$security" == *'"backend":"CURVE"'* ]]; then
  pass "examples/secure-forwarder.yaml (secure-events) is Ready with status.security $security"
else
  fail "examples/secure-forwarder.yaml (secure-events) is Ready with CURVE sockets: $(conditions secure-events) security='$security' ($report)"
fi
mounts="$(k -n "$NS" get pods -l app.kubernetes.io/instance=secure-events \
  -o 'jsonpath={range .items[0].spec.containers[0].volumeMounts[*]}{.mountPath}:{.readOnly}:{.subPath};{end}' 2>/dev/null)" || mounts=""
if [[ "$mounts" == *"/etc/zmq-proxy/curve/frontend/server-key:true:;"* \
  && "$mounts" == *"/etc/zmq-proxy/curve/backend/authorized-keys:true:;"* ]]; then
  pass "the secure-events pod mounts its key Secret and allow-lists read-only, without subPath ($mounts)"
else
  fail "the secure-events pod mounts its key Secret and allow-lists read-only, without subPath ($mounts)"
fi
peers="$(grep '^{' <<<"$report" | tail -1)"
if [[ "$peers" == *'"ok": true'* ]]; then
  pass "CURVE: allowed pyzmq peers get messages through; unknown-key and NULL peers get and deliver nothing ($peers)"
else
  fail "CURVE: allowed peers get messages through, unknown and NULL peers nothing: $report"
fi
pod="$(k -n "$NS" get pods -l app.kubernetes.io/instance=secure-events -o 'jsonpath={.items[0].metadata.name}' 2>/dev/null)" || pod=""
proxy_metrics="$(k get --raw "/api/v1/namespaces/${NS}/pods/${pod}:9090/proxy/metrics" 2>&1)" || proxy_metrics=""
refusals="$(grep '^zmq_proxy_handshake_failures_total' <<<"$proxy_metrics" | grep -E 'unknown_client_key|mechanism_mismatch' | tr '\n' ' ')"
if [[ "$refusals" == *unknown_client_key* && "$refusals" == *mechanism_mismatch* ]]; then
  pass "the proxy counted the refusals: $refusals"
else
  fail "the proxy counted unknown_client_key and mechanism_mismatch refusals (got: ${refusals:-${proxy_metrics:0:200}})"
fi
# The allow-list is mounted as a directory (no subPath), so a changed ConfigMap reaches the
# running proxy: the kubelet swaps the files (within its sync period, about a minute) and the
# proxy's once-a-second re-read logs the reload.
allow_list_reloaded() {
  k -n "$NS" logs "$pod" 2>/dev/null | grep 'allow-list reloaded' | grep -q '"added":1'
}
if [[ -n "$pod" && -f "$CURVE_KEYS/mallory" ]] \
  && k -n "$NS" create configmap secure-events-publishers --from-file="$CURVE_KEYS/alice" \
    --from-file="$CURVE_KEYS/mallory" --dry-run=client -o yaml | k -n "$NS" apply -f - >/dev/null \
  && wait_for "the proxy to reload its allow-list" 180 allow_list_reloaded; then
  pass "a key added to the publishers' ConfigMap reached the running proxy ($(k -n "$NS" logs "$pod" | grep 'allow-list reloaded' | tail -1))"
else
  fail "a key added to the publishers' ConfigMap reached the running proxy (no reload logged by ${pod:-?})"
fi
rm -rf "$CURVE_KEYS"
server_z85="$(cat "$ARTIFACTS_TMP/server.z85" 2>/dev/null)"
rm -rf "$ARTIFACTS_TMP"
logs="$(k -n "$NS" logs "$pod" 2>/dev/null; k -n "$SYSTEM_NS" logs -l app.kubernetes.io/name=zmq-proxy-operator --tail=-1 2>/dev/null)"
if [[ -n "$server_z85" && -n "$logs" && "$logs" != *"$server_z85"* ]]; then
  pass "the server's secret key is in no proxy or operator log"
else
  fail "the server's secret key is in no proxy or operator log (key known: ${#server_z85} chars, log ${#logs} bytes)"
fi
operator_sa="$(k -n "$SYSTEM_NS" get deployments -l app.kubernetes.io/name=zmq-proxy-operator \
  -o 'jsonpath={.items[0].spec.template.spec.serviceAccountName}' 2>/dev/null)" || operator_sa=""
# The operator gets and creates its own federation Secret by name only: it may neither list nor
# watch Secrets, so it cannot enumerate (or read in bulk) the Secrets users keep beside it.
sa="system:serviceaccount:${SYSTEM_NS}:${operator_sa}"
can_list="$(k auth can-i list secrets -n "$NS" --as="$sa" 2>/dev/null)" || true
can_watch="$(k auth can-i watch secrets -n "$NS" --as="$sa" 2>/dev/null)" || true
if [[ -n "$operator_sa" && "$can_list" == "no" && "$can_watch" == "no" ]]; then
  pass "the operator's ServiceAccount ($operator_sa) can neither list nor watch Secrets"
else
  fail "the operator's ServiceAccount (${operator_sa:-?}) can neither list nor watch Secrets (list: ${can_list:-?}, watch: ${can_watch:-?})"
fi

# ---- changing a port ------------------------------------------------------------------------
service_ports() { # service_ports NAME: the Service's port numbers, space-separated and sorted
  k -n "$NS" get service "$1" -o 'jsonpath={.spec.ports[*].port}' | tr ' ' '\n' | sort -n | tr '\n' ' '
}
status_port_is() { [[ "$(endpoint jobs backend)" == "tcp://jobs.${NS}.svc:$1" ]]; }
observed_current() {
  local gen obs ready
  gen="$(k -n "$NS" get zmqproxy jobs -o 'jsonpath={.metadata.generation}')"
  obs="$(k -n "$NS" get zmqproxy jobs -o 'jsonpath={.status.observedGeneration}')"
  ready="$(k -n "$NS" get zmqproxy jobs -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')"
  [[ -n "$gen" && "$gen" == "$obs" && "$ready" == "True" ]]
}
observed_ready() { # observed_ready NAME: Ready at the object's current generation
  local gen obs ready
  gen="$(k -n "$NS" get zmqproxy "$1" -o 'jsonpath={.metadata.generation}')"
  obs="$(k -n "$NS" get zmqproxy "$1" -o 'jsonpath={.status.observedGeneration}')"
  ready="$(k -n "$NS" get zmqproxy "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')"
  [[ -n "$gen" && "$gen" == "$obs" && "$ready" == "True" ]]
}
service_gone() { ! k -n "$NS" get service "$1" >/dev/null 2>&1; }
k -n "$NS" patch zmqproxy jobs --type merge -p '{"spec":{"backend":{"port":6556}}}' >/dev/null
if wait_for "jobs to observe the new generation and be Ready" 180 observed_current \
  && wait_for "status to report port 6556" 60 status_port_is 6556; then
  pass "port change observed: jobs Ready at its new generation"
else
  fail "port change observed: jobs Ready at its new generation"
fi
workload="$(k -n "$NS" get deployment -l app.kubernetes.io/instance=jobs -o name)" || workload=""
workload="${workload%%$'\n'*}"
if [[ -n "$workload" ]] && k -n "$NS" rollout status "$workload" --timeout=180s >/dev/null; then
  pass "the new proxy pod rolled out"
else
  fail "the new proxy pod rolled out"
fi
ports="$(service_ports jobs)" || ports=""
if [[ " $ports " == *" 6556 "* && " $ports " != *" 5556 "* ]]; then
  pass "Service jobs exposes 6556 instead of 5556 (ports: $ports)"
else
  fail "Service jobs exposes 6556 instead of 5556 (ports: $ports)"
fi
report="$(probe probe-new-port --pattern pipeline \
  --frontend "$(endpoint jobs frontend)" --backend "tcp://jobs.${NS}.svc:6556" \
  --count "$COUNT" --timeout 120s)" || true
assert_report "pipeline through the new backend port 6556" "$report" \
  "sent=$COUNT" "received=$COUNT" "intact=$COUNT"

# ---- federation: three replicas act as one proxy ----------------------------------------------
# replicas: 3 of XSUB/XPUB, PULL/PUSH and ROUTER/DEALER: the operator gives the pods the
# federation's flags, its headless Service and its CURVE key; every peer connects to the Service
# only (tests/e2e/federation_peers.py: three peers a side, spread by kube-proxy over the
# replicas). Steady state: every message delivered once. Then a pod deleted under load, then a
# rolling update (a podTemplate annotation changed) under load: nothing duplicated, the stream
# recovers, and the loss and the longest gap are reported.
fed_field() { k -n "$NS" get zmqproxy "$1" -o "jsonpath=$2" 2>/dev/null; }
federated() { # federated NAME N: Federated=True with N members and a full mesh of links
  [[ "$(fed_field "$1" '{.status.conditions[?(@.type=="Federated")].status}')" == "True" &&
    "$(fed_field "$1" '{.status.federation.members}')" == "$2" &&
    "$(fed_field "$1" '{.status.federation.linksUp}')" == "$(($2 * ($2 - 1)))" ]]
}
fed_peers_streaming() { k -n "$NS" logs "job/$1" 2>/dev/null | grep -qx streaming; }
fed_pods() { k -n "$NS" get pods -l "app.kubernetes.io/instance=$1" -o jsonpath='{.items[*].metadata.name}'; }
# fed_run NAME PATTERN DURATION DISRUPTION: streams PATTERN through NAME's Service for DURATION
# seconds; once it streams, DISRUPTION (none, delete, roll) is done; prints the peers' report.
fed_run() {
  local name="$1" pattern="$2" duration="$3" disruption="$4" job="fed-$1-$4" victim
  peers_job "$job" $((duration + 240)) federation_peers.py --pattern "$pattern" \
    --frontend "$(endpoint "$name" frontend)" --backend "$(endpoint "$name" backend)" \
    --duration "$duration" || return 1
  wait_for "the $pattern peers to stream" 180 fed_peers_streaming "$job" || return 1
  case "$disruption" in
    delete)
      victim="$(fed_pods "$name")" && victim="${victim%% *}"
      k -n "$NS" delete pod "$victim" --wait=false >/dev/null || return 1
      ;;
    roll)
      k -n "$NS" patch zmqproxy "$name" --type merge \
        -p "{\"spec\":{\"podTemplate\":{\"metadata\":{\"annotations\":{\"e2e/rolled\":\"$SECONDS\"}}}}}" >/dev/null || return 1
      k -n "$NS" rollout status "deployment/$name" --timeout=240s >/dev/null || return 1
      ;;
  esac
  wait_for "job/$job to finish" $((duration + 240)) job_finished "$job" || return 1
  k -n "$NS" logs "job/$job" | grep '^{' | tail -1
}
fed_num() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" <<<"$2"; }
for fed in "news XSUB XPUB pubsub" "jobs-fed PULL PUSH pipeline" "queue-fed ROUTER DEALER reqrep"; do
  read -r name front back pattern <<<"$fed"
  k -n "$NS" apply -f - >/dev/null <<EOF || log "cannot apply zmqproxy/$name"
apiVersion: zmqproxy.io/v1alpha1
kind: ZmqProxy
metadata: {name: $name}
spec:
  frontend: {type: $front, port: 5555}
  backend: {type: $back, port: 5556}
  replicas: 3
EOF
  if wait_for "$name to be Ready" 240 observed_ready "$name" \
    && wait_for "$name to report a federation of 3" 240 federated "$name" 3; then
    pass "$name ($front/$back, 3 replicas): Federated, 3 members, 6 links up ($(fed_field "$name" '{.status.federation}'))"
  else
    fail "$name ($front/$back, 3 replicas) federates ($(conditions "$name"); federation '$(fed_field "$name" '{.status.federation}')')"
    continue
  fi
  peer_args="$(k -n "$NS" get deployment "$name" -o 'jsonpath={.spec.template.spec.containers[0].args}')" || peer_args=""
  secret_owner="$(k -n "$NS" get secret "$name-federation" -o 'jsonpath={.metadata.ownerReferences[0].kind}' 2>/dev/null)" || secret_owner=""
  if [[ "$peer_args" == *"tcp://$name-federation.$NS.svc:5570"* && "$secret_owner" == "ZmqProxy" ]]; then
    pass "$name: the pods dial $name-federation, with the key of the Secret the object owns"
  else
    fail "$name: the pods dial $name-federation with the owned key (secret owner '$secret_owner')"
  fi
  report="$(fed_run "$name" "$pattern" 20 none 2>&1)" || report="${report:-} (did not complete)"
  if [[ "$(fed_num lost "$report")" == "0" && "$(fed_num duplicated "$report")" == "0" &&
    "$(fed_num sent "$report")" -gt 0 ]] 2>/dev/null; then
    pass "$name: peers on the Service only, every message delivered once ($report)"
  else
    fail "$name: peers on the Service only, every message delivered once: $report"
  fi
  for disruption in delete roll; do
    report="$(fed_run "$name" "$pattern" 45 "$disruption" 2>&1)" || report="${report:-} (did not complete)"
    if [[ "$(fed_num duplicated "$report")" == "0" && "$(fed_num after_disruption "$report")" -gt 0 ]] 2>/dev/null \
      && wait_for "$name to federate 3 again" 240 federated "$name" 3; then
      pass "$name, $disruption under load: nothing duplicated, the stream recovered, federated again; lost $(fed_num lost "$report") of $(fed_num expected "$report"), longest gap $(fed_num outage_s "$report")s ($report)"
    else
      fail "$name, $disruption under load: nothing duplicated and the stream recovers: $report ($(conditions "$name"))"
    fi
  done
  k -n "$NS" delete zmqproxy "$name" --wait=true --timeout=60s >/dev/null || log "deleting zmqproxy/$name did not finish in 60s"
done

# The shared queue scaled to 3 federates too, and its PodDisruptionBudget lets one replica go at
# a time.
k -n "$NS" scale zmqproxy tasks --replicas=3 >/dev/null || log "cannot scale zmqproxy/tasks"
if wait_for "tasks to federate 3" 240 federated tasks 3; then
  pass "tasks scaled to 3 is a federation of 3"
else
  fail "tasks scaled to 3 is a federation of 3 ($(conditions tasks))"
fi
pod_uid() { k -n "$NS" get pod "$1" -o jsonpath='{.metadata.uid}' 2>/dev/null; }
tasks_ready() { # tasks_ready N: N tasks pods Ready
  [[ "$(k -n "$NS" get pods -l app.kubernetes.io/instance=tasks \
    -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" == "$1" ]]
}

# ---- the PodDisruptionBudget lets one replica go at a time ---------------------------------
# At 3 replicas the operator keeps PodDisruptionBudget tasks with maxUnavailable 1. An eviction
# (what `kubectl drain` sends) of one Ready replica is granted; another while the first is still
# away is refused with 429 Too Many Requests: the budget is spent until the first is Ready again.
pdb_field() { k -n "$NS" get poddisruptionbudget tasks -o "jsonpath=$1" 2>/dev/null; }
pdb_allows_one() { [[ "$(pdb_field '{.status.disruptionsAllowed}')" == "1" ]]; }
# evict POD: prints the HTTP status of a policy/v1 Eviction of POD (kubectl -v=6 logs it), then
# the API server's message when it refused.
evict() {
  local out code
  out="$(printf '{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"%s","namespace":"%s"}}' "$1" "$NS" |
    k -v=6 create --raw "/api/v1/namespaces/${NS}/pods/$1/eviction" -f - 2>&1)" || true
  code="$(grep -i 'eviction' <<<"$out" | grep -oE '(status="| )[0-9]{3} [A-Z][a-zA-Z ]+' | grep -oE '[0-9]{3}' | tail -1)"
  echo "${code:-none} $(grep -i '^error' <<<"$out" | tail -1)"
}
# Scaling to 3 adds the federation's flags, so the Deployment rolls its pod first: the budget is
# tried once only the three new pods remain, all Ready.
tasks_settled() {
  local pods
  pods="$(k -n "$NS" get pods -l app.kubernetes.io/instance=tasks \
    -o 'jsonpath={range .items[*]}{.metadata.deletionTimestamp}/{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null)"
  [[ "$(grep -c . <<<"$pods")" == "3" && "$(grep -cx '/True' <<<"$pods")" == "3" ]]
}
wait_for "the tasks rollout to leave 3 Ready pods" 240 tasks_settled || log "tasks did not settle at 3 Ready pods"
pdb_spec="$(pdb_field '{.spec.maxUnavailable}/{.spec.selector.matchLabels.app\.kubernetes\.io/instance}')" || pdb_spec=""
if [[ "$pdb_spec" == "1/tasks" ]] && wait_for "PodDisruptionBudget tasks to allow 1 disruption" 60 pdb_allows_one; then
  pass "PodDisruptionBudget tasks: maxUnavailable 1 over the tasks pods, 1 disruption allowed at 3 Ready replicas"
else
  fail "PodDisruptionBudget tasks: maxUnavailable 1, 1 disruption allowed (spec '$pdb_spec', allowed '$(pdb_field '{.status.disruptionsAllowed}')')"
fi
read -r evicted kept _ <<<"$(k -n "$NS" get pods -l app.kubernetes.io/instance=tasks -o 'jsonpath={.items[*].metadata.name}' 2>/dev/null)"
kept_uid="$(pod_uid "$kept")" || kept_uid=""
first="$(evict "$evicted")"
second="$(evict "$kept")"
if [[ "$first" == "201 "* && "$second" == "429 "* ]]; then
  pass "eviction of $evicted granted (201), of $kept while the first is away refused: ${second}"
else
  fail "eviction of ${evicted:-a tasks pod} granted (201), of ${kept:-another} refused with 429 (got: first '$first', second '$second')"
fi
# The Deployment replaces the evicted pod under a new name.
if wait_for "3 tasks pods Ready again" 180 tasks_ready 3 \
  && wait_for "PodDisruptionBudget tasks to allow 1 disruption again" 60 pdb_allows_one \
  && [[ -n "$kept_uid" && "$(pod_uid "$kept")" == "$kept_uid" ]]; then
  pass "the evicted pod was replaced and the budget allows 1 disruption again; $kept was never evicted"
else
  fail "the evicted pod was replaced and the budget recovered (allowed '$(pdb_field '{.status.disruptionsAllowed}')')"
fi

# ---- migration from an earlier version's StatefulSet ------------------------------------------
# Earlier versions ran each proxy as a StatefulSet <name> (serviceName <name>-pods) controlled by
# the object. That state, made by hand with the operator stopped: the object's Deployment deleted
# and a StatefulSet with the same pod template and its headless Service, owned by the object,
# running. The operator, started again, creates the Deployment beside it and deletes the
# StatefulSet only once the Deployment is available: sampled once a second, a Ready pod serves
# throughout; at the end only the Deployment's pods run and <name>-pods is gone.
operator_deployment="$(k -n "$SYSTEM_NS" get deployments -l app.kubernetes.io/name=zmq-proxy-operator -o name 2>/dev/null)" || operator_deployment=""
operator_deployment="${operator_deployment%%$'\n'*}"
operator_pods_gone() { [[ -z "$(k -n "$SYSTEM_NS" get pods -l app.kubernetes.io/name=zmq-proxy-operator -o name)" ]]; }
pod_owner_kinds() { # pod_owner_kinds NAME: the controller kind of each of NAME's pods, sorted
  k -n "$NS" get pods -l "app.kubernetes.io/instance=$1" \
    -o 'jsonpath={range .items[*]}{.metadata.ownerReferences[?(@.controller==true)].kind}{"\n"}{end}' | sort | tr '\n' ' '
}
ready_pods_of() { # ready_pods_of NAME: how many of NAME's pods are Ready
  k -n "$NS" get pods -l "app.kubernetes.io/instance=$1" \
    -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True
}
make_legacy_state() { # make_legacy_state NAME: NAME's Deployment swapped for an owned StatefulSet
  local uid labels selector match template owner
  k -n "$NS" apply -f - >/dev/null <<EOF || return 1
apiVersion: zmqproxy.io/v1alpha1
kind: ZmqProxy
metadata: {name: $1}
spec:
  frontend: {type: ROUTER, port: 5555}
  backend: {type: DEALER, port: 5556}
EOF
  k -n "$NS" wait "zmqproxy/$1" --for=condition=Ready --timeout=120s >/dev/null || return 1
  uid="$(k -n "$NS" get zmqproxy "$1" -o jsonpath='{.metadata.uid}')" || return 1
  labels="$(k -n "$NS" get deployment "$1" -o jsonpath='{.metadata.labels}')" || return 1
  selector="$(k -n "$NS" get deployment "$1" -o jsonpath='{.spec.selector}')" || return 1
  match="$(k -n "$NS" get deployment "$1" -o jsonpath='{.spec.selector.matchLabels}')" || return 1
  template="$(k -n "$NS" get deployment "$1" -o jsonpath='{.spec.template}')" || return 1
  [[ -n "$operator_deployment" && -n "$uid" && "$labels" == *managed-by* && -n "$selector" && -n "$template" ]] || return 1
  owner="[{\"apiVersion\": \"zmqproxy.io/v1alpha1\", \"kind\": \"ZmqProxy\", \"name\": \"$1\", \"uid\": \"$uid\", \"controller\": true, \"blockOwnerDeletion\": true}]"
  k -n "$SYSTEM_NS" scale "$operator_deployment" --replicas=0 >/dev/null || return 1
  wait_for "the operator to stop" 120 operator_pods_gone || return 1
  k -n "$NS" delete deployment "$1" --wait=true --timeout=60s >/dev/null || return 1
  wait_for "the pods of $1 to be gone" 120 no_pods_of "$1" || return 1
  k -n "$NS" apply -f - >/dev/null <<EOF || return 1
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "$1-pods", "labels": $labels, "ownerReferences": $owner},
 "spec": {"clusterIP": "None", "selector": $match, "ports": [{"name": "frontend", "port": 5555}]}}
EOF
  k -n "$NS" apply -f - >/dev/null <<EOF || return 1
{"apiVersion": "apps/v1", "kind": "StatefulSet",
 "metadata": {"name": "$1", "labels": $labels, "ownerReferences": $owner},
 "spec": {"replicas": 1, "serviceName": "$1-pods", "podManagementPolicy": "OrderedReady",
          "selector": $selector, "template": $template}}
EOF
  k -n "$NS" rollout status "statefulset/$1" --timeout=120s >/dev/null || return 1
  echo "legacy pods: $(pod_owner_kinds "$1")"
}
no_pods_of() { [[ -z "$(k -n "$NS" get pods -l "app.kubernetes.io/instance=$1" -o name)" ]]; }
# migrate NAME: starts the operator and samples NAME's pods until only a Ready Deployment pod is
# left and the StatefulSet is gone (bounded); prints "gap" if a sample had no Ready pod.
migrate() {
  local deadline=$((SECONDS + 240)) kinds ready gap=0
  k -n "$SYSTEM_NS" scale "$operator_deployment" --replicas=1 >/dev/null || return 1
  while ((SECONDS < deadline)); do
    kinds="$(pod_owner_kinds "$1" 2>/dev/null)" || kinds=""
    ready="$(ready_pods_of "$1" 2>/dev/null)" || ready=0
    ((ready == 0)) && gap=1
    if [[ "$kinds" == "ReplicaSet " && "$ready" == "1" ]] && ! k -n "$NS" get statefulset "$1" >/dev/null 2>&1; then
      ((gap)) && echo gap
      echo migrated
      return 0
    fi
    sleep 1
  done
  echo "timed out (pods: $kinds)"
  return 1
}
legacy="$(make_legacy_state migrated 2>&1)" || legacy="${legacy:-} (could not make the legacy state)"
if [[ "$legacy" == "legacy pods: StatefulSet " ]]; then
  pass "an earlier version's state made by hand: migrated runs as an owned StatefulSet"
else
  fail "an earlier version's state made by hand: migrated runs as an owned StatefulSet ($legacy)"
  k -n "$SYSTEM_NS" scale "$operator_deployment" --replicas=1 >/dev/null 2>&1 || true
fi
migration="$(migrate migrated 2>&1)" || migration="${migration:-} (the migration did not finish)"
if [[ "$migration" == "migrated" ]] && wait_for "migrated-pods to be deleted" 60 service_gone migrated-pods \
  && k -n "$NS" wait zmqproxy/migrated --for=condition=Ready --timeout=60s >/dev/null; then
  pass "the operator replaced the StatefulSet of migrated by its Deployment, a Ready pod serving throughout"
else
  fail "the operator replaced the StatefulSet of migrated by its Deployment, serving throughout ($(tr '\n' ' ' <<<"$migration") $(conditions migrated))"
fi
k -n "$SYSTEM_NS" rollout status "$operator_deployment" --timeout=120s >/dev/null \
  || log "the operator did not become available again after the migration"
report="$(probe probe-migrated --pattern shared-queue \
  --frontend "$(endpoint migrated frontend)" --backend "$(endpoint migrated backend)" \
  --count "$COUNT" --timeout 120s)" || true
assert_report "shared queue through migrated after the migration" "$report" \
  "sent=$COUNT" "received=$COUNT" "intact=$COUNT"
k -n "$NS" delete zmqproxy migrated --wait=true --timeout=60s >/dev/null || log "deleting zmqproxy/migrated did not finish in 60s"

# ---- pause and resume through the spec -------------------------------------------------------
# spec.paused reaches every replica through the steering ConfigMap the pods mount (the operator
# nudges the running pods so the kubelet refreshes it at once): forwarding stops without a pod
# restart or a dropped connection, the messages wait, and resuming delivers all of them in order.
pause_peers_say() { k -n "$NS" logs job/pause-peers 2>/dev/null | grep -qx "$1"; }
paused_condition_is() {
  [[ "$(k -n "$NS" get zmqproxy jobs -o 'jsonpath={.status.conditions[?(@.type=="Paused")].status}')" == "$1" ]]
}
jobs_pod_uids() { k -n "$NS" get pods -l app.kubernetes.io/instance=jobs -o 'jsonpath={.items[*].metadata.uid}'; }
pause_check() {
  local front back
  front="$(endpoint jobs frontend)" && back="$(endpoint jobs backend)" || return 1
  peers_job pause-peers 330 pause_peers.py --frontend "$front" --backend "$back" || return 1
  wait_for "the pause peers to stream" 180 pause_peers_say streaming || return 1
  local uids t0
  uids="$(jobs_pod_uids)"
  t0=$SECONDS
  k -n "$NS" patch zmqproxy jobs --type merge -p '{"spec":{"paused":true}}' >/dev/null || return 1
  wait_for "the Paused condition" 60 paused_condition_is True || return 1
  wait_for "forwarding to stop" 150 pause_peers_say stalled || return 1
  echo "pause_s=$((SECONDS - t0))"
  t0=$SECONDS
  k -n "$NS" patch zmqproxy jobs --type merge -p '{"spec":{"paused":false}}' >/dev/null || return 1
  wait_for "forwarding to resume" 150 pause_peers_say resumed || return 1
  echo "resume_s=$((SECONDS - t0))"
  [[ "$(jobs_pod_uids)" == "$uids" ]] && echo "same_pods=yes"
  wait_for "job/pause-peers to finish" 240 job_finished pause-peers || return 1
  k -n "$NS" logs job/pause-peers | grep '^{' | tail -1
}
report="$(pause_check 2>&1)" || report="${report:-} (the pause check did not complete)"
peers="$(grep '^{' <<<"$report" | tail -1)"
pause_s="$(sed -n 's/^pause_s=\([0-9]*\)$/\1/p' <<<"$report")"
resume_s="$(sed -n 's/^resume_s=\([0-9]*\)$/\1/p' <<<"$report")"
if [[ "$peers" == *'"lost": 0,'* && "$peers" == *'"duplicated": 0,'* && "$peers" == *'"reordered": 0,'* \
  && "$peers" == *'"disconnects": 0,'* && "$peers" == *'"phase": "resumed"'* && "$report" == *same_pods=yes* ]]; then
  pass "spec.paused stopped forwarding within ${pause_s}s and resuming delivered everything within ${resume_s}s, same pods, no reconnect ($peers)"
else
  fail "spec.paused pauses and resumes without loss or reconnects: $(tr '\n' ' ' <<<"$report")"
fi
k -n "$NS" patch zmqproxy jobs --type merge -p '{"spec":{"paused":false}}' >/dev/null 2>&1 || true

# ---- deletion garbage-collects the children -------------------------------------------------
children_of_tasks() {
  k -n "$NS" get deployments,replicasets,services,secrets,pods -l app.kubernetes.io/instance=tasks -o name
}
no_children_of_tasks() { [[ -z "$(children_of_tasks 2>/dev/null)" ]]; }
if [[ -n "$(children_of_tasks)" ]]; then
  pass "tasks has children before deletion ($(children_of_tasks | tr '\n' ' '))"
else
  fail "tasks has children before deletion"
fi
k -n "$NS" delete zmqproxy tasks --wait=true --timeout=60s >/dev/null \
  || log "deleting zmqproxy/tasks did not finish in 60s"
if wait_for "the children of tasks to be garbage-collected" 120 no_children_of_tasks; then
  pass "deleting tasks garbage-collected its Deployment, Services, federation Secret and pods"
else
  fail "deleting tasks garbage-collected its Deployment, Services, federation Secret and pods: $(children_of_tasks | tr '\n' ' ')"
fi

# ---- a backend that connects to worker pods by label selector -------------------------------
# A Deployment of pyzmq REP workers that bind tcp://*:6000 (label app=worker) and
# examples/connect-workers.yaml, whose backend connects to every ready pod of that selector
# through the operator's headless Service. Under a Lazy Pirate client's steady load the workers
# are scaled 3 -> 5 -> 2: every request is answered, each new worker answers within 10 s of
# being Ready, and status.connects follows the counts the proxy reports.
workers_deployment() { # workers_deployment REPLICAS
  k -n "$NS" apply -f - >/dev/null <<DEPLOY
apiVersion: apps/v1
kind: Deployment
metadata:
  name: workers
spec:
  replicas: $1
  selector: {matchLabels: {app: worker}}
  template:
    metadata:
      labels: {app: worker}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 30
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: worker
          image: ${PYTHON_IMAGE}
          imagePullPolicy: ${PYTHON_PULL_POLICY}
          command: ["python3", "/scripts/connect_peers.py", "worker", "--port", "6000", "--grace", "15"]
          env: [{name: HOME, value: /tmp}]
          ports: [{containerPort: 6000, name: zmq}]
          readinessProbe: {tcpSocket: {port: 6000}, periodSeconds: 1}
          volumeMounts: [{name: scripts, mountPath: /scripts}, {name: tmp, mountPath: /tmp}]
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities: {drop: [ALL]}
      volumes:
        - {name: scripts, configMap: {name: connect-workers}}
        - {name: tmp, emptyDir: {}}
DEPLOY
}
dispatch_connected() { # dispatch_connected N: status.connects says the backend reached N of N
  [[ "$(k -n "$NS" get zmqproxy dispatch -o 'jsonpath={.status.connects[0].resolved}/{.status.connects[0].connected}')" == "$1/$1" ]]
}
ready_workers() { k -n "$NS" get deployment workers -o 'jsonpath={.status.readyReplicas}'; }
workers_ready() { [[ "$(ready_workers)" == "$1" ]]; }
connect_peers_say() { k -n "$NS" logs job/connect-client 2>/dev/null | grep -q "$1"; }
# worker_ready_times: "POD UNIX_TIME" of each worker pod's Ready transition.
worker_ready_times() {
  k -n "$NS" get pods -l app=worker \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].lastTransitionTime}{"\n"}{end}' |
    while read -r pod at; do [[ -n "$at" ]] && echo "$pod $(date -d "$at" +%s)"; done
}
connect_check() {
  k -n "$NS" delete configmap connect-workers --ignore-not-found >/dev/null 2>&1
  k -n "$NS" create configmap connect-workers --from-file="$ROOT/tests/e2e/connect_peers.py" >/dev/null || return 1
  workers_deployment 3 || return 1
  wait_for "3 workers to be Ready" 180 workers_ready 3 || return 1
  k -n "$NS" apply -f "$ROOT/examples/connect-workers.yaml" >/dev/null || return 1
  wait_for "zmqproxy/dispatch to report 3 of 3 workers connected" 180 dispatch_connected 3 || return 1
  echo "status3=$(k -n "$NS" get zmqproxy dispatch -o 'jsonpath={.status.connects[0]}')"
  peers_job connect-client 400 connect_peers.py client --frontend "tcp://dispatch.${NS}.svc:5555" --duration 150 || return 1
  wait_for "the connect client to stream" 120 connect_peers_say '^streaming' || return 1
  local before
  before="$(worker_ready_times | awk '{print $1}' | sort | tr '\n' ' ')"
  k -n "$NS" scale deployment workers --replicas 5 >/dev/null || return 1
  wait_for "5 workers to be Ready" 180 workers_ready 5 || return 1
  wait_for "zmqproxy/dispatch to report 5 of 5 workers connected" 120 dispatch_connected 5 || return 1
  echo "status5=$(k -n "$NS" get zmqproxy dispatch -o 'jsonpath={.status.connects[0]}')"
  # Each new worker's first answer, against its Ready time.
  local pod ready first late=0 delays=""
  while read -r pod ready; do
    [[ " $before " == *" $pod "* ]] && continue
    wait_for "worker $pod to answer" 60 connect_peers_say "^first $pod " || { late=1; continue; }
    first="$(k -n "$NS" logs job/connect-client | sed -n "s/^first $pod \([0-9]*\).*/\1/p" | head -1)"
    delays+="$pod:$((first - ready))s "
    ((first - ready <= 10)) || late=1
  done < <(worker_ready_times)
  echo "new_workers=${delays:-none} late=$late"
  k -n "$NS" scale deployment workers --replicas 2 >/dev/null || return 1
  wait_for "2 workers to be Ready" 180 workers_ready 2 || return 1
  wait_for "zmqproxy/dispatch to report 2 of 2 workers connected" 120 dispatch_connected 2 || return 1
  echo "status2=$(k -n "$NS" get zmqproxy dispatch -o 'jsonpath={.status.connects[0]}')"
  wait_for "job/connect-client to finish" 300 job_finished connect-client || return 1
  k -n "$NS" logs job/connect-client | grep '^{' | tail -1
}
report="$(connect_check)" || report="${report:-} (the connect check did not complete)"
log "connect check: $(tr '\n' ' ' <<<"$report")"
final="$(grep '^{' <<<"$report" | tail -1)"
cnum() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" <<<"$final"; }
workers_seen="$(grep -o '"workers": {[^}]*}' <<<"$final" | grep -oE '": [0-9]+' | wc -l)"
if [[ -n "$final" && "$(cnum unanswered)" == "0" && "$(cnum answered)" == "$(cnum sent)" && "$(cnum sent)" -gt 0 ]] &&
  grep -q "status3=.*\"connected\":3" <<<"$report" && grep -q "status5=.*\"connected\":5" <<<"$report" &&
  grep -q "status2=.*\"connected\":2" <<<"$report" && grep -q "late=0" <<<"$report" && ((workers_seen == 5)); then
  pass "backend connected by selector followed 3 -> 5 -> 2 workers under load: every request answered ($final), new workers answered within 10 s of Ready ($(sed -n 's/^new_workers=\(.*\) late=.*/\1/p' <<<"$report"))"
else
  fail "backend connected by selector follows 3 -> 5 -> 2 workers under load, every request answered, new workers within 10 s: $(tr '\n' ' ' <<<"$report")"
fi
k -n "$NS" delete zmqproxy dispatch --wait=true --timeout=60s >/dev/null 2>&1 || true
k -n "$NS" delete deployment workers --wait=true --timeout=60s >/dev/null 2>&1 || true

# ---- the sidecar: a pyzmq app's PUB on ipc:///zmq/out reaches a hub in another namespace ----
# examples/sidecar/: the hub (CURVE frontend) in <ns>-hub, the template events-out and the
# publisher Deployment in <ns>. The webhook injects the sidecar into the publisher's pod; a
# remote subscriber on the hub's backend must get the app's messages (the app has no CURVE and
# no address of the hub), and deleting the app pod under load must lose nothing it sent before
# SIGTERM: every sequence number from the first the subscriber got to the last the app printed.
HUB_NS="${NS}-hub"
sidecar_example() { # sidecar_example FILE: the example with this run's hub namespace and images
  sed -e "s/events-hub\.hub\.svc/events-hub.${HUB_NS}.svc/" \
    -e "s|image: python:3.12-slim|image: ${PYTHON_IMAGE}\n          imagePullPolicy: ${PYTHON_PULL_POLICY}|" \
    "$ROOT/examples/sidecar/$1"
}
publisher_pod() { # the Running publisher pod that is not terminating, other than $1
  k -n "$NS" get pods -l app=publisher --field-selector=status.phase=Running \
    -o 'jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}' 2>/dev/null |
    awk -v not="${1:-}" 'NF == 1 && $1 != not {print $1; exit}'
}
publisher_running() { [[ -n "$(publisher_pod "${1:-}")" ]]; }
publisher_injected() {
  [[ "$(k -n "$NS" get pods -l app=publisher -o 'jsonpath={.items[0].spec.initContainers[0].name}' 2>/dev/null)" == "zmq-proxy" ]]
}
sidecar_peers_say() { k -n "$NS" logs job/sidecar-peers 2>/dev/null | grep -q "$1"; }
sidecar_listed() { [[ "$(k -n "$NS" get zmqproxy events-out -o 'jsonpath={.status.sidecarPods}')" == *"$1"* ]]; }
sidecar_check() {
  local keys first second applog
  keys="$(mktemp -d)"
  keygen "$keys" hub || return 1
  keygen "$keys" publisher || return 1
  k create namespace "$HUB_NS" >/dev/null || return 1
  k label namespace "$HUB_NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
  k -n "$HUB_NS" create secret generic events-hub-curve --from-file=server_secret="$keys/hub_secret" >/dev/null || return 1
  k -n "$HUB_NS" create configmap events-hub-publishers --from-file="$keys/publisher" >/dev/null || return 1
  k -n "$HUB_NS" apply -f "$ROOT/examples/sidecar/hub.yaml" >/dev/null || return 1
  k -n "$NS" create secret generic events-hub-public --from-file=server="$keys/hub" >/dev/null || return 1
  k -n "$NS" create secret generic events-out-client --from-file=client_secret="$keys/publisher_secret" >/dev/null || return 1
  rm -rf "$keys"
  sidecar_example events-out.yaml | k -n "$NS" apply -f - >/dev/null || return 1
  k -n "$HUB_NS" wait zmqproxy/events-hub --for=condition=Ready --timeout=180s >/dev/null || return 1
  # The subscriber first, so its subscription is upstream when the app starts.
  peers_job sidecar-peers 400 sidecar_peers.py --endpoint "tcp://events-hub.${HUB_NS}.svc:5556" --duration 200 || return 1
  sidecar_example publisher.yaml | k -n "$NS" apply -f - >/dev/null || return 1
  wait_for "the publisher pod to carry the sidecar" 60 publisher_injected || return 1
  echo "injected"
  wait_for "a Running publisher pod" 180 publisher_running || return 1
  first="$(publisher_pod)"
  wait_for "the remote subscriber to hear $first" 120 sidecar_peers_say "^first $first " || return 1
  echo "reached $first"
  wait_for "status.sidecarPods to list $first" 60 sidecar_listed "$first" || return 1
  echo "listed $first"
  # Under load: the app's log (its last sequence number, printed at SIGTERM) read to the end,
  # then the pod deleted; the Deployment starts another, which must be injected and heard too.
  # (Its own file: the suite's artifacts directory is gone by now.)
  applog="$(mktemp)"
  k -n "$NS" logs -f "$first" -c app >"$applog" 2>&1 &
  local follower=$!
  wait_for "the app's log to be followed" 30 test -s "$applog" || return 1
  k -n "$NS" delete pod "$first" --wait=true --timeout=120s >/dev/null || return 1
  wait "$follower" 2>/dev/null || true
  echo "app_$(grep '^last ' "$applog" | tail -1 | tr ' ' '=')"
  rm -f "$applog"
  wait_for "a new publisher pod" 180 publisher_running "$first" || return 1
  second="$(publisher_pod "$first")"
  wait_for "the remote subscriber to hear $second" 120 sidecar_peers_say "^first $second " || return 1
  echo "replacement $second"
  wait_for "job/sidecar-peers to finish" 300 job_finished sidecar-peers || return 1
  echo "deleted=$first"
  k -n "$NS" logs job/sidecar-peers | grep '^{' | tail -1
}
# The check runs in a subshell (its output is the report), so the hub namespace it creates is
# recorded for the teardown here.
MADE_NAMESPACES=("$HUB_NS" "${MADE_NAMESPACES[@]}")
report="$(sidecar_check 2>&1)" || report="${report:-} (the sidecar check did not complete)"
log "sidecar check: $(tr '\n' ' ' <<<"$report")"
if grep -q '^injected' <<<"$report" && grep -q '^reached ' <<<"$report"; then
  pass "a labelled pod gets the events-out sidecar and its ipc:///zmq/out messages reach a remote subscriber over CURVE"
else
  fail "a labelled pod gets the sidecar and its messages reach a remote subscriber: $(tr '\n' ' ' <<<"$report")"
fi
if grep -q '^listed ' <<<"$report"; then
  pass "status.sidecarPods of events-out lists the publisher pod"
else
  fail "status.sidecarPods of events-out lists the publisher pod: $(tr '\n' ' ' <<<"$report")"
fi
deleted="$(sed -n 's/^deleted=//p' <<<"$report")"
last_sent="$(sed -n 's/^app_last=//p' <<<"$report")"
final="$(grep '^{' <<<"$report" | tail -1)"
got="$(python3 -c 'import json,sys; p=json.loads(sys.argv[1])["pods"].get(sys.argv[2]); print("" if p is None else "%d %d %d" % (p["last"], p["missing"], p["received"]))' "$final" "$deleted" 2>/dev/null)" || got=""
read -r got_last got_missing got_received <<<"${got:-x x x}"
if [[ -n "$deleted" && -n "$last_sent" && "$got_last" == "$last_sent" && "$got_missing" == "0" ]]; then
  pass "deleting the app pod under load lost nothing it sent before SIGTERM ($deleted: $got_received received, up to its last $last_sent, none missing)"
else
  fail "deleting the app pod under load loses nothing sent before SIGTERM: pod '$deleted' last sent '$last_sent', received last '$got_last' missing '$got_missing' ($final)"
fi
if grep -q '^replacement ' <<<"$report"; then
  pass "the Deployment's replacement pod is injected too and heard"
else
  fail "the Deployment's replacement pod is injected too and heard: $(tr '\n' ' ' <<<"$report")"
fi
k -n "$NS" delete deployment publisher --wait=true --timeout=120s >/dev/null 2>&1 || true
k -n "$NS" delete zmqproxy events-out --wait=true --timeout=60s >/dev/null 2>&1 || true
k -n "$HUB_NS" delete zmqproxy events-hub --wait=true --timeout=60s >/dev/null 2>&1 || true

# ---- the invalid example is refused by the API server ---------------------------------------
if out="$(k -n "$NS" apply -f "$ROOT/examples/invalid-pair.yaml" 2>&1)"; then
  fail "examples/invalid-pair.yaml is refused (it was accepted: $out)"
elif [[ "$out" == *"unsupported socket pair ROUTER/PUSH"* ]]; then
  pass "examples/invalid-pair.yaml is refused: unsupported socket pair ROUTER/PUSH"
else
  fail "examples/invalid-pair.yaml is refused with the pair message (got: $out)"
fi
if k -n "$NS" get zmqproxy broken >/dev/null 2>&1; then
  fail "no ZmqProxy broken exists after the refusal"
else
  pass "no ZmqProxy broken exists after the refusal"
fi

# ---- the operator's metrics, through the API server's service proxy -------------------------
# scheme:service:port-name, the port being the chart's metrics Service port "http".
# The Service is named after the chart's full name, which depends on the release name: find it.
metrics_service="$(k -n "$SYSTEM_NS" get services -l "app.kubernetes.io/instance=${RELEASE}" -o name |
  sed -n 's|^service/\(.*-metrics\)$|\1|p' | head -1)" || metrics_service=""
metrics="$(k get --raw "/api/v1/namespaces/${SYSTEM_NS}/services/http:${metrics_service:-${RELEASE}-metrics}:http/proxy/metrics" 2>&1)" || true
if [[ "$metrics" == *"# TYPE"* ]]; then
  pass "operator /metrics is served through its metrics Service"
else
  fail "operator /metrics is served through its metrics Service (got: ${metrics:0:200})"
fi

# ---- uninstall ------------------------------------------------------------------------------
for name in events jobs audited steered secure-events; do
  k -n "$NS" delete zmqproxy "$name" --wait=true --timeout=60s >/dev/null || true
done
if helm --kube-context "$KCTX" uninstall "$RELEASE" -n "$SYSTEM_NS" --wait --timeout 120s >/dev/null; then
  pass "helm uninstall"
else
  fail "helm uninstall"
fi
operator_gone() { [[ -z "$(k -n "$SYSTEM_NS" get deployments,pods -l app.kubernetes.io/name=zmq-proxy-operator -o name)" ]]; }
if wait_for "the operator to be removed" 120 operator_gone; then
  pass "the operator's Deployment and pods are gone after uninstall"
else
  fail "the operator's Deployment and pods are gone after uninstall"
fi
if ((MADE_CRD)) || [[ "$EXISTING" != "1" ]]; then
  # The README's last uninstall step: Helm leaves CRDs (and so every ZmqProxy) in place.
  if k delete crd zmqproxies.zmqproxy.io --wait=true --timeout=120s >/dev/null; then
    pass "kubectl delete crd zmqproxies.zmqproxy.io"
  else
    fail "kubectl delete crd zmqproxies.zmqproxy.io"
  fi
  MADE_CRD=0
fi
# The EXIT trap deletes the kind cluster or, on an existing cluster, what the run created, and
# prints the closing count.
