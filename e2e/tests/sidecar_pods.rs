//! The sidecar for real: an agent pod whose outbound traffic `agentmesh-init` captures
//! with real iptables, a sidecar running as UID 1501, and unmodified agent processes
//! (`curl`, the Python MCP SDK, the `openai` SDK, plain Python sockets) running as UID
//! 1000, calling
//! upstream pods by name. Every policy lives only in the sidecar's config
//! (`e2e/sidecar/sidecar.yaml`); what the agents and the upstreams observe proves the
//! traffic was captured and governed.
//!
//! Needs root, iproute2, iptables, curl, `/usr/bin/python3`, the MCP SDK venv
//! `target/venvs/mcp1-sys` and the LLM venv `target/venvs/llm-sys` (`openai`,
//! `llm-mock-api`); the test fails (never skips) naming what is missing, and
//! `scripts/install-test-deps.sh` installs all of it. The pod's rules after
//! `agentmesh-init` are a golden file (`tests/golden/sidecar_pod_rules.txt`; rewrite it
//! with `UPDATE_GOLDEN=1`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::IpAddr;

use agentmesh_e2e::sidecar::{
    self, APP_UID, PROXY_UID, Scratch, Sidecar, exec_as, fixture, metric, text,
};
use agentmesh_e2e::{Cluster, Pod};

/// Unwraps a harness result, failing with its message (what is missing and how to get it).
fn ok<T>(result: agentmesh_e2e::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// `curl -i` as `uid` in `pod`; the whole response (or curl's error).
fn curl(pod: &Pod, uid: u32, url: &str) -> String {
    text(&exec_as(
        pod,
        uid,
        &["curl", "-sS", "-i", "--max-time", "10", url],
    ))
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("").trim_end()
}

fn python(pod: &Pod, uid: u32, python: &str, argv: &[&str]) -> String {
    let mut all = vec![python];
    all.extend_from_slice(argv);
    let out = exec_as(pod, uid, &all);
    assert!(out.status.success(), "{all:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn unmodified_agent_traffic_is_captured_and_governed_by_the_sidecar() {
    ok(agentmesh_e2e::require_root());
    ok(sidecar::require_tools(&[
        "ip",
        "iptables",
        "ip6tables",
        "iptables-save",
        "ip6tables-save",
        "setpriv",
        "timeout",
        "curl",
        "/usr/bin/python3",
    ]));
    let mcp_python = ok(sidecar::mcp_python());
    let mcp_py = mcp_python.display().to_string();
    let llm_python = ok(sidecar::llm_python());
    let llm_py = llm_python.display().to_string();
    let scratch = ok(Scratch::new());

    // --- pods ------------------------------------------------------------------------
    let mut cluster = ok(Cluster::new("scar"));
    for name in ["agent", "api", "mcp", "tcp", "other", "llm"] {
        ok(cluster.add_pod(name));
    }
    let (api6, tcp6) = (cluster.pod("api").ipv6, cluster.pod("tcp").ipv6);
    ok(cluster.add_host("api6", IpAddr::V6(api6)));
    ok(cluster.add_host("tcp6", IpAddr::V6(tcp6)));
    // The LLM provider by its IPv6 address only (its certificate names `llm6` too).
    ok(cluster.add_host("llm6", IpAddr::V6(cluster.pod("llm").ipv6)));
    let agent = cluster.pod("agent");

    let _api = ok(sidecar::start_upstreams(
        cluster.pod("api"),
        &["http:8080"],
        &scratch,
    ));
    let _other = ok(sidecar::start_upstreams(
        cluster.pod("other"),
        &["http:8080"],
        &scratch,
    ));
    let _tcp = ok(sidecar::start_upstreams(
        cluster.pod("tcp"),
        &["echo:9000", "banner:2525"],
        &scratch,
    ));
    let _mcp = ok(sidecar::start_mcp_server(
        cluster.pod("mcp"),
        "docs",
        9001,
        &mcp_python,
        &scratch,
    ));
    let llm = ok(sidecar::start_llm(
        cluster.pod("llm"),
        LLM_REPLY,
        &llm_python,
        &scratch,
    ));

    // --- the init container: rules in place, and a second run changes nothing ---------
    // A rule someone else owns (a CNI, say), which init must leave alone.
    for tool in ["iptables", "ip6tables"] {
        let net = if tool == "iptables" {
            "203.0.113.0/24"
        } else {
            "2001:db8:113::/64"
        };
        agent
            .ns
            .exec(&[
                tool,
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-d",
                net,
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "not ours",
                "-j",
                "RETURN",
            ])
            .unwrap();
    }
    let before = ok(sidecar::iptables_rules(agent));
    let first = ok(sidecar::init(agent, &["apply"]));
    let installed = ok(sidecar::iptables_rules(agent));
    assert!(
        installed.contains("-j REDIRECT --to-ports 16001"),
        "{first}\n{installed}"
    );
    assert_eq!(
        installed.matches("not ours").count(),
        2,
        "init touched a foreign rule:\n{installed}"
    );
    assert_eq!(
        installed.matches("-j REDIRECT --to-ports 16001").count(),
        2,
        "one redirect per family:\n{installed}"
    );
    // What a pod gets with the default settings, next to the foreign rule.
    check_golden("sidecar_pod_rules.txt", &installed);
    let second = ok(sidecar::init(agent, &["apply"]));
    assert_eq!(
        ok(sidecar::iptables_rules(agent)),
        installed,
        "a second agentmesh-init changed the rules; it said:\n{second}"
    );
    assert!(
        !second.contains(": applied"),
        "second run must be a no-op:\n{second}"
    );

    // --- the sidecar, as UID 1501 ------------------------------------------------------
    let mut proxy = ok(Sidecar::start(agent, &fixture("sidecar.yaml"), &scratch));

    // --- HTTP from an unmodified curl, as the app's UID ---------------------------------
    // The upstream sees a header the agent never set.
    let resp = curl(agent, APP_UID, "http://api:8080/v1/items");
    assert!(
        status_line(&resp).contains(" 200"),
        "{resp}\nsidecar log:\n{}",
        proxy_logs(&proxy)
    );
    assert!(resp.contains("x-upstream: api"), "{resp}");
    assert!(resp.contains("x-agentmesh-sidecar: injected"), "{resp}");
    // A path the sidecar answers itself.
    let resp = curl(agent, APP_UID, "http://api:8080/sidecar/hello");
    assert!(status_line(&resp).contains(" 200"), "{resp}");
    assert!(resp.contains("answered by the agentmesh sidecar"), "{resp}");
    assert!(!resp.contains("x-upstream"), "{resp}");
    // A path the sidecar refuses.
    let resp = curl(agent, APP_UID, "http://api:8080/admin/users");
    assert!(status_line(&resp).contains(" 403"), "{resp}");
    assert!(resp.contains("denied by the agentmesh sidecar"), "{resp}");
    // A host no route lists, under `outboundDefault: DENY`.
    let resp = curl(agent, APP_UID, "http://other:8080/");
    assert!(status_line(&resp).contains(" 403"), "{resp}");
    assert!(resp.contains("is denied"), "{resp}");
    assert!(!resp.contains("x-upstream"), "{resp}");

    // --- IPv6: ip6tables captures, the same routes apply -------------------------------
    let resp = curl(agent, APP_UID, "http://api6:8080/v6");
    assert!(
        resp.contains("x-agentmesh-sidecar: injected"),
        "{resp}\nsidecar log:\n{}",
        proxy_logs(&proxy)
    );

    // --- MCP through the sidecar's MCP gateway ----------------------------------------
    // The client calls the server's own URL; the tool names come back with the prefix
    // only the sidecar's `mcp` backend adds.
    let client = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mcp/client_v1.py")
        .display()
        .to_string();
    let listed = python(
        agent,
        APP_UID,
        &mcp_py,
        &[&client, "http://mcp:9001/mcp", "list-tools"],
    );
    let tools: Vec<&str> = listed
        .trim_start_matches(r#"{"tools": ["#)
        .trim_end_matches("]}")
        .split(", ")
        .map(|t| t.trim_matches('"'))
        .collect();
    assert!(
        tools.contains(&"docs_echo") && tools.iter().all(|t| t.starts_with("docs_")),
        "every tool must carry the sidecar's prefix: {listed}\nsidecar log:\n{}",
        proxy_logs(&proxy)
    );
    let called = python(
        agent,
        APP_UID,
        &mcp_py,
        &[
            &client,
            "http://mcp:9001/mcp",
            "call",
            "docs_echo",
            r#"{"text": "through the sidecar"}"#,
        ],
    );
    assert_eq!(
        called,
        r#"{"isError": false, "text": ["docs: through the sidecar"]}"#
    );

    // --- LLM over HTTPS under INTERCEPT: the unmodified openai SDK --------------------
    // The agent trusts the mesh CA (SSL_CERT_FILE, as the injector sets it) and calls
    // https://llm/v1; the sidecar decrypts, adds its header, re-encrypts to the provider.
    let llm_client = fixture("llm_client.py").display().to_string();
    let trusting_at = |ca: &str, base_url: &str| {
        let ssl_cert_file = format!("SSL_CERT_FILE={}", fixture(ca).display());
        python(
            agent,
            APP_UID,
            "env",
            &[&ssl_cert_file, &llm_py, &llm_client, base_url],
        )
    };
    let trusting = |ca: &str| trusting_at(ca, "https://llm/v1");
    let answer = trusting("certs/mesh-ca.crt");
    assert!(
        answer.starts_with(&format!(r#"{{"content": "{LLM_REPLY}", "total_tokens": "#))
            && !answer.contains("null"),
        "the completion must come back through the sidecar: {answer}\nsidecar log:\n{}\nllm front log:\n{}",
        proxy_logs(&proxy),
        llm.front.logs()
    );
    // The provider got the request decrypted by the sidecar, with the sidecar's header.
    let seen = llm.front.logs();
    assert_eq!(
        seen.matches("POST /v1/chat/completions HTTP/1.1").count(),
        1,
        "{seen}"
    );
    assert!(seen.contains("x-agentmesh-sidecar: injected"), "{seen}");
    // Trusting only the provider's own CA fails: what the agent is shown is the sidecar's
    // certificate from the mesh CA, not the provider's. Nothing reaches the provider.
    let refused = trusting("certs/llm-ca.crt");
    assert!(
        refused.contains(r#""error": "APIConnectionError""#)
            && refused.contains("CERTIFICATE_VERIFY_FAILED"),
        "without the mesh CA the TLS handshake must fail verification: {refused}"
    );
    assert_eq!(
        llm.front
            .logs()
            .matches("POST /v1/chat/completions")
            .count(),
        1
    );
    // The same over IPv6: `llm6` resolves to the provider's IPv6 address only, ip6tables
    // captures the call, the sidecar mints a leaf for `llm6` and re-encrypts to the
    // provider's IPv6 address, where the provider sees the call come from the agent's.
    let answer = trusting_at("certs/mesh-ca.crt", "https://llm6/v1");
    assert!(
        answer.starts_with(&format!(r#"{{"content": "{LLM_REPLY}", "total_tokens": "#))
            && !answer.contains("null"),
        "the completion must come back through the sidecar over IPv6: {answer}\nsidecar log:\n{}\nllm front log:\n{}",
        proxy_logs(&proxy),
        llm.front.logs()
    );
    let seen = llm.front.logs();
    assert_eq!(
        seen.matches("POST /v1/chat/completions HTTP/1.1").count(),
        2,
        "{seen}"
    );
    let over_v6 = format!("request from {}:", agent.ipv6);
    let v6_request = seen
        .lines()
        .filter(|l| l.contains(&over_v6))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        v6_request.contains("POST /v1/chat/completions")
            && v6_request.contains("x-agentmesh-sidecar: injected")
            && v6_request.contains("host: llm6"),
        "the provider must get the IPv6 call decrypted by the sidecar, with its header:\n{seen}"
    );

    // --- opaque TCP and server-speaks-first, allowed by an egress rule ----------------
    let tcp_client = fixture("tcp_client.py").display().to_string();
    for host in ["tcp", "tcp6"] {
        assert_eq!(
            python(
                agent,
                APP_UID,
                "/usr/bin/python3",
                &[&tcp_client, "echo", host, "9000"]
            ),
            "echo-ok 102400 bytes",
            "opaque TCP to {host}"
        );
        assert_eq!(
            python(
                agent,
                APP_UID,
                "/usr/bin/python3",
                &[&tcp_client, "banner", host, "2525"]
            ),
            "220 tcp ready | 221 bye",
            "server-speaks-first to {host}"
        );
    }

    // --- the proxy's own UID is not captured (no loop) ---------------------------------
    let resp = curl(agent, PROXY_UID, "http://api:8080/direct");
    assert!(status_line(&resp).contains(" 200"), "{resp}");
    assert!(resp.contains("x-upstream: api"), "{resp}");
    assert!(!resp.contains("x-agentmesh-sidecar"), "{resp}");
    // ...and the denied host is reachable, so the 403 above was the sidecar's decision.
    let resp = curl(agent, PROXY_UID, "http://other:8080/");
    assert!(resp.contains("x-upstream: other"), "{resp}");

    // --- what the sidecar counted --------------------------------------------------------
    let m = proxy.metrics(agent);
    let conns = |p: &str| {
        metric(
            &m,
            &format!("agentmesh_outbound_connections_total{{protocol=\"{p}\"}}"),
        )
    };
    // curl: 5 HTTP calls; the MCP client: at least one connection per run.
    assert!(conns("http1") >= 7.0, "{m}");
    assert_eq!(conns("opaque"), 2.0, "{m}");
    assert_eq!(conns("server_first"), 2.0, "{m}");
    // The three LLM calls: TLS, intercepted; one leaf minted for `llm` (then reused) and
    // one for `llm6`.
    assert_eq!(conns("tls"), 3.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "agentmesh_outbound_tls_connections_total{mode=\"intercept\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "agentmesh_mesh_ca_leaf_certificates_total{result=\"minted\"}"
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "agentmesh_outbound_denied_total{protocol=\"http1\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "agentmesh_outbound_loop_refused_total"),
        0.0,
        "{m}"
    );
    assert!(proxy.alive(), "sidecar died; log:\n{}", proxy_logs(&proxy));
    assert!(
        proxy_logs(&proxy).contains("outbound HTTP request denied"),
        "{}",
        proxy_logs(&proxy)
    );

    // --- cleanup leaves the namespace's rules as they were ----------------------------
    drop(proxy);
    let out = ok(sidecar::init(agent, &["cleanup"]));
    assert_eq!(
        ok(sidecar::iptables_rules(agent)),
        before,
        "cleanup said:\n{out}"
    );
}

/// What the `llm` pod's provider answers every chat with.
const LLM_REPLY: &str = "hello from the mock provider";

/// Compares `actual` with `e2e/tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites the file.
fn check_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} is stale (run with UPDATE_GOLDEN=1 to accept, and review the diff):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn proxy_logs(proxy: &Sidecar) -> String {
    let logs = proxy.logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
