# mesh-ingress and mesh-egress, the gateways, in one image; pick one with
# the entrypoint (the default is mesh-ingress; egress: --entrypoint /usr/local/bin/mesh-egress).
# Build from the repository root: docker build -f deploy/docker/gateway.Dockerfile -t mesh/mesh-gateway:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mesh-gateway --bin mesh-ingress --bin mesh-egress \
    && install -D target/release/mesh-ingress /out/mesh-ingress \
    && install -D target/release/mesh-egress /out/mesh-egress

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mesh-ingress /out/mesh-egress /usr/local/bin/
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/mesh-ingress"]
