// nestor-bench: the workload driver. Builds a machine (VMs, second-level domains, guest
// first-level tables, devices), then drives translations from several threads and reports
// throughput and faults.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "testbed.h"

using namespace nestor;

namespace {

struct Options {
  std::string scenario = "vm-mix";
  int threads = 2;
  double seconds = 2.0;
  int vms = 2;
  uint64_t pages = 4096;
  int fl_levels = 4;
  int sl_levels = 4;
  uint64_t seed = 1;
  bool json = false;
};

struct ThreadResult {
  uint64_t translations = 0;
  uint64_t faults = 0;
};

// Per-thread access mix: half sequential DMA-ring sweeps, half zipf-like hot buffers.
void run_worker(Engine &engine, const std::vector<bench::Testbed::Device> &devs, uint64_t pages,
                uint64_t seed, const std::atomic<bool> &stop, ThreadResult *out) {
  std::mt19937_64 rng(seed);
  uint64_t ring = 0;
  ThreadResult r;
  // One address-space handle per device per thread: the path an emulator's device model uses.
  std::vector<AddressSpace> handles;
  for (const auto &d : devs) handles.push_back(engine.open(d.source_id, true, d.pasid));
  while (!stop.load(std::memory_order_relaxed)) {
    for (int i = 0; i < 256; ++i) {
      AddressSpace &h = handles[rng() % handles.size()];
      uint64_t page;
      if (i & 1) {
        page = ring++ % pages;
      } else {
        // Squaring a uniform variate skews toward low pages: a cheap zipf-like hot set.
        const double u = double(rng() >> 11) * 0x1.0p-53;
        page = uint64_t(u * u * double(pages)) % pages;
      }
      const uint64_t iova = bench::kIovaBase + page * 4096 + (rng() & 0xFF8);
      const uint8_t access = (rng() & 3) == 0 ? kAccessWrite : kAccessRead;
      Result res = h.translate(iova, access);
      r.translations++;
      if (!res.ok) r.faults++;
    }
  }
  *out = r;
}

int run(const Options &o) {
  bench::TestbedConfig tc;
  tc.vms = o.vms;
  tc.working_set_pages = o.pages;
  tc.fl_levels = o.fl_levels;
  tc.sl_levels = o.sl_levels;
  if (o.scenario == "walk") tc.sl_page_shift = 12;
  bench::Testbed bed(tc);
  std::atomic<bool> stop{false};
  std::vector<ThreadResult> results(size_t(o.threads));
  std::vector<std::thread> threads;
  const auto t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < o.threads; ++t)
    threads.emplace_back(run_worker, std::ref(bed.engine()), std::cref(bed.devices()), o.pages,
                         o.seed + uint64_t(t), std::cref(stop), &results[size_t(t)]);
  // The driver thread only times the run; workers synchronise on `stop`.
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  stop.store(true);
  for (auto &t : threads) t.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ThreadResult total;
  for (auto &r : results) {
    total.translations += r.translations;
    total.faults += r.faults;
  }
  const double rate = double(total.translations) / secs;
  if (o.json) {
    std::printf(
        "{\"scenario\":\"%s\",\"threads\":%d,\"vms\":%d,\"pages\":%llu,\"seconds\":%.3f,"
        "\"translations\":%llu,\"faults\":%llu,\"translations_per_second\":%.0f}\n",
        o.scenario.c_str(), o.threads, o.vms, (unsigned long long)o.pages, secs,
        (unsigned long long)total.translations, (unsigned long long)total.faults, rate);
  } else {
    std::printf("nestor-bench  scenario=%s  threads=%d  vms=%d  pages/device=%llu  FL=%d-level  "
                "SL=%d-level\n",
                o.scenario.c_str(), o.threads, o.vms, (unsigned long long)o.pages, o.fl_levels,
                o.sl_levels);
    std::printf("  %-22s %12.3f\n", "seconds", secs);
    std::printf("  %-22s %12llu\n", "translations", (unsigned long long)total.translations);
    std::printf("  %-22s %12llu\n", "faults", (unsigned long long)total.faults);
    std::printf("  %-22s %12.2f M/s\n", "throughput", rate / 1e6);
  }
  return total.faults == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
  CLI::App app{"nestor-bench: workload driver for the nestor IOMMU engine"};
  Options o;
  app.add_option("--scenario", o.scenario, "vm-mix (default) or walk (cold nested walks)")
      ->check(CLI::IsMember({"vm-mix", "walk"}));
  app.add_option("--threads", o.threads, "translating threads")->check(CLI::Range(1, 256));
  app.add_option("--seconds", o.seconds, "run time")->check(CLI::Range(0.01, 86400.0));
  app.add_option("--vms", o.vms, "virtual machines (one domain and device each)")
      ->check(CLI::Range(1, 64));
  app.add_option("--pages", o.pages, "4K pages mapped per device")->check(CLI::Range(1, 1 << 22));
  app.add_option("--fl-levels", o.fl_levels, "guest first-level levels")
      ->check(CLI::IsMember({4, 5}));
  app.add_option("--sl-levels", o.sl_levels, "host second-level levels")
      ->check(CLI::IsMember({3, 4, 5}));
  app.add_option("--seed", o.seed, "random seed");
  app.add_flag("--json", o.json, "machine-readable output");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "nestor-bench: %s\n", e.what());
    return 2;
  }
}
