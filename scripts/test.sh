#!/usr/bin/env bash
# Quick start #2: install what is missing, build and run every test: the normal build,
# the whole suite under ASan+UBSan, and the concurrency tests under ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs="$(nproc)"

run_suite() {  # name, ctest label filter (or ""), extra cmake args...
  local name="$1" label="$2"
  shift 2
  echo "=== nestor tests: $name"
  cmake -S . -B "build/$name" -G Ninja -DNESTOR_BUILD_BENCH=ON "$@" >/dev/null
  cmake --build "build/$name" -j"$jobs"
  local args=(--test-dir "build/$name" --output-on-failure -j"$jobs" --timeout 600)
  [ -n "$label" ] && args+=(-L "$label")
  ctest "${args[@]}"
}

run_suite default "" -DCMAKE_BUILD_TYPE=RelWithDebInfo
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite asan "" -DCMAKE_BUILD_TYPE=Debug -DNESTOR_SANITIZE=address -DNESTOR_BUILD_BENCH_SUITES=OFF
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  run_suite tsan concurrency -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNESTOR_SANITIZE=thread \
  -DNESTOR_BUILD_BENCH_SUITES=OFF
# Fuzzing (tests/fuzz, docs/STRESS.md): clang-14 libFuzzer + ASan/UBSan in its own CMake project,
# each target for NESTOR_FUZZ_SECONDS over the committed seeds (and its dictionary, if any),
# growing its corpus in build/fuzz/corpus/<target>; any crash, leak or UB fails the step.
# Inputs that once reproduced a bug stay in the corpus as regression-* seeds.
echo "=== nestor tests: fuzz"
cmake -S tests/fuzz -B build/fuzz -G Ninja -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
cmake --build build/fuzz -j"$jobs"
rates=()
for t in fuzz_qi fuzz_walk fuzz_bind fuzz_bind_churn fuzz_capi fuzz_trace fuzz_differential \
  fuzz_owner_queue; do
  mkdir -p "build/fuzz/corpus/$t"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  rc=0
  "build/fuzz/$t" -max_total_time="${NESTOR_FUZZ_SECONDS:-60}" -timeout=5 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="build/fuzz/$t-" "${dict[@]}" \
    "build/fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"build/fuzz/$t.log" 2>&1 || rc=$?
  grep -v '^#' "build/fuzz/$t.log" | tail -n 60 || true  # progress lines stay in the log
  [ "$rc" -eq 0 ] || { echo "$t failed with $rc (build/fuzz/$t.log)"; exit 1; }
  rates+=("$t $(sed -n 's/^stat::average_exec_per_sec: *//p' "build/fuzz/$t.log") exec/s")
done
printf '%s\n' "=== fuzz rates:" "${rates[@]}"
echo "=== nestor tests: all suites passed"
