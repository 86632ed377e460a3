// Google Benchmark suite: the invalidation queue wired into the engine.
//  - BM_QiDescriptors: VT-d descriptors fetched from machine memory, decoded, batched,
//    coalesced and applied, through the tail register (EngineInvalidation::qi_write_tail),
//    reported as descriptors/s. One tail write covers kBatch descriptors and a wait.
//  - BM_WaitLatency: one page op + wait while one or two threads translate, with and without
//    drain.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "nestor/engine.h"
#include "nestor/invalidation.h"
#include "testbed.h"

using namespace nestor;

namespace {

constexpr uint64_t kRingEntries = 1024;    // 16 KiB (128-bit) or 32 KiB (256-bit)
constexpr uint64_t kBatch = 511;           // descriptors per tail write, + 1 wait = 512
constexpr uint64_t kRingPa = 0x8000'0000;  // in the testbed's RAM, outside its allocators' ranges
constexpr uint64_t kStatusPa = 0x8010'0000;
constexpr uint16_t kDid = 1;  // the testbed's DID of VM 0

enum Kind : int64_t {
  kPageAdjacent = 0,     // 0x6 page-selective, consecutive pages: coalescing merges them
  kPageSpread = 1,       // 0x6 page-selective, every other page: nothing to merge
  kPageGpa = 2,          // 0x2 page-selective by GPA, consecutive pages
  kPasidSelective = 3,   // 0x6 all-in-PASID, PASID varies
  kDomainSelective = 4,  // 0x2 domain-selective
  kGlobal = 5,           // 0x2 global
  kContextDevice = 6,    // 0x1 device-selective
  kPasidCache = 7,       // 0x7 PASID-selective
};
const char *kind_name(int64_t k) {
  static const char *names[] = {"page_adjacent", "page_spread", "page_gpa", "pasid",
                                "domain",        "global",      "context",  "pasid_cache"};
  return names[k];
}

struct Desc {
  uint64_t qw0, qw1;
};

Desc make(int64_t kind, uint64_t i, uint32_t pasid) {
  const uint64_t did = uint64_t(kDid) << 16;
  switch (kind) {
    case kPageAdjacent:
      return {0x6 | (3u << 4) | did | (uint64_t(pasid) << 32), bench::kIovaBase + i * 4096};
    case kPageSpread:
      return {0x6 | (3u << 4) | did | (uint64_t(pasid) << 32), bench::kIovaBase + i * 8192};
    case kPageGpa:
      return {0x2 | (3u << 4) | did, 0x1000'0000 + i * 4096};
    case kPasidSelective:
      return {0x6 | (2u << 4) | did | (uint64_t(1 + i % 64) << 32), 0};
    case kDomainSelective:
      return {0x2 | (2u << 4) | did, 0};
    case kGlobal:
      return {0x2 | (1u << 4), 0};
    case kContextDevice:
      return {0x1 | (3u << 4) | did | (uint64_t(i & 0xFFFF) << 32), 0};
    case kPasidCache:
      return {0x7 | (1u << 4) | did | (uint64_t(1 + i % 64) << 32), 0};
  }
  return {0, 0};
}

// args: kind, coalesce (0/1)
void BM_QiDescriptors(benchmark::State &state) {
  const int64_t kind = state.range(0);
  const bool coalesce = state.range(1) != 0;
  bench::TestbedConfig tc;
  tc.working_set_pages = 4096;
  EngineConfig ecfg;
  ecfg.coalesce = coalesce;
  bench::Testbed bed(tc, ecfg);
  Engine &engine = bed.engine();
  const uint32_t pasid = bed.devices()[0].pasid;
  // Warm the caches so the invalidations have entries to remove on the first pass.
  Request req = bed.devices()[0].request();
  for (uint64_t p = 0; p < 4096; ++p) {
    req.iova = bench::kIovaBase + p * 4096;
    benchmark::DoNotOptimize(engine.translate(req));
  }
  // Ring: [kBatch ops, wait] twice; each tail write processes one half.
  MachineMemory &mem = engine.memory();
  // PASID-based descriptors (0x6, 0x7) are 256-bit-queue only (an IQE in a 128-bit queue, as in
  // QEMU and docs/INVQ.md), so those kinds run in a 256-bit queue, the others in a 128-bit one.
  const bool wide = kind == kPageAdjacent || kind == kPageSpread || kind == kPasidSelective ||
                    kind == kPasidCache;
  const uint64_t stride = wide ? 32 : 16;
  for (uint64_t slot = 0; slot < kRingEntries; ++slot) {
    const uint64_t in_half = slot % (kBatch + 1);
    Desc d = in_half == kBatch ? Desc{0x5 | (1u << 5) | (uint64_t(slot) << 32), kStatusPa}
                               : make(kind, in_half, pasid);
    uint64_t qw[4] = {d.qw0, d.qw1, 0, 0};
    if (mem.write(kRingPa + slot * stride, qw, stride) != 0) {
      state.SkipWithError("ring not backed");
      return;
    }
  }
  EngineInvalidation &inv = engine.invalidation();
  if (inv.qi_configure(kRingPa, kRingEntries, wide ? 256 : 128) != 0) {
    state.SkipWithError("qi_configure failed");
    return;
  }
  const invq::StatsSnapshot before = inv.stats();
  uint64_t tail = 0;
  for (auto _ : state) {
    tail = (tail + kBatch + 1) % kRingEntries;
    if (inv.qi_write_tail(tail) != 0) {
      state.SkipWithError("queue error");
      return;
    }
  }
  const invq::StatsSnapshot after = inv.stats();
  state.SetLabel(std::string(kind_name(kind)) + (coalesce ? " coalesce" : " no-coalesce"));
  state.counters["descriptors/s"] =
      benchmark::Counter(double(state.iterations() * kBatch), benchmark::Counter::kIsRate);
  const double ops_in = double(after.batch_ops_sum - before.batch_ops_sum);
  state.counters["applied_per_batch"] =
      double(after.ops_applied - before.ops_applied) /
      double(std::max<uint64_t>(1, after.batches - before.batches));
  state.counters["coalesced_away_pct"] =
      ops_in > 0 ? 100.0 * double(after.coalesced_away - before.coalesced_away) / ops_in : 0.0;
}

// args: drain (0/1), translating threads (background, over the pages being invalidated). With
// 0 the op and its wait run alone; with 1 the machine has a core for the waiter (issue 16's
// drain row) and the translator re-walks each page the waiter just invalidated, so the two
// cores pass the caches' lines back and forth; with 2 on a 2-core machine the waiter competes
// with them.
void BM_WaitLatency(benchmark::State &state) {
  const bool drain = state.range(0) != 0;
  const int threads = int(state.range(1));
  bench::TestbedConfig tc;
  tc.working_set_pages = 1024;
  EngineConfig ecfg;
  ecfg.drain = drain;
  bench::Testbed bed(tc, ecfg);
  Engine &engine = bed.engine();
  const auto dev = bed.devices()[0];
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> translations{0};
  std::vector<std::thread> translators;
  for (int t = 0; t < threads; ++t)
    translators.emplace_back([&, t] {
      Request req = dev.request();
      uint64_t n = 0, p = uint64_t(t) * 512;
      while (!stop.load(std::memory_order_relaxed)) {
        req.iova = bench::kIovaBase + (p++ % 1024) * 4096;
        benchmark::DoNotOptimize(engine.translate(req));
        ++n;
      }
      translations += n;
    });
  EngineInvalidation &inv = engine.invalidation();
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb | invq::kCachePaging;
  op.scope = invq::Scope::kRange;
  op.did = kDid;
  op.pasid = dev.pasid;
  op.npages = 1;
  const invq::StatsSnapshot before = inv.stats();
  uint64_t page = 0;
  for (auto _ : state) {
    op.addr = bench::kIovaBase + (page++ % 1024) * 4096;
    inv.submit(op);
    inv.wait();
  }
  stop = true;
  for (std::thread &t : translators) t.join();
  const invq::StatsSnapshot after = inv.stats();
  const uint64_t waits = after.waits_completed - before.waits_completed;
  state.SetLabel(drain ? "drain" : "no-drain");
  state.counters["waits/s"] =
      benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["wait_latency_us"] =
      waits ? double(after.wait_latency_sum_ns - before.wait_latency_sum_ns) / double(waits) / 1e3
            : 0.0;
  state.counters["translations/s"] =
      benchmark::Counter(double(translations.load()), benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_QiDescriptors)
    ->ArgsProduct({{kPageAdjacent, kPageSpread, kPageGpa}, {1, 0}})
    ->ArgNames({"kind", "coalesce"});
BENCHMARK(BM_QiDescriptors)
    ->ArgsProduct({{kPasidSelective, kDomainSelective, kGlobal, kContextDevice, kPasidCache}, {1}})
    ->ArgNames({"kind", "coalesce"});
BENCHMARK(BM_WaitLatency)
    ->ArgsProduct({{0, 1}, {0, 1, 2}})
    ->ArgNames({"drain", "translators"})
    ->UseRealTime();

BENCHMARK_MAIN();
