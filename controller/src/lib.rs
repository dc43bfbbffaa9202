//! agentmesh-controller: the control plane.
//!
//! A **source** reads Kubernetes objects into [`objects::Objects`] (`folder`: a directory
//! of manifests, watched for changes); [`translate`] turns them, in a pure function, into
//! the resources of each proxy and the status of each object; a [`snapshot::Catalog`]
//! holds the result and gives each node its [`snapshot::Snapshot`] (resources named and
//! versioned); the **delta ADS server** (`ads`) sends each connected proxy the resources
//! it does not have yet, and only those, whenever its snapshot changes.

pub mod ads;
pub mod auth;
pub mod folder;
pub mod objects;
pub mod snapshot;
pub mod status;
pub mod translate;

/// An error type that can cross task and module boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
