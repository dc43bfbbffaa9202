//! agentmesh-controller: the control plane.
//!
//! A **source** produces the flat resource model (`folder`: a directory of config files
//! in the proxy's own format, watched for changes); a [`snapshot::Snapshot`] names and
//! versions each resource; the **delta ADS server** (`ads`) sends each connected proxy the
//! resources it does not have yet, and only those, whenever the snapshot changes.
//!
//! In this first slice the folder holds agentmesh's own resource model (the nested
//! `LocalConfig` format of `agentmesh-proxy --config`, one per file, merged). Gateway API
//! manifests, the Kubernetes API source, per-pod scoping and status come in later slices.

pub mod ads;
pub mod auth;
pub mod folder;
pub mod snapshot;

/// An error type that can cross task and module boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
