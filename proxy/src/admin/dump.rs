//! The `config_dump` document: the running config in the file format, secrets redacted.

use serde_json::Value;

use crate::config::Config;
use crate::config::file;

/// Field names whose values are secrets and never leave the process.
fn is_secret(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "apikey",
        "privatekey",
        "credential",
    ]
    .iter()
    .any(|s| f.contains(s))
}

/// Header names whose values are credentials (besides any name [`is_secret`] flags,
/// like `x-auth-token`).
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Whether `map` is a header (`{name, value}`, as in header modifiers) carrying a
/// credential, such as an `authorization` header set towards a backend.
fn is_credential_header(map: &serde_json::Map<String, Value>) -> bool {
    let Some(Value::String(name)) = map.get("name") else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    map.contains_key("value")
        && (CREDENTIAL_HEADERS.contains(&name.as_str()) || is_secret(&name.replace('-', "")))
}

/// Replaces the value of every secret-named field, and of every header that carries a
/// credential, with `"<redacted>"`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if is_credential_header(map) {
                map.insert("value".into(), Value::String("<redacted>".into()));
                return;
            }
            for (k, v) in map.iter_mut() {
                if is_secret(k) && !v.is_null() {
                    *v = Value::String("<redacted>".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Renders the running config (nested, as the file spells it) with secrets redacted.
pub fn config_dump(config: &Config) -> Value {
    let mut doc = serde_json::to_value(file::nest(&config.resources)).unwrap_or(Value::Null);
    redact(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_are_redacted_at_any_depth() {
        let mut v = serde_json::json!({
            "backends": [{"name": "a", "auth": {"apiKey": "sk-123", "clientSecret": "s"}}],
            "password": "p",
            "key": "main"
        });
        redact(&mut v);
        let s = v.to_string();
        assert!(
            !s.contains("sk-123") && !s.contains("\"s\"") && !s.contains("\"p\""),
            "{s}"
        );
        assert_eq!(v["key"], "main");
    }

    #[test]
    fn credential_header_values_are_redacted_but_others_kept() {
        let mut v = serde_json::json!({"requestHeaders": {"set": [
            {"name": "Authorization", "value": "Bearer sk-live"},
            {"name": "x-goog-api-key", "value": "g-key"},
            {"name": "x-demo", "value": "1"}
        ], "remove": ["cookie"]}});
        redact(&mut v);
        let s = v.to_string();
        assert!(!s.contains("sk-live") && !s.contains("g-key"), "{s}");
        assert_eq!(v["requestHeaders"]["set"][2]["value"], "1");
        assert_eq!(v["requestHeaders"]["set"][0]["name"], "Authorization");
        assert_eq!(v["requestHeaders"]["remove"][0], "cookie");
    }
}
