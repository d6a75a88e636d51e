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
KServe deployment mode under its current name: Knative or Standard. The legacy names Serverless and RawDeployment
are accepted in values and rendered as these, because KServe >= 0.16 compares them raw: its validating webhook picks
the HPA rules only for "Standard" (validateAutoScalingCompExtension) and rejects every update whose annotation differs
from the normalised mode it recorded in the status (validateDeploymentMode; kserve/kserve#5885).
*/}}
{{- define "fraud-detection.deploymentMode" -}}
{{- $mode := .Values.inferenceService.deploymentMode }}
{{- if has $mode (list "Knative" "Serverless") }}Knative
{{- else if has $mode (list "Standard" "RawDeployment") }}Standard
{{- else }}
{{- fail (printf "inferenceService.deploymentMode must be Knative (alias Serverless) or Standard (alias RawDeployment), not %q" $mode) }}
{{- end }}
{{- end }}

{{/*
KServe deployment mode is Knative-based.
*/}}
{{- define "fraud-detection.serverless" -}}
{{- if eq (include "fraud-detection.deploymentMode" .) "Knative" }}true{{- end }}
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
The identifier key (FRAUD_IDENTIFIER_KEY) of the predictor and the drift job, by secretKeyRef to
identifierKey.secretName; empty when no Secret is named (the processes then hash with plain SHA-256).
*/}}
{{- define "fraud-detection.identifierKeyEnv" -}}
{{- with .Values.identifierKey.secretName }}
- name: FRAUD_IDENTIFIER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.identifierKey.key | quote }}
{{- end }}
{{- end }}

{{/*
Reason of the CKV_K8S_35 suppression of a workload reading the S3 keys and/or the identifier key from the
environment; empty when it reads no Secret. Usage: include "fraud-detection.secretEnvReason" .
*/}}
{{- define "fraud-detection.secretEnvReason" -}}
{{- if .Values.identifierKey.secretName }}
{{- "The S3 clients and the identifier hashing read their keys (AWS_*, FRAUD_IDENTIFIER_KEY) from environment variables only; the values come from existing Secrets by secretKeyRef and never appear in the chart." }}
{{- else if .Values.store.credentials.existingSecret }}
{{- "The S3 and MinIO clients read their keys from environment variables only; the values come from an existing Secret by secretKeyRef and never appear in the chart." }}
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
Optional "uidReason" and "secretEnvReason" replace the default reasons of CKV_K8S_40 and CKV_K8S_35.
*/}}
{{- define "fraud-detection.checkovSkips" -}}
{{- $skips := list }}
{{- $skips = append $skips (printf "CKV_K8S_40=%s" (.uidReason | default "The images run as uid 1000 by contract (docs/METRICS.md, Dockerfile USER 1000); with runAsNonRoot, no privilege escalation, all capabilities dropped and no host namespaces a low uid gives no host access.")) }}
{{- $unpinned := false }}
{{- range .images }}
{{- if not .digest }}{{ $unpinned = true }}{{ end }}
{{- end }}
{{- if $unpinned }}
{{- $skips = append $skips "CKV_K8S_43=The image is referenced by tag because no digest is configured; set the component's image.digest to pin it (production values should), which also removes this suppression." }}
{{- end }}
{{- if .secretEnv }}
{{- $skips = append $skips (printf "CKV_K8S_35=%s" (.secretEnvReason | default "The S3 and MinIO clients read their keys from environment variables only; the values come from an existing Secret by secretKeyRef and never appear in the chart.")) }}
{{- end }}
{{- range $i, $skip := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end }}


{{/*
Online feature store. onlineStoreUrl: the in-chart Redis primary (pod 0 through the headless Service) or
onlineStore.url; empty when the online store is off.
*/}}
{{- define "fraud-detection.redisName" -}}
{{- include "fraud-detection.componentName" (list . "redis") }}
{{- end }}

{{- define "fraud-detection.onlineStoreUrl" -}}
{{- if .Values.onlineStore.redis.enabled }}
{{- $name := include "fraud-detection.redisName" . }}
{{- printf "redis://%s-0.%s.%s.svc:6379/0" $name $name (include "fraud-detection.namespace" .) }}
{{- else }}
{{- .Values.onlineStore.url }}
{{- end }}
{{- end }}

{{/*
Port of the external Redis URL (for the predictor's egress rule): the URL's port, else 6380 for rediss://
and 6379 for redis://.
*/}}
{{- define "fraud-detection.onlineStorePort" -}}
{{- $url := urlParse .Values.onlineStore.url }}
{{- $hostPort := splitList ":" $url.host }}
{{- if gt (len $hostPort) 1 }}
{{- last $hostPort }}
{{- else }}
{{- ternary "6380" "6379" (eq $url.scheme "rediss") }}
{{- end }}
{{- end }}

{{/*
Online store settings of the model server: the URL, the password by secretKeyRef, the unavailable mode.
*/}}
{{- define "fraud-detection.onlineStoreEnv" -}}
{{- with include "fraud-detection.onlineStoreUrl" . }}
{{- $os := $.Values.onlineStore }}
{{- if and $os.url $os.redis.enabled }}
{{- fail "onlineStore: set either onlineStore.url (external Redis) or onlineStore.redis.enabled, not both" }}
{{- end }}
- name: FRAUD_ONLINE_STORE
  value: {{ . | quote }}
- name: FRAUD_ONLINE_STORE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "onlineStore.passwordSecret.name is required with an online store" $os.passwordSecret.name | quote }}
      key: {{ $os.passwordSecret.key | quote }}
- name: FRAUD_ONLINE_STORE_UNAVAILABLE
  value: {{ $os.whenUnavailable | quote }}
{{- end }}
{{- end }}

{{/*
Predictor egress to the online store when networkPolicy.egress.enabled: the in-chart Redis pods on 6379, or
any destination on the external URL's port (a managed cache's private endpoint address is not known here).
*/}}
{{- define "fraud-detection.onlineStoreEgress" -}}
{{- if .Values.onlineStore.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "fraud-detection.selectorLabels" . | nindent 10 }}
          app.kubernetes.io/component: redis
  ports:
    - protocol: TCP
      port: 6379
{{- else if .Values.onlineStore.url }}
- ports:
    - protocol: TCP
      port: {{ include "fraud-detection.onlineStorePort" . }}
{{- end }}
{{- end }}

{{/*
The bundle verify key (FRAUD_VERIFY_KEY, a public key, so a literal value) of the predictor and the drift job;
empty when bundleSigning.verifyKey is not set. Refuses a private key, whatever the schema let through.
*/}}
{{- define "fraud-detection.verifyKey" -}}
{{- with .Values.bundleSigning.verifyKey }}
{{- if contains "PRIVATE" (upper .) }}
{{- fail "bundleSigning.verifyKey holds a private key: set the public key (verify-key.pem); the private key (FRAUD_SIGNING_KEY) belongs in pipeline.existingSecret only" }}
{{- end }}
{{- . }}
{{- end }}
{{- end }}

{{- define "fraud-detection.verifyKeyEnv" -}}
{{- with include "fraud-detection.verifyKey" . }}
- name: FRAUD_VERIFY_KEY
  value: {{ . | quote }}
{{- end }}
{{- /* Unsigned bundles only when asked for (bundleSigning.trustUnsigned): without a key, nothing loads. */}}
- name: FRAUD_TRUST_UNSIGNED
  value: {{ ternary "true" "false" (.Values.bundleSigning.trustUnsigned | default false) | quote }}
{{- end }}

{{/*
Payload-log spool of the model server (only with the payload log on): mount path, and bytes of the emptyDir's
sizeLimit (whole bytes, Ki, Mi, Gi or Ti, as the schema allows), which must exceed the spool's cap.
*/}}
{{- define "fraud-detection.spoolPath" -}}
/var/spool/fraud-payload-log
{{- end }}

{{- define "fraud-detection.spoolLimitBytes" -}}
{{- $limit := toString .Values.inferenceService.payloadLog.spool.sizeLimit }}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- $unit := regexFind "(Ki|Mi|Gi|Ti)$" $limit }}
{{- $number := trimSuffix $unit $limit }}
{{- if not (regexMatch "^[1-9][0-9]*$" $number) }}
{{- fail (printf "inferenceService.payloadLog.spool.sizeLimit must be a whole number of bytes, Ki, Mi, Gi or Ti, not %q" $limit) }}
{{- end }}
{{- mul (int64 $number) (int64 (get $units $unit | default 1)) }}
{{- end }}
