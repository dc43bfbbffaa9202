//! Route filters that reshape a request or answer it: header changes, redirects, URL
//! rewrites and direct responses. Pure functions on request and response heads.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Response, Uri};

use crate::config::ir::{DirectResponse, HeaderMods, PathRewrite, Redirect, UrlRewrite};
use crate::http::body::{self, Body};

/// Removes dot segments (`.`, `..`, and their percent-encoded forms) from a path, as
/// RFC 3986 §5.2.4 resolves them; `None` when there is nothing to change.
pub fn normalize_path(path: &str) -> Option<String> {
    let is_dot = |seg: &str| seg == "." || seg.eq_ignore_ascii_case("%2e");
    let is_dotdot = |seg: &str| {
        ["..", ".%2e", "%2e.", "%2e%2e"]
            .iter()
            .any(|d| seg.eq_ignore_ascii_case(d))
    };
    // Every dot segment starts with `.` or `%`, at the start of the path or after a `/`:
    // one pass over the bytes rules out almost every path before segments are compared.
    let bytes = path.as_bytes();
    let may_have_dot_segment = matches!(bytes.first(), Some(b'.' | b'%'))
        || bytes
            .windows(2)
            .any(|pair| pair[0] == b'/' && matches!(pair[1], b'.' | b'%'));
    // Checked without allocating: almost every path has no dot segment.
    if !may_have_dot_segment || !path.split('/').any(|s| is_dot(s) || is_dotdot(s)) {
        return None;
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if is_dot(seg) {
            // A trailing dot segment leaves the path ending in `/`.
            if i == last {
                out.push("");
            }
        } else if is_dotdot(seg) {
            out.pop();
            if i == last {
                out.push("");
            }
        } else {
            out.push(seg);
        }
    }
    Some(format!("/{}", out.join("/")))
}

/// Returns the URI with its path normalized (see [`normalize_path`]), or `None` when it
/// is already normal.
pub fn normalize_uri(uri: &Uri) -> Option<Uri> {
    let path = normalize_path(uri.path())?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(with_query(path, uri)).ok();
    Uri::from_parts(parts).ok()
}

/// Applies header changes: set, then add, then remove.
pub fn apply_header_mods(mods: &HeaderMods, headers: &mut HeaderMap) {
    for (name, value) in &mods.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &mods.add {
        headers.append(name.clone(), value.clone());
    }
    for name in &mods.remove {
        headers.remove(name);
    }
}

/// Rewrites a path: the whole of it, or the prefix the route matched.
pub fn rewrite_path(path: &str, rewrite: &PathRewrite, matched_prefix: Option<&str>) -> String {
    match rewrite {
        PathRewrite::Full(p) => p.clone(),
        PathRewrite::Prefix(new) => {
            let rest = match matched_prefix {
                Some("/") => path,
                Some(prefix) => path.strip_prefix(prefix).unwrap_or(path),
                None => path,
            };
            match (new.ends_with('/'), rest.starts_with('/')) {
                (true, true) => format!("{new}{}", &rest[1..]),
                (false, false) if !rest.is_empty() => format!("{new}/{rest}"),
                _ if rest.is_empty() && new.is_empty() => "/".to_string(),
                _ => format!("{new}{rest}"),
            }
        }
    }
}

fn with_query(path: String, uri: &Uri) -> String {
    match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// The port the client addressed: the URI authority's (HTTP/2, absolute-form), else the
/// Host header's. `None` when the client named no port.
pub fn request_port(uri: &Uri, headers: &HeaderMap) -> Option<u16> {
    match uri.authority() {
        Some(a) => a.port_u16(),
        None => headers
            .get(header::HOST)?
            .to_str()
            .ok()?
            .parse::<Authority>()
            .ok()?
            .port_u16(),
    }
}

/// Builds the redirect response for a request. `host` and `port` are what the client
/// addressed (`host` without its port).
pub fn redirect(
    r: &Redirect,
    uri: &Uri,
    host: Option<&str>,
    port: Option<u16>,
    tls: bool,
    matched_prefix: Option<&str>,
) -> Response<Body> {
    let scheme = r
        .scheme
        .clone()
        .unwrap_or_else(|| if tls { "https" } else { "http" }.to_string());
    let host = r
        .host
        .clone()
        .or_else(|| host.map(str::to_string))
        .unwrap_or_default();
    // Keep the request's port only when neither scheme nor port changes (a new scheme
    // means its well-known port); drop default ports.
    let port = r
        .port
        .or(if r.scheme.is_none() { port } else { None })
        .filter(|p| !matches!((scheme.as_str(), p), ("http", 80) | ("https", 443)));
    let authority = match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let path = match &r.path {
        Some(rw) => rewrite_path(uri.path(), rw, matched_prefix),
        None => uri.path().to_string(),
    };
    let location = format!("{scheme}://{authority}{}", with_query(path, uri));
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = r.status;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR,
    }
    resp
}

/// Applies a URL rewrite to the request head in place.
pub fn rewrite(
    rw: &UrlRewrite,
    uri: &mut Uri,
    headers: &mut HeaderMap,
    matched_prefix: Option<&str>,
) {
    if let Some(path) = &rw.path {
        let new = with_query(rewrite_path(uri.path(), path, matched_prefix), uri);
        if let Ok(pq) = PathAndQuery::try_from(new) {
            let mut parts = std::mem::take(uri).into_parts();
            parts.path_and_query = Some(pq);
            *uri = Uri::from_parts(parts).unwrap_or_default();
        }
    }
    if let Some(host) = &rw.host {
        headers.insert(header::HOST, host.clone());
        if uri.authority().is_some()
            && let Ok(authority) = Authority::try_from(host.as_bytes())
        {
            let mut parts = std::mem::take(uri).into_parts();
            parts.authority = Some(authority);
            if parts.scheme.is_none() {
                parts.scheme = Some(Scheme::HTTP);
            }
            *uri = Uri::from_parts(parts).unwrap_or_default();
        }
    }
}

/// Builds a direct response.
pub fn direct_response(d: &DirectResponse) -> Response<Body> {
    let mut resp = Response::new(body::full(d.body.clone()));
    *resp.status_mut() = d.status;
    if !d.body.is_empty() {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_resolved_like_a_backend_would() {
        assert_eq!(
            normalize_path("/public/../admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(normalize_path("/a/./b/%2E%2e/c").as_deref(), Some("/a/c"));
        assert_eq!(normalize_path("/../../etc").as_deref(), Some("/etc"));
        assert_eq!(normalize_path("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(normalize_path("/a/.").as_deref(), Some("/a/"));
        assert_eq!(normalize_path("/a/b.c/..d"), None);
        assert_eq!(normalize_path("/a/%41/.x/1k.txt"), None);
        assert_eq!(normalize_path("/"), None);
        assert_eq!(normalize_path("").as_deref(), None);
        assert_eq!(normalize_path("%2E%2E/a").as_deref(), Some("/a"));
        let uri: Uri = "/x/../y?q=1".parse().unwrap();
        assert_eq!(normalize_uri(&uri).unwrap().to_string(), "/y?q=1");
    }

    #[test]
    fn prefix_rewrite_replaces_only_the_matched_prefix() {
        let rw = PathRewrite::Prefix("/v2".into());
        assert_eq!(rewrite_path("/api/users", &rw, Some("/api")), "/v2/users");
        assert_eq!(rewrite_path("/api", &rw, Some("/api")), "/v2");
        let root = PathRewrite::Prefix("/".into());
        assert_eq!(rewrite_path("/api/users", &root, Some("/api")), "/users");
        assert_eq!(rewrite_path("/api", &root, Some("/api")), "/");
        let slash = PathRewrite::Prefix("/v2/".into());
        assert_eq!(
            rewrite_path("/api/users", &slash, Some("/api")),
            "/v2/users"
        );
    }

    #[test]
    fn redirect_keeps_query_and_drops_default_port() {
        let r = Redirect {
            scheme: Some("https".into()),
            host: None,
            port: Some(443),
            path: None,
            status: http::StatusCode::MOVED_PERMANENTLY,
        };
        let uri: Uri = "/a/b?x=1".parse().unwrap();
        let resp = redirect(&r, &uri, Some("example.com"), Some(8080), false, None);
        assert_eq!(resp.status(), 301);
        assert_eq!(resp.headers()["location"], "https://example.com/a/b?x=1");
    }

    #[test]
    fn redirect_keeps_the_request_port_when_scheme_and_port_are_unchanged() {
        let r = Redirect {
            scheme: None,
            host: None,
            port: None,
            path: Some(PathRewrite::Full("/new".into())),
            status: http::StatusCode::FOUND,
        };
        let uri: Uri = "/old?x=1".parse().unwrap();
        let resp = redirect(&r, &uri, Some("example.com"), Some(8080), false, None);
        assert_eq!(
            resp.headers()["location"],
            "http://example.com:8080/new?x=1"
        );
        let https = Redirect {
            scheme: Some("https".into()),
            ..r
        };
        let resp = redirect(&https, &uri, Some("example.com"), Some(8080), false, None);
        assert_eq!(resp.headers()["location"], "https://example.com/new?x=1");
    }
}
