//! JSON-RPC 2.0 as MCP uses it: parsing one client message, building responses, and the
//! error type of the MCP handler, classified once into a JSON-RPC code, an HTTP status
//! and a metric outcome.
//!
//! This module knows nothing about targets or sessions beyond naming them in errors.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::upstream::TargetError;

/// JSON-RPC error codes the gateway answers with.
pub mod code {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a valid JSON-RPC message (or is a batch).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method on this server.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Parameters are missing or wrong (unknown tool, prompt or resource included).
    pub const INVALID_PARAMS: i64 = -32602;
    /// An upstream target failed (unreachable, bad answer).
    pub const UPSTREAM_FAILED: i64 = -32000;
    /// An upstream target did not answer in time.
    pub const UPSTREAM_TIMEOUT: i64 = -32001;
    /// The client's session does not exist (expired, ended, or never issued).
    pub const SESSION_NOT_FOUND: i64 = -32003;
    /// 2026-07-28: a routing header (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`)
    /// disagrees with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// A protocol version the gateway does not speak; `data` lists those it does.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// A request or notification id: a string or an integer.
pub type Id = Value;

/// One message a client POSTed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// A request, which gets a response.
    Request {
        /// The client's id, echoed in the response.
        id: Id,
        /// The method.
        method: String,
        /// The parameters, when given (an object).
        params: Option<Value>,
    },
    /// A notification: no response.
    Notification {
        /// The method.
        method: String,
        /// The parameters, when given.
        params: Option<Value>,
    },
    /// The client's answer to a server-to-client request.
    Response {
        /// The id of the request it answers.
        id: Id,
        /// The whole message (`jsonrpc`, `id`, and `result` or `error`).
        message: Value,
    },
}

/// Why the MCP handler could not answer a request with a result.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The body is not JSON.
    #[error("parse error: {0}")]
    Parse(String),
    /// The message is not a valid JSON-RPC request, notification or response.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The method is not served.
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// The parameters are wrong, or name a tool, prompt or resource nobody offers.
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// The session id is unknown, expired or ended.
    #[error("session not found: {0}")]
    SessionNotFound(&'static str),
    /// A routing header disagrees with the body (2026-07-28).
    #[error("header mismatch: {0}")]
    HeaderMismatch(String),
    /// The requested protocol version is not one the gateway speaks.
    #[error("Unsupported protocol version")]
    UnsupportedVersion {
        /// What the client asked for.
        requested: String,
    },
    /// `initialize` asked for a protocol version the gateway does not speak, or its
    /// targets share none.
    #[error("Unsupported protocol version: {detail}")]
    NoCommonVersion {
        /// What the client asked for.
        requested: String,
        /// The versions a client may ask for instead (none when the targets share none).
        supported: Vec<String>,
        /// Why, for the message.
        detail: String,
    },
    /// A target failed.
    #[error("target {target}: {error}")]
    Target {
        /// The target's name.
        target: Arc<str>,
        /// What went wrong.
        #[source]
        error: TargetError,
    },
    /// A target answered the request with a JSON-RPC error, passed on as it is.
    #[error("target {target} answered with error {}", error.get("code").unwrap_or(&Value::Null))]
    TargetRpc {
        /// The target's name.
        target: Arc<str>,
        /// The target's error object.
        error: Value,
    },
}

impl McpError {
    /// The JSON-RPC code sent to the client.
    pub fn code(&self) -> i64 {
        match self {
            Self::Parse(_) => code::PARSE_ERROR,
            Self::InvalidRequest(_) => code::INVALID_REQUEST,
            Self::MethodNotFound(_) => code::METHOD_NOT_FOUND,
            Self::InvalidParams(_) | Self::NoCommonVersion { .. } => code::INVALID_PARAMS,
            Self::SessionNotFound(_) => code::SESSION_NOT_FOUND,
            Self::HeaderMismatch(_) => code::HEADER_MISMATCH,
            Self::UnsupportedVersion { .. } => code::UNSUPPORTED_PROTOCOL_VERSION,
            Self::Target { error, .. } => match error {
                TargetError::Timeout(_) => code::UPSTREAM_TIMEOUT,
                _ => code::UPSTREAM_FAILED,
            },
            Self::TargetRpc { error, .. } => error
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(code::UPSTREAM_FAILED),
        }
    }

    /// The HTTP status of the response carrying this error. Malformed messages and
    /// session problems are HTTP errors (as the transport spec asks); a well-formed
    /// request that fails gets 200 with a JSON-RPC error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Parse(_)
            | Self::InvalidRequest(_)
            | Self::HeaderMismatch(_)
            | Self::UnsupportedVersion { .. } => StatusCode::BAD_REQUEST,
            Self::SessionNotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        }
    }

    /// The metric outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Parse(_)
            | Self::InvalidRequest(_)
            | Self::InvalidParams(_)
            | Self::HeaderMismatch(_)
            | Self::UnsupportedVersion { .. }
            | Self::NoCommonVersion { .. } => "invalid",
            Self::MethodNotFound(_) => "method_not_found",
            Self::SessionNotFound(_) => "no_session",
            Self::Target { error, .. } => match error {
                TargetError::Timeout(_) => "timeout",
                _ => "upstream_failed",
            },
            Self::TargetRpc { .. } => "error",
        }
    }

    /// The JSON-RPC error object. Upstream details (addresses, OS errors) stay in the log:
    /// the client learns which target failed and how, not where it lives.
    pub fn to_error_object(&self) -> Value {
        match self {
            Self::TargetRpc { error, .. } => error.clone(),
            Self::Target { target, error } => json!({
                "code": self.code(),
                "message": format!("target {target} {}", error.summary()),
            }),
            Self::UnsupportedVersion { requested } => json!({
                "code": self.code(),
                "message": self.to_string(),
                "data": { "supported": super::all_versions(), "requested": requested },
            }),
            Self::NoCommonVersion {
                requested,
                supported,
                ..
            } => json!({
                "code": self.code(),
                "message": self.to_string(),
                "data": { "supported": supported, "requested": requested },
            }),
            other => json!({ "code": other.code(), "message": other.to_string() }),
        }
    }
}

/// Parses one POSTed body. A batch (JSON array) is refused: protocol 2025-06-18 removed
/// batching and the gateway does not serve it for older versions either.
pub fn parse(body: &[u8]) -> Result<ClientMessage, McpError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| McpError::Parse(format!("body is not JSON: {e}")))?;
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Array(a) if a.is_empty() => {
            return Err(McpError::InvalidRequest("empty batch".into()));
        }
        Value::Array(_) => {
            return Err(McpError::InvalidRequest(
                "JSON-RPC batches are not supported; send one message per request".into(),
            ));
        }
        _ => {
            return Err(McpError::InvalidRequest(
                "a JSON-RPC message must be an object".into(),
            ));
        }
    };
    message(obj)
}

fn message(mut obj: Map<String, Value>) -> Result<ClientMessage, McpError> {
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(McpError::InvalidRequest(
            "\"jsonrpc\" must be \"2.0\"".into(),
        ));
    }
    let id = match obj.remove("id") {
        None => None,
        Some(id @ Value::String(_)) => Some(id),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
        Some(_) => {
            return Err(McpError::InvalidRequest(
                "\"id\" must be a string or an integer".into(),
            ));
        }
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => Some(p),
        Some(_) => {
            return Err(McpError::InvalidRequest(
                "\"params\" must be an object".into(),
            ));
        }
    };
    match (obj.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(ClientMessage::Request { id, method, params }),
        (Some(Value::String(method)), None) => Ok(ClientMessage::Notification { method, params }),
        (Some(_), _) => Err(McpError::InvalidRequest(
            "\"method\" must be a string".into(),
        )),
        (None, Some(id)) if obj.contains_key("result") || obj.contains_key("error") => {
            let mut whole = obj;
            whole.insert("id".into(), id.clone());
            Ok(ClientMessage::Response {
                id,
                message: Value::Object(whole),
            })
        }
        (None, _) => Err(McpError::InvalidRequest(
            "a message needs a \"method\" (request or notification) or a \"result\"/\"error\" with an \"id\" (response)".into(),
        )),
    }
}

/// A success response.
pub fn result(id: &Id, result: Value) -> Value {
    // Built by hand: `json!` would serialize `result` into a deep copy (it takes
    // expressions by reference), which costs more than the rest of a large list.
    let mut obj = Map::new();
    obj.insert("jsonrpc".into(), "2.0".into());
    obj.insert("id".into(), id.clone());
    obj.insert("result".into(), result);
    Value::Object(obj)
}

/// An error response; `id` is null when the request's id could not be read.
pub fn error(id: Option<&Id>, err: &McpError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": err.to_error_object() })
}

/// A request the gateway sends to a target.
pub fn request(id: &Id, method: &str, params: Option<Value>) -> Value {
    let mut obj = Map::new();
    obj.insert("jsonrpc".into(), "2.0".into());
    obj.insert("id".into(), id.clone());
    obj.insert("method".into(), method.into());
    if let Some(p) = params {
        obj.insert("params".into(), p);
    }
    Value::Object(obj)
}

/// A notification the gateway sends to a target.
pub fn notification(method: &str, params: Option<Value>) -> Value {
    let mut obj = Map::new();
    obj.insert("jsonrpc".into(), "2.0".into());
    obj.insert("method".into(), method.into());
    if let Some(p) = params {
        obj.insert("params".into(), p);
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses_are_told_apart() {
        let req = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#);
        assert!(
            matches!(req, Ok(ClientMessage::Request { ref method, .. }) if method == "tools/list")
        );
        let note = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(matches!(note, Ok(ClientMessage::Notification { .. })));
        let resp = parse(br#"{"jsonrpc":"2.0","id":"s1","result":{}}"#);
        assert!(matches!(resp, Ok(ClientMessage::Response { .. })));
    }

    #[test]
    fn malformed_messages_get_parse_or_invalid_request_codes() {
        let code_of = |b: &[u8]| parse(b).err().map(|e| (e.code(), e.http_status()));
        let bad = Some((code::INVALID_REQUEST, StatusCode::BAD_REQUEST));
        assert_eq!(
            code_of(b"{nope"),
            Some((code::PARSE_ERROR, StatusCode::BAD_REQUEST))
        );
        assert_eq!(code_of(b"[]"), bad);
        assert_eq!(
            code_of(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            bad
        );
        assert_eq!(code_of(br#"{"id":1,"method":"ping"}"#), bad);
        assert_eq!(
            code_of(br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            bad
        );
        assert_eq!(code_of(br#"{"jsonrpc":"2.0","id":1,"method":3}"#), bad);
        assert_eq!(
            code_of(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#),
            bad
        );
        assert_eq!(code_of(br#"{"jsonrpc":"2.0","id":1}"#), bad);
        assert_eq!(code_of(b"42"), bad);
    }
}
