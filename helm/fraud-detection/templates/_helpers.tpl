{{/*
Chart name, truncated to 63 characters (DNS-1123 label).
*/}}
{{- define "fraud-detection.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, prefixed to the chart name when it does not contain it.
*/}}
{{- define "fraud-detection.fullname" -}}
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

{{/*
Object name of a component: <fullname>-<suffix>, within 63 characters.
Usage: include "fraud-detection.componentName" (list . "drift")
*/}}
{{- define "fraud-detection.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "fraud-detection.fullname" $root | trunc (int (sub 62 (len (index . 1)))) | trimSuffix "-") (index . 1) }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "fraud-detection.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels of every object.
*/}}
{{- define "fraud-detection.labels" -}}
helm.sh/chart: {{ include "fraud-detection.chart" . }}
{{ include "fraud-detection.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fraud-detection
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "fraud-detection.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fraud-detection.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels plus a component label. Usage: include "fraud-detection.componentLabels" (list . "drift")
*/}}
{{- define "fraud-detection.componentLabels" -}}
{{ include "fraud-detection.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Release namespace.
*/}}
{{- define "fraud-detection.namespace" -}}
{{- .Release.Namespace }}
{{- end }}

{{/*
Image reference. Usage: include "fraud-detection.image" (dict "root" . "image" .Values.drift.image)
<registry>/<repository>@<digest> when a digest is set, else <registry>/<repository>:<tag>.
*/}}
{{- define "fraud-detection.image" -}}
{{- $root := .root }}
{{- $registry := .image.registry | default $root.Values.image.registry }}
{{- $repo := ternary .image.repository (printf "%s/%s" $registry .image.repository) (empty $registry) }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Name of the InferenceService (and KServe's pod label value serving.kserve.io/inferenceservice).
*/}}
{{- define "fraud-detection.isvcName" -}}
{{- .Values.inferenceService.name | default .Values.model.name }}
{{- end }}

{{/*
KServe deployment mode is Knative-based.
*/}}
{{- define "fraud-detection.serverless" -}}
{{- if eq .Values.inferenceService.deploymentMode "Serverless" }}true{{- end }}
{{- end }}

{{/*
Model location for KServe's storage initializer.
*/}}
{{- define "fraud-detection.storageUri" -}}
{{- $root := .Values.inferenceService.storageRoot | default .Values.store.uri | trimSuffix "/" }}
{{- printf "%s/models/%s/versions/%s" $root .Values.model.name .Values.model.version }}
{{- end }}

{{/*
ServiceAccount names. The store identity (predictor and drift job) and the rollout identity.
*/}}
{{- define "fraud-detection.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "fraud-detection.fullname" .) }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fraud-detection.driftServiceAccountName" -}}
{{- .Values.drift.serviceAccount.name | default (include "fraud-detection.componentName" (list . "drift")) }}
{{- end }}

{{- define "fraud-detection.rolloutServiceAccountName" -}}
{{- .Values.rollout.serviceAccount.name | default (include "fraud-detection.componentName" (list . "rollout")) }}
{{- end }}

{{/*
S3 endpoint URL (scheme://host:port) for the FRAUD_S3_ENDPOINT setting; empty for AWS S3.
*/}}
{{- define "fraud-detection.s3EndpointUrl" -}}
{{- with .Values.store.s3.endpoint }}
{{- printf "%s://%s" (ternary "https" "http" $.Values.store.s3.useHttps) . }}
{{- end }}
{{- end }}

{{/*
Store settings shared by the predictor and the drift job (FRAUD_* settings plus S3 keys by reference).
*/}}
{{- define "fraud-detection.storeEnv" -}}
- name: FRAUD_STORE_URI
  value: {{ .Values.store.uri | quote }}
- name: FRAUD_MODEL_NAME
  value: {{ .Values.model.name | quote }}
{{- with .Values.store.payloadLogUri }}
- name: FRAUD_PAYLOAD_LOG_URI
  value: {{ . | quote }}
{{- end }}
{{- with .Values.store.azure.accountUrl }}
- name: FRAUD_AZURE_STORAGE_ACCOUNT_URL
  value: {{ . | quote }}
{{- end }}
{{- with include "fraud-detection.s3EndpointUrl" . }}
- name: FRAUD_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.store.s3.region }}
- name: FRAUD_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- if .Values.store.s3.useHttps }}
- name: FRAUD_S3_VERIFY_SSL
  value: {{ .Values.store.s3.verifySsl | quote }}
{{- end }}
{{- with .Values.store.credentials.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.store.credentials.accessKeyIdKey | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.store.credentials.secretAccessKeyKey | quote }}
{{- end }}
{{- end }}

{{/*
Egress rules shared by the chart's NetworkPolicies when networkPolicy.egress.enabled: DNS plus the
configured rules.
*/}}
{{- define "fraud-detection.egressRules" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- with .Values.networkPolicy.egress.rules }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Checkov suppressions of a workload, as checkov.io/skipN annotations (checkov reads them from the object's
metadata). Each reason says why the check does not apply and must not contain an equals sign.
Usage: include "fraud-detection.checkovSkips" (dict "images" (list .Values.drift.image) "secretEnv" true)
*/}}
{{- define "fraud-detection.checkovSkips" -}}
{{- $skips := list }}
{{- $skips = append $skips "CKV_K8S_40=The images run as uid 1000 by contract (docs/METRICS.md, Dockerfile USER 1000); with runAsNonRoot, no privilege escalation, all capabilities dropped and no host namespaces a low uid gives no host access." }}
{{- $unpinned := false }}
{{- range .images }}
{{- if not .digest }}{{ $unpinned = true }}{{ end }}
{{- end }}
{{- if $unpinned }}
{{- $skips = append $skips "CKV_K8S_43=The image is referenced by tag because no digest is configured; set the component's image.digest to pin it (production values should), which also removes this suppression." }}
{{- end }}
{{- if .secretEnv }}
{{- $skips = append $skips "CKV_K8S_35=The S3 and MinIO clients read their keys from environment variables only; the values come from an existing Secret by secretKeyRef and never appear in the chart." }}
{{- end }}
{{- range $i, $skip := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end }}
