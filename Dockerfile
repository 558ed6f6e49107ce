# syntax=docker/dockerfile:1.7
# One image for every role; the command picks it:
#   docker run IMAGE                      sluice serve (the embedded all-in-one)
#   docker run IMAGE scheduler|worker|api  one role of a scaled deployment
# Build: docker build -t sluice .   (docs/deploy.md)

# --- dependencies: rebuilt only when Cargo.toml or Cargo.lock change --------
FROM rust:1.95-slim-bookworm AS deps
WORKDIR /src
# No debug info, symbols stripped: the runtime image carries the binary alone.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
COPY Cargo.toml Cargo.lock ./
# Empty targets with the manifest's paths, so `cargo build` compiles every
# dependency into this layer.
RUN mkdir -p src tests/it \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tests/it/main.rs \
 && cargo build --release --locked --bin sluice \
 && rm -rf src tests target/release/sluice target/release/deps/sluice-* target/release/.fingerprint/sluice-*

# --- the binary --------------------------------------------------------------
FROM deps AS build
COPY src ./src
COPY tests/it/main.rs ./tests/it/main.rs
RUN cargo build --release --locked --bin sluice \
 && mkdir -p /out/data /out/project \
 && cp target/release/sluice /out/sluice

# --- runtime: glibc and libgcc only, no shell, no package manager -----------
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Sluice data-pipeline platform: serve, scheduler, worker or api" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/sluice /usr/local/bin/sluice
# Writable by the non-root user and by group 0, so the image also runs under
# an arbitrary UID (OpenShift's restricted SCC runs as a random UID in group 0).
COPY --from=build --chown=65532:0 --chmod=0775 /out/data /data
COPY --from=build --chown=65532:0 --chmod=0775 /out/project /project
WORKDIR /project
# The project is /project (mount it, or build FROM this image and COPY it in);
# the API listens on 8080 and the scheduler and worker answer /healthz and
# /readyz there; logs are JSON lines on stdout.
ENV SLUICE_PROJECT=/project \
    SLUICE_LISTEN=0.0.0.0:8080 \
    SLUICE_HEALTH_ADDR=0.0.0.0:8080 \
    SLUICE_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz \
    SLUICE_LOG_FORMAT=json \
    SLUICE_NO_PROGRESS=1
USER 65532:0
EXPOSE 8080
# No curl in a distroless image: the binary checks itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/sluice", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
