//! Applying and removing our rules: read what is installed, plan the smallest correct
//! change, load it with one restore per family.
//!
//! Idempotency lives here: when the installed rules of our chains and the jumps into them
//! equal the wanted ones, nothing is loaded ("unchanged"). Otherwise one restore flushes
//! our chains (`:CHAIN - [0:0]`), re-adds every rule, adds missing jumps and deletes
//! stale ones, so a change of settings is atomic and jumps are never duplicated. Rules
//! and chains that are not ours are never named in a restore, so they cannot be touched.

use std::collections::BTreeMap;
use std::fmt;

use crate::backend::{self, Backend, BackendError, Iptables};
use crate::net::Family;
use crate::rules::{CHAIN_PREFIX, COMMENT_PREFIX, RuleSet};
use crate::settings::{IptablesMode, Ipv6Mode, Settings};

/// Our part of one family's nat table, as read from `iptables-save`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatState {
    /// Our chains that exist, in save order.
    pub chains: Vec<String>,
    /// The rules of each of our chains, as `-A` lines in order.
    pub rules: BTreeMap<String, Vec<String>>,
    /// Rules in chains not ours that jump into ours or carry our comment, as `-A` lines.
    pub jumps: Vec<String>,
}

impl NatState {
    /// Parses the `*nat` section of `iptables-save` (or restore text in the same form).
    pub fn parse(nat: &str) -> NatState {
        let mut state = NatState::default();
        for line in nat.lines().map(normalize) {
            if let Some(declaration) = line.strip_prefix(':') {
                let name = declaration.split(' ').next().unwrap_or_default();
                if name.starts_with(CHAIN_PREFIX) {
                    state.chains.push(name.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let chain = rule.split(' ').next().unwrap_or_default();
                if chain.starts_with(CHAIN_PREFIX) {
                    state
                        .rules
                        .entry(chain.to_string())
                        .or_default()
                        .push(line.clone());
                } else if refers_to_us(&line) {
                    state.jumps.push(line.clone());
                }
            }
        }
        state
    }

    /// Whether nothing of ours exists.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }
}

/// Collapses runs of whitespace, as a line from any save version compares equal.
fn normalize(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a rule outside our chains belongs to us: it jumps into one of our chains, or
/// carries our comment.
fn refers_to_us(line: &str) -> bool {
    line.contains(&format!(" -j {CHAIN_PREFIX}"))
        || line.contains(&format!(" -g {CHAIN_PREFIX}"))
        || line.contains(&format!("--comment \"{COMMENT_PREFIX}"))
}

/// What one restore has to do, or that nothing has to be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The installed state is already the wanted one.
    Unchanged,
    /// Load this text with `--noflush`.
    Restore(String),
}

/// Plans the change from `current` to `desired`.
pub fn plan_apply(desired: &RuleSet, current: &NatState) -> Plan {
    let wanted_chains: Vec<String> = desired.chains.iter().map(|c| c.name().into()).collect();
    let wanted_jumps: Vec<String> = desired.jumps.iter().map(|r| r.append_line()).collect();

    let same_chains = {
        let mut a = wanted_chains.clone();
        let mut b = current.chains.clone();
        a.sort();
        b.sort();
        a == b
    };
    let same_rules = desired.chains.iter().all(|&chain| {
        current.rules.get(chain.name()).cloned().unwrap_or_default() == desired.chain_lines(chain)
    });
    let same_jumps = {
        // Save prints PREROUTING before OUTPUT; only which jumps exist matters.
        let mut a = wanted_jumps.clone();
        let mut b = current.jumps.clone();
        a.sort();
        b.sort();
        a == b
    };
    if same_chains && same_rules && same_jumps {
        return Plan::Unchanged;
    }

    // Keep each wanted jump's first installed copy; delete everything else of ours.
    let mut missing_jumps = wanted_jumps.clone();
    let mut stale_jumps = Vec::new();
    for jump in &current.jumps {
        match missing_jumps.iter().position(|j| j == jump) {
            Some(i) => {
                missing_jumps.remove(i);
            }
            None => stale_jumps.push(jump.clone()),
        }
    }
    let stale_chains: Vec<&String> = current
        .chains
        .iter()
        .filter(|c| !wanted_chains.contains(c))
        .collect();

    let mut out = String::from("*nat\n");
    for chain in wanted_chains.iter().chain(stale_chains.iter().copied()) {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for jump in &stale_jumps {
        out.push_str(&delete_line(jump));
    }
    for rule in &desired.rules {
        out.push_str(&rule.append_line());
        out.push('\n');
    }
    for jump in &missing_jumps {
        out.push_str(jump);
        out.push('\n');
    }
    for chain in stale_chains {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Plan::Restore(out)
}

/// Plans the removal of everything of ours in `current`: jumps deleted, our chains
/// flushed, then deleted.
pub fn plan_cleanup(current: &NatState) -> Plan {
    if current.is_empty() {
        return Plan::Unchanged;
    }
    let mut out = String::from("*nat\n");
    for chain in &current.chains {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for jump in &current.jumps {
        out.push_str(&delete_line(jump));
    }
    for chain in &current.chains {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Plan::Restore(out)
}

/// Turns an installed `-A CHAIN spec` line into the `-D CHAIN spec` line deleting it.
fn delete_line(append: &str) -> String {
    let spec = append.strip_prefix("-A ").unwrap_or(append);
    format!("-D {spec}\n")
}

/// The families to work on: IPv4 always, IPv6 unless off (in `auto`, when the kernel
/// has IPv6 in this namespace).
pub fn families(ipv6: Ipv6Mode) -> Vec<Family> {
    let v6 = match ipv6 {
        Ipv6Mode::On => true,
        Ipv6Mode::Off => false,
        Ipv6Mode::Auto => std::path::Path::new("/proc/net/if_inet6").exists(),
    };
    if v6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

/// What happened to one family's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Our rules were installed or replaced.
    Applied,
    /// Our rules were already the wanted ones; nothing was loaded.
    Unchanged,
    /// Our rules and chains were removed.
    Removed,
    /// There was nothing of ours to remove.
    NothingToRemove,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Applied => "applied",
            Change::Unchanged => "unchanged",
            Change::Removed => "removed",
            Change::NothingToRemove => "nothing to remove",
        })
    }
}

/// The outcome for one family of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Where.
    pub iptables: Iptables,
    /// What happened.
    pub change: Change,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.iptables.family, self.iptables.backend, self.change
        )
    }
}

/// A failure of `apply` or `cleanup`, classified for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// No backend could be used, or our state could not be read.
    #[error("iptables backend unavailable: {0}")]
    Backend(#[source] BackendError),
    /// The restore was rejected; the transaction left the old rules in place.
    #[error("{family} ({backend}): rules rejected, previous rules kept: {source}")]
    Rejected {
        /// The family.
        family: Family,
        /// The backend.
        backend: Backend,
        /// The restore's failure.
        source: BackendError,
    },
}

/// Installs or replaces our rules in every family, one restore per family that changed.
pub fn apply(settings: &Settings, log: &mut dyn FnMut(String)) -> Result<Vec<Outcome>, ApplyError> {
    let families = families(settings.ipv6);
    let backend =
        backend::choose(settings.iptables_mode, &families, log).map_err(ApplyError::Backend)?;
    let mut outcomes = Vec::new();
    for family in families {
        let iptables = Iptables { backend, family };
        let desired = RuleSet::build(settings, family);
        let current = NatState::parse(&iptables.save_nat().map_err(ApplyError::Backend)?);
        let change = match plan_apply(&desired, &current) {
            Plan::Unchanged => Change::Unchanged,
            Plan::Restore(text) => {
                iptables
                    .restore(&text)
                    .map_err(|source| ApplyError::Rejected {
                        family,
                        backend,
                        source,
                    })?;
                // Read back: if the kernel's form differs from ours, the next run would
                // not see "unchanged". Worth a warning, not a failure.
                let after = NatState::parse(&iptables.save_nat().map_err(ApplyError::Backend)?);
                if plan_apply(&desired, &after) != Plan::Unchanged {
                    log(format!(
                        "{family} ({backend}): warning: installed rules read back differently \
                         from the rendered ones; re-runs will replace them instead of skipping"
                    ));
                }
                Change::Applied
            }
        };
        outcomes.push(Outcome { iptables, change });
    }
    Ok(outcomes)
}

/// The cleanup restore each backend and family needs, from what is installed. With
/// `auto`, every backend holding anything of ours is included (leftovers from a run with
/// another mode too); otherwise only the one named. Reads only.
pub fn plan_cleanups(
    settings: &Settings,
    log: &mut dyn FnMut(String),
) -> Result<Vec<(Iptables, Plan)>, ApplyError> {
    let auto = settings.iptables_mode == IptablesMode::Auto;
    let backends: Vec<Backend> = match settings.iptables_mode {
        IptablesMode::Auto => Backend::ALL.to_vec(),
        IptablesMode::Legacy => vec![Backend::Legacy],
        IptablesMode::Nft => vec![Backend::Nft],
    };
    let mut plans = Vec::new();
    for family in families(settings.ipv6) {
        let mut found_any = false;
        for &backend in &backends {
            let iptables = Iptables { backend, family };
            let nat = match iptables.save_nat() {
                Ok(nat) => nat,
                // In auto mode a backend we cannot even read holds nothing we made.
                Err(e) if auto => {
                    log(format!("{family} ({backend}): skipped, cannot read: {e}"));
                    continue;
                }
                Err(e) => return Err(ApplyError::Backend(e)),
            };
            let plan = plan_cleanup(&NatState::parse(&nat));
            if plan != Plan::Unchanged {
                found_any = true;
                plans.push((iptables, plan));
            }
        }
        if !found_any {
            let iptables = Iptables {
                backend: backends[0],
                family,
            };
            plans.push((iptables, Plan::Unchanged));
        }
    }
    Ok(plans)
}

/// Removes our rules and chains (see [`plan_cleanups`]); nothing else is touched.
pub fn cleanup(
    settings: &Settings,
    log: &mut dyn FnMut(String),
) -> Result<Vec<Outcome>, ApplyError> {
    let mut outcomes = Vec::new();
    for (iptables, plan) in plan_cleanups(settings, log)? {
        let change = match plan {
            Plan::Unchanged => Change::NothingToRemove,
            Plan::Restore(text) => {
                iptables
                    .restore(&text)
                    .map_err(|source| ApplyError::Rejected {
                        family: iptables.family,
                        backend: iptables.backend,
                        source,
                    })?;
                Change::Removed
            }
        };
        outcomes.push(Outcome { iptables, change });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn state_of(settings: &Settings) -> NatState {
        NatState::parse(&RuleSet::build(settings, Family::V4).render())
    }

    #[test]
    fn jumps_in_save_order_still_match() {
        let settings = Settings {
            inbound_capture: true,
            ..Settings::default()
        };
        let mut current = state_of(&settings);
        current.jumps.reverse();
        let desired = RuleSet::build(&settings, Family::V4);
        assert_eq!(plan_apply(&desired, &current), Plan::Unchanged);
    }

    #[test]
    fn same_settings_plan_nothing() {
        let settings = Settings::default();
        let desired = RuleSet::build(&settings, Family::V4);
        assert_eq!(plan_apply(&desired, &state_of(&settings)), Plan::Unchanged);
    }

    #[test]
    fn fresh_namespace_gets_the_full_rule_set() {
        let desired = RuleSet::build(&Settings::default(), Family::V4);
        assert_eq!(
            plan_apply(&desired, &NatState::default()),
            Plan::Restore(desired.render())
        );
    }

    #[test]
    fn turning_inbound_off_deletes_its_jump_and_chains_without_duplicating_others() {
        let before = state_of(&Settings {
            inbound_capture: true,
            ..Settings::default()
        });
        let desired = RuleSet::build(&Settings::default(), Family::V4);
        let Plan::Restore(text) = plan_apply(&desired, &before) else {
            panic!("a change is expected");
        };
        assert!(text.contains("-D PREROUTING -p tcp"), "{text}");
        assert!(text.contains("-X AGENTMESH_INBOUND\n"), "{text}");
        assert!(text.contains("-X AGENTMESH_INBOUND_REDIRECT\n"), "{text}");
        assert!(!text.contains("-A OUTPUT"), "kept jump re-added:\n{text}");
        assert!(!text.contains("-D OUTPUT"), "kept jump deleted:\n{text}");
    }

    #[test]
    fn duplicated_jumps_are_reduced_to_one() {
        let settings = Settings::default();
        let mut current = state_of(&settings);
        let jump = current.jumps[0].clone();
        current.jumps.push(jump.clone());
        let Plan::Restore(text) = plan_apply(&RuleSet::build(&settings, Family::V4), &current)
        else {
            panic!("a change is expected");
        };
        assert_eq!(text.matches(&delete_line(&jump)).count(), 1, "{text}");
    }

    #[test]
    fn foreign_rules_are_neither_ours_nor_touched() {
        let nat = ":OUTPUT ACCEPT [0:0]\n:KUBE-X - [0:0]\n-A OUTPUT -d 198.18.9.9/32 -j RETURN\n\
                   -A KUBE-X -j RETURN\n";
        let state = NatState::parse(nat);
        assert!(state.is_empty());
        assert_eq!(plan_cleanup(&state), Plan::Unchanged);
    }
}
