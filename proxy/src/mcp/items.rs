//! What MCP items look like to the gateway: the list methods with the fields that name
//! their items, the resource URIs inside results that need the client-facing form, and
//! the merged offer (capabilities, instructions) of the targets.
//!
//! Pure functions over JSON values; no I/O.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
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

/// One target's page of a list, read without building trees: the items as the target
/// wrote them, and its cursor to the next page.
#[derive(Debug, Default)]
pub struct RawPage<'a> {
    /// The items; `None` when the page has no array under the list's field.
    pub items: Option<Vec<&'a RawValue>>,
    /// `nextCursor`, when it is a string.
    pub next_cursor: Option<String>,
}

/// Reads a list result (`{"tools": [...], "nextCursor": "..."}`) whose items sit under
/// `field`. Other fields are skipped.
pub fn read_page<'a>(result: &'a [u8], field: &str) -> Result<RawPage<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(result);
    let page = PageSeed { field }.deserialize(&mut de)?;
    de.end()?;
    Ok(page)
}

/// The fields of one item, in order, each value as written: to rewrite one field and
/// copy the others. Reuses `into`; false when the item is no object.
pub fn item_fields<'a>(item: &'a RawValue, into: &mut Vec<(Cow<'a, str>, &'a RawValue)>) -> bool {
    into.clear();
    let mut de = serde_json::Deserializer::from_str(item.get());
    FieldsSeed { into }.deserialize(&mut de).unwrap_or(false)
}

/// The string a raw JSON value holds, if it is one.
pub fn raw_str(v: &RawValue) -> Option<Cow<'_, str>> {
    match serde_json::from_str::<&str>(v.get()) {
        Ok(s) => Some(Cow::Borrowed(s)),
        // Escapes need a copy.
        Err(_) => serde_json::from_str::<String>(v.get()).ok().map(Cow::Owned),
    }
}

/// Appends `item` to `out` with field `key` set to the JSON string `value` (each
/// occurrence), the other fields copied as written.
pub fn write_item_with(
    out: &mut Vec<u8>,
    fields: &[(Cow<'_, str>, &RawValue)],
    key: &str,
    value: &str,
) {
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, k);
        out.push(b':');
        if k == key {
            write_json_str(out, value);
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    out.push(b'}');
}

/// Appends `s` to `out` as a JSON string.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

struct PageSeed<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = RawPage<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawPage<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = RawPage<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list result object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPage<'de>, A::Error> {
        let mut page = RawPage::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key == self.field {
                page.items = map.next_value_seed(ArraySeed)?;
            } else if key == "nextCursor" {
                page.next_cursor = match map.next_value::<Value>()? {
                    Value::String(c) => Some(c),
                    _ => None,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(page)
    }
}

/// An object key, borrowed unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// An array's elements as written; `None` for any other value.
struct ArraySeed;

impl<'de> DeserializeSeed<'de> for ArraySeed {
    type Value = Option<Vec<&'de RawValue>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed {
    type Value = Option<Vec<&'de RawValue>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(16));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            items.push(item);
        }
        Ok(Some(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object's fields as written, into a reused vector; false for any other value.
struct FieldsSeed<'v, 'a> {
    into: &'v mut Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_, 'de> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value::<&'de RawValue>()?;
            self.into.push((key, value));
        }
        Ok(true)
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
    fn raw_pages_give_items_as_written_and_the_cursor() {
        let text = br#"{"tools":[{"name":"a","x":{"y":[1,2]}},{"name":"b\u00e9"}],"nextCursor":"c1","resultType":"complete"}"#;
        let page = read_page(text, "tools").unwrap_or_default();
        let items = page.items.unwrap_or_default();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].get(), r#"{"name":"a","x":{"y":[1,2]}}"#);
        assert_eq!(page.next_cursor.as_deref(), Some("c1"));
        let mut fields = Vec::new();
        assert!(item_fields(items[1], &mut fields));
        assert_eq!(raw_str(fields[0].1).as_deref(), Some("b\u{e9}"));
        let mut out = Vec::new();
        assert!(item_fields(items[0], &mut fields));
        write_item_with(&mut out, &fields, "name", "t_\"a");
        let v: Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v, json!({ "name": "t_\"a", "x": { "y": [1, 2] } }));
        // No array under the field, or no object as an item: nothing to take.
        assert!(read_page(br#"{"tools":{"a":1}}"#, "tools").is_ok_and(|p| p.items.is_none()));
        assert!(!item_fields(items[0], &mut fields) || fields.len() == 2);
        assert!(read_page(b"{\"tools\":[1,", "tools").is_err());
    }

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
