# meshd, the control plane (xDS 15010/15012, monitoring 15014, webhooks 15017).
# Build from the repository root: docker build -f deploy/docker/meshd.Dockerfile -t mesh/meshd:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mesh-control --bin meshd \
    && install -D target/release/meshd /out/meshd

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meshd /usr/local/bin/meshd
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/meshd"]
