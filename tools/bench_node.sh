#!/usr/bin/env bash
# Speed benchmark of policy_node (issue 3, "Speed"): the ACT-size export at 50 Hz against a
# simulated robot (tests/peers/node_peer.py bench: 14-joint sensor_msgs/JointState and a
# 640x480 rgb8 sensor_msgs/Image at 30 Hz, so the node's 640x480 -> 224x224 resize runs),
# once with asynchronous refill and once with synchronous refill (the chunk computed on the
# tick), one after the other in the same invocation. Prints the tick latency distribution
# (timer wake-up -> command published) of both side by side: all command ticks, ticks served
# from the queue, refill ticks, overrun ticks; tick/command counts, achieved rate, inference
# latency. Figures come from the node's exit summary (src/ros/stats.rs) and the peer's report.
#
# Usage: tools/bench_node.sh [--duration S] [--rate HZ] [--threads N] [--export DIR]
#                            [--modes "async sync"] [--bin PATH] [--build] [--no-rt]
#                            [--baseline PATH] [--live-every S] [--lifecycle [--rounds N]]
#                            [--bimanual-map] [-p NAME:=VALUE]...
#   --duration S   seconds measured after the first command, per mode (default 20)
#   --rate HZ      control_rate_hz (default 50)
#   --threads N    runtime CPU threads for inference (default 1: leaves a core for the tick)
#   --export DIR   export directory (default fixtures-large/act_full/onnx; created with
#                  tools/make_fixture.py --large when it is the default and missing)
#   --modes LIST   refill modes to run, in order (default "async sync")
#   --bin PATH     policy_node binary (default $POLICY_NODE_BIN, else
#                  target/bench/release/policy_node, else target/release/policy_node)
#   --build        build that binary first (CARGO_TARGET_DIR=target/bench, release,
#                  features onnx,openvino,ros)
#   --no-rt        run the node without CAP_SYS_NICE (setpriv), so its control and spin
#                  threads stay at normal priority: the "before" of src/ros/node.rs's
#                  SCHED_FIFO (the node logs which one it got)
#   --baseline PATH  also run every mode with this policy_node binary (e.g. built from an
#                  earlier commit), before the one under test, and print the ratio of their
#                  tick latency percentiles (same machine, same run)
#   --bimanual-map also run every mode wired through an I/O map, right after the flat run:
#                  the joints from two JointState topics (/left, /right: half each), the
#                  action on four channels (each half's arm and its last joint as a gripper
#                  in other units), and print the ratio of their tick latency percentiles
#                  (the map's cost, same binary, same run)
#   --record       also run every mode recording (episode_mode goal, one ~/run_policy goal with
#                  record: true for the whole window, record_dir in the run directory), right
#                  after the plain run, with joint states at --joint-hz; prints the ratio of
#                  their queue-served tick p99 (the recording's cost, same binary, same run)
#                  and the recording's messages and drops
#   --joint-hz HZ  joint states at this rate instead of with each camera frame (30 Hz)
#   --live-every S the robot peer sets a live parameter (max_observation_age_ms, alternating
#                  500 / 501) through rcl_interfaces every S seconds while measuring
#   --lifecycle    instead: the managed-node cycle on the export, with autostart false:
#                  configure, activate (to the first command), deactivate, cleanup, --rounds N
#                  times (default 3): each call's time, the node's load / warm-up split and
#                  its resident memory after each step
#   -p NAME:=VALUE any other node parameter, for every mode (repeatable)
# Runs on a private ROS_DOMAIN_ID (kept if already set) with localhost discovery; the logs
# stay in the printed directory. Exit status 0 when every mode ran and published commands
# (the targets are reported, not enforced).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
duration=20
rate=50.0
threads=1
export_dir="$root/fixtures-large/act_full/onnx"
default_export=1
modes="async sync"
node_bin="${POLICY_NODE_BIN:-}"
build=0
rt=1
extra=()
baseline=""
live_every=0
lifecycle=0
rounds=3
bimanual=0
record=0
joint_hz=0
while (($#)); do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --export) export_dir="$(cd "$2" && pwd)"; default_export=0; shift 2 ;;
    --modes) modes="$2"; shift 2 ;;
    --bin) node_bin="$2"; shift 2 ;;
    --build) build=1; shift ;;
    --no-rt) rt=0; shift ;;
    -p) extra+=(-p "$2"); shift 2 ;;
    --baseline) baseline="$2"; shift 2 ;;
    --live-every) live_every="$2"; shift 2 ;;
    --lifecycle) lifecycle=1; shift ;;
    --bimanual-map) bimanual=1; shift ;;
    --record) record=1; shift ;;
    --joint-hz) joint_hz="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    -h|--help) sed -n '2,51p' "$0"; exit 0 ;;
    *) echo "bench_node.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '[bench_node] %s\n' "$*" >&2; }
py="$root/.venv/bin/python"

if ((build)); then
  say "building policy_node (release, onnx,openvino,ros) into target/bench"
  CARGO_TARGET_DIR="$root/target/bench" tools/cargo build --release --no-default-features \
    --features onnx,openvino,ros --bin policy_node
  node_bin="${node_bin:-$root/target/bench/release/policy_node}"
fi
if [ -z "$node_bin" ]; then
  node_bin="$root/target/bench/release/policy_node"
  [ -x "$node_bin" ] || node_bin="$root/target/release/policy_node"
fi
[ -x "$node_bin" ] || { say "$node_bin is missing (run with --build)"; exit 1; }
if [ ! -f "$export_dir/metadata.yaml" ]; then
  ((default_export)) || { say "$export_dir has no metadata.yaml"; exit 1; }
  say "creating the ACT-size fixture (tools/make_fixture.py --large)"
  "$py" tools/make_fixture.py --large
fi
# shellcheck disable=SC1091
source "$root/.venv/policy_node.env"

# The model's state length and image size, and the joint names (metadata, else joint1..N).
read -r n_joints img_h img_w image_key joint_list < <("$py" - "$export_dir/metadata.yaml" <<'EOF'
import sys, yaml
m = yaml.safe_load(open(sys.argv[1]))
shapes = m.get("input_shapes") or {}
state = next((v for k, v in shapes.items() if k.split(".")[-1] == "state"), [14])
image_key, image = next(((k, v) for k, v in shapes.items() if "image" in k), ("images", [3, 224, 224]))
n = int(state[-1])
names = m.get("joint_names") or [f"joint{i + 1}" for i in range(n)]
print(n, image[-2], image[-1], image_key, "[" + ", ".join(names) + "]")
EOF
)

run_dir="$(mktemp -d /tmp/policy_node_bench.XXXXXX)"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 100 + RANDOM % 100 ))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_LOG_DIR="$run_dir/ros_log"
export RCUTILS_COLORIZED_OUTPUT=0
say "binary $node_bin; export $export_dir (state $n_joints, images 3x${img_h}x${img_w}); camera 640x480 rgb8 at 30 Hz"
say "control_rate_hz $rate, threads $threads, $duration s per mode, modes: $modes; ROS_DOMAIN_ID=$ROS_DOMAIN_ID; logs in $run_dir"

node_pid=
stop_node() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -INT "$node_pid" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$node_pid" 2>/dev/null && kill -KILL "$node_pid" 2>/dev/null
  fi
  return 0
}
trap stop_node EXIT

if ((lifecycle)); then
  params="$run_dir/params_lifecycle.yaml"
  cat >"$params" <<EOF
policy_node:
  ros__parameters:
    export_dir: "$export_dir"
    control_rate_hz: $rate
    joint_names: $joint_list
    camera_topics: [image_raw]
    threads: $threads
    autostart: false
EOF
  log="$run_dir/node_lifecycle.log"
  say "[lifecycle] starting policy_node unconfigured (log $log); $rounds rounds"
  "$node_bin" --ros-args --params-file "$params" ${extra[@]+"${extra[@]}"} >"$log" 2>&1 &
  node_pid=$!
  trap stop_node EXIT
  cfg="{\"node_pid\": $node_pid, \"rounds\": $rounds, \"joints\": $n_joints, \"cameras\": [{\"topic\": \"image_raw\", \"camera\": \"top\", \"h\": 480, \"w\": 640}]}"
  peer_out="$run_dir/peer_lifecycle.json"
  "$py" tests/peers/node_peer.py lifecycle_bench --config "$cfg" | sed -n 's/^RESULT //p' >"$peer_out" || true
  stop_node
  node_pid=
  trap - EXIT
  "$py" - "$log" "$peer_out" <<'EOF'
import json, re, sys
log, peer = open(sys.argv[1], errors="replace").read(), json.load(open(sys.argv[2]))
if not peer.get("ok"):
    sys.exit(f"peer failed: {peer.get('error')}")
node = [tuple(float(x) for x in m) for m in re.findall(r"configured in ([\d.]+) ms \(load ([\d.]+) ms, warm-up ([\d.]+) ms\)", log)]
print()
print("policy_node lifecycle: configure -> active (times in ms; memory: resident set of the node, MB)")
head = ["round", "configure", "node:total", "  load", "  warm-up", "activate", "to 1st cmd", "cleanup", "RSS unconf", "RSS conf", "RSS cleaned"]
print("".join(f"{h:>12}" for h in head))
for i, r in enumerate(peer["rounds"]):
    total, load, warm = node[i] if i < len(node) else (float("nan"),) * 3
    row = [i + 1, r["configure_s"] * 1e3, total, load, warm, r["activate_s"] * 1e3, r["to_first_command_s"] * 1e3,
           r["cleanup_s"] * 1e3, r["rss_unconfigured_mb"], r["rss_configured_mb"], r["rss_cleaned_up_mb"]]
    print("".join(f"{v:>12}" if isinstance(v, int) else f"{v:>12.1f}" for v in row))
print("configure = the ~/change_state call seen by the peer; node:total = load + warm-up + subscriptions and publisher")
print("to 1st cmd = from the configure request to the first command received (configure + activate + first chunk)")
EOF
  say "logs: $run_dir"
  exit 0
fi

peer_cfg="{\"duration_s\": $duration, \"joints\": $n_joints, \"joint_hz\": $joint_hz, \"live_param_every_s\": $live_every, \"cameras\": [{\"topic\": \"image_raw\", \"camera\": \"top\", \"h\": 480, \"w\": 640}]}"
if ((bimanual)); then
  # The same joints (joint1..N, as the peer names them) split in two halves, each half's
  # last joint a gripper commanded in thousandths.
  map_file="$run_dir/io_map_bimanual.yaml"
  "$py" - "$n_joints" "$image_key" >"$map_file" <<'EOF'
import sys
n, image = int(sys.argv[1]), sys.argv[2]
h = n // 2
left, right = list(range(h)), list(range(h, n))
sel = lambda idx: "[" + ", ".join(f"position.joint{i + 1}" for i in idx) + "]"
ids = lambda idx: "[" + ", ".join(str(i) for i in idx) + "]"
print(f"""inputs:
  state:
    - {{topic: /left/joint_states, type: sensor_msgs/msg/JointState, select: {sel(left)}}}
    - {{topic: /right/joint_states, type: sensor_msgs/msg/JointState, select: {sel(right)}}}
  {image}: {{topic: image_raw}}
outputs:
  - {{topic: /left_arm/commands, type: std_msgs/msg/Float64MultiArray, action: {ids(left[:-1])}}}
  - {{topic: /left_gripper/commands, type: std_msgs/msg/Float64MultiArray, action: [{left[-1]}], scale: 1000.0}}
  - {{topic: /right_arm/commands, type: std_msgs/msg/Float64MultiArray, action: {ids(right[:-1])}}}
  - {{topic: /right_gripper/commands, type: std_msgs/msg/Float64MultiArray, action: [{right[-1]}], scale: 1000.0}}""")
EOF
  half=$((n_joints / 2))
  map_peer_cfg="{\"duration_s\": $duration, \"joints\": $n_joints, \"live_param_every_s\": $live_every, \"command_topic\": \"/left_arm/commands\", \"joint_topics\": [{\"topic\": \"/left/joint_states\", \"count\": $half}, {\"topic\": \"/right/joint_states\", \"count\": $((n_joints - half))}], \"cameras\": [{\"topic\": \"image_raw\", \"camera\": \"top\", \"h\": 480, \"w\": 640}]}"
fi
launcher=()
((rt)) || launcher=(setpriv --bounding-set=-sys_nice --inh-caps=-sys_nice)
results=()
runs=()
for mode in $modes; do
  [ -n "$baseline" ] && runs+=("$mode|$baseline|$mode (baseline)")
  runs+=("$mode|$node_bin|$mode")
  ((bimanual)) && runs+=("$mode|$node_bin|$mode (io_map)")
  ((record)) && runs+=("$mode|$node_bin|$mode (record)")
done
for run in "${runs[@]}"; do
  IFS='|' read -r mode bin label <<<"$run"
  tag="${label// /_}"; tag="${tag//[()]/}"
  params="$run_dir/params_$tag.yaml"
  if [[ "$label" == *"(io_map)" ]]; then
    wiring="io_map: \"$map_file\""
    cfg_for_run="$map_peer_cfg"
  elif [[ "$label" == *"(record)" ]]; then
    wiring="joint_names: $joint_list
    camera_topics: [image_raw]
    episode_mode: goal
    record_dir: \"$run_dir/episodes\""
    cfg_for_run="${peer_cfg%\}}, \"record\": true}"
  else
    wiring="joint_names: $joint_list
    camera_topics: [image_raw]"
    cfg_for_run="$peer_cfg"
  fi
  cat >"$params" <<EOF
policy_node:
  ros__parameters:
    export_dir: "$export_dir"
    control_rate_hz: $rate
    $wiring
    threads: $threads
    refill_mode: $mode
    refill_ahead_steps: -1
    max_observation_age_ms: 500.0
EOF
  log="$run_dir/node_$tag.log"
  say "[$label] starting $bin (log $log)"
  ${launcher[@]+"${launcher[@]}"} "$bin" --ros-args --params-file "$params" ${extra[@]+"${extra[@]}"} >"$log" 2>&1 &
  node_pid=$!
  for _ in $(seq 1200); do
    grep -q "ready:" "$log" && break
    if ! kill -0 "$node_pid" 2>/dev/null; then say "[$mode] policy_node exited during start-up:"; cat "$log" >&2; exit 1; fi
    sleep 0.1
  done
  grep -q "ready:" "$log" || { say "[$mode] policy_node did not get ready in 120 s:"; cat "$log" >&2; exit 1; }
  grep -E "warm-up inference|priority|ready:" "$log" | sed 's/^.*\]: /  /' >&2
  say "[$mode] robot peer: ${duration} s after the first command"
  peer_out="$run_dir/peer_$tag.json"
  "$py" tests/peers/node_peer.py bench --config "$cfg_for_run" | sed -n 's/^RESULT //p' >"$peer_out" || true
  kill -INT "$node_pid"
  wait "$node_pid" && rc=0 || rc=$?
  node_pid=
  say "[$mode] node exit status $rc"
  results+=("$label" "$log" "$peer_out" "$rc")
done
trap - EXIT

"$py" - "$rate" "${results[@]}" <<'EOF' && status=0 || status=$?
import json, re, sys
rate = float(sys.argv[1])
args = sys.argv[2:]
runs = []
ok = True
num = r"([\d.]+)"
quad = r"([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+)"
for i in range(0, len(args), 4):
    mode, log, peer_file, rc = args[i:i + 4]
    text = open(log, errors="replace").read()
    line = next((l for l in text.splitlines() if "stopped on SIGINT" in l), "")
    try:
        peer = json.load(open(peer_file))
    except Exception as e:  # noqa: BLE001
        peer = {"ok": False, "error": f"no peer report: {e}"}
    r = {"mode": mode, "rc": int(rc), "peer": peer, "line": line}
    def grab(pattern, names):
        m = re.search(pattern, line)
        if m:
            for n, v in zip(names, m.groups()):
                r[n] = float(v) if "." in v else int(v)
    grab(r"(\d+) command\(s\) published on .+? \(" + num + r" Hz achieved", ["commands", "cmd_rate"])
    grab(r"(\d+) tick\(s\) \(" + num + r" Hz\): (\d+) stale, (\d+) overrun", ["ticks", "tick_rate", "stale", "overruns"])
    grab(r"inference \((\d+) chunk\(s\)[^)]*\) latency last/mean/max " + num + "/" + num + "/" + num, ["chunks", "inf_last", "inf_mean", "inf_max"])
    grab(r"p50/p90/p99/max " + quad + r" ms; of which (\d+) served from the queue " + quad
         + r" ms, (\d+) refill tick\(s\)[^;]*?\) " + quad + r" ms; (\d+) overrun tick\(s\) \(timer -> handled\) " + quad,
         ["all_p50", "all_p90", "all_p99", "all_max",
          "q_n", "q_p50", "q_p90", "q_p99", "q_max",
          "r_n", "r_p50", "r_p90", "r_p99", "r_max",
          "o_n", "o_p50", "o_p90", "o_p99", "o_max"])
    m = re.search(r"warm-up inference " + num + r" ms; refill (\d+) step", text)
    if m:
        r["warmup_ms"], r["ahead"] = float(m.group(1)), int(m.group(2))
    if not line or "all_p50" not in r or not peer.get("ok") or int(rc) != 0 or not r.get("commands"):
        ok = False
    runs.append(r)

def cell(r, k, fmt="{:.3f}"):
    v = r.get(k)
    return "-" if v is None else (fmt.format(v) if isinstance(v, float) else str(v))

rows = [
    ("refill steps ahead", "ahead", "{}"),
    ("warm-up inference ms", "warmup_ms", "{:.1f}"),
    ("timer ticks (whole run)", "ticks", "{}"),
    ("tick rate Hz", "tick_rate", "{:.2f}"),
    ("commands published", "commands", "{}"),
    ("command rate Hz (node)", "cmd_rate", "{:.2f}"),
    ("stale ticks (before data/after peer)", "stale", "{}"),
    ("overruns", "overruns", "{}"),
    ("inference chunks", "chunks", "{}"),
    ("inference mean / max ms", None, None),
    ("tick latency, command ticks: n", "commands", "{}"),
    ("  p50 ms", "all_p50", None), ("  p90 ms", "all_p90", None), ("  p99 ms", "all_p99", None), ("  max ms", "all_max", None),
    ("served from the queue: n", "q_n", "{}"),
    ("  p50 ms", "q_p50", None), ("  p90 ms", "q_p90", None), ("  p99 ms", "q_p99", None), ("  max ms", "q_max", None),
    ("refill ticks: n", "r_n", "{}"),
    ("  p50 ms", "r_p50", None), ("  p90 ms", "r_p90", None), ("  p99 ms", "r_p99", None), ("  max ms", "r_max", None),
    ("overrun ticks (-> handled): n", "o_n", "{}"),
    ("  p50 / max ms", None, None),
    ("peer: commands in window", None, None),
    ("peer: rate Hz", None, None),
    ("peer: inter-arrival p50/p99/max ms", None, None),
]
w0 = 38
print()
print(f"policy_node tick latency (timer wake-up -> command published), control_rate_hz {rate:g}")
w_col = max(22, max(len(r["mode"]) for r in runs) + 2)
print(" " * w0 + "".join(f"{r['mode']:>{w_col}}" for r in runs))
for label, key, fmt in rows:
    vals = []
    for r in runs:
        p = r["peer"] if r["peer"].get("ok") else {}
        if label.startswith("inference mean"):
            v = f"{cell(r, 'inf_mean', '{:.1f}')} / {cell(r, 'inf_max', '{:.1f}')}"
        elif label.startswith("  p50 / max"):
            v = f"{cell(r, 'o_p50')} / {cell(r, 'o_max')}"
        elif label == "peer: commands in window":
            v = f"{p.get('commands', '-')} in {p.get('duration_s', 0):.1f} s"
        elif label == "peer: rate Hz":
            v = f"{p.get('rate_hz', 0):.2f}"
        elif label.startswith("peer: inter-arrival"):
            ia = p.get("interarrival_ms") or {}
            v = "/".join(f"{ia.get(k, 0):.1f}" for k in ("p50", "p99", "max"))
        else:
            v = cell(r, key, fmt or "{:.3f}")
        vals.append(v)
    print(f"{label:<{w0}}" + "".join(f"{v:>{w_col}}" for v in vals))
print()
for r in runs:
    if r["mode"] == "async" and "q_p99" in r:
        target = "meets" if r["q_p99"] <= 1.0 else "MISSES"
        print(f"async: queue-served p99 {r['q_p99']:.3f} ms {target} the <= 1 ms target; longest tick "
              f"{r['all_max']:.3f} ms vs mean inference {r.get('inf_mean', float('nan')):.1f} ms")
    if not r["peer"].get("ok"):
        print(f"{r['mode']}: peer failed: {r['peer'].get('error')}")
    if r["rc"] != 0:
        print(f"{r['mode']}: node exit status {r['rc']}")
by_mode = {r["mode"]: r for r in runs}

def ratios(variant, label, against):
    """The tick latency of each mode's `variant` run against its plain run, same binary."""
    for r in runs:
        other = by_mode.get(f"{r['mode']} ({variant})")
        if other is None:
            continue
        for key, what in (("q_p99", "queue-served p99"), ("q_p50", "queue-served p50"), ("all_p99", "all command ticks p99")):
            if key in r and key in other and r[key] > 0:
                print(f"{r['mode']} ({label}): {what} {other[key]:.3f} ms vs {against} "
                      f"{r[key]:.3f} ms: ratio {other[key] / r[key]:.2f}")

ratios("io_map", "io_map, 2 joint topics, 4 channels", "flat")
ratios("record", "record", "not recording")
for r in runs:
    rec = by_mode.get(f"{r['mode']} (record)")
    if rec is None:
        continue
    info = (rec["peer"] if rec["peer"].get("ok") else {}).get("recording") or {}
    if info:
        print(f"{r['mode']} (record): {info.get('messages', '?')} message(s) recorded "
              f"({info.get('mb', 0):.0f} MB: {info.get('counts')}), dropped {info.get('dropped', '?')}, "
              f"result {info.get('reason', '?')}, into {info.get('dir', '?')}")
for r in runs:
    base = by_mode.get(f"{r['mode']} (baseline)")
    if base is None:
        continue
    for key, what in (("q_p99", "queue-served p99"), ("q_p50", "queue-served p50"), ("all_p99", "all command ticks p99")):
        if key in r and key in base and base[key] > 0:
            print(f"{r['mode']}: {what} {r[key]:.3f} ms vs baseline {base[key]:.3f} ms: ratio {r[key] / base[key]:.2f}")
for r in runs:
    p = r["peer"] if r["peer"].get("ok") else {}
    if p.get("parameter_sets"):
        print(f"[{r['mode']}] live parameter sets during the run: {p['parameter_sets']}; plans received on ~/action_chunk: {p.get('plans_received', 0)}")
for r in runs:
    print(f"[{r['mode']}] node summary: {r['line'].split(']: ', 1)[-1] or '(none)'}")
sys.exit(0 if ok else 1)
EOF
say "logs: $run_dir"
exit $status
