//! Settings: validation of the command line and environment of `agentmesh-init` into
//! [`Settings`] and [`ValidateSettings`].
//!
//! Every setting can come from a flag or from an `AGENTMESH_*` environment variable (the
//! injector sets the variables from pod annotations). Values are taken as text by clap
//! ([`crate::cli`]) and validated here, so a bad value is reported with both its flag and its variable, before
//! any rule is touched. This module must not run commands or read the system.

use std::net::SocketAddr;
use std::time::Duration;

use crate::cli::{RawSettings, RawValidateSettings};
use crate::net::{Cidr, Family};

/// The proxy's UID and GID from the shared contract: its traffic is never captured.
pub const DEFAULT_PROXY_ID: u32 = 1501;
/// The proxy's outbound capture listener (127.0.0.1 and ::1).
pub const DEFAULT_OUTBOUND_PORT: u16 = 16001;
/// The proxy's inbound capture listener.
pub const DEFAULT_INBOUND_PORT: u16 = 16006;
/// The proxy's admin, metrics and readiness ports: never captured inbound.
pub const PROXY_SERVICE_PORTS: [u16; 3] = [16000, 16020, 16021];
/// The longest validation timeout accepted, so `validate` always ends quickly.
pub const MAX_VALIDATION_TIMEOUT: Duration = Duration::from_secs(60);

/// A setting's two names, used in every message about its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingName {
    /// The flag, e.g. `--proxy-uid`.
    pub flag: &'static str,
    /// The environment variable, e.g. `AGENTMESH_PROXY_UID`.
    pub env: &'static str,
}

macro_rules! setting_names {
    ($($(#[$doc:meta])* $name:ident = $flag:literal, $env:literal;)*) => {
        $($(#[$doc])* pub const $name: SettingName = SettingName { flag: $flag, env: $env };)*
        /// Every setting, for checks that each has a flag and a variable.
        pub const ALL_SETTINGS: &[SettingName] = &[$($name),*];
    };
}

setting_names! {
    /// `--proxy-uid` / `AGENTMESH_PROXY_UID`.
    PROXY_UID = "--proxy-uid", "AGENTMESH_PROXY_UID";
    /// `--proxy-gid` / `AGENTMESH_PROXY_GID`.
    PROXY_GID = "--proxy-gid", "AGENTMESH_PROXY_GID";
    /// `--outbound-port` / `AGENTMESH_OUTBOUND_PORT`.
    OUTBOUND_PORT = "--outbound-port", "AGENTMESH_OUTBOUND_PORT";
    /// `--inbound-port` / `AGENTMESH_INBOUND_PORT`.
    INBOUND_PORT = "--inbound-port", "AGENTMESH_INBOUND_PORT";
    /// `--exclude-outbound-ports` / `AGENTMESH_EXCLUDE_OUTBOUND_PORTS`.
    EXCLUDE_OUTBOUND_PORTS = "--exclude-outbound-ports", "AGENTMESH_EXCLUDE_OUTBOUND_PORTS";
    /// `--exclude-outbound-cidrs` / `AGENTMESH_EXCLUDE_OUTBOUND_CIDRS`.
    EXCLUDE_OUTBOUND_CIDRS = "--exclude-outbound-cidrs", "AGENTMESH_EXCLUDE_OUTBOUND_CIDRS";
    /// `--include-outbound-cidrs` / `AGENTMESH_INCLUDE_OUTBOUND_CIDRS`.
    INCLUDE_OUTBOUND_CIDRS = "--include-outbound-cidrs", "AGENTMESH_INCLUDE_OUTBOUND_CIDRS";
    /// `--inbound-capture` / `AGENTMESH_INBOUND_CAPTURE`.
    INBOUND_CAPTURE = "--inbound-capture", "AGENTMESH_INBOUND_CAPTURE";
    /// `--exclude-inbound-ports` / `AGENTMESH_EXCLUDE_INBOUND_PORTS`.
    EXCLUDE_INBOUND_PORTS = "--exclude-inbound-ports", "AGENTMESH_EXCLUDE_INBOUND_PORTS";
    /// `--iptables-mode` / `AGENTMESH_IPTABLES_MODE`.
    IPTABLES_MODE = "--iptables-mode", "AGENTMESH_IPTABLES_MODE";
    /// `--ipv6` / `AGENTMESH_IPV6`.
    IPV6 = "--ipv6", "AGENTMESH_IPV6";
    /// `--dry-run` / `AGENTMESH_DRY_RUN`.
    DRY_RUN = "--dry-run", "AGENTMESH_DRY_RUN";
    /// `--validation-port` / `AGENTMESH_VALIDATION_PORT`.
    VALIDATION_PORT = "--validation-port", "AGENTMESH_VALIDATION_PORT";
    /// `--validation-targets` / `AGENTMESH_VALIDATION_TARGETS`.
    VALIDATION_TARGETS = "--validation-targets", "AGENTMESH_VALIDATION_TARGETS";
    /// `--validation-timeout` / `AGENTMESH_VALIDATION_TIMEOUT`.
    VALIDATION_TIMEOUT = "--validation-timeout", "AGENTMESH_VALIDATION_TIMEOUT";
}

/// A rejected setting value: names the flag, the variable, the value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value '{value}' for {} (env {}): {reason}", .setting.flag, .setting.env)]
pub struct SettingsError {
    /// Which setting.
    pub setting: SettingName,
    /// The value as given.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Which iptables implementation to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IptablesMode {
    /// Legacy if legacy rules already exist, else nft; proven with a probe.
    Auto,
    /// `iptables-legacy*` (x_tables).
    Legacy,
    /// `iptables-nft*` (nf_tables).
    Nft,
}

/// Whether to install IPv6 rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Mode {
    /// When the kernel has IPv6 in this network namespace.
    Auto,
    /// Always (fails if ip6tables cannot be used).
    On,
    /// Never.
    Off,
}

/// Which outbound destinations are captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncludeCidrs {
    /// Every destination not excluded.
    All,
    /// Only these blocks (both families mixed; each family uses its own).
    Only(Vec<Cidr>),
}

/// Validated rule settings: what `apply`, `cleanup` and `--dry-run` work from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The proxy's UID (never 0).
    pub proxy_uid: u32,
    /// The proxy's GID (never 0).
    pub proxy_gid: u32,
    /// Where outbound TCP is redirected.
    pub outbound_port: u16,
    /// Where inbound TCP is redirected when inbound capture is on.
    pub inbound_port: u16,
    /// Destination ports never captured outbound.
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination blocks never captured outbound (both families).
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Destinations captured outbound.
    pub include_outbound_cidrs: IncludeCidrs,
    /// Whether inbound TCP is captured.
    pub inbound_capture: bool,
    /// Local ports never captured inbound, besides the proxy's own.
    pub exclude_inbound_ports: Vec<u16>,
    /// Which iptables backend.
    pub iptables_mode: IptablesMode,
    /// Whether IPv6 rules are installed.
    pub ipv6: Ipv6Mode,
    /// Print instead of apply.
    pub dry_run: bool,
}

impl Default for Settings {
    /// The contract's defaults: the same as running with no flag and no variable.
    fn default() -> Settings {
        Settings {
            proxy_uid: DEFAULT_PROXY_ID,
            proxy_gid: DEFAULT_PROXY_ID,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            inbound_port: DEFAULT_INBOUND_PORT,
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            include_outbound_cidrs: IncludeCidrs::All,
            inbound_capture: false,
            exclude_inbound_ports: Vec::new(),
            iptables_mode: IptablesMode::Auto,
            ipv6: Ipv6Mode::Auto,
            dry_run: false,
        }
    }
}

impl Settings {
    /// Validates raw settings; the first bad value is reported.
    pub fn from_raw(raw: &RawSettings) -> Result<Settings, SettingsError> {
        let settings = Settings {
            proxy_uid: parse_id(PROXY_UID, &raw.proxy_uid)?,
            proxy_gid: parse_id(PROXY_GID, &raw.proxy_gid)?,
            outbound_port: parse_port(OUTBOUND_PORT, &raw.outbound_port)?,
            inbound_port: parse_port(INBOUND_PORT, &raw.inbound_port)?,
            exclude_outbound_ports: parse_ports(
                EXCLUDE_OUTBOUND_PORTS,
                &raw.exclude_outbound_ports,
            )?,
            exclude_outbound_cidrs: parse_cidrs(
                EXCLUDE_OUTBOUND_CIDRS,
                &raw.exclude_outbound_cidrs,
            )?,
            include_outbound_cidrs: parse_include(&raw.include_outbound_cidrs)?,
            inbound_capture: parse_bool(INBOUND_CAPTURE, &raw.inbound_capture)?,
            exclude_inbound_ports: parse_ports(EXCLUDE_INBOUND_PORTS, &raw.exclude_inbound_ports)?,
            iptables_mode: parse_mode(&raw.iptables_mode)?,
            ipv6: parse_ipv6(&raw.ipv6)?,
            dry_run: parse_bool(DRY_RUN, &raw.dry_run)?,
        };
        if settings.inbound_port == settings.outbound_port {
            return Err(invalid(
                INBOUND_PORT,
                &raw.inbound_port,
                "must differ from the outbound port",
            ));
        }
        Ok(settings)
    }

    /// The excluded outbound blocks of one family.
    pub fn exclude_outbound_cidrs_of(&self, family: Family) -> Vec<Cidr> {
        of_family(&self.exclude_outbound_cidrs, family)
    }
}

/// Keeps the blocks of one family, in order.
pub fn of_family(cidrs: &[Cidr], family: Family) -> Vec<Cidr> {
    cidrs
        .iter()
        .copied()
        .filter(|c| c.family() == family)
        .collect()
}

/// Validated settings of `validate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidateSettings {
    /// Loopback port to listen on.
    pub port: u16,
    /// IPv4 address to connect to.
    pub target_v4: SocketAddr,
    /// IPv6 address to connect to.
    pub target_v6: SocketAddr,
    /// How long each family may take.
    pub timeout: Duration,
}

impl ValidateSettings {
    /// Validates raw validate settings; the port defaults to the outbound port.
    pub fn from_raw(
        raw: &RawValidateSettings,
        settings: &Settings,
    ) -> Result<ValidateSettings, SettingsError> {
        let port = match &raw.validation_port {
            Some(p) => parse_port(VALIDATION_PORT, p)?,
            None => settings.outbound_port,
        };
        let mut target_v4 = SocketAddr::from(([198, 18, 255, 254], 80));
        let mut target_v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe], 80));
        let mut seen = Vec::new();
        for item in list_items(&raw.validation_targets) {
            let addr: SocketAddr = item.parse().map_err(|_| {
                invalid(
                    VALIDATION_TARGETS,
                    item,
                    "expected ADDR:PORT, with IPv6 as [ADDR]:PORT",
                )
            })?;
            if addr.port() == 0 {
                return Err(invalid(VALIDATION_TARGETS, item, "port 0 is not allowed"));
            }
            let family = Family::of(addr.ip());
            if seen.contains(&family) {
                return Err(invalid(
                    VALIDATION_TARGETS,
                    &raw.validation_targets,
                    &format!("more than one {family} target"),
                ));
            }
            seen.push(family);
            match family {
                Family::V4 => target_v4 = addr,
                Family::V6 => target_v6 = addr,
            }
        }
        let secs: u64 = raw.validation_timeout.trim().parse().map_err(|_| {
            invalid(
                VALIDATION_TIMEOUT,
                &raw.validation_timeout,
                "expected whole seconds",
            )
        })?;
        let timeout = Duration::from_secs(secs);
        if secs == 0 || timeout > MAX_VALIDATION_TIMEOUT {
            return Err(invalid(
                VALIDATION_TIMEOUT,
                &raw.validation_timeout,
                "must be 1 to 60 seconds",
            ));
        }
        Ok(ValidateSettings {
            port,
            target_v4,
            target_v6,
            timeout,
        })
    }

    /// The target of one family.
    pub fn target(&self, family: Family) -> SocketAddr {
        match family {
            Family::V4 => self.target_v4,
            Family::V6 => self.target_v6,
        }
    }
}

fn invalid(setting: SettingName, value: &str, reason: &str) -> SettingsError {
    SettingsError {
        setting,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The non-empty, trimmed items of a comma-separated list.
fn list_items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_id(setting: SettingName, text: &str) -> Result<u32, SettingsError> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err(invalid(
            setting,
            text,
            "0 is root: exempting root from capture would let most traffic bypass the proxy",
        )),
        Ok(id) => Ok(id),
        Err(_) => Err(invalid(
            setting,
            text,
            "expected a number from 1 to 4294967295",
        )),
    }
}

fn parse_port(setting: SettingName, text: &str) -> Result<u16, SettingsError> {
    match text.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(invalid(setting, text, "port must be 1 to 65535")),
    }
}

fn parse_ports(setting: SettingName, text: &str) -> Result<Vec<u16>, SettingsError> {
    let mut ports = Vec::new();
    for item in list_items(text) {
        let port = parse_port(setting, item)?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

fn parse_cidrs(setting: SettingName, text: &str) -> Result<Vec<Cidr>, SettingsError> {
    let mut cidrs = Vec::new();
    for item in list_items(text) {
        let cidr: Cidr = item
            .parse()
            .map_err(|e: crate::net::CidrError| invalid(setting, item, &e.to_string()))?;
        if !cidrs.contains(&cidr) {
            cidrs.push(cidr);
        }
    }
    Ok(cidrs)
}

fn parse_include(text: &str) -> Result<IncludeCidrs, SettingsError> {
    let items: Vec<&str> = list_items(text).collect();
    if items.is_empty() || items == ["*"] {
        return Ok(IncludeCidrs::All);
    }
    if items.contains(&"*") {
        return Err(invalid(
            INCLUDE_OUTBOUND_CIDRS,
            text,
            "'*' (everything) cannot be combined with CIDRs",
        ));
    }
    parse_cidrs(INCLUDE_OUTBOUND_CIDRS, text).map(IncludeCidrs::Only)
}

fn parse_bool(setting: SettingName, text: &str) -> Result<bool, SettingsError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(setting, text, "expected true or false")),
    }
}

fn parse_mode(text: &str) -> Result<IptablesMode, SettingsError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(IptablesMode::Auto),
        "legacy" => Ok(IptablesMode::Legacy),
        "nft" => Ok(IptablesMode::Nft),
        _ => Err(invalid(IPTABLES_MODE, text, "expected auto, legacy or nft")),
    }
}

fn parse_ipv6(text: &str) -> Result<Ipv6Mode, SettingsError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Ipv6Mode::Auto),
        "on" | "true" => Ok(Ipv6Mode::On),
        "off" | "false" => Ok(Ipv6Mode::Off),
        _ => Err(invalid(IPV6, text, "expected auto, on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, Parser};

    fn parse(args: &[&str]) -> Result<Settings, SettingsError> {
        let mut argv = vec!["agentmesh-init"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("clap accepts text values");
        Settings::from_raw(&cli.raw)
    }

    fn rejected(args: &[&str]) -> SettingsError {
        match parse(args) {
            Err(e) => e,
            Ok(s) => panic!("{args:?} was accepted: {s:?}"),
        }
    }

    #[test]
    fn every_setting_has_its_flag_and_environment_variable() {
        let cmd = Cli::command();
        let validate = cmd
            .find_subcommand("validate")
            .expect("validate subcommand")
            .clone();
        for name in ALL_SETTINGS {
            let found = cmd
                .get_arguments()
                .chain(validate.get_arguments())
                .any(|a| {
                    a.get_long().map(|l| format!("--{l}")).as_deref() == Some(name.flag)
                        && a.get_env().and_then(|e| e.to_str()) == Some(name.env)
                });
            assert!(found, "{name:?} has no matching clap argument");
        }
        cmd.debug_assert();
    }

    #[test]
    fn defaults_follow_the_contract() {
        assert_eq!(parse(&[]), Ok(Settings::default()));
    }

    #[test]
    fn lists_are_trimmed_deduplicated_and_split_by_family() {
        let s = parse(&[
            "--exclude-outbound-ports",
            " 22, 3306,22,",
            "--exclude-outbound-cidrs",
            "10.0.0.0/8, fd00::/8",
            "--inbound-capture",
        ])
        .expect("valid");
        assert_eq!(s.exclude_outbound_ports, vec![22, 3306]);
        assert_eq!(s.exclude_outbound_cidrs_of(Family::V4).len(), 1);
        assert_eq!(s.exclude_outbound_cidrs_of(Family::V6).len(), 1);
        assert!(s.inbound_capture);
    }

    #[test]
    fn bad_values_name_the_flag_the_variable_and_the_value() {
        let e = rejected(&["--outbound-port", "70000"]);
        assert_eq!(e.setting, OUTBOUND_PORT);
        let message = e.to_string();
        assert!(message.contains("--outbound-port"), "{message}");
        assert!(message.contains("AGENTMESH_OUTBOUND_PORT"), "{message}");
        assert!(message.contains("70000"), "{message}");

        assert_eq!(rejected(&["--proxy-uid", "0"]).setting, PROXY_UID);
        assert_eq!(rejected(&["--proxy-gid=-1"]).setting, PROXY_GID);
        assert_eq!(
            rejected(&["--exclude-outbound-ports", "22,0"]).setting,
            EXCLUDE_OUTBOUND_PORTS
        );
        let e = rejected(&["--exclude-outbound-cidrs", "10.0.0.0/33"]);
        assert_eq!(
            (e.setting, e.value.as_str()),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/33")
        );
        assert_eq!(
            rejected(&["--include-outbound-cidrs", "*,10.0.0.0/8"]).setting,
            INCLUDE_OUTBOUND_CIDRS
        );
        assert_eq!(
            rejected(&["--inbound-capture=maybe"]).setting,
            INBOUND_CAPTURE
        );
        assert_eq!(
            rejected(&["--iptables-mode", "ebpf"]).setting,
            IPTABLES_MODE
        );
        assert_eq!(rejected(&["--ipv6", "sometimes"]).setting, IPV6);
        assert_eq!(rejected(&["--inbound-port", "16001"]).setting, INBOUND_PORT);
    }

    #[test]
    fn validate_settings_route_targets_by_family() {
        let cli = Cli::try_parse_from([
            "agentmesh-init",
            "validate",
            "--validation-targets",
            "[2001:db8:1::fe]:8080,198.18.1.1:81",
            "--validation-timeout",
            "2",
        ])
        .expect("parses");
        let settings = Settings::from_raw(&cli.raw).expect("valid");
        let Some(Command::Validate(raw)) = &cli.command else {
            panic!("validate expected");
        };
        let v = ValidateSettings::from_raw(raw, &settings).expect("valid");
        assert_eq!(v.port, DEFAULT_OUTBOUND_PORT);
        assert_eq!(v.target(Family::V4).to_string(), "198.18.1.1:81");
        assert_eq!(v.target(Family::V6).to_string(), "[2001:db8:1::fe]:8080");
        assert_eq!(v.timeout, Duration::from_secs(2));
    }
}
