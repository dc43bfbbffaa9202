//! The admin API's endpoints: the index, `/config_dump`, `/logging` and `/drain`.
//!
//! This module must not redact or build the config dump (the caller's closure does) and
//! must not be reachable from outside the host: binding it to loopback is the caller's
//! job.

use http::{Method, StatusCode, Uri};

use super::AdminState;
use super::server::{AdminResponse, is_read, method_not_allowed, not_found, respond, text};

/// Levels accepted by `POST /logging?level=`.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Answers one admin API request.
pub(crate) fn handle(admin: &AdminState, method: &Method, uri: &Uri) -> AdminResponse {
    match uri.path() {
        "/" if is_read(method) => index(admin),
        "/config_dump" if is_read(method) => config_dump(admin),
        "/logging" if is_read(method) => {
            text(StatusCode::OK, format!("{}\n", admin.logs.current()))
        }
        "/logging" if method == Method::POST => set_logging(admin, uri.query()),
        "/drain" if method == Method::POST => {
            admin.readiness.set_draining();
            tracing::info!("drain requested through the admin API");
            text(
                StatusCode::OK,
                "draining: readiness now reports not ready\n",
            )
        }
        "/" | "/config_dump" => method_not_allowed(method, "GET, HEAD"),
        "/logging" => method_not_allowed(method, "GET, HEAD, POST"),
        "/drain" => method_not_allowed(method, "POST"),
        _ => not_found(uri),
    }
}

fn index(admin: &AdminState) -> AdminResponse {
    let state = match admin.readiness.not_ready_reason() {
        None => "ready".to_owned(),
        Some(reason) => format!("not ready: {reason}"),
    };
    text(
        StatusCode::OK,
        format!(
            "agentmesh admin ({state})\n\
             \n\
             GET  /                          this list\n\
             GET  /config_dump               the running configuration as JSON (secrets redacted)\n\
             GET  /logging                   the current log filter\n\
             POST /logging?level=<level>     set the log level: {levels}\n\
             POST /logging?filter=<filter>   set tracing filter directives (URL-encoded), \
             e.g. info,agentmesh_proxy::http=debug\n\
             POST /drain                     report not ready from now on, so traffic moves away\n",
            levels = LEVELS.join(", "),
        ),
    )
}

fn config_dump(admin: &AdminState) -> AdminResponse {
    let dump = (admin.config_dump)();
    match serde_json::to_string_pretty(&dump) {
        Ok(mut json) => {
            json.push('\n');
            respond(StatusCode::OK, "application/json", json)
        }
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render the config dump: {error}\n"),
        ),
    }
}

/// `POST /logging?level=<level>` or `POST /logging?filter=<directives>`.
fn set_logging(admin: &AdminState, query: Option<&str>) -> AdminResponse {
    let bad = |msg: String| text(StatusCode::BAD_REQUEST, format!("{msg}\n"));
    let mut level = None;
    let mut filter = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(value) = percent_decode(value) else {
            return bad(format!(
                "query parameter {key:?} is not valid URL-encoded UTF-8"
            ));
        };
        match key {
            "level" => level = Some(value),
            "filter" => filter = Some(value),
            other => {
                return bad(format!(
                    "unknown query parameter {other:?}; use ?level=<level> or ?filter=<filter>"
                ));
            }
        }
    }
    let directives = match (level, filter) {
        (Some(level), None) => {
            let lower = level.trim().to_ascii_lowercase();
            if !LEVELS.contains(&lower.as_str()) {
                return bad(format!(
                    "invalid level {level:?}: expected one of {}",
                    LEVELS.join(", ")
                ));
            }
            lower
        }
        (None, Some(filter)) => filter,
        (Some(_), Some(_)) => return bad("give either ?level= or ?filter=, not both".into()),
        (None, None) => {
            return bad("missing ?level=<level> or ?filter=<filter>".into());
        }
    };
    match admin.logs.set_filter(&directives) {
        Ok(()) => {
            let current = admin.logs.current();
            tracing::info!(filter = %current, "log filter changed through the admin API");
            text(StatusCode::OK, format!("log filter set to {current}\n"))
        }
        Err(error) => bad(error.to_string()),
    }
}

/// Decodes one `application/x-www-form-urlencoded` query value: `%XX` escapes and `+`
/// for space. `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16))?;
                let lo = bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16))?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_values_are_url_decoded() {
        assert_eq!(
            percent_decode("info%2Cagentmesh_proxy%3A%3Ahttp%3Ddebug").as_deref(),
            Some("info,agentmesh_proxy::http=debug")
        );
        assert_eq!(percent_decode("a+b%20c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
    }

    #[test]
    fn broken_escapes_are_rejected() {
        for bad in ["%", "%4", "%zz", "%+1", "%FF"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
