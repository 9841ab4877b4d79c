# mesh-proxy, the sidecar. The same image runs `mesh-proxy init` as the
# injected init container, which writes iptables rules in the pod's network
# namespace: the runtime needs iptables, so it is Debian slim, not distroless.
# Build from the repository root: docker build -f deploy/docker/proxy.Dockerfile -t mesh/mesh-proxy:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mesh-proxy --bin mesh-proxy \
    && install -D target/release/mesh-proxy /out/mesh-proxy

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1337 mesh-proxy \
    && useradd --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin mesh-proxy
COPY --from=build /out/mesh-proxy /usr/local/bin/mesh-proxy
# The sidecar runs as 1337 (the uid the interception rules exclude); the
# init container overrides this with root and NET_ADMIN/NET_RAW.
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/mesh-proxy"]
