//! The command line of `agentmesh-init`: subcommands, and every setting as text with its
//! flag and environment variable.
//!
//! clap only collects text here; [`crate::settings`] validates it, so a bad value is
//! reported with both its flag and its variable. This module must not interpret values.

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success: rules applied or already in place, cleanup done, validation passed
  2  invalid settings (a bad flag or environment value); no rule was touched
  3  iptables backend unavailable: binary missing, no CAP_NET_ADMIN (+ CAP_NET_RAW for
     legacy), or the probe chain could not be created
  4  iptables-restore rejected the rules; the previous rules are kept (restore is atomic)
  5  validation failed: a connection was not redirected to the proxy's port";

/// The command line of `agentmesh-init`. Without a subcommand it applies the rules.
#[derive(Debug, Parser)]
#[command(
    name = "agentmesh-init",
    version,
    about = "Installs, removes and validates the iptables rules that send a pod's TCP \
             traffic through the agentmesh sidecar.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// What to do; `apply` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub raw: RawSettings,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install the capture rules, or replace ours if the settings changed (the default).
    Apply,
    /// Remove every rule and chain agentmesh-init made, and nothing else.
    Cleanup,
    /// Prove that outbound redirection works: listen on the outbound port, connect to an
    /// arbitrary address and expect our token back through the redirect.
    Validate(RawValidateSettings),
}

/// Settings as text, exactly as given by flags or environment variables.
#[derive(Debug, Args)]
pub struct RawSettings {
    /// UID the proxy runs as; its traffic is never captured. Not 0.
    #[arg(
        long,
        env = "AGENTMESH_PROXY_UID",
        default_value = "1501",
        global = true
    )]
    pub proxy_uid: String,
    /// GID the proxy runs as; its traffic is never captured. Not 0.
    #[arg(
        long,
        env = "AGENTMESH_PROXY_GID",
        default_value = "1501",
        global = true
    )]
    pub proxy_gid: String,
    /// Port of the proxy's outbound listener, the target of outbound redirection.
    #[arg(
        long,
        env = "AGENTMESH_OUTBOUND_PORT",
        default_value = "16001",
        global = true
    )]
    pub outbound_port: String,
    /// Port of the proxy's inbound listener, the target of inbound redirection.
    #[arg(
        long,
        env = "AGENTMESH_INBOUND_PORT",
        default_value = "16006",
        global = true
    )]
    pub inbound_port: String,
    /// Comma-separated destination ports never captured outbound.
    #[arg(
        long,
        env = "AGENTMESH_EXCLUDE_OUTBOUND_PORTS",
        default_value = "",
        global = true
    )]
    pub exclude_outbound_ports: String,
    /// Comma-separated destination CIDRs (IPv4 and IPv6 mixed) never captured outbound.
    #[arg(
        long,
        env = "AGENTMESH_EXCLUDE_OUTBOUND_CIDRS",
        default_value = "",
        global = true
    )]
    pub exclude_outbound_cidrs: String,
    /// Comma-separated destination CIDRs to capture instead of everything; `*` or empty
    /// captures everything. A family with no CIDR in a non-empty list captures nothing.
    #[arg(
        long,
        env = "AGENTMESH_INCLUDE_OUTBOUND_CIDRS",
        default_value = "",
        global = true
    )]
    pub include_outbound_cidrs: String,
    /// Capture inbound TCP to the proxy's inbound listener (true/false).
    #[arg(
        long,
        env = "AGENTMESH_INBOUND_CAPTURE",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        global = true
    )]
    pub inbound_capture: String,
    /// Comma-separated local ports never captured inbound (the proxy's own ports never
    /// are).
    #[arg(
        long,
        env = "AGENTMESH_EXCLUDE_INBOUND_PORTS",
        default_value = "",
        global = true
    )]
    pub exclude_inbound_ports: String,
    /// iptables backend: `legacy`, `nft`, or `auto` (legacy when legacy rules already
    /// exist in the namespace, else nft; proven with a probe chain).
    #[arg(
        long,
        env = "AGENTMESH_IPTABLES_MODE",
        default_value = "auto",
        global = true
    )]
    pub iptables_mode: String,
    /// IPv6 rules: `on`, `off`, or `auto` (on when the kernel has IPv6 in this namespace).
    #[arg(long, env = "AGENTMESH_IPV6", default_value = "auto", global = true)]
    pub ipv6: String,
    /// Print the iptables-restore text of both families and touch nothing (true/false).
    #[arg(
        long,
        env = "AGENTMESH_DRY_RUN",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        global = true
    )]
    pub dry_run: String,
}

/// Settings of `validate`, as text.
#[derive(Debug, Args)]
pub struct RawValidateSettings {
    /// Port to listen on (loopback) for the redirected connection; the outbound port when
    /// unset.
    #[arg(long, env = "AGENTMESH_VALIDATION_PORT")]
    pub validation_port: Option<String>,
    /// Comma-separated `ADDR:PORT` to connect to, at most one per family (IPv6 as
    /// `[ADDR]:PORT`); defaults are `198.18.255.254:80` and `[2001:db8::fe]:80`.
    #[arg(long, env = "AGENTMESH_VALIDATION_TARGETS", default_value = "")]
    pub validation_targets: String,
    /// Seconds to wait for each family's redirected connection (1 to 60).
    #[arg(long, env = "AGENTMESH_VALIDATION_TIMEOUT", default_value = "5")]
    pub validation_timeout: String,
}
