# ringloop in a container. Base images: rust:1.95-slim-trixie (build and test) and
# debian:trixie-slim (runtime); docs/containers.md names them, and .ci/run checks this file with
# ci/check-dockerfile.
#
# Docker 25+ refuses io_uring in its default seccomp profile, so anything that *runs* ringloop
# needs ci/seccomp-io_uring.json. That is why the test stage builds the tests and runs them
# as its command (docker run takes --security-opt; docker build's RUN steps do not):
#
#   docker build --target test -t ringloop-test .
#   docker run --rm --security-opt seccomp=ci/seccomp-io_uring.json ringloop-test
#
#   docker build -t ringloop-echo .
#   docker run --rm -p 7878:7878 --security-opt seccomp=ci/seccomp-io_uring.json ringloop-echo

ARG RUST_IMAGE=rust:1.95-slim-trixie
ARG RUNTIME_IMAGE=debian:trixie-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
RUN rustup component add rustfmt clippy
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY tests ./tests
COPY bench ./bench
COPY ci ./ci
COPY .ci ./.ci
RUN cargo build --locked --release --examples

FROM build AS test
# Compiles the suite now; runs it (with lints) when the container starts.
RUN cargo test --locked --all-features --no-run
CMD ["sh", "-c", "cargo fmt --check && cargo clippy --locked --all-targets --all-features -- -D warnings && cargo test --locked --all-features"]

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /src/target/release/examples/echo_server /usr/local/bin/echo_server
# An unprivileged user: the loop needs no capability.
USER nobody
EXPOSE 7878
CMD ["echo_server", "--addr", "0.0.0.0:7878"]
