{{/* Names: every object is <release>-fairpool-<part>, or <fullnameOverride>-<part>. */}}
{{- define "fairpool.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fairpool.labels" -}}
app.kubernetes.io/name: fairpool
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: fairpool
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fairpool.selector" -}}
app.kubernetes.io/name: fairpool
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fairpool.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "fairpool.scheduler" -}}{{ include "fairpool.fullname" . }}-scheduler{{- end -}}
{{- define "fairpool.meter" -}}{{ include "fairpool.fullname" . }}-meter{{- end -}}
{{- define "fairpool.ledgerClaim" -}}{{ include "fairpool.fullname" . }}-ledger{{- end -}}
{{- define "fairpool.reportsClaim" -}}{{ include "fairpool.fullname" . }}-reports{{- end -}}
{{- define "fairpool.usageHistory" -}}{{ include "fairpool.fullname" . }}-usage-history{{- end -}}

{{/* The API is served when a tokens Secret is named. */}}
{{- define "fairpool.apiEnabled" -}}
{{- if .Values.api.tokensSecret -}}true{{- end -}}
{{- end -}}

{{/* The Secret holding the API's certificate: the user's, or cert-manager's. */}}
{{- define "fairpool.apiTLSSecret" -}}
{{- if .Values.api.tls.existingSecret -}}
{{- .Values.api.tls.existingSecret -}}
{{- else if .Values.api.tls.certManager.enabled -}}
{{- include "fairpool.fullname" . }}-api-tls
{{- end -}}
{{- end -}}

{{/* SQLite on a volume unless a ledger URL Secret is named. */}}
{{- define "fairpool.sqliteLedger" -}}
{{- if not .Values.ledger.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* "auto" -> whether the cluster serves monitoring.coreos.com/v1. */}}
{{- define "fairpool.monitoringOn" -}}
{{- $setting := toString (index . 0) -}}
{{- $root := index . 1 -}}
{{- if eq $setting "true" -}}true
{{- else if and (eq $setting "auto") ($root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}true
{{- else if not (has $setting (list "true" "false" "auto")) -}}
{{- fail (printf "monitoring: enabled must be auto, true or false, not %q" $setting) -}}
{{- end -}}
{{- end -}}

{{/* The ledger's URL and working folder, shared by the scheduler and the meter. */}}
{{- define "fairpool.ledgerEnv" -}}
- name: FAIRPOOL_LEDGER
{{- if .Values.ledger.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.ledger.existingSecret }}
      key: {{ .Values.ledger.secretKey }}
{{- else }}
  value: sqlite:////var/lib/fairpool/ledger/fairpool-ledger.db
{{- end }}
{{- end -}}

{{/* One ReadWriteOnce SQLite volume: every pod that mounts it runs on its node. */}}
{{- define "fairpool.ledgerAffinity" -}}
{{- if and (include "fairpool.sqliteLedger" .) (eq .Values.ledger.sqlite.accessMode "ReadWriteOnce") }}
podAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "fairpool.selector" . | nindent 10 }}
          fairpool.io/ledger-volume: "true"
{{- end }}
{{- end -}}

{{- define "fairpool.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "fairpool.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Refuse an extraArgs entry that gives again a flag the chart sets: the command takes
the last one given, so the chart's own (the port its probes, Service, PodMonitor and
NetworkPolicy use, the Lease that keeps one leader...) was silently overridden.
Arguments: the extraArgs, their values path, and a dict from each flag the chart sets
to the value that sets it. */}}
{{- define "fairpool.checkExtraArgs" -}}
{{- $args := index . 0 -}}
{{- $path := index . 1 -}}
{{- $owned := index . 2 -}}
{{- range $args -}}
{{- $flag := regexReplaceAll "=.*$" (toString .) "" -}}
{{- if hasKey $owned $flag -}}
{{- fail (printf "%s: %q is set by the chart: use %s" $path (toString .) (get $owned $flag)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A claim's storage class cannot change once it exists: the API server refused the
patch mid-upgrade ("spec is immutable after creation"), naming no value, and the release
was left failed with the objects applied before it changed. Refused here first, naming
the value. Arguments: the root, the claim's name, the value's path and its value. */}}
{{- define "fairpool.checkClaimClass" -}}
{{- $root := index . 0 -}}
{{- $claim := index . 1 -}}
{{- $path := index . 2 -}}
{{- $wanted := index . 3 -}}
{{- $existing := lookup "v1" "PersistentVolumeClaim" $root.Release.Namespace $claim -}}
{{- if and $wanted $existing -}}
{{- $class := $existing.spec.storageClassName | default "" -}}
{{- if and $class (ne $class $wanted) -}}
{{- fail (printf "%s: the PersistentVolumeClaim %s exists with storage class %q, and a claim's class cannot change: keep %q, or copy the data to a claim of another name" $path $claim $class $class) -}}
{{- end -}}
{{- end -}}
{{- end -}}
