//! GatewayClasses and Gateways: which are ours, and what each Gateway's listeners become.
//!
//! A listener is served (Programmed) when its protocol is supported, its fields are
//! valid, its references resolve and it does not conflict with another listener of the
//! same Gateway: two listeners on one port must speak the same protocol (a port is one
//! socket), and must differ in hostname (otherwise a request could belong to either; TCP
//! listeners have none, so a port has at most one). TLS listeners are served in mode
//! Passthrough (the backend terminates TLS) and Terminate (the proxy does, with the
//! listener's certificates, and forwards the decrypted bytes); one port serves one mode.
//! Every listener that fails one of these is reported and left out; the others are
//! served.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use agentmesh_proto::config::v1 as pb;
use agentmesh_proxy::http::route::HostPattern;
use gateway_api::apis::standard::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom, GatewayListenersTlsMode,
};

use super::attach::{AllowedNamespaces, LabelSelector};
use super::backends::Grants;
use super::{GatewayState, ListenerState, Problem, Protocol};
use crate::objects::{CONTROLLER_NAME, GATEWAY_GROUP, ObjectRef, Objects};
use crate::status::{Condition, StatusAddress, StatusReport};

/// Accepts the GatewayClasses that name our controller; returns their names.
pub(super) fn accept_classes<'a>(
    objects: &'a Objects,
    status: &mut StatusReport,
) -> HashSet<&'a str> {
    let mut ours = HashSet::new();
    for class in &objects.gateway_classes {
        if class.spec.controller_name != CONTROLLER_NAME {
            // Another implementation's class: not ours to judge.
            continue;
        }
        let generation = class.metadata.generation.unwrap_or_default();
        status
            .entry(ObjectRef::of("GatewayClass", &class.metadata))
            .conditions
            .push(Condition::yes(
                "Accepted",
                "Accepted",
                "handled by agentmesh",
                generation,
            ));
        if let Some(name) = class.metadata.name.as_deref() {
            ours.insert(name);
        }
    }
    ours
}

/// A listener as read from the spec, before conflicts are known.
struct Checked {
    state: ListenerState,
    /// Accepted=False problem (protocol, port, fields).
    invalid: Option<Problem>,
    /// ResolvedRefs=False problems that keep the listener from being served
    /// (certificates).
    refs: Vec<Problem>,
    /// ResolvedRefs=False problems that do not (route kinds it cannot serve).
    kinds: Option<Problem>,
    /// TLS settings, for HTTPS.
    tls: Option<pb::ServerTls>,
}

/// Plans one Gateway of our class: its listeners' status, binds and listeners.
pub(super) fn plan(gateway: &Gateway, objects: &Objects, grants: &Grants) -> GatewayState {
    let reference = ObjectRef::of("Gateway", &gateway.metadata);
    let generation = gateway.metadata.generation.unwrap_or_default();
    let mut checked: Vec<Checked> = gateway
        .spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| check(&reference, i, l, objects, grants))
        .collect();
    let conflicts = conflicts(&checked);

    let mut state = GatewayState {
        reference: reference.clone(),
        conditions: Vec::new(),
        listeners: Vec::new(),
        resources: Default::default(),
        backends: BTreeMap::new(),
        addresses: Vec::new(),
    };
    let mut ports = BTreeSet::new();
    let mut not_served = Vec::new();
    for (i, c) in checked.drain(..).enumerate() {
        let mut l = c.state;
        let conflict = conflicts.get(&i);
        let mut conditions = Vec::new();
        match &c.invalid {
            Some(p) => conditions.push(Condition::no(
                "Accepted",
                p.reason,
                p.message.clone(),
                generation,
            )),
            None => conditions.push(Condition::yes(
                "Accepted",
                "Accepted",
                "listener is valid",
                generation,
            )),
        }
        match conflict {
            Some(p) => conditions.push(Condition::yes(
                "Conflicted",
                p.reason,
                p.message.clone(),
                generation,
            )),
            None => conditions.push(Condition::no(
                "Conflicted",
                "NoConflicts",
                "no conflict with another listener",
                generation,
            )),
        }
        let ref_problems: Vec<&Problem> = c.refs.iter().chain(c.kinds.as_ref()).collect();
        match ref_problems.first() {
            None => conditions.push(Condition::yes(
                "ResolvedRefs",
                "ResolvedRefs",
                "all references resolved",
                generation,
            )),
            Some(first) => conditions.push(Condition::no(
                "ResolvedRefs",
                first.reason,
                ref_problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                generation,
            )),
        }
        let problem = c
            .invalid
            .as_ref()
            .or(conflict)
            .or(c.refs.first())
            .map(|p| p.message.clone());
        match &problem {
            None => {
                conditions.push(Condition::yes(
                    "Programmed",
                    "Programmed",
                    "served by the gateway's proxies",
                    generation,
                ));
                l.programmed = true;
                let bind_key = bind_key(&reference, l.port);
                ports.insert(l.port);
                state.resources.listeners.push(pb::Listener {
                    key: l.key.clone(),
                    name: l.name.clone(),
                    bind_key,
                    hostnames: l.hostname.iter().cloned().collect(),
                    protocol: match l.protocol {
                        Some(Protocol::Https) => pb::ListenerProtocol::Https,
                        Some(Protocol::TlsPassthrough) => pb::ListenerProtocol::TlsPassthrough,
                        Some(Protocol::TlsTerminate) => pb::ListenerProtocol::TlsTerminate,
                        Some(Protocol::Tcp) => pb::ListenerProtocol::Tcp,
                        _ => pb::ListenerProtocol::Http,
                    } as i32,
                    tls: c.tls,
                    routes: Vec::new(),
                    policies: None,
                });
            }
            Some(why) => {
                conditions.push(Condition::no(
                    "Programmed",
                    "Invalid",
                    why.clone(),
                    generation,
                ));
                l.problem = why.clone();
                not_served.push(l.name.clone());
            }
        }
        l.conditions = conditions;
        state.listeners.push(l);
    }
    for port in ports {
        let key = bind_key(&reference, port);
        state.resources.binds.push(pb::Bind {
            key: key.clone(),
            name: key,
            address: "0.0.0.0".into(),
            port: u32::try_from(port).unwrap_or_default(),
            listeners: Vec::new(),
        });
    }

    let total = state.listeners.len();
    if total == 0 {
        state.conditions.push(Condition::no(
            "Accepted",
            "ListenersNotValid",
            "spec.listeners: a Gateway needs at least one listener",
            generation,
        ));
    } else if not_served.len() == total {
        state.conditions.push(Condition::no(
            "Accepted",
            "ListenersNotValid",
            format!("no listener can be served ({})", not_served.join(", ")),
            generation,
        ));
    } else if !not_served.is_empty() {
        state.conditions.push(Condition::yes(
            "Accepted",
            "ListenersNotValid",
            format!(
                "listener(s) {} cannot be served (see their status); the others are",
                not_served.join(", ")
            ),
            generation,
        ));
    } else {
        state.conditions.push(Condition::yes(
            "Accepted",
            "Accepted",
            "handled by agentmesh",
            generation,
        ));
    }
    if not_served.len() < total {
        state.conditions.push(Condition::yes(
            "Programmed",
            "Programmed",
            "resources ready for the gateway's proxies",
            generation,
        ));
    } else {
        state.conditions.push(Condition::no(
            "Programmed",
            "Invalid",
            "no listener can be served",
            generation,
        ));
    }
    addresses(gateway, objects, &mut state);
    withdraw_if_not_accepted(&mut state, generation);
    state
}

/// A Gateway that is not accepted is not programmed: the Gateway API's Accepted=False
/// says the Gateway is not valid enough to produce configuration for the data plane, so
/// none is produced, whatever made it unaccepted (no servable listener, an unsupported
/// address, …). Its binds and listeners are withdrawn (a proxy serving it gets an empty
/// snapshot and listens on nothing), each listener reports Programmed=False naming the
/// reason, and no route attaches (see [`super::attach`]).
fn withdraw_if_not_accepted(state: &mut GatewayState, generation: i64) {
    let Some(why) = state.not_accepted() else {
        return;
    };
    let problem = format!("the Gateway is not accepted: {why}");
    state.resources = Default::default();
    for listener in state.listeners.iter_mut().filter(|l| l.programmed) {
        listener.programmed = false;
        listener.problem = problem.clone();
        listener.conditions.retain(|c| c.type_ != "Programmed");
        listener.conditions.push(Condition::no(
            "Programmed",
            "Invalid",
            problem.clone(),
            generation,
        ));
    }
}

/// The Gateway's `spec.addresses` (see [`crate::addresses`]): a problem overrides the
/// condition it concerns (Accepted, and then Programmed too; or Programmed); the
/// addresses given to it and those its Service's load balancer reports are its
/// `status.addresses`.
fn addresses(gateway: &Gateway, objects: &Objects, state: &mut GatewayState) {
    let generation = gateway.metadata.generation.unwrap_or_default();
    let address = |type_: &str, value: String| StatusAddress {
        type_: type_.into(),
        value,
    };
    match crate::addresses::read(gateway) {
        Ok(requested) => {
            state.addresses.extend(
                requested
                    .ips
                    .iter()
                    .map(|ip| address("IPAddress", ip.to_string())),
            );
            state.addresses.extend(
                requested
                    .hostnames
                    .into_iter()
                    .map(|h| address("Hostname", h)),
            );
        }
        Err(problem) => {
            let mut overrides = vec![(problem.condition, problem.reason, problem.to_string())];
            if problem.condition == "Accepted" {
                overrides.push((
                    "Programmed",
                    "Invalid",
                    format!("the Gateway is not accepted: {problem}"),
                ));
            }
            for (type_, reason, message) in overrides {
                state.conditions.retain(|c| c.type_ != type_);
                state
                    .conditions
                    .push(Condition::no(type_, reason, message, generation));
            }
        }
    }
    // What the Service's load balancer was given (Kubernetes mode: the rendered Service
    // is among the watched Services).
    let service_name = crate::render::object_name(
        gateway.metadata.name.as_deref().unwrap_or_default(),
        &gateway.spec.gateway_class_name,
    );
    let ingress = objects
        .services
        .iter()
        .filter(|s| {
            s.metadata.namespace == gateway.metadata.namespace
                && s.metadata.name.as_deref() == Some(service_name.as_str())
        })
        .flat_map(|s| s.status.iter())
        .flat_map(|s| s.load_balancer.iter())
        .flat_map(|lb| lb.ingress.iter().flatten());
    for i in ingress {
        let found = match (&i.ip, &i.hostname) {
            (Some(ip), _) if !ip.is_empty() => address("IPAddress", ip.clone()),
            (_, Some(host)) if !host.is_empty() => address("Hostname", host.clone()),
            _ => continue,
        };
        if !state.addresses.contains(&found) {
            state.addresses.push(found);
        }
    }
}

/// The key of the bind of a Gateway's port.
fn bind_key(gateway: &ObjectRef, port: i32) -> String {
    format!("{}/{}/{port}", gateway.namespace, gateway.name)
}

/// Reads and validates one listener.
fn check(
    gateway: &ObjectRef,
    index: usize,
    l: &GatewayListeners,
    objects: &Objects,
    grants: &Grants,
) -> Checked {
    let field = format!("spec.listeners[{index}]");
    let mut invalid = None;
    let protocol = match l.protocol.as_str() {
        "HTTP" => Some(Protocol::Http),
        "HTTPS" => Some(Protocol::Https),
        "TCP" => Some(Protocol::Tcp),
        "TLS" => match l.tls.as_ref().and_then(|t| t.mode.as_ref()) {
            Some(GatewayListenersTlsMode::Passthrough) => Some(Protocol::TlsPassthrough),
            // The Gateway API default mode is Terminate.
            Some(GatewayListenersTlsMode::Terminate) | None => Some(Protocol::TlsTerminate),
        },
        other => {
            invalid = Some(Problem::new(
                "UnsupportedProtocol",
                format!("{field}.protocol: {other:?} is not supported (HTTP, HTTPS, TLS, TCP)"),
            ));
            None
        }
    };
    if !(1..=65535).contains(&l.port) {
        invalid.get_or_insert(Problem::new(
            "PortUnavailable",
            format!("{field}.port: {} is not a TCP port (1-65535)", l.port),
        ));
    }
    let hostname = match l.hostname.as_deref() {
        // TCP carries no hostname: the field is ignored, as the Gateway API says.
        _ if protocol == Some(Protocol::Tcp) => None,
        None | Some("") => None,
        Some(h) => match HostPattern::parse(h) {
            Ok(_) => Some(h.trim().to_ascii_lowercase()),
            Err(e) => {
                invalid.get_or_insert(Problem::new(
                    "UnsupportedValue",
                    format!("{field}.hostname: {e}"),
                ));
                None
            }
        },
    };

    // Route kinds.
    let defaults = protocol.map_or(&[][..], Protocol::default_kinds);
    let mut kinds = Vec::new();
    let mut kinds_problem = None;
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        None => kinds.extend(defaults.iter().map(|k| k.to_string())),
        Some(listed) => {
            let mut refused = Vec::new();
            for (k, kind) in listed.iter().enumerate() {
                let group = kind.group.as_deref().unwrap_or(GATEWAY_GROUP);
                if group == GATEWAY_GROUP && defaults.contains(&kind.kind.as_str()) {
                    kinds.push(kind.kind.clone());
                } else {
                    refused.push(format!(
                        "{field}.allowedRoutes.kinds[{k}]: {group}/{} cannot be served on a {} listener",
                        kind.kind, l.protocol
                    ));
                }
            }
            if !refused.is_empty() {
                kinds_problem = Some(Problem::new("InvalidRouteKinds", refused.join("; ")));
            }
        }
    }

    // Namespaces routes may attach from.
    let namespaces = match l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    {
        None => AllowedNamespaces::Same,
        Some(n) => match n.from {
            None | Some(GatewayListenersAllowedRoutesNamespacesFrom::Same) => {
                AllowedNamespaces::Same
            }
            Some(GatewayListenersAllowedRoutesNamespacesFrom::All) => AllowedNamespaces::All,
            Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector) => {
                let selector = n.selector.as_ref().map(|s| {
                    LabelSelector::new(
                        s.match_labels.clone().unwrap_or_default(),
                        s.match_expressions
                            .iter()
                            .flatten()
                            .map(|e| (e.key.clone(), e.operator.clone(), e.values.clone()))
                            .collect(),
                    )
                });
                match selector.map(|s| {
                    s.check()
                        .map(|()| s)
                        .map_err(|e| format!("{field}.allowedRoutes.namespaces.selector.{e}"))
                }) {
                    Some(Ok(s)) => AllowedNamespaces::Selector(s),
                    Some(Err(e)) => {
                        invalid.get_or_insert(Problem::new("UnsupportedValue", e));
                        AllowedNamespaces::None
                    }
                    None => {
                        invalid.get_or_insert(Problem::new(
                            "UnsupportedValue",
                            format!(
                                "{field}.allowedRoutes.namespaces.selector: required when `from` is Selector"
                            ),
                        ));
                        AllowedNamespaces::None
                    }
                }
            }
        },
    };

    // TLS.
    let mut refs = Vec::new();
    let mut tls = None;
    match (protocol, &l.tls) {
        (Some(Protocol::Http | Protocol::Tcp), Some(_)) => {
            invalid.get_or_insert(Problem::new(
                "UnsupportedValue",
                format!("{field}.tls: only HTTPS and TLS listeners take TLS settings"),
            ));
        }
        (Some(p @ (Protocol::Https | Protocol::TlsTerminate)), settings) => {
            match super::tls::server_tls(
                gateway,
                &field,
                p,
                hostname.as_deref(),
                settings.as_ref(),
                objects,
                grants,
            ) {
                Ok(t) => tls = Some(t),
                Err(super::tls::TlsProblem::Invalid(p)) => {
                    invalid.get_or_insert(p);
                }
                Err(super::tls::TlsProblem::Refs(p)) => refs = p,
            }
        }
        _ => {}
    }

    Checked {
        state: ListenerState {
            name: l.name.clone(),
            port: l.port,
            protocol,
            hostname,
            key: format!("{}/{}/{}", gateway.namespace, gateway.name, l.name),
            kinds,
            namespaces,
            programmed: false,
            problem: String::new(),
            attached_routes: 0,
            routes: Vec::new(),
            conditions: Vec::new(),
        },
        invalid,
        refs,
        kinds: kinds_problem,
        tls,
    }
}

/// Listeners (by index) that conflict with another, with the reason. Only valid
/// listeners take part: an invalid one is not served, so it conflicts with nothing.
fn conflicts(checked: &[Checked]) -> BTreeMap<usize, Problem> {
    let mut out = BTreeMap::new();
    let mut by_port: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, c) in checked.iter().enumerate() {
        if c.invalid.is_none() {
            by_port.entry(c.state.port).or_default().push(i);
        }
    }
    for (port, indexes) in by_port {
        let protocols: BTreeSet<&str> = indexes
            .iter()
            .map(|&i| checked[i].state.protocol.map_or("HTTP", Protocol::name))
            .collect();
        if protocols.len() > 1 {
            let names = names(checked, &indexes);
            for &i in &indexes {
                out.insert(
                    i,
                    Problem::new(
                        "ProtocolConflict",
                        format!(
                            "port {port} is used with different protocols ({}) by listeners {names}",
                            protocols.iter().copied().collect::<Vec<_>>().join(", ")
                        ),
                    ),
                );
            }
            continue;
        }
        let mut by_host: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in &indexes {
            by_host
                .entry(checked[i].state.hostname.as_deref().unwrap_or(""))
                .or_default()
                .push(i);
        }
        for (host, same) in by_host.into_iter().filter(|(_, v)| v.len() > 1) {
            let host = if host.is_empty() { "(any)" } else { host };
            let names = names(checked, &same);
            for &i in &same {
                out.insert(
                    i,
                    Problem::new(
                        "HostnameConflict",
                        format!("listeners {names} both serve hostname {host} on port {port}"),
                    ),
                );
            }
        }
    }
    out
}

fn names(checked: &[Checked], indexes: &[usize]) -> String {
    indexes
        .iter()
        .map(|&i| checked[i].state.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
