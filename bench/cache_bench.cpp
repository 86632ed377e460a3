// Google Benchmark suite: the cached translation paths and the cost of invalidation.
// Rates are translations/s (or invalidations/s); ratios are taken within one run.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include "nestor.h"
#include "nestor/invalidation.h"
#include "testbed.h"

using namespace nestor;

namespace {

struct BedKey {
  int mode;
  uint64_t pages;
  bool caching;
  uint32_t iotlb;
  bool operator<(const BedKey &o) const {
    return std::tie(mode, pages, caching, iotlb) < std::tie(o.mode, o.pages, o.caching, o.iotlb);
  }
};

// Testbeds are built once per shape and reused: table building is not what is measured.
// The IOTLB is sized like the engine default (64K entries) unless the working set needs more.
bench::Testbed &bed(bench::Mode mode, uint64_t pages, bool caching = true,
                    uint32_t iotlb_entries = 0) {
  if (iotlb_entries == 0) iotlb_entries = pages > 32768 ? 1u << 21 : 1u << 16;
  static std::map<BedKey, std::unique_ptr<bench::Testbed>> beds;
  static std::mutex mu;  // threaded benchmarks call this from every thread
  std::lock_guard lock(mu);
  auto &slot = beds[{int(mode), pages, caching, iotlb_entries}];
  if (!slot) {
    bench::TestbedConfig tc;
    tc.mode = mode;
    tc.vms = 1;
    tc.working_set_pages = pages;
    tc.guest_ram =
        std::max<uint64_t>(256ull << 20, ((pages * 4096) + (32ull << 20)) & ~((2ull << 20) - 1));
    EngineConfig ec;
    ec.caching = caching;
    ec.iotlb_entries = iotlb_entries;
    ec.psc_entries = 1u << 16;
    slot = std::make_unique<bench::Testbed>(tc, ec);
  }
  return *slot;
}

std::vector<uint64_t> shuffled_iovas(uint64_t pages) {
  std::vector<uint64_t> v(pages);
  for (uint64_t p = 0; p < pages; ++p) v[p] = bench::kIovaBase + p * 4096;
  std::shuffle(v.begin(), v.end(), std::mt19937_64(42));
  return v;
}

void rate(benchmark::State &state, uint64_t faults) {
  if (faults) state.SkipWithError("translation faulted");
  state.counters["translations/s"] =
      benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
}

void warm(bench::Testbed &b, uint64_t pages) {
  AddressSpace h = b.engine().open(b.devices()[0].source_id, true, b.devices()[0].pasid);
  for (uint64_t p = 0; p < pages; ++p) h.translate(bench::kIovaBase + p * 4096, kAccessRead);
}

// IOTLB hits through an address-space handle (the fastest path). Threads share the engine.
void BM_Hit_Handle(benchmark::State &state) {
  const uint64_t pages = uint64_t(state.range(0));
  bench::Testbed &b = bed(bench::Mode::kNested, pages);
  if (state.thread_index() == 0) warm(b, pages);
  AddressSpace h = b.engine().open(b.devices()[0].source_id, true, b.devices()[0].pasid);
  const std::vector<uint64_t> iovas = shuffled_iovas(pages);
  uint64_t i = uint64_t(state.thread_index()) * 7, faults = 0;
  for (auto _ : state) {
    const Result r = h.translate(iovas[i++ & (pages - 1)], kAccessRead);
    faults += !r.ok;
    benchmark::DoNotOptimize(r);
  }
  rate(state, faults);
}
// 512 pages: past the micro-TLB, well inside L2 (the C ABI row's working set).
BENCHMARK(BM_Hit_Handle)->Arg(64)->Arg(512)->Arg(4096)->Threads(1)->Threads(2)->UseRealTime();

// IOTLB hits through the C++ request path (context + PASID cache + IOTLB lookups).
void BM_Hit_Request(benchmark::State &state) {
  const uint64_t pages = uint64_t(state.range(0));
  bench::Testbed &b = bed(bench::Mode::kNested, pages);
  warm(b, pages);
  const std::vector<uint64_t> iovas = shuffled_iovas(pages);
  Request req = b.devices()[0].request();
  uint64_t i = 0, faults = 0;
  for (auto _ : state) {
    req.iova = iovas[i++ & (pages - 1)];
    const Result r = b.engine().translate(req);
    faults += !r.ok;
    benchmark::DoNotOptimize(r);
  }
  rate(state, faults);
}
BENCHMARK(BM_Hit_Request)->Arg(64)->Arg(4096)->Threads(1)->Threads(2)->UseRealTime();

// The hit paths with event hooks (nestor/events.h): range(1) 0 none registered, 1 a fault hook
// (hits never reach it: the same cost as none), 2 a translation hook that counts (every
// translation takes the observed path and calls it). range(2) 0 handle, 1 request path.
void BM_Hit_Hooks(benchmark::State &state) {
  const uint64_t pages = uint64_t(state.range(0));
  const int64_t hooked = state.range(1);
  bench::Testbed &b = bed(bench::Mode::kNested, pages);
  warm(b, pages);
  std::atomic<uint64_t> events{0};
  auto count = [](void *user, const Event &) {
    static_cast<std::atomic<uint64_t> *>(user)->fetch_add(1, std::memory_order_relaxed);
  };
  int id = -1;
  if (hooked == 1) id = b.engine().add_event_hook(kEventFault, count, &events);
  if (hooked == 2) id = b.engine().add_event_hook(kEventTranslate, count, &events);
  static constexpr const char *kLabels[] = {"no hooks", "fault hook", "translate hook"};
  state.SetLabel(std::string(kLabels[hooked]) + (state.range(2) ? ", request" : ", handle"));
  AddressSpace h = b.engine().open(b.devices()[0].source_id, true, b.devices()[0].pasid);
  Request req = b.devices()[0].request();
  const std::vector<uint64_t> iovas = shuffled_iovas(pages);
  uint64_t i = 0, faults = 0;
  for (auto _ : state) {
    req.iova = iovas[i++ & (pages - 1)];
    const Result r =
        state.range(2) ? b.engine().translate(req) : h.translate(req.iova, kAccessRead);
    faults += !r.ok;
    benchmark::DoNotOptimize(r);
  }
  if (id >= 0) b.engine().remove_event_hook(id);
  if (hooked == 2 && events.load() < uint64_t(state.iterations()))
    state.SkipWithError("events were lost");
  rate(state, faults);
}
BENCHMARK(BM_Hit_Hooks)->ArgsProduct({{64}, {0, 1, 2}, {0, 1}});

// Batch API vs the single-request loop on a working set far beyond the last-level cache.
void BM_Hit_HandleLoop_Large(benchmark::State &state) {
  const uint64_t pages = 1u << 19;
  bench::Testbed &b = bed(bench::Mode::kFirstLevel, pages);
  warm(b, pages);
  AddressSpace h = b.engine().open(b.devices()[0].source_id, true, b.devices()[0].pasid);
  const std::vector<uint64_t> iovas = shuffled_iovas(pages);
  uint64_t i = 0, faults = 0;
  std::vector<Result> out(64);
  for (auto _ : state) {
    for (size_t k = 0; k < 64; ++k) out[k] = h.translate(iovas[(i + k) & (pages - 1)], 1);
    for (auto &r : out) faults += !r.ok;
    i += 64;
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * 64);
  if (faults) state.SkipWithError("translation faulted");
  state.counters["translations/s"] =
      benchmark::Counter(double(state.iterations()) * 64, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Hit_HandleLoop_Large);

void BM_Hit_HandleBatch_Large(benchmark::State &state) {
  const uint64_t pages = 1u << 19;
  bench::Testbed &b = bed(bench::Mode::kFirstLevel, pages);
  warm(b, pages);
  AddressSpace h = b.engine().open(b.devices()[0].source_id, true, b.devices()[0].pasid);
  const std::vector<uint64_t> iovas = shuffled_iovas(pages);
  uint64_t i = 0, faults = 0;
  std::vector<Result> out(64);
  std::vector<uint64_t> chunk(64);
  for (auto _ : state) {
    for (size_t k = 0; k < 64; ++k) chunk[k] = iovas[(i + k) & (pages - 1)];
    h.translate_batch(chunk.data(), 1, out.data(), 64);
    for (auto &r : out) faults += !r.ok;
    i += 64;
  }
  if (faults) state.SkipWithError("translation faulted");
  state.counters["translations/s"] =
      benchmark::Counter(double(state.iterations()) * 64, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Hit_HandleBatch_Large);

// One address space's handle hits while another thread invalidates a different domain's
// entries at range(1) operations per second (0: none), cycling page, PASID and domain scope,
// each followed by a wait: the "other address spaces invalidated" row of issue 15. Compare the
// rows of one run: translations/s with invalidations over translations/s without.
void BM_Hit_Handle_OtherDomainInvalidated(benchmark::State &state) {
  const uint64_t pages = uint64_t(state.range(0));
  const int64_t per_second = state.range(1);
  static std::map<uint64_t, std::unique_ptr<bench::Testbed>> beds;
  auto &slot = beds[pages];
  if (!slot) {
    bench::TestbedConfig tc;
    tc.mode = bench::Mode::kNested;
    tc.vms = 2;  // DIDs 1 and 2
    tc.working_set_pages = pages;
    slot = std::make_unique<bench::Testbed>(tc);
  }
  bench::Testbed &b = *slot;
  warm(b, pages);
  const bench::Testbed::Device &other = b.devices()[1];
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> issued{0};
  std::thread invalidator;
  if (per_second > 0) {
    invalidator = std::thread([&] {
      const auto period = std::chrono::nanoseconds(1'000'000'000 / per_second);
      auto next = std::chrono::steady_clock::now();
      EngineInvalidation &inv = b.engine().invalidation();
      for (uint64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
        invq::InvalidationOp op;
        op.caches = invq::kCacheIotlb | invq::kCachePaging;
        op.did = 2;
        op.pasid = other.pasid;
        op.scope = n % 3 == 0   ? invq::Scope::kRange
                   : n % 3 == 1 ? invq::Scope::kPasid
                                : invq::Scope::kDomain;
        op.addr = bench::kIovaBase + (n % pages) * 4096;
        op.npages = 1;
        inv.submit(op);
        inv.wait();
        issued.fetch_add(1, std::memory_order_relaxed);
        // Paced by the clock, not by sleeping: a sleep's wake-up granularity would cap the rate.
        next += period;
        while (std::chrono::steady_clock::now() < next && !stop.load(std::memory_order_relaxed)) {
        }
      }
    });
  }
  AddressSpace h = b.engine().open(b.devices()[0].source_id, true, b.devices()[0].pasid);
  const std::vector<uint64_t> iovas = shuffled_iovas(pages);
  uint64_t i = 0, faults = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    const Result r = h.translate(iovas[i++ & (pages - 1)], kAccessRead);
    faults += !r.ok;
    benchmark::DoNotOptimize(r);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stop.store(true);
  if (invalidator.joinable()) invalidator.join();
  rate(state, faults);
  state.counters["invalidations/s"] = double(issued.load()) / seconds;
}
BENCHMARK(BM_Hit_Handle_OtherDomainInvalidated)
    ->ArgsProduct({{64, 4096}, {0, 100000}})
    ->ArgNames({"pages", "inv_per_s"})
    ->UseRealTime();

// Nested 4x4 misses: IOTLB too small to hold anything (every access misses), paging-structure
// caches warm; versus the uncached engine walking everything; on a 16K-page working set.
void nested_miss(benchmark::State &state, bool caching, uint32_t iotlb_entries) {
  const uint64_t pages = 16384;
  bench::Testbed &b = bed(bench::Mode::kNested, pages, caching, iotlb_entries);
  warm(b, pages);
  AddressSpace h = b.engine().open(b.devices()[0].source_id, true, b.devices()[0].pasid);
  const std::vector<uint64_t> iovas = shuffled_iovas(pages);
  uint64_t i = 0, faults = 0;
  for (auto _ : state) {
    const Result r = h.translate(iovas[i++ & (pages - 1)], kAccessRead);
    faults += !r.ok;
    benchmark::DoNotOptimize(r);
  }
  rate(state, faults);
}
void BM_Nested16K_Cached(benchmark::State &s) {
  nested_miss(s, true, 1u << 16);
}
void BM_Nested16K_WarmPscIotlbMiss(benchmark::State &s) {
  nested_miss(s, true, 16);
}
void BM_Nested16K_Uncached(benchmark::State &s) {
  nested_miss(s, false, 1u << 16);
}
BENCHMARK(BM_Nested16K_Cached);
BENCHMARK(BM_Nested16K_WarmPscIotlbMiss);
BENCHMARK(BM_Nested16K_Uncached);

// Scope invalidation cost at low and high occupancy: O(1) generation bumps.
void scope_invalidation(benchmark::State &state, invq::Scope scope,
                        uint8_t caches = invq::kCacheIotlb | invq::kCachePaging) {
  const uint64_t pages = uint64_t(state.range(0));
  bench::Testbed &b = bed(bench::Mode::kFirstLevel, pages);
  warm(b, pages);
  invq::InvalidationOp op;
  op.caches = caches;
  op.scope = scope;
  op.did = 1;
  op.source_id = b.devices()[0].source_id;
  op.pasid = b.devices()[0].pasid;
  for (auto _ : state) b.engine().invalidate(op);
  state.counters["invalidations/s"] =
      benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
}
void BM_Invalidate_Global(benchmark::State &s) {
  scope_invalidation(s, invq::Scope::kGlobal);
}
void BM_Invalidate_Domain(benchmark::State &s) {
  scope_invalidation(s, invq::Scope::kDomain);
}
void BM_Invalidate_Pasid(benchmark::State &s) {
  scope_invalidation(s, invq::Scope::kPasid);
}
// Context- and PASID-cache invalidation of one device (what a device reassignment sends).
void BM_Invalidate_ContextDevice(benchmark::State &s) {
  scope_invalidation(s, invq::Scope::kDevice, invq::kCacheContext | invq::kCachePasid);
}
BENCHMARK(BM_Invalidate_Global)->Arg(1024)->Arg(1 << 20);
BENCHMARK(BM_Invalidate_Domain)->Arg(1024)->Arg(1 << 20);
BENCHMARK(BM_Invalidate_Pasid)->Arg(1024)->Arg(1 << 20);
BENCHMARK(BM_Invalidate_ContextDevice)->Arg(1024)->Arg(1 << 20);

// Address-selective invalidation (leaf hint) at low and high occupancy: first-level pages
// and ranges by IOVA, or (nested machine) second-level pages by GPA, VT-d type 0x2.
invq::InvalidationOp addressed_op(const bench::Testbed &b, uint64_t npages, bool gpa) {
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb | invq::kCachePaging;
  op.scope = invq::Scope::kRange;
  op.did = 1;
  op.pasid = b.devices()[0].pasid;
  op.npages = npages;
  op.leaf = true;
  op.addr_is_gpa = gpa;
  return op;
}

void addressed_invalidation(benchmark::State &state, uint64_t npages, bool gpa) {
  const uint64_t pages = uint64_t(state.range(0));
  bench::Testbed &b = bed(gpa ? bench::Mode::kNested : bench::Mode::kFirstLevel, pages);
  warm(b, pages);
  invq::InvalidationOp op = addressed_op(b, npages, gpa);
  const uint64_t base = gpa ? 0 : bench::kIovaBase;
  uint64_t p = 0;
  for (auto _ : state) {
    op.addr = base + ((p += npages) & (pages - 1)) * 4096;
    b.engine().invalidate(op);
  }
  state.counters["invalidations/s"] =
      benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
}
void BM_Invalidate_Page(benchmark::State &s) {
  addressed_invalidation(s, 1, false);
}
void BM_Invalidate_Range64(benchmark::State &s) {
  addressed_invalidation(s, 64, false);
}
void BM_Invalidate_GpaPage(benchmark::State &s) {
  addressed_invalidation(s, 1, true);
}
// The loop above sweeps the working set once and then invalidates ranges it already emptied.
// Here every invalidated range is full: each iteration first translates the range half a sweep
// ahead back into the IOTLB (untimed), so the timed invalidation removes 64 entries that were
// filled long enough ago to have left the CPU caches at high occupancy.
void BM_Invalidate_Range64Populated(benchmark::State &state) {
  const uint64_t pages = uint64_t(state.range(0)), npages = 64;
  bench::Testbed &b = bed(bench::Mode::kFirstLevel, pages);
  warm(b, pages);
  AddressSpace h = b.engine().open(b.devices()[0].source_id, true, b.devices()[0].pasid);
  invq::InvalidationOp op = addressed_op(b, npages, false);
  uint64_t p = 0, faults = 0;
  for (auto _ : state) {
    p = (p + npages) & (pages - 1);
    const uint64_t ahead = (p + pages / 2) & (pages - 1);
    for (uint64_t i = 0; i < npages; ++i) {
      faults += !h.translate(bench::kIovaBase + (ahead + i) * 4096, kAccessRead).ok;
    }
    op.addr = bench::kIovaBase + p * 4096;
    const auto start = std::chrono::steady_clock::now();
    b.engine().invalidate(op);
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (faults) state.SkipWithError("translation faulted");
  state.counters["invalidations/s"] =
      benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Invalidate_Page)->Arg(1024)->Arg(1 << 20);
BENCHMARK(BM_Invalidate_Range64Populated)->Arg(1024)->Arg(1 << 20)->UseManualTime();
BENCHMARK(BM_Invalidate_Range64)->Arg(1024)->Arg(1 << 20);
BENCHMARK(BM_Invalidate_GpaPage)->Arg(1024)->Arg(1 << 16);

}  // namespace
