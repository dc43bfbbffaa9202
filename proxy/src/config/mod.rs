//! Configuration: from the resource model to the validated internal form (IR).
//!
//! `file` reads the local config file and flattens it into resources; `compile` turns
//! resources into the IR exactly once (compiled matchers, loaded certificates, resolved
//! references, upstream clients) and rejects what is invalid with an error naming the
//! resource and field; `store` holds the running IR and swaps it atomically; `watch`
//! reloads the file when it changes; `xds` receives resources from the controller, and
//! `issued_ca` the intermediate CA it issues to a sidecar that intercepts TLS.
//! Nothing here touches sockets or requests.

pub mod compile;
pub mod file;
pub mod ir;
pub mod issued_ca;
pub mod sidecar;
pub mod store;
pub mod watch;
pub mod xds;

use std::fmt;
use std::path::Path;

pub use compile::{CompileContext, compile};
pub use ir::Config;
pub use store::Store;

/// A problem with a configuration, naming where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        reason: String,
    },
    /// The text is not a valid instance of the config format.
    #[error("{}{}: {reason}", file.as_deref().map(|f| format!("{f}: ")).unwrap_or_default(), if path.is_empty() || path == "." { "config" } else { path })]
    Parse {
        /// The file, when known.
        file: Option<String>,
        /// Path of the offending field, like `binds[0].listeners[1].routes`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The resources are well-formed but do not make a valid configuration.
    #[error("{}", Invalid(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigError::Parse { path, reason, .. } => ConfigError::Parse {
                file: Some(file.display().to_string()),
                path,
                reason,
            },
            other => other,
        }
    }
}

struct Invalid<'a>(&'a [FieldError]);

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "invalid config: {one}"),
            many => {
                write!(f, "invalid config ({} problems):", many.len())?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// One validation problem: which resource, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Resource kind and key, like `route "main/http/api"`.
    pub resource: String,
    /// Field path inside the resource, like `matches[0].path.regex`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} field {}: {}", self.resource, self.field, self.reason)
    }
}

/// Loads, flattens and compiles a config file in one step.
pub fn load_file(path: &Path, ctx: &CompileContext) -> Result<Config, ConfigError> {
    let local = file::load(path)?;
    compile(file::flatten(local), ctx)
}
