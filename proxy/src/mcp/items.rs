//! What MCP items look like to the gateway: the list methods with the fields that name
//! their items, the resource URIs inside results that need the client-facing form, and
//! the merged offer (capabilities, instructions) of the targets.
//!
//! Pure functions over JSON values; no I/O.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::authz::ItemKind;
use super::names;
use super::upstream::Target;

/// The list methods and how their items are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`.
    Tools,
    /// `prompts/list`.
    Prompts,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    Templates,
}

impl ListKind {
    /// The list method for an MCP method name.
    pub fn of(method: &str) -> Option<ListKind> {
        Some(match method {
            "tools/list" => ListKind::Tools,
            "prompts/list" => ListKind::Prompts,
            "resources/list" => ListKind::Resources,
            "resources/templates/list" => ListKind::Templates,
            _ => return None,
        })
    }

    /// The MCP method.
    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }

    /// The result field holding the items, and the item field naming each.
    pub fn fields(self) -> (&'static str, &'static str) {
        match self {
            ListKind::Tools => ("tools", "name"),
            ListKind::Prompts => ("prompts", "name"),
            ListKind::Resources => ("resources", "uri"),
            ListKind::Templates => ("resourceTemplates", "uriTemplate"),
        }
    }

    /// The kind of item, for authorization.
    pub fn item(self) -> ItemKind {
        match self {
            ListKind::Tools => ItemKind::Tool,
            ListKind::Prompts => ItemKind::Prompt,
            ListKind::Resources | ListKind::Templates => ItemKind::Resource,
        }
    }
}

/// Rewrites the resource URIs inside a result (embedded resources, resource links, read
/// contents) to the client-facing form.
pub fn rewrite_uris(target: &str, v: &mut Value) {
    match v {
        Value::Object(obj) => {
            let is_resource_obj = obj.contains_key("mimeType")
                || obj.contains_key("text")
                || obj.contains_key("blob")
                || obj.get("type").and_then(Value::as_str) == Some("resource_link");
            if is_resource_obj
                && let Some(Value::String(uri)) = obj.get_mut("uri")
                && !uri.starts_with(names::URI_SCHEME)
            {
                *uri = names::rewrite_uri(target, uri);
            }
            for (k, child) in obj.iter_mut() {
                if k != "uri" && k != "_meta" && k != "structuredContent" {
                    rewrite_uris(target, child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_uris(target, i)),
        _ => {}
    }
}

/// The capabilities and instructions of one virtual server over the targets' initialize
/// results: a feature any target offers is offered (without list-changed notifications
/// or subscriptions, which are not relayed yet); instructions are joined, each tagged
/// with its target when there are several.
pub fn merge_offers(
    all: &[Arc<Target>],
    results: &[(&Arc<Target>, Value)],
) -> (Map<String, Value>, Option<String>) {
    let mut caps = Map::new();
    for (_, r) in results {
        let c = &r["capabilities"];
        for feature in ["tools", "prompts", "resources"] {
            if c.get(feature).is_some() {
                caps.insert(feature.into(), json!({ "listChanged": false }));
            }
        }
        for feature in ["logging", "completions"] {
            if c.get(feature).is_some() {
                caps.insert(feature.into(), json!({}));
            }
        }
    }
    if let Some(r) = caps.get_mut("resources") {
        r["subscribe"] = json!(false);
    }
    let texts: Vec<String> = results
        .iter()
        .filter_map(|(t, r)| Some((t, r.get("instructions")?.as_str()?)))
        .filter(|(_, text)| !text.is_empty())
        .map(|(t, text)| match all.len() {
            1 => text.to_owned(),
            _ => format!("[{}] {text}", t.name),
        })
        .collect();
    (caps, (!texts.is_empty()).then(|| texts.join("\n\n")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uris_inside_results_are_rewritten() {
        let mut v = json!({
            "contents": [{ "uri": "docs://a", "text": "x" }],
            "content": [
                { "type": "resource_link", "uri": "file:///b", "name": "b" },
                { "type": "resource", "resource": { "uri": "docs://c", "mimeType": "text/plain", "text": "" } },
                { "type": "text", "text": "uri: docs://d" }
            ],
            "structuredContent": { "uri": "keep://me", "text": "" }
        });
        rewrite_uris("t", &mut v);
        assert_eq!(v["contents"][0]["uri"], "agentmesh://t/docs%3A%2F%2Fa");
        assert_eq!(v["content"][0]["uri"], "agentmesh://t/file%3A%2F%2F%2Fb");
        assert_eq!(
            v["content"][1]["resource"]["uri"],
            "agentmesh://t/docs%3A%2F%2Fc"
        );
        assert_eq!(v["content"][2]["text"], "uri: docs://d");
        assert_eq!(v["structuredContent"]["uri"], "keep://me");
    }
}
