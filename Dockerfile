# syntax=docker/dockerfile:1
#
# The container images of agentmesh, one build target per binary:
#
#   docker build --target controller -t ghcr.io/agentmesh/agentmesh-controller:TAG .
#   docker build --target proxy      -t ghcr.io/agentmesh/agentmesh-proxy:TAG .
#   docker build --target init       -t ghcr.io/agentmesh/agentmesh-init:TAG .
#   docker build --target injector   -t ghcr.io/agentmesh/agentmesh-injector:TAG .
#
# The Helm chart (charts/agentmesh) runs these names; controller/tests/images.rs checks
# offline that every binary named here is one the workspace builds and that the proxy
# runs as its contract user.
#
# Toolchain and base images: the binaries are self-contained Rust executables that link
# only glibc (and libgcc_s). agentmesh-proxy is linked with `-z pack-relative-relocs`
# (proxy/build.rs), which needs glibc >= 2.36 at run time (an older loader refuses it,
# naming GLIBC_ABI_DT_RELR). So everything is built on Debian 12 (bookworm, glibc 2.36)
# and runs on Debian 12 bases: distroless/cc-debian12 (glibc, libgcc_s, CA
# certificates, no shell, no package manager) for the three servers, and
# debian:bookworm-slim for agentmesh-init, which runs the iptables programs.
# Moving the build stage to a newer Debian means moving the run stages with it.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# One cargo invocation builds every binary, so the shared dependencies (tokio, hyper,
# rustls, kube) compile once. --locked: the image is built from Cargo.lock exactly.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin agentmesh-controller \
        --bin agentmesh-proxy \
        --bin agentmesh-init \
        --bin agentmesh-injector \
    && mkdir -p /out \
    && cp target/release/agentmesh-controller target/release/agentmesh-proxy \
          target/release/agentmesh-init target/release/agentmesh-injector /out/

# The control plane: xDS server, status writer, gateway provisioner, injection webhook.
# Runs as distroless's unprivileged `nonroot` user (65532), as the chart expects.
FROM gcr.io/distroless/cc-debian12:nonroot AS controller
COPY --from=build /out/agentmesh-controller /usr/local/bin/agentmesh-controller
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/agentmesh-controller"]

# The data plane, as injected sidecar and as gateway. UID/GID 1501 is the contract
# (DESIGN.md): agentmesh-init's iptables rules let this user's traffic through, which
# is what keeps the proxy from capturing its own upstream connections.
FROM gcr.io/distroless/cc-debian12 AS proxy
COPY --from=build /out/agentmesh-proxy /usr/local/bin/agentmesh-proxy
USER 1501:1501
ENTRYPOINT ["/usr/local/bin/agentmesh-proxy"]

# The init container: installs the pod's capture rules with iptables-restore. Debian's
# `iptables` package ships both backends agentmesh-init chooses between, for IPv4 and
# IPv6: iptables-legacy-{save,restore}, ip6tables-legacy-{save,restore},
# iptables-nft-{save,restore} and ip6tables-nft-{save,restore}. It runs as root in the
# pod's network namespace with NET_ADMIN and NET_RAW only (the injector sets that).
FROM docker.io/library/debian:bookworm-slim AS init
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/agentmesh-init /usr/local/bin/agentmesh-init
USER 0:0
ENTRYPOINT ["/usr/local/bin/agentmesh-init"]

# The injector alone: the webhook without the controller, and the `inject` CLI.
FROM gcr.io/distroless/cc-debian12:nonroot AS injector
COPY --from=build /out/agentmesh-injector /usr/local/bin/agentmesh-injector
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/agentmesh-injector"]
