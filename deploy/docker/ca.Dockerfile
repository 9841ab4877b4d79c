# mesh-ca, the standalone SPIFFE CA.
# Build from the repository root: docker build -f deploy/docker/ca.Dockerfile -t mesh/mesh-ca:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mesh-ca --bin mesh-ca \
    && install -D target/release/mesh-ca /out/mesh-ca

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mesh-ca /usr/local/bin/mesh-ca
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/mesh-ca"]
