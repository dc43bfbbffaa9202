//! `agentmesh-injector`: puts agentmesh into agent pods.
//!
//! Given a pod, the injector adds the `agentmesh-init` init container (capture rules) and
//! the `agentmesh-proxy` sidecar, as an RFC 6902 JSON Patch that keeps everything the user
//! wrote. The same code serves the mutating admission webhook (the controller calls
//! [`Injector::review`] and [`webhook::serve`]) and the `agentmesh-injector inject` CLI.
//!
//! The flow: [`settings`] (per installation, from [`cli`] flags) and [`annotations`] (per
//! pod) say what to do, [`containers`] builds the injected objects, [`inject`] decides and
//! writes the patch, [`review`] wraps it in an AdmissionReview, [`webhook`] serves that
//! over HTTPS with certificates from [`tls`], [`metrics`] counts outcomes, [`manifests`]
//! applies it to YAML files, and [`selectors`] tells the chart which pods the API server
//! should send.

#![forbid(unsafe_code)]

pub mod annotations;
pub mod cli;
pub mod containers;
pub mod inject;
pub mod manifests;
pub mod metrics;
pub mod review;
pub mod selectors;
pub mod settings;
pub mod tls;
pub mod webhook;

pub use inject::{Decision, InjectError, Injection, PodContext, SkipReason};
pub use review::Injector;
pub use settings::Settings;
