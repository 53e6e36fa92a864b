#!/usr/bin/env bash
# Soak of policy_node: the node runs for --duration seconds at --rate Hz against an rclpy robot
# (tests/peers/fault_peer.py soak): JointState at 200 Hz and a 640x480 rgb8 Image at 30 Hz.
# Reports, per minute (the node's 60 s /diagnostics window): ticks, lost ticks, commands,
# stale ticks, overruns, late ticks (command ticks longer than the period), tick latency
# p50/p99/max (timer -> published) of all command ticks and p99 of those served from the queue,
# the refill-ahead steps chosen and the recent inference p99, the node's RSS and open file
# descriptors; then the node's exit summary and the checks:
#   - no tick lost (timer periods without a tick);
#   - every missed deadline counted and explained (overruns: the chunk was not ready; late
#     ticks: the tick itself overran the period) - the node's warnings are listed;
#   - 0 overruns once warm (after the first window);
#   - queue-tick p99 <= 1 ms in every window;
#   - RSS flat after warm-up: growth < 1 MB over the last 8 minutes (runs of 10 min or more;
#     shorter runs: over their second half);
#   - no errors, and every tick accounted for (commands + stale + overruns + waiting + errors =
#     ticks; waiting: ticks before the first chunk of a plan, at start or after a stale gap).
#
# Usage: tools/soak.sh [--duration S] [--rate HZ] [--threads N] [--export DIR] [--bin PATH]
#                      [--build] [--json FILE] [--strict] [-p NAME:=VALUE]...
#   --duration S  seconds after the first command (default 600)
#   --rate HZ     control_rate_hz (default 100)
#   --threads N   runtime CPU threads (default 1)
#   --export DIR  export (default fixtures-large/act_full/onnx, created with
#                 tools/make_fixture.py --large when missing)
#   --bin PATH    policy_node (default $POLICY_NODE_BIN, else target/bench/release/policy_node,
#                 else target/release/policy_node)
#   --build       build target/bench/release/policy_node first (release, onnx,ros)
#   --json FILE   also write the report as JSON (what tests/soak.rs asserts on)
#   --strict      exit 1 when a check fails (default: report only; exit 1 only when the run
#                 itself failed)
#   --record      record the whole run as one episode (episode_mode goal, a ~/run_policy goal
#                 with record: true, record_dir in the run directory): adds the check "0
#                 messages dropped by the recording" and reports its size and counts
#   -p NAME:=VALUE  any other node parameter
# Runs on a private ROS_DOMAIN_ID (kept if set) with localhost discovery; logs stay in the
# printed directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
duration=600
rate=100.0
threads=1
export_dir="$root/fixtures-large/act_full/onnx"
default_export=1
node_bin="${POLICY_NODE_BIN:-}"
build=0
json_out=""
strict=0
record=0
extra=()
while (($#)); do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --export) export_dir="$(cd "$2" && pwd)"; default_export=0; shift 2 ;;
    --bin) node_bin="$2"; shift 2 ;;
    --build) build=1; shift ;;
    --json) json_out="$2"; shift 2 ;;
    --strict) strict=1; shift ;;
    --record) record=1; shift ;;
    -p) extra+=(-p "$2"); shift 2 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '[soak] %s\n' "$*" >&2; }
py="${POLICY_NODE_TEST_PYTHON:-$root/.venv/bin/python}"

if ((build)); then
  say "building policy_node (release, onnx,ros) into target/bench"
  CARGO_TARGET_DIR="$root/target/bench" tools/cargo build --release --no-default-features \
    --features onnx,ros --bin policy_node
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
if [ -f "$root/.venv/policy_node.env" ]; then
  # shellcheck disable=SC1091
  source "$root/.venv/policy_node.env"
fi

read -r n_joints joint_list < <("$py" - "$export_dir/metadata.yaml" <<'EOF'
import sys, yaml
m = yaml.safe_load(open(sys.argv[1]))
shapes = m.get("input_shapes") or {}
state = next((v for k, v in shapes.items() if k.split(".")[-1] == "state"), [14])
n = int(state[-1])
names = m.get("joint_names") or [f"joint{i + 1}" for i in range(n)]
print(n, "[" + ", ".join(names) + "]")
EOF
)

run_dir="$(mktemp -d /tmp/policy_node_soak.XXXXXX)"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 100 + RANDOM % 100 ))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_LOG_DIR="$run_dir/ros_log"
export RCUTILS_COLORIZED_OUTPUT=0
export PYTHONUNBUFFERED=1
say "binary $node_bin; export $export_dir ($n_joints joints); $duration s at $rate Hz, threads $threads"
say "robot: JointState 200 Hz, Image 640x480 rgb8 30 Hz; ROS_DOMAIN_ID=$ROS_DOMAIN_ID; logs in $run_dir"
say "machine: $(nproc) CPU(s), load average $(cut -d' ' -f1-3 /proc/loadavg)"

params="$run_dir/params.yaml"
cat >"$params" <<EOF
policy_node:
  ros__parameters:
    export_dir: "$export_dir"
    control_rate_hz: $rate
    joint_names: $joint_list
    camera_topics: [image_raw]
    threads: $threads
    refill_mode: async
    refill_ahead_steps: -1
    max_observation_age_ms: 500.0
EOF
if ((record)); then
  printf '    episode_mode: goal\n    record_dir: "%s"\n' "$run_dir/episodes" >>"$params"
fi

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

log="$run_dir/node.log"
"$node_bin" --ros-args --params-file "$params" ${extra[@]+"${extra[@]}"} >"$log" 2>&1 &
node_pid=$!
for _ in $(seq 1200); do
  grep -q "ready:" "$log" && break
  if ! kill -0 "$node_pid" 2>/dev/null; then say "policy_node exited during start-up:"; cat "$log" >&2; exit 1; fi
  sleep 0.1
done
grep -q "ready:" "$log" || { say "policy_node did not get ready in 120 s:"; cat "$log" >&2; exit 1; }
grep -E "warm-up inference|priority" "$log" | sed 's/^.*\]: /  /' >&2

peer_cfg="{\"duration_s\": $duration, \"joints\": $n_joints, \"joint_hz\": 200, \"image_hz\": 30, \"h\": 480, \"w\": 640, \"wave\": true, \"node_pid\": $node_pid, \"sample_s\": 10, \"record\": $( ((record)) && echo true || echo false)}"
peer_out="$run_dir/peer.txt"
say "robot running for $duration s after the first command (per-minute lines follow)"
"$py" tests/peers/fault_peer.py soak --config "$peer_cfg" | tee "$peer_out" | grep --line-buffered '^MINUTE ' | sed -u 's/^MINUTE /  window: /' >&2 || true
kill -INT "$node_pid"
wait "$node_pid" && rc=0 || rc=$?
node_pid=
trap - EXIT
say "node exit status $rc"

"$py" - "$rate" "$duration" "$log" "$peer_out" "$rc" "$json_out" "$strict" <<'EOF' && status=0 || status=$?
import json, re, sys
rate, duration, log_path, peer_path, rc, json_out, strict = sys.argv[1:8]
rate, duration, rc, strict = float(rate), float(duration), int(rc), strict == "1"
text = open(log_path, errors="replace").read()
summary = next((l.split("]: ", 1)[-1] for l in text.splitlines() if "stopped on SIGINT" in l), "")
peer_lines = open(peer_path, errors="replace").read().splitlines()
result = next((json.loads(l[7:]) for l in peer_lines if l.startswith("RESULT ")), {"ok": False, "error": "no RESULT"})
windows = result.get("windows", [])
samples = result.get("samples", [])

def f(w, k):
    v = w.get(k)
    return float(v) if v not in (None, "") else float("nan")

print()
print(f"policy_node soak: {duration:g} s at {rate:g} Hz (per 60 s /diagnostics window)")
hdr = ["win", "t s", "len s", "ticks", "lost", "cmds", "stale", "overrun", "wait", "late", "tick p50", "tick p99", "tick max",
       "queue p99", "ahead", "infer p99", "RSS MB", "fds"]
print(" ".join(f"{h:>9}" for h in hdr))
for w in windows:
    row = [w.get("window_index"), f"{w.get('t', 0):.0f}", w.get("window_s"), w.get("window_ticks"), w.get("window_lost_ticks"),
           w.get("window_commands"), w.get("window_stale_ticks"), w.get("window_overruns"),
           w.get("window_waiting_ticks"), w.get("window_late_ticks"),
           w.get("window_tick_p50_ms"), w.get("window_tick_p99_ms"), w.get("window_tick_max_ms"),
           w.get("window_queue_tick_p99_ms"), w.get("refill_ahead_steps"), w.get("latency_recent_p99_ms"),
           f"{w.get('VmRSS', 0) / 1024:.2f}", w.get("fds")]
    print(" ".join(f"{str(v):>9}" for v in row))

num = r"([\d.]+)"
def grab(pattern, n=1):
    m = re.search(pattern, summary)
    return [float(x) for x in m.groups()] if m else [float("nan")] * n
ticks, stale, overruns = grab(r"(\d+) tick\(s\) \([\d.]+ Hz\): (\d+) stale, (\d+) overrun", 3)
errors, = grab(r"(\d+) error\(s\), \d+ disabled")
waiting, = grab(r"(\d+) waiting for a first chunk")
idle, halted = grab(r"(\d+) idle \(no episode\), (\d+) halted", 2)
idle, halted = (0.0 if v != v else v for v in (idle, halted))
recording = result.get("recording")
commands, = grab(r"(\d+) command\(s\) published")
q = grab(r"(\d+) served from the queue " + num + "/" + num + "/" + num + "/" + num + " ms", 5)
lost, late = grab(r"(\d+) lost tick\(s\)[^,]*, (\d+) late tick", 2)

rss = [(s["t"], s.get("VmRSS", 0)) for s in samples if "VmRSS" in s]
fds = [(s["t"], s.get("fds", 0)) for s in samples if "fds" in s]
span = 480.0 if duration >= 600 else duration / 2
tail = [r for t, r in rss if t >= duration - span]
rss_growth_kb = (max(tail) - tail[0]) if tail else float("nan")
fd_growth = (max(v for t, v in fds if t >= duration - span) - next(v for t, v in fds if t >= duration - span)) if fds else float("nan")
warm = windows[1:] if len(windows) > 1 else []
warm_overruns = sum(int(w.get("window_overruns", 0)) for w in warm)
window_lost = sum(int(w.get("window_lost_ticks", 0)) for w in windows)
queue_p99s = [f(w, "window_queue_tick_p99_ms") for w in windows]
warnings = [l.split("]: ", 1)[-1] for l in text.splitlines() if re.search(r"late tick:|lost \d+ tick|overrun:|refill ahead", l)]

checks = {
    "run completed (node exit 0, robot ok)": rc == 0 and bool(result.get("ok")) and bool(summary),
    "no tick lost": lost == 0 and window_lost == 0,
    "every tick accounted for (commands + stale + overruns + waiting + errors + idle + halted = ticks)":
        commands + stale + overruns + waiting + errors + idle + halted == ticks,
    "no errors": errors == 0,
    "0 overruns once warm (after the first window)": warm_overruns == 0 if warm else None,
    "queue-tick p99 <= 1 ms in every window": all(v <= 1.0 for v in queue_p99s) if queue_p99s else None,
    f"RSS growth < 1 MB over the last {span:.0f} s": rss_growth_kb < 1024 if tail else None,
    "recording: 0 messages dropped": (recording is not None and recording.get("dropped") == 0) if "recording" in result and result.get("recording") is not None else None,
}
if recording:
    print(f"recording: {recording['messages']} message(s), {recording['mb']:.0f} MB, {recording['dropped']} dropped, "
          f"result {recording['reason']}: {recording['counts']} in {recording['dir']}")
print()
print(f"node summary: {summary}")
print()
print(f"ticks {ticks:.0f}, commands {commands:.0f}, stale {stale:.0f}, overruns {overruns:.0f} "
      f"({warm_overruns} after the first window), waiting for a first chunk {waiting:.0f}, errors {errors:.0f}, lost ticks {lost:.0f}, late ticks {late:.0f}")
print(f"queue-served ticks: {q[0]:.0f}, latency p50/p90/p99/max {q[1]:.3f}/{q[2]:.3f}/{q[3]:.3f}/{q[4]:.3f} ms")
if rss:
    print(f"RSS: {rss[0][1] / 1024:.2f} MB at {rss[0][0]:.0f} s, {rss[-1][1] / 1024:.2f} MB at {rss[-1][0]:.0f} s; "
          f"growth over the last {span:.0f} s: {rss_growth_kb:.0f} kB; open fds {fds[0][1]} -> {fds[-1][1]} "
          f"(growth over the last {span:.0f} s: {fd_growth})")
print("missed deadlines, as the node explained them (warnings are throttled: 'N more' counts the rest):")
for w in warnings[:40]:
    print(f"  {w}")
if len(warnings) > 40:
    print(f"  ... {len(warnings) - 40} more line(s) in {log_path}")
print()
failed = False
for name, ok in checks.items():
    mark = "n/a " if ok is None else ("ok  " if ok else "FAIL")
    failed |= ok is False
    print(f"[{mark}] {name}")
report = {
    "duration_s": duration, "rate_hz": rate, "summary": summary, "windows": windows, "samples": samples,
    "ticks": ticks, "commands": commands, "stale": stale, "overruns": overruns, "warm_overruns": warm_overruns,
    "waiting": waiting,
    "errors": errors, "lost_ticks": lost, "late_ticks": late, "queue_latency_ms": q[1:],
    "rss_growth_kb": rss_growth_kb, "rss_span_s": span, "fd_growth": fd_growth,
    "checks": {k: v for k, v in checks.items()}, "peer_ok": bool(result.get("ok")), "node_rc": rc,
    "recording": recording,
}
if json_out:
    with open(json_out, "w") as fh:
        json.dump(report, fh, indent=1)
run_ok = checks["run completed (node exit 0, robot ok)"]
sys.exit(0 if run_ok and (not strict or not failed) else 1)
EOF
say "logs: $run_dir"
exit $status
