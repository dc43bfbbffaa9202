//! agentmesh-proxy: the data plane.
//!
//! Modules follow the path of a request: `listen` accepts connections and terminates
//! TLS, `http` routes each request, applies its traffic policies and forwards it
//! upstream, `config` turns the resource model into the validated internal form the other
//! modules read, `telemetry` counts and logs what happened, and `admin` serves health,
//! metrics and the admin API.

pub mod admin;
pub mod app;
pub mod config;
pub mod http;
pub mod listen;
pub mod mcp;
pub mod policy;
pub mod tcp;
pub mod telemetry;
pub mod workers;

/// An error type that can cross task and module boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
