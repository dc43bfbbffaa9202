//! The harness itself: pods reach each other by name over IPv4 and IPv6, and nothing
//! else.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use agentmesh_e2e::{Cluster, Daemon, wait_for};

#[test]
fn pods_reach_each_other_by_name_and_have_no_route_out() {
    let mut cluster = Cluster::new("hns").unwrap();
    cluster.add_pod("client").unwrap();
    cluster.add_pod("server").unwrap();
    let server = cluster.pod("server");
    let dir = std::env::temp_dir();
    let log = dir.join(format!("{}-http.log", server.ns.name()));
    // A real HTTP server, run as an unprivileged user inside the server pod.
    let _http = Daemon::spawn(
        "http",
        server.ns.command_as(
            65534,
            65534,
            &[
                "/usr/bin/python3",
                "-m",
                "http.server",
                "--bind",
                "::",
                "8080",
                "--directory",
                "/",
            ],
        ),
        &log,
    )
    .unwrap();
    let client = cluster.pod("client");
    let fetch = |url: &str| {
        client
            .ns
            .exec(&[
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                url,
            ])
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    };
    let v4 = wait_for(Duration::from_secs(10), || {
        fetch("http://server:8080/").filter(|s| s == "200")
    });
    assert_eq!(v4.as_deref(), Some("200"), "IPv4 by name");
    let url6 = format!("http://[{}]:8080/", server.ipv6);
    assert_eq!(fetch(&url6).as_deref(), Some("200"), "IPv6");
    // No route out of the cluster.
    let out = client
        .ns
        .exec(&["curl", "-sS", "--max-time", "1", "http://192.0.2.1/"]);
    assert!(out.is_err(), "a pod must not reach outside addresses");
}
