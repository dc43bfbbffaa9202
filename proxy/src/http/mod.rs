//! HTTP: routing, route filters, forwarding upstream.
//!
//! `service` is the request pipeline; `route` matches requests to routes; `filters`
//! reshapes or answers requests; `forward` sends them to a backend with retries,
//! timeouts, mirroring and upgrades, through the pooled clients of `upstream`. Nothing
//! here knows how the connection was accepted.

pub mod body;
pub mod error;
pub mod filters;
pub mod forward;
pub mod limit;
pub mod replay;
pub mod route;
pub mod service;
pub mod upstream;
