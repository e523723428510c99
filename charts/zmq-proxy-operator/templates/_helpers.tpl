{{/*
Names, labels and the operator's RBAC rules, shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "zmq-proxy-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every object: fullnameOverride, or release-chart (just the release name when it
already contains the chart name). Truncated to 63 characters, the limit of a DNS label.
*/}}
{{- define "zmq-proxy-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "zmq-proxy-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. They differ from the proxy pods' labels (app.kubernetes.io/name: zmq-proxy),
so the metrics Service never selects a proxy pod.
*/}}
{{- define "zmq-proxy-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zmq-proxy-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "zmq-proxy-operator.labels" -}}
helm.sh/chart: {{ include "zmq-proxy-operator.chart" . }}
{{ include "zmq-proxy-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: zmq-proxy-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "zmq-proxy-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zmq-proxy-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is pinned. */}}
{{- define "zmq-proxy-operator.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "zmq-proxy-operator.image" -}}
{{- include "zmq-proxy-operator.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "zmq-proxy-operator.proxyImage" -}}
{{- include "zmq-proxy-operator.imageRef" (dict "image" .Values.proxyImage "appVersion" .Chart.AppVersion) }}
{{- end }}

{{/*
What the operator calls, and nothing more (operator/src/reconcile.rs, main.rs):
- ZmqProxy objects: list and watch them (the controller and the start-up check); status is
  written by server-side apply through the status subresource; finalizers/update is what the
  OwnerReferencesPermissionEnforcement admission plugin requires before the operator may set
  blockOwnerDeletion on the ownerReferences of the children it creates. The operator never
  writes the objects themselves.
- Deployments and Services: get, then server-side apply (create/patch), plus the watches on its
  children. Services also need delete: the headless `<name>-pods` Service goes away when replicas
  drop to one. PodDisruptionBudgets likewise (get, apply, watch), with delete: the PDB goes away
  when replicas drop below two or spec.podDisruptionBudget.enabled is false. Nothing else is
  deleted by the operator; children follow their owner through garbage collection.
- Events: events.k8s.io is what kube's Recorder writes (patch counts a repeated event); the core
  group is granted too, for clients and tools that still record through it.
*/}}
{{- define "zmq-proxy-operator.rules" -}}
- apiGroups: ["zmqproxy.io"]
  resources: ["zmqproxies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["zmqproxy.io"]
  resources: ["zmqproxies/status"]
  verbs: ["patch"]
- apiGroups: ["zmqproxy.io"]
  resources: ["zmqproxies/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- /* Only to replace the StatefulSets of earlier versions (one delete each, once the Deployment serves). */}}
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "delete"]
{{- /* The federation's key, <name>-federation: created once, then only its metadata read, by name. No list, no watch: the operator cannot enumerate Secrets, and reads no other Secret's data (RBAC cannot narrow get to names it does not know yet). */}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
{{- /* Read-only: each ready pod is asked for its /connects and /federation by its IP. */}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
{{- /* delete: the headless Service of a connect entry that selects pods, when the entry goes. */}}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- /* <name>-steering, which carries spec.paused to the pods. */}}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- /* The nudge after a pause or resume: an annotation, so the kubelet refreshes the mount. */}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
{{- /* The optional PodMonitor per ZmqProxy (not watched: read when reconciled). */}}
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Labels of every alert: its severity, then metrics.prometheusRule.alertLabels. */}}
{{- define "zmq-proxy-operator.alertLabels" -}}
severity: {{ .severity }}
{{- with .rule.alertLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* runbook_url of an alert: its section of docs/runbooks.md, under metrics.prometheusRule.runbookBaseUrl. */}}
{{- define "zmq-proxy-operator.runbookUrl" -}}
{{- with .rule.runbookBaseUrl }}
runbook_url: {{ printf "%s#%s" . $.anchor }}
{{- end }}
{{- end }}
