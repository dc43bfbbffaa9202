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

/// Replaces the value of every secret-named field with `"<redacted>"`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
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
}
