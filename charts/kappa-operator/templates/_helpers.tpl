{{- define "kappa.name" -}}kappa-operator{{- end -}}

{{- define "kappa.fullname" -}}
{{- if eq .Release.Name "kappa-operator" -}}kappa-operator{{- else -}}{{ printf "%s-kappa-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kappa.labels" -}}
app.kubernetes.io/name: kappa-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kappa.selector" -}}
app.kubernetes.io/name: kappa-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* What the operator does in each watched namespace: only the verbs it uses. */}}
{{- define "kappa.rules" -}}
# Its own resources: watched, written (server-side apply), statuses, and
# ViewVersions created and deleted as versions come and go.
- apiGroups: [kappa.dev]
  resources: [kafkaclusters, topics, processors, viewversions]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [kappa.dev]
  resources: [kafkaclusters/status, topics/status, processors/status, viewversions/status]
  verbs: [get, patch]
# Owner references with blockOwnerDeletion need this where
# OwnerReferencesPermissionEnforcement is on.
- apiGroups: [kappa.dev]
  resources: [topics/finalizers, processors/finalizers, viewversions/finalizers]
  verbs: [update]
# Kafka credentials (SASL, TLS) named by KafkaClusters; watched by metadata
# so a rotated Secret reconnects. A processor version whose client
# properties (KAPPA_PROPERTIES) hold a secret gets a Secret with them,
# applied server-side.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
# One Deployment per processor version; its pods are read for crash loops.
# (Server-side apply creates what does not exist yet: create and patch.)
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Readers' Service and ConfigMap (watched by label, so a steady reconcile
# reads them from a cache).
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
# Verification Jobs.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create]
# Before re-creating a view Topic that went, whether its namespace is being
# deleted (a Role in a namespace grants get on that namespace itself).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get]
# Events for every decision a person cares about.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end -}}
