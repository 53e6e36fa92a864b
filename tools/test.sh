#!/usr/bin/env bash
# The README's test command: sets everything up (tools/setup.sh, idempotent), then runs the
# gates and the whole test suite with every backend and the ROS 2 node compiled in (ROS 2
# Kilted), then builds the node against ROS 2 Jazzy (LTS) and runs the node and replay
# suites there too. With a sourced ROS 2 install, that install is the one distro tested.
# POLICY_NODE_TEST_JAZZY=0 skips the Jazzy part.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ld_before="${LD_LIBRARY_PATH:-}"
path_before="$PATH"
tools/setup.sh
# shellcheck disable=SC1091
source .venv/policy_node.env
jazzy=0
if [ "$POLICY_NODE_ROS_FROM_VENV" != 1 ]; then
  echo "[test] the ROS 2 Jazzy leg is left out: a sourced ROS 2 install (ROS_DISTRO=${ROS_DISTRO:-?}) is the one distro tested"
elif [ "${POLICY_NODE_TEST_JAZZY:-1}" != 1 ]; then
  echo "[test] the ROS 2 Jazzy leg is left out: POLICY_NODE_TEST_JAZZY=${POLICY_NODE_TEST_JAZZY}"
else
  jazzy=1
  # The Jazzy wheels in .venv-jazzy; then the default (Kilted) again for .cargo/config.toml.
  POLICY_NODE_ROS_DISTRO=jazzy tools/setup.sh
  tools/setup.sh
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "clippy, all features"
cargo clippy --all-targets --all-features -- -D warnings
step "clippy without ros (the inference core builds ROS-free)"
cargo clippy --all-targets --no-default-features --features onnx -- -D warnings
step "docs (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features
step "tests without ros"
cargo test --no-default-features --features onnx --lib --test export_cases --test inference_model --test param_cases --test policyctl --test manifest_cases --test package_loop --test chunk_blend --test control_loop --test io_map
step "tests, all features (ROS 2 Kilted)"
cargo test --all-features

if ((jazzy)); then
  # Its own build directory (target/jazzy, set by the environment file) and only what the
  # node and replay need: the ROS-free dependencies compile again there, r2r's bindings are
  # Jazzy's.
  step "ROS 2 Jazzy: build, node and replay tests (features ros,onnx; target/jazzy)"
  (
    export LD_LIBRARY_PATH="$ld_before" PATH="$path_before"
    # shellcheck disable=SC1091
    source .venv-jazzy/policy_node.env
    started=$SECONDS
    "$POLICY_NODE_VENV/bin/python" -c \
      'import importlib.metadata as m; print("test peers: rclpy", m.version("ros-jazzy-rclpy"), "(Jazzy)")'
    cargo test --no-default-features --features ros,onnx --test node_integration --test replay_live --test io_map_ros
    echo "ROS 2 Jazzy part: $((SECONDS - started)) s"
  )
fi
