// nestor vs the QEMU-style baseline (bench/baselines/qemu_style_iotlb.h), same workload and
// same walker, in one run: read the ratio of the translations/s counters.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "baselines/qemu_style_iotlb.h"
#include "testbed.h"

using namespace nestor;

namespace {

struct Pair {
  std::unique_ptr<bench::Testbed> cached, uncached;
  std::unique_ptr<baseline::QemuStyleIotlb> qemu;
};

Pair &pair_for(uint64_t pages) {
  static std::map<uint64_t, Pair> pairs;
  Pair &p = pairs[pages];
  if (!p.cached) {
    bench::TestbedConfig tc;
    tc.mode = bench::Mode::kNested;
    tc.vms = 1;
    tc.working_set_pages = pages;
    EngineConfig on, off;
    off.caching = false;
    p.cached = std::make_unique<bench::Testbed>(tc, on);
    p.uncached = std::make_unique<bench::Testbed>(tc, off);
    p.qemu = std::make_unique<baseline::QemuStyleIotlb>(p.uncached->engine());
    p.qemu->set_did(p.uncached->devices()[0].source_id, 1);
  }
  return p;
}

std::vector<Request> requests(const bench::Testbed &b, uint64_t pages) {
  std::vector<Request> v(pages);
  for (uint64_t i = 0; i < pages; ++i) {
    v[i].source_id = b.devices()[0].source_id;
    v[i].has_pasid = true;
    v[i].pasid = b.devices()[0].pasid;
    v[i].iova = bench::kIovaBase + i * 4096;
  }
  std::shuffle(v.begin(), v.end(), std::mt19937_64(7));
  return v;
}

// Rates of the baseline runs, by benchmark and argument: the nestor run that follows (they are
// registered baseline first) reports its ratio to it as the counter "vs_qemu_style".
std::map<std::string, double> &baseline_rates() {
  static std::map<std::string, double> rates;
  return rates;
}

template <class Loop>
double timed(benchmark::State &state, Loop &&loop) {
  const auto t0 = std::chrono::steady_clock::now();
  loop();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return secs > 0 ? double(state.iterations()) / secs : 0.0;
}

void report(benchmark::State &state, const std::string &key, bool is_baseline, double rate,
            const char *unit) {
  state.counters[unit] =
      benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
  if (is_baseline) {
    baseline_rates()[key] = rate;
  } else if (auto it = baseline_rates().find(key); it != baseline_rates().end() && it->second > 0) {
    state.counters["vs_qemu_style"] = rate / it->second;
  }
}

template <class Translate>
void run(benchmark::State &state, const std::vector<Request> &reqs, bool is_baseline,
         Translate &&tr) {
  const size_t n = reqs.size();
  for (const Request &r : reqs) tr(r);  // warm
  uint64_t i = 0, faults = 0;
  const double rate = timed(state, [&] {
    for (auto _ : state) {
      const Result r = tr(reqs[i++ % n]);
      faults += !r.ok;
      benchmark::DoNotOptimize(r);
    }
  });
  if (faults) state.SkipWithError("translation faulted");
  report(state, "translate/" + std::to_string(n), is_baseline, rate, "translations/s");
}

void BM_Compare_Nestor(benchmark::State &state) {
  Pair &p = pair_for(uint64_t(state.range(0)));
  run(state, requests(*p.cached, uint64_t(state.range(0))), false,
      [&](const Request &r) { return p.cached->engine().translate(r); });
}
void BM_Compare_QemuStyle(benchmark::State &state) {
  Pair &p = pair_for(uint64_t(state.range(0)));
  run(state, requests(*p.uncached, uint64_t(state.range(0))), true,
      [&](const Request &r) { return p.qemu->translate(r); });
}
void BM_Compare_Uncached(benchmark::State &state) {
  Pair &p = pair_for(uint64_t(state.range(0)));
  run(state, requests(*p.uncached, uint64_t(state.range(0))), false,
      [&](const Request &r) { return p.uncached->engine().translate(r); });
}
BENCHMARK(BM_Compare_QemuStyle)->Arg(512)->Arg(16384);
BENCHMARK(BM_Compare_Nestor)->Arg(512)->Arg(16384);
BENCHMARK(BM_Compare_Uncached)->Arg(512)->Arg(16384);

// One page-selective invalidation plus the re-translation of that page, at full occupancy
// (1024 entries, the baseline's capacity).
void BM_Compare_QemuStyle_InvalidatePage(benchmark::State &state) {
  Pair &p = pair_for(1024);
  const std::vector<Request> reqs = requests(*p.uncached, 1024);
  for (const Request &r : reqs) p.qemu->translate(r);
  uint64_t i = 0;
  // Each iteration invalidates one page and translates it again, so occupancy stays at 1024.
  const double rate = timed(state, [&] {
    for (auto _ : state) {
      const Request &r = reqs[i++ % 1024];
      p.qemu->invalidate_pages(1, r.pasid, r.iova, 1);
      benchmark::DoNotOptimize(p.qemu->translate(r));
    }
  });
  report(state, "invalidate-page", true, rate, "invalidations/s");
}
void BM_Compare_Nestor_InvalidatePage(benchmark::State &state) {
  Pair &p = pair_for(1024);
  const std::vector<Request> reqs = requests(*p.cached, 1024);
  for (const Request &r : reqs) p.cached->engine().translate(r);
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb | invq::kCachePaging;
  op.scope = invq::Scope::kRange;
  op.did = 1;
  op.pasid = reqs[0].pasid;
  op.npages = 1;
  op.leaf = true;
  uint64_t i = 0;
  const double rate = timed(state, [&] {
    for (auto _ : state) {
      const Request &r = reqs[i++ % 1024];
      op.addr = r.iova;
      p.cached->engine().invalidate(op);
      benchmark::DoNotOptimize(p.cached->engine().translate(r));
    }
  });
  report(state, "invalidate-page", false, rate, "invalidations/s");
}
BENCHMARK(BM_Compare_QemuStyle_InvalidatePage);
BENCHMARK(BM_Compare_Nestor_InvalidatePage);

}  // namespace
