# mesh-demo-app, the book-shop demo service (listens on DEMO_LISTEN).
# Build from the repository root: docker build -f deploy/docker/demo-app.Dockerfile -t mesh/mesh-demo-app:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mesh-e2e --bin mesh-demo-app \
    && install -D target/release/mesh-demo-app /out/mesh-demo-app

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mesh-demo-app /usr/local/bin/mesh-demo-app
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/mesh-demo-app"]
