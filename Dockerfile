# syntax=docker/dockerfile:1
# shoal's container image: the one binary on a minimal glibc base (distroless: no shell, no
# package manager), run as a non-root user (nonroot, uid 65532). From the repository root:
#   docker build -t shoal .
#   docker run --rm shoal --help
# dist/kubernetes/ runs it as shoal:latest; push it to your registry and change the image there.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The binary without its debug info (scripts/build-release). Its shoal.debug, which lets
# backtraces name files and lines, is left out of the image to keep it small; to ship it, copy
# it from /usr/local/bin in this stage to /usr/bin beside the binary.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-release \
    && cp target/release/shoal target/release/shoal.debug /usr/local/bin/

# Debian 12 like the builder, so the glibc the binary was linked against is there.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/shoal /usr/bin/shoal
USER nonroot
# The tracker's and the agent's default ports.
EXPOSE 7700 7701
ENTRYPOINT ["/usr/bin/shoal"]
CMD ["--help"]
