//! The per-pod `agentmesh.dev/*` annotations: their names, defaults and meaning (the
//! README's table is [`ANNOTATIONS`]), and their validation into [`PodOptions`].
//!
//! The init container's settings are checked with agentmesh-init's own validator, so the
//! injector accepts exactly what agentmesh-init will; a bad value becomes an
//! [`AnnotationError`] naming the annotation, which the webhook turns into a denial
//! instead of a pod whose init container fails. This module reads annotations only; it
//! must not build containers.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use agentmesh_init::cli::RawSettings;
use agentmesh_init::settings::{self as init_settings, SettingName};

use crate::settings::{ResourceDefaults, Settings};

/// The prefix of every annotation the injector reads.
pub const PREFIX: &str = "agentmesh.dev/";
/// The status annotation: what was injected, and by which version.
pub const STATUS: &str = "agentmesh.dev/status";
/// Kubernetes' annotation naming the container `kubectl logs/exec` use by default.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// One per-pod annotation, as documented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Annotation {
    /// The full name, `agentmesh.dev/...`.
    pub name: &'static str,
    /// What applies when the annotation is absent.
    pub default: &'static str,
    /// What it does, one sentence.
    pub description: &'static str,
    /// The agentmesh-init setting it is passed to, if any.
    pub init_setting: Option<SettingName>,
}

macro_rules! annotations {
    ($($(#[$doc:meta])* $id:ident = $name:literal, $default:literal, $init:expr, $description:literal;)*) => {
        $($(#[$doc])* pub const $id: Annotation = Annotation {
            name: $name, default: $default, description: $description, init_setting: $init,
        };)*
        /// Every per-pod annotation, in the README's order.
        pub const ANNOTATIONS: &[Annotation] = &[$($id),*];
    };
}

annotations! {
    /// Outbound destination ports never captured.
    EXCLUDE_OUTBOUND_PORTS = "agentmesh.dev/exclude-outbound-ports", "(none)",
        Some(init_settings::EXCLUDE_OUTBOUND_PORTS),
        "Comma-separated destination ports the app reaches directly, never through the proxy (e.g. `5432,6379`).";
    /// Outbound destination CIDRs never captured.
    EXCLUDE_OUTBOUND_CIDRS = "agentmesh.dev/exclude-outbound-cidrs", "(none)",
        Some(init_settings::EXCLUDE_OUTBOUND_CIDRS),
        "Comma-separated IPv4/IPv6 CIDRs the app reaches directly (e.g. `10.0.0.0/8,169.254.169.254/32`).";
    /// Only these CIDRs are captured.
    INCLUDE_OUTBOUND_CIDRS = "agentmesh.dev/include-outbound-cidrs", "`*` (everything)",
        Some(init_settings::INCLUDE_OUTBOUND_CIDRS),
        "Comma-separated CIDRs to capture instead of everything; a family with no CIDR in the list is not captured.";
    /// Inbound capture on or off.
    INBOUND_CAPTURE = "agentmesh.dev/inbound-capture", "`false`",
        Some(init_settings::INBOUND_CAPTURE),
        "`true` also sends inbound TCP to the pod through the proxy's inbound listener (16006), which the proxy then serves from its start (`--inbound-capture`), whatever the controller's config says.";
    /// Inbound ports never captured.
    EXCLUDE_INBOUND_PORTS = "agentmesh.dev/exclude-inbound-ports", "(none)",
        Some(init_settings::EXCLUDE_INBOUND_PORTS),
        "With inbound capture, comma-separated local ports served directly (the proxy's own ports never are captured).";
    /// The iptables backend.
    IPTABLES_MODE = "agentmesh.dev/iptables-mode", "`auto`",
        Some(init_settings::IPTABLES_MODE),
        "`legacy`, `nft`, or `auto` (legacy when the node already uses it, else nft).";
    /// IPv6 rules.
    IPV6 = "agentmesh.dev/ipv6", "`auto`",
        Some(init_settings::IPV6),
        "`on`, `off`, or `auto` (IPv6 rules when the pod has IPv6).";
    /// Native or classic sidecar.
    NATIVE_SIDECAR = "agentmesh.dev/native-sidecar", "the installation's setting (`true` on Kubernetes >= 1.29)",
        None,
        "`false` injects the proxy as a classic container (first in `containers`, waiting for readiness on postStart, draining on preStop) instead of a native sidecar.";
    /// Egress TLS interception: mount the mesh CA.
    EGRESS_TLS = "agentmesh.dev/egress-tls", "`none`",
        None,
        "`intercept` mounts the mesh CA bundle into the app containers and sets `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` and `NODE_EXTRA_CA_CERTS` (where the container does not set them), so the app trusts the proxy's certificates.";
    /// The proxy's CPU request.
    PROXY_CPU = "agentmesh.dev/proxy-cpu", "`50m`",
        None,
        "The proxy container's CPU request (a Kubernetes quantity).";
    /// The proxy's memory request.
    PROXY_MEMORY = "agentmesh.dev/proxy-memory", "`32Mi`",
        None,
        "The proxy container's memory request.";
    /// The proxy's CPU limit.
    PROXY_CPU_LIMIT = "agentmesh.dev/proxy-cpu-limit", "(none: throttling adds latency)",
        None,
        "The proxy container's CPU limit.";
    /// The proxy's memory limit.
    PROXY_MEMORY_LIMIT = "agentmesh.dev/proxy-memory-limit", "`512Mi`",
        None,
        "The proxy container's memory limit.";
}

/// An annotation whose value cannot be used: the pod is denied with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: invalid value '{value}': {reason}")]
pub struct AnnotationError {
    /// The annotation's name.
    pub annotation: &'static str,
    /// The value as written.
    pub value: String,
    /// Why it is rejected.
    pub reason: String,
}

/// How the proxy runs in the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidecarKind {
    /// An init container with `restartPolicy: Always` (Kubernetes >= 1.29).
    Native,
    /// A regular container, first in `containers`.
    Classic,
}

impl SidecarKind {
    /// The word recorded in the status annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarKind::Native => "native",
            SidecarKind::Classic => "classic",
        }
    }
}

/// Egress TLS handling that changes the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressTls {
    /// Nothing mounted (passthrough and originate need nothing in the app).
    None,
    /// The mesh CA is mounted into the app containers.
    Intercept,
}

/// A pod's validated annotations: what the injection depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodOptions {
    /// `AGENTMESH_*` variables for agentmesh-init, in [`ANNOTATIONS`] order, from the
    /// annotations that were set.
    pub init_env: Vec<(&'static str, String)>,
    /// Native or classic sidecar.
    pub sidecar: SidecarKind,
    /// Inbound capture is on: agentmesh-init redirects inbound TCP to the proxy, which
    /// must then serve its inbound port whatever the controller's config says.
    pub inbound_capture: bool,
    /// Egress TLS handling.
    pub egress_tls: EgressTls,
    /// The proxy's resources (annotations over the installation's defaults).
    pub proxy_resources: ResourceDefaults,
    /// Things the user should know that do not stop injection.
    pub warnings: Vec<String>,
}

impl PodOptions {
    /// Validates a pod's annotations; the first bad value is the error.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
        settings: &Settings,
    ) -> Result<PodOptions, AnnotationError> {
        let get = |a: &Annotation| annotations.get(a.name).map(|v| v.trim().to_string());
        let mut warnings = Vec::new();

        // The init container's settings, checked by agentmesh-init's validator.
        let mut raw = RawSettings {
            proxy_uid: crate::settings::PROXY_UID.to_string(),
            proxy_gid: crate::settings::PROXY_UID.to_string(),
            outbound_port: crate::settings::OUTBOUND_PORT.to_string(),
            inbound_port: crate::settings::INBOUND_PORT.to_string(),
            exclude_outbound_ports: String::new(),
            exclude_outbound_cidrs: String::new(),
            include_outbound_cidrs: String::new(),
            inbound_capture: "false".into(),
            exclude_inbound_ports: String::new(),
            iptables_mode: "auto".into(),
            ipv6: "auto".into(),
            dry_run: "false".into(),
        };
        let mut init_env = Vec::new();
        for annotation in ANNOTATIONS {
            let (Some(setting), Some(value)) = (annotation.init_setting, get(annotation)) else {
                continue;
            };
            let field = match setting {
                s if s == init_settings::EXCLUDE_OUTBOUND_PORTS => &mut raw.exclude_outbound_ports,
                s if s == init_settings::EXCLUDE_OUTBOUND_CIDRS => &mut raw.exclude_outbound_cidrs,
                s if s == init_settings::INCLUDE_OUTBOUND_CIDRS => &mut raw.include_outbound_cidrs,
                s if s == init_settings::INBOUND_CAPTURE => &mut raw.inbound_capture,
                s if s == init_settings::EXCLUDE_INBOUND_PORTS => &mut raw.exclude_inbound_ports,
                s if s == init_settings::IPTABLES_MODE => &mut raw.iptables_mode,
                _ => &mut raw.ipv6,
            };
            field.clone_from(&value);
            init_env.push((setting.env, value));
        }
        let init = init_settings::Settings::from_raw(&raw).map_err(|e| {
            let annotation = ANNOTATIONS
                .iter()
                .find(|a| a.init_setting == Some(e.setting))
                .map_or(e.setting.env, |a| a.name);
            AnnotationError {
                annotation,
                value: e.value,
                reason: e.reason,
            }
        })?;

        let sidecar = match get(&NATIVE_SIDECAR).as_deref() {
            None => native_or_classic(settings.native_sidecar),
            Some(v) => match parse_bool(v) {
                Some(false) => SidecarKind::Classic,
                Some(true) if !settings.native_sidecar => {
                    warnings.push(format!(
                        "{}: this cluster is set up without native sidecars; the proxy is a classic container",
                        NATIVE_SIDECAR.name
                    ));
                    SidecarKind::Classic
                }
                Some(true) => SidecarKind::Native,
                None => return Err(invalid(&NATIVE_SIDECAR, v, "expected true or false")),
            },
        };

        let egress_tls = match get(&EGRESS_TLS).as_deref() {
            None | Some("none") | Some("") => EgressTls::None,
            Some("intercept") => EgressTls::Intercept,
            Some(v) => return Err(invalid(&EGRESS_TLS, v, "expected intercept or none")),
        };

        let mut proxy_resources = settings.proxy_resources.clone();
        for (annotation, slot) in [
            (&PROXY_CPU, &mut proxy_resources.cpu_request),
            (&PROXY_MEMORY, &mut proxy_resources.memory_request),
            (&PROXY_CPU_LIMIT, &mut proxy_resources.cpu_limit),
            (&PROXY_MEMORY_LIMIT, &mut proxy_resources.memory_limit),
        ] {
            if let Some(value) = get(annotation) {
                if !is_quantity(&value) {
                    return Err(invalid(
                        annotation,
                        &value,
                        "expected a Kubernetes quantity like 100m, 0.5, 64Mi or 1G",
                    ));
                }
                *slot = Some(value);
            }
        }

        for name in annotations.keys() {
            if name.starts_with(PREFIX)
                && name != STATUS
                && !ANNOTATIONS.iter().any(|a| a.name == name)
            {
                // A near miss (a missing or extra letter at the end) gets a suggestion.
                let suggestion = ANNOTATIONS
                    .iter()
                    .find(|a| a.name.starts_with(name.as_str()) || name.starts_with(a.name))
                    .map(|a| format!("; did you mean {}?", a.name))
                    .unwrap_or_default();
                warnings.push(format!("{name}: unknown annotation, ignored{suggestion}"));
            }
        }

        Ok(PodOptions {
            init_env,
            sidecar,
            inbound_capture: init.inbound_capture,
            egress_tls,
            proxy_resources,
            warnings,
        })
    }
}

fn native_or_classic(native: bool) -> SidecarKind {
    if native {
        SidecarKind::Native
    } else {
        SidecarKind::Classic
    }
}

fn invalid(annotation: &Annotation, value: &str, reason: &str) -> AnnotationError {
    AnnotationError {
        annotation: annotation.name,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Whether `text` is a Kubernetes resource quantity (the API server's own grammar:
/// a signed decimal number, then a binary suffix, a decimal suffix or an exponent).
pub fn is_quantity(text: &str) -> bool {
    static QUANTITY: OnceLock<Option<regex::Regex>> = OnceLock::new();
    QUANTITY
        .get_or_init(|| {
            regex::Regex::new(
                r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$",
            )
            .ok()
        })
        .as_ref()
        .is_some_and(|re| re.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Result<PodOptions, AnnotationError> {
        let annotations = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PodOptions::from_annotations(&annotations, &Settings::for_controller_namespace("mesh"))
    }

    #[test]
    fn init_annotations_become_init_variables() {
        let o = options(&[
            ("agentmesh.dev/exclude-outbound-ports", " 5432,6379 "),
            ("agentmesh.dev/inbound-capture", "true"),
        ])
        .expect("valid");
        assert_eq!(
            o.init_env,
            vec![
                ("AGENTMESH_EXCLUDE_OUTBOUND_PORTS", "5432,6379".to_string()),
                ("AGENTMESH_INBOUND_CAPTURE", "true".to_string()),
            ]
        );
        assert!(o.inbound_capture);
        assert!(!options(&[]).expect("valid").inbound_capture);
        let off = options(&[("agentmesh.dev/inbound-capture", "false")]).expect("valid");
        assert!(!off.inbound_capture);
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (name, value) in [
            ("agentmesh.dev/exclude-outbound-ports", "22,70000"),
            ("agentmesh.dev/exclude-outbound-cidrs", "10.0.0.0/33"),
            ("agentmesh.dev/include-outbound-cidrs", "*,10.0.0.0/8"),
            ("agentmesh.dev/inbound-capture", "maybe"),
            ("agentmesh.dev/iptables-mode", "ebpf"),
            ("agentmesh.dev/native-sidecar", "sometimes"),
            ("agentmesh.dev/egress-tls", "mitm"),
            ("agentmesh.dev/proxy-memory", "lots"),
        ] {
            let e = options(&[(name, value)]).expect_err(name);
            assert_eq!(e.annotation, name);
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn the_readme_table_documents_every_annotation() {
        let readme = include_str!("../../README.md");
        for a in ANNOTATIONS {
            let row = format!("| `{}` | {} | {} |", a.name, a.default, a.description);
            assert!(readme.contains(&row), "README lacks the row:\n{row}");
        }
    }

    #[test]
    fn quantities_follow_the_api_grammar() {
        for ok in ["100m", "0.5", "64Mi", "1G", "1e3", "2"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Mi", "64MB", "1.2.3", "ten"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_agentmesh_annotations_warn() {
        let o = options(&[("agentmesh.dev/exclude-outbound-port", "22")]).expect("valid");
        assert_eq!(o.warnings.len(), 1);
        assert_eq!(
            o.warnings[0],
            "agentmesh.dev/exclude-outbound-port: unknown annotation, ignored; \
             did you mean agentmesh.dev/exclude-outbound-ports?"
        );
    }
}
