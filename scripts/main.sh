#!/usr/bin/env bash
# Quick start #1: install what is missing, build (Release) and run the workload driver's
# default scenario (vm-mix) with the QEMU-style baseline beside it. Extra arguments go to
# nestor-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DNESTOR_BUILD_TESTS=OFF >/dev/null
cmake --build build/release --target nestor-bench -j"$(nproc)"
exec ./build/release/bench/nestor-bench --baseline "$@"
