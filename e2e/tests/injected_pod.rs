//! The injected pod runs: the pod spec the injector produces for a plain agent pod is
//! executed by the harness's kubelet (`agentmesh_e2e::kubelet`) as Kubernetes would run
//! it: `agentmesh-init` as an init container, the proxy as a native sidecar that must pass
//! its startup probe, then the app's containers (an unmodified curl). The sidecar takes
//! its config over xDS from `agentmesh-controller` in folder mode, presenting the
//! projected service-account token the kubelet wrote for the injected audience; the
//! folder holds the pod itself and an `AgentPolicy` selecting it by label.
//!
//! What it proves, as a user would see it: the app's calls are captured (the upstream
//! sees the header the policy sets, which only the sidecar can add), the policy's egress
//! rule refuses the denied host with a 403, the app started only after the sidecar was
//! ready (its single, unretried call succeeded, and the kubelet's events say so), and the
//! pod completes like a Job's: the sidecar is stopped once the app containers exited.
//!
//! Two variants run the same way: a pod with `agentmesh.dev/inbound-capture: "true"`
//! whose app serves HTTP, called from another pod through the sidecar's inbound capture;
//! and a pod with `agentmesh.dev/native-sidecar: "false"`, whose classic sidecar holds the
//! app back with its postStart hook and drains on preStop when the pod is deleted.
//!
//! Nothing about the pod's settings is written here: what runs is the injected manifest
//! (`agentmesh_e2e::injected`).
//!
//! Needs root, iproute2, iptables, curl, setpriv and `/usr/bin/python3`; fails (never
//! skips) naming what is missing (`scripts/install-test-deps.sh` installs all of it).
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Mutex;
use std::time::Duration;

use agentmesh_e2e::injected::{self, Scenario};
use agentmesh_e2e::kubelet::{EventKind, Image, ImageTable, RunningPod};
use agentmesh_e2e::sidecar::{exec_as, metric, text};

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// One pod at a time: the kubelet creates the host mount points a container's volumes
/// need and removes them when its pod goes, which would pull them from under another
/// pod's hooks and probes.
static ONE_POD_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The agentmesh images, and the app's: the host's curl (and its shell), run as
/// curlimages/curl runs it (USER 100:101); the host's `/usr/bin/python3` as the python
/// image's `python3`, run as an app user.
fn images() -> ImageTable {
    ok(ImageTable::agentmesh())
        .with(
            "docker.io/curlimages/curl",
            Image {
                entrypoint: vec!["curl".into()],
                cmd: Vec::new(),
                user: (100, 101),
                programs: Default::default(),
            },
        )
        .with(
            "docker.io/library/python",
            Image {
                entrypoint: vec!["python3".into()],
                cmd: Vec::new(),
                user: (1000, 1000),
                programs: [("python3".to_string(), "/usr/bin/python3".into())].into(),
            },
        )
}

/// The index of the first event of `container` of `kind`.
fn at(pod: &RunningPod<'_>, container: &str, kind: EventKind) -> usize {
    pod.events()
        .iter()
        .position(|e| e.container == container && e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} event for {container}\n{}", pod.describe()))
}

/// agentmesh's own config in the controller's folder: the outbound bind on 8080 whose
/// listener claims the `api` host (the AgentPolicy's `traffic` applies to it).
const NATIVE: &str = "binds:
- name: egress-8080
  address: 0.0.0.0
  port: 8080
  listeners:
  - name: api
    hostnames: [api]
    routes:
    - name: all
sidecar:
  outboundBinds: [egress-8080]
";

/// The policy of the agent's namespace for pods labelled `app: research-agent`.
const POLICY: &str = "apiVersion: agentmesh.dev/v1alpha1
kind: AgentPolicy
metadata: { name: research, namespace: agents }
spec:
  workloadSelector: { matchLabels: { app: research-agent } }
  traffic:
    requestHeaders: { set: [{ name: x-agent-policy, value: research }] }
  outbound:
    default: Allow
    egress:
    - { name: no-paste-sites, hostnames: [blocked], action: Deny }
";

#[test]
fn the_injected_pod_runs_with_its_traffic_captured_and_governed() {
    let _one = ONE_POD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    ok(injected::require_tools());
    let scenario = ok(Scenario::start(
        "kpod",
        "research-agent.yaml",
        &["api", "blocked"],
        &[],
        &[("native.yaml", NATIVE), ("policy.yaml", POLICY)],
    ));
    let controller = &scenario.controller;
    let cluster = &scenario.cluster;
    let kubelet = scenario.kubelet(images());
    let agent = cluster.pod("agent");
    let mut pod = kubelet.run(&scenario.pod, agent).unwrap_or_else(|e| {
        panic!(
            "the injected pod did not start: {e}\ncontroller log:\n{}",
            controller.logs()
        )
    });

    let limit = Duration::from_secs(30);
    for container in ["agent", "exfiltrate"] {
        let code = pod
            .wait_for_exit(container, limit)
            .unwrap_or_else(|e| panic!("{e}\nevents:\n{}", pod.describe()));
        assert_eq!(code, 0, "{container}: {}", pod.logs(container));
    }
    let context = || {
        format!(
            "events:\n{}\nsidecar log:\n{}\ncontroller log:\n{}",
            pod.describe(),
            pod.logs("agentmesh-proxy"),
            controller.logs()
        )
    };

    // Captured and governed: the upstream saw the header only the sidecar adds.
    let resp = pod.logs("agent");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}\n{}", context());
    assert!(resp.contains("x-upstream: api"), "{resp}");
    assert!(
        resp.contains("x-agent-policy: research"),
        "{resp}\n{}",
        context()
    );
    // The policy's egress rule: the denied host is refused by the sidecar, and the
    // upstream there never saw the call.
    let resp = pod.logs("exfiltrate");
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}\n{}", context());
    assert!(!resp.contains("x-upstream"), "{resp}");

    // The sidecar counted the refusal, and the controller served it as the pod.
    let metrics = injected::sidecar_metrics(agent);
    assert!(
        metric(
            &metrics,
            "agentmesh_outbound_denied_total{protocol=\"http1\"}"
        ) >= 1.0,
        "{metrics}"
    );
    let node = format!("sidecar~{}~research-agent.agents", agent.ipv4);
    assert!(controller.logs().contains(&node), "{}", context());

    // The app started only after the sidecar's startup probe succeeded, which the
    // injector ties to the first config (the 200 above could not have happened before:
    // a sidecar without config refuses captured traffic).
    let init_done = at(&pod, "agentmesh-init", EventKind::Exited(0));
    let proxy_started = at(&pod, "agentmesh-proxy", EventKind::Started);
    let proxy_ready = at(&pod, "agentmesh-proxy", EventKind::StartupProbeSucceeded);
    let app_started = at(&pod, "agent", EventKind::Started);
    assert!(
        init_done < proxy_started && proxy_ready < app_started,
        "{}",
        pod.describe()
    );

    // The pod completes as a Job's does: the app containers exited 0, then the sidecar
    // was stopped.
    let outcome = ok(pod.complete(limit));
    eprintln!("{}", pod.describe());
    assert_eq!(outcome.phase, "Succeeded", "{outcome:?}");
    assert!(
        pod.events()
            .iter()
            .any(|e| e.container == "agentmesh-proxy" && matches!(e.kind, EventKind::Exited(_))),
        "{}",
        pod.describe()
    );
}

/// Inbound capture from the annotation alone: the controller's config says nothing of
/// inbound capture (the same `NATIVE` config), yet the injected sidecar serves the
/// inbound port the init container's rules send the pod's inbound TCP to.
#[test]
fn an_injected_pod_with_inbound_capture_is_called_through_its_sidecar() {
    let _one = ONE_POD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    ok(injected::require_tools());
    let scenario = ok(Scenario::start(
        "kinb",
        "inbound-agent.yaml",
        &[],
        &["client"],
        &[("native.yaml", NATIVE), ("policy.yaml", POLICY)],
    ));
    // The injector told the sidecar; nothing else did.
    assert!(
        scenario.manifest.contains("--inbound-capture"),
        "{}",
        scenario.manifest
    );
    assert!(!NATIVE.contains("inbound"));
    let cluster = &scenario.cluster;
    let kubelet = scenario.kubelet(images());
    let agent = cluster.pod("agent");
    let client = cluster.pod("client");
    let pod = kubelet.run(&scenario.pod, agent).unwrap_or_else(|e| {
        panic!(
            "the injected pod did not start: {e}\ncontroller log:\n{}",
            scenario.controller.logs()
        )
    });
    let context = || {
        format!(
            "events:\n{}\nsidecar log:\n{}\napp log:\n{}\ncontroller log:\n{}",
            pod.describe(),
            pod.logs("agentmesh-proxy"),
            pod.logs("server"),
            scenario.controller.logs()
        )
    };
    let curl = |url: &str| exec_as(client, 1000, &["curl", "-sS", "-i", "--max-time", "5", url]);
    let scrape = || {
        let url = format!("http://{}:16020/metrics", agent.ipv4);
        let out = curl(&url);
        assert!(out.status.success(), "{}\n{}", text(&out), context());
        text(&out)
    };

    // Another pod calls the app at the pod's address, as a Service would send it. The
    // app has just been started: until its port listens, the sidecar answers 502.
    let url = format!("http://{}:8080/hello", agent.ipv4);
    let answer = agentmesh_e2e::wait_for(Duration::from_secs(20), || {
        let answer = text(&curl(&url));
        let status = answer.lines().next().unwrap_or_default().to_string();
        status.ends_with(" 200 OK").then_some(answer)
    })
    .unwrap_or_else(|| panic!("{}\n{}", text(&curl(&url)), context()));
    // The app saw the call come from loopback: the sidecar's, never the client's
    // address, which a direct call would show.
    assert!(
        answer.contains("hello from inbound-agent; you are 127.0.0.1"),
        "{answer}\n{}",
        context()
    );
    assert!(!answer.contains(&client.ipv4.to_string()), "{answer}");

    // The sidecar counted it; its metrics port, scraped from the other pod, is one of
    // its own ports, which the rules never send to the inbound listener: scraping is not
    // an inbound connection.
    let before = scrape();
    let inbound = "agentmesh_inbound_connections_total{protocol=\"http1\"}";
    assert!(metric(&before, inbound) >= 1.0, "{before}\n{}", context());
    let after = scrape();
    assert_eq!(metric(&after, inbound), metric(&before, inbound), "{after}");

    // The inbound port itself, called directly, is a loop: refused, not looped back
    // into the proxy, and the proxy still serves.
    let looped = curl(&format!("http://{}:16006/", agent.ipv4));
    assert!(!looped.status.success(), "{}", text(&looped));
    let metrics = scrape();
    assert_eq!(
        metric(&metrics, "agentmesh_inbound_loop_refused_total"),
        1.0,
        "{metrics}\n{}",
        context()
    );
    let again = curl(&url);
    assert!(
        text(&again).contains("you are 127.0.0.1"),
        "{}",
        text(&again)
    );
}

/// The classic sidecar, run as injected: the proxy is the first regular container and
/// its postStart hook holds the app back until it is ready; deleting the pod runs its
/// preStop drain while the app shuts down, so the app's last call still goes through,
/// and the proxy exits 0 after the app.
#[test]
fn the_injected_classic_sidecar_holds_the_app_back_and_drains_on_delete() {
    let _one = ONE_POD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    ok(injected::require_tools());
    let scenario = ok(Scenario::start(
        "kcls",
        "classic-agent.yaml",
        &["api", "blocked"],
        &[],
        &[("native.yaml", NATIVE), ("policy.yaml", POLICY)],
    ));
    let spec = scenario.pod.spec.as_ref().unwrap();
    let names = |cs: &[k8s_openapi::api::core::v1::Container]| {
        cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&spec.containers), ["agentmesh-proxy", "agent"]);
    assert_eq!(
        names(spec.init_containers.as_deref().unwrap_or_default()),
        ["agentmesh-init"]
    );
    let kubelet = scenario.kubelet(images());
    let agent = scenario.cluster.pod("agent");
    let mut pod = kubelet.run(&scenario.pod, agent).unwrap_or_else(|e| {
        panic!(
            "the injected pod did not start: {e}\ncontroller log:\n{}",
            scenario.controller.logs()
        )
    });
    let context = |pod: &RunningPod<'_>| {
        format!(
            "events:\n{}\nsidecar log:\n{}\napp log:\n{}\ncontroller log:\n{}",
            pod.describe(),
            pod.logs("agentmesh-proxy"),
            pod.logs("agent"),
            scenario.controller.logs()
        )
    };
    agentmesh_e2e::wait_for(Duration::from_secs(30), || {
        pod.logs("agent").contains("== waiting").then_some(())
    })
    .unwrap_or_else(|| panic!("the app did not make its calls\n{}", context(&pod)));

    // The postStart hook returned once the proxy was ready, and only then did the app
    // start: its single, unretried call was captured and governed.
    let proxy_started = at(&pod, "agentmesh-proxy", EventKind::Started);
    let proxy_ready = at(&pod, "agentmesh-proxy", EventKind::Hook("postStart"));
    let app_started = at(&pod, "agent", EventKind::Started);
    assert!(
        proxy_started < proxy_ready && proxy_ready < app_started,
        "{}",
        context(&pod)
    );
    let log = pod.logs("agent");
    let section = |name: &str| {
        let start = log
            .find(&format!("== {name}\n"))
            .unwrap_or_else(|| panic!("no {name} in the app's log:\n{log}"));
        let rest = &log[start + name.len() + 4..];
        rest[..rest.find("\n== ").unwrap_or(rest.len())].to_string()
    };
    let first = section("first call");
    assert!(
        first.starts_with("HTTP/1.1 200"),
        "{first}\n{}",
        context(&pod)
    );
    assert!(first.contains("x-upstream: api"), "{first}");
    assert!(first.contains("x-agent-policy: research"), "{first}");
    let denied = section("denied call");
    assert!(
        denied.starts_with("HTTP/1.1 403"),
        "{denied}\n{}",
        context(&pod)
    );
    assert!(!denied.contains("x-upstream"), "{denied}");

    // Deleting the pod: the proxy's preStop drain and the app's SIGTERM at once. The app's
    // last call, made on SIGTERM, still went through the draining proxy, governed.
    pod.stop();
    eprintln!("{}", pod.describe());
    let log = pod.logs("agent");
    let last = {
        let start = log
            .find("== last call\n")
            .unwrap_or_else(|| panic!("the app made no last call:\n{}", context(&pod)));
        log[start..].to_string()
    };
    assert!(
        last.contains("HTTP/1.1 200") && last.contains("x-agent-policy: research"),
        "{last}\n{}",
        context(&pod)
    );
    assert!(last.contains("== done"), "{last}");
    let drained = at(&pod, "agentmesh-proxy", EventKind::Hook("preStop"));
    let app_exited = at(&pod, "agent", EventKind::Exited(0));
    let proxy_exited = at(&pod, "agentmesh-proxy", EventKind::Exited(0));
    assert!(
        app_exited < proxy_exited && drained < proxy_exited,
        "{}",
        context(&pod)
    );
    let proxy_log = pod.logs("agentmesh-proxy");
    assert!(
        proxy_log.contains("drain requested through the admin API"),
        "{}",
        context(&pod)
    );
}
