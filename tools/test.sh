#!/usr/bin/env bash
# The README's test command: sets everything up (tools/setup.sh, idempotent), then runs the
# gates and the whole test suite with every backend and the ROS 2 node compiled in.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tools/setup.sh
# shellcheck disable=SC1091
source .venv/policy_node.env
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
cargo test --no-default-features --features onnx --lib --test export_cases --test inference_model --test param_cases --test policyctl --test manifest_cases --test package_loop --test chunk_blend
step "tests, all features"
cargo test --all-features
