//! The agentmesh resource model.
//!
//! The messages are defined once, in `proto/agentmesh/config/v1/resources.proto`, and
//! compiled here without a system `protoc`. Every message (de)serializes in the proto3
//! JSON mapping (camelCase names, enums as strings, durations as `"1.5s"`), and unknown
//! fields are rejected. This crate holds types only: validation and the conversion into
//! the proxy's internal form live in `agentmesh-proxy`.

pub mod schema;

/// Version 1 of the configuration resources.
#[allow(missing_docs, clippy::all)]
pub mod config {
    /// Version 1 of the configuration resources.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agentmesh.config.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/agentmesh.config.v1.serde.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every message in this crate, with source comments.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// The resource type agentmesh serves over xDS.
#[allow(missing_docs, clippy::all)]
pub mod xds {
    /// Version 1 of the xDS resource type.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agentmesh.xds.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/agentmesh.xds.v1.serde.rs"));
    }
}

/// The mesh CA service: sidecars get their intermediate CA from the controller.
#[allow(missing_docs, clippy::all)]
pub mod ca {
    /// Version 1 of the mesh CA service.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agentmesh.ca.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/agentmesh.ca.v1.serde.rs"));
    }
}

/// The xDS transport messages and service (our subset of Envoy's, wire-compatible).
#[allow(missing_docs, clippy::all)]
pub mod envoy {
    /// `envoy.config.*`.
    pub mod config {
        /// `envoy.config.core.*`.
        pub mod core {
            /// `envoy.config.core.v3`: the node identity.
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
            }
        }
    }
    /// `envoy.service.*`.
    pub mod service {
        /// `envoy.service.discovery.*`.
        pub mod discovery {
            /// `envoy.service.discovery.v3`: delta ADS.
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.discovery.v3.rs"));
            }
        }
    }
}

/// `google.rpc`: the status of a rejected update.
#[allow(missing_docs, clippy::all)]
pub mod google {
    /// `google.rpc`.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}
