//! Request matching: hostnames, paths, methods, headers and query parameters, and the
//! order in which routes are tried.
//!
//! A listener's routes are expanded into [`RouteEntry`]s (one per route hostname and
//! match) and sorted once at compile time by Gateway API precedence, so serving a request
//! is a walk down a list until the first entry that matches. Nothing here knows about
//! policies or backends beyond the route it returns.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri};
use regex::Regex;

use crate::config::ir::Route;

/// A hostname pattern: exact, or `*.suffix` (matching one or more labels before the suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// The host equals this (lowercase).
    Exact(String),
    /// The host ends with this suffix (lowercase, starting with `.`), with at least one
    /// label before it.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `api.example.com` or `*.example.com`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let p = pattern.trim().to_ascii_lowercase();
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if let Some(suffix) = p.strip_prefix("*.") {
            if !suffix.split('.').all(valid_label) {
                return Err(format!("{pattern:?} is not a valid wildcard hostname"));
            }
            return Ok(HostPattern::Wildcard(format!(".{suffix}")));
        }
        if p == "*" {
            return Err("use an empty list, not \"*\", to match any hostname".into());
        }
        if p.is_empty() || !p.split('.').all(valid_label) {
            return Err(format!("{pattern:?} is not a valid hostname"));
        }
        Ok(HostPattern::Exact(p))
    }

    /// Whether `host` (lowercase, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    /// How specific the pattern is: exact beats any wildcard, a longer wildcard beats a
    /// shorter one.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(h) => (2, h.len()),
            HostPattern::Wildcard(s) => (1, s.len()),
        }
    }
}

/// Returns the lowercase host of a request, without port: from the URI authority
/// (HTTP/2, absolute-form) or the `Host` header.
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<Cow<'a, str>> {
    let raw = uri.authority().map(|a| a.host()).or_else(|| {
        headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })?;
    let host = strip_port(raw);
    // Most clients send lowercase hosts: copy only when there is something to lower.
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// Removes a `:port` suffix, keeping IPv6 literals (`[::1]:80` → `[::1]`).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    // Bytes, not chars: a digit is ASCII, and so is the `:` (this runs for every request).
    let bytes = host.as_bytes();
    match bytes.iter().rposition(|&b| b == b':') {
        Some(colon) if bytes[colon + 1..].iter().all(u8::is_ascii_digit) => &host[..colon],
        _ => host,
    }
}

/// How a path is matched.
#[derive(Debug, Clone)]
pub enum PathMatcher {
    /// Equal to this path.
    Exact(String),
    /// This prefix on a segment boundary (stored without a trailing `/`, except for `/`).
    Prefix(String),
    /// The whole path matches (the regex is anchored at compile time).
    Regex(Regex),
}

impl PathMatcher {
    /// Builds a prefix matcher; the prefix must start with `/`.
    pub fn prefix(prefix: &str) -> Result<Self, String> {
        if !prefix.starts_with('/') {
            return Err(format!("{prefix:?} must start with \"/\""));
        }
        let trimmed = prefix.trim_end_matches('/');
        Ok(PathMatcher::Prefix(if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed.into()
        }))
    }

    /// Builds an exact matcher; the path must start with `/`.
    pub fn exact(path: &str) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!("{path:?} must start with \"/\""));
        }
        Ok(PathMatcher::Exact(path.into()))
    }

    /// Builds a regex matcher that must match the whole path.
    pub fn regex(pattern: &str) -> Result<Self, String> {
        anchored(pattern).map(PathMatcher::Regex)
    }

    /// Whether the path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(p) => p == path,
            PathMatcher::Prefix(p) if p == "/" => true,
            PathMatcher::Prefix(p) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatcher::Regex(r) => r.is_match(path),
        }
    }

    /// The prefix, when this is a prefix matcher (for prefix rewrites).
    pub fn matched_prefix(&self) -> Option<&str> {
        match self {
            PathMatcher::Prefix(p) => Some(p),
            _ => None,
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            PathMatcher::Exact(p) => (3, p.len()),
            PathMatcher::Regex(_) => (2, 0),
            PathMatcher::Prefix(p) => (1, p.len()),
        }
    }
}

/// Compiles a regex that must match a whole value.
pub fn anchored(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        // The regex crate explains on several lines; its last line says what is wrong.
        let text = e.to_string();
        let why = text
            .lines()
            .last()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        format!("invalid regular expression {pattern:?}: {why}")
    })
}

/// How a header or query value is matched.
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    /// Equal to this.
    Exact(String),
    /// Whole value matches.
    Regex(Regex),
    /// Present (true) or absent (false).
    Present(bool),
}

impl ValueMatcher {
    /// Whether any of the values (all of a header's, or a query parameter's) matches.
    /// Values are bytes: a header value may hold obs-text (bytes above 0x7f), which still
    /// makes the header present, and UTF-8 text, which exact and regex conditions see.
    fn matches<'a>(&self, mut values: impl Iterator<Item = &'a [u8]>) -> bool {
        match self {
            ValueMatcher::Exact(want) => values.any(|v| v == want.as_bytes()),
            ValueMatcher::Regex(r) => {
                values.any(|v| std::str::from_utf8(v).is_ok_and(|v| r.is_match(v)))
            }
            ValueMatcher::Present(present) => values.next().is_some() == *present,
        }
    }
}

/// One compiled `RouteMatch`: every condition must hold.
#[derive(Debug, Clone)]
pub struct RequestMatcher {
    /// Path condition.
    pub path: PathMatcher,
    /// Method condition.
    pub method: Option<Method>,
    /// Header conditions (lowercase names).
    pub headers: Vec<(http::HeaderName, ValueMatcher)>,
    /// Query parameter conditions.
    pub query: Vec<(String, ValueMatcher)>,
}

impl RequestMatcher {
    /// A matcher that takes every request (`/` prefix).
    pub fn any() -> Self {
        RequestMatcher {
            path: PathMatcher::Prefix("/".into()),
            method: None,
            headers: vec![],
            query: vec![],
        }
    }

    /// Whether the request meets every condition.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if !self.path.matches(req.path) {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| m != req.method) {
            return false;
        }
        let headers_ok = self
            .headers
            .iter()
            .all(|(name, m)| m.matches(req.headers.get_all(name).iter().map(|v| v.as_bytes())));
        headers_ok
            && self.query.iter().all(|(name, m)| {
                m.matches(
                    req.query
                        .iter()
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v.as_bytes()),
                )
            })
    }

    fn rank(&self) -> ((u8, usize), bool, usize, usize) {
        (
            self.path.rank(),
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        )
    }
}

/// The parts of a request that routing looks at.
pub struct RequestView<'a> {
    /// Lowercase host without port.
    pub host: Option<&'a str>,
    /// Path without query.
    pub path: &'a str,
    /// Method.
    pub method: &'a Method,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
}

impl<'a> RequestView<'a> {
    /// Builds the view of a request head.
    pub fn new(
        host: Option<&'a str>,
        uri: &'a Uri,
        method: &'a Method,
        headers: &'a HeaderMap,
    ) -> Self {
        let query = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        RequestView {
            host,
            path: uri.path(),
            method,
            headers,
            query,
        }
    }
}

/// One (route, hostname, match) combination, in precedence order within a listener.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// The route this entry belongs to.
    pub route: Arc<Route>,
    /// The route hostname of this entry; `None` when the route takes every hostname.
    pub host: Option<HostPattern>,
    /// Index into `route.matches`.
    pub matcher: usize,
}

/// The routes of a listener, sorted by precedence.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    entries: Vec<RouteEntry>,
}

/// A successful route lookup.
pub struct RouteHit<'a> {
    /// The route.
    pub route: &'a Arc<Route>,
    /// The condition that matched.
    pub matcher: &'a RequestMatcher,
}

impl RouteTable {
    /// Builds the table from routes in config order. Precedence follows the Gateway API:
    /// the most specific hostname, then an exact path, then a regex path, then the
    /// longest prefix, then a method condition, then more header conditions, then more
    /// query conditions; ties keep config order.
    pub fn new(routes: &[Arc<Route>]) -> Self {
        let mut entries = Vec::new();
        for route in routes {
            let hosts: Vec<Option<HostPattern>> = if route.hostnames.is_empty() {
                vec![None]
            } else {
                route.hostnames.iter().cloned().map(Some).collect()
            };
            for host in hosts {
                for matcher in 0..route.matches.len() {
                    entries.push(RouteEntry {
                        route: route.clone(),
                        host: host.clone(),
                        matcher,
                    });
                }
            }
        }
        // Stable sort: equal ranks keep config order.
        entries.sort_by_cached_key(|e| {
            let host_rank = e.host.as_ref().map_or((0, 0), HostPattern::specificity);
            Reverse((host_rank, e.route.matches[e.matcher].rank()))
        });
        RouteTable { entries }
    }

    /// Finds the first entry the request matches.
    pub fn find(&self, req: &RequestView<'_>) -> Option<RouteHit<'_>> {
        self.entries.iter().find_map(|e| {
            let host_ok = match (&e.host, req.host) {
                (None, _) => true,
                (Some(p), Some(h)) => p.matches(h),
                (Some(_), None) => false,
            };
            let matcher = &e.route.matches[e.matcher];
            (host_ok && matcher.matches(req)).then_some(RouteHit {
                route: &e.route,
                matcher,
            })
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_removes_only_a_numeric_port() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("example.com:"), "example.com");
        assert_eq!(strip_port("example.com:http"), "example.com:http");
        assert_eq!(strip_port("a:b:80"), "a:b");
        assert_eq!(strip_port("example.com:8０"), "example.com:8０");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn request_host_is_lowercase_without_port_and_prefers_the_authority() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "Example.COM:8080".parse().unwrap());
        let origin_form: Uri = "/path".parse().unwrap();
        assert_eq!(
            request_host(&origin_form, &headers).as_deref(),
            Some("example.com")
        );
        let absolute: Uri = "http://other.test:81/path".parse().unwrap();
        assert_eq!(
            request_host(&absolute, &headers).as_deref(),
            Some("other.test")
        );
        assert_eq!(request_host(&origin_form, &HeaderMap::new()), None);
    }
}
