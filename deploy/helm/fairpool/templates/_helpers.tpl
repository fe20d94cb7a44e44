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
{{/* A URL from the Secret is read from a mounted file, which the kubelet refreshes when
the Secret changes and the programs read again for each new connection: a rotated
password needs no restart (an environment variable holding the URL is set once, when the
pod starts). No subPath: the kubelet does not refresh a file mounted with one. Given as
the environment, not an argument, so a command run in the pod (`kubectl exec ... fairpool
meter --from ...`, docs/install.md) uses the same ledger. */}}
{{- define "fairpool.ledgerEnv" -}}
{{- if .Values.ledger.existingSecret }}
- name: FAIRPOOL_LEDGER_URL_FILE
  value: /etc/fairpool/ledger-url/url
{{- else }}
- name: FAIRPOOL_LEDGER
  value: sqlite:////var/lib/fairpool/ledger/fairpool-ledger.db
{{- end }}
{{- end -}}

{{- define "fairpool.ledgerMount" -}}
{{- if .Values.ledger.existingSecret }}
- {name: ledger-url, mountPath: /etc/fairpool/ledger-url, readOnly: true}
{{- end }}
{{- end -}}

{{- define "fairpool.ledgerVolume" -}}
{{- if .Values.ledger.existingSecret }}
- name: ledger-url
  secret:
    secretName: {{ .Values.ledger.existingSecret }}
    items: [{key: {{ .Values.ledger.secretKey | quote }}, path: url}]
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
was left failed with the objects applied before it changed. The chart now leaves an
existing claim alone (templates/volumes.yaml), so another class would be silently not
applied: refused here first, naming the value. Arguments: the root, the claim's name, the
value's path and its value. */}}
{{- define "fairpool.checkClaimClass" -}}
{{- $root := index . 0 -}}
{{- $claim := index . 1 -}}
{{- $path := index . 2 -}}
{{- $wanted := index . 3 -}}
{{- $existing := lookup "v1" "PersistentVolumeClaim" $root.Release.Namespace $claim -}}
{{- if and $wanted $existing -}}
{{- $class := $existing.spec.storageClassName | default "" -}}
{{- if ne $class $wanted -}}
{{- $has := ternary "no storage class" (printf "storage class %q" $class) (eq $class "") -}}
{{- $keep := ternary "leave it empty" (printf "keep %q" $class) (eq $class "") -}}
{{- fail (printf "%s: the PersistentVolumeClaim %s exists with %s, and the chart does not change a claim it made (a rollback could not undo it): %s, or copy the data to a claim of another name" $path $claim $has $keep) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A Kubernetes quantity (values.schema.json's "quantity": 512Mi, 1.5Gi, 2e9...) as a
number, to compare a claim's size with the one the values ask for: the API server writes
a claim's size its own way (1024Mi as 1Gi). */}}
{{- define "fairpool.quantity" -}}
{{- $text := toString . -}}
{{- $number := regexFind "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" $text -}}
{{- $suffix := trimPrefix $number $text -}}
{{- $units := dict "" 1.0 "n" 1e-9 "u" 1e-6 "m" 1e-3 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- $value := float64 $number -}}
{{- if hasKey $units $suffix -}}
{{- $value = mulf $value (get $units $suffix) -}}
{{- else -}}
{{- $exponent := int (substr 1 -1 $suffix) -}}
{{- /* until counts down for a negative count: one loop per sign. */ -}}
{{- if gt $exponent 0 -}}
{{- range until $exponent -}}
{{- $value = mulf $value 10 -}}
{{- end -}}
{{- else -}}
{{- range until (sub 0 $exponent | int) -}}
{{- $value = divf $value 10 -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $value -}}
{{- end -}}

{{/* The chart makes each claim once, as a hook, and never changes it: the claim is no
part of a release's manifest, so an upgrade or a `helm rollback` to a revision rendered
with another size or class leaves it as it is (the API server refused the patch of an
immutable claim mid-rollback, "spec is immutable after creation", leaving the release
failed and half rolled back). A size other than the existing claim's is refused here, as
the class is (fairpool.checkClaimClass), rather than silently not applied. Arguments: the
root, the claim's name, the value's path and its value. */}}
{{- define "fairpool.checkClaimSize" -}}
{{- $root := index . 0 -}}
{{- $claim := index . 1 -}}
{{- $path := index . 2 -}}
{{- $wanted := toString (index . 3) -}}
{{- $existing := lookup "v1" "PersistentVolumeClaim" $root.Release.Namespace $claim -}}
{{- if $existing -}}
{{- $size := toString $existing.spec.resources.requests.storage -}}
{{- $have := include "fairpool.quantity" $size | float64 -}}
{{- $want := include "fairpool.quantity" $wanted | float64 -}}
{{- if lt $want $have -}}
{{- fail (printf "%s: the PersistentVolumeClaim %s holds %s, and a claim cannot shrink: set %s to %s" $path $claim $size $path $size) -}}
{{- else if gt $want $have -}}
{{- fail (printf "%s: the PersistentVolumeClaim %s holds %s; the chart does not change a claim it made (a rollback could not undo it): grow it with `kubectl -n %s patch pvc %s -p '{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"%s\"}}}}'` (its storage class must allow volume expansion), then upgrade with %s %s" $path $claim $size $root.Release.Namespace $claim $wanted $path $wanted) -}}
{{- end -}}
{{- end -}}
{{- end -}}
