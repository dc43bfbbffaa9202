//! The harness's kubelet on its own: it fails a pod the way Kubernetes does, and refuses
//! what it cannot run instead of running something else.
//!
//! Needs root, iproute2, setpriv, mount and a shell; fails (never skips) naming what is
//! missing.
#![allow(clippy::unwrap_used, missing_docs)]

use agentmesh_e2e::Cluster;
use agentmesh_e2e::kubelet::{ApiObjects, EventKind, Image, ImageTable, Kubelet, KubeletError};
use agentmesh_e2e::sidecar::{self, Scratch};

/// An image whose programs are the host's shell tools, run as `nobody`.
fn shell_image() -> ImageTable {
    ImageTable::default().with(
        "docker.io/library/busybox",
        Image {
            entrypoint: vec!["sh".into()],
            cmd: Vec::new(),
            user: (65534, 65534),
            programs: Default::default(),
        },
    )
}

fn setup() -> (Scratch, Cluster) {
    agentmesh_e2e::require_root().unwrap_or_else(|e| panic!("{e}"));
    sidecar::require_tools(&["ip", "setpriv", "mount", "sh"]).unwrap_or_else(|e| panic!("{e}"));
    let scratch = Scratch::new().unwrap();
    let mut cluster = Cluster::new("kubl").unwrap();
    cluster.add_pod("pod").unwrap();
    (scratch, cluster)
}

#[test]
fn a_failing_init_container_fails_the_pod_with_its_output_and_nothing_after_it_starts() {
    let (scratch, cluster) = setup();
    let manifest = Kubelet::parse(
        "apiVersion: v1
kind: Pod
metadata: { name: job, namespace: default }
spec:
  restartPolicy: Never
  initContainers:
  - name: setup
    image: docker.io/library/busybox:1.36
    args: [-c, 'echo \"cannot reach $(TARGET) from $POD_IP\"; exit 3']
    env:
    - { name: TARGET, value: the-database }
    - name: POD_IP
      valueFrom: { fieldRef: { fieldPath: status.podIP } }
  containers:
  - name: main
    image: docker.io/library/busybox:1.36
    args: [-c, 'true']
",
    )
    .unwrap();
    let kubelet = Kubelet::new(
        &cluster,
        shell_image(),
        ApiObjects::default(),
        &scratch.path("kubelet"),
    );
    let err = kubelet
        .run(&manifest, cluster.pod("pod"))
        .map(|_| ())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, KubeletError::InitFailed { ref container, .. } if container == "setup"),
        "{text}"
    );
    // `$(TARGET)` is expanded by the kubelet, `$POD_IP` by the shell from the env.
    let ip = cluster.pod("pod").ipv4.to_string();
    assert!(
        text.contains(&format!("cannot reach the-database from {ip}")),
        "{text}"
    );
    assert!(text.contains("exit status: 3"), "{text}");
    // The app container never started: it has no log at all.
    let main_log = scratch.path("kubelet/pod-job/main.log");
    assert!(!main_log.exists(), "{} exists", main_log.display());
}

#[test]
fn containers_run_as_their_user_with_volumes_at_their_paths() {
    let (scratch, cluster) = setup();
    let manifest = Kubelet::parse(
        "apiVersion: v1
kind: Pod
metadata: { name: reader, namespace: apps }
spec:
  restartPolicy: Never
  securityContext: { runAsUser: 1234, runAsGroup: 1234 }
  containers:
  - name: main
    image: docker.io/library/busybox:1.36
    args: [-c, 'id -u; cat /etc/app/greeting /etc/creds/token; touch /scratch/ok && echo wrote']
    volumeMounts:
    - { name: config, mountPath: /etc/app, readOnly: true }
    - { name: creds, mountPath: /etc/creds, readOnly: true }
    - { name: scratch, mountPath: /scratch }
  volumes:
  - name: config
    configMap: { name: app-config }
  - name: creds
    projected:
      sources:
      - serviceAccountToken: { audience: vault, path: token }
  - name: scratch
    emptyDir: {}
",
    )
    .unwrap();
    let api = ApiObjects::default()
        .config_map("apps", "app-config", &[("greeting", "hello\n")])
        .token("vault", "vault-token\n");
    let kubelet = Kubelet::new(&cluster, shell_image(), api, &scratch.path("kubelet"));
    let mut pod = kubelet.run(&manifest, cluster.pod("pod")).unwrap();
    let outcome = pod
        .complete(std::time::Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = pod.logs("main");
    assert_eq!(outcome.phase, "Succeeded", "{log}\n{}", pod.describe());
    assert_eq!(log, "1234\nhello\nvault-token\nwrote\n");
    assert!(
        pod.events()
            .iter()
            .any(|e| e.container == "main" && e.kind == EventKind::Exited(0))
    );
    // The mount points it created on the host are gone with the pod.
    drop(pod);
    for dir in ["/etc/app", "/etc/creds", "/scratch"] {
        assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
    }
}

#[test]
fn what_the_kubelet_cannot_give_is_refused_by_name() {
    let (scratch, cluster) = setup();
    let kubelet = Kubelet::new(
        &cluster,
        shell_image(),
        ApiObjects::default(),
        &scratch.path("kubelet"),
    );
    // Each case: the pod's spec (after `restartPolicy`), and what the error must name.
    for (spec, expected) in [
        (
            "containers:
  - name: main
    image: docker.io/library/busybox
    env: [{ name: LIMIT, valueFrom: { resourceFieldRef: { resource: limits.memory } } }]",
            "container main, env LIMIT: a valueFrom other than fieldRef",
        ),
        (
            "containers:
  - name: main
    image: docker.io/library/busybox
    env: [{ name: X, valueFrom: { fieldRef: { fieldPath: metadata.generation } } }]",
            "fieldRef \"metadata.generation\"",
        ),
        (
            "initContainers:
  - name: proxy
    image: docker.io/library/busybox
    restartPolicy: Always
    startupProbe: { grpc: { port: 9000 } }
  containers: [{ name: main, image: docker.io/library/busybox }]",
            "container proxy: grpc probes is not supported",
        ),
        (
            "volumes: [{ name: t, projected: { sources: [{ serviceAccountToken: { audience: elsewhere, path: t } }] } }]
  containers: [{ name: main, image: docker.io/library/busybox }]",
            "volume t: no service-account token for audience \"elsewhere\"",
        ),
        (
            "volumes: [{ name: h, hostPath: { path: /var/log } }]
  containers: [{ name: main, image: docker.io/library/busybox }]",
            "volume h: a volume kind other than emptyDir",
        ),
        (
            "containers: [{ name: main, image: 'quay.io/unknown/app:1' }]",
            "image quay.io/unknown/app:1 is not in the kubelet's image table",
        ),
    ] {
        let manifest = Kubelet::parse(&format!(
            "apiVersion: v1
kind: Pod
metadata: {{ name: p }}
spec:
  restartPolicy: Never
  {spec}
"
        ))
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
        let err = kubelet
            .run(&manifest, cluster.pod("pod"))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{spec}: {err}");
    }
}

/// Deleting a pod, as the kubelet does: its containers are stopped all at once, each
/// after its own `preStop` hook (so one container's hook does not hold back another's
/// SIGTERM), and the termination grace period counts the hook's time: a container that
/// ignores SIGTERM is killed when the pod's grace period is over, not a grace period
/// after its hook.
#[test]
fn stopping_a_pod_runs_pre_stop_then_sigterm_in_parallel_within_the_grace_period() {
    let (scratch, cluster) = setup();
    let manifest = Kubelet::parse(
        "apiVersion: v1
kind: Pod
metadata: { name: server, namespace: apps }
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: first
    image: docker.io/library/busybox:1.36
    args: [-c, 'trap \"echo first: SIGTERM >> /shared/log; exit 0\" TERM; while :; do sleep 0.1; done']
    lifecycle:
      preStop:
        exec:
          command: [sh, -c, 'echo first: preStop begins >> /shared/log; sleep 1; echo first: preStop ends >> /shared/log']
    volumeMounts: [{ name: shared, mountPath: /shared }]
  - name: second
    image: docker.io/library/busybox:1.36
    args: [-c, 'trap \"echo second: SIGTERM >> /shared/log; exit 0\" TERM; while :; do sleep 0.1; done']
    volumeMounts: [{ name: shared, mountPath: /shared }]
  - name: stubborn
    image: docker.io/library/busybox:1.36
    args: [-c, 'trap \"echo stubborn: SIGTERM ignored >> /shared/log\" TERM; while :; do sleep 0.1; done']
    lifecycle:
      preStop: { exec: { command: [sleep, '2'] } }
    volumeMounts: [{ name: shared, mountPath: /shared }]
  volumes:
  - name: shared
    emptyDir: {}
",
    )
    .unwrap();
    let kubelet = Kubelet::new(
        &cluster,
        shell_image(),
        ApiObjects::default(),
        &scratch.path("kubelet"),
    );
    let mut pod = kubelet.run(&manifest, cluster.pod("pod")).unwrap();
    // Each container's shell reads its trap before it waits.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let began = std::time::Instant::now();
    pod.stop();
    let took = began.elapsed();
    // The emptyDir, where the kubelet keeps it.
    let shared = std::fs::read_to_string(scratch.path("kubelet/pod-server/volumes/shared/log"))
        .unwrap_or_else(|e| panic!("no shared log: {e}\n{}", pod.describe()));
    let line = |text: &str| {
        shared
            .lines()
            .position(|l| l == text)
            .unwrap_or_else(|| panic!("no line {text:?} in:\n{shared}\n{}", pod.describe()))
    };
    // In parallel: `second` got SIGTERM while `first` was still in its preStop hook.
    assert!(
        line("second: SIGTERM") < line("first: preStop ends"),
        "{shared}"
    );
    // preStop before SIGTERM.
    assert!(
        line("first: preStop ends") < line("first: SIGTERM"),
        "{shared}"
    );
    assert!(line("stubborn: SIGTERM ignored") > 0, "{shared}");
    let exit = |name: &str| {
        pod.events()
            .iter()
            .find_map(|e| match e.kind {
                EventKind::Exited(c) if e.container == name => Some(c),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name} did not exit\n{}", pod.describe()))
    };
    assert_eq!(exit("first"), 0, "{}", pod.describe());
    assert_eq!(exit("second"), 0, "{}", pod.describe());
    // SIGKILL at the end of the pod's 3 s: its 2 s hook counted against them.
    assert_eq!(exit("stubborn"), 128 + 9, "{}", pod.describe());
    assert!(
        took >= std::time::Duration::from_millis(2900)
            && took < std::time::Duration::from_millis(4500),
        "stopping took {took:?}\n{}",
        pod.describe()
    );
    assert!(
        pod.events()
            .iter()
            .any(|e| e.container == "first" && e.kind == EventKind::Hook("preStop")),
        "{}",
        pod.describe()
    );
}
