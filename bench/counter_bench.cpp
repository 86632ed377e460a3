// Per-thread counting, hand-written against oneTBB (issue 16 asks where oneTBB serves).
// Every IOTLB lookup counts a hit or a miss, so the counter's cost is paid on the hit path.
//  - BM_Count_CacheStats: caches::Stats, a thread_local slot index into preallocated blocks.
//  - BM_Count_TbbEts: tbb::enumerable_thread_specific<Block>, local() on every count (what
//    a drop-in replacement would do: the counter object cannot cache the reference, since one
//    Stats is shared by every thread).
//  - BM_Count_SharedAtomic: one fetch_add on a shared counter, the naive reference.
// Sums are checked against the iterations so the loops cannot be optimised away.
#include <benchmark/benchmark.h>
#include <oneapi/tbb/enumerable_thread_specific.h>

#include <array>
#include <atomic>
#include <cstdint>

#include "nestor/caches/stats.h"

namespace {

using nestor::caches::Counter;

struct alignas(64) Block {
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Counter::kCount)> c{};
};

nestor::caches::Stats g_stats;
tbb::enumerable_thread_specific<Block> g_ets;
alignas(64) std::atomic<uint64_t> g_shared{0};

void check(benchmark::State &state, uint64_t before, uint64_t after) {
  if (state.thread_index() == 0 && after < before + uint64_t(state.iterations())) {
    state.SkipWithError("counts lost");
  }
}

void BM_Count_CacheStats(benchmark::State &state) {
  const uint64_t before = g_stats.snapshot().hits;
  for (auto _ : state) g_stats.add(Counter::kHits);
  check(state, before, g_stats.snapshot().hits);
}

void BM_Count_TbbEts(benchmark::State &state) {
  auto sum = [] {
    uint64_t n = 0;
    g_ets.combine_each(
        [&](const Block &b) { n += b.c[size_t(Counter::kHits)].load(std::memory_order_relaxed); });
    return n;
  };
  const uint64_t before = sum();
  for (auto _ : state) {
    std::atomic<uint64_t> &a = g_ets.local().c[size_t(Counter::kHits)];
    a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  check(state, before, sum());
}

void BM_Count_SharedAtomic(benchmark::State &state) {
  const uint64_t before = g_shared.load();
  for (auto _ : state) g_shared.fetch_add(1, std::memory_order_relaxed);
  check(state, before, g_shared.load());
}

}  // namespace

BENCHMARK(BM_Count_CacheStats)->ThreadRange(1, 2)->UseRealTime();
BENCHMARK(BM_Count_TbbEts)->ThreadRange(1, 2)->UseRealTime();
BENCHMARK(BM_Count_SharedAtomic)->ThreadRange(1, 2)->UseRealTime();
