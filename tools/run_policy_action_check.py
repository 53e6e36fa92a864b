#!/usr/bin/env python3
"""Round trip of policy_node_interfaces/action/RunPolicy in one process with rclpy.

An ActionServer (a stand-in for policy_node's ~/run_policy) and an ActionClient: the client
sends a goal, prints each feedback message and the result. Exits 0 when the round trip holds.
Needs the environment of tools/build_interfaces.sh:
    tools/build_interfaces.sh && source install/setup.bash
    "$POLICY_NODE_IDL_PYTHON" tools/run_policy_action_check.py
"""
import os
import sys
import threading
import time

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))

import rclpy  # noqa: E402
from rclpy.action import ActionClient, ActionServer  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

from policy_node_interfaces.action import RunPolicy  # noqa: E402

STEPS_PER_FEEDBACK = 30


def execute(goal_handle):
    goal = goal_handle.request
    fb = RunPolicy.Feedback()
    start = time.monotonic()
    for i in range(1, 4):
        time.sleep(0.05)
        fb.elapsed_s = time.monotonic() - start
        fb.steps = i * STEPS_PER_FEEDBACK
        fb.chunks = i
        fb.inference_p99_ms = 48.5
        fb.status = "running"
        goal_handle.publish_feedback(fb)
    goal_handle.succeed()
    res = RunPolicy.Result()
    res.success = True
    res.reason = "duration"
    res.steps = 3 * STEPS_PER_FEEDBACK
    res.recording = f"/tmp/episodes/{goal.task or 'default'}" if goal.record else ""
    return res


def main() -> int:
    rclpy.init()
    server_node = Node("run_policy_server")
    client_node = Node("run_policy_client")
    server = ActionServer(server_node, RunPolicy, "/policy_node/run_policy", execute)
    client = ActionClient(client_node, RunPolicy, "/policy_node/run_policy")
    executor = MultiThreadedExecutor()
    executor.add_node(server_node)
    executor.add_node(client_node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        if not client.wait_for_server(timeout_sec=10.0):
            print("FAIL: no action server", file=sys.stderr)
            return 1
        goal = RunPolicy.Goal(task="pick the cube", policy="act", max_duration_s=2.5, record=True)
        feedback = []

        def on_feedback(msg):
            f = msg.feedback
            feedback.append(f)
            print(f"feedback: elapsed_s={f.elapsed_s:.3f} steps={f.steps} chunks={f.chunks} "
                  f"inference_p99_ms={f.inference_p99_ms} status={f.status}")

        send = client.send_goal_async(goal, feedback_callback=on_feedback)
        deadline = time.monotonic() + 10.0
        while not send.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        handle = send.result()
        if handle is None or not handle.accepted:
            print("FAIL: goal not accepted", file=sys.stderr)
            return 1
        print(f"goal accepted: {goal}")
        get = handle.get_result_async()
        while not get.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not get.done():
            print("FAIL: no result", file=sys.stderr)
            return 1
        r = get.result()
        # Feedback and result travel on different topics: give late feedback a moment.
        while len(feedback) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        print(f"result (status {r.status}): success={r.result.success} reason={r.result.reason} "
              f"steps={r.result.steps} recording={r.result.recording!r}")
        ok = (r.status == 4  # GoalStatus.STATUS_SUCCEEDED
              and r.result.success and r.result.reason == "duration" and r.result.steps == 90
              and r.result.recording == "/tmp/episodes/pick the cube"
              and len(feedback) == 3 and feedback[-1].chunks == 3)
        print("OK: RunPolicy round trip" if ok else "FAIL: unexpected values")
        return 0 if ok else 1
    finally:
        # Stop and join the spin thread before destroying anything it may still touch.
        executor.shutdown()
        spin.join(timeout=5.0)
        client.destroy()
        server.destroy()
        server_node.destroy_node()
        client_node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
