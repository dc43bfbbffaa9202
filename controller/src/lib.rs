//! agentmesh-controller: the control plane.
//!
//! A **source** reads Kubernetes objects into [`objects::Objects`] (`folder`: a directory
//! of manifests, watched for changes; [`kubernetes`]: the API server, through
//! reflectors, which also receives the status written back); [`translate`] turns them, in a pure function, into
//! the resources of each proxy and the status of each object; a [`snapshot::Catalog`]
//! holds the result and gives each node its [`snapshot::Snapshot`] (resources named and
//! versioned); the **delta ADS server** (`ads`) sends each connected proxy the resources
//! it does not have yet, and only those, whenever its snapshot changes. [`render`]
//! gives each Gateway of our class the Deployment and Service that run its proxy.

pub mod addresses;
pub mod ads;
pub mod auth;
pub mod ca_service;
pub mod crd;
pub mod folder;
pub mod intermediate;
pub mod kubernetes;
pub mod mesh_ca;
pub mod mesh_ca_files;
pub mod objects;
pub mod redact;
pub mod render;
pub mod snapshot;
pub mod status;
pub mod translate;
pub mod webhook;

/// An error type that can cross task and module boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
