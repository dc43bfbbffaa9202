//! One container of a Pod spec as one local process: its argv (image entrypoint and
//! cmd, `command`, `args`, `$(VAR)` references), its environment (literal values and the
//! downward API), its user and capabilities, and its volume mounts.
//!
//! [`ContainerProcess::command`] runs it the way a runtime would, as far as a process in
//! a network namespace can be a container: inside the pod's namespace (`ip netns exec`,
//! which also gives the process a mount namespace of its own), with each volume
//! bind-mounted at its `mountPath`, the root filesystem read-only when asked, as the
//! container's UID/GID with no supplementary groups, with the capability bounding set
//! the security context gives (a runtime's default set, minus `drop`, plus `add`; a
//! non-root process keeps none, as in Kubernetes) and `no_new_privs` unless privilege
//! escalation is allowed. What cannot be honoured (seccomp, SELinux, AppArmor, resource
//! limits) is listed in [`ContainerProcess::not_honoured`] for the pod's events.
//!
//! This module builds commands; it never starts or waits for anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSecurityContext};

use super::KubeletError;
use super::image::Image;
use super::volumes::{ApiObjects, ObjectKind};
use crate::Netns;

/// The capabilities containerd and CRI-O give a container unless told otherwise.
const RUNTIME_DEFAULT_CAPS: [&str; 14] = [
    "chown",
    "dac_override",
    "fsetid",
    "fowner",
    "mknod",
    "net_raw",
    "setgid",
    "setuid",
    "setfcap",
    "setpcap",
    "net_bind_service",
    "sys_chroot",
    "kill",
    "audit_write",
];

/// The `PATH` of a container whose image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Mounts volumes, drops privileges, then runs the container's argv (`$@`). Arguments:
/// `rootfs` (`ro`|`rw`), `workdir` (may be empty), then `mode source target` triples,
/// then `--`, then the argv.
const CONTAINER_SHELL: &str = r#"set -e
rootfs=$1; workdir=$2; shift 2
while [ "$1" != "--" ]; do
  mount --bind "$2" "$3"
  [ "$1" = rw ] || mount -o remount,bind,ro "$3"
  shift 3
done
shift
[ "$rootfs" = rw ] || mount -o remount,bind,ro /
[ -z "$workdir" ] || cd "$workdir"
exec "$@""#;

/// What the pod offers its containers' specs: its identity and addresses for the
/// downward API, and its volumes.
#[derive(Debug)]
pub(super) struct PodContext<'a> {
    /// The Pod manifest.
    pub pod: &'a Pod,
    /// `status.podIP`.
    pub pod_ip: String,
    /// `status.podIPs`, comma-separated as the downward API gives them.
    pub pod_ips: String,
    /// `status.hostIP`.
    pub host_ip: String,
    /// `spec.nodeName`.
    pub node_name: String,
    /// The local directory of each volume.
    pub volumes: &'a BTreeMap<String, PathBuf>,
    /// ConfigMaps and Secrets, for `configMapKeyRef` and `secretKeyRef`.
    pub api: &'a ApiObjects,
}

/// A volume bind-mounted into the container.
#[derive(Debug, Clone)]
pub(super) struct Mount {
    /// The local directory (or file, with `subPath`).
    pub source: PathBuf,
    /// `mountPath`.
    pub target: String,
    /// `readOnly`.
    pub read_only: bool,
}

/// A container resolved to a process.
#[derive(Debug, Clone)]
pub(super) struct ContainerProcess {
    /// The argv as the spec gives it (`argv[0]` as named inside the image).
    pub argv: Vec<String>,
    /// The full environment.
    pub env: Vec<(String, String)>,
    /// UID.
    pub uid: i64,
    /// GID.
    pub gid: i64,
    /// The capability bounding set (setpriv names), which is what root keeps.
    pub caps: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// Volume mounts.
    pub mounts: Vec<Mount>,
    /// The image's programs, to run `argv[0]` of the container, its hooks and probes.
    pub programs: BTreeMap<String, PathBuf>,
    /// Settings of the spec the kubelet cannot enforce here, for the pod's events.
    pub not_honoured: Vec<String>,
}

impl ContainerProcess {
    /// Resolves `container` of the pod in `ctx` run from `image`.
    pub fn resolve(
        container: &Container,
        image: &Image,
        ctx: &PodContext<'_>,
    ) -> Result<ContainerProcess, KubeletError> {
        let name = container.name.clone();
        let unsupported = |what: &str| KubeletError::Unsupported {
            at: format!("container {name}"),
            what: what.to_string(),
        };
        if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
            return Err(unsupported("envFrom"));
        }
        if container
            .volume_devices
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        {
            return Err(unsupported("volumeDevices"));
        }
        let pod_sc = ctx
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        check_pod_security(&pod_sc).map_err(|what| unsupported(&what))?;
        let sc = container.security_context.clone().unwrap_or_default();
        let mut not_honoured = Vec::new();

        let env = environment(container, ctx)?;
        let lookup: BTreeMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let expand_all = |v: &[String]| v.iter().map(|a| expand(a, &lookup)).collect::<Vec<_>>();
        // Kubernetes: `command` replaces ENTRYPOINT (and drops CMD); `args` replaces CMD.
        let mut argv = match &container.command {
            Some(c) if !c.is_empty() => expand_all(c),
            _ => image.entrypoint.clone(),
        };
        match &container.args {
            Some(a) if !a.is_empty() => argv.extend(expand_all(a)),
            _ if container.command.as_ref().is_none_or(|c| c.is_empty()) => {
                argv.extend(image.cmd.iter().cloned())
            }
            _ => {}
        }
        if argv.is_empty() {
            return Err(unsupported(
                "no command: neither the spec nor the image has one",
            ));
        }

        let uid = sc
            .run_as_user
            .or(pod_sc.run_as_user)
            .unwrap_or(image.user.0);
        let gid = sc
            .run_as_group
            .or(pod_sc.run_as_group)
            .unwrap_or(image.user.1);
        if sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true) && uid == 0 {
            return Err(KubeletError::Unsupported {
                at: format!("container {name}"),
                what: "runAsNonRoot with UID 0 (the kubelet refuses to start it)".into(),
            });
        }
        let mut caps: Vec<String> = RUNTIME_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        if sc.privileged == Some(true) {
            caps = vec!["all".into()];
        } else if let Some(c) = &sc.capabilities {
            let norm = |c: &String| c.trim_start_matches("CAP_").to_ascii_lowercase();
            for drop in c.drop.as_deref().unwrap_or_default().iter().map(norm) {
                if drop == "all" {
                    caps.clear();
                } else {
                    caps.retain(|c| *c != drop);
                }
            }
            for add in c.add.as_deref().unwrap_or_default().iter().map(norm) {
                if add == "all" {
                    caps = vec!["all".into()];
                } else if !caps.contains(&add) {
                    caps.push(add);
                }
            }
        }
        for (set, what) in [
            (
                sc.seccomp_profile.is_some() || pod_sc.seccomp_profile.is_some(),
                "seccompProfile",
            ),
            (
                sc.se_linux_options.is_some() || pod_sc.se_linux_options.is_some(),
                "seLinuxOptions",
            ),
            (
                sc.app_armor_profile.is_some() || pod_sc.app_armor_profile.is_some(),
                "appArmorProfile",
            ),
            (container.resources.is_some(), "resources"),
            (
                container.readiness_probe.is_some(),
                "readinessProbe (never run)",
            ),
            (
                container.liveness_probe.is_some(),
                "livenessProbe (never run)",
            ),
        ] {
            if set {
                not_honoured.push(what.to_string());
            }
        }

        let mut mounts = Vec::new();
        for m in container.volume_mounts.as_deref().unwrap_or_default() {
            let dir = ctx
                .volumes
                .get(&m.name)
                .ok_or_else(|| KubeletError::Unsupported {
                    at: format!("container {name}"),
                    what: format!(
                        "volumeMount of {:?}, which is not a volume of the pod",
                        m.name
                    ),
                })?;
            if m.sub_path_expr.is_some() {
                return Err(unsupported("volumeMounts[].subPathExpr"));
            }
            let source = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => dir.join(sub),
                _ => dir.clone(),
            };
            mounts.push(Mount {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
            });
        }

        Ok(ContainerProcess {
            argv,
            env,
            uid,
            gid,
            caps,
            no_new_privs: sc.allow_privilege_escalation == Some(false),
            read_only_root: sc.read_only_root_filesystem == Some(true),
            working_dir: container.working_dir.clone(),
            mounts,
            programs: image.programs.clone(),
            not_honoured,
        })
    }

    /// A command running `argv` (the container's own, or a hook's or probe's) in the
    /// container's namespaces, mounts, user, capabilities and environment; killed after
    /// `limit` when one is given.
    pub fn command(&self, ns: &Netns, argv: &[String], limit: Option<Duration>) -> Command {
        let mut cmd = match limit {
            Some(limit) => {
                let mut c = Command::new("timeout");
                c.arg(limit.as_secs().max(1).to_string()).arg("ip");
                c
            }
            None => Command::new("ip"),
        };
        cmd.args([
            "netns",
            "exec",
            ns.name(),
            "sh",
            "-c",
            CONTAINER_SHELL,
            "sh",
        ]);
        cmd.arg(if self.read_only_root { "ro" } else { "rw" });
        cmd.arg(self.working_dir.as_deref().unwrap_or(""));
        for m in &self.mounts {
            cmd.arg(if m.read_only { "ro" } else { "rw" })
                .arg(&m.source)
                .arg(&m.target);
        }
        cmd.arg("--").arg("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--inh-caps=-all");
        let mut bounding = String::from("-all");
        for c in &self.caps {
            bounding.push_str(",+");
            bounding.push_str(c);
        }
        cmd.arg(format!("--bounding-set={bounding}"));
        if self.no_new_privs {
            cmd.arg("--no-new-privs");
        }
        cmd.arg("--");
        let mut argv = argv.iter();
        if let Some(first) = argv.next() {
            match self.programs.get(first) {
                Some(local) => cmd.arg(local),
                None => cmd.arg(first),
            };
        }
        cmd.args(argv);
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Directories the mounts need that do not exist on the host.
    pub fn missing_mount_points(&self) -> Vec<PathBuf> {
        self.mounts
            .iter()
            .map(|m| PathBuf::from(&m.target))
            .filter(|p| !p.exists())
            .collect()
    }
}

/// Refuses pod-level settings whose effect the kubelet cannot give.
fn check_pod_security(sc: &PodSecurityContext) -> Result<(), String> {
    if sc.fs_group.is_some() {
        return Err("securityContext.fsGroup".into());
    }
    if sc
        .supplemental_groups
        .as_ref()
        .is_some_and(|g| !g.is_empty())
    {
        return Err("securityContext.supplementalGroups".into());
    }
    if sc.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err("securityContext.sysctls".into());
    }
    Ok(())
}

/// The container's environment: the image's `PATH` and `HOME`, `HOSTNAME`, then `env` in
/// order (a later entry may refer to an earlier one as `$(NAME)`).
fn environment(
    container: &Container,
    ctx: &PodContext<'_>,
) -> Result<Vec<(String, String)>, KubeletError> {
    let pod_name = ctx.pod.metadata.name.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), "/".into()),
        ("HOSTNAME".into(), pod_name),
    ];
    for var in container.env.as_deref().unwrap_or_default() {
        let value = env_value(&container.name, var, ctx, &env)?;
        env.retain(|(k, _)| *k != var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

fn env_value(
    container: &str,
    var: &EnvVar,
    ctx: &PodContext<'_>,
    earlier: &[(String, String)],
) -> Result<String, KubeletError> {
    let unsupported = |what: String| KubeletError::Unsupported {
        at: format!("container {container}, env {}", var.name),
        what,
    };
    if let Some(v) = &var.value {
        let lookup: BTreeMap<&str, &str> = earlier
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        return Ok(expand(v, &lookup));
    }
    let Some(from) = &var.value_from else {
        return Ok(String::new());
    };
    let namespace = ctx.pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(field) = &from.field_ref {
        return field_value(&field.field_path, ctx)
            .ok_or_else(|| unsupported(format!("fieldRef {:?}", field.field_path)));
    }
    for (kind, sel) in [
        (
            ObjectKind::ConfigMap,
            from.config_map_key_ref
                .as_ref()
                .map(|s| (&s.name, &s.key, s.optional)),
        ),
        (
            ObjectKind::Secret,
            from.secret_key_ref
                .as_ref()
                .map(|s| (&s.name, &s.key, s.optional)),
        ),
    ] {
        let Some((name, key, optional)) = sel else {
            continue;
        };
        return match ctx.api.key(kind, namespace, name, key) {
            Some(v) => Ok(v.to_string()),
            None if optional == Some(true) => Ok(String::new()),
            None => Err(KubeletError::MissingObject {
                kind: kind.to_string(),
                name: format!("{namespace}/{name}"),
                key: Some(key.clone()),
            }),
        };
    }
    Err(unsupported(
        "a valueFrom other than fieldRef, configMapKeyRef or secretKeyRef".into(),
    ))
}

/// The downward API's value of `path`, or `None` for a field it does not offer (or
/// that the pod does not have).
fn field_value(path: &str, ctx: &PodContext<'_>) -> Option<String> {
    let meta = &ctx.pod.metadata;
    let spec = ctx.pod.spec.as_ref();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        map.as_ref()?.get(key).cloned()
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_else(|| "default".into())),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => Some(ctx.node_name.clone()),
        "spec.serviceAccountName" => Some(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        "status.podIP" => Some(ctx.pod_ip.clone()),
        "status.podIPs" => Some(ctx.pod_ips.clone()),
        "status.hostIP" | "status.hostIPs" => Some(ctx.host_ip.clone()),
        p if p.starts_with("metadata.labels['") => keyed("metadata.labels['", &meta.labels),
        p if p.starts_with("metadata.annotations['") => {
            keyed("metadata.annotations['", &meta.annotations)
        }
        _ => None,
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`,
/// anything else stays as written.
pub(super) fn expand(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = vars.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_references_expand_as_in_kubernetes() {
        let vars = BTreeMap::from([("POD_IP", "10.0.0.7"), ("NAME", "agent")]);
        assert_eq!(
            expand("sidecar~$(POD_IP)~$(NAME)", &vars),
            "sidecar~10.0.0.7~agent"
        );
        assert_eq!(
            expand("$$(POD_IP) $(UNSET) $", &vars),
            "$(POD_IP) $(UNSET) $"
        );
    }
}
