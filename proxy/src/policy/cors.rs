//! Cross-origin resource sharing: answering preflights and decorating responses.
//!
//! Preflights from an allowed origin are answered by the proxy (204) and never reach the
//! backend; a preflight from another origin is forwarded like any request, without CORS
//! headers, so the browser refuses it. Actual responses to an allowed origin get
//! `Access-Control-Allow-Origin` and friends.

use agentmesh_proto::config::v1 as pb;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::config::ir::{Cors, OriginPattern};
use crate::http::body::{self, Body};

/// Compiles the CORS policy; problems are reported through `err(field, reason)`.
pub fn compile(c: &pb::Cors, _res: &str, field: &str, err: &mut dyn FnMut(String, String)) -> Cors {
    let mut allow_origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        match parse_origin(o) {
            Ok(p) => allow_origins.push(p),
            Err(e) => err(format!("{field}.allowOrigins[{i}]"), e),
        }
    }
    if c.allow_credentials && allow_origins.contains(&OriginPattern::Any) {
        err(
            format!("{field}.allowCredentials"),
            "cannot be true when allowOrigins has \"*\" (browsers refuse it)".into(),
        );
    }
    let mut join = |list: &[String], name: &str| -> Option<HeaderValue> {
        if list.is_empty() {
            return None;
        }
        HeaderValue::from_str(&list.join(", "))
            .map_err(|_| {
                err(
                    format!("{field}.{name}"),
                    "contains characters not allowed in a header".into(),
                )
            })
            .ok()
    };
    let allow_methods = join(&c.allow_methods, "allowMethods");
    let allow_headers = join(&c.allow_headers, "allowHeaders");
    let expose_headers = join(&c.expose_headers, "exposeHeaders");
    let max_age = c
        .max_age
        .and_then(|d| std::time::Duration::try_from(d).ok())
        .map(|d| HeaderValue::from(d.as_secs()));
    Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials: c.allow_credentials,
        max_age,
    }
}

fn parse_origin(o: &str) -> Result<OriginPattern, String> {
    if o == "*" {
        return Ok(OriginPattern::Any);
    }
    let lower = o.to_ascii_lowercase();
    let Some((scheme, host)) = lower.split_once("://") else {
        return Err(format!(
            "{o:?} must look like https://example.com, https://*.example.com or *"
        ));
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("{o:?} must be scheme://host[:port] without a path"));
    }
    match host.strip_prefix("*.") {
        Some(suffix) if !suffix.is_empty() => Ok(OriginPattern::Wildcard {
            scheme: format!("{scheme}://"),
            suffix: format!(".{suffix}"),
        }),
        Some(_) => Err(format!("{o:?} has an empty wildcard suffix")),
        None => Ok(OriginPattern::Exact(lower)),
    }
}

impl Cors {
    /// Whether an `Origin` value is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.allow_origins.iter().any(|p| match p {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => *o == origin,
            OriginPattern::Wildcard { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .is_some_and(|host| host.len() > suffix.len() && host.ends_with(suffix.as_str())),
        })
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if !self.allow_credentials && self.allow_origins.contains(&OriginPattern::Any) {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Answers a preflight from an allowed origin; `None` for anything else.
    pub fn preflight<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        if req.method() != Method::OPTIONS
            || !req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let origin = req.headers().get(header::ORIGIN)?;
        if !self.allows(origin.to_str().ok()?) {
            return None;
        }
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if let Some(v) = &self.allow_methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
        }
        if let Some(v) = &self.allow_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        } else if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            // No list configured: allow what the browser asks for.
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if self.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        Some(resp)
    }

    /// Adds CORS headers to a response for a request from an allowed origin.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(origin) = origin else { return };
        if !origin.to_str().is_ok_and(|o| self.allows(o)) {
            return;
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        let spec = pb::Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            ..Default::default()
        };
        compile(&spec, "policy", "cors", &mut |f, e| panic!("{f}: {e}"))
    }

    #[test]
    fn wildcard_origin_matches_subdomains_only_with_the_same_scheme() {
        let c = cors(&["https://*.example.com"]);
        assert!(c.allows("https://app.example.com"));
        assert!(!c.allows("http://app.example.com"));
        assert!(!c.allows("https://example.com"));
        assert!(!c.allows("https://evil-example.com"));
    }

    #[test]
    fn preflight_from_an_allowed_origin_is_answered() {
        let c = cors(&["https://app.example.com"]);
        let req = Request::builder()
            .method(Method::OPTIONS)
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .body(())
            .unwrap();
        let resp = c.preflight(&req).unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(resp.headers()["access-control-allow-methods"], "GET, POST");
        let other = Request::builder()
            .method(Method::OPTIONS)
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .body(())
            .unwrap();
        assert!(c.preflight(&other).is_none());
    }
}
