{{/*
Application Insights (OpenTelemetry traces of the model server and the drift job): off unless appInsights.enabled.
The connection string is always a mounted file that FRAUD_APPINSIGHTS_CONNECTION_STRING_FILE names, never an
environment value: from Key Vault on AKS (a SecretProviderClass per workload identity, Secrets Store CSI driver), else
one key of an existing Secret (a secret volume).
Usage: include "fraud-detection.appInsightsEnv" (list . "predictor") (or "drift").
*/}}
{{- define "fraud-detection.appInsightsMountPath" -}}
/mnt/secrets/appinsights
{{- end }}

{{- define "fraud-detection.appInsightsSecretProviderClass" -}}
{{- $root := index . 0 }}
{{- include "fraud-detection.componentName" (list $root (ternary "drift-appinsights" "appinsights" (eq (index . 1) "drift"))) }}
{{- end }}

{{/*
Client ID of the workload identity a component's pods run as (its ServiceAccount's annotation).
*/}}
{{- define "fraud-detection.appInsightsClientId" -}}
{{- $root := index . 0 }}
{{- $annotations := ternary $root.Values.drift.serviceAccount.annotations $root.Values.serviceAccount.annotations (eq (index . 1) "drift") }}
{{- $key := "azure.workload.identity/client-id" }}
{{- required (printf "appInsights.keyVault needs the %s annotation on the %s ServiceAccount (workload identity)" $key (index . 1)) (get ($annotations | default dict) $key) }}
{{- end }}

{{- define "fraud-detection.appInsightsEnv" -}}
{{- $root := index . 0 }}
{{- $ai := $root.Values.appInsights }}
{{- if $ai.enabled }}
{{- $file := ternary $ai.keyVault.secretName $ai.secretKey $ai.keyVault.enabled }}
- name: FRAUD_APPINSIGHTS_CONNECTION_STRING_FILE
  value: {{ printf "%s/%s" (include "fraud-detection.appInsightsMountPath" $root) $file | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ ternary "fraud-detection-drift" "fraud-detection-serve" (eq (index . 1) "drift") | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=%s" (include "fraud-detection.namespace" $root) | quote }}
{{- if and (ne (index . 1) "drift") $ai.samplingRatio }}
- name: FRAUD_APPINSIGHTS_SAMPLING_RATIO
  value: {{ $ai.samplingRatio | quote }}
{{- end }}
{{- if not $ai.sdkSelfTelemetry }}
# The SDK's own usage statistics and remote configuration: only the ingestion endpoint is called.
- name: APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL
  value: "true"
- name: APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED
  value: "true"
{{- end }}
{{- end }}
{{- end }}

{{- define "fraud-detection.appInsightsVolumeMount" -}}
{{- $root := index . 0 }}
{{- if $root.Values.appInsights.enabled }}
- name: appinsights
  mountPath: {{ include "fraud-detection.appInsightsMountPath" $root }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "fraud-detection.appInsightsVolume" -}}
{{- $root := index . 0 }}
{{- $ai := $root.Values.appInsights }}
{{- if and $ai.enabled $ai.keyVault.enabled }}
- name: appinsights
  csi:
    driver: secrets-store.csi.k8s.io
    readOnly: true
    volumeAttributes:
      secretProviderClass: {{ include "fraud-detection.appInsightsSecretProviderClass" . }}
{{- else if $ai.enabled }}
- name: appinsights
  secret:
    secretName: {{ required "appInsights.enabled needs appInsights.existingSecret or appInsights.keyVault.enabled" $ai.existingSecret | quote }}
    items:
      - key: {{ $ai.secretKey | quote }}
        path: {{ $ai.secretKey | quote }}
{{- end }}
{{- end }}
