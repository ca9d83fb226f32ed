{{/* Names are cut to 63 characters, the limit of DNS labels. */}}
{{- define "coffer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "coffer.fullname" -}}
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

{{/* Component helpers take (dict "root" $ "component" "api"|"worker"|"migrate"). */}}
{{- define "coffer.componentName" -}}
{{- printf "%s-%s" (include "coffer.fullname" .root | trunc 55 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "coffer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coffer.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "coffer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "coffer.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "coffer.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The database URL, from its Secret: every pod needs it. */}}
{{- define "coffer.databaseEnv" -}}
- name: BLNK_DATA_SOURCE_DNS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
{{- end -}}

{{/* What the schema cannot say: secure mode needs the master key's Secret,
     and a ServiceMonitor then needs the /metrics bearer token. */}}
{{- define "coffer.checks" -}}
{{- if and .Values.auth.secure (not .Values.auth.secretKey.existingSecret) -}}
{{- fail "auth.secure is on (the chart's default) but auth.secretKey.existingSecret is empty: create a Secret holding the master key, e.g. kubectl create secret generic coffer-master-key --from-literal=secret-key=\"$(openssl rand -hex 32)\", and name it in auth.secretKey.existingSecret (its key in auth.secretKey.key, default secret-key); or turn secure mode off explicitly with auth.secure=false" -}}
{{- end -}}
{{- if and .Values.auth.secure .Values.metrics.serviceMonitor.enabled (not .Values.metrics.bearerToken.existingSecret) -}}
{{- fail "metrics.serviceMonitor.enabled with auth.secure on needs metrics.bearerToken.existingSecret: in secure mode /metrics without a bearer token answers 403 (AUTH_METRICS_DISABLED)" -}}
{{- end -}}
{{- end -}}

{{/* Environment of the API and worker containers; takes a component context. */}}
{{- define "coffer.env" -}}
{{- $v := .root.Values -}}
- name: COFFER_CONFIG
  value: /etc/coffer/blnk.json
# The hook Job migrates; a second migrator at start-up would only wait on it.
- name: COFFER_AUTO_MIGRATE
  value: "false"
{{ include "coffer.databaseEnv" .root }}
- name: BLNK_REDIS_DNS
  valueFrom:
    secretKeyRef:
      name: {{ $v.redis.existingSecret }}
      key: {{ $v.redis.urlKey }}
# Secure mode, and the master key from its Secret: the API checks X-Blnk-Key
# with it; the workers need it too (they will sign webhooks with it).
- name: BLNK_SERVER_SECURE
  value: {{ $v.auth.secure | toString | quote }}
{{- with $v.auth.secretKey.existingSecret }}
- name: BLNK_SERVER_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.auth.secretKey.key }}
{{- end }}
{{- if eq .component "api" }}
{{- with $v.rateLimit.requestsPerSecond }}
- name: BLNK_RATE_LIMIT_RPS
  value: {{ int64 . | toString | quote }}
{{- end }}
{{- with $v.rateLimit.burst }}
- name: BLNK_RATE_LIMIT_BURST
  value: {{ int64 . | toString | quote }}
{{- end }}
{{- with $v.rateLimit.cleanupIntervalSec }}
- name: BLNK_RATE_LIMIT_CLEANUP_INTERVAL_SEC
  value: {{ int64 . | toString | quote }}
{{- end }}
{{- with $v.trustedProxies }}
- name: COFFER_TRUSTED_PROXIES
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- with $v.typesense.url }}
- name: BLNK_TYPESENSE_DNS
  value: {{ . | quote }}
{{- end }}
{{- with $v.typesense.apiKey.existingSecret }}
- name: BLNK_TYPESENSE_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.typesense.apiKey.key }}
{{- end }}
{{- with $v.metrics.bearerToken.existingSecret }}
- name: BLNK_METRICS_BEARER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.metrics.bearerToken.key }}
{{- end }}
{{- with $v.tokenization.secret.existingSecret }}
- name: BLNK_TOKENIZATION_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.tokenization.secret.key }}
{{- end }}
{{- with $v.accountNumbers.authorization.existingSecret }}
- name: BLNK_ACCOUNT_NUMBER_GENERATION_HTTP_SERVICE_AUTHORIZATION
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.accountNumbers.authorization.key }}
{{- end }}
{{- with $v.tracing.otlpEndpoint }}
# Service names (coffer, coffer-worker) are set by the binary.
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- /* Events: the API writes them (for the webhook's subscription), the
       workers deliver them; the headers and the delivery settings only in
       the workers. */}}
{{- with $v.webhook.url }}
- name: BLNK_WEBHOOK_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.webhook.events }}
- name: BLNK_WEBHOOK_EVENTS
  value: {{ join "," . | quote }}
{{- end }}
- name: COFFER_ALLOW_PRIVATE_HOOK_URLS
  value: {{ $v.hooks.allowPrivateUrls | toString | quote }}
{{- if eq .component "worker" }}
{{- with $v.webhook.headers.existingSecret }}
- name: BLNK_WEBHOOK_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.webhook.headers.key }}
{{- end }}
{{- $numbers := dict
      "COFFER_WEBHOOK_TIMEOUT_MS" $v.webhook.timeoutMs
      "COFFER_WEBHOOK_CONCURRENCY" $v.webhook.concurrency
      "COFFER_OUTBOX_BATCH_SIZE" $v.outbox.batchSize
      "COFFER_OUTBOX_POLL_INTERVAL_MS" $v.outbox.pollIntervalMs
      "COFFER_OUTBOX_ATTEMPTS_MAX" $v.outbox.attemptsMax
      "COFFER_OUTBOX_BACKOFF_BASE_MS" $v.outbox.backoffBaseMs
      "COFFER_OUTBOX_BACKOFF_CAP_MS" $v.outbox.backoffCapMs
      "COFFER_OUTBOX_LEASE_MS" $v.outbox.leaseMs
      "COFFER_OUTBOX_RETENTION_MS" $v.outbox.retentionMs
      "COFFER_OUTBOX_BREAKER_FAILURES" $v.outbox.breakerFailures
      "COFFER_OUTBOX_BREAKER_COOLDOWN_MS" $v.outbox.breakerCooldownMs
      "COFFER_OUTBOX_BREAKER_COOLDOWN_CAP_MS" $v.outbox.breakerCooldownCapMs
      "COFFER_OUTBOX_HEALTH_LAG_MS" $v.outbox.healthLagMs
      "COFFER_OUTBOX_HEALTH_DEAD_MAX" $v.outbox.healthDeadMax }}
{{- range $name := keys $numbers | sortAlpha }}
{{- $value := index $numbers $name }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ int64 $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with (index $v .component).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
