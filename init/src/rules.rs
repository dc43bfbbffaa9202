//! The capture rules: a typed model of our nat-table rules per address family, built from
//! [`Settings`], and its rendering to `iptables-restore` text.
//!
//! Rules are rendered in the exact form `iptables-save` prints them (match order, CIDRs
//! in canonical form, quoted comments), so `apply` can compare what is installed with what
//! is wanted line by line. This module is pure: it never runs iptables.

use std::fmt;

use crate::net::{Cidr, Family};
use crate::settings::{IncludeCidrs, PROXY_SERVICE_PORTS, Settings, of_family};

/// Every chain we own starts with this prefix; `cleanup` removes exactly these.
pub const CHAIN_PREFIX: &str = "AGENTMESH_";
/// Every comment we write starts with this prefix.
pub const COMMENT_PREFIX: &str = "agentmesh: ";

/// A nat-table chain our rules live in or jump from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Chain {
    /// Built-in: locally generated packets (outbound capture hooks here).
    Output,
    /// Built-in: packets arriving from the network (inbound capture hooks here).
    Prerouting,
    /// Ours: decides which outbound TCP is captured.
    AgentOutput,
    /// Ours: redirects captured outbound TCP to the outbound port.
    AgentRedirect,
    /// Ours: decides which inbound TCP is captured.
    AgentInbound,
    /// Ours: redirects captured inbound TCP to the inbound port.
    AgentInboundRedirect,
}

impl Chain {
    /// The chain's name in iptables.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Output => "OUTPUT",
            Chain::Prerouting => "PREROUTING",
            Chain::AgentOutput => "AGENTMESH_OUTPUT",
            Chain::AgentRedirect => "AGENTMESH_REDIRECT",
            Chain::AgentInbound => "AGENTMESH_INBOUND",
            Chain::AgentInboundRedirect => "AGENTMESH_INBOUND_REDIRECT",
        }
    }

    /// Whether we create (and so may flush and delete) the chain.
    pub fn is_ours(self) -> bool {
        !matches!(self, Chain::Output | Chain::Prerouting)
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a rule does with a matching packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Leave our chain: the packet is not captured by it.
    Return,
    /// Continue in one of our chains.
    Jump(Chain),
    /// Rewrite the destination to a loopback port.
    Redirect {
        /// The proxy's listening port.
        port: u16,
    },
}

/// Which socket owner a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// `-m owner --uid-owner`.
    Uid(u32),
    /// `-m owner --gid-owner`.
    Gid(u32),
}

/// A destination match, possibly negated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The block.
    pub cidr: Cidr,
    /// Whether the rule matches destinations outside the block.
    pub negated: bool,
}

/// One rule. Fields are in the order `iptables-save` prints them, which keeps rendering
/// canonical whatever order a builder call chain used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The chain the rule is appended to.
    pub chain: Chain,
    /// `[!] -d CIDR`.
    pub destination: Option<Destination>,
    /// `-o lo`: the packet is routed to a local address.
    pub out_loopback: bool,
    /// `-p tcp`.
    pub tcp: bool,
    /// `-m tcp --dport PORT` (implies `tcp`).
    pub destination_port: Option<u16>,
    /// `-m owner ...`.
    pub owner: Option<Owner>,
    /// Why the rule exists, without [`COMMENT_PREFIX`].
    pub why: String,
    /// `-j ...`.
    pub target: Target,
}

impl Rule {
    /// A rule matching everything in `chain`, doing `target`, because of `why`.
    pub fn new(chain: Chain, target: Target, why: impl Into<String>) -> Rule {
        Rule {
            chain,
            destination: None,
            out_loopback: false,
            tcp: false,
            destination_port: None,
            owner: None,
            why: why.into(),
            target,
        }
    }

    fn to(mut self, cidr: Cidr) -> Rule {
        self.destination = Some(Destination {
            cidr,
            negated: false,
        });
        self
    }

    fn not_to(mut self, cidr: Cidr) -> Rule {
        self.destination = Some(Destination {
            cidr,
            negated: true,
        });
        self
    }

    fn via_loopback(mut self) -> Rule {
        self.out_loopback = true;
        self
    }

    fn tcp(mut self) -> Rule {
        self.tcp = true;
        self
    }

    fn port(mut self, port: u16) -> Rule {
        self.tcp = true;
        self.destination_port = Some(port);
        self
    }

    fn owned_by(mut self, owner: Owner) -> Rule {
        self.owner = Some(owner);
        self
    }

    /// The rule as `iptables-save` prints it, after `-A CHAIN ` (also valid after `-D`).
    pub fn spec(&self) -> String {
        let mut out = String::new();
        if let Some(d) = self.destination {
            if d.negated {
                out.push_str("! ");
            }
            out.push_str(&format!("-d {} ", d.cidr));
        }
        if self.out_loopback {
            out.push_str("-o lo ");
        }
        if self.tcp || self.destination_port.is_some() {
            out.push_str("-p tcp ");
        }
        if let Some(port) = self.destination_port {
            out.push_str(&format!("-m tcp --dport {port} "));
        }
        match self.owner {
            Some(Owner::Uid(uid)) => out.push_str(&format!("-m owner --uid-owner {uid} ")),
            Some(Owner::Gid(gid)) => out.push_str(&format!("-m owner --gid-owner {gid} ")),
            None => {}
        }
        out.push_str(&format!(
            "-m comment --comment \"{COMMENT_PREFIX}{}\" ",
            self.why
        ));
        match self.target {
            Target::Return => out.push_str("-j RETURN"),
            Target::Jump(chain) => out.push_str(&format!("-j {chain}")),
            Target::Redirect { port } => out.push_str(&format!("-j REDIRECT --to-ports {port}")),
        }
        out
    }

    /// The `-A CHAIN ...` line.
    pub fn append_line(&self) -> String {
        format!("-A {} {}", self.chain, self.spec())
    }
}

/// Everything we install in one family's nat table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// The family.
    pub family: Family,
    /// Our chains, in creation order.
    pub chains: Vec<Chain>,
    /// The rules of our chains, in order.
    pub rules: Vec<Rule>,
    /// The jumps from built-in chains into ours.
    pub jumps: Vec<Rule>,
}

impl RuleSet {
    /// The rules `settings` ask for in `family`.
    pub fn build(settings: &Settings, family: Family) -> RuleSet {
        let mut chains = vec![Chain::AgentOutput, Chain::AgentRedirect];
        let mut rules = Vec::new();
        let mut jumps = vec![
            Rule::new(
                Chain::Output,
                Target::Jump(Chain::AgentOutput),
                "outbound TCP goes through agentmesh capture",
            )
            .tcp(),
        ];
        let loopback = family.loopback();

        if settings.inbound_capture {
            rules.push(
                Rule::new(
                    Chain::AgentOutput,
                    Target::Jump(Chain::AgentInbound),
                    "a call to an address of this pod is inbound traffic, capture it as such",
                )
                .not_to(loopback)
                .via_loopback(),
            );
        }
        rules.push(
            Rule::new(
                Chain::AgentOutput,
                Target::Return,
                "traffic of the proxy itself (uid) is never captured",
            )
            .owned_by(Owner::Uid(settings.proxy_uid)),
        );
        rules.push(
            Rule::new(
                Chain::AgentOutput,
                Target::Return,
                "traffic of the proxy itself (gid) is never captured",
            )
            .owned_by(Owner::Gid(settings.proxy_gid)),
        );
        rules.push(
            Rule::new(
                Chain::AgentOutput,
                Target::Return,
                "loopback destination is not captured",
            )
            .to(loopback),
        );
        rules.push(
            Rule::new(
                Chain::AgentOutput,
                Target::Return,
                "traffic within the pod (to its own addresses) is not captured",
            )
            .via_loopback(),
        );
        for &port in &settings.exclude_outbound_ports {
            rules.push(
                Rule::new(
                    Chain::AgentOutput,
                    Target::Return,
                    format!("outbound port {port} is excluded"),
                )
                .port(port),
            );
        }
        for cidr in settings.exclude_outbound_cidrs_of(family) {
            rules.push(
                Rule::new(
                    Chain::AgentOutput,
                    Target::Return,
                    format!("outbound destination {cidr} is excluded"),
                )
                .to(cidr),
            );
        }
        match &settings.include_outbound_cidrs {
            IncludeCidrs::All => rules.push(Rule::new(
                Chain::AgentOutput,
                Target::Jump(Chain::AgentRedirect),
                "capture all other outbound TCP",
            )),
            IncludeCidrs::Only(cidrs) => {
                for cidr in of_family(cidrs, family) {
                    rules.push(
                        Rule::new(
                            Chain::AgentOutput,
                            Target::Jump(Chain::AgentRedirect),
                            format!("capture outbound TCP to included {cidr}"),
                        )
                        .to(cidr),
                    );
                }
            }
        }
        rules.push(
            Rule::new(
                Chain::AgentRedirect,
                Target::Redirect {
                    port: settings.outbound_port,
                },
                "hand captured outbound TCP to the outbound listener of the proxy",
            )
            .tcp(),
        );

        if settings.inbound_capture {
            chains.extend([Chain::AgentInbound, Chain::AgentInboundRedirect]);
            jumps.push(
                Rule::new(
                    Chain::Prerouting,
                    Target::Jump(Chain::AgentInbound),
                    "inbound TCP goes through agentmesh capture",
                )
                .tcp(),
            );
            let mut never = Vec::new();
            for (port, why) in PROXY_SERVICE_PORTS
                .iter()
                .map(|&p| (p, "belongs to the proxy"))
                .chain([
                    (settings.outbound_port, "belongs to the proxy"),
                    (settings.inbound_port, "belongs to the proxy"),
                ])
                .chain(
                    settings
                        .exclude_inbound_ports
                        .iter()
                        .map(|&p| (p, "is excluded")),
                )
            {
                if never.contains(&port) {
                    continue;
                }
                never.push(port);
                rules.push(
                    Rule::new(
                        Chain::AgentInbound,
                        Target::Return,
                        format!("inbound port {port} {why}"),
                    )
                    .port(port),
                );
            }
            rules.push(
                Rule::new(
                    Chain::AgentInbound,
                    Target::Jump(Chain::AgentInboundRedirect),
                    "capture all other inbound TCP",
                )
                .tcp(),
            );
            rules.push(
                Rule::new(
                    Chain::AgentInboundRedirect,
                    Target::Redirect {
                        port: settings.inbound_port,
                    },
                    "hand captured inbound TCP to the inbound listener of the proxy",
                )
                .tcp(),
            );
        }

        RuleSet {
            family,
            chains,
            rules,
            jumps,
        }
    }

    /// The `iptables-restore --noflush` text that installs the set in a namespace where
    /// none of it exists: this is what `--dry-run` prints.
    pub fn render(&self) -> String {
        let mut out = String::from("*nat\n");
        for chain in &self.chains {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in self.rules.iter().chain(&self.jumps) {
            out.push_str(&rule.append_line());
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }

    /// The rules of one of our chains, as `-A` lines in order.
    pub fn chain_lines(&self, chain: Chain) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.chain == chain)
            .map(Rule::append_line)
            .collect()
    }
}

/// The `--dry-run` text: each family's restore text under a `#` header, which
/// `iptables-restore` ignores.
pub fn render_dry_run(settings: &Settings, families: &[Family]) -> String {
    let mut out = String::new();
    for &family in families {
        let tool = match family {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        };
        out.push_str(&format!("# {family}: {tool} --noflush\n"));
        out.push_str(&RuleSet::build(settings, family).render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_carries_an_agentmesh_comment() {
        let settings = Settings {
            inbound_capture: true,
            exclude_outbound_ports: vec![22],
            ..Settings::default()
        };
        for family in Family::ALL {
            let set = RuleSet::build(&settings, family);
            for rule in set.rules.iter().chain(&set.jumps) {
                assert!(
                    rule.spec().contains("-m comment --comment \"agentmesh: "),
                    "{}",
                    rule.spec()
                );
                // iptables-save escapes quotes and apostrophes, which would make the
                // installed form differ from ours and defeat the "unchanged" check.
                assert!(
                    rule.why
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || " ,./:()-".contains(c)),
                    "{}",
                    rule.why
                );
            }
        }
    }

    #[test]
    fn rules_render_in_iptables_save_order() {
        let rule = Rule::new(Chain::AgentOutput, Target::Return, "x")
            .port(22)
            .via_loopback()
            .not_to(Family::V4.loopback());
        assert_eq!(
            rule.append_line(),
            "-A AGENTMESH_OUTPUT ! -d 127.0.0.0/8 -o lo -p tcp -m tcp --dport 22 \
             -m comment --comment \"agentmesh: x\" -j RETURN"
        );
    }

    #[test]
    fn inbound_capture_never_redirects_the_proxys_own_ports() {
        let settings = Settings {
            inbound_capture: true,
            exclude_inbound_ports: vec![16020, 8443],
            ..Settings::default()
        };
        let set = RuleSet::build(&settings, Family::V4);
        let returned: Vec<u16> = set
            .rules
            .iter()
            .filter(|r| r.chain == Chain::AgentInbound && r.target == Target::Return)
            .filter_map(|r| r.destination_port)
            .collect();
        assert_eq!(returned, vec![16000, 16020, 16021, 16001, 16006, 8443]);
    }

    #[test]
    fn include_list_without_a_family_captures_nothing_in_it() {
        let settings = Settings {
            include_outbound_cidrs: IncludeCidrs::Only(vec!["10.0.0.0/8".parse().expect("cidr")]),
            ..Settings::default()
        };
        let v6 = RuleSet::build(&settings, Family::V6);
        assert!(
            !v6.rules
                .iter()
                .any(|r| r.target == Target::Jump(Chain::AgentRedirect))
        );
        let v4 = RuleSet::build(&settings, Family::V4);
        assert_eq!(
            v4.rules
                .iter()
                .filter(|r| r.target == Target::Jump(Chain::AgentRedirect))
                .count(),
            1
        );
    }
}
