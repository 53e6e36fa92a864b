#!/usr/bin/env bash
# Shows that policy_node builds and installs as a ROS 2 package with colcon, where `ros2 run`
# and `ros2 launch` look:
#   - installs colcon-common-extensions + colcon-ros-cargo (ament_cargo build type, through
#     the `cargo-ament-build` program) into .venv,
#   - colcon-builds the package in a temporary workspace (src/policy_node -> this repository),
#   - asserts install/policy_node/lib/policy_node/policy_node, share/policy_node/{launch,
#     config,package.xml} and the ament index marker exist, and that
#     ament_index_python.packages.get_package_share_directory('policy_node') resolves.
#
# Usage: tools/colcon_check.sh [--keep]
#   POLICY_NODE_COLCON_FEATURES  cargo features (default onnx,openvino,ros: no libtorch build;
#                                "default" builds the default features)
#   POLICY_NODE_COLCON_BUILD     colcon build base = cargo target dir (default
#                                target/colcon-check, kept, so a second run is incremental)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
keep=0
[ "${1:-}" = "--keep" ] && keep=1
log() { printf '[colcon_check] %s\n' "$*" >&2; }

env_file="$root/.venv/policy_node.env"
[ -f "$env_file" ] || { log "$env_file is missing: run tools/setup.sh first"; exit 1; }
# shellcheck disable=SC1090
source "$env_file"  # venv on PATH (colcon, cargo-ament-build), r2r's build environment

if ! "$root/.venv/bin/python" -c 'import colcon_ros_cargo' 2>/dev/null; then
  log "installing colcon-common-extensions==0.3.0 colcon-ros-cargo==0.2.0 into .venv"
  "$root/.venv/bin/pip" install -q --disable-pip-version-check \
    colcon-common-extensions==0.3.0 colcon-ros-cargo==0.2.0
fi
command -v cargo-ament-build >/dev/null || { log "cargo-ament-build is not on PATH"; exit 1; }

features="${POLICY_NODE_COLCON_FEATURES:-onnx,openvino,ros}"
cargo_args=(--release)
if [ "$features" != "default" ]; then
  # One --features per feature: cargo-ament-build matches each bin's required-features
  # against the --features values without splitting them at commas (a comma list would
  # build policy_node but not install it).
  cargo_args+=(--no-default-features)
  IFS=, read -ra feature_list <<<"$features"
  for f in "${feature_list[@]}"; do cargo_args+=(--features "$f"); done
fi
build_base="${POLICY_NODE_COLCON_BUILD:-$root/target/colcon-check}"
ws="$(mktemp -d /tmp/policy_node_colcon.XXXXXX)"
cleanup() { if ((keep)); then log "workspace kept: $ws"; else rm -rf "$ws"; fi; }
trap cleanup EXIT
mkdir -p "$ws/src" "$build_base"
ln -s "$root" "$ws/src/policy_node"
# The interface package (the RunPolicy action) as its own source folder: colcon does not look
# for packages inside a package, and builds this one first (policy_node depends on it).
ln -s "$root/interfaces" "$ws/src/policy_node_interfaces"

log "colcon build in $ws (build base $build_base, cargo ${cargo_args[*]})"
start=$(date +%s)
(
  cd "$ws"
  colcon --log-base "$ws/log" build \
    --build-base "$build_base" --install-base "$ws/install" \
    --event-handlers console_direct+ \
    --packages-select policy_node_interfaces policy_node \
    --cargo-args "${cargo_args[@]}"
)
log "colcon build took $(( $(date +%s) - start )) s"

install="$ws/install"
fail=0
check() {
  if [ -e "$1" ]; then log "ok: ${1#"$ws"/}"; else log "MISSING: ${1#"$ws"/}"; fail=1; fi
}
check "$install/policy_node/lib/policy_node/policy_node"
check "$install/policy_node/lib/policy_node/policyctl"
check "$install/policy_node/share/policy_node/package.xml"
check "$install/policy_node/share/policy_node/launch/policy_node.launch.py"
check "$install/policy_node/share/policy_node/config/policy_node.yaml"
check "$install/policy_node/share/ament_index/resource_index/packages/policy_node"
check "$install/policy_node_interfaces/share/ament_index/resource_index/packages/policy_node_interfaces"
[ -x "$install/policy_node/lib/policy_node/policy_node" ] || { log "policy_node is not executable"; fail=1; }

# Resolve the package as `ros2 run` / `ros2 launch` do: through the ament index on
# AMENT_PREFIX_PATH, after sourcing the workspace's setup script.
share="$(
  set +u
  # shellcheck disable=SC1091
  source "$install/setup.bash"
  set -u
  "$root/.venv/bin/python" -c "
from ament_index_python.packages import get_package_share_directory, get_package_prefix
print(get_package_share_directory('policy_node'))
"
)" || { log "get_package_share_directory('policy_node') failed"; fail=1; }
if [ -n "${share:-}" ]; then
  log "get_package_share_directory('policy_node') = $share"
  [ "$share" = "$install/policy_node/share/policy_node" ] || { log "unexpected share directory"; fail=1; }
fi

# The installed binary runs (no ROS graph needed for --help).
"$install/policy_node/lib/policy_node/policy_node" --help | head -n 1 >&2 || fail=1

if ((fail)); then log "FAILED"; exit 1; fi
log "PASSED: policy_node builds with colcon and installs where ros2 run / ros2 launch look"
