//! Probes and lifecycle hooks, run as the kubelet runs them.
//!
//! `httpGet` and `tcpSocket` go from the node (the cluster's switch namespace) to the
//! pod's IP, or to the host the handler names; a loopback host is reached from inside
//! the pod. An `httpGet` succeeds on a status from 200 to 399. `exec` runs in the
//! container (its mounts, user and environment) and succeeds on exit 0. `sleep` sleeps.
//! `grpc` probes are refused.
//!
//! One attempt per call: the schedule (delays, periods, thresholds) is the caller's.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::KubeletError;
use super::container::ContainerProcess;
use crate::{Cluster, Pod};

/// One check: a probe's or a hook's handler, with what it needs to run.
#[derive(Debug, Clone)]
pub(super) enum Check {
    /// `httpGet`: a URL and headers, from the node or (loopback) from the pod.
    Http {
        /// The URL.
        url: String,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Whether the host is a loopback address of the pod.
        in_pod: bool,
    },
    /// `tcpSocket`: connect to an address.
    Tcp {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Whether the host is a loopback address of the pod.
        in_pod: bool,
    },
    /// `exec`: a command in the container.
    Exec(Vec<String>),
    /// `sleep`: wait.
    Sleep(Duration),
}

impl Check {
    /// The handler of a probe.
    pub fn of_probe(
        probe: &Probe,
        container: &Container,
        pod_ip: &str,
    ) -> Result<Check, KubeletError> {
        handler(
            &container.name,
            probe.http_get.as_ref(),
            probe.tcp_socket.as_ref(),
            probe.exec.as_ref(),
            None,
            probe.grpc.is_some(),
            container,
            pod_ip,
        )
    }

    /// The handler of a lifecycle hook.
    pub fn of_hook(
        hook: &LifecycleHandler,
        container: &Container,
        pod_ip: &str,
    ) -> Result<Check, KubeletError> {
        let sleep = hook
            .sleep
            .as_ref()
            .map(|s| Duration::from_secs(u64::try_from(s.seconds).unwrap_or(0)));
        handler(
            &container.name,
            hook.http_get.as_ref(),
            hook.tcp_socket.as_ref(),
            hook.exec.as_ref(),
            sleep,
            false,
            container,
            pod_ip,
        )
    }

    /// Runs the check once, bounded by `timeout`: `Ok(())` on success, else what it saw.
    pub fn run(
        &self,
        cluster: &Cluster,
        pod: &Pod,
        process: &ContainerProcess,
        timeout: Duration,
    ) -> Result<(), String> {
        let secs = timeout.as_secs().max(1).to_string();
        let in_ns = |in_pod: bool, argv: &[&str]| -> Command {
            let mut full = vec!["timeout", secs.as_str()];
            full.extend_from_slice(argv);
            if in_pod {
                pod.ns.command(&full)
            } else {
                cluster.node_command(&full)
            }
        };
        let mut cmd = match self {
            Check::Sleep(d) => {
                std::thread::sleep(*d);
                return Ok(());
            }
            Check::Http {
                url,
                headers,
                in_pod,
            } => {
                let mut argv = vec![
                    "curl".to_string(),
                    "-sk".into(),
                    "-o".into(),
                    "/dev/null".into(),
                    "-w".into(),
                    "%{http_code}".into(),
                    "--max-time".into(),
                    secs.clone(),
                ];
                for (k, v) in headers {
                    argv.push("-H".into());
                    argv.push(format!("{k}: {v}"));
                }
                argv.push(url.clone());
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                in_ns(*in_pod, &argv)
            }
            Check::Tcp { host, port, in_pod } => {
                let script = format!("exec 3<>/dev/tcp/{host}/{port}");
                in_ns(*in_pod, &["bash", "-c", &script])
            }
            Check::Exec(argv) => process.command(&pod.ns, argv, Some(timeout)),
        };
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the check: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        match self {
            Check::Http { url, .. } => match stdout.parse::<u16>() {
                Ok(code) if (200..400).contains(&code) => Ok(()),
                Ok(0) | Err(_) => Err(format!("GET {url}: no answer ({stderr})")),
                Ok(code) => Err(format!("GET {url}: HTTP {code}")),
            },
            _ if out.status.success() => Ok(()),
            _ => Err(format!("{}: {stdout} {stderr}", out.status)),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn handler(
    name: &str,
    http: Option<&HTTPGetAction>,
    tcp: Option<&TCPSocketAction>,
    exec: Option<&ExecAction>,
    sleep: Option<Duration>,
    grpc: bool,
    container: &Container,
    pod_ip: &str,
) -> Result<Check, KubeletError> {
    let unsupported = |what: &str| KubeletError::Unsupported {
        at: format!("container {name}"),
        what: what.to_string(),
    };
    if grpc {
        return Err(unsupported("grpc probes"));
    }
    let host_of = |host: Option<&String>| {
        let host = host.map(String::as_str).unwrap_or(pod_ip).to_string();
        let in_pod = matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1");
        (host, in_pod)
    };
    if let Some(http) = http {
        let port = port(&http.port, container)?;
        let (host, in_pod) = host_of(http.host.as_ref());
        let scheme = http
            .scheme
            .as_deref()
            .unwrap_or("HTTP")
            .to_ascii_lowercase();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let path = http.path.as_deref().unwrap_or("/");
        let headers = http
            .http_headers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return Ok(Check::Http {
            url: format!("{scheme}://{host}:{port}{path}"),
            headers,
            in_pod,
        });
    }
    if let Some(tcp) = tcp {
        let port = port(&tcp.port, container)?;
        let (host, in_pod) = host_of(tcp.host.as_ref());
        return Ok(Check::Tcp { host, port, in_pod });
    }
    if let Some(exec) = exec {
        let argv = exec.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err(unsupported("an exec handler without a command"));
        }
        return Ok(Check::Exec(argv));
    }
    if let Some(d) = sleep {
        return Ok(Check::Sleep(d));
    }
    Err(unsupported("a probe or hook without a handler"))
}

/// A port by number, or by the name of one of the container's ports.
fn port(port: &IntOrString, container: &Container) -> Result<u16, KubeletError> {
    let number = match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => container
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    };
    number
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| KubeletError::Unsupported {
            at: format!("container {}", container.name),
            what: format!(
                "probe port {port:?}: not a port number or a named port of the container"
            ),
        })
}
