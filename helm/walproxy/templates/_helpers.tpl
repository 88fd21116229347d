{{/* Names, labels and the addresses every template agrees on. */}}

{{- define "walproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "walproxy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "walproxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "walproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: call with (list $ "broker"). */}}
{{- define "walproxy.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "walproxy.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "walproxy.controllerName" -}}{{ include "walproxy.fullname" . }}-controller{{- end -}}
{{- define "walproxy.brokerName" -}}{{ include "walproxy.fullname" . }}-broker{{- end -}}
{{- define "walproxy.controllerHeadless" -}}{{ include "walproxy.controllerName" . }}-headless{{- end -}}
{{- define "walproxy.brokerHeadless" -}}{{ include "walproxy.brokerName" . }}-headless{{- end -}}
{{- define "walproxy.configName" -}}{{ include "walproxy.fullname" . }}-config{{- end -}}

{{- define "walproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "walproxy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* DNS name of pod $i of a StatefulSet behind a headless service: (list $ sts headless i). */}}
{{- define "walproxy.podFqdn" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%d.%s.%s.svc.%s" (index . 1) (index . 3) (index . 2) $root.Release.Namespace $root.Values.clusterDomain -}}
{{- end -}}

{{- define "walproxy.quorumVoters" -}}
{{- $voters := list -}}
{{- range $i := until (int .Values.kafka.controller.replicas) -}}
{{- $voters = append $voters (printf "%d@%s:%d" $i (include "walproxy.podFqdn" (list $ (include "walproxy.controllerName" $) (include "walproxy.controllerHeadless" $) $i)) (int $.Values.kafka.controller.port)) -}}
{{- end -}}
{{- join "," $voters -}}
{{- end -}}

{{/* Environment every container of a broker pod uses to find out who it is. */}}
{{- define "walproxy.podIdentityEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: HEADLESS_SERVICE
  value: {{ include "walproxy.brokerHeadless" . }}
- name: CLUSTER_DOMAIN
  value: {{ .Values.clusterDomain | quote }}
- name: NODE_ID_OFFSET
  value: {{ .Values.kafka.broker.nodeIdOffset | quote }}
- name: WALPROXY_PORT
  value: {{ .Values.walproxy.port | quote }}
{{- end -}}

{{/* walproxy's environment: identity, offload settings, S3 credentials. */}}
{{- define "walproxy.env" -}}
{{ include "walproxy.podIdentityEnv" . }}
{{- with .Values.walproxy.offload }}
- name: WALPROXY_OFFLOAD_ENABLED
  value: {{ .enabled | quote }}
{{- if .enabled }}
- name: WALPROXY_OFFLOAD_TARGET
  value: {{ .target | quote }}
- name: WALPROXY_OFFLOAD_S3_ENDPOINT_URL
  value: {{ .s3EndpointUrl | quote }}
- name: WALPROXY_OFFLOAD_S3_REGION
  value: {{ .s3Region | quote }}
{{- if .s3Region }}
- name: AWS_REGION
  value: {{ .s3Region | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.s3.credentials }}
{{- if .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ .existingSecret }}, key: {{ .accessKeyIdKey }}}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ .existingSecret }}, key: {{ .secretAccessKeyKey }}}}
{{- end }}
{{- end }}
{{- with .Values.walproxy.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "walproxy.walproxyImage" -}}
{{ .Values.walproxy.image.repository }}:{{ .Values.walproxy.image.tag }}
{{- end -}}
{{- define "walproxy.kafkaImage" -}}
{{ .Values.kafka.image.repository }}:{{ .Values.kafka.image.tag }}
{{- end -}}

{{/* A container securityContext: (list $ uid). */}}
{{- define "walproxy.containerSecurityContext" -}}
{{- $root := index . 0 -}}
{{ toYaml $root.Values.containerSecurityContext }}
runAsNonRoot: true
runAsUser: {{ index . 1 }}
{{- end -}}
