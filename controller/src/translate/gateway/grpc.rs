//! GRPCRoute: gRPC calls are HTTP/2 POSTs to `/<service>/<method>`, so each rule becomes
//! a proxy route with path matches, and its backends are spoken to in HTTP/2.
//!
//! Method matches, `type: Exact` (the default): service and method → exact path
//! `/<service>/<method>`; service only → path prefix `/<service>`; method only → regex
//! `/[^/]+/<method>`. `type: RegularExpression`: a path regex built from both (a missing
//! part matches any name). Header matches and filters (header modifiers, mirror) are the
//! HTTPRoute ones ([`super::http`], [`super::filters`]).

use agentmesh_proto::config::v1 as pb;
use agentmesh_proxy::http::route::anchored;
use gateway_api::apis::standard::grpcroutes::{
    GrpcRoute, GrpcRouteRules, GrpcRouteRulesMatches, GrpcRouteRulesMatchesMethodType,
};
use gateway_api::apis::standard::httproutes::HttpRouteRulesMatchesHeaders;

use super::backends::Grants;
use super::filters::{self, RefContext};
use super::http::{self, RequestRoute, RuleOutput};
use super::{GatewayState, RouteMeta, RulePlan};
use crate::objects::Objects;
use crate::status::StatusReport;

/// Translates one GRPCRoute onto the Gateways it attaches to, and writes its status.
pub(super) fn translate(
    route: &GrpcRoute,
    objects: &Objects,
    grants: &Grants<'_>,
    gateways: &mut [GatewayState],
    status: &mut StatusReport,
) {
    RequestRoute {
        meta: RouteMeta::of("GRPCRoute", &route.metadata),
        hostnames: route.spec.hostnames.as_deref().unwrap_or_default(),
        parents: http::parent_refs!(route.spec.parent_refs),
        rules: route.spec.rules.as_deref(),
    }
    .translate(rule_plan, objects, grants, gateways, status);
}

fn rule_plan(
    meta: &RouteMeta,
    index: usize,
    rule: &GrpcRouteRules,
    ctx: &RefContext<'_>,
) -> Result<RuleOutput, String> {
    let field = format!("spec.rules[{index}]");
    let mut matches = Vec::new();
    for (m, r#match) in rule.matches.iter().flatten().enumerate() {
        matches.push(grpc_match(r#match, &format!("{field}.matches[{m}]"))?);
    }
    let rule_filters = rule
        .filters
        .iter()
        .flatten()
        .enumerate()
        .map(|(f, filter)| filters::as_http_filter(filter, &format!("{field}.filters[{f}]")))
        .collect::<Result<Vec<_>, String>>()?;
    let filtered = filters::translate(&rule_filters, &format!("{field}.filters"), ctx)?;
    let refs = http::weighted_refs!(rule.backend_refs, &field);
    let mut out = RuleOutput {
        rule: RulePlan {
            index,
            matches,
            backends: Vec::new(),
            policy: filtered.policy,
        },
        backends: filtered.backends,
        ref_problems: filtered.ref_problems,
    };
    http::weighted_backends(
        meta,
        &field,
        &refs,
        pb::UpstreamProtocol::Http2,
        filtered.answers,
        ctx,
        &mut out,
    )?;
    Ok(out)
}

/// One GRPCRoute match as a proxy match on the request path.
fn grpc_match(m: &GrpcRouteRulesMatches, field: &str) -> Result<pb::RouteMatch, String> {
    let path = match &m.method {
        None => None,
        Some(method) => {
            let service = method.service.as_deref().filter(|s| !s.is_empty());
            let name = method.method.as_deref().filter(|s| !s.is_empty());
            let regex = matches!(
                method.r#type,
                Some(GrpcRouteRulesMatchesMethodType::RegularExpression)
            );
            let kind = if service.is_none() && name.is_none() {
                return Err(format!(
                    "{field}.method: at least one of service and method is required"
                ));
            } else if regex {
                let pattern = format!(
                    "/{}/{}",
                    service.unwrap_or("[^/]+"),
                    name.unwrap_or("[^/]+")
                );
                anchored(&pattern).map_err(|e| format!("{field}.method: {e}"))?;
                pb::path_match::Kind::Regex(pattern)
            } else {
                for (what, value) in [("service", service), ("method", name)] {
                    if let Some(v) = value
                        && !v
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._".contains(c))
                    {
                        return Err(format!(
                            "{field}.method.{what}: {v:?} is not a gRPC {what} name"
                        ));
                    }
                }
                match (service, name) {
                    (Some(s), Some(n)) => pb::path_match::Kind::Exact(format!("/{s}/{n}")),
                    (Some(s), None) => pb::path_match::Kind::Prefix(format!("/{s}")),
                    (None, n) => pb::path_match::Kind::Regex(format!(
                        "/[^/]+/{}",
                        regex_escape(n.unwrap_or_default())
                    )),
                }
            };
            Some(pb::PathMatch { kind: Some(kind) })
        }
    };
    let headers: Vec<HttpRouteRulesMatchesHeaders> = m
        .headers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, h)| {
            serde_json::to_value(h)
                .and_then(serde_json::from_value)
                .map_err(|e| format!("{field}.headers[{i}]: {e}"))
        })
        .collect::<Result<_, String>>()?;
    Ok(pb::RouteMatch {
        path,
        method: String::new(),
        headers: http::header_matches(&headers, field)?,
        query_params: Vec::new(),
    })
}

/// Escapes the regex metacharacters a gRPC name can hold (`.`).
fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}
