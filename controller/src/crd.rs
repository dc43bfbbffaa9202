//! agentmesh's own Kubernetes kinds (group `agentmesh.dev`, version `v1alpha1`):
//! `AgentBackend` and `AgentPolicy`, as Rust types from which the CRD schemas are
//! generated (`agentmesh-controller crds`, checked in under `charts/agentmesh/crds/`).
//!
//! Every struct refuses unknown fields, so a misspelt field is an `Accepted=False`
//! condition naming it, never a silently ignored setting. What serde cannot check (one of
//! several fields set, value ranges, durations) is checked by [`AgentBackendSpec::validate`]
//! and [`AgentPolicySpec::validate`], which name the field at fault the same way.
//!
//! This module only describes and validates objects; turning them into proxy resources
//! is `translate::agent`'s job.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of agentmesh's kinds.
pub const GROUP: &str = "agentmesh.dev";
/// The API version of agentmesh's kinds.
pub const VERSION: &str = "v1alpha1";

/// An upstream that agents reach through agentmesh. Exactly one kind is set: today an
/// MCP federation (`mcp`); LLM providers and A2A agents will be further kinds.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "agentmesh.dev",
    version = "v1alpha1",
    kind = "AgentBackend",
    doc = "An upstream that agents reach through agentmesh: an MCP federation (LLM and A2A later).",
    namespaced,
    status = "AgentStatus",
    shortname = "ab",
    category = "agentmesh",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentBackendSpec {
    /// An MCP gateway endpoint federating MCP servers: clients see one server whose
    /// tools, prompts and resources are those of every target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpFederation>,
}

/// The kind of an [`AgentBackend`], as a closed set (the spec spells it as one optional
/// field per kind, as Kubernetes APIs do).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AgentBackendKind<'a> {
    /// An MCP federation.
    Mcp(&'a McpFederation),
}

impl AgentBackendSpec {
    /// The backend's kind, or which field is wrong.
    pub fn kind(&self) -> Result<AgentBackendKind<'_>, FieldError> {
        match &self.mcp {
            Some(mcp) => Ok(AgentBackendKind::Mcp(mcp)),
            None => Err(FieldError::new(
                "spec",
                "one backend kind must be set (today: `mcp`)",
            )),
        }
    }

    /// Checks what the schema cannot: a kind is set, targets and selectors are
    /// well-formed, durations parse.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self.kind()? {
            AgentBackendKind::Mcp(mcp) => mcp.validate("spec.mcp"),
        }
    }
}

/// An MCP federation: static targets by URL and/or targets selected from Services.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpFederation {
    /// MCP servers given by URL. Their order breaks ties when names are not prefixed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<McpStaticTarget>,
    /// Services of the AgentBackend's namespace whose ports serve MCP. Each matching
    /// Service port becomes a target (after the static ones, in Service name order),
    /// named after the Service (`<service>-<port>` when several of its ports match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<McpServiceSelector>,
    /// When tool and prompt names carry their target's name. Default `WhenMultiple`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_mode: Option<McpPrefixMode>,
    /// What a request fanned out to every target does when one fails. Default
    /// `FailClosed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<McpFailureMode>,
    /// Browser origins allowed to call the endpoint (`https://app.example.com`, or `*`).
    /// Requests with any other non-loopback `Origin` are refused (DNS-rebinding
    /// protection). Agents and SDK clients send no `Origin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// How long a client session may stay unused before it ends, as a Gateway API
    /// duration (`30m`, `1h`, `90s`). Default `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_idle_timeout: Option<String>,
}

impl McpFederation {
    fn validate(&self, at: &str) -> Result<(), FieldError> {
        if self.targets.is_empty() && self.service_selectors.is_empty() {
            return Err(FieldError::new(
                at,
                "set `targets`, `serviceSelectors` or both: a federation needs servers",
            ));
        }
        for (i, t) in self.targets.iter().enumerate() {
            let field = format!("{at}.targets[{i}]");
            if !valid_target_name(&t.name) {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    format!("{:?} must be 1-63 characters among a-z, 0-9 and -", t.name),
                ));
            }
            if self.targets[..i].iter().any(|o| o.name == t.name) {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    format!("{:?} is used by another target", t.name),
                ));
            }
            if !(t.url.starts_with("http://") || t.url.starts_with("https://")) {
                return Err(FieldError::new(
                    format!("{field}.url"),
                    format!("{:?} must be an http:// or https:// URL", t.url),
                ));
            }
        }
        for (i, s) in self.service_selectors.iter().enumerate() {
            let field = format!("{at}.serviceSelectors[{i}]");
            if s.match_labels.is_empty() && s.app_protocol.is_none() {
                return Err(FieldError::new(
                    field,
                    "set `matchLabels`, `appProtocol` or both (an empty selector would take every Service)",
                ));
            }
            if let Some(port) = s.port
                && !(1..=65535).contains(&port)
            {
                return Err(FieldError::new(
                    format!("{field}.port"),
                    format!("{port} is not a port (1-65535)"),
                ));
            }
            if let Some(path) = &s.path
                && !path.starts_with('/')
            {
                return Err(FieldError::new(
                    format!("{field}.path"),
                    format!("{path:?} must start with `/`"),
                ));
            }
        }
        if let Some(d) = &self.session_idle_timeout {
            parse_duration(d)
                .map_err(|e| FieldError::new(format!("{at}.sessionIdleTimeout"), e))?;
        }
        Ok(())
    }
}

/// An MCP server given by URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpStaticTarget {
    /// Name of the target, unique in the backend: 1-63 characters among `a-z`, `0-9`
    /// and `-`. It prefixes the target's tool and prompt names (`<name>_<tool>`).
    pub name: String,
    /// Streamable HTTP endpoint, for example `http://github-mcp.tools:8080/mcp`.
    pub url: String,
}

/// Selects Service ports serving MCP, in the AgentBackend's namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpServiceSelector {
    /// Labels the Service must carry (all of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// The `appProtocol` a Service port must declare, for example `agentmesh.dev/mcp`.
    /// When set, only ports declaring it are taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// The Service port to use. Unset: the ports declaring `appProtocol` when it is set,
    /// else the Service's only port (a Service with several ports must then be chosen by
    /// `port` or `appProtocol`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The MCP endpoint's path on the Service. Default `/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// When names carry the target's name as a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum McpPrefixMode {
    /// Prefix only when the backend has more than one target.
    WhenMultiple,
    /// Always prefix.
    Always,
    /// Never prefix; on a clash the first target owns the name.
    Never,
}

/// What a fanned-out request does when a target fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum McpFailureMode {
    /// The whole request fails, naming the target.
    FailClosed,
    /// The failing target is left out of the answer.
    FailOpen,
}

/// Traffic policies attached to Gateways, HTTPRoutes or AgentBackends (`targetRefs`), or
/// to the sidecars of selected pods (`workloadSelector`).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "agentmesh.dev",
    version = "v1alpha1",
    kind = "AgentPolicy",
    doc = "Traffic policies for Gateways, HTTPRoutes and AgentBackends, or for the sidecars of selected pods.",
    namespaced,
    status = "AgentStatus",
    shortname = "ap",
    category = "agentmesh",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentPolicySpec {
    /// What the policy attaches to, in the policy's namespace: a `Gateway` or
    /// `HTTPRoute` (group `gateway.networking.k8s.io`) or an `AgentBackend` (group
    /// `agentmesh.dev`). With `workloadSelector`, only `AgentBackend` targets are
    /// allowed: the policy then applies to the selected pods' traffic to those backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetRef>,
    /// Pods (in the policy's namespace) whose sidecars apply this policy. `{}` selects
    /// every pod of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// What the policy does to HTTP traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficPolicy>,
    /// Sidecar pods only: what happens to captured traffic that no route claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundPolicy>,
}

impl AgentPolicySpec {
    /// Checks what the schema cannot, naming the field at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.target_refs.is_empty() && self.workload_selector.is_none() {
            return Err(FieldError::new(
                "spec",
                "set `targetRefs`, `workloadSelector` or both: the policy attaches to nothing",
            ));
        }
        if self.traffic.is_none() && self.outbound.is_none() {
            return Err(FieldError::new(
                "spec",
                "set `traffic`, `outbound` or both: the policy does nothing",
            ));
        }
        for (i, t) in self.target_refs.iter().enumerate() {
            let field = format!("spec.targetRefs[{i}]");
            let known = matches!(
                (t.group.as_str(), t.kind.as_str()),
                (crate::objects::GATEWAY_GROUP, "Gateway" | "HTTPRoute") | (GROUP, "AgentBackend")
            );
            if !known {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{}/{} is not a kind a policy attaches to (Gateway, HTTPRoute of {}; AgentBackend of {GROUP})",
                        t.group,
                        t.kind,
                        crate::objects::GATEWAY_GROUP
                    ),
                ));
            }
            if self.workload_selector.is_some() && t.kind != "AgentBackend" {
                return Err(FieldError::new(
                    format!("{field}.kind"),
                    format!(
                        "{} cannot be combined with workloadSelector (only AgentBackend can)",
                        t.kind
                    ),
                ));
            }
        }
        if let Some(selector) = &self.workload_selector {
            selector.validate("spec.workloadSelector")?;
        }
        if self.outbound.is_some() && self.workload_selector.is_none() {
            return Err(FieldError::new(
                "spec.outbound",
                "applies to sidecars only: set `workloadSelector` too",
            ));
        }
        if let Some(traffic) = &self.traffic {
            traffic.validate("spec.traffic")?;
        }
        if let Some(outbound) = &self.outbound {
            outbound.validate("spec.outbound")?;
        }
        Ok(())
    }
}

/// A reference to the object a policy attaches to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetRef {
    /// `gateway.networking.k8s.io` or `agentmesh.dev`.
    pub group: String,
    /// `Gateway`, `HTTPRoute` or `AgentBackend`.
    pub kind: String,
    /// Name of the object, in the policy's namespace.
    pub name: String,
}

/// A label selector on pods, as in Kubernetes (`matchLabels` and `matchExpressions`
/// must all hold).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels the pod must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Further conditions on the pod's labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelExpression>,
}

impl WorkloadSelector {
    /// Whether a pod with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    LabelOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    LabelOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Whether the selector selects every pod of the namespace (`{}`).
    pub fn is_namespace_wide(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    fn validate(&self, at: &str) -> Result<(), FieldError> {
        for (i, e) in self.match_expressions.iter().enumerate() {
            let needs_values = matches!(e.operator, LabelOperator::In | LabelOperator::NotIn);
            if needs_values == e.values.is_empty() {
                return Err(FieldError::new(
                    format!("{at}.matchExpressions[{i}].values"),
                    if needs_values {
                        "In and NotIn need at least one value"
                    } else {
                        "Exists and DoesNotExist take no values"
                    },
                ));
            }
        }
        Ok(())
    }
}

/// One condition of a [`WorkloadSelector`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelExpression {
    /// The label key.
    pub key: String,
    /// How the label's value is compared.
    pub operator: LabelOperator,
    /// The values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LabelOperator {
    /// The label has one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// HTTP traffic policies (the proxy's `PolicySpec`). Any combination may be set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Changes to request headers before they go upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,
    /// Changes to response headers before they go to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,
    /// Time limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Retries of failed upstream attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Cross-origin resource sharing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Answer with a fixed response instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
}

impl TrafficPolicy {
    fn validate(&self, at: &str) -> Result<(), FieldError> {
        for (name, m) in [
            ("requestHeaders", &self.request_headers),
            ("responseHeaders", &self.response_headers),
        ] {
            if let Some(m) = m {
                m.validate(&format!("{at}.{name}"))?;
            }
        }
        if let Some(t) = &self.timeouts {
            for (name, d) in [
                ("request", &t.request),
                ("backendRequest", &t.backend_request),
            ] {
                if let Some(d) = d {
                    parse_duration(d)
                        .map_err(|e| FieldError::new(format!("{at}.timeouts.{name}"), e))?;
                }
            }
        }
        if let Some(r) = &self.retry {
            if let Some(b) = &r.backoff {
                parse_duration(b).map_err(|e| FieldError::new(format!("{at}.retry.backoff"), e))?;
            }
            if let Some((i, c)) = r
                .codes
                .iter()
                .enumerate()
                .find(|(_, c)| !(400..=599).contains(*c))
            {
                return Err(FieldError::new(
                    format!("{at}.retry.codes[{i}]"),
                    format!("{c} is not an error status (400-599)"),
                ));
            }
        }
        if let Some(c) = &self.cors
            && let Some(d) = &c.max_age
        {
            parse_duration(d).map_err(|e| FieldError::new(format!("{at}.cors.maxAge"), e))?;
        }
        if let Some(d) = &self.direct_response
            && !(200..=599).contains(&d.status)
        {
            return Err(FieldError::new(
                format!("{at}.directResponse.status"),
                format!("{} is not a status code (200-599)", d.status),
            ));
        }
        Ok(())
    }
}

/// Header changes, applied in the order set, add, remove.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Headers set, replacing existing values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<Header>,
    /// Headers appended, keeping existing values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<Header>,
    /// Names of headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModifier {
    fn validate(&self, at: &str) -> Result<(), FieldError> {
        let names = self
            .set
            .iter()
            .map(|h| ("set", h.name.as_str()))
            .chain(self.add.iter().map(|h| ("add", h.name.as_str())))
            .chain(self.remove.iter().map(|n| ("remove", n.as_str())));
        for (list, name) in names {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(FieldError::new(
                    format!("{at}.{list}"),
                    format!("{name:?} is not a header name"),
                ));
            }
        }
        Ok(())
    }
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Time limits, as Gateway API durations (`10s`, `500ms`, `1m30s`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// The whole request, across retries, until the response head (504 after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Each attempt to a backend, until its response head (504 after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// Retries of a failed attempt (only requests whose body can be replayed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Wait before the first retry, doubled for each further one. Default `25ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// Statuses that cause a retry. Default 502, 503, 504.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u32>,
}

/// Cross-origin resource sharing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins: exact, `*`, or with a wildcard host (`https://*.example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// Methods allowed in preflight requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed in preflight requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to the browser.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Allow credentials (cookies, authorization).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a preflight answer may be cached (`1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// A fixed response answered by the proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponse {
    /// Status code (200-599).
    pub status: u32,
    /// Body, sent as `text/plain`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// What a sidecar does with captured traffic no route claims.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundPolicy {
    /// The decision when no rule of `egress` matches: `Allow` (passthrough, the
    /// default) or `Deny` (HTTP 403, TLS and TCP reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<OutboundAction>,
    /// Decisions by destination, tried in order; the first match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

impl OutboundPolicy {
    fn validate(&self, at: &str) -> Result<(), FieldError> {
        for (i, rule) in self.egress.iter().enumerate() {
            let field = format!("{at}.egress[{i}]");
            if rule.name.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    "must not be empty",
                ));
            }
            for (j, a) in rule.addresses.iter().enumerate() {
                let (ip, bits) = a.split_once('/').unwrap_or((a, ""));
                let max = match ip.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(_)) => 32,
                    Ok(std::net::IpAddr::V6(_)) => 128,
                    Err(_) => 0,
                };
                let ip_ok = max > 0;
                let bits_ok = bits.is_empty() || bits.parse::<u8>().is_ok_and(|b| b <= max);
                if !(ip_ok && bits_ok) {
                    return Err(FieldError::new(
                        format!("{field}.addresses[{j}]"),
                        format!("{a:?} is not an IP address or CIDR network"),
                    ));
                }
            }
            if let Some((j, p)) = rule
                .ports
                .iter()
                .enumerate()
                .find(|(_, p)| !(1..=65535).contains(*p))
            {
                return Err(FieldError::new(
                    format!("{field}.ports[{j}]"),
                    format!("{p} is not a port (1-65535)"),
                ));
            }
            let tls = rule.tls.unwrap_or_default();
            if tls == EgressTls::Intercept && rule.action != OutboundAction::Allow {
                return Err(FieldError::new(
                    format!("{field}.tls"),
                    "`Intercept` needs `action: Allow` (denied traffic is never decrypted)",
                ));
            }
            if let Some(bundle) = &rule.ca_bundle {
                if tls != EgressTls::Intercept {
                    return Err(FieldError::new(
                        format!("{field}.caBundle"),
                        "only applies with `tls: Intercept`",
                    ));
                }
                let certs: Vec<_> = rustls_pemfile::certs(&mut bundle.as_bytes()).collect();
                if certs.is_empty() || certs.iter().any(Result::is_err) {
                    return Err(FieldError::new(
                        format!("{field}.caBundle"),
                        "must be PEM text holding one or more certificates",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Allow or refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OutboundAction {
    /// Let the connection through to its original destination.
    Allow,
    /// Refuse it.
    Deny,
}

/// A decision about captured traffic by destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// Name of the rule, for logs.
    pub name: String,
    /// TLS SNI or HTTP Host, exact or wildcard (`*.openai.com`). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Original destination addresses or CIDR networks. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Original destination ports. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u32>,
    /// What to do with matching traffic.
    pub action: OutboundAction,
    /// How the sidecar handles TLS to matching destinations: `Passthrough` (the
    /// default: only the SNI is read) or `Intercept` (the sidecar terminates the app's
    /// TLS with a certificate from the mesh CA, applies L7 policy, and re-encrypts to the
    /// real server). `Intercept` needs `action: Allow`; the pod's app must trust the
    /// mesh root (annotation `agentmesh.dev/egress-tls: intercept` has the injector mount
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EgressTls>,
    /// With `tls: Intercept`: PEM text of the CA certificates the sidecar verifies the
    /// real server with when it re-encrypts, instead of the web PKI roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// How a sidecar handles TLS to an egress rule's destinations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EgressTls {
    /// Pass the app's TLS through untouched (SNI-level policy only).
    #[default]
    Passthrough,
    /// Terminate the app's TLS with a mesh CA certificate, govern the HTTP inside, and
    /// re-encrypt to the real server.
    Intercept,
}

/// The status of an agentmesh object: its conditions (`Accepted`, `ResolvedRefs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Conditions, as `metav1.Condition`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// A field of an object and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {reason}")]
pub struct FieldError {
    /// The field's path, like `spec.mcp.targets[0].url`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Whether `name` is a valid MCP target name (1-63 characters among `a-z`, `0-9`, `-`),
/// as the proxy requires.
pub fn valid_target_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses a Gateway API duration: one to four `<number><unit>` parts with units `h`,
/// `m`, `s`, `ms` (`1h30m`, `500ms`, `10s`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration like `10s`, `500ms` or `1m30s`");
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (std::time::Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (std::time::Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (std::time::Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (std::time::Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * u32::try_from(number).map_err(|_| bad())?;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

/// The CustomResourceDefinitions of agentmesh's kinds, as one multi-document YAML
/// stream (what `agentmesh-controller crds` prints and `charts/agentmesh/crds/` holds).
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    let mut out = String::from(
        "# Generated by `agentmesh-controller crds` from controller/src/crd.rs; do not edit.\n",
    );
    for crd in [AgentBackend::crd(), AgentPolicy::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_gateway_api_format() {
        assert_eq!(
            parse_duration("1m30s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        for bad in ["", "10", "1.5s", "s", "10d", "1h1h1h1h1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn intercept_needs_allow_and_ca_bundle_needs_intercept() {
        let spec = |rule: &str| -> AgentPolicySpec {
            serde_norway::from_str(&format!(
                "workloadSelector: {{}}\noutbound:\n  egress:\n  - {rule}\n"
            ))
            .unwrap()
        };
        let ca = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUYw==\n-----END CERTIFICATE-----";
        assert!(
            spec("{ name: llm, hostnames: [llm], action: Allow, tls: Intercept }")
                .validate()
                .is_ok()
        );
        let err = spec("{ name: llm, action: Deny, tls: Intercept }")
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "spec.outbound.egress[0].tls");
        assert!(err.reason.contains("action: Allow"), "{err}");
        let err = spec(&format!("{{ name: llm, action: Allow, caBundle: {ca:?} }}"))
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "spec.outbound.egress[0].caBundle");
        let err = spec("{ name: llm, action: Allow, tls: Intercept, caBundle: not pem }")
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "spec.outbound.egress[0].caBundle");
        assert!(err.reason.contains("PEM"), "{err}");
        let err = serde_norway::from_str::<AgentPolicySpec>(
            "outbound: { egress: [{ name: x, action: Allow, tls: Originate }] }",
        )
        .unwrap_err();
        assert!(err.to_string().contains("Originate"), "{err}");
    }

    #[test]
    fn selector_matches_labels_and_expressions() {
        let labels: BTreeMap<String, String> =
            [("app".into(), "agent".into()), ("tier".into(), "a".into())].into();
        let mut s = WorkloadSelector::default();
        assert!(s.matches(&labels) && s.is_namespace_wide());
        s.match_labels.insert("app".into(), "agent".into());
        assert!(s.matches(&labels));
        s.match_expressions.push(LabelExpression {
            key: "tier".into(),
            operator: LabelOperator::NotIn,
            values: vec!["a".into()],
        });
        assert!(!s.matches(&labels));
    }
}
