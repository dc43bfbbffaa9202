//! The checked-in JSON Schema of the config file must match the proto types.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema/agentmesh-config.schema.json")
}

#[test]
fn checked_in_schema_matches_the_proto_types() {
    let generated = serde_json::to_string_pretty(&agentmesh_proto::schema::local_config_schema())
        .unwrap()
        + "\n";
    let path = checked_in_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is stale: run `UPDATE_GOLDEN=1 cargo test -p agentmesh-proto` and commit it",
        path.display()
    );
}

#[test]
fn schema_documents_fields_from_proto_comments() {
    let schema = agentmesh_proto::schema::local_config_schema();
    let port = &schema["$defs"]["Bind"]["properties"]["port"];
    assert_eq!(port["type"], "integer");
    assert!(port["description"].as_str().unwrap().contains("TCP port"));
    assert_eq!(schema["$defs"]["Bind"]["additionalProperties"], false);
}
