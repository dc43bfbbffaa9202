//! The label values the proxy's metrics may carry besides config names: request
//! outcome reasons, the method and status-class buckets, and the request description
//! the data plane hands to [`Metrics::record_request`](super::Metrics::record_request).
//!
//! This module must not accept free-form strings from requests as label values: every
//! value is picked from a closed set, so a client cannot grow the number of series.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A config name used as a label value (listener, route, backend key). Shared with the
/// config, so labelling a request copies a pointer, not the name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameLabel(pub Arc<str>);

impl EncodeLabelValue for NameLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// What the data plane knows about a finished HTTP request, for
/// [`Metrics::record_request`](super::Metrics::record_request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestLabels {
    /// Key of the listener that accepted the request (empty when none did).
    pub listener: Arc<str>,
    /// Key of the route that matched (empty when none did).
    pub route: Arc<str>,
    /// Key of the backend the request was sent to (empty when none).
    pub backend: Arc<str>,
    /// The request method as received; anything non-standard is counted as `OTHER`.
    pub method: http::Method,
    /// The HTTP status sent to the client.
    pub status: u16,
}

/// Why a request failed before or while reaching its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// No route matched the request.
    NoRoute,
    /// The request body exceeded the configured limit.
    BodyTooLarge,
    /// Connecting to the upstream failed.
    UpstreamConnect,
    /// The upstream did not answer within the backend timeout.
    UpstreamTimeout,
    /// The whole request exceeded the route's request timeout.
    RequestTimeout,
    /// The upstream closed or reset the connection mid-exchange.
    UpstreamReset,
    /// The upstream answered with something that is not valid HTTP.
    UpstreamProtocol,
    /// The client's request was rejected as invalid.
    BadRequest,
    /// A policy denied the request.
    Denied,
}

impl ErrorReason {
    /// The stable snake_case label value for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::BodyTooLarge => "body_too_large",
            Self::UpstreamConnect => "upstream_connect",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::UpstreamReset => "upstream_reset",
            Self::UpstreamProtocol => "upstream_protocol",
            Self::BadRequest => "bad_request",
            Self::Denied => "denied",
        }
    }
}

/// Why a downstream (client) connection failed below the request level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionErrorReason {
    /// The client sent bytes that are not valid HTTP.
    MalformedHttp,
    /// The client's request head exceeded the size limit.
    HeadersTooLarge,
    /// The TLS handshake with the client failed.
    TlsHandshake,
    /// A socket read or write failed.
    Io,
    /// The client was too slow (header read or idle timeout).
    Timeout,
}

impl ConnectionErrorReason {
    /// The stable snake_case label value for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedHttp => "malformed_http",
            Self::HeadersTooLarge => "headers_too_large",
            Self::TlsHandshake => "tls_handshake",
            Self::Io => "io",
            Self::Timeout => "timeout",
        }
    }
}

/// Whether a mirrored request copy reached its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MirrorOutcome {
    /// The copy was sent and answered (any status).
    Sent,
    /// The copy could not be sent or got no answer.
    Failed,
}

impl MirrorOutcome {
    /// The stable label value (`sent` or `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }
}

/// The method label: the standard methods as sent, everything else `OTHER`, so a client
/// cannot create series at will.
pub(crate) fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "OTHER",
    }
}

/// The status-class label: `1xx` to `5xx`, or `other` for a status outside 100..=599.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_one_to_five_hundred() {
        assert_eq!(
            [101, 204, 302, 429, 599].map(status_class),
            ["1xx", "2xx", "3xx", "4xx", "5xx"]
        );
        assert_eq!(status_class(600), "other");
    }

    #[test]
    fn only_standard_methods_keep_their_name() {
        assert_eq!(method_label("PATCH"), "PATCH");
        for odd in ["get", "BREW", "PROPFIND", ""] {
            assert_eq!(method_label(odd), "OTHER", "{odd:?}");
        }
    }

    #[test]
    fn reasons_have_stable_snake_case_labels() {
        assert_eq!(ErrorReason::UpstreamProtocol.as_str(), "upstream_protocol");
        assert_eq!(
            ConnectionErrorReason::MalformedHttp.as_str(),
            "malformed_http"
        );
        assert_eq!(MirrorOutcome::Failed.as_str(), "failed");
    }
}
