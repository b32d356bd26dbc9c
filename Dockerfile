# The operator image: a static-ish Rust build on a minimal, non-root runtime.
#   docker build -t ghcr.io/kappa-dev/kappa-operator:0.1.0 .
FROM rust:1.89-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --profile dist --locked -p kappa-operator --bin kappa-operator \
 && cp target/dist/kappa-operator /kappa-operator

# distroless cc: glibc, libgcc and OpenSSL, no shell; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /kappa-operator /usr/local/bin/kappa-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kappa-operator"]
CMD ["run"]
