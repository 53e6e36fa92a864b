#!/usr/bin/env bash
# Sets up everything policy_node needs on a Debian 12 machine, idempotently:
#   - apt packages for bindgen (libclang) and linking (libpython3.11),
#   - .venv/ at the repository root with ONNX Runtime, OpenVINO, PyTorch (libtorch for tch),
#     rosbags, and the ROS 2 wheels of the chosen distro (unless a sourced ROS 2 install
#     already provides rclpy),
#   - the small fix-ups the wheels need (rmw_implementation shim, libopenvino_c.so link),
#   - the build environment (`source` it) and .cargo/config.toml (the same for plain
#     `cargo build` / `cargo test`),
#   - .venv-triton/ from Debian's own Python 3.11 with PyTriton (a real Triton Inference
#     Server) for the `remote` backend's tests and benchmarks (skip: POLICY_NODE_NO_TRITON=1),
#   - only with POLICY_NODE_LEROBOT=1: .venv-lerobot/ with LeRobot 0.6.1 on Python >= 3.12,
#     the reference for relative actions (tools/setup_lerobot.sh; about 2.9 GB to download).
# A second run only checks stamps and takes seconds.
#
# POLICY_NODE_SETUP=demo installs only what tools/run_demo.sh needs (ONNX Runtime, rosbags,
# PyYAML and the ROS 2 wheels: tools/requirements-demo.txt; no PyTorch, OpenVINO, physicalai,
# PyTriton): the first run of the demo on a fresh machine. A later full setup adds the rest.
#
# POLICY_NODE_ROS_DISTRO picks the ROS 2 wheels from PyPI (ignored when a ROS 2 install is
# sourced: that install wins):
#   kilted (default)  the Kilted wheels, in .venv next to the runtimes;
#                     environment in .venv/policy_node.env, builds in target/
#   jazzy             the Jazzy (LTS) wheels, in their own .venv-jazzy (they pin the same
#                     `ros-*` names as Kilted at other versions) with what the Python test
#                     peers need; the runtimes stay in .venv. Environment in
#                     .venv-jazzy/policy_node.env, builds in target/jazzy
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
log() { printf '[setup] %s\n' "$*" >&2; }

distro="${POLICY_NODE_ROS_DISTRO:-kilted}"
mode="${POLICY_NODE_SETUP:-full}"
case "$mode" in
  full) ;;
  demo) POLICY_NODE_NO_TRITON=1 ;;
  *) log "POLICY_NODE_SETUP must be full or demo, got \`$mode\`"; exit 2 ;;
esac
case "$distro" in
  kilted) ros_venv="$venv" ;;
  jazzy) ros_venv="$root/.venv-jazzy" ;;
  *) log "POLICY_NODE_ROS_DISTRO must be kilted or jazzy, got \`$distro\`"; exit 2 ;;
esac

# ---- apt -------------------------------------------------------------------------------
need_apt=()
apt_pkgs=(libclang-dev libpython3.11-dev pkg-config)
# .venv-triton: Debian's python3.11 with venv support and its shared libpython.
[ "${POLICY_NODE_NO_TRITON:-0}" = 1 ] || apt_pkgs+=(python3.11 python3.11-venv libpython3.11)
for pkg in "${apt_pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  log "installing apt packages: ${need_apt[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# ---- ROS 2: sourced install or wheels ----------------------------------------------------
ros_from_venv=1
if [ -n "${AMENT_PREFIX_PATH:-}" ]; then
  IFS=: read -ra prefixes <<<"$AMENT_PREFIX_PATH"
  for p in "${prefixes[@]}"; do
    case "$p" in "$venv" | "$root/.venv-jazzy") continue ;; esac
    if [ -e "$p/share/ament_index/resource_index/packages/rclpy" ]; then
      ros_from_venv=0
      log "using the sourced ROS 2 install at $p (ROS_DISTRO=${ROS_DISTRO:-?})"
      if [ -n "${POLICY_NODE_ROS_DISTRO:-}" ] && [ "${ROS_DISTRO:-}" != "$distro" ]; then
        log "POLICY_NODE_ROS_DISTRO=$distro is ignored: the sourced install wins"
      fi
      ros_venv="$venv"
      break
    fi
  done
fi

# ---- venvs -------------------------------------------------------------------------------
py="${POLICY_NODE_PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
# install VENV FILE...: pip-installs each requirements file whose content changed since it
# was last installed into VENV (a stamp per file), creating VENV first.
install() {
  local v="$1"; shift
  if [ ! -x "$v/bin/python" ]; then
    log "creating $v with $($py --version)"
    "$py" -m venv "$v"
  fi
  local todo=() f
  for f in "$@"; do
    [ "$(cat "$v/.stamps/$(basename "$f").sha256" 2>/dev/null)" = "$(sha256sum <"$f" | cut -d' ' -f1)" ] || todo+=("$f")
  done
  ((${#todo[@]})) || return 0
  local note=""
  [[ " ${todo[*]} " == *" tools/requirements.txt "* ]] && note="; the first install of tools/requirements.txt downloads ~5 GB and takes a few minutes"
  log "installing Python packages into $v (${todo[*]})$note"
  "$v/bin/pip" install -q --disable-pip-version-check "${todo[@]/#/-r}"
  mkdir -p "$v/.stamps"
  for f in "${todo[@]}"; do sha256sum <"$f" | cut -d' ' -f1 >"$v/.stamps/$(basename "$f").sha256"; done
}
if [ "$mode" = demo ]; then
  install "$venv" tools/requirements-demo.txt
else
  install "$venv" tools/requirements.txt
  # The closed-loop simulation (tools/sim/: gym-aloha, MuJoCo; ~60 MB).
  install "$venv" tools/requirements-sim.txt
  # openpi's client library, the reference the openpi tests talk to the same server with:
  # pure Python, installed without its pins (numpy<2 would downgrade the runtimes' numpy).
  if ! "$venv/bin/python" -c 'import importlib.metadata as m; assert m.version("openpi-client") == "0.1.2"' 2>/dev/null; then
    log "installing openpi-client 0.1.2 into $venv (--no-deps)"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps openpi-client==0.1.2
  fi
fi
if ((ros_from_venv)); then
  case "$distro" in
    kilted) install "$venv" tools/requirements-ros.txt tools/requirements-ros-interfaces.txt ;;
    jazzy) install "$ros_venv" tools/requirements-ros-jazzy.txt tools/requirements-peers.txt tools/requirements-ros-interfaces-jazzy.txt ;;
  esac
fi
# ---- the interface package (policy_node_interfaces: the RunPolicy action) ------------------
# Built with the distro's rosidl generators (from the venv above, or the sourced install) into
# a colcon-style prefix; r2r generates its Rust bindings from there (IDL_PACKAGE_FILTER below).
POLICY_NODE_IDL_VENV="$ros_venv" POLICY_NODE_ROS_DISTRO="$distro" "$root/tools/build_interfaces.sh"
case "$distro" in
  kilted) idl_prefix="$root/install/policy_node_interfaces" ;;
  jazzy) idl_prefix="$root/install/jazzy/policy_node_interfaces" ;;
esac
((ros_from_venv)) || idl_prefix="$root/install/policy_node_interfaces"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ros_site="$("$ros_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
pylibdir="$("$ros_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"

# ---- fix-ups -----------------------------------------------------------------------------
# OpenVINO's wheel ships only libopenvino_c.so.<ver>; the openvino crate looks for libopenvino_c.so.
ov_c="$(ls "$site"/openvino/libs/libopenvino_c.so.* 2>/dev/null | head -n1 || true)"
[ -n "$ov_c" ] && ln -sf "$(basename "$ov_c")" "$site/openvino/libs/libopenvino_c.so"
ort_lib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1 || true)"
ov_tok="$(ls "$site"/openvino_tokenizers/lib/libopenvino_tokenizers.so 2>/dev/null | head -n1 || true)"

env_file="$ros_venv/policy_node.env"
{
  echo "# generated by tools/setup.sh: build environment for policy_node"
  # The Python of the test peers (rclpy of this distro); the runtimes stay in .venv.
  echo "export POLICY_NODE_VENV='$ros_venv'"
  if [ "$ros_venv" != "$venv" ]; then
    echo "export PATH='$ros_venv/bin':'$venv/bin':\"\$PATH\""
  else
    echo "export PATH='$venv/bin':\"\$PATH\""
  fi
  echo "export LIBCLANG_PATH='/usr/lib/llvm-14/lib'"
  # tch links the libtorch inside the torch wheel (torch 2.13.0, C++11 ABI).
  echo "export LIBTORCH='$site/torch'"
  echo "export LIBTORCH_CXX11_ABI=1"
  echo "export POLICY_NODE_PYTHON_LIBDIR='$pylibdir'"
  echo "export IDL_PACKAGE_FILTER='std_msgs;sensor_msgs;geometry_msgs;builtin_interfaces;std_srvs;trajectory_msgs;diagnostic_msgs;nav_msgs;rosgraph_msgs;rcl_interfaces;action_msgs;unique_identifier_msgs;service_msgs;type_description_interfaces;lifecycle_msgs;policy_node_interfaces'"
  [ -n "$ort_lib" ] && echo "export POLICY_NODE_ORT_LIB='$ort_lib'"
  [ -n "$ov_c" ] && echo "export POLICY_NODE_OPENVINO_LIB='$ov_c'"
  [ -n "$ov_tok" ] && echo "export POLICY_NODE_OPENVINO_TOKENIZERS_LIB='$ov_tok'"
  if ((ros_from_venv)); then
    # The wheels ship no librmw_implementation.so (rcl links rmw_fastrtps_cpp directly) but r2r
    # links -lrmw_implementation: a shim prefix provides it.
    shim="$ros_venv/rmw_shim"
    mkdir -p "$shim/lib"
    ln -sf "$ros_venv/lib/librmw_fastrtps_cpp.so" "$shim/lib/librmw_implementation.so"
    libs="$idl_prefix/lib:$ros_venv/lib:$shim/lib"
    # The interface package's Python module (rclpy action clients in the tests) on the venv's path.
    ls -d "$idl_prefix"/lib/python3*/site-packages >"$ros_site/policy_node_interfaces.pth"
    for d in "$ros_site"/ros_*.libs; do [ -d "$d" ] && libs="$libs:$d"; done
    echo "export POLICY_NODE_ROS_FROM_VENV=1"
    echo "export POLICY_NODE_ROS_DISTRO=$distro"
    echo "export AMENT_PREFIX_PATH='$idl_prefix:$ros_venv'"
    case "$distro" in
      kilted) echo "export ROS_DISTRO=rolling  # r2r 0.9.7 rejects kilted; kilted headers follow rolling's layout" ;;
      jazzy)
        echo "export ROS_DISTRO=jazzy"
        # Its own build directory: r2r's generated bindings differ per distro.
        echo "export CARGO_TARGET_DIR=\"\${CARGO_TARGET_DIR:-$root/target/jazzy}\""
        ;;
    esac
    echo "export CMAKE_PREFIX_PATH='$shim'"
    echo "export POLICY_NODE_ROS_LIBS='$libs'"
    echo "export LD_LIBRARY_PATH='$libs':\"\${LD_LIBRARY_PATH:-}\""
  else
    echo "export POLICY_NODE_ROS_FROM_VENV=0"
    echo "# ROS 2 comes from the sourced install: AMENT_PREFIX_PATH, ROS_DISTRO, LD_LIBRARY_PATH as sourced,"
    echo "# with the interface package built here in front"
    echo "source '$idl_prefix.env'"
  fi
} >"$env_file"

# Plain `cargo build` / `cargo test` after setup: the same variables through .cargo/config.toml
# (never forced, so a user's own environment wins), for the distro set up last.
mkdir -p .cargo
(
  # shellcheck disable=SC1090
  source "$env_file"
  echo "# generated by tools/setup.sh (git-ignored): build environment for policy_node"
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    printf '[build]\ntarget-dir = "%s"\n' "$CARGO_TARGET_DIR"
  fi
  echo "[env]"
  for v in POLICY_NODE_VENV LIBCLANG_PATH LIBTORCH LIBTORCH_CXX11_ABI POLICY_NODE_PYTHON_LIBDIR \
           IDL_PACKAGE_FILTER POLICY_NODE_ORT_LIB POLICY_NODE_OPENVINO_LIB POLICY_NODE_OPENVINO_TOKENIZERS_LIB POLICY_NODE_ROS_FROM_VENV \
           AMENT_PREFIX_PATH ROS_DISTRO CMAKE_PREFIX_PATH POLICY_NODE_ROS_LIBS LD_LIBRARY_PATH; do
    val="${!v:-}"
    [ "$v" = LD_LIBRARY_PATH ] && val="${POLICY_NODE_ROS_LIBS:-}"
    if [ -n "$val" ]; then printf '%s = "%s"\n' "$v" "$val"; fi
  done
) >.cargo/config.toml
# ---- .venv-triton ------------------------------------------------------------------------
# PyTriton's tritonserver loads the system libpython3.11 for its Python backend: the venv must
# be made from Debian's /usr/bin/python3.11 (not a pyenv or other python3.11 first on PATH),
# whose libpython is that same library.
if [ "${POLICY_NODE_NO_TRITON:-0}" != 1 ]; then
  tvenv="$root/.venv-triton"
  tpy=/usr/bin/python3.11
  if [ -x "$tvenv/bin/python" ] && [ "$("$tvenv/bin/python" -c 'import sys; print(sys.base_prefix)' 2>/dev/null)" != /usr ]; then
    log "recreating $tvenv: it was not made from $tpy"
    rm -rf "$tvenv"
  fi
  if [ ! -x "$tvenv/bin/python" ]; then
    log "creating $tvenv with $($tpy --version) ($tpy)"
    "$tpy" -m venv "$tvenv"
  fi
  tstamp="$(sha256sum tools/requirements-triton.txt | cut -d' ' -f1)"
  if [ "$(cat "$tvenv/.requirements.sha256" 2>/dev/null)" != "$tstamp" ]; then
    log "installing PyTriton into $tvenv (tools/requirements-triton.txt, ~450 MB)"
    "$tvenv/bin/pip" install -q --disable-pip-version-check -r tools/requirements-triton.txt
    echo "$tstamp" >"$tvenv/.requirements.sha256"
  fi
fi
if [ "${POLICY_NODE_LEROBOT:-0}" = 1 ] && [ "$mode" = full ]; then
  "$root/tools/setup_lerobot.sh"
fi
if ((ros_from_venv)); then
  log "ready: ROS 2 $distro from wheels in $ros_venv, runtimes in $venv; build environment $env_file"
else
  log "ready: ROS 2 from the sourced install, runtimes in $venv; build environment $env_file"
fi
