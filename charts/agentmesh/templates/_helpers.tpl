{{/*
Names and labels shared by the templates. Names are fixed (one installation per
cluster): the injector, the gateways and the docs refer to them.
*/}}

{{/* The controller's Deployment, Service, ServiceAccount, ClusterRole and Lease name. */}}
{{- define "agentmesh.controller" -}}agentmesh-controller{{- end }}

{{/* The MutatingWebhookConfiguration (the controller patches its caBundle by this name). */}}
{{- define "agentmesh.webhookConfiguration" -}}agentmesh-sidecar-injector{{- end }}

{{/* The namespaces never injected: Kubernetes' own, always, and the configured ones. */}}
{{- define "agentmesh.excludedNamespaces" -}}
{{- concat (list "kube-system" "kube-public" "kube-node-lease") .Values.webhook.excludedNamespaces | uniq | toJson }}
{{- end }}

{{/* Labels on every object of the chart. part-of lets the injector recognise our components. */}}
{{- define "agentmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentmesh
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* What selects the controller's pods (never changes between upgrades). */}}
{{- define "agentmesh.controller.selectorLabels" -}}
app.kubernetes.io/name: agentmesh-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of the controller's objects. */}}
{{- define "agentmesh.controller.labels" -}}
{{ include "agentmesh.labels" . }}
app.kubernetes.io/name: agentmesh-controller
app.kubernetes.io/component: controller
{{- end }}

{{/*
An image reference. Call with (dict "root" $ "image" .Values.x.image "name" "agentmesh-x").
*/}}
{{- define "agentmesh.image" -}}
{{- $repository := .image.repository | default (printf "%s/%s" .root.Values.image.registry .name) -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end }}

{{/* The controller's xDS address as proxies in the cluster reach it. */}}
{{- define "agentmesh.xdsAddress" -}}
{{- printf "http://%s.%s.svc:%d" (include "agentmesh.controller" .) .Release.Namespace (int .Values.controller.xds.port) -}}
{{- end }}

{{/* Where the controller writes the certificate it generates for the webhook (an emptyDir). */}}
{{- define "agentmesh.generatedCertDir" -}}/var/run/agentmesh/webhook{{- end }}

{{/*
The arguments that make the controller serve the sidecar injection webhook (every
one of them is checked against the controller's own flags by controller/tests/chart).
*/}}
{{- define "agentmesh.webhookArgs" -}}
- --webhook-addr=0.0.0.0:{{ .Values.webhook.port }}
{{- if eq .Values.webhook.certificate.source "cert-manager" }}
- --webhook-cert-dir={{ .Values.webhook.certificate.mountPath }}
{{- else }}
- --webhook-cert-secret={{ .Values.webhook.certificate.secretName }}
- --webhook-configuration={{ include "agentmesh.webhookConfiguration" . }}
- --webhook-service={{ include "agentmesh.controller" . }}
- --webhook-generated-cert-dir={{ include "agentmesh.generatedCertDir" . }}
{{- end }}
- --proxy-image={{ include "agentmesh.image" (dict "root" . "image" .Values.proxy.image "name" "agentmesh-proxy") }}
- --init-image={{ include "agentmesh.image" (dict "root" . "image" .Values.init.image "name" "agentmesh-init") }}
- --image-pull-policy={{ .Values.image.pullPolicy }}
- --native-sidecar={{ include "agentmesh.nativeSidecar" . }}
- --sidecar-xds-address={{ include "agentmesh.xdsAddress" . }}
- --metrics-addr=0.0.0.0:{{ .Values.controller.metricsPort }}
{{- end }}

{{/*
Whether injected proxies are native sidecars: `injection.nativeSidecar`, where `auto`
means yes on Kubernetes 1.29 and later (the cluster Helm installs into; `helm template`
assumes its own default version unless given `--kube-version`).
*/}}
{{- define "agentmesh.nativeSidecar" -}}
{{- $native := .Values.injection.nativeSidecar -}}
{{- if eq (toString $native) "auto" -}}
{{- semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version -}}
{{- else -}}
{{- $native -}}
{{- end -}}
{{- end }}
