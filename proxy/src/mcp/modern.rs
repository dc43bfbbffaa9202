//! The 2026-07-28 protocol style, downstream: no `initialize` and no session id. A client
//! may ask `server/discover` for the merged capabilities and instructions; every request
//! carries the protocol version, client capabilities and (optionally) client info in
//! `params._meta`, and mirrors the version, method and name in the `MCP-Protocol-Version`,
//! `Mcp-Method` and `Mcp-Name` headers.
//!
//! Checks, in the order the Python SDK's server runs them (`mcp.shared.inbound`): a
//! routing header given twice, or `_meta` without the version or capabilities, fails;
//! a header that disagrees with the body is `HEADER_MISMATCH` (-32020); a version the
//! gateway does not speak is `UNSUPPORTED_PROTOCOL_VERSION` (-32022) with the versions
//! it does speak in `data.supported`. Error statuses follow the SDK's table: 400 for
//! the codes above and for parse, invalid request and invalid params; 404 for an
//! unknown method; 200 otherwise.
//!
//! Targets keep speaking the session style. For these clients the gateway holds the
//! upstream sessions itself, one set per caller identity (a hash of the
//! `Authorization` header; callers without one share a set), opened on first use,
//! re-initialized when lost and ended after the backend's idle timeout, like client
//! sessions. Per-session stdio targets therefore run one process per caller identity.
//! In stateless mode nothing is held: each request opens the upstream sessions it needs
//! and ends them after it.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use http::HeaderMap;
use http::header;
use serde_json::{Map, Value, json};

use super::envelope::{decode_header_value, name_field};
use super::federation::{Ctx, ListKind, Served, Session};
use super::items::merge_offers;
use super::jsonrpc::{ClientMessage, McpError, code};
use super::upstream::VERSION_HEADER;
use super::{MODERN_VERSIONS, SUPPORTED_VERSIONS, all_versions};

pub use super::envelope::{
    META_CAPABILITIES, META_CLIENT_INFO, META_SERVER_INFO, META_VERSION, METHOD_HEADER, NAME_HEADER,
};
/// Prefix of the ids of gateway-held sessions in the session table.
const HELD_PREFIX: &str = "held:";

/// Whether a message is of the 2026-07-28 style: its `MCP-Protocol-Version` header is
/// such a version, it is `server/discover`, or it comes without a session id and with
/// the version in `_meta`.
pub fn is_modern(headers: &HeaderMap, msg: &ClientMessage) -> bool {
    if headers
        .get(VERSION_HEADER)
        .is_some_and(|v| MODERN_VERSIONS.iter().any(|m| v.as_bytes() == m.as_bytes()))
    {
        return true;
    }
    let (method, params) = match msg {
        ClientMessage::Request { method, params, .. }
        | ClientMessage::Notification { method, params } => (method, params),
        ClientMessage::Response { .. } => return false,
    };
    method == "server/discover"
        || (headers.get(super::upstream::SESSION_HEADER).is_none()
            && params
                .as_ref()
                .and_then(|p| p.get("_meta"))
                .is_some_and(|m| m.get(META_VERSION).is_some()))
}

/// Whether a held-session id (rather than a client session id).
pub fn is_held(id: &str) -> bool {
    id.starts_with(HELD_PREFIX)
}

/// The HTTP status of an error answered to a 2026-07-28 request.
pub fn status_of(err: &McpError) -> http::StatusCode {
    match err.code() {
        code::PARSE_ERROR
        | code::INVALID_REQUEST
        | code::INVALID_PARAMS
        | code::HEADER_MISMATCH
        | code::UNSUPPORTED_PROTOCOL_VERSION => http::StatusCode::BAD_REQUEST,
        code::METHOD_NOT_FOUND => http::StatusCode::NOT_FOUND,
        _ => http::StatusCode::OK,
    }
}

/// Checks a notification's version header: the SDK acknowledges notifications it
/// cannot act on, but tells a client its version is not spoken.
pub fn check_notification(headers: &HeaderMap) -> Result<(), McpError> {
    match header_str(headers, VERSION_HEADER) {
        Some(v) if !MODERN_VERSIONS.contains(&v) => Err(McpError::UnsupportedVersion {
            requested: v.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Checks a request's envelope and routing headers; returns the params without the
/// envelope keys (targets negotiated their own).
pub fn check_request(
    headers: &HeaderMap,
    method: &str,
    params: Option<Value>,
) -> Result<Option<Value>, McpError> {
    for name in [VERSION_HEADER, METHOD_HEADER, NAME_HEADER] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(McpError::HeaderMismatch(format!(
                "{name} header appears more than once"
            )));
        }
    }
    let meta = params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    let Some(meta) = meta else {
        return Err(McpError::InvalidParams(format!(
            "params._meta must be an object carrying {META_VERSION:?} and {META_CAPABILITIES:?}"
        )));
    };
    let missing: Vec<&str> = [META_VERSION, META_CAPABILITIES]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(McpError::InvalidParams(format!(
            "params._meta is missing {}",
            missing.join(", ")
        )));
    }
    let version = &meta[META_VERSION];
    if header_str(headers, VERSION_HEADER).is_none_or(|h| Some(h) != version.as_str()) {
        return Err(McpError::HeaderMismatch(
            "mcp-protocol-version header does not match params._meta's protocol version".into(),
        ));
    }
    if header_str(headers, METHOD_HEADER) != Some(method) {
        return Err(McpError::HeaderMismatch(
            "mcp-method header does not match the request's method".into(),
        ));
    }
    if let Some(field) = name_field(method)
        && let Some(body) = params.as_ref().and_then(|p| p.get(field))
        && header_str(headers, NAME_HEADER)
            .and_then(decode_header_value)
            .as_deref()
            != body.as_str()
    {
        return Err(McpError::HeaderMismatch(format!(
            "mcp-name header does not match params.{field}"
        )));
    }
    let Some(version) = version.as_str() else {
        return Err(McpError::InvalidParams(
            "the protocol version in params._meta must be a string".into(),
        ));
    };
    if !MODERN_VERSIONS.contains(&version) {
        return Err(McpError::UnsupportedVersion {
            requested: version.to_owned(),
        });
    }
    let mut params = params;
    if let Some(p) = params.as_mut().and_then(Value::as_object_mut) {
        let empty = match p.get_mut("_meta").and_then(Value::as_object_mut) {
            Some(m) => {
                for k in [META_VERSION, META_CAPABILITIES, META_CLIENT_INFO] {
                    m.remove(k);
                }
                m.is_empty()
            }
            None => false,
        };
        if empty {
            p.remove("_meta");
        }
    }
    Ok(params)
}

/// Serves a checked request: `server/discover`, `ping`, or any method of the session
/// style over the caller's held session (in stateless mode, over upstream sessions
/// opened for this request and ended after it). The result carries the fields the
/// 2026-07-28 schema requires.
pub async fn serve(
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
    id: &Value,
    method: &str,
    params: Option<Value>,
) -> Result<Served, McpError> {
    let session = if ctx.backend.stateless {
        Session::stateless(SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1])
    } else {
        held_session(ctx, headers)
    };
    let result = serve_in(ctx, &session, id, method, params).await;
    session.finish(ctx.backend, ctx.timeout);
    result
}

async fn serve_in(
    ctx: &Ctx<'_>,
    session: &Session,
    id: &Value,
    method: &str,
    params: Option<Value>,
) -> Result<Served, McpError> {
    if let Some(kind) = ListKind::of(method) {
        // Lists are filtered per caller: cacheable by this caller only, and not for
        // long, as targets change.
        let mut list = ctx.list(session, kind, id, params).await?;
        list.append_fields(&[
            ("resultType", &json!("complete")),
            ("ttlMs", &json!(0)),
            ("cacheScope", &json!("private")),
        ]);
        return Ok(Served::List(list));
    }
    let mut result = match method {
        "server/discover" => discover(ctx, session).await?,
        "ping" => json!({}),
        "initialize" => {
            return Err(McpError::InvalidRequest(
                "initialize is not part of the 2026-07-28 protocol; send requests directly".into(),
            ));
        }
        "logging/setLevel" => ctx.broadcast(session, method, id, params).await?,
        _ => ctx.route(session, method, id, params).await?,
    };
    if let Some(obj) = result.as_object_mut() {
        obj.entry("resultType").or_insert(json!("complete"));
        let cacheable = matches!(method, "resources/read" | "server/discover");
        if cacheable {
            obj.entry("ttlMs").or_insert(json!(0));
            obj.entry("cacheScope").or_insert(json!("private"));
        }
    }
    Ok(Served::Tree(result))
}

/// `server/discover`: the targets' merged offer. A target the gateway never
/// initialized is initialized now (in the caller's held session).
async fn discover(ctx: &Ctx<'_>, session: &Session) -> Result<Value, McpError> {
    let unknown: Vec<_> = ctx
        .backend
        .targets
        .iter()
        .filter(|t| ctx.backend.state.offer(&t.name).is_none())
        .collect();
    let opened =
        futures_util::future::join_all(unknown.iter().map(|t| ctx.reopen(session, t))).await;
    for (t, r) in unknown.iter().zip(opened) {
        ctx.absorb(t, "initialize", r)?;
    }
    let offers: Vec<_> = ctx
        .backend
        .targets
        .iter()
        .filter_map(|t| Some((t, ctx.backend.state.offer(&t.name)?)))
        .collect();
    let (caps, instructions) = merge_offers(&ctx.backend.targets, &offers);
    let mut meta = Map::new();
    meta.insert(
        META_SERVER_INFO.into(),
        json!({ "name": &*ctx.backend.key, "version": env!("CARGO_PKG_VERSION") }),
    );
    let mut result = json!({
        "supportedVersions": all_versions(),
        "capabilities": caps,
        "_meta": meta,
    });
    if let Some(text) = instructions {
        result["instructions"] = json!(text);
    }
    Ok(result)
}

/// The caller's held session, by identity.
fn held_session(ctx: &Ctx<'_>, headers: &HeaderMap) -> Session {
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let id = match headers.get(header::AUTHORIZATION) {
        Some(auth) => {
            let mut h = KEYS.get_or_init(Default::default).build_hasher();
            h.write(auth.as_bytes());
            format!("{HELD_PREFIX}{:016x}", h.finish())
        }
        None => format!("{HELD_PREFIX}anonymous"),
    };
    let later = ctx.backend.state.sessions.touch_held(&id);
    Session::held(id, later)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                *k,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    fn params(version: &str, name: &str) -> Option<Value> {
        Some(json!({ "name": name, "_meta": { META_VERSION: version, META_CAPABILITIES: {} } }))
    }

    fn code_of(r: Result<Option<Value>, McpError>) -> i64 {
        r.err().map(|e| e.code()).unwrap_or(0)
    }

    #[test]
    fn routing_headers_must_match_the_body() {
        let ok = headers(&[
            (VERSION_HEADER, "2026-07-28"),
            (METHOD_HEADER, "tools/call"),
            (NAME_HEADER, "a_echo"),
        ]);
        let checked = check_request(&ok, "tools/call", params("2026-07-28", "a_echo"));
        assert_eq!(
            checked.ok().flatten(),
            Some(json!({ "name": "a_echo" })),
            "envelope keys stripped"
        );
        let encoded = headers(&[
            (VERSION_HEADER, "2026-07-28"),
            (METHOD_HEADER, "tools/call"),
            (NAME_HEADER, "=?base64?w6k=?="),
        ]);
        assert!(check_request(&encoded, "tools/call", params("2026-07-28", "é")).is_ok());
        for bad in [
            headers(&[
                (VERSION_HEADER, "2026-07-28"),
                (METHOD_HEADER, "tools/list"),
                (NAME_HEADER, "a_echo"),
            ]),
            headers(&[
                (VERSION_HEADER, "2026-07-28"),
                (METHOD_HEADER, "tools/call"),
                (NAME_HEADER, "b_echo"),
            ]),
            headers(&[(METHOD_HEADER, "tools/call"), (NAME_HEADER, "a_echo")]),
            headers(&[
                (VERSION_HEADER, "2026-07-28"),
                (METHOD_HEADER, "tools/call"),
                (METHOD_HEADER, "tools/call"),
                (NAME_HEADER, "a_echo"),
            ]),
        ] {
            let r = check_request(&bad, "tools/call", params("2026-07-28", "a_echo"));
            assert_eq!(code_of(r), code::HEADER_MISMATCH);
        }
    }

    #[test]
    fn unknown_versions_and_missing_envelopes_are_refused() {
        let h = headers(&[
            (VERSION_HEADER, "2099-01-01"),
            (METHOD_HEADER, "tools/list"),
        ]);
        let err = check_request(&h, "tools/list", params("2099-01-01", "x")).err();
        let obj = err
            .as_ref()
            .map(McpError::to_error_object)
            .unwrap_or_default();
        assert_eq!(obj["code"], code::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(obj["data"]["requested"], "2099-01-01");
        assert_eq!(obj["data"]["supported"], json!(all_versions()));
        assert_eq!(
            err.map(|e| status_of(&e)),
            Some(http::StatusCode::BAD_REQUEST)
        );
        let r = check_request(&h, "tools/list", Some(json!({})));
        assert_eq!(code_of(r), code::INVALID_PARAMS);
    }
}
