{{- define "lbc.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "lbc.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lbc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "lbc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lbc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lbc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook objects are named after the chart without "-controller": aws-load-balancer-webhook. */}}
{{- define "lbc.prefix" -}}
{{- .Chart.Name | trimSuffix "-controller" }}
{{- end }}

{{- define "lbc.webhookService" -}}
{{- include "lbc.prefix" . }}-webhook-service
{{- end }}

{{- define "lbc.webhookSecret" -}}
{{- include "lbc.prefix" . }}-tls
{{- end }}

{{/*
The webhook's TLS material, base64-encoded, as YAML (ca, cert, key): given in
webhookTLS; else, with keepTLSSecret, what the Secret already holds; else a
new CA and a serving certificate for the webhook Service's DNS names.
*/}}
{{- define "lbc.webhookTLS" -}}
{{- $service := include "lbc.webhookService" . }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "lbc.webhookSecret" .) }}
{{- if and .Values.webhookTLS.caCert .Values.webhookTLS.cert .Values.webhookTLS.key }}
ca: {{ .Values.webhookTLS.caCert | b64enc }}
cert: {{ .Values.webhookTLS.cert | b64enc }}
key: {{ .Values.webhookTLS.key | b64enc }}
{{- else if and .Values.keepTLSSecret $existing }}
ca: {{ index $existing.data "ca.crt" }}
cert: {{ index $existing.data "tls.crt" }}
key: {{ index $existing.data "tls.key" }}
{{- else }}
{{- $names := list (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.%s" $service .Release.Namespace .Values.cluster.dnsDomain) }}
{{- $ca := genCA (printf "%s-ca" .Chart.Name) 3650 }}
{{- $serving := genSignedCert (include "lbc.fullname" .) nil $names 3650 $ca }}
ca: {{ $ca.Cert | b64enc }}
cert: {{ $serving.Cert | b64enc }}
key: {{ $serving.Key | b64enc }}
{{- end }}
{{- end }}

{{/* One webhook's clientConfig: the webhook Service at PATH, trusting the chart's CA. */}}
{{- define "lbc.clientConfig" -}}
clientConfig:
  caBundle: {{ .ca }}
  service:
    name: {{ include "lbc.webhookService" .root }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
{{- end }}

{{/* Leaves the controller's own objects alone. */}}
{{- define "lbc.notSelf" -}}
- key: app.kubernetes.io/name
  operator: NotIn
  values: [{{ .Chart.Name }}]
{{- end }}
