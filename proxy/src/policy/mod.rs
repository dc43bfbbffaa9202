//! Request policies that decide or shape a request before it is forwarded.
//!
//! This release has CORS; authentication, authorization and rate limits join here. A
//! policy module works on request and response heads only and never forwards anything.

pub mod cors;
