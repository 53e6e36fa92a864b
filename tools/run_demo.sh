#!/usr/bin/env bash
# The main job: set up, build, and run policy_node on the bundled demo policy
# (tests/fixtures/act_tiny/onnx) against the replayed demo recording (tests/fixtures/demo_bag,
# MCAP: camera + joint states at 30 Hz), then print what happened: commands published, rate
# achieved, latency summary, and how the commands compare with `policyctl replay` of the
# same recording.
#
# The recording is played over DDS in real time by tests/peers/bag_player.py (rclpy +
# rosbags, the bag's own CDR bytes) together with /clock; the node runs with
# use_sim_time: true and the recording's parameter file, so its timer ticks on the bag's
# time, as `policyctl replay` does offline. The 4 s recording is looped to fill --duration
# (each repetition shifted in time, with its header stamps, behind a 0.5 s gap in which the
# node's data goes stale and its queue is cleared, so that every repetition starts from a
# fresh chunk like an offline replay). tests/peers/recorder.py records the commands.
#
# Usage: tools/run_demo.sh [--duration S] [--export DIR] [--rate HZ] [-p NAME:=VALUE]... [--no-build]
#   --duration S   seconds of recording to play (bag time; default 10, the bag looped)
#   --export DIR   export directory (default tests/fixtures/act_tiny/onnx)
#   --rate HZ      control_rate_hz (default: the parameter file's, 30)
#   -p NAME:=VALUE any other node parameter (e.g. -p refill_mode:=sync), repeatable; the
#                  offline replay it is compared with gets the same parameters
#   --bag DIR      recording (default tests/fixtures/demo_bag/mcap); --params FILE: its
#                  node parameter file (default tests/fixtures/demo_bag/params.yaml)
#   --no-build     skip setup and build (use the existing target/release binaries, or
#                  those named by POLICY_NODE_BIN and POLICYCTL_BIN)
# The node runs on a private ROS_DOMAIN_ID (kept if already set) with localhost discovery;
# its full log and the recorded and offline commands are kept in the printed directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
duration=10
export_dir="$root/tests/fixtures/act_tiny/onnx"
bag="$root/tests/fixtures/demo_bag/mcap"
params="$root/tests/fixtures/demo_bag/params.yaml"
rate=""
build=1
extra=()
while (($#)); do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --export) export_dir="$(cd "$2" && pwd)"; shift 2 ;;
    --bag) bag="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    --params) params="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    -p) extra+=("$2"); shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "run_demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '[run_demo] %s\n' "$*" >&2; }

if ((build)); then
  # Only what the demo needs: the ROS 2 wheels, ONNX Runtime, rosbags (no PyTorch, OpenVINO,
  # physicalai, PyTriton: tools/test.sh installs those), and the binaries with the node and
  # the ONNX backend only.
  say "setting up what the demo needs (POLICY_NODE_SETUP=demo tools/setup.sh; idempotent)"
  start=$(date +%s)
  POLICY_NODE_SETUP=demo tools/setup.sh
  say "set up in $(( $(date +%s) - start )) s; building the release binaries (features ros,onnx)"
  start=$(date +%s)
  tools/cargo build --release --no-default-features --features ros,onnx --bins
  say "built in $(( $(date +%s) - start )) s"
fi
# shellcheck disable=SC1091
source "$root/.venv/policy_node.env"
python="$root/.venv/bin/python"
node_bin="${POLICY_NODE_BIN:-$root/target/release/policy_node}"
ctl_bin="${POLICYCTL_BIN:-$root/target/release/policyctl}"
for b in "$node_bin" "$ctl_bin"; do
  [ -x "$b" ] || { say "$b is missing (run without --no-build)"; exit 1; }
done

run_dir="$(mktemp -d /tmp/policy_node_demo.XXXXXX)"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 100 + RANDOM % 100 ))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_LOG_DIR="$run_dir/ros_log"
export RCUTILS_COLORIZED_OUTPUT=0
export PYTHONUNBUFFERED=1
node_log="$run_dir/policy_node.log"

# One parameter file for the node and the offline replay: the recording's, with the
# command line's export_dir, rate and -p overrides (values parsed as YAML, as ROS does).
# Prints the command topic and the control rate.
settings="$("$python" - "$params" "$run_dir/params.yaml" "$export_dir" "$rate" ${extra[@]+"${extra[@]}"} <<'EOF'
import sys, yaml
src, dst, export_dir, rate, *overrides = sys.argv[1:]
doc = yaml.safe_load(open(src)) or {}
node = doc.get("policy_node") or doc.get("/**") or {}
p = node.setdefault("ros__parameters", {})
p["export_dir"] = export_dir
if rate:
    p["control_rate_hz"] = float(rate)
for o in overrides:
    name, sep, value = o.partition(":=")
    if not sep:
        sys.exit(f"run_demo.sh: -p {o}: expected NAME:=VALUE")
    p[name] = yaml.safe_load(value)
if p.get("command_type", "float64_multi_array") != "float64_multi_array":
    sys.exit("run_demo.sh: the demo records std_msgs/Float64MultiArray commands: "
             "command_type must stay float64_multi_array")
yaml.safe_dump({"policy_node": {"ros__parameters": p}}, open(dst, "w"), sort_keys=False)
print(p.get("command_topic", "joint_commands"), float(p.get("control_rate_hz", 30.0)))
EOF
)"
read -r command_topic rate <<<"$settings"

# stop PID: SIGINT, then SIGKILL after 5 s (an rclpy peer can hang in its shutdown). Returns
# the process's exit status.
stop() {
  kill -INT "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$1" 2>/dev/null && { say "pid $1 did not stop on SIGINT: killed"; kill -KILL "$1" 2>/dev/null; }
  wait "$1" 2>/dev/null
}
pids=()
stop_all() {
  for pid in ${pids[@]+"${pids[@]}"}; do stop "$pid" || true; done
  return 0
}
trap stop_all EXIT

say "offline: policyctl replay $(basename "$(dirname "$bag")")/$(basename "$bag") (the reference for the live commands)"
"$ctl_bin" replay "$bag" "$export_dir" --params "$run_dir/params.yaml" \
  --output "$run_dir/offline.csv" >"$run_dir/offline.txt" 2>&1 \
  || { say "policyctl replay failed:"; cat "$run_dir/offline.txt" >&2; exit 1; }

say "starting policy_node on $export_dir at $rate Hz on sim time (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, log $node_log)"
"$node_bin" --ros-args --params-file "$run_dir/params.yaml" -p use_sim_time:=true >"$node_log" 2>&1 &
node_pid=$!
pids+=("$node_pid")
for _ in $(seq 600); do
  grep -q "ready:" "$node_log" && break
  if ! kill -0 "$node_pid" 2>/dev/null; then
    say "policy_node exited during start-up:"; cat "$node_log" >&2; exit 1
  fi
  sleep 0.1
done
grep -q "ready:" "$node_log" || { say "policy_node did not get ready in 60 s:"; cat "$node_log" >&2; exit 1; }
grep "ready:" "$node_log" | sed 's/^/  /' >&2

wait_for() { # FILE PREFIX PID WHAT
  for _ in $(seq 900); do
    grep -q "^$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || { say "$4 exited:"; cat "$1" "${1%.out}.err" >&2 2>/dev/null; return 1; }
    sleep 0.1
  done
  say "$4: no $2 in 90 s"; cat "$1" >&2; return 1
}
"$python" tests/peers/recorder.py --topic "$command_topic" >"$run_dir/recorder.out" 2>"$run_dir/recorder.err" &
recorder_pid=$!
pids=("$recorder_pid" "${pids[@]}")
wait_for "$run_dir/recorder.out" READY "$recorder_pid" "the command recorder"

say "playing $(basename "$(dirname "$bag")")/$(basename "$bag") in real time with /clock, looped to fill $duration s"
"$python" tests/peers/bag_player.py "$bag" --rate "$rate" --clock-subscribers 2 --duration "$duration" \
  >"$run_dir/player.out" 2>"$run_dir/player.err" &
player_pid=$!
pids+=("$player_pid")
wait_for "$run_dir/player.out" READY "$player_pid" "the bag player"
wait "$player_pid" || { say "the bag player failed:"; cat "$run_dir/player.out" "$run_dir/player.err" >&2; exit 1; }
sleep 0.3

stop "$recorder_pid" || true
stop "$node_pid" && node_rc=0 || node_rc=$?
trap - EXIT
summary="$(grep "stopped on SIG" "$node_log" | sed 's/^.*\]: //' || true)"

"$python" - "$run_dir" "$node_rc" "$summary" "$rate" "$duration" <<'EOF'
import csv, json, re, sys, textwrap
run_dir, node_rc, summary, rate, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
done = next(json.loads(l[5:]) for l in open(f"{run_dir}/player.out") if l.startswith("DONE "))
cmds = [json.loads(l[4:]) for l in open(f"{run_dir}/recorder.out") if l.startswith("CMD ")]
with open(f"{run_dir}/offline.csv") as f:
    rows = list(csv.reader(f))
stamps = [int(r[0]) for r in rows[1:]]
offline = [[float(v) for v in r[1:]] for r in rows[1:]]
period = done["period_ns"]
loops = done["loops"]

# Each command belongs to the repetition whose sim time its /clock reading falls in (the
# recorder's newest /clock may lag or lead a command by a period), up to the next one.
per_loop = [[] for _ in loops]
for c in cmds:
    t = c["clock_ns"] or 0
    k = max((i for i, l in enumerate(loops) if t >= l["start_ns"] - period), default=None)
    if k is not None:
        per_loop[k].append(c)

def diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b))

# In each repetition the node's commands are consecutive offline rows: find the row of the
# first (the node computes its first chunk asynchronously: expected row 1), then compare in
# order, as tests/replay_live.rs does, up to the last tick at or before the repetition's last
# message (where the offline replay of the bag stops, or the repetition was cut). After it
# the node goes on commanding from its queue while the data is fresh
# (max_observation_age_ms): those ticks have no offline counterpart.
worst, compared, first_rows, after = 0.0, 0, [], 0
for l, cs in zip(loops, per_loop):
    if not cs:
        first_rows.append(None)
        continue
    t0 = (cs[0]["clock_ns"] or 0) - l["offset_ns"]
    guess = min(range(len(stamps)), key=lambda i: abs(stamps[i] - t0))
    cands = range(max(0, guess - 3), min(len(offline), guess + 4))
    r0 = min(cands, key=lambda i: diff(cs[0]["data"], offline[i]))
    first_rows.append(r0)
    limit = sum(1 for st in stamps if st + l["offset_ns"] <= l["end_ns"])
    for i, c in enumerate(cs):
        if r0 + i >= limit:
            after += 1
            continue
        worst = max(worst, diff(c["data"], offline[r0 + i]))
        compared += 1

def rate_of(cs):
    if len(cs) < 2:
        return 0.0
    return (len(cs) - 1) / (cs[-1]["recv_unix"] - cs[0]["recv_unix"])

loop_rates = [rate_of(cs) for cs in per_loop if len(cs) > 1]
m = re.search(r"inference \((\d+) chunk.*?latency last/mean/max ([\d./]+) ms on ([^;\s]+)", summary)
t = re.search(r"tick latency \(timer -> published\) p50/p90/p99/max ([\d./]+) ms", summary)
q = re.search(r"of which (\d+) served from the queue ([\d./]+) ms", summary)
c = re.search(r"(\d+) command\(s\) published", summary)
s = re.search(r"(\d+) stale, (\d+) overrun\(s\), (\d+) error\(s\)", summary)
w = re.search(r"(\d+) waiting for a first chunk", summary)
bag_s = (loops[0]["end_ns"] - loops[0]["start_ns"]) / 1e9
print()
print("policy_node demo: what happened")
print(f"  recording         {done['messages']} messages in {len(loops)} repetition(s) of the {bag_s:.1f} s bag "
      f"({duration} s of bag time, real time with /clock; player max lateness {done['max_late_ms']:.1f} ms)")
print(f"  commands          {c.group(1) if c else '?'} published by the node, {len(cmds)} recorded "
      f"({' + '.join(str(len(cs)) for cs in per_loop)} per repetition)")
print(f"  rate achieved     {', '.join(f'{r:.2f}' for r in loop_rates) or '?'} Hz within the repetitions "
      f"(control_rate_hz {rate:g}; none between them: data stale)")
if m:
    print(f"  inference         on {m.group(3)}: latency last/mean/max {m.group(2)} ms over the {m.group(1)} chunk(s) "
          "since the last reset (data going stale between repetitions resets the policy)")
if t:
    print(f"  tick latency      p50/p90/p99/max {t.group(1)} ms (timer -> published)"
          + (f"; {q.group(1)} ticks served from the queue: {q.group(2)} ms" if q else ""))
if s:
    print(f"  ticks             {s.group(1)} stale (between repetitions: old data), {s.group(2)} overrun(s), "
          f"{s.group(3)} error(s)" + (f", {w.group(1)} waiting for a first chunk (start of each repetition)" if w else ""))
print(f"  vs offline replay `policyctl replay` of the same bag ({len(offline)} commands): {compared} live commands "
      f"compared in order, max |live - offline| = {worst:.2e}")
print("                    first live command of each repetition = offline row "
      f"{', '.join('-' if r is None else str(r) for r in first_rows)} (expected: 1 where the node computes its first "
      "chunk asynchronously, 0 with refill_mode sync)")
if after:
    print(f"                    {after} live command(s) after the last message of a repetition, on data still "
          "fresh (max_observation_age_ms): not in the offline replay, which stops there")
print("  node summary      " + "\n                    ".join(textwrap.wrap(summary or "(none)", 100)))
print(f"  node exit status  {node_rc}")
if compared and worst > 1e-4:
    print(f"[run_demo] note: live and offline commands differ by up to {worst:.2e}: the node missed or "
          "shifted a tick (a loaded machine?); tests/replay_live.rs checks this properly", file=sys.stderr)
sys.exit(0 if node_rc == 0 and cmds else 1)
EOF
say "full node log: $node_log; commands: $run_dir/recorder.out (live), $run_dir/offline.csv (offline)"
