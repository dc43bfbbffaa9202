//! `agentmesh-init`: sets up a pod's network for the agentmesh sidecar.
//!
//! It installs nat rules that send the pod's outbound TCP (and, optionally, inbound TCP)
//! to the proxy's capture ports, removes them (`cleanup`), prints them (`--dry-run`) and
//! proves they work (`validate`). The flow is: [`cli`] reads flags and environment,
//! [`settings`] validates them, [`rules`] builds the typed rule set and renders restore
//! text, [`apply`] compares it with what is installed and loads the difference through
//! [`backend`], and [`validate`] checks the result with a real connection.
//!
//! The library never panics on input, and writes nothing but through iptables.

#![forbid(unsafe_code)]

pub mod apply;
pub mod backend;
pub mod cli;
pub mod identity;
pub mod net;
pub mod rules;
pub mod settings;
pub mod validate;
