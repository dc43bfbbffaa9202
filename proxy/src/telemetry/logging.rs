//! Process-wide diagnostic logging: installs the `tracing` subscriber (text or JSON on
//! stderr) and hands back a [`LogControl`] that changes the filter while the proxy runs,
//! which is what the admin API's `/logging` endpoint calls.
//!
//! This module must not decide what gets logged or format access logs; it only wires
//! the subscriber. Nothing here may log secrets: it never sees request data.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, reload};

/// How diagnostic log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colored when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Why logging could not be set up or reconfigured.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter directives do not parse.
    #[error("invalid log filter {input:?}: {reason}")]
    InvalidFilter {
        /// The directives as given.
        input: String,
        /// What the parser objected to.
        reason: String,
    },
    /// A global subscriber is already installed (for example `init` ran twice).
    #[error("cannot install the log subscriber: {0}")]
    AlreadyInstalled(String),
    /// The installed subscriber is gone, so its filter cannot be changed.
    #[error("cannot change the log filter: {0}")]
    Reload(String),
}

/// Reads and changes the running log filter. Cheap to clone; all clones control the
/// same subscriber.
#[derive(Clone, Debug)]
pub struct LogControl {
    inner: Arc<ControlInner>,
}

#[derive(Debug)]
struct ControlInner {
    /// `None` for a detached control, which only validates and remembers filters.
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    /// The directives currently in force, as the user wrote them.
    current: Mutex<String>,
}

/// Parses `directives` into a filter, rejecting empty input (which would silently mean
/// "errors only") and anything the `EnvFilter` grammar refuses.
fn parse_filter(directives: &str) -> Result<EnvFilter, LogError> {
    let trimmed = directives.trim();
    if trimmed.is_empty() {
        return Err(LogError::InvalidFilter {
            input: directives.to_owned(),
            reason: "empty filter; use a level such as `info` or `off`".to_owned(),
        });
    }
    EnvFilter::builder()
        .parse(trimmed)
        .map_err(|e| LogError::InvalidFilter {
            input: directives.to_owned(),
            reason: e.to_string(),
        })
}

/// Installs the global subscriber: `format` lines on stderr, filtered by `filter`
/// (`EnvFilter` directives such as `info,agentmesh_proxy::http=debug`).
///
/// Fails, without panicking, when `filter` is invalid or a global subscriber is already
/// installed (including by an earlier call).
pub fn init(format: LogFormat, filter: &str) -> Result<LogControl, LogError> {
    let env_filter = parse_filter(filter)?;
    let (filter_layer, handle) = reload::Layer::new(env_filter);
    let output = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(output)
        .try_init()
        .map_err(|e| LogError::AlreadyInstalled(e.to_string()))?;
    Ok(LogControl {
        inner: Arc::new(ControlInner {
            handle: Some(handle),
            current: Mutex::new(filter.trim().to_owned()),
        }),
    })
}

impl LogControl {
    /// A control bound to no subscriber, for tests and tools that do not log:
    /// [`set_filter`](Self::set_filter) validates and remembers the directives.
    pub fn detached(filter: &str) -> Result<LogControl, LogError> {
        parse_filter(filter)?;
        Ok(LogControl {
            inner: Arc::new(ControlInner {
                handle: None,
                current: Mutex::new(filter.trim().to_owned()),
            }),
        })
    }

    /// Replaces the running filter with `directives`. On error the old filter stays.
    pub fn set_filter(&self, directives: &str) -> Result<(), LogError> {
        let filter = parse_filter(directives)?;
        // Hold the lock across the swap so `current` always names the filter in force.
        let mut current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(handle) = &self.inner.handle {
            handle
                .reload(filter)
                .map_err(|e| LogError::Reload(e.to_string()))?;
        }
        *current = directives.trim().to_owned();
        Ok(())
    }

    /// The directives currently in force, as they were given.
    pub fn current(&self) -> String {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_control_remembers_a_valid_filter() {
        let logs = LogControl::detached("info").expect("valid");
        assert_eq!(logs.current(), "info");
        logs.set_filter(" warn,agentmesh_proxy::http=debug ")
            .expect("valid directives");
        assert_eq!(logs.current(), "warn,agentmesh_proxy::http=debug");
        // Clones share state.
        logs.clone().set_filter("off").expect("valid");
        assert_eq!(logs.current(), "off");
    }

    #[test]
    fn invalid_directives_are_rejected_with_the_input_named() {
        let logs = LogControl::detached("info").expect("valid");
        let err = logs.set_filter("agentmesh=loud").expect_err("not a level");
        let msg = err.to_string();
        assert!(msg.contains("agentmesh=loud"), "{msg}");
        assert_eq!(logs.current(), "info", "old filter stays");
        let err = logs.set_filter("  ").expect_err("empty");
        assert!(err.to_string().contains("empty filter"), "{err}");
        assert!(LogControl::detached("x=nope").is_err());
    }

    #[test]
    fn init_installs_once_and_then_reports_an_error() {
        // Another test in this binary may have installed a subscriber first; either
        // way the second call must fail cleanly rather than panic. The filter is `off`
        // so other tests' logs do not spill onto the test run's stderr.
        let first = init(LogFormat::Json, "off");
        let second = init(LogFormat::Text, "info");
        let err = second.expect_err("second init must fail");
        assert!(matches!(err, LogError::AlreadyInstalled(_)), "{err}");
        if let Ok(logs) = first {
            logs.set_filter("agentmesh_proxy=error")
                .expect("reload works");
            assert_eq!(logs.current(), "agentmesh_proxy=error");
            assert!(logs.set_filter("a=b=c").is_err());
            assert_eq!(logs.current(), "agentmesh_proxy=error");
            logs.set_filter("off").expect("reload works");
        }
        assert!(matches!(
            init(LogFormat::Text, "=bad"),
            Err(LogError::InvalidFilter { .. }) | Err(LogError::AlreadyInstalled(_))
        ));
    }
}
