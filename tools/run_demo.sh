#!/usr/bin/env bash
# The main job: set up, build, and run policy_node on the bundled demo policy
# (tests/fixtures/act_tiny/onnx) against a simulated robot that plays the synthetic
# demonstration (tools/synthetic_demo.py: camera images + joint states at 30 Hz, over DDS),
# then print what happened: commands published, rate achieved, latency summary.
#
# Usage: tools/run_demo.sh [--duration S] [--export DIR] [--rate HZ] [-p NAME:=VALUE]... [--no-build]
#   --duration S   seconds of demo playback after the first command (default 10)
#   --export DIR   export directory (default tests/fixtures/act_tiny/onnx)
#   --rate HZ      control_rate_hz (default 30)
#   -p NAME:=VALUE any other node parameter (e.g. -p refill_mode:=sync), repeatable
#   --no-build     skip setup and build (use the existing target/release binaries, or
#                  the binary named by POLICY_NODE_BIN)
# The node runs on a private ROS_DOMAIN_ID (kept if already set) with localhost discovery;
# its full log is kept in the printed directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
duration=10
export_dir="$root/tests/fixtures/act_tiny/onnx"
rate=30.0
build=1
extra=()
while (($#)); do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --export) export_dir="$(cd "$2" && pwd)"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    -p) extra+=(-p "$2"); shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "run_demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '[run_demo] %s\n' "$*" >&2; }

if ((build)); then
  say "setting up (tools/setup.sh; idempotent)"
  tools/setup.sh
  say "building the release binaries (tools/cargo build --release --bins)"
  start=$(date +%s)
  tools/cargo build --release --bins
  say "built in $(( $(date +%s) - start )) s"
fi
# shellcheck disable=SC1091
source "$root/.venv/policy_node.env"
node_bin="${POLICY_NODE_BIN:-$root/target/release/policy_node}"
[ -x "$node_bin" ] || { say "$node_bin is missing (run without --no-build)"; exit 1; }

run_dir="$(mktemp -d /tmp/policy_node_demo.XXXXXX)"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 100 + RANDOM % 100 ))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_LOG_DIR="$run_dir/ros_log"
export RCUTILS_COLORIZED_OUTPUT=0
node_log="$run_dir/policy_node.log"

say "starting policy_node on $export_dir at $rate Hz (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, log $node_log)"
"$node_bin" --ros-args --params-file config/policy_node.yaml \
  -p "export_dir:=$export_dir" -p "control_rate_hz:=$rate" ${extra[@]+"${extra[@]}"} >"$node_log" 2>&1 &
node_pid=$!
stop_node() {
  if kill -0 "$node_pid" 2>/dev/null; then
    kill -INT "$node_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$node_pid" 2>/dev/null && kill -KILL "$node_pid" 2>/dev/null
  fi
  return 0
}
trap stop_node EXIT

for _ in $(seq 600); do
  grep -q "ready:" "$node_log" && break
  if ! kill -0 "$node_pid" 2>/dev/null; then
    say "policy_node exited during start-up:"; cat "$node_log" >&2; exit 1
  fi
  sleep 0.1
done
grep -q "ready:" "$node_log" || { say "policy_node did not get ready in 60 s:"; cat "$node_log" >&2; exit 1; }
grep "ready:" "$node_log" | sed 's/^/  /' >&2

say "playing the synthetic demo as a simulated robot (joint states + rgb8 camera at 30 Hz) for $duration s"
peer_out="$run_dir/peer.json"
"$root/.venv/bin/python" tests/peers/node_peer.py demo \
  --config "{\"duration_s\": $duration}" | sed -n 's/^RESULT //p' >"$peer_out"

kill -INT "$node_pid"
wait "$node_pid" && node_rc=0 || node_rc=$?
trap - EXIT
summary="$(grep "stopped on SIGINT" "$node_log" | sed 's/^.*\]: //' || true)"

"$root/.venv/bin/python" - "$peer_out" "$node_rc" "$summary" "$rate" <<'EOF'
import json, sys
peer = json.load(open(sys.argv[1]))
node_rc, summary, rate = int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
if not peer.get("ok"):
    print(f"[run_demo] the simulated robot failed: {peer.get('error')}", file=sys.stderr)
    sys.exit(1)
d = peer.get("diagnostics") or {}
v = d.get("values", {})
print()
print("policy_node demo: what happened")
print(f"  policy            {v.get('backend', '?')} on {v.get('device', '?')}, refill {v.get('refill_mode', '?')} "
      f"({v.get('refill_ahead_steps', '?')} step(s) ahead)")
print(f"  robot sent        {peer['joint_msgs_sent']} joint states, {peer['image_msgs_sent']} camera images")
print(f"  commands received {peer['commands']} in {peer['duration_s']:.1f} s = {peer['rate_hz']:.2f} Hz "
      f"(control_rate_hz {rate:g})")
print(f"  inference         latency last/mean/max {v.get('latency_last_ms', '?')}/{v.get('latency_mean_ms', '?')}/"
      f"{v.get('latency_max_ms', '?')} ms over {v.get('inferences', '?')} chunk(s)")
print(f"  ticks             stale {v.get('stale_ticks', '?')}, overruns {v.get('overruns', '?')}, "
      f"errors {v.get('errors', '?')} (/diagnostics, level {d.get('level', '?')}: {d.get('message', '?')})")
print(f"  node summary      {summary or '(none)'}")
print(f"  node exit status  {node_rc}")
sys.exit(0 if node_rc == 0 and peer["commands"] > 0 else 1)
EOF
say "full node log: $node_log"
