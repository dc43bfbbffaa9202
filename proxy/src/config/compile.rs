//! Resources → IR, exactly once, rejecting what is invalid.
//!
//! Every problem found is reported (not just the first), each naming the resource and
//! the field. Compiling has side effects only on the upstream pool (clients are reused
//! across reloads when their backend is unchanged) and reads certificate files.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use agentmesh_proto::config::v1 as pb;
use http::{HeaderName, Method};

use super::file::Resources;
use super::ir::{self, Policies};
use super::{ConfigError, FieldError};
use crate::http::route::{
    HostPattern, PathMatcher, RequestMatcher, RouteTable, ValueMatcher, anchored,
};
use crate::http::upstream::UpstreamPool;
use crate::listen::tls;

mod policy;

use policy::{kinds_set, policies};

/// What compiling needs besides the resources.
#[derive(Clone)]
pub struct CompileContext {
    /// Upstream clients, shared across reloads.
    pub upstreams: Arc<UpstreamPool>,
    /// The intermediate CA the controller issued, for `meshCa.controller` (filled by the
    /// xDS client before it compiles a config that needs one).
    pub issued_ca: Arc<super::issued_ca::IssuedCa>,
}

/// The merged policies of one target, and which policy set each kind (for conflicts).
type TargetPolicies<'a> = (Policies, HashMap<&'static str, &'a str>);

/// Collects errors while compiling.
#[derive(Default)]
struct Errors(Vec<FieldError>, HashSet<String>);

impl Errors {
    fn push(&mut self, resource: &str, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            resource: resource.to_string(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// Reports a reference to a backend that does not exist, unless the backend exists
    /// but was itself invalid (its own error already says why).
    fn missing_backend(&mut self, resource: &str, field: impl Into<String>, name: &str) {
        if !self.1.contains(name) {
            self.push(resource, field, format!("no backend is named {name:?}"));
        }
    }
}

/// Compiles flat resources into a runnable config.
pub fn compile(resources: Resources, ctx: &CompileContext) -> Result<ir::Config, ConfigError> {
    let mut errs = Errors::default();
    let settings = settings(&resources.settings);

    // Backends first: routes and mirrors refer to them.
    let mut backends: HashMap<&str, Arc<ir::Backend>> = HashMap::new();
    for b in &resources.backends {
        let res = format!("backend {:?}", b.key);
        if b.key.is_empty() {
            errs.push("backend", "name", "must not be empty");
            continue;
        }
        if backends.contains_key(b.key.as_str()) {
            errs.push(&res, "name", "is used by another backend");
            continue;
        }
        let kind = match &b.kind {
            Some(pb::backend::Kind::Host(host)) => match ctx.upstreams.client(&b.key, host) {
                Ok(client) => ir::BackendKind::Host(client),
                Err(e) => {
                    errs.push(&res, "host", e.to_string());
                    errs.1.insert(b.key.clone());
                    continue;
                }
            },
            Some(pb::backend::Kind::Mcp(mcp)) => {
                match crate::mcp::config::compile(&b.key, mcp, &ctx.upstreams) {
                    Ok(mcp) => ir::BackendKind::Mcp(Arc::new(mcp)),
                    Err(problems) => {
                        for (field, reason) in problems {
                            errs.push(&res, format!("mcp.{field}"), reason);
                        }
                        errs.1.insert(b.key.clone());
                        continue;
                    }
                }
            }
            None => {
                errs.push(
                    &res,
                    "kind",
                    "one backend kind must be set (for example `host`)",
                );
                errs.1.insert(b.key.clone());
                continue;
            }
        };
        backends.insert(
            &b.key,
            Arc::new(ir::Backend {
                key: b.key.as_str().into(),
                kind,
            }),
        );
    }

    // Policies, grouped by target.
    let mut by_target: HashMap<(u8, &str), TargetPolicies> = HashMap::new();
    let listener_keys: HashSet<&str> = resources.listeners.iter().map(|l| l.key.as_str()).collect();
    let route_keys: HashSet<&str> = resources.routes.iter().map(|r| r.key.as_str()).collect();
    let mut policy_keys = HashSet::new();
    for p in &resources.policies {
        let res = format!("policy {:?}", p.key);
        if p.key.is_empty() {
            errs.push("policy", "name", "must not be empty");
            continue;
        }
        if !policy_keys.insert(p.key.as_str()) {
            errs.push(&res, "name", "is used by another policy");
            continue;
        }
        let target = match p.target.as_ref().and_then(|t| t.kind.as_ref()) {
            Some(pb::policy_target::Kind::Listener(k)) if listener_keys.contains(k.as_str()) => {
                (0, k.as_str())
            }
            Some(pb::policy_target::Kind::Route(k)) if route_keys.contains(k.as_str()) => {
                (1, k.as_str())
            }
            Some(pb::policy_target::Kind::Backend(k)) if backends.contains_key(k.as_str()) => {
                (2, k.as_str())
            }
            Some(other) => {
                let (kind, key) = match other {
                    pb::policy_target::Kind::Listener(k) => ("listener", k),
                    pb::policy_target::Kind::Route(k) => ("route", k),
                    pb::policy_target::Kind::Backend(k) => ("backend", k),
                };
                // A policy on a backend that exists but is invalid: the backend's own
                // error already explains it.
                if !(kind == "backend" && errs.1.contains(key.as_str())) {
                    errs.push(
                        &res,
                        format!("target.{kind}"),
                        format!("no {kind} has key {key:?}"),
                    );
                }
                continue;
            }
            None => {
                errs.push(&res, "target", "must name a listener, route or backend");
                continue;
            }
        };
        let Some(spec) = &p.spec else { continue };
        let compiled = policies(spec, &res, &backends, &mut errs);
        let entry = by_target.entry(target).or_default();
        for (kind, set) in kinds_set(&compiled) {
            if !set {
                continue;
            }
            if let Some(other) = entry.1.insert(kind, &p.key) {
                errs.push(
                    &res,
                    kind,
                    format!("is also set by policy {other:?} on the same target; set it once"),
                );
            }
        }
        entry.0 = entry.0.overlay(&compiled);
    }
    let policy_of = |level: u8, key: &str| {
        by_target
            .get(&(level, key))
            .map(|(p, _)| p.clone())
            .unwrap_or_default()
    };

    // Routes, grouped by listener.
    let mut routes_by_listener: HashMap<&str, Vec<Arc<ir::Route>>> = HashMap::new();
    let mut seen_routes = HashSet::new();
    let listener_policies: HashMap<&str, Policies> = resources
        .listeners
        .iter()
        .map(|l| (l.key.as_str(), policy_of(0, &l.key)))
        .collect();
    // Routes of capture binds may leave out backends: the request then goes where the
    // app was sending it.
    let capture_binds: HashSet<&str> = resources
        .sidecar
        .iter()
        .flat_map(|s| s.outbound_binds.iter().chain(&s.inbound_binds))
        .map(String::as_str)
        .collect();
    let capture_listeners: HashSet<&str> = resources
        .listeners
        .iter()
        .filter(|l| capture_binds.contains(l.bind_key.as_str()))
        .map(|l| l.key.as_str())
        .collect();
    // Routes of TLS passthrough and TCP listeners forward bytes: they compile apart.
    let stream_listeners: HashMap<&str, ir::StreamProtocol> = resources
        .listeners
        .iter()
        .filter_map(|l| Some((l.key.as_str(), stream_protocol(l.protocol())?)))
        .collect();
    let pb_backends: HashMap<&str, &pb::Backend> = resources
        .backends
        .iter()
        .map(|b| (b.key.as_str(), b))
        .collect();
    let mut streams_by_listener: HashMap<&str, Vec<Arc<ir::StreamRoute>>> = HashMap::new();
    for r in &resources.routes {
        let res = format!("route {:?}", r.key);
        if r.name.is_empty() && r.key.is_empty() {
            errs.push("route", "name", "must not be empty");
            continue;
        }
        if !seen_routes.insert(r.key.as_str()) {
            errs.push(
                &res,
                "name",
                "is used by another route of the same listener",
            );
            continue;
        }
        let Some(listener_policy) = listener_policies.get(r.listener_key.as_str()) else {
            errs.push(
                &res,
                "listenerKey",
                format!("no listener has key {:?}", r.listener_key),
            );
            continue;
        };
        if let Some(&protocol) = stream_listeners.get(r.listener_key.as_str()) {
            if let Some(route) =
                stream_route(r, protocol, &pb_backends, &by_target, &res, &mut errs)
            {
                streams_by_listener
                    .entry(r.listener_key.as_str())
                    .or_default()
                    .push(Arc::new(route));
            }
            continue;
        }
        let hostnames = hostnames(&r.hostnames, &res, &mut errs);
        let mut matches = Vec::new();
        for (i, m) in r.matches.iter().enumerate() {
            if let Some(m) = request_matcher(m, &format!("matches[{i}]"), &res, &mut errs) {
                matches.push(m);
            }
        }
        if r.matches.is_empty() {
            matches.push(RequestMatcher::any());
        }
        let route_policy = listener_policy.overlay(&policy_of(1, &r.key));
        let mut route_backends = Vec::new();
        for (i, rb) in r.backends.iter().enumerate() {
            let Some(backend) = backends.get(rb.backend.as_str()) else {
                errs.missing_backend(&res, format!("backends[{i}].backend"), &rb.backend);
                continue;
            };
            let weight = rb.weight.unwrap_or(1);
            if weight == 0 {
                continue;
            }
            let policies = Arc::new(route_policy.overlay(&policy_of(2, &backend.key)));
            route_backends.push(ir::RouteBackend {
                backend: backend.clone(),
                weight,
                policies,
            });
        }
        let captured = capture_listeners.contains(r.listener_key.as_str());
        check_route_policies(
            &route_policy,
            r,
            &route_backends,
            &matches,
            captured,
            &res,
            &mut errs,
        );
        routes_by_listener
            .entry(r.listener_key.as_str())
            .or_default()
            .push(Arc::new(ir::Route {
                key: r.key.as_str().into(),
                hostnames,
                matches,
                backends: route_backends,
                policies: Arc::new(route_policy),
            }));
    }

    // Listeners, grouped by bind.
    let mut listeners_by_bind: HashMap<&str, Vec<&pb::Listener>> = HashMap::new();
    let bind_keys: HashSet<&str> = resources.binds.iter().map(|b| b.key.as_str()).collect();
    let mut seen_listeners = HashSet::new();
    for l in &resources.listeners {
        let res = format!("listener {:?}", l.key);
        if l.name.is_empty() && l.key.is_empty() {
            errs.push("listener", "name", "must not be empty");
            continue;
        }
        if !seen_listeners.insert(l.key.as_str()) {
            errs.push(&res, "name", "is used by another listener of the same bind");
            continue;
        }
        if !bind_keys.contains(l.bind_key.as_str()) {
            errs.push(&res, "bindKey", format!("no bind has key {:?}", l.bind_key));
            continue;
        }
        listeners_by_bind
            .entry(l.bind_key.as_str())
            .or_default()
            .push(l);
    }

    let mut binds = Vec::new();
    let mut addrs = HashMap::new();
    let mut seen_binds = HashSet::new();
    for b in &resources.binds {
        let res = format!("bind {:?}", b.key);
        if b.key.is_empty() {
            errs.push("bind", "name", "must not be empty");
            continue;
        }
        if !seen_binds.insert(b.key.as_str()) {
            errs.push(&res, "name", "is used by another bind");
            continue;
        }
        let ip: IpAddr = if b.address.is_empty() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            match b.address.parse() {
                Ok(ip) => ip,
                Err(_) => {
                    errs.push(
                        &res,
                        "address",
                        format!("{:?} is not an IP address", b.address),
                    );
                    continue;
                }
            }
        };
        let Ok(port) = u16::try_from(b.port) else {
            errs.push(
                &res,
                "port",
                format!("{} is not a TCP port (1-65535)", b.port),
            );
            continue;
        };
        if port == 0 {
            errs.push(&res, "port", "must be set (1-65535)");
            continue;
        }
        let addr = SocketAddr::new(ip, port);
        if let Some(other) = addrs.insert(addr, b.key.as_str()) {
            errs.push(
                &res,
                "port",
                format!("{addr} is also used by bind {other:?}"),
            );
            continue;
        }
        let pb_listeners = listeners_by_bind.remove(b.key.as_str()).unwrap_or_default();
        if pb_listeners.is_empty() {
            errs.push(&res, "listeners", "a bind needs at least one listener");
            continue;
        }
        let stream = stream_protocol(pb_listeners[0].protocol());
        let https = pb_listeners
            .iter()
            .filter(|l| l.protocol() == pb::ListenerProtocol::Https)
            .count();
        if pb_listeners
            .iter()
            .any(|l| stream_protocol(l.protocol()) != stream)
        {
            errs.push(
                &res,
                "listeners",
                "listeners of one bind must all have the same kind of protocol: HTTP/HTTPS, \
                 TLS_PASSTHROUGH, TLS_TERMINATE or TCP",
            );
        } else if stream == Some(ir::StreamProtocol::Tcp) && pb_listeners.len() > 1 {
            errs.push(
                &res,
                "listeners",
                "a TCP listener is alone on its bind (nothing tells its connections apart)",
            );
        } else if https != 0 && https != pb_listeners.len() {
            errs.push(
                &res,
                "listeners",
                "listeners of one bind must all be HTTP or all be HTTPS",
            );
        }
        let mut certificates = Vec::new();
        let mut listeners = Vec::new();
        let mut hostname_owner: HashMap<String, &str> = HashMap::new();
        for l in pb_listeners {
            let lres = format!("listener {:?}", l.key);
            let hostnames = hostnames(&l.hostnames, &lres, &mut errs);
            let names: Vec<String> = if l.hostnames.is_empty() {
                vec!["(any)".into()]
            } else {
                l.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect()
            };
            for n in names {
                if let Some(other) = hostname_owner.insert(n.clone(), &l.key) {
                    errs.push(
                        &lres,
                        "hostnames",
                        format!("{n} is also served by listener {other:?} on the same bind"),
                    );
                }
            }
            match (l.protocol(), &l.tls) {
                (pb::ListenerProtocol::Https | pb::ListenerProtocol::TlsTerminate, Some(t))
                    if !t.certificates.is_empty() =>
                {
                    for (i, c) in t.certificates.iter().enumerate() {
                        certificates.push((
                            lres.clone(),
                            format!("tls.certificates[{i}]"),
                            c.clone(),
                        ));
                    }
                }
                (p @ (pb::ListenerProtocol::Https | pb::ListenerProtocol::TlsTerminate), _) => {
                    let what = if p == pb::ListenerProtocol::Https {
                        "an HTTPS"
                    } else {
                        "a TLS_TERMINATE"
                    };
                    errs.push(
                        &lres,
                        "tls.certificates",
                        format!("{what} listener needs at least one certificate"),
                    );
                }
                (_, Some(_)) => {
                    errs.push(
                        &lres,
                        "tls",
                        "is only allowed when protocol is HTTPS or TLS_TERMINATE",
                    );
                }
                (_, None) => {}
            }
            let streams = streams_by_listener
                .remove(l.key.as_str())
                .unwrap_or_default();
            if let Some(protocol) = stream_protocol(l.protocol()) {
                check_stream_listener(l, protocol, &streams, &by_target, &lres, &mut errs);
            }
            let routes = routes_by_listener
                .remove(l.key.as_str())
                .unwrap_or_default();
            listeners.push(Arc::new(ir::Listener {
                key: l.key.as_str().into(),
                hostnames,
                routes: RouteTable::new(&routes),
                streams,
            }));
        }
        let tls = if certificates.is_empty() {
            None
        } else {
            match tls::server_config(&certificates) {
                // Decrypted bytes are forwarded unread: no application protocol is
                // negotiated on the client's behalf.
                Ok(cfg) if stream == Some(ir::StreamProtocol::TlsTerminate) => {
                    let mut cfg = (*cfg).clone();
                    cfg.alpn_protocols.clear();
                    Some(Arc::new(cfg))
                }
                Ok(cfg) => Some(cfg),
                Err(e) => {
                    errs.0.extend(e);
                    None
                }
            }
        };
        binds.push(Arc::new(ir::Bind {
            key: b.key.clone(),
            addr,
            tls,
            stream,
            listeners,
        }));
    }

    let bind_key_list: Vec<&str> = resources.binds.iter().map(|b| b.key.as_str()).collect();
    let sidecar = super::sidecar::compile(
        resources.sidecar.as_ref(),
        &bind_key_list,
        ctx.issued_ca.current_ca(),
    )
    .unwrap_or_else(|e| {
        errs.0.extend(e);
        super::sidecar::Sidecar::default()
    });
    if errs.0.is_empty() {
        Ok(ir::Config {
            settings,
            binds,
            sidecar,
            resources,
        })
    } else {
        Err(ConfigError::Invalid(errs.0))
    }
}

/// The stream protocol of a listener protocol; `None` for HTTP and HTTPS.
fn stream_protocol(p: pb::ListenerProtocol) -> Option<ir::StreamProtocol> {
    match p {
        pb::ListenerProtocol::Http | pb::ListenerProtocol::Https => None,
        pb::ListenerProtocol::TlsPassthrough => Some(ir::StreamProtocol::TlsPassthrough),
        pb::ListenerProtocol::Tcp => Some(ir::StreamProtocol::Tcp),
        pb::ListenerProtocol::TlsTerminate => Some(ir::StreamProtocol::TlsTerminate),
    }
}

/// The name of a stream protocol as the config spells it.
fn stream_protocol_name(p: ir::StreamProtocol) -> &'static str {
    match p {
        ir::StreamProtocol::TlsPassthrough => "TLS_PASSTHROUGH",
        ir::StreamProtocol::Tcp => "TCP",
        ir::StreamProtocol::TlsTerminate => "TLS_TERMINATE",
    }
}

/// Compiles a route of a TLS passthrough or TCP listener, refusing what only HTTP routes
/// have (matches, policies) and backends that cannot take bytes unopened.
fn stream_route(
    r: &pb::Route,
    protocol: ir::StreamProtocol,
    pb_backends: &HashMap<&str, &pb::Backend>,
    by_target: &HashMap<(u8, &str), TargetPolicies>,
    res: &str,
    errs: &mut Errors,
) -> Option<ir::StreamRoute> {
    let name = stream_protocol_name(protocol);
    let before = errs.0.len();
    if !r.matches.is_empty() {
        let why = match protocol {
            ir::StreamProtocol::TlsPassthrough => {
                "a route of a TLS_PASSTHROUGH listener is chosen by its hostnames (the SNI)"
            }
            ir::StreamProtocol::TlsTerminate => {
                "a route of a TLS_TERMINATE listener is chosen by its hostnames (the SNI)"
            }
            ir::StreamProtocol::Tcp => "a route of a TCP listener takes every connection",
        };
        errs.push(res, "matches", format!("is HTTP-only: {why}"));
    }
    if protocol == ir::StreamProtocol::Tcp && !r.hostnames.is_empty() {
        errs.push(
            res,
            "hostnames",
            "a route of a TCP listener has no hostnames (TCP carries none)",
        );
    }
    if by_target.contains_key(&(1, r.key.as_str())) {
        errs.push(
            res,
            "policies",
            format!("policies apply to HTTP routes; this route is on a {name} listener"),
        );
    }
    let hostnames = hostnames(&r.hostnames, res, errs);
    let mut backends = Vec::new();
    for (i, rb) in r.backends.iter().enumerate() {
        let field = format!("backends[{i}].backend");
        let Some(b) = pb_backends.get(rb.backend.as_str()) else {
            errs.missing_backend(res, field, &rb.backend);
            continue;
        };
        let host = match &b.kind {
            Some(pb::backend::Kind::Host(h)) if h.tls.is_none() && h.protocol == 0 => h,
            Some(pb::backend::Kind::Host(_)) => {
                errs.push(
                    res,
                    field,
                    format!(
                        "backend {:?} sets `tls` or `protocol`, which are HTTP-only: a {name} \
                         route forwards bytes unopened",
                        b.key
                    ),
                );
                continue;
            }
            _ => {
                errs.push(
                    res,
                    field,
                    format!(
                        "backend {:?} is not a `host` backend: a {name} route forwards bytes to \
                         a host:port",
                        b.key
                    ),
                );
                continue;
            }
        };
        let weight = rb.weight.unwrap_or(1);
        if weight == 0 {
            continue;
        }
        backends.push(ir::StreamBackend {
            key: b.key.as_str().into(),
            address: host.address.as_str().into(),
            weight,
        });
    }
    if backends.is_empty() && errs.0.len() == before {
        errs.push(
            res,
            "backends",
            format!("a {name} route needs at least one backend with a weight above 0"),
        );
    }
    (errs.0.len() == before).then(|| ir::StreamRoute {
        key: r.key.as_str().into(),
        hostnames,
        backends,
    })
}

/// Checks a TLS passthrough or TCP listener: no HTTP-only policies, and a TCP listener
/// has no hostnames and one route.
fn check_stream_listener(
    l: &pb::Listener,
    protocol: ir::StreamProtocol,
    streams: &[Arc<ir::StreamRoute>],
    by_target: &HashMap<(u8, &str), TargetPolicies>,
    res: &str,
    errs: &mut Errors,
) {
    let name = stream_protocol_name(protocol);
    if by_target.contains_key(&(0, l.key.as_str())) {
        errs.push(
            res,
            "policies",
            format!("policies apply to HTTP listeners; this listener is {name}"),
        );
    }
    if protocol == ir::StreamProtocol::Tcp {
        if !l.hostnames.is_empty() {
            errs.push(
                res,
                "hostnames",
                "a TCP listener has no hostnames (TCP carries none)",
            );
        }
        if streams.len() > 1 {
            errs.push(
                res,
                "routes",
                format!(
                    "a TCP listener takes one route ({} given): nothing tells its connections apart",
                    streams.len()
                ),
            );
        }
    }
}

fn settings(s: &pb::ProxySettings) -> ir::Settings {
    let d = ir::Settings::default();
    let or = |v: u64, default: u64| if v == 0 { default } else { v };
    ir::Settings {
        max_request_body_bytes: or(s.max_request_body_bytes, d.max_request_body_bytes),
        max_request_header_bytes: or(
            s.max_request_header_bytes.into(),
            d.max_request_header_bytes as u64,
        ) as usize,
        max_replay_body_bytes: or(
            s.max_replay_body_bytes.into(),
            d.max_replay_body_bytes as u64,
        ) as usize,
    }
}

fn hostnames(list: &[String], res: &str, errs: &mut Errors) -> Vec<HostPattern> {
    list.iter()
        .enumerate()
        .filter_map(|(i, h)| {
            HostPattern::parse(h)
                .map_err(|e| errs.push(res, format!("hostnames[{i}]"), e))
                .ok()
        })
        .collect()
}

fn request_matcher(
    m: &pb::RouteMatch,
    field: &str,
    res: &str,
    errs: &mut Errors,
) -> Option<RequestMatcher> {
    let before = errs.0.len();
    let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        None => PathMatcher::Prefix("/".into()),
        Some(pb::path_match::Kind::Exact(p)) => PathMatcher::exact(p)
            .map_err(|e| errs.push(res, format!("{field}.path.exact"), e))
            .unwrap_or_else(|()| PathMatcher::Prefix("/".into())),
        Some(pb::path_match::Kind::Prefix(p)) => PathMatcher::prefix(p)
            .map_err(|e| errs.push(res, format!("{field}.path.prefix"), e))
            .unwrap_or_else(|()| PathMatcher::Prefix("/".into())),
        Some(pb::path_match::Kind::Regex(p)) => PathMatcher::regex(p)
            .map_err(|e| errs.push(res, format!("{field}.path.regex"), e))
            .unwrap_or_else(|()| PathMatcher::Prefix("/".into())),
    };
    let method = if m.method.is_empty() {
        None
    } else {
        match Method::from_bytes(m.method.to_ascii_uppercase().as_bytes()) {
            Ok(method) => Some(method),
            Err(_) => {
                errs.push(
                    res,
                    format!("{field}.method"),
                    format!("{:?} is not an HTTP method", m.method),
                );
                None
            }
        }
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let f = format!("{field}.headers[{i}]");
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            errs.push(
                res,
                format!("{f}.name"),
                format!("{:?} is not a valid header name", h.name),
            );
            continue;
        };
        let value = match &h.kind {
            Some(pb::header_match::Kind::Exact(v)) => Some(ValueMatcher::Exact(v.clone())),
            Some(pb::header_match::Kind::Regex(r)) => anchored(r)
                .map(ValueMatcher::Regex)
                .map_err(|e| errs.push(res, format!("{f}.regex"), e))
                .ok(),
            Some(pb::header_match::Kind::Present(p)) => Some(ValueMatcher::Present(*p)),
            None => {
                errs.push(res, &f, "one of exact, regex or present must be set");
                None
            }
        };
        headers.extend(value.map(|v| (name, v)));
    }
    let mut query = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        let f = format!("{field}.queryParams[{i}]");
        if q.name.is_empty() {
            errs.push(res, format!("{f}.name"), "must not be empty");
            continue;
        }
        let value = match &q.kind {
            Some(pb::query_match::Kind::Exact(v)) => Some(ValueMatcher::Exact(v.clone())),
            Some(pb::query_match::Kind::Regex(r)) => anchored(r)
                .map(ValueMatcher::Regex)
                .map_err(|e| errs.push(res, format!("{f}.regex"), e))
                .ok(),
            Some(pb::query_match::Kind::Present(p)) => Some(ValueMatcher::Present(*p)),
            None => {
                errs.push(res, &f, "one of exact, regex or present must be set");
                None
            }
        };
        query.extend(value.map(|v| (q.name.clone(), v)));
    }
    (errs.0.len() == before).then_some(RequestMatcher {
        path,
        method,
        headers,
        query,
    })
}

/// Checks that apply to a route's effective policies as a whole.
fn check_route_policies(
    policy: &Policies,
    route: &pb::Route,
    backends: &[ir::RouteBackend],
    matches: &[RequestMatcher],
    captured: bool,
    res: &str,
    errs: &mut Errors,
) {
    let answers_itself = policy.redirect.is_some() || policy.direct_response.is_some();
    // A route of a capture bind without backends sends to the original destination.
    if route.backends.is_empty() && !answers_itself && !captured {
        errs.push(
            res,
            "backends",
            "a route needs a backend, unless a redirect or direct response answers it",
        );
    }
    let uses_prefix = |p: &Option<ir::PathRewrite>| matches!(p, Some(ir::PathRewrite::Prefix(_)));
    let prefix_rewrite = policy
        .redirect
        .as_ref()
        .is_some_and(|r| uses_prefix(&r.path))
        || policy
            .url_rewrite
            .as_ref()
            .is_some_and(|r| uses_prefix(&r.path))
        || backends.iter().any(|b| {
            b.policies
                .url_rewrite
                .as_ref()
                .is_some_and(|r| uses_prefix(&r.path))
        });
    if prefix_rewrite && matches.iter().any(|m| m.path.matched_prefix().is_none()) {
        errs.push(
            res,
            "matches",
            "a prefix rewrite needs every match of the route to use a path prefix",
        );
    }
}
