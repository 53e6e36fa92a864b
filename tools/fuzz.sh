#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the parsers that read files and messages: export
# metadata, policy package manifests, node parameter files, .npy, raw and compressed images,
# openpi server messages (msgpack), and CDR payloads from bags. Runs by hand, on the stable toolchain: the instrumentation
# cargo-fuzz adds is plain rustc flags (SanitizerCoverage through LLVM), so neither nightly
# nor cargo-fuzz is needed; fuzz/ keeps cargo-fuzz's layout, so `cargo fuzz run TARGET`
# works too where it is installed.
#
#   tools/fuzz.sh run [TARGET...]      fuzz each target (default: all) until --runs
#                                      executions or --time seconds, whichever comes first
#   tools/fuzz.sh smoke [TARGET...]    a short run of each (default --runs 20000 --time 20)
#   tools/fuzz.sh repro TARGET FILE... run a target on saved inputs (e.g. a crash artifact)
#   tools/fuzz.sh build                build the instrumented targets only
#   tools/fuzz.sh seeds                regenerate the generated seeds in fuzz/seeds/
#   tools/fuzz.sh list                 list the targets
# Options: --runs N (default 1000000), --time SECONDS (default 600), --jobs N (parallel
# targets, default 1), --no-ros (skip the cdr target, which needs the ROS 2 build env).
#
# Corpora grow in fuzz/corpus/TARGET (git-ignored); the committed seeds are fuzz/seeds/TARGET
# plus, for metadata and params, the case files under tests/cases/. Crashing inputs are saved
# as fuzz/artifacts/TARGET/crash-*; each one found becomes a regression test in the normal
# suite. A summary line per target (executions, seconds, exec/s, coverage, peak RSS, result)
# is printed at the end and written to fuzz/artifacts/summary.txt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ALL_TARGETS=(metadata manifest params io_map npy image_raw image_compressed openpi cdr)
runs=""
time_s=""
jobs=1
ros=1
cmd="${1:-run}"
[ $# -gt 0 ] && shift
targets=()
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --time) time_s="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --no-ros) ros=0; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) if [ "$cmd" = repro ] && [ ${#targets[@]} -eq 1 ]; then files+=("$1"); else targets+=("$1"); fi; shift ;;
  esac
done
if [ "$cmd" = smoke ]; then
  runs="${runs:-20000}"
  time_s="${time_s:-20}"
else
  runs="${runs:-1000000}"
  time_s="${time_s:-600}"
fi

# The ROS 2 build environment (r2r) when the cdr target is wanted.
if [ "$ros" = 1 ]; then
  if [ -f "$root/.venv/policy_node.env" ]; then
    # shellcheck disable=SC1091
    source "$root/.venv/policy_node.env"
  else
    echo "fuzz.sh: no .venv/policy_node.env (run tools/setup.sh); skipping the cdr target" >&2
    ros=0
  fi
fi
if [ ${#targets[@]} -eq 0 ]; then
  for t in "${ALL_TARGETS[@]}"; do
    if [ "$t" != cdr ] || [ "$ros" = 1 ]; then targets+=("$t"); fi
  done
fi
for t in "${targets[@]}"; do
  case " ${ALL_TARGETS[*]} " in *" $t "*) ;; *) echo "fuzz.sh: unknown target $t (targets: ${ALL_TARGETS[*]})" >&2; exit 2 ;; esac
done

triple="$(rustc -vV | sed -n 's/^host: //p')"
features=(--features remote)
[ "$ros" = 1 ] && features=(--features remote,ros)
bin_dir="$root/fuzz/target/$triple/release"

build() {
  # The flags cargo-fuzz passes (without a sanitizer, which needs nightly): coverage
  # counters, comparison tracing, and debug assertions with overflow checks, so arithmetic
  # overflow is a crash. `--target` keeps them off build scripts and proc-macros.
  RUSTFLAGS="${RUSTFLAGS:-} --cfg fuzzing -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers" \
    cargo build --release --manifest-path fuzz/Cargo.toml --target "$triple" "${features[@]}" --bins
}

corpus_dirs() {
  local t="$1"
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  echo "fuzz/corpus/$t fuzz/seeds/$t"
  case "$t" in
    metadata) echo "tests/cases/metadata" ;;
    manifest) echo "tests/cases/manifest" ;;
    params) echo "tests/cases/params config" ;;
    io_map) echo "tests/cases/io_map" ;;
  esac
}

max_len() {
  case "$1" in
    image_compressed|cdr|openpi) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

fuzz_one() {
  local t="$1" log="fuzz/artifacts/$1/fuzz.log"
  mkdir -p "fuzz/artifacts/$t"
  # shellcheck disable=SC2046
  set +e
  "$bin_dir/$t" $(corpus_dirs "$t") \
    -artifact_prefix="fuzz/artifacts/$t/" \
    -runs="$runs" -max_total_time="$time_s" -max_len="$(max_len "$t")" \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1
  local rc=$?
  set -e
  local execs secs cov rss
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
  rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)"
  local result=ok
  if [ $rc -ne 0 ]; then
    result="FAILED (exit $rc; see $log and fuzz/artifacts/$t/)"
  fi
  local rate="-"
  if [ -n "$execs" ] && [ -n "$secs" ] && [ "$secs" -gt 0 ]; then rate=$((execs / secs)); fi
  printf '%-17s %10s execs %5s s %8s exec/s  cov %6s  peak RSS %5s MB  %s\n' \
    "$t" "${execs:-?}" "${secs:-?}" "$rate" "${cov:-?}" "${rss:-?}" "$result" \
    | tee -a fuzz/artifacts/summary.txt
  [ $rc -eq 0 ]
}

case "$cmd" in
  list) printf '%s\n' "${ALL_TARGETS[@]}" ;;
  -h|--help|help) sed -n '2,23p' "$0" ;;
  seeds)
    cargo test --manifest-path fuzz/Cargo.toml "${features[@]}" --lib -- --ignored write_seeds
    ;;
  build) build ;;
  repro)
    [ ${#targets[@]} -eq 1 ] && [ ${#files[@]} -ge 1 ] || { echo "usage: tools/fuzz.sh repro TARGET FILE..." >&2; exit 2; }
    build
    exec "$bin_dir/${targets[0]}" "${files[@]}"
    ;;
  run|smoke)
    build
    mkdir -p fuzz/artifacts
    echo "# $(date -u +%FT%TZ) tools/fuzz.sh $cmd --runs $runs --time $time_s (${targets[*]})" >> fuzz/artifacts/summary.txt
    failed=0
    if [ "$jobs" -gt 1 ]; then
      pids=()
      for t in "${targets[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
        fuzz_one "$t" & pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p" || failed=1; done
    else
      for t in "${targets[@]}"; do fuzz_one "$t" || failed=1; done
    fi
    exit $failed
    ;;
  *) echo "fuzz.sh: unknown command $cmd (run, smoke, repro, build, seeds, list)" >&2; exit 2 ;;
esac
