#!/usr/bin/env bash
# Regenerates tests/fixtures/demo_bag/golden_onnx.csv after an intended change to replay's
# output: `policyctl replay` of the demo bag with the ONNX export, one thread. A separate,
# explicit step: tests/replay.rs only compares with the file (and fails when
# POLICY_NODE_UPDATE_GOLDEN is set). Review the diff before committing it; the independent
# check of the tick and refill rules is tests/replay.rs::sync_refill_equals_physicalai_select_action.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
demo=tests/fixtures/demo_bag
tools/cargo run --quiet --no-default-features --features onnx,ros --bin policyctl -- \
  replay "$demo/mcap" tests/fixtures/act_tiny/onnx --params "$demo/params.yaml" --threads 1 \
  --output "$demo/golden_onnx.csv"
echo "wrote $demo/golden_onnx.csv; review it with: git diff --stat $demo/golden_onnx.csv"
