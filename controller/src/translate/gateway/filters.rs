//! Route filters (`RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect`,
//! `URLRewrite`, `RequestMirror`, `CORS`) into a proxy [`pb::PolicySpec`].
//!
//! GRPCRoute filters and backendRef filters have the same shape as HTTPRoute rule filters
//! (a subset of their types), so all are translated here, as HTTPRoute filters.
//!
//! A filter the proxy cannot apply as written (an invalid header name, two filters that
//! set the same thing) makes its rule invalid: the rule is dropped and the route status
//! says why. An `ExtensionRef` filter cannot be resolved by us: requests the rule takes
//! are answered 500, as the Gateway API requires, and ResolvedRefs says why.

use agentmesh_proto::config::v1 as pb;
use gateway_api::apis::standard::httproutes::{
    HttpRouteRulesFilters, HttpRouteRulesFiltersRequestRedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersType,
    HttpRouteRulesFiltersUrlRewritePathType,
};
use http::{HeaderName, HeaderValue};

use super::Problem;
use super::backends::{self, BackendRef, Grants, RefSide};
use crate::objects::Objects;

/// What references in filters resolve against.
pub(super) struct RefContext<'a> {
    pub objects: &'a Objects,
    pub grants: &'a Grants<'a>,
    /// The route referring.
    pub from: RefSide<'a>,
}

/// The translation of a rule's filters.
#[derive(Debug, Default)]
pub(super) struct Filtered {
    /// The policy.
    pub policy: pb::PolicySpec,
    /// Backends the policy refers to (mirror targets), by key.
    pub backends: Vec<(String, pb::Backend)>,
    /// References that did not resolve (the rest of the rule still applies).
    pub ref_problems: Vec<Problem>,
    /// Whether a path rewrite or redirect replaces the matched prefix (the rule's
    /// matches must then all be path prefixes).
    pub replaces_prefix: bool,
    /// Whether the policy answers requests itself (a redirect, or a 500 for a filter we
    /// cannot apply), so the rule needs no backend.
    pub answers: bool,
}

/// Translates `filters` (at `field`, e.g. `spec.rules[0].filters`). An `Err` names the
/// filter field that makes the rule invalid.
pub(super) fn translate(
    filters: &[HttpRouteRulesFilters],
    field: &str,
    ctx: &RefContext<'_>,
) -> Result<Filtered, String> {
    let mut out = Filtered::default();
    for (i, f) in filters.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let missing = |what: &str| format!("{field}.{what}: required for type {:?}", f.r#type);
        let once = |set: bool, what: &str| {
            if set {
                Err(format!(
                    "{field}: a second {what} filter in one rule is not supported; merge them"
                ))
            } else {
                Ok(())
            }
        };
        match f.r#type {
            HttpRouteRulesFiltersType::RequestHeaderModifier => {
                let m = f
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("requestHeaderModifier"))?;
                once(
                    out.policy.request_headers.is_some(),
                    "RequestHeaderModifier",
                )?;
                out.policy.request_headers = Some(header_modifier(
                    m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.remove.iter().flatten(),
                    &format!("{field}.requestHeaderModifier"),
                )?);
            }
            HttpRouteRulesFiltersType::ResponseHeaderModifier => {
                let m = f
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("responseHeaderModifier"))?;
                once(
                    out.policy.response_headers.is_some(),
                    "ResponseHeaderModifier",
                )?;
                out.policy.response_headers = Some(header_modifier(
                    m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                    m.remove.iter().flatten(),
                    &format!("{field}.responseHeaderModifier"),
                )?);
            }
            HttpRouteRulesFiltersType::RequestRedirect => {
                let r = f
                    .request_redirect
                    .as_ref()
                    .ok_or_else(|| missing("requestRedirect"))?;
                once(out.policy.redirect.is_some(), "RequestRedirect")?;
                let field = format!("{field}.requestRedirect");
                let status = match r.status_code {
                    None => 302,
                    Some(s @ (301 | 302 | 303 | 307 | 308)) => s as u32,
                    Some(other) => {
                        return Err(format!(
                            "{field}.statusCode: {other} is not 301, 302, 303, 307 or 308"
                        ));
                    }
                };
                let port = match r.port {
                    None => 0,
                    Some(p @ 1..=65535) => p as u32,
                    Some(p) => return Err(format!("{field}.port: {p} is not a TCP port")),
                };
                let host = r.hostname.clone().unwrap_or_default();
                if !host.is_empty()
                    && agentmesh_proxy::http::route::HostPattern::parse(&host).is_err()
                {
                    return Err(format!(
                        "{field}.hostname: {host:?} is not a valid hostname"
                    ));
                }
                let path = match &r.path {
                    None => None,
                    Some(p) => Some(path_rewrite(
                        matches!(
                            p.r#type,
                            HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch
                        ),
                        p.replace_full_path.as_deref(),
                        p.replace_prefix_match.as_deref(),
                        &format!("{field}.path"),
                        &mut out.replaces_prefix,
                    )?),
                };
                out.policy.redirect = Some(pb::Redirect {
                    scheme: match r.scheme {
                        None => String::new(),
                        Some(HttpRouteRulesFiltersRequestRedirectScheme::Http) => "http".into(),
                        Some(HttpRouteRulesFiltersRequestRedirectScheme::Https) => "https".into(),
                    },
                    host,
                    port,
                    path,
                    status,
                });
                out.answers = true;
            }
            HttpRouteRulesFiltersType::UrlRewrite => {
                let r = f
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| missing("urlRewrite"))?;
                once(out.policy.url_rewrite.is_some(), "URLRewrite")?;
                let field = format!("{field}.urlRewrite");
                let host = r.hostname.clone().unwrap_or_default();
                if HeaderValue::from_str(&host).is_err() {
                    return Err(format!("{field}.hostname: {host:?} is not a valid host"));
                }
                let path = match &r.path {
                    None => None,
                    Some(p) => Some(path_rewrite(
                        matches!(
                            p.r#type,
                            HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch
                        ),
                        p.replace_full_path.as_deref(),
                        p.replace_prefix_match.as_deref(),
                        &format!("{field}.path"),
                        &mut out.replaces_prefix,
                    )?),
                };
                out.policy.url_rewrite = Some(pb::UrlRewrite { host, path });
            }
            HttpRouteRulesFiltersType::RequestMirror => {
                let m = f
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| missing("requestMirror"))?;
                once(out.policy.mirror.is_some(), "RequestMirror")?;
                let field = format!("{field}.requestMirror");
                let percentage = match (&m.fraction, m.percent) {
                    (Some(_), Some(_)) => {
                        return Err(format!("{field}: set percent or fraction, not both"));
                    }
                    (Some(fr), None) => {
                        let denominator = fr.denominator.unwrap_or(100);
                        if denominator <= 0 || fr.numerator < 0 || fr.numerator > denominator {
                            return Err(format!(
                                "{field}.fraction: {}/{denominator} is not a fraction between 0 and 1",
                                fr.numerator
                            ));
                        }
                        Some(f64::from(fr.numerator) * 100.0 / f64::from(denominator))
                    }
                    (None, Some(p)) if (0..=100).contains(&p) => Some(f64::from(p)),
                    (None, Some(p)) => {
                        return Err(format!("{field}.percent: {p} is not between 0 and 100"));
                    }
                    (None, None) => None,
                };
                let b = &m.backend_ref;
                let target = BackendRef {
                    group: b.group.as_deref(),
                    kind: b.kind.as_deref(),
                    name: &b.name,
                    namespace: b.namespace.as_deref(),
                    port: b.port,
                };
                match backends::resolve(
                    ctx.objects,
                    ctx.grants,
                    ctx.from,
                    &target,
                    &format!("{field}.backendRef"),
                    pb::UpstreamProtocol::Auto,
                ) {
                    Ok((key, backend)) => {
                        out.policy.mirror = Some(pb::Mirror {
                            backend: key.clone(),
                            percentage: percentage.filter(|p| *p != 100.0),
                        });
                        out.backends.push((key, backend));
                    }
                    Err(p) => out.ref_problems.push(p),
                }
            }
            HttpRouteRulesFiltersType::Cors => {
                let c = f.cors.as_ref().ok_or_else(|| missing("cors"))?;
                once(out.policy.cors.is_some(), "CORS")?;
                out.policy.cors = Some(pb::Cors {
                    allow_origins: c.allow_origins.clone().unwrap_or_default(),
                    allow_methods: c.allow_methods.clone().unwrap_or_default(),
                    allow_headers: c.allow_headers.clone().unwrap_or_default(),
                    expose_headers: c.expose_headers.clone().unwrap_or_default(),
                    allow_credentials: c.allow_credentials.unwrap_or(false),
                    max_age: c.max_age.map(|s| pbjson_types::Duration {
                        seconds: i64::from(s.max(0)),
                        nanos: 0,
                    }),
                });
            }
            HttpRouteRulesFiltersType::ExtensionRef => {
                let name = f
                    .extension_ref
                    .as_ref()
                    .map(|e| format!("{}/{} {}", e.group, e.kind, e.name))
                    .unwrap_or_default();
                out.ref_problems.push(Problem::new(
                    "InvalidKind",
                    format!(
                        "{field}.extensionRef: {name} is not an extension agentmesh knows; requests this rule takes are answered 500"
                    ),
                ));
                out.policy.direct_response = Some(pb::DirectResponse {
                    status: 500,
                    body: String::new(),
                });
                out.answers = true;
            }
        }
    }
    if out.policy.redirect.is_some() && out.policy.url_rewrite.is_some() {
        return Err(format!(
            "{field}: RequestRedirect and URLRewrite cannot be used in one rule"
        ));
    }
    Ok(out)
}

/// A filter of another route kind (GRPCRoute, backendRef filters), which has the shape of
/// an HTTPRoute rule filter, as one.
pub(super) fn as_http_filter<T: serde::Serialize>(
    filter: &T,
    field: &str,
) -> Result<HttpRouteRulesFilters, String> {
    serde_json::to_value(filter)
        .and_then(serde_json::from_value)
        .map_err(|e| format!("{field}: {e}"))
}

/// A header modifier, with names and values checked as the proxy checks them.
fn header_modifier<'a>(
    set: impl Iterator<Item = (&'a String, &'a String)>,
    add: impl Iterator<Item = (&'a String, &'a String)>,
    remove: impl Iterator<Item = &'a String>,
    field: &str,
) -> Result<pb::HeaderModifier, String> {
    let headers = |list: Vec<(&String, &String)>, what: &str| {
        list.into_iter()
            .enumerate()
            .map(|(i, (name, value))| {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    format!("{field}.{what}[{i}].name: {name:?} is not a valid header name")
                })?;
                HeaderValue::from_str(value)
                    .map_err(|_| format!("{field}.{what}[{i}].value: not a valid header value"))?;
                Ok(pb::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let remove: Vec<String> = remove.cloned().collect();
    for (i, name) in remove.iter().enumerate() {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{field}.remove[{i}]: {name:?} is not a valid header name"))?;
    }
    Ok(pb::HeaderModifier {
        set: headers(set.collect(), "set")?,
        add: headers(add.collect(), "add")?,
        remove,
    })
}

/// A path replacement (`ReplaceFullPath` or `ReplacePrefixMatch`).
fn path_rewrite(
    prefix: bool,
    full_path: Option<&str>,
    prefix_match: Option<&str>,
    field: &str,
    replaces_prefix: &mut bool,
) -> Result<pb::PathRewrite, String> {
    let (value, what) = if prefix {
        (prefix_match, "replacePrefixMatch")
    } else {
        (full_path, "replaceFullPath")
    };
    let value = value.ok_or_else(|| format!("{field}.{what}: required for this type"))?;
    if !value.starts_with('/') {
        return Err(format!("{field}.{what}: {value:?} must start with \"/\""));
    }
    *replaces_prefix |= prefix;
    Ok(pb::PathRewrite {
        kind: Some(if prefix {
            pb::path_rewrite::Kind::Prefix(value.into())
        } else {
            pb::path_rewrite::Kind::Full(value.into())
        }),
    })
}
