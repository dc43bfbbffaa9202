//! JSON Schema of the local config file, generated from the proto descriptors.
//!
//! The schema follows the proto3 JSON mapping the loader accepts: camelCase property
//! names, enums as their value names, durations as strings like `"1.5s"`, 64-bit integers
//! as numbers or strings. Descriptions come from the comments in the `.proto` file, so
//! documenting a field once documents it in the schema too. This module only describes
//! the format; it does not validate anything.

use std::collections::BTreeMap;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

/// Fully qualified name of the message the local config file is an instance of.
pub const LOCAL_CONFIG_MESSAGE: &str = "agentmesh.config.v1.LocalConfig";

/// Generates the JSON Schema (draft 2020-12) of the local config file.
pub fn local_config_schema() -> Value {
    let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set is produced by our own build script");
    let mut generator = Generator::default();
    for file in &set.file {
        generator.index_file(file);
    }
    let root = generator.reference(&format!(".{LOCAL_CONFIG_MESSAGE}"));
    let defs: Map<String, Value> = std::mem::take(&mut generator.defs).into_iter().collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://agentmesh.dev/schemas/config.v1.json",
        "title": "agentmesh local configuration",
        "description": generator.message_docs.get(&format!(".{LOCAL_CONFIG_MESSAGE}")).cloned().unwrap_or_default(),
        "$ref": root["$ref"],
        "$defs": defs,
    })
}

#[derive(Default)]
struct Generator {
    messages: BTreeMap<String, (DescriptorProto, Vec<Option<String>>)>,
    message_docs: BTreeMap<String, String>,
    enums: BTreeMap<String, (Vec<String>, String)>,
    defs: BTreeMap<String, Value>,
}

impl Generator {
    fn index_file(&mut self, file: &FileDescriptorProto) {
        let package = file.package();
        let comments: BTreeMap<Vec<i32>, String> = file
            .source_code_info
            .iter()
            .flat_map(|info| info.location.iter())
            .filter_map(|loc| {
                let text = loc.leading_comments.as_deref()?.trim();
                (!text.is_empty()).then(|| (loc.path.clone(), clean_comment(text)))
            })
            .collect();
        for (i, msg) in file.message_type.iter().enumerate() {
            let name = format!(".{package}.{}", msg.name());
            let field_docs = (0..msg.field.len())
                .map(|f| comments.get(&vec![4, i as i32, 2, f as i32]).cloned())
                .collect();
            if let Some(doc) = comments.get(&vec![4, i as i32]) {
                self.message_docs.insert(name.clone(), doc.clone());
            }
            self.messages.insert(name, (msg.clone(), field_docs));
        }
        for (i, en) in file.enum_type.iter().enumerate() {
            let name = format!(".{package}.{}", en.name());
            let values = en.value.iter().map(|v| v.name().to_string()).collect();
            let doc = comments
                .get(&vec![5, i as i32])
                .cloned()
                .unwrap_or_default();
            let value_docs: Vec<String> = en
                .value
                .iter()
                .enumerate()
                .filter_map(|(v, val)| {
                    comments
                        .get(&vec![5, i as i32, 2, v as i32])
                        .map(|d| format!("`{}`: {d}", val.name()))
                })
                .collect();
            let doc = if value_docs.is_empty() {
                doc
            } else {
                format!("{doc}\n\n{}", value_docs.join("\n"))
            };
            self.enums.insert(name, (values, doc));
        }
    }

    /// Returns a `$ref` to the definition of a message, generating it on first use.
    fn reference(&mut self, type_name: &str) -> Value {
        let short = type_name
            .rsplit('.')
            .next()
            .unwrap_or(type_name)
            .to_string();
        if !self.defs.contains_key(&short) {
            // Reserve the name first so recursive messages terminate.
            self.defs.insert(short.clone(), Value::Null);
            let def = self.message_schema(type_name);
            self.defs.insert(short.clone(), def);
        }
        json!({ "$ref": format!("#/$defs/{short}") })
    }

    fn message_schema(&mut self, type_name: &str) -> Value {
        let Some((msg, field_docs)) = self.messages.get(type_name).cloned() else {
            return json!({});
        };
        let mut properties = Map::new();
        let mut oneofs: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for (field, doc) in msg.field.iter().zip(field_docs) {
            let mut schema = self.field_schema(field);
            if let (Some(doc), Some(obj)) = (doc, schema.as_object_mut()) {
                obj.insert("description".into(), Value::String(doc));
            }
            let json_name = field.json_name().to_string();
            if let Some(index) = field.oneof_index
                && !field.proto3_optional()
            {
                oneofs.entry(index).or_default().push(json_name.clone());
            }
            properties.insert(json_name, schema);
        }
        let mut out = json!({
            "type": "object",
            "additionalProperties": false,
            "properties": properties,
        });
        if let Some(doc) = self.message_docs.get(type_name) {
            out["description"] = Value::String(doc.clone());
        }
        // At most one member of each oneof may be given.
        let pairs: Vec<Value> = oneofs
            .values()
            .flat_map(|names| {
                names.iter().enumerate().flat_map(move |(i, a)| {
                    names[i + 1..]
                        .iter()
                        .map(move |b| json!({ "required": [a, b] }))
                })
            })
            .collect();
        if !pairs.is_empty() {
            out["not"] = json!({ "anyOf": pairs });
        }
        out
    }

    fn field_schema(&mut self, field: &prost_types::FieldDescriptorProto) -> Value {
        let item = match field.r#type() {
            Type::String => json!({ "type": "string" }),
            Type::Bool => json!({ "type": "boolean" }),
            Type::Uint32 | Type::Fixed32 => {
                json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX })
            }
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => json!({ "type": "integer" }),
            Type::Uint64 | Type::Fixed64 => json!({
                "oneOf": [
                    { "type": "integer", "minimum": 0 },
                    { "type": "string", "pattern": "^[0-9]+$" }
                ]
            }),
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => json!({
                "oneOf": [{ "type": "integer" }, { "type": "string", "pattern": "^-?[0-9]+$" }]
            }),
            Type::Double | Type::Float => json!({ "type": "number" }),
            Type::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Type::Enum => {
                let (values, doc) = self
                    .enums
                    .get(field.type_name())
                    .cloned()
                    .unwrap_or_default();
                json!({ "type": "string", "enum": values, "$comment": doc })
            }
            Type::Message | Type::Group => match field.type_name() {
                ".google.protobuf.Duration" => json!({
                    "type": "string",
                    "pattern": "^[0-9]+(\\.[0-9]{1,9})?s$",
                    "$comment": "a duration in seconds with an `s` suffix, for example `1.5s`"
                }),
                other => self.reference(other),
            },
        };
        if field.label() == Label::Repeated {
            json!({ "type": "array", "items": item })
        } else {
            item
        }
    }
}

/// Joins a proto comment into one paragraph per blank-line-separated block.
fn clean_comment(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\n\n", "\u{0}")
        .replace('\n', " ")
        .replace('\u{0}', "\n\n")
}
