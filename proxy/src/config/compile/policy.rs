//! Traffic policies: `PolicySpec` → the IR's `Policies`, with every problem reported
//! against the policy resource and field.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agentmesh_proto::config::v1 as pb;
use http::{HeaderName, HeaderValue, StatusCode};

use super::Errors;
use crate::config::ir::{self, Policies};
use crate::http::route::HostPattern;

/// Which policy kinds a compiled spec sets, by their config field name.
pub(super) fn kinds_set(p: &Policies) -> [(&'static str, bool); 9] {
    [
        ("requestHeaders", p.request_headers.is_some()),
        ("responseHeaders", p.response_headers.is_some()),
        ("redirect", p.redirect.is_some()),
        ("urlRewrite", p.url_rewrite.is_some()),
        ("directResponse", p.direct_response.is_some()),
        ("cors", p.cors.is_some()),
        ("timeouts", p.timeouts.is_some()),
        ("retry", p.retry.is_some()),
        ("mirror", p.mirror.is_some()),
    ]
}

fn duration(
    d: &pbjson_types::Duration,
    res: &str,
    field: &str,
    errs: &mut Errors,
) -> Option<Duration> {
    match Duration::try_from(*d) {
        Ok(d) => Some(d),
        Err(_) => {
            errs.push(
                res,
                field,
                "must be a non-negative duration such as \"1.5s\"",
            );
            None
        }
    }
}

pub(super) fn policies(
    spec: &pb::PolicySpec,
    res: &str,
    backends: &HashMap<&str, Arc<ir::Backend>>,
    errs: &mut Errors,
) -> Policies {
    let field = |f: &str| format!("spec.{f}");
    let mut out = Policies {
        request_headers: spec
            .request_headers
            .as_ref()
            .map(|h| Arc::new(header_mods(h, res, &field("requestHeaders"), errs))),
        response_headers: spec
            .response_headers
            .as_ref()
            .map(|h| Arc::new(header_mods(h, res, &field("responseHeaders"), errs))),
        ..Policies::default()
    };
    if let Some(r) = &spec.redirect {
        let status = match r.status {
            0 => StatusCode::FOUND,
            301 | 302 | 303 | 307 | 308 => {
                StatusCode::from_u16(r.status as u16).unwrap_or(StatusCode::FOUND)
            }
            other => {
                errs.push(
                    res,
                    field("redirect.status"),
                    format!("{other} is not a redirect status (301, 302, 303, 307, 308)"),
                );
                StatusCode::FOUND
            }
        };
        let scheme = match r.scheme.as_str() {
            "" => None,
            "http" | "https" => Some(r.scheme.clone()),
            other => {
                errs.push(
                    res,
                    field("redirect.scheme"),
                    format!("{other:?} must be \"http\" or \"https\""),
                );
                None
            }
        };
        let port = match u16::try_from(r.port) {
            Ok(0) => None,
            Ok(p) => Some(p),
            Err(_) => {
                errs.push(
                    res,
                    field("redirect.port"),
                    format!("{} is not a TCP port", r.port),
                );
                None
            }
        };
        if !r.host.is_empty()
            && HostPattern::parse(&r.host).is_err()
            && r.host.parse::<IpAddr>().is_err()
        {
            errs.push(
                res,
                field("redirect.host"),
                format!("{:?} is not a valid hostname", r.host),
            );
        }
        out.redirect = Some(Arc::new(ir::Redirect {
            scheme,
            host: (!r.host.is_empty()).then(|| r.host.clone()),
            port,
            path: path_rewrite(r.path.as_ref(), res, &field("redirect.path"), errs),
            status,
        }));
    }
    if let Some(rw) = &spec.url_rewrite {
        let host = if rw.host.is_empty() {
            None
        } else {
            HeaderValue::from_str(&rw.host)
                .map_err(|_| {
                    errs.push(
                        res,
                        field("urlRewrite.host"),
                        format!("{:?} is not a valid host", rw.host),
                    )
                })
                .ok()
        };
        out.url_rewrite = Some(Arc::new(ir::UrlRewrite {
            host,
            path: path_rewrite(rw.path.as_ref(), res, &field("urlRewrite.path"), errs),
        }));
    }
    if let Some(d) = &spec.direct_response {
        let status = match u16::try_from(d.status)
            .ok()
            .filter(|s| (200..=599).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
        {
            Some(s) => s,
            None => {
                errs.push(
                    res,
                    field("directResponse.status"),
                    format!("{} is not a status between 200 and 599", d.status),
                );
                StatusCode::OK
            }
        };
        out.direct_response = Some(Arc::new(ir::DirectResponse {
            status,
            body: bytes::Bytes::from(d.body.clone()),
        }));
    }
    if let Some(c) = &spec.cors {
        out.cors = Some(Arc::new(crate::policy::cors::compile(
            c,
            res,
            &field("cors"),
            &mut |f, e| errs.push(res, f, e),
        )));
    }
    if let Some(t) = &spec.timeouts {
        out.timeouts = Some(ir::Timeouts {
            request: t
                .request
                .as_ref()
                .and_then(|d| duration(d, res, &field("timeouts.request"), errs)),
            backend_request: t
                .backend_request
                .as_ref()
                .and_then(|d| duration(d, res, &field("timeouts.backendRequest"), errs)),
        });
    }
    if let Some(r) = &spec.retry {
        let mut codes = Vec::new();
        for (i, c) in r.codes.iter().enumerate() {
            match u16::try_from(*c)
                .ok()
                .filter(|c| (100..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(s) => codes.push(s),
                None => errs.push(
                    res,
                    field(&format!("retry.codes[{i}]")),
                    format!("{c} is not an HTTP status"),
                ),
            }
        }
        if r.codes.is_empty() {
            codes = vec![
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT,
            ];
        }
        if r.attempts > 10 {
            errs.push(
                res,
                field("retry.attempts"),
                format!("{} is more than the limit of 10", r.attempts),
            );
        }
        out.retry = Some(Arc::new(ir::Retry {
            attempts: r.attempts.min(10),
            backoff: r
                .backoff
                .as_ref()
                .and_then(|d| duration(d, res, &field("retry.backoff"), errs))
                .unwrap_or(Duration::from_millis(25)),
            codes,
            on_connect_error: r.on_connect_error.unwrap_or(true),
        }));
    }
    if let Some(m) = &spec.mirror {
        let percentage = m.percentage.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&percentage) {
            errs.push(
                res,
                field("mirror.percentage"),
                format!("{percentage} is not between 0 and 100"),
            );
        }
        match backends.get(m.backend.as_str()) {
            Some(b) if !matches!(b.kind, ir::BackendKind::Host(_)) => errs.push(
                res,
                field("mirror.backend"),
                format!(
                    "{:?} is not a `host` backend; only those can be mirrored to",
                    m.backend
                ),
            ),
            Some(b) => {
                out.mirror = Some(Arc::new(ir::Mirror {
                    backend: b.clone(),
                    percentage,
                }))
            }
            None => errs.missing_backend(res, field("mirror.backend"), &m.backend),
        }
    }
    out
}

fn path_rewrite(
    p: Option<&pb::PathRewrite>,
    res: &str,
    field: &str,
    errs: &mut Errors,
) -> Option<ir::PathRewrite> {
    match p?.kind.as_ref() {
        Some(pb::path_rewrite::Kind::Full(f)) if f.starts_with('/') => {
            Some(ir::PathRewrite::Full(f.clone()))
        }
        Some(pb::path_rewrite::Kind::Prefix(f)) if f.starts_with('/') => {
            Some(ir::PathRewrite::Prefix(f.clone()))
        }
        Some(pb::path_rewrite::Kind::Full(f) | pb::path_rewrite::Kind::Prefix(f)) => {
            errs.push(res, field, format!("{f:?} must start with \"/\""));
            None
        }
        None => {
            errs.push(res, field, "one of full or prefix must be set");
            None
        }
    }
}

fn header_mods(
    h: &pb::HeaderModifier,
    res: &str,
    field: &str,
    errs: &mut Errors,
) -> ir::HeaderMods {
    let pair = |list: &[pb::Header], what: &str, errs: &mut Errors| {
        list.iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| {
                        errs.push(
                            res,
                            format!("{field}.{what}[{i}].name"),
                            format!("{:?} is not a valid header name", h.name),
                        )
                    })
                    .ok()?;
                let value = HeaderValue::from_str(&h.value)
                    .map_err(|_| {
                        errs.push(
                            res,
                            format!("{field}.{what}[{i}].value"),
                            "is not a valid header value",
                        )
                    })
                    .ok()?;
                Some((name, value))
            })
            .collect()
    };
    let set = pair(&h.set, "set", errs);
    let add = pair(&h.add, "add", errs);
    let remove = h
        .remove
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| {
                    errs.push(
                        res,
                        format!("{field}.remove[{i}]"),
                        format!("{n:?} is not a valid header name"),
                    )
                })
                .ok()
        })
        .collect();
    ir::HeaderMods { set, add, remove }
}
