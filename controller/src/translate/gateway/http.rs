//! HTTPRoute: each rule of an attached route becomes one proxy route per listener.
//!
//! - Matches: `path` (Exact, PathPrefix, RegularExpression; default PathPrefix `/`),
//!   `method`, `headers` and `queryParams` (Exact or RegularExpression). A rule without
//!   matches takes every request.
//! - Filters and `timeouts` (request, backendRequest) become the route's policy
//!   ([`super::filters`]).
//! - `backendRefs` become weighted backends ([`super::backends`]); one with filters gets a
//!   backend of its own carrying them. When no backend can take a request (none listed,
//!   none resolved, all weights 0) and no filter answers it, the rule answers 500, as the
//!   Gateway API requires. A backendRef that does not resolve is left out of the rotation
//!   and reported in ResolvedRefs.
//! - A rule the proxy could not serve as written (an invalid regex, header name, rewrite)
//!   is dropped and reported (`PartiallyInvalid`, or Accepted=False when no rule is left).

use std::collections::BTreeMap;
use std::str::FromStr;

use agentmesh_proto::config::v1 as pb;
use agentmesh_proxy::http::route::{HostPattern, PathMatcher, anchored};
use gateway_api::apis::standard::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeaders, HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType,
};
use http::HeaderName;

use super::attach::{self, ParentRef};
use super::backends::{self, BackendRef, Grants, RefSide};
use super::filters::{self, RefContext};
use super::{GatewayState, Problem, RouteMeta, RulePlan};
use crate::objects::Objects;
use crate::status::{Condition, StatusReport};

/// The body of the 500 a rule answers when it has no backend to send to.
pub(super) const NO_BACKEND_BODY: &str = "no backend is available for this route\n";

/// A route's `spec.parentRefs` as [`ParentRef`]s: every route kind has its own type for
/// them, all of the same shape.
macro_rules! parent_refs {
    ($refs:expr) => {
        $refs
            .iter()
            .flatten()
            .map(|p| $crate::translate::gateway::attach::ParentRef {
                group: p.group.clone(),
                kind: p.kind.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                section_name: p.section_name.clone(),
                port: p.port,
            })
            .collect::<Vec<_>>()
    };
}
pub(super) use parent_refs;

/// A rule's `backendRefs` (`$refs`, an `Option<Vec<_>>` of the route kind's own type, of
/// the HTTPRoute shape) as [`WeightedRef`]s; a filter that is not an HTTPRoute filter
/// returns its error from the calling function.
macro_rules! weighted_refs {
    ($refs:expr, $field:expr) => {{
        let field: &str = $field;
        let mut refs = Vec::new();
        for (k, b) in $refs.iter().flatten().enumerate() {
            let filters = b
                .filters
                .iter()
                .flatten()
                .enumerate()
                .map(|(f, filter)| {
                    $crate::translate::gateway::filters::as_http_filter(
                        filter,
                        &format!("{field}.backendRefs[{k}].filters[{f}]"),
                    )
                })
                .collect::<Result<Vec<_>, String>>()?;
            refs.push($crate::translate::gateway::http::WeightedRef {
                target: $crate::translate::gateway::backends::BackendRef {
                    group: b.group.as_deref(),
                    kind: b.kind.as_deref(),
                    name: &b.name,
                    namespace: b.namespace.as_deref(),
                    port: b.port,
                },
                weight: b.weight,
                filters,
            });
        }
        refs
    }};
}
pub(super) use weighted_refs;

/// Translates one HTTPRoute onto the Gateways it attaches to, and writes its status.
pub(super) fn translate(
    route: &HttpRoute,
    objects: &Objects,
    grants: &Grants<'_>,
    gateways: &mut [GatewayState],
    status: &mut StatusReport,
) {
    RequestRoute {
        meta: RouteMeta::of("HTTPRoute", &route.metadata),
        hostnames: route.spec.hostnames.as_deref().unwrap_or_default(),
        parents: parent_refs!(route.spec.parent_refs),
        rules: route.spec.rules.as_deref(),
    }
    .translate(rule_plan, objects, grants, gateways, status);
}

/// An HTTPRoute or GRPCRoute, read into what both kinds share; `R` is the kind's rule.
pub(super) struct RequestRoute<'a, R> {
    /// The route's identity.
    pub meta: RouteMeta,
    /// `spec.hostnames`.
    pub hostnames: &'a [String],
    /// `spec.parentRefs`.
    pub parents: Vec<ParentRef>,
    /// `spec.rules`; none (or an empty list) is one default rule.
    pub rules: Option<&'a [R]>,
}

impl<R: Default> RequestRoute<'_, R> {
    /// Plans every rule with `rule_plan`, then attaches the route and writes its status
    /// ([`finish`]).
    pub(super) fn translate(
        self,
        rule_plan: impl Fn(&RouteMeta, usize, &R, &RefContext<'_>) -> Result<RuleOutput, String>,
        objects: &Objects,
        grants: &Grants<'_>,
        gateways: &mut [GatewayState],
        status: &mut StatusReport,
    ) {
        let meta = &self.meta;
        let ctx = RefContext {
            objects,
            grants,
            from: RefSide {
                group: crate::objects::GATEWAY_GROUP,
                kind: meta.kind,
                namespace: &meta.reference.namespace,
            },
        };
        let default_rule = [R::default()];
        let rules = match self.rules {
            None | Some([]) => &default_rule[..],
            Some(rules) => rules,
        };
        let mut t = Translated {
            plans: Vec::new(),
            dropped: Vec::new(),
            ref_problems: Vec::new(),
            backends: BTreeMap::new(),
        };
        for (i, rule) in rules.iter().enumerate() {
            match rule_plan(meta, i, rule, &ctx) {
                Ok(plan) => {
                    t.ref_problems.extend(plan.ref_problems);
                    t.backends.extend(plan.backends);
                    t.plans.push(plan.rule);
                }
                Err(why) => t.dropped.push((i, why)),
            }
        }
        finish(
            meta,
            self.hostnames,
            &self.parents,
            t,
            gateways,
            objects,
            status,
        );
    }
}

/// A route's rules, translated.
pub(super) struct Translated {
    /// Valid rules.
    pub plans: Vec<RulePlan>,
    /// Dropped rules: index and why.
    pub dropped: Vec<(usize, String)>,
    /// References that did not resolve.
    pub ref_problems: Vec<Problem>,
    /// Backends the rules refer to.
    pub backends: BTreeMap<String, pb::Backend>,
}

/// Checks the route's hostnames, attaches it, emits its rules and writes its status
/// (shared by HTTPRoute and GRPCRoute).
pub(super) fn finish(
    meta: &RouteMeta,
    hostnames: &[String],
    parents: &[ParentRef],
    t: Translated,
    gateways: &mut [GatewayState],
    objects: &Objects,
    status: &mut StatusReport,
) {
    let mut valid_hostnames = Vec::new();
    let mut hostname_problem = None;
    for (i, h) in hostnames.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(_) => valid_hostnames.push(h.trim().to_ascii_lowercase()),
            Err(e) => {
                hostname_problem.get_or_insert(format!("spec.hostnames[{i}]: {e}"));
            }
        }
    }
    if hostname_problem.is_some() || t.plans.is_empty() {
        // Nothing to serve: say so to every parent of ours, attach nothing.
        let message = hostname_problem.unwrap_or_else(|| {
            let why = t
                .dropped
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            format!("no rule is valid: {why}")
        });
        let parents = attach::refuse(
            meta,
            parents,
            gateways,
            Condition::no("Accepted", "UnsupportedValue", message, meta.generation),
        );
        super::route_parent_status(meta, parents, 0, &[], &t.ref_problems, status);
        return;
    }
    let (attachments, parent_status) =
        attach::attach(meta, &valid_hostnames, parents, gateways, objects);
    super::emit_rules(meta, &t.plans, &t.backends, &attachments, gateways);
    super::route_parent_status(
        meta,
        parent_status,
        t.plans.len(),
        &t.dropped,
        &t.ref_problems,
        status,
    );
}

/// A valid rule with what it refers to.
pub(super) struct RuleOutput {
    pub rule: RulePlan,
    pub backends: Vec<(String, pb::Backend)>,
    pub ref_problems: Vec<Problem>,
}

/// One weighted backendRef with its own filters, whatever the route kind.
pub(super) struct WeightedRef<'a> {
    pub target: BackendRef<'a>,
    pub weight: Option<i32>,
    pub filters: Vec<HttpRouteRulesFilters>,
}

fn rule_plan(
    meta: &RouteMeta,
    index: usize,
    rule: &HttpRouteRules,
    ctx: &RefContext<'_>,
) -> Result<RuleOutput, String> {
    let field = format!("spec.rules[{index}]");
    let mut matches = Vec::new();
    for (m, r#match) in rule.matches.iter().flatten().enumerate() {
        matches.push(route_match(r#match, &format!("{field}.matches[{m}]"))?);
    }
    let filtered = filters::translate(
        rule.filters.as_deref().unwrap_or_default(),
        &format!("{field}.filters"),
        ctx,
    )?;
    let mut policy = filtered.policy;
    if let Some(t) = &rule.timeouts {
        let request = duration(t.request.as_deref(), &format!("{field}.timeouts.request"))?;
        let backend_request = duration(
            t.backend_request.as_deref(),
            &format!("{field}.timeouts.backendRequest"),
        )?;
        if let (Some(r), Some(b)) = (&request, &backend_request)
            && (b.seconds, b.nanos) > (r.seconds, r.nanos)
        {
            return Err(format!(
                "{field}.timeouts.backendRequest: must not be longer than timeouts.request"
            ));
        }
        if request.is_some() || backend_request.is_some() {
            policy.timeouts = Some(pb::Timeouts {
                request,
                backend_request,
            });
        }
    }
    let key = (
        meta.reference.namespace.clone(),
        meta.reference.name.clone(),
    );
    if let Some(retry) = ctx
        .objects
        .http_route_retries
        .get(&key)
        .and_then(|r| r.get(&index))
    {
        policy.retry = Some(retry_policy(retry, &format!("{field}.retry"))?);
    }
    let refs = weighted_refs!(rule.backend_refs, &field);
    let mut out = RuleOutput {
        rule: RulePlan {
            index,
            matches,
            backends: Vec::new(),
            policy,
        },
        backends: filtered.backends,
        ref_problems: filtered.ref_problems,
    };
    let all_prefix = out.rule.matches.iter().all(|m| {
        matches!(
            m.path.as_ref().and_then(|p| p.kind.as_ref()),
            Some(pb::path_match::Kind::Prefix(_))
        )
    });
    if filtered.replaces_prefix && !all_prefix {
        return Err(format!(
            "{field}.filters: ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"
        ));
    }
    weighted_backends(
        meta,
        &field,
        &refs,
        pb::UpstreamProtocol::Auto,
        filtered.answers,
        ctx,
        &mut out,
    )?;
    Ok(out)
}

/// Resolves a rule's backendRefs into `out`; a rule left with no backend to send to and
/// no filter answering it answers 500.
pub(super) fn weighted_backends(
    meta: &RouteMeta,
    field: &str,
    refs: &[WeightedRef<'_>],
    protocol: pb::UpstreamProtocol,
    answers: bool,
    ctx: &RefContext<'_>,
    out: &mut RuleOutput,
) -> Result<(), String> {
    for (k, r) in refs.iter().enumerate() {
        let bfield = format!("{field}.backendRefs[{k}]");
        let weight = match r.weight {
            None => None,
            Some(w) if w >= 0 => Some(w as u32),
            Some(w) => return Err(format!("{bfield}.weight: {w} is negative")),
        };
        match backends::resolve(
            ctx.objects,
            ctx.grants,
            ctx.from,
            &r.target,
            &bfield,
            protocol,
        ) {
            Ok((mut key, mut backend)) => {
                if !r.filters.is_empty() {
                    let f = filters::translate(&r.filters, &format!("{bfield}.filters"), ctx)?;
                    if f.replaces_prefix || f.answers {
                        return Err(format!(
                            "{bfield}.filters: only header modifiers and mirrors are supported on a backendRef"
                        ));
                    }
                    out.ref_problems.extend(f.ref_problems);
                    out.backends.extend(f.backends);
                    // A backend of its own, so the filters apply to this rule only.
                    key = format!("{key}/{}/{k}", meta.rule_key(out.rule.index));
                    backend.key = key.clone();
                    backend.name = key.clone();
                    backend.policies = Some(f.policy);
                }
                out.rule.backends.push(pb::RouteBackend {
                    backend: key.clone(),
                    weight,
                });
                out.backends.push((key, backend));
            }
            Err(p) => out.ref_problems.push(p),
        }
    }
    let serving = out.rule.backends.iter().any(|b| b.weight != Some(0));
    if !serving && !answers {
        out.rule.backends.clear();
        out.rule.policy.direct_response = Some(pb::DirectResponse {
            status: 500,
            body: NO_BACKEND_BODY.into(),
        });
    }
    Ok(())
}

/// A Gateway API duration (`10s`, `1m30s`, `500ms`) as a protobuf duration; `0s` means
/// no limit (None).
fn duration(value: Option<&str>, field: &str) -> Result<Option<pbjson_types::Duration>, String> {
    let Some(value) = value else { return Ok(None) };
    let d = gateway_api::Duration::from_str(value)
        .map_err(|e| format!("{field}: {value:?} is not a duration ({e})"))?;
    if d.is_zero() {
        return Ok(None);
    }
    Ok(Some(pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or_default(),
    }))
}

/// The proxy's most retries of one request (its compiler refuses more).
const MAX_RETRY_ATTEMPTS: i64 = 10;

/// A rule's `retry` (experimental channel) as the proxy's Retry policy. `attempts` is the
/// number of retries after the first try (the Gateway API's meaning and the proxy's);
/// unset, one retry. `codes` are 400-599, unset: 502, 503, 504 (the proxy's default).
/// `backoff` is the wait before the first retry (the proxy doubles it for each further
/// one). A failed connection is retried too, as the Gateway API expects of "the backend
/// could not be reached".
fn retry_policy(
    retry: &gateway_api::apis::experimental::httproutes::HttpRouteRulesRetry,
    field: &str,
) -> Result<pb::Retry, String> {
    let attempts = match retry.attempts {
        None => 1,
        Some(a) if (0..=MAX_RETRY_ATTEMPTS).contains(&a) => a as u32,
        Some(a) => {
            return Err(format!(
                "{field}.attempts: {a} is outside 0-{MAX_RETRY_ATTEMPTS}"
            ));
        }
    };
    let mut codes = Vec::new();
    for (i, c) in retry.codes.iter().flatten().enumerate() {
        if !(400..=599).contains(c) {
            return Err(format!(
                "{field}.codes[{i}]: {c} is not an HTTP error status (400-599)"
            ));
        }
        codes.push(*c as u32);
    }
    Ok(pb::Retry {
        attempts,
        backoff: duration(retry.backoff.as_deref(), &format!("{field}.backoff"))?,
        codes,
        on_connect_error: None,
    })
}

/// One HTTPRoute match, checked with the proxy's own matchers.
fn route_match(m: &HttpRouteRulesMatches, field: &str) -> Result<pb::RouteMatch, String> {
    let path = m.path.as_ref();
    let value = path.and_then(|p| p.value.as_deref()).unwrap_or("/");
    let kind = match path.and_then(|p| p.r#type.clone()) {
        None | Some(HttpRouteRulesMatchesPathType::PathPrefix) => {
            PathMatcher::prefix(value).map_err(|e| format!("{field}.path.value: {e}"))?;
            pb::path_match::Kind::Prefix(value.into())
        }
        Some(HttpRouteRulesMatchesPathType::Exact) => {
            PathMatcher::exact(value).map_err(|e| format!("{field}.path.value: {e}"))?;
            pb::path_match::Kind::Exact(value.into())
        }
        Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
            PathMatcher::regex(value).map_err(|e| format!("{field}.path.value: {e}"))?;
            pb::path_match::Kind::Regex(value.into())
        }
    };
    let method = m
        .method
        .as_ref()
        .and_then(|method| serde_json::to_value(method).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let headers = header_matches(m.headers.as_deref().unwrap_or_default(), field)?;
    let mut query_params: Vec<pb::QueryMatch> = Vec::new();
    for (i, q) in m.query_params.iter().flatten().enumerate() {
        let qfield = format!("{field}.queryParams[{i}]");
        if q.name.is_empty() {
            return Err(format!("{qfield}.name: must not be empty"));
        }
        if query_params.iter().any(|x| x.name == q.name) {
            continue;
        }
        let kind = match q.r#type {
            None | Some(HttpRouteRulesMatchesQueryParamsType::Exact) => {
                pb::query_match::Kind::Exact(q.value.clone())
            }
            Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => {
                anchored(&q.value).map_err(|e| format!("{qfield}.value: {e}"))?;
                pb::query_match::Kind::Regex(q.value.clone())
            }
        };
        query_params.push(pb::QueryMatch {
            name: q.name.clone(),
            kind: Some(kind),
        });
    }
    Ok(pb::RouteMatch {
        path: Some(pb::PathMatch { kind: Some(kind) }),
        method,
        headers,
        query_params,
    })
}

/// Header conditions (only the first condition on a header name counts, as the Gateway
/// API says), checked as the proxy checks them.
pub(super) fn header_matches(
    list: &[HttpRouteRulesMatchesHeaders],
    field: &str,
) -> Result<Vec<pb::HeaderMatch>, String> {
    let mut headers: Vec<pb::HeaderMatch> = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let hfield = format!("{field}.headers[{i}]");
        HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("{hfield}.name: {:?} is not a valid header name", h.name))?;
        if headers.iter().any(|x| x.name.eq_ignore_ascii_case(&h.name)) {
            continue;
        }
        let kind = match h.r#type {
            None | Some(HttpRouteRulesMatchesHeadersType::Exact) => {
                pb::header_match::Kind::Exact(h.value.clone())
            }
            Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => {
                anchored(&h.value).map_err(|e| format!("{hfield}.value: {e}"))?;
                pb::header_match::Kind::Regex(h.value.clone())
            }
        };
        headers.push(pb::HeaderMatch {
            name: h.name.clone(),
            kind: Some(kind),
        });
    }
    Ok(headers)
}
