//! A small kubelet: runs a Pod manifest (an injected agent pod, say) in one of the
//! harness's pods (a network namespace), the way Kubernetes runs it.
//!
//! Order, as in the kubelet: init containers one by one, each to completion (a non-zero
//! exit fails the pod, with the container's output in the error); an init container with
//! `restartPolicy: Always` is a native sidecar: it is started, and the next container
//! starts only once its `startupProbe` has succeeded (with the probe's period and failure
//! threshold, within [`Limits::startup`]); then the app containers in order, each
//! `postStart` hook finishing before the next container starts (a classic sidecar, first
//! in `containers`, holds the app back this way). Stopping, within the pod's termination
//! grace period: the app containers all at once (each `preStop`, then SIGTERM, then
//! SIGKILL when the grace period is over, the hook's time counting against it), then
//! the native sidecars in reverse order. A pod whose `restartPolicy` is `Never` or
//! `OnFailure` completes when its app containers have exited; its sidecars are then
//! stopped, as for a Job.
//!
//! What each container is, is [`container`]'s business (images from [`ImageTable`],
//! environment, user, capabilities, mounts), volumes are [`volumes`]'s (with
//! [`ApiObjects`] standing in for the API server), probes and hooks [`probe`]'s. Every
//! spec field the kubelet would act on but this one cannot is either refused with
//! [`KubeletError::Unsupported`] (naming it) or, when only enforcement is missing
//! (seccomp, resource limits), recorded as a note in the pod's [`PodEvent`]s. Containers
//! are never restarted: an exit is reported, as with `restartPolicy: Never`.
//!
//! It starts and stops processes and writes files under its directory and the mount
//! points it needs (removed when the pod is dropped); it asserts nothing.

mod container;
mod image;
mod probe;
mod volumes;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod as PodManifest};
use serde::Deserialize;

pub use image::{AGENTMESH_REGISTRY, Image, ImageTable};
pub use volumes::ApiObjects;

use crate::{Cluster, Daemon, HarnessError, Pod};
use container::{ContainerProcess, PodContext};
use probe::Check;

/// Why a pod could not run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The manifest is not a Pod.
    #[error("not a Pod manifest: {0}")]
    Manifest(String),
    /// The spec uses something this kubelet cannot do.
    #[error("{at}: {what} is not supported by the e2e kubelet")]
    Unsupported {
        /// Which container, env var or volume.
        at: String,
        /// What it asks for.
        what: String,
    },
    /// No image of the table has that repository (`ErrImagePull`).
    #[error("container {container}: image {image} is not in the kubelet's image table ({known})")]
    ImageNotFound {
        /// The container.
        container: String,
        /// The image reference.
        image: String,
        /// The repositories the table has.
        known: String,
    },
    /// A ConfigMap, Secret or key the spec refers to does not exist.
    #[error("{kind} {name}{} not found", key.as_ref().map(|k| format!(", key {k}")).unwrap_or_default())]
    MissingObject {
        /// `ConfigMap` or `Secret`.
        kind: String,
        /// `namespace/name`.
        name: String,
        /// The key, when one was asked for.
        key: Option<String>,
    },
    /// A projected token was asked for an audience the API server issues none for.
    #[error("volume {volume}: no service-account token for audience {audience:?}")]
    NoToken {
        /// The volume.
        volume: String,
        /// The audience asked for.
        audience: String,
    },
    /// An init container exited non-zero: the pod failed.
    #[error("init container {container} failed ({status}); its output:\n{log}")]
    InitFailed {
        /// The container.
        container: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        log: String,
    },
    /// A container exited while the pod waited for it (a sidecar before it was ready).
    #[error("container {container} exited ({status}) {when}; its output:\n{log}")]
    Exited {
        /// The container.
        container: String,
        /// Its exit status.
        status: String,
        /// While waiting for what.
        when: String,
        /// What it printed.
        log: String,
    },
    /// A startup probe did not succeed.
    #[error(
        "container {container}: startup probe failed {attempts} times over {secs} s (last: {last}); its output:\n{log}"
    )]
    StartupProbe {
        /// The container.
        container: String,
        /// Attempts made.
        attempts: u32,
        /// How long it was probed.
        secs: u64,
        /// The last failure.
        last: String,
        /// What the container printed.
        log: String,
    },
    /// A lifecycle hook failed.
    #[error("container {container}: {hook} hook failed: {output}")]
    Hook {
        /// The container.
        container: String,
        /// `postStart` or `preStop`.
        hook: &'static str,
        /// What it said.
        output: String,
    },
    /// A container did not finish in time.
    #[error("container {container} still ran after {secs} s; its output:\n{log}")]
    Timeout {
        /// The container.
        container: String,
        /// How long the kubelet waited.
        secs: u64,
        /// What it printed.
        log: String,
    },
    /// A file operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The harness failed (a binary did not build, a command is missing).
    #[error(transparent)]
    Harness(#[from] HarnessError),
}

/// What a container gets after its `preStop` hook at least, even when the hook used up
/// the grace period (the kubelet's `minimumGracePeriodInSeconds`).
const MIN_GRACE: Duration = Duration::from_secs(2);

/// Bounds on every wait, whatever the spec asks (the injector's startup probe allows
/// 300 s, which a test must not wait).
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long an init container may run.
    pub init: Duration,
    /// How long a startup probe may take to succeed.
    pub startup: Duration,
    /// How long a hook may run.
    pub hook: Duration,
    /// The longest termination grace period.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            init: Duration::from_secs(60),
            startup: Duration::from_secs(60),
            hook: Duration::from_secs(30),
            grace: Duration::from_secs(10),
        }
    }
}

/// Something that happened to a container, as `kubectl describe pod` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The process was started.
    Started,
    /// Its startup probe succeeded.
    StartupProbeSucceeded,
    /// A lifecycle hook (`postStart`, `preStop`) completed.
    Hook(&'static str),
    /// The process exited with this code (128 + signal when killed).
    Exited(i32),
    /// A remark: what was honoured how, or not at all.
    Note(String),
}

/// One event of a pod, with the time since the pod was started.
#[derive(Debug, Clone)]
pub struct PodEvent {
    /// Time since the kubelet began running the pod.
    pub at: Duration,
    /// The container.
    pub container: String,
    /// What happened.
    pub kind: EventKind,
}

impl fmt::Display for PodEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>8.3}s {}: ", self.at.as_secs_f64(), self.container)?;
        match &self.kind {
            EventKind::Started => f.write_str("started"),
            EventKind::StartupProbeSucceeded => f.write_str("startup probe succeeded"),
            EventKind::Hook(h) => write!(f, "{h} hook completed"),
            EventKind::Exited(c) => write!(f, "exited with {c}"),
            EventKind::Note(n) => f.write_str(n),
        }
    }
}

/// The kubelet of one cluster's node.
#[derive(Debug)]
pub struct Kubelet<'c> {
    cluster: &'c Cluster,
    images: ImageTable,
    api: ApiObjects,
    dir: PathBuf,
    limits: Limits,
}

impl<'c> Kubelet<'c> {
    /// A kubelet for `cluster`, running `images`, reading `api`, keeping logs and volumes
    /// under `dir` (which every UID must be able to traverse).
    pub fn new(cluster: &'c Cluster, images: ImageTable, api: ApiObjects, dir: &Path) -> Self {
        Kubelet {
            cluster,
            images,
            api,
            dir: dir.to_path_buf(),
            limits: Limits::default(),
        }
    }

    /// Replaces the default [`Limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Parses the one Pod of a YAML (or JSON) stream: a single document, or what
    /// `agentmesh-injector inject` prints (`---`-separated documents, of which exactly one
    /// must be a Pod).
    pub fn parse(manifests: &str) -> Result<PodManifest, KubeletError> {
        let bad = |e: serde_norway::Error| KubeletError::Manifest(e.to_string());
        let mut pods = Vec::new();
        for doc in serde_norway::Deserializer::from_str(manifests) {
            let value = serde_norway::Value::deserialize(doc).map_err(bad)?;
            if value.get("kind").and_then(|k| k.as_str()) == Some("Pod") {
                pods.push(value);
            }
        }
        match <[_; 1]>::try_from(pods) {
            Ok([pod]) => serde_norway::from_value(pod).map_err(bad),
            Err(pods) => Err(KubeletError::Manifest(format!(
                "expected exactly one document of kind Pod, found {}",
                pods.len()
            ))),
        }
    }

    /// Runs `manifest` in `sandbox` up to its app containers having started (see the
    /// module comment); the pod keeps running until [`RunningPod::complete`],
    /// [`RunningPod::stop`] or drop.
    pub fn run<'a>(
        &'a self,
        manifest: &'a PodManifest,
        sandbox: &'a Pod,
    ) -> Result<RunningPod<'a>, KubeletError> {
        let spec = manifest
            .spec
            .as_ref()
            .ok_or_else(|| KubeletError::Manifest("the Pod has no spec".into()))?;
        let pod_name = manifest.metadata.name.clone().unwrap_or_default();
        if spec.host_network == Some(true) {
            return Err(KubeletError::Unsupported {
                at: format!("pod {pod_name}"),
                what: "hostNetwork".into(),
            });
        }
        let dir = self.dir.join(format!("pod-{pod_name}"));
        let volumes = volumes::prepare(manifest, &self.api, &dir.join("volumes"))?;
        let ctx = PodContext {
            pod: manifest,
            pod_ip: sandbox.ipv4.to_string(),
            pod_ips: format!("{},{}", sandbox.ipv4, sandbox.ipv6),
            host_ip: self.cluster.node_ip().to_string(),
            node_name: "e2e-node".into(),
            volumes: &volumes,
            api: &self.api,
        };
        let mut pod = RunningPod {
            kubelet: self,
            sandbox,
            manifest,
            dir,
            started: Instant::now(),
            containers: Vec::new(),
            events: Vec::new(),
            mount_points: Vec::new(),
            stopped: false,
        };
        for c in spec.init_containers.as_deref().unwrap_or_default() {
            let process = pod.resolve(c, &ctx)?;
            if c.restart_policy.as_deref() == Some("Always") {
                pod.start(c, process, Role::Sidecar)?;
                let last = pod.containers.len() - 1;
                pod.post_start(last)?;
                pod.startup_probe(last)?;
            } else {
                pod.run_to_completion(c, process)?;
            }
        }
        for c in &spec.containers {
            let process = pod.resolve(c, &ctx)?;
            pod.start(c, process, Role::App)?;
            let last = pod.containers.len() - 1;
            pod.post_start(last)?;
        }
        Ok(pod)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Sidecar,
    App,
}

#[derive(Debug)]
struct RunningContainer<'a> {
    spec: &'a Container,
    process: ContainerProcess,
    daemon: Daemon,
    role: Role,
    exit: Option<i32>,
}

/// How a completed pod ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOutcome {
    /// `Succeeded` when every app container exited 0, else `Failed`.
    pub phase: &'static str,
    /// Each app container's exit code, in spec order.
    pub exit_codes: Vec<(String, i32)>,
}

/// A pod the kubelet runs: its containers' processes and its events.
#[derive(Debug)]
pub struct RunningPod<'a> {
    kubelet: &'a Kubelet<'a>,
    sandbox: &'a Pod,
    manifest: &'a PodManifest,
    dir: PathBuf,
    started: Instant,
    containers: Vec<RunningContainer<'a>>,
    events: Vec<PodEvent>,
    mount_points: Vec<PathBuf>,
    stopped: bool,
}

fn code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl<'a> RunningPod<'a> {
    /// What happened so far, in order.
    pub fn events(&self) -> &[PodEvent] {
        &self.events
    }

    /// The events as text, one a line (for failure messages).
    pub fn describe(&self) -> String {
        self.events
            .iter()
            .map(|e| format!("{e}\n"))
            .collect::<String>()
    }

    /// What `container` printed so far (`kubectl logs`).
    pub fn logs(&self, container: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{container}.log"))).unwrap_or_default()
    }

    /// Waits (at most `limit`) for `container` to exit, and returns its exit code.
    pub fn wait_for_exit(&mut self, container: &str, limit: Duration) -> Result<i32, KubeletError> {
        let i = self
            .containers
            .iter()
            .position(|c| c.spec.name == container)
            .ok_or_else(|| KubeletError::Manifest(format!("no running container {container}")))?;
        if let Some(code) = self.containers[i].exit {
            return Ok(code);
        }
        match self.containers[i].daemon.wait_exit(limit) {
            Some(status) => {
                let c = code(status);
                self.exited(i, c);
                Ok(c)
            }
            None => Err(KubeletError::Timeout {
                container: container.into(),
                secs: limit.as_secs(),
                log: self.logs(container),
            }),
        }
    }

    /// For a pod with `restartPolicy` `Never` or `OnFailure`: waits (at most `limit`) for
    /// every app container to exit, then stops the sidecars, as the kubelet completes a
    /// Job's pod.
    pub fn complete(&mut self, limit: Duration) -> Result<PodOutcome, KubeletError> {
        let policy = self
            .manifest
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        if policy == "Always" {
            return Err(KubeletError::Unsupported {
                at: "pod".into(),
                what: "completing a pod with restartPolicy Always (it never completes)".into(),
            });
        }
        let deadline = Instant::now() + limit;
        let apps: Vec<String> = self
            .containers
            .iter()
            .filter(|c| c.role == Role::App)
            .map(|c| c.spec.name.clone())
            .collect();
        let mut exit_codes = Vec::new();
        for name in apps {
            let left = deadline.saturating_duration_since(Instant::now());
            exit_codes.push((name.clone(), self.wait_for_exit(&name, left)?));
        }
        self.stop();
        let phase = if exit_codes.iter().all(|(_, c)| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        };
        Ok(PodOutcome { phase, exit_codes })
    }

    /// Stops every container still running, as the kubelet deletes a pod, within the
    /// pod's `terminationGracePeriodSeconds` (default 30 s, at most [`Limits::grace`]):
    /// the app containers all at once, each running its `preStop` hook, then getting
    /// SIGTERM, then SIGKILL when the grace period is over (the hook's time counts
    /// against it; at least 2 s are left after a hook, as the kubelet does); then the
    /// native sidecars one by one in reverse order, each the same way with what is left
    /// of the grace period (at least 2 s). A classic sidecar is an app container: its
    /// `preStop` runs while the other containers shut down.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let grace = self
            .manifest
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(30))
            .min(self.kubelet.limits.grace);
        let deadline = Instant::now() + grace;
        let running = |pod: &Self, role: Role| -> Vec<usize> {
            (0..pod.containers.len())
                .filter(|&i| pod.containers[i].role == role && pod.containers[i].exit.is_none())
                .collect()
        };
        let apps = running(self, Role::App);
        self.terminate(&apps, deadline);
        for i in running(self, Role::Sidecar).into_iter().rev() {
            self.terminate(&[i], deadline.max(Instant::now() + MIN_GRACE));
        }
    }

    /// Terminates the containers `which` in parallel: each its `preStop` hook (bounded by
    /// `deadline`), SIGTERM, SIGKILL at `deadline` (or [`MIN_GRACE`] after the hook,
    /// whichever is later). Their events are recorded in the order they happened.
    fn terminate(&mut self, which: &[usize], deadline: Instant) {
        let node = Node {
            cluster: self.kubelet.cluster,
            sandbox: self.sandbox,
            started: self.started,
            hook_limit: self.kubelet.limits.hook,
        };
        let mut events: Vec<PodEvent> = std::thread::scope(|scope| {
            let stopping: Vec<_> = self
                .containers
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| which.contains(i))
                .map(|(_, c)| {
                    let node = &node;
                    scope.spawn(move || node.stop_container(c, deadline))
                })
                .collect();
            stopping
                .into_iter()
                .flat_map(|t| t.join().unwrap_or_default())
                .collect()
        });
        events.sort_by_key(|e| e.at);
        self.events.extend(events);
    }

    fn note(&mut self, container: &str, text: String) {
        self.event(container, EventKind::Note(text));
    }

    fn event(&mut self, container: &str, kind: EventKind) {
        self.events.push(PodEvent {
            at: self.started.elapsed(),
            container: container.to_string(),
            kind,
        });
    }

    fn exited(&mut self, i: usize, c: i32) {
        self.containers[i].exit = Some(c);
        let name = self.containers[i].spec.name.clone();
        self.event(&name, EventKind::Exited(c));
    }

    fn resolve(
        &mut self,
        c: &Container,
        ctx: &PodContext<'_>,
    ) -> Result<ContainerProcess, KubeletError> {
        let image = c
            .image
            .as_deref()
            .ok_or_else(|| KubeletError::Unsupported {
                at: format!("container {}", c.name),
                what: "a container without image".into(),
            })?;
        let image = self.kubelet.images.resolve(&c.name, image)?;
        let process = ContainerProcess::resolve(c, image, ctx)?;
        let caps = if process.uid == 0 {
            format!("capabilities {{{}}}", process.caps.join(","))
        } else {
            "no capabilities (non-root)".into()
        };
        self.note(
            &c.name,
            format!(
                "runs {:?} as {}:{}, {caps}{}{}",
                process.argv,
                process.uid,
                process.gid,
                if process.read_only_root {
                    ", read-only root"
                } else {
                    ""
                },
                if process.no_new_privs {
                    ", no_new_privs"
                } else {
                    ""
                },
            ),
        );
        if !process.not_honoured.is_empty() {
            let what = process.not_honoured.join(", ");
            self.note(&c.name, format!("not enforced here: {what}"));
        }
        for dir in process.missing_mount_points() {
            // Outermost first, so removal (in reverse) goes innermost first.
            let mut missing: Vec<PathBuf> = dir
                .ancestors()
                .take_while(|p| !p.exists())
                .map(Path::to_path_buf)
                .collect();
            missing.reverse();
            std::fs::create_dir_all(&dir).map_err(|source| KubeletError::Io {
                what: format!("create the mount point {}", dir.display()),
                source,
            })?;
            self.mount_points.extend(missing);
        }
        Ok(process)
    }

    fn spawn(
        &mut self,
        c: &Container,
        process: &ContainerProcess,
    ) -> Result<(Daemon, PathBuf), KubeletError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| KubeletError::Io {
            what: format!("create {}", self.dir.display()),
            source,
        })?;
        let log = self.dir.join(format!("{}.log", c.name));
        let cmd = process.command(&self.sandbox.ns, &process.argv, None);
        let daemon = Daemon::spawn(&c.name, cmd, &log)?;
        self.event(&c.name, EventKind::Started);
        Ok((daemon, log))
    }

    fn start(
        &mut self,
        c: &'a Container,
        process: ContainerProcess,
        role: Role,
    ) -> Result<(), KubeletError> {
        let (daemon, _) = self.spawn(c, &process)?;
        self.containers.push(RunningContainer {
            spec: c,
            process,
            daemon,
            role,
            exit: None,
        });
        Ok(())
    }

    fn run_to_completion(
        &mut self,
        c: &Container,
        process: ContainerProcess,
    ) -> Result<(), KubeletError> {
        let (mut daemon, log) = self.spawn(c, &process)?;
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let limit = self.kubelet.limits.init;
        let Some(status) = daemon.wait_exit(limit) else {
            daemon.terminate(Duration::ZERO);
            return Err(KubeletError::Timeout {
                container: c.name.clone(),
                secs: limit.as_secs(),
                log: read(),
            });
        };
        self.event(&c.name, EventKind::Exited(code(status)));
        if status.success() {
            Ok(())
        } else {
            Err(KubeletError::InitFailed {
                container: c.name.clone(),
                status: status.to_string(),
                log: read(),
            })
        }
    }

    /// Runs container `i`'s `postStart` hook, if any, to its end: the kubelet starts the
    /// next container only then.
    fn post_start(&mut self, i: usize) -> Result<(), KubeletError> {
        let which = "postStart";
        let spec = self.containers[i].spec;
        let handler = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref());
        let Some(handler) = handler else {
            return Ok(());
        };
        let check = Check::of_hook(handler, spec, &self.sandbox.ipv4.to_string())?;
        let c = &self.containers[i];
        check
            .run(
                self.kubelet.cluster,
                self.sandbox,
                &c.process,
                self.kubelet.limits.hook,
            )
            .map_err(|output| KubeletError::Hook {
                container: spec.name.clone(),
                hook: which,
                output,
            })?;
        self.event(&spec.name, EventKind::Hook(which));
        Ok(())
    }

    /// Probes container `i` until its startup probe succeeds: `initialDelaySeconds`,
    /// then every `periodSeconds` (default 10), failing after `failureThreshold`
    /// (default 3) failures or [`Limits::startup`], or as soon as the process exits.
    fn startup_probe(&mut self, i: usize) -> Result<(), KubeletError> {
        let spec = self.containers[i].spec;
        let Some(probe) = spec.startup_probe.as_ref() else {
            return Ok(());
        };
        let check = Check::of_probe(probe, spec, &self.sandbox.ipv4.to_string())?;
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let delay = secs(probe.initial_delay_seconds, 0);
        let period = secs(probe.period_seconds, 10).max(Duration::from_secs(1));
        let timeout = secs(probe.timeout_seconds, 1);
        let threshold = probe
            .failure_threshold
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(3)
            .max(1);
        let begun = Instant::now();
        std::thread::sleep(delay.min(self.kubelet.limits.startup));
        let mut attempts = 0;
        let mut last = String::from("not probed");
        while attempts < threshold && begun.elapsed() < self.kubelet.limits.startup {
            if let Some(status) = self.containers[i].daemon.wait_exit(Duration::ZERO) {
                let c = code(status);
                self.exited(i, c);
                return Err(KubeletError::Exited {
                    container: spec.name.clone(),
                    status: status.to_string(),
                    when: "before its startup probe succeeded".into(),
                    log: self.logs(&spec.name),
                });
            }
            let tried = Instant::now();
            attempts += 1;
            let c = &self.containers[i];
            match check.run(self.kubelet.cluster, self.sandbox, &c.process, timeout) {
                Ok(()) => {
                    self.event(&spec.name, EventKind::StartupProbeSucceeded);
                    return Ok(());
                }
                Err(e) => last = e,
            }
            std::thread::sleep(period.saturating_sub(tried.elapsed()));
        }
        Err(KubeletError::StartupProbe {
            container: spec.name.clone(),
            attempts,
            secs: begun.elapsed().as_secs(),
            last,
            log: self.logs(&spec.name),
        })
    }
}

/// What stopping one container needs of the pod, shared by the threads that stop its
/// containers at once.
struct Node<'a> {
    cluster: &'a Cluster,
    sandbox: &'a Pod,
    started: Instant,
    hook_limit: Duration,
}

impl Node<'_> {
    /// Stops `c`: its `preStop` hook (bounded by `deadline`), SIGTERM, SIGKILL at
    /// `deadline` or [`MIN_GRACE`] after the hook, whichever is later. Returns its events.
    fn stop_container(&self, c: &mut RunningContainer<'_>, deadline: Instant) -> Vec<PodEvent> {
        let mut events = Vec::new();
        let mut event = |kind| {
            events.push(PodEvent {
                at: self.started.elapsed(),
                container: c.spec.name.clone(),
                kind,
            })
        };
        if let Some(handler) = c.spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let pod_ip = self.sandbox.ipv4.to_string();
            let ran = Check::of_hook(handler, c.spec, &pod_ip)
                .map_err(|e| e.to_string())
                .and_then(|check| {
                    let limit = left.min(self.hook_limit);
                    check.run(self.cluster, self.sandbox, &c.process, limit)
                });
            match ran {
                Ok(()) => event(EventKind::Hook("preStop")),
                Err(output) => event(EventKind::Note(
                    KubeletError::Hook {
                        container: c.spec.name.clone(),
                        hook: "preStop",
                        output,
                    }
                    .to_string(),
                )),
            }
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_GRACE);
        if let Some(status) = c.daemon.terminate(left) {
            c.exit = Some(code(status));
            event(EventKind::Exited(code(status)));
        }
        events
    }
}

impl Drop for RunningPod<'_> {
    fn drop(&mut self) {
        self.stop();
        // Kill anything left (a container that ignored SIGTERM already got SIGKILL).
        self.containers.clear();
        for dir in self.mount_points.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
