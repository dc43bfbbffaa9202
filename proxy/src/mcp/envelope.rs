//! The 2026-07-28 per-request envelope, both ways: the `_meta` keys every request
//! carries (protocol version, client capabilities, client info), the routing headers
//! mirroring the body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) with the
//! SDK's header-value encoding, and the fields results of that protocol add.
//!
//! `modern` checks what clients of this style send; `streamable` wraps what the gateway
//! sends to targets that speak only this style. Pure functions over JSON values; no I/O.

use serde_json::{Value, json};

use super::MODERN_VERSIONS;
use super::jsonrpc::code;

/// `_meta` key of the protocol version.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client's capabilities.
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the client's name and version.
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key of the server's name and version in a result.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// Header mirroring the JSON-RPC method.
pub const METHOD_HEADER: &str = "mcp-method";
/// Header mirroring the tool or prompt name, or the resource URI.
pub const NAME_HEADER: &str = "mcp-name";

/// Whether `version` is one of the 2026-07-28 style (no `initialize`, no sessions).
pub fn is_modern_version(version: &str) -> bool {
    MODERN_VERSIONS.contains(&version)
}

/// The params field `Mcp-Name` mirrors for `method`, if any.
pub fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// A header value as the SDK encodes it: printable ASCII without edge whitespace
/// verbatim, anything else as `=?base64?...?=`.
pub fn encode_header_value(v: &str) -> String {
    use base64::Engine as _;
    let safe = !v.is_empty()
        && v.bytes().all(|b| (0x20..0x7f).contains(&b))
        && v.trim() == v
        && !(v.starts_with("=?base64?") && v.ends_with("?="));
    if safe {
        v.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
        )
    }
}

/// The inverse of [`encode_header_value`]; `None` for a malformed encoding.
pub fn decode_header_value(v: &str) -> Option<String> {
    use base64::Engine as _;
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_owned()),
    }
}

/// A request or notification of the gateway, wrapped for a 2026-07-28 target: the
/// envelope in `params._meta`, with the gateway's own identity. It claims what it can
/// relay (elicitation, sampling, roots), as its `initialize` does: in this style a
/// server asks for input with an `input_required` result, which the gateway completes
/// with a client of the session style (as server requests on its response stream, see
/// `federation`) or passes on to a client of this style, who retries the request
/// itself. A client without the capability answers with an error, which fails the
/// request.
pub fn wrap(msg: &Value, version: &str) -> Value {
    let mut msg = msg.clone();
    if let Some(obj) = msg.as_object_mut() {
        let params = obj.entry("params").or_insert_with(|| json!({}));
        if let Some(p) = params.as_object_mut() {
            let meta = p.entry("_meta").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.insert(META_VERSION.into(), json!(version));
                m.insert(
                    META_CAPABILITIES.into(),
                    json!({ "elicitation": {}, "sampling": {}, "roots": {} }),
                );
                m.insert(
                    META_CLIENT_INFO.into(),
                    json!({ "name": "agentmesh", "version": env!("CARGO_PKG_VERSION") }),
                );
            }
        }
    }
    msg
}

/// The routing headers of a wrapped message: `(Mcp-Method, Mcp-Name)` values.
pub fn routing_headers(msg: &Value) -> (Option<&str>, Option<String>) {
    let method = msg.get("method").and_then(Value::as_str);
    let name = method
        .and_then(name_field)
        .and_then(|f| msg.get("params")?.get(f)?.as_str())
        .map(encode_header_value);
    (method, name)
}

/// Removes from a 2026-07-28 result what only that style carries (`resultType:
/// complete`, cache hints, the server's identity), so that the result reads like one of
/// the session style. A result of another type (input required) is left whole.
pub fn unwrap_result(result: &mut Value) {
    let Some(obj) = result.as_object_mut() else {
        return;
    };
    if obj.get("resultType").is_some_and(|t| t != "complete") {
        return;
    }
    for k in ["resultType", "ttlMs", "cacheScope"] {
        obj.remove(k);
    }
    let empty = match obj.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(m) => {
            m.remove(META_SERVER_INFO);
            m.is_empty()
        }
        None => false,
    };
    if empty {
        obj.remove("_meta");
    }
}

/// Whether a result is the 2026-07-28 `input_required` kind: the request is to be
/// retried with `inputResponses` to its `inputRequests` and its `requestState`.
pub fn is_input_required(result: &Value) -> bool {
    result.get("resultType").and_then(Value::as_str) == Some("input_required")
}

/// Whether requests of `method` may be answered `input_required`.
pub fn may_require_input(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// Whether a `server/discover` result lists a version of the 2026-07-28 style the
/// gateway speaks (a server of the session style only may answer it listing none).
pub fn offers_modern(discovered: &Value) -> bool {
    discovered
        .get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|vs| vs.iter().any(|v| v.as_str().is_some_and(is_modern_version)))
}

/// The 2026-07-28 version a refusal names, when a JSON-RPC error is the refusal of a
/// server that speaks only that style: `UNSUPPORTED_PROTOCOL_VERSION` whose
/// `data.supported` lists a version of that style the gateway speaks.
pub fn modern_only_refusal(error: &Value) -> Option<&'static str> {
    if error.get("code").and_then(Value::as_i64) != Some(code::UNSUPPORTED_PROTOCOL_VERSION) {
        return None;
    }
    let supported = error.get("data")?.get("supported")?.as_array()?;
    MODERN_VERSIONS
        .iter()
        .rev()
        .find(|v| supported.iter().any(|s| s.as_str() == Some(v)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_round_trip_and_plain_ascii_stays_verbatim() {
        assert_eq!(encode_header_value("alpha_echo"), "alpha_echo");
        assert_eq!(encode_header_value("é"), "=?base64?w6k=?=");
        assert_eq!(encode_header_value(" x"), "=?base64?IHg=?=");
        for v in ["notes://a/b c", "é", " x", "=?base64?AA==?="] {
            assert_eq!(
                decode_header_value(&encode_header_value(v)).as_deref(),
                Some(v)
            );
        }
    }

    #[test]
    fn wrapped_requests_carry_the_envelope_and_name_their_routing_headers() {
        let msg = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "echo", "_meta": { "progressToken": 7 } } });
        let w = wrap(&msg, "2026-07-28");
        assert_eq!(w["params"]["_meta"][META_VERSION], "2026-07-28");
        assert_eq!(w["params"]["_meta"]["progressToken"], 7);
        assert_eq!(
            routing_headers(&w),
            (Some("tools/call"), Some("echo".into()))
        );
        let list = wrap(&json!({ "id": 2, "method": "tools/list" }), "2026-07-28");
        assert_eq!(
            list["params"]["_meta"][META_CAPABILITIES],
            json!({ "elicitation": {}, "sampling": {}, "roots": {} })
        );
        assert_eq!(routing_headers(&list), (Some("tools/list"), None));
    }

    #[test]
    fn results_lose_only_what_the_new_style_adds() {
        let mut r = json!({ "content": [], "resultType": "complete", "ttlMs": 0,
            "_meta": { META_SERVER_INFO: { "name": "g" } } });
        unwrap_result(&mut r);
        assert_eq!(r, json!({ "content": [] }));
        let mut pending = json!({ "resultType": "input_required" });
        unwrap_result(&mut pending);
        assert_eq!(pending["resultType"], "input_required");
    }

    #[test]
    fn only_a_refusal_naming_a_modern_version_marks_a_modern_only_server() {
        let refusal = |supported: Value| json!({ "code": code::UNSUPPORTED_PROTOCOL_VERSION, "data": { "supported": supported } });
        assert_eq!(
            modern_only_refusal(&refusal(json!(["2026-07-28"]))),
            Some("2026-07-28")
        );
        assert_eq!(modern_only_refusal(&refusal(json!(["2025-06-18"]))), None);
        assert_eq!(
            modern_only_refusal(
                &json!({ "code": -32602, "data": { "supported": ["2026-07-28"] } })
            ),
            None
        );
    }
}
