// The workload driver's scenarios and what they report. nestor_bench.cpp turns the command
// line (or a config file) into DriverOptions and prints the ScenarioReport; tests call
// run_scenario() directly.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "histogram.h"
#include "nestor/engine.h"
#include "vm_machine.h"

namespace nestor::driver {

enum class Path { kHandle, kRequest, kBatch };

// Invalidation granularities, as the invalidating threads (and guest remaps) issue them.
// kGpa: a second-level (type 0x2) invalidation of a guest data page the space uses; kGpaUnused:
// of a "balloon" page of the same VM that no IOVA maps (a host change nothing depends on).
enum Granularity : unsigned {
  kPage,
  kRange,
  kPasidScope,
  kDomainScope,
  kGlobal,
  kContext,
  kGpa,
  kGpaUnused
};
inline constexpr unsigned kGranularities = 8;
inline constexpr const char *kGranularityNames[kGranularities] = {
    "page", "range", "pasid", "domain", "global", "context", "gpa", "gpa-unused"};

// Largest --ops: 2^40 translations per thread is days of work; -1 or 2^64 is a typo.
inline constexpr uint64_t kMaxOps = uint64_t{1} << 40;

struct DriverOptions {
  std::string scenario = "vm-mix";  // vm-mix, storm, scaling, walk, replay, import-qemu
  MachineConfig machine;
  std::vector<uint64_t> pages = {4096};  // working sets to run (vm-mix: one run each)
  int threads = 2;
  std::vector<int> thread_counts;  // scaling; empty: 1..threads
  double seconds = 2.0;
  uint64_t ops = 0;  // > 0: translations per thread instead of a duration (<= kMaxOps)
  Path path = Path::kHandle;
  double ring_fraction = 0.5;  // accesses that follow the address space's DMA ring
  double zipf_s = 0.99;        // the other accesses: zipf over the address space's pages
  double write_fraction = 0.25;
  uint64_t remap_every = 4096;   // a guest remap per thread after this many translations; 0 off
  uint64_t remap_pages = 8;      // pages one remap moves (one range invalidation)
  bool verify = true;            // check each translation against the guest's mapping
  uint32_t latency_sample = 64;  // time one translation in this many (a power of two)
  uint64_t seed = 1;
  // storm
  int invalidators = 1;
  std::array<uint32_t, kGranularities> mix = {50, 20, 15, 10, 5, 0, 0, 0};
  double inv_rate = 0;     // per invalidating thread, operations/s; 0 = unthrottled
  uint32_t inv_batch = 8;  // operations per wait
  // Invalidators address only the first inv_spaces address spaces of the machine (see
  // storm_picked, storm_reach). Unset: half of them, rounded up, so that a default run has
  // spaces the storm cannot reach to compare with; 0 or at least the count: all of them.
  std::optional<uint32_t> inv_spaces;
  // walk
  std::vector<int> walk_fl_levels = {4, 5};
  std::vector<int> walk_sl_levels = {3, 4, 5};
  uint64_t walk_pages = 65536;
  // every scenario
  bool baseline = false;  // also run the QEMU-style baseline on the same workload
  EngineConfig engine;
  std::string record_path;  // write a trace of the (first) nestor run
  std::string trace_path;   // replay: the trace to run; import-qemu: where to write it
  std::string qemu_log;     // replay / import-qemu: a QEMU vtd_* trace-event log
  uint32_t replay_repeat = 1;
  // Called about 10 times a second from the driving thread: fraction done, translations so far.
  std::function<void(double, uint64_t)> progress;
  // Called with each engine a nestor run creates (vm-mix/storm/scaling machines, walk testbeds,
  // the cached replay), before anything is built on it, so setup events are seen too. What it
  // returns is destroyed before that engine is: nestor-bench --trace-events returns its event
  // hook there. Not called for the baseline's walker engine or the QEMU importer's engine.
  std::function<std::shared_ptr<void>(Engine &)> observe_engine;
};

// Parses "page:50,range:20,..." into weights; throws std::invalid_argument with the reason.
std::array<uint32_t, kGranularities> parse_mix(const std::string &text);
std::string format_mix(const std::array<uint32_t, kGranularities> &mix);

// How far one storm operation reaches beyond the address space it was addressed to.
enum class Reach { kSpace, kSourceId, kDomain, kAll };
// page, range, pasid: that (domain, PASID) only; context: every PASID of the source-id; domain,
// gpa, gpa-unused: every space of the domain (a type 0x2 operation removes the domain's
// first-level and nested entries); global: every space.
Reach reach_of(Granularity g);

// Address spaces the storm's invalidators address: the first this many of the machine's.
size_t storm_picked(const DriverOptions &o, size_t spaces);
// Per address space of the machine: whether some operation of o.mix, addressed to one of the
// picked spaces, can reach it (reach_of). These are the storm's targeted spaces; the others
// see no storm operation at all (guest remaps of their own pages aside).
std::vector<bool> storm_reach(const DriverOptions &o, const std::vector<GuestAddressSpace> &spaces);

// One address space over a run: where its translations were answered and what reached it.
struct SpaceCounts {
  bool targeted = false;      // storm_reach
  uint64_t translations = 0;  // counted by the driver's translating threads
  uint64_t iotlb_hits = 0;    // nestor: AddressSpace::stats(); baseline: its table's lookups
  uint64_t iotlb_misses = 0;  // lookups that missed: a walk followed
  uint64_t storm_ops = 0;     // storm operations that can reach it (reach_of)
  uint64_t remaps = 0;        // guest remaps of its own pages (range invalidations)
  uint64_t lookups() const { return iotlb_hits + iotlb_misses; }
  // Answered without an IOTLB lookup: by nestor's handle cache (a translation faulting before
  // the IOTLB would count here too; the run's faults say there were none). Baseline: none.
  uint64_t above_iotlb() const { return translations - lookups(); }
  uint64_t hits() const { return translations - iotlb_misses; }
  // Translations answered without an IOTLB miss: comparable between nestor (two cache levels)
  // and the baseline (one).
  double hit_rate() const { return translations ? double(hits()) / double(translations) : 0.0; }
  double iotlb_hit_rate() const { return lookups() ? double(iotlb_hits) / double(lookups()) : 0.0; }
  void add(const SpaceCounts &o) {
    translations += o.translations;
    iotlb_hits += o.iotlb_hits;
    iotlb_misses += o.iotlb_misses;
    storm_ops += o.storm_ops;
    remaps += o.remaps;
  }
};

struct RunReport {
  std::string label;   // what differs between the runs of one scenario
  std::string target;  // "nestor" or "baseline"
  int threads = 0, invalidators = 0;
  uint64_t pages = 0;
  double seconds = 0;
  uint64_t translations = 0, faults = 0, mismatches = 0, unverified = 0;
  uint64_t remaps = 0;
  std::array<uint64_t, kGranularities> invalidations{};
  LatencyHistogram translate_ns, invalidate_ns;
  EngineStats stats;  // engine counters over the run (baseline: its walker engine's)
  bool has_cache_stats = true;
  uint64_t baseline_hits = 0, baseline_misses = 0, baseline_flushes = 0;
  // Per address space of the machine, in its order; empty when the target cannot count per
  // space (nestor's request path has no handle to count in).
  std::vector<SpaceCounts> spaces;
  // Per VM with --direct-queues: its queue's counters over the run.
  std::vector<OwnerQueueReport> owner_queues;
  double rate() const { return seconds > 0 ? double(translations) / seconds : 0.0; }
};

// The targeted (or untargeted) spaces of a run, summed; `spaces` is how many there are.
struct SpaceGroup {
  size_t spaces = 0;
  SpaceCounts sum;
};
SpaceGroup space_group(const RunReport &run, bool targeted);

struct WalkRow {
  int fl_levels = 0, sl_levels = 0;
  uint64_t walks = 0, faults = 0;
  double ns_per_walk = 0, refs_per_walk = 0;
};

struct ScenarioReport {
  std::string scenario;
  std::vector<std::pair<std::string, std::string>> settings;  // echoed configuration
  std::vector<RunReport> runs;
  std::vector<WalkRow> walks;
  std::vector<std::string> notes;  // replay/import summaries, divergence messages
  bool failed = false;             // wrong translations, divergences: exit status 1
};

// Runs the scenario; throws std::exception with a message for bad options or input.
ScenarioReport run_scenario(const DriverOptions &o);

}  // namespace nestor::driver
