#!/usr/bin/env bash
# Closed-loop evaluation on the simulated ALOHA (gym-aloha's bimanual transfer-cube task in
# MuJoCo): the success rate of a policy package, run three ways on the same cube poses.
#
# Usage: tools/sim_eval.sh --mode reference|lockstep|realtime [--episodes N] [--seed S]
#                          --json OUT [--video FILE] [--package DIR] [--trajectories OUT.npz]
#                          [--node-bin FILE] [--camera WxH] [-p NAME:=VALUE]... [--no-build]
#   reference  the package run by physicalai 0.3.0's own runtime in a plain Python loop
#              (tools/sim/reference_eval.py): the oracle
#   lockstep   policy_node (config/sim_aloha.yaml, config/io_map_sim_aloha.yaml) driven by the
#              bridge on sim time: the bridge steps when the tick's four commands are in,
#              the node refills synchronously; the result does not depend on machine speed
#   realtime   policy_node on wall clock with asynchronous refill; the simulator runs at
#              50 Hz whatever the node does, as a robot would
#   Episode i uses cube seed S + i in every mode (default S 0, N 50). The JSON:
#   {"mode", "seed", "episodes": [{"seed", "success", "max_reward", "steps"}],
#    "success_rate", ...}; the node modes add the node's tick figures and the bridge's
#   refused and held commands. --video: a GIF of the first episode, the top camera beside
#   the commanded and actual joints (rendering each step: in realtime mode it slows the
#   simulator below 50 Hz; take videos in lockstep). --package: default tools/sim/policy (ONNX).
#   --node-bin: the policy_node binary (default target/release/policy_node, built with the
#   ros,onnx,openvino features when missing, unless --no-build). --camera WxH: the bridge also
#   publishes the top camera on /cameras/top/image_raw (sensor_msgs/Image, rgb8; node modes).
# Runs on a private ROS_DOMAIN_ID (kept if already set) with localhost discovery.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="" episodes=50 seed=0 json="" video="" package="$root/tools/sim/policy" traj="" node_bin="" build=1
extra=()
while (($#)); do
  case "$1" in
    --mode) mode="$2"; shift 2 ;;
    --episodes) episodes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    --video) video="$2"; shift 2 ;;
    --package) package="$(cd "$2" && pwd)"; shift 2 ;;
    --trajectories) traj="$2"; shift 2 ;;
    --node-bin) node_bin="$2"; shift 2 ;;
    -p) extra+=(-p "$2"); shift 2 ;;
    --camera) extra+=(--publish-camera "$2"); shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "sim_eval.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$mode" in reference|lockstep|realtime) ;; *) echo "sim_eval.sh: --mode must be reference, lockstep or realtime (see --help)" >&2; exit 2 ;; esac
[ -n "$json" ] || { echo "sim_eval.sh: --json OUT is required" >&2; exit 2; }
[ -f "$package/manifest.json" ] || { echo "sim_eval.sh: $package has no manifest.json (a policy package)" >&2; exit 2; }
if [ ! -f .venv/policy_node.env ]; then
  ((build)) || { echo "sim_eval.sh: .venv/policy_node.env is missing: run tools/setup.sh" >&2; exit 1; }
  tools/setup.sh
fi
# shellcheck disable=SC1091
source .venv/policy_node.env
export MUJOCO_GL="${MUJOCO_GL:-egl}"
py="$POLICY_NODE_VENV/bin/python"
args=(--episodes "$episodes" --seed "$seed" --json "$json")
[ -n "$video" ] && args+=(--video "$video")
[ -n "$traj" ] && args+=(--trajectories "$traj")
if [ "$mode" = reference ]; then
  exec "$py" tools/sim/reference_eval.py --package "$package" "${args[@]}"
fi
if [ -z "$node_bin" ]; then
  node_bin="$root/target/release/policy_node"
  if [ ! -x "$node_bin" ] && ((build)); then
    echo "[sim_eval] building $node_bin (release; features ros,onnx,openvino)" >&2
    cargo build --release --no-default-features --features ros,onnx,openvino --bin policy_node
  fi
fi
[ -x "$node_bin" ] || { echo "sim_eval.sh: no policy_node binary at $node_bin (--node-bin)" >&2; exit 1; }
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 100 + RANDOM % 100 ))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
exec "$py" tools/sim/node_eval.py --mode "$mode" --package "$package" --node-bin "$node_bin" "${args[@]}" "${extra[@]}"
