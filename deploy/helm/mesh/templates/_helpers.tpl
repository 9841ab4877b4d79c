{{- define "mesh.labels" -}}
app: meshd
app.kubernetes.io/name: meshd
app.kubernetes.io/part-of: mesh
app.kubernetes.io/version: {{ .Values.global.tag | quote }}
{{- end }}
