#include "workload.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "baselines/qemu_style_iotlb.h"
#include "nestor/invalidation.h"
#include "qemu_import.h"
#include "testbed.h"
#include "trace.h"

namespace nestor::driver {

using Clock = std::chrono::steady_clock;

std::array<uint32_t, kGranularities> parse_mix(const std::string &text) {
  std::array<uint32_t, kGranularities> mix{};
  std::stringstream in(text);
  std::string item;
  uint64_t total = 0;
  while (std::getline(in, item, ',')) {
    const auto colon = item.find(':');
    if (colon == std::string::npos)
      throw std::invalid_argument("mix: '" + item + "' is not name:weight");
    const std::string name = item.substr(0, colon);
    unsigned g = 0;
    while (g < kGranularities && name != kGranularityNames[g]) ++g;
    if (g == kGranularities)
      throw std::invalid_argument("mix: unknown granularity '" + name +
                                  "' (page, range, pasid, domain, global, context, gpa, "
                                  "gpa-unused)");
    size_t used = 0;
    unsigned long w = 0;
    try {
      w = std::stoul(item.substr(colon + 1), &used);
    } catch (const std::exception &) {
      used = 0;
    }
    if (used == 0 || used != item.size() - colon - 1 || w > 1000000)
      throw std::invalid_argument("mix: bad weight in '" + item + "'");
    mix[g] = uint32_t(w);
    total += w;
  }
  if (total == 0) throw std::invalid_argument("mix: all weights are zero");
  return mix;
}

std::string format_mix(const std::array<uint32_t, kGranularities> &mix) {
  std::string s;
  for (unsigned g = 0; g < kGranularities; ++g) {
    if (!mix[g]) continue;
    if (!s.empty()) s += ',';
    s += std::string(kGranularityNames[g]) + ":" + std::to_string(mix[g]);
  }
  return s;
}

Reach reach_of(Granularity g) {
  switch (g) {
    case kPage:
    case kRange:
    case kPasidScope:
      return Reach::kSpace;
    case kContext:
      return Reach::kSourceId;
    case kDomainScope:
    case kGpa:
    case kGpaUnused:
      return Reach::kDomain;
    case kGlobal:
      return Reach::kAll;
  }
  return Reach::kAll;
}

size_t storm_picked(const DriverOptions &o, size_t spaces) {
  if (!o.inv_spaces) return (spaces + 1) / 2;
  return *o.inv_spaces == 0 || *o.inv_spaces >= spaces ? spaces : *o.inv_spaces;
}

std::vector<bool> storm_reach(const DriverOptions &o,
                              const std::vector<GuestAddressSpace> &spaces) {
  const size_t picked = storm_picked(o, spaces.size());
  std::array<bool, 4> in_mix{};
  for (unsigned g = 0; g < kGranularities; ++g)
    if (o.mix[g]) in_mix[unsigned(reach_of(Granularity(g)))] = true;
  std::set<uint16_t> sids, dids;
  for (size_t i = 0; i < picked; ++i) {
    sids.insert(spaces[i].source_id);
    dids.insert(spaces[i].did);
  }
  std::vector<bool> reach(spaces.size());
  for (size_t i = 0; i < spaces.size(); ++i)
    reach[i] = i < picked || in_mix[unsigned(Reach::kAll)] ||
               (in_mix[unsigned(Reach::kSourceId)] && sids.count(spaces[i].source_id)) ||
               (in_mix[unsigned(Reach::kDomain)] && dids.count(spaces[i].did));
  return reach;
}

SpaceGroup space_group(const RunReport &run, bool targeted) {
  SpaceGroup g;
  for (const SpaceCounts &c : run.spaces) {
    if (c.targeted != targeted) continue;
    ++g.spaces;
    g.sum.add(c);
  }
  g.sum.targeted = targeted;
  return g;
}

namespace {

// xorshift64*: a few cycles per draw, so the generator does not dominate a 7 ns translation.
struct FastRng {
  uint64_t s;
  explicit FastRng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull | 1) {}
  uint64_t operator()() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

// Pre-drawn zipf ranks: drawing from the CDF per access would cost a binary search each.
std::vector<uint32_t> zipf_samples(uint64_t pages, double s, uint64_t seed, size_t n) {
  std::vector<double> cdf(pages);
  double sum = 0;
  for (uint64_t k = 0; k < pages; ++k) cdf[k] = sum += 1.0 / std::pow(double(k + 1), s);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, sum);
  std::vector<uint32_t> out(n);
  for (auto &v : out)
    v = uint32_t(std::min<size_t>(
        pages - 1, size_t(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin())));
  return out;
}

// Cost of a clock read pair, subtracted from sampled latencies.
uint64_t clock_overhead_ns() {
  uint64_t best = ~uint64_t{0};
  for (int i = 0; i < 1000; ++i) {
    const auto a = Clock::now();
    const auto b = Clock::now();
    best = std::min<uint64_t>(best, uint64_t((b - a).count()));
  }
  return best;
}

// What the workload translates through. Each translating thread makes its own Lane; lanes
// share the target's caches. Templates, not virtual calls: a handle hit is a few ns.
class NestorTarget {
 public:
  NestorTarget(Engine &e, Path path) : engine_(e), path_(path) {}
  struct Lane {
    std::vector<AddressSpace> handles;
    std::vector<Request> requests;
  };
  Lane lane(const std::vector<const GuestAddressSpace *> &spaces) {
    Lane l;
    for (const GuestAddressSpace *s : spaces) {
      l.handles.push_back(engine_.open(s->source_id, true, s->pasid));
      l.requests.push_back(s->request());
    }
    return l;
  }
  Result translate(Lane &l, size_t k, uint64_t iova, uint8_t access) {
    if (path_ == Path::kRequest) {
      Request q = l.requests[k];
      q.iova = iova;
      q.access = access;
      return engine_.translate(q);
    }
    return l.handles[k].translate(iova, access);
  }
  void translate_batch(Lane &l, size_t k, const uint64_t *iovas, uint8_t access, Result *out,
                       size_t n) {
    l.handles[k].translate_batch(iovas, access, out, n);
  }
  // Lane space k's IOTLB hits and misses; false on the request path, which has no handle to
  // count in. On the lane's own thread (the handle's threading rule).
  bool space_counts(const Lane &l, size_t k, SpaceCounts *out) const {
    if (path_ == Path::kRequest) return false;
    const AddressSpace::HandleStats s = l.handles[k].stats();
    out->iotlb_hits = s.iotlb_hits;
    out->iotlb_misses = s.iotlb_misses;
    return true;
  }
  void guest_invalidated(const invq::InvalidationOp &) {}  // the bind layer already did it
  void submit(const invq::InvalidationOp &op) { engine_.invalidation().submit(op); }
  void wait() { engine_.invalidation().wait(); }

 private:
  Engine &engine_;
  Path path_;
};

class BaselineTarget {
 public:
  explicit BaselineTarget(baseline::QemuStyleIotlb &q) : q_(q) {}
  struct Lane {
    std::vector<Request> requests;
    std::vector<SpaceCounts> counts;  // the baseline's counters are global: per space here
  };
  Lane lane(const std::vector<const GuestAddressSpace *> &spaces) {
    Lane l;
    for (const GuestAddressSpace *s : spaces) l.requests.push_back(s->request());
    l.counts.resize(spaces.size());
    return l;
  }
  Result translate(Lane &l, size_t k, uint64_t iova, uint8_t access) {
    Request q = l.requests[k];
    q.iova = iova;
    q.access = access;
    bool hit = false;
    const Result r = q_.translate(q, &hit);
    ++(hit ? l.counts[k].iotlb_hits : l.counts[k].iotlb_misses);
    return r;
  }
  void translate_batch(Lane &l, size_t k, const uint64_t *iovas, uint8_t access, Result *out,
                       size_t n) {
    for (size_t i = 0; i < n; ++i) out[i] = translate(l, k, iovas[i], access);
  }
  bool space_counts(const Lane &l, size_t k, SpaceCounts *out) const {
    out->iotlb_hits = l.counts[k].iotlb_hits;
    out->iotlb_misses = l.counts[k].iotlb_misses;
    return true;
  }
  // The baseline's own cache must forget what the guest changed (its walker has no cache).
  void guest_invalidated(const invq::InvalidationOp &op) { submit(op); }
  void submit(const invq::InvalidationOp &op) {
    switch (op.scope) {
      case invq::Scope::kRange:
        if (op.addr_is_gpa)
          q_.invalidate_domain(op.did);  // QEMU's type-0x2 path cannot tell IOVAs from GPAs
        else
          q_.invalidate_pages(op.did, op.pasid, op.addr, op.npages);
        break;
      case invq::Scope::kPasid:
        q_.invalidate_pasid(op.did, op.pasid);
        break;
      case invq::Scope::kDomain:
        q_.invalidate_domain(op.did);
        break;
      case invq::Scope::kDevice:
        if (op.caches & invq::kCacheIotlb) q_.invalidate_all();
        break;  // context-cache only: the baseline caches no context entries
      case invq::Scope::kGlobal:
        q_.invalidate_all();
        break;
    }
  }
  void wait() {}

 private:
  baseline::QemuStyleIotlb &q_;
};

struct Shared {
  const DriverOptions *o = nullptr;
  VmMachine *machine = nullptr;
  trace::Recorder *recorder = nullptr;
  const std::vector<uint32_t> *zipf = nullptr;
  uint64_t pages = 0;
  int threads = 0;
  uint64_t clock_overhead = 0;
  std::atomic<bool> stop{false};
  std::atomic<int> finished{0};
  std::mutex mu;
  std::condition_variable cv;
  std::unique_ptr<std::atomic<uint64_t>[]> done;  // per translating thread, for progress
};

struct TranslatorResult {
  uint64_t translations = 0, faults = 0, mismatches = 0, unverified = 0, remaps = 0;
  std::array<uint64_t, kGranularities> invalidations{};
  LatencyHistogram latency;
  // (index in the machine's spaces, counts) for each space the thread drove; `counted` is
  // false when the target could not count per space.
  std::vector<std::pair<size_t, SpaceCounts>> spaces;
  bool counted = true;
};

// Address spaces a translating thread drives: its own (index % threads), which it alone remaps;
// with more threads than spaces, threads share and only the first sharer remaps and verifies.
struct Owned {
  std::vector<GuestAddressSpace *> spaces;
  std::vector<bool> mine;
};

Owned owned_by(std::vector<GuestAddressSpace> &all, int tid, int threads) {
  Owned o;
  const int n = int(all.size());
  if (threads <= n) {
    for (int i = tid; i < n; i += threads) {
      o.spaces.push_back(&all[size_t(i)]);
      o.mine.push_back(true);
    }
  } else {
    o.spaces.push_back(&all[size_t(tid % n)]);
    o.mine.push_back(tid < n);
  }
  return o;
}

template <class Target>
void translator(Shared &sh, Target &target, int tid, TranslatorResult *out) {
  const DriverOptions &o = *sh.o;
  Owned own = owned_by(sh.machine->spaces(), tid, sh.threads);
  std::vector<const GuestAddressSpace *> cspaces(own.spaces.begin(), own.spaces.end());
  typename Target::Lane lane = target.lane(cspaces);
  TranslatorResult r;
  FastRng rng(o.seed * 1000003 + uint64_t(tid));
  const std::vector<uint32_t> &zipf = *sh.zipf;
  const uint64_t zmask = zipf.size() - 1;
  const uint64_t ring_threshold = uint64_t(o.ring_fraction * 256.0);
  const uint64_t write_threshold = uint64_t(o.write_fraction * 256.0);
  const uint64_t sample_mask = o.latency_sample ? o.latency_sample - 1 : ~uint64_t{0};
  const bool sample = o.latency_sample != 0;
  std::vector<uint64_t> ring(own.spaces.size(), 0);
  std::vector<uint64_t> remaps_of(own.spaces.size(), 0);
  std::vector<uint64_t> translations_of(own.spaces.size(), 0);
  const uint64_t pages = sh.pages;
  uint64_t next_remap = o.remap_every ? o.remap_every : ~uint64_t{0};
  constexpr size_t kBatch = 32;
  uint64_t iovas[kBatch];
  Result results[kBatch];

  auto check = [&](const GuestAddressSpace &as, bool mine, uint64_t iova, const Result &res) {
    if (!res.ok) {
      ++r.faults;
      return;
    }
    if (!o.verify) return;
    if (!mine) {
      ++r.unverified;
      return;
    }
    r.mismatches += res.t.out != as.expected(iova);
  };
  auto pick_page = [&](uint64_t bits, size_t k) {
    return (bits & 0xFF) < ring_threshold ? ring[k]++ % pages : zipf[(bits >> 8) & zmask];
  };

  while (!sh.stop.load(std::memory_order_relaxed)) {
    if (o.path == Path::kBatch) {
      for (int round = 0; round < 8; ++round) {
        const uint64_t bits = rng();
        const size_t k = own.spaces.size() == 1 ? 0 : (bits >> 40) % own.spaces.size();
        const uint8_t access = ((bits >> 32) & 0xFF) < write_threshold ? kAccessWrite : kAccessRead;
        for (size_t i = 0; i < kBatch; ++i) {
          const uint64_t b = rng();
          iovas[i] = kIovaBase + pick_page(b, k) * 4096 + ((b >> 40) & 0xFF8);
        }
        const bool timed = sample && ((r.translations / kBatch) & sample_mask) == 0;
        const auto t0 = timed ? Clock::now() : Clock::time_point{};
        target.translate_batch(lane, k, iovas, access, results, kBatch);
        if (timed) {
          const uint64_t ns = uint64_t((Clock::now() - t0).count());
          r.latency.record((ns > sh.clock_overhead ? ns - sh.clock_overhead : 0) / kBatch);
        }
        r.translations += kBatch;
        translations_of[k] += kBatch;
        for (size_t i = 0; i < kBatch; ++i) {
          check(*own.spaces[k], own.mine[k], iovas[i], results[i]);
          if (sh.recorder)
            sh.recorder->translate(uint32_t(tid), own.spaces[k]->request(iovas[i], access),
                                   results[i]);
        }
      }
    } else {
      for (int i = 0; i < 256; ++i) {
        const uint64_t bits = rng();
        const size_t k = own.spaces.size() == 1 ? 0 : (bits >> 56) % own.spaces.size();
        const uint64_t page = pick_page(bits, k);
        const uint64_t iova = kIovaBase + page * 4096 + ((bits >> 36) & 0xFF8);
        const uint8_t access = ((bits >> 28) & 0xFF) < write_threshold ? kAccessWrite : kAccessRead;
        Result res;
        if (sample && (r.translations & sample_mask) == 0) {
          const auto t0 = Clock::now();
          res = target.translate(lane, k, iova, access);
          const uint64_t ns = uint64_t((Clock::now() - t0).count());
          r.latency.record(ns > sh.clock_overhead ? ns - sh.clock_overhead : 0);
        } else {
          res = target.translate(lane, k, iova, access);
        }
        ++r.translations;
        ++translations_of[k];
        check(*own.spaces[k], own.mine[k], iova, res);
        if (sh.recorder) {
          sh.recorder->translate(uint32_t(tid), own.spaces[k]->request(iova, access), res);
        }
      }
    }
    if (r.translations >= next_remap) {
      next_remap += o.remap_every;
      const uint64_t bits = rng();
      const size_t k = own.spaces.size() == 1 ? 0 : (bits >> 40) % own.spaces.size();
      if (own.mine[k]) {
        const uint64_t n = std::min(o.remap_pages, pages);
        const uint64_t first = (bits & 0xFFFFFFFF) % (pages - n + 1);
        const invq::InvalidationOp op = sh.machine->remap(*own.spaces[k], first, n);
        target.guest_invalidated(op);
        ++r.remaps;
        ++remaps_of[k];
        ++r.invalidations[n == 1 ? kPage : kRange];
        if (sh.recorder) {
          sh.recorder->invalidate(uint32_t(tid), op);
          sh.recorder->wait(uint32_t(tid));
        }
      }
    }
    sh.done[size_t(tid)].store(r.translations, std::memory_order_relaxed);
    if (o.ops && r.translations >= o.ops) break;
  }
  for (size_t k = 0; k < own.spaces.size() && r.counted; ++k) {
    SpaceCounts c;
    r.counted = target.space_counts(lane, k, &c);
    c.translations = translations_of[k];
    c.remaps = remaps_of[k];
    r.spaces.emplace_back(size_t(own.spaces[k] - sh.machine->spaces().data()), c);
  }
  *out = std::move(r);
  {
    std::lock_guard lock(sh.mu);
    sh.finished.fetch_add(1);
  }
  sh.cv.notify_all();
}

struct InvalidatorResult {
  std::array<uint64_t, kGranularities> invalidations{};
  LatencyHistogram latency;  // per batch: first submit to wait return
  // Per picked space (storm_picked), the operations addressed to it by how far they reach.
  std::vector<std::array<uint64_t, 4>> addressed;
};

template <class Target>
void invalidator(Shared &sh, Target &target, int id, InvalidatorResult *out) {
  const DriverOptions &o = *sh.o;
  std::vector<GuestAddressSpace> &spaces = sh.machine->spaces();
  FastRng rng(o.seed * 7919 + uint64_t(id) + 1);
  uint32_t cumulative[kGranularities];
  uint32_t total = 0;
  for (unsigned g = 0; g < kGranularities; ++g) cumulative[g] = total += o.mix[g];
  InvalidatorResult r;
  const size_t picked = storm_picked(o, spaces.size());
  r.addressed.resize(picked);
  const auto period = o.inv_rate > 0 ? std::chrono::duration<double>(o.inv_batch / o.inv_rate)
                                     : std::chrono::duration<double>(0);
  auto next = Clock::now();
  const uint32_t tid = uint32_t(1000 + id);
  // Per VM, the descriptors of this batch its guest writes into its own queue (--direct-queues).
  const bool direct = sh.machine->direct_queues();
  std::vector<std::vector<VmMachine::GuestDescriptor>> guest(
      direct ? size_t(sh.machine->config().vms) : 0);
  // At least one batch, however short the run: a storm that never stormed proves nothing.
  do {
    const auto t0 = Clock::now();
    for (uint32_t b = 0; b < o.inv_batch; ++b) {
      // A batch is cut short once the run is over (after at least one op, so every
      // invalidator still storms): 64 threads x 100000-op batches ran seconds past a 0.05 s run.
      if (b > 0 && (b & 63) == 0 && sh.stop.load(std::memory_order_relaxed)) break;
      const uint64_t bits = rng();
      const uint32_t pick = uint32_t(bits % total);
      unsigned g = 0;
      while (pick >= cumulative[g]) ++g;
      const size_t target_index = (bits >> 32) % picked;
      const GuestAddressSpace &as = spaces[target_index];
      invq::InvalidationOp op;
      op.caches = invq::kCacheIotlb | invq::kCachePaging;
      op.did = as.did;
      op.source_id = as.source_id;
      op.pasid = as.pasid;
      const uint64_t page = (bits >> 16) % sh.pages;
      switch (g) {
        case kPage:
        case kRange:
          op.scope = invq::Scope::kRange;
          op.npages = g == kPage ? 1 : std::min<uint64_t>(sh.pages - page, 2u << ((bits >> 8) % 9));
          op.addr = kIovaBase + page * 4096;
          op.leaf = true;
          break;
        case kPasidScope:
          op.scope = invq::Scope::kPasid;
          break;
        case kDomainScope:
          op.scope = invq::Scope::kDomain;
          break;
        case kGlobal:
          op.scope = invq::Scope::kGlobal;
          break;
        case kContext:
          op.caches = invq::kCacheContext | invq::kCachePasid;
          op.scope = invq::Scope::kDevice;
          break;
        case kGpa:
          op.scope = invq::Scope::kRange;
          op.addr_is_gpa = true;
          // A guest-physical page of this space's slice; its current IOVA mapping belongs to
          // the owning thread, so the invalidator does not read it.
          op.addr = uint64_t(as.slice_first + page % as.slice_pages) * 4096;
          op.npages = 1;
          op.leaf = true;
          break;
        case kGpaUnused:
          op.scope = invq::Scope::kRange;
          op.addr_is_gpa = true;
          op.addr = uint64_t(as.balloon_first + page % kBalloonPages) * 4096;
          op.npages = 1;
          op.leaf = true;
          break;
      }
      if (direct && (g == kPage || g == kRange || g == kPasidScope)) {
        // What a guest may say about its own PASIDs goes through its VM's queue; the host's
        // granularities (domain, global, context, GPA) stay host operations.
        VmMachine::guest_descriptors(as, op, &guest[size_t(as.vm)]);
        target.guest_invalidated(op);
      } else {
        target.submit(op);
      }
      ++r.invalidations[g];
      ++r.addressed[target_index][unsigned(reach_of(Granularity(g)))];
      if (sh.recorder) sh.recorder->invalidate(tid, op);
    }
    for (size_t vm = 0; vm < guest.size(); ++vm) {
      if (guest[vm].empty()) continue;
      sh.machine->submit_to_queue(int(vm), guest[vm]);
      guest[vm].clear();
    }
    target.wait();
    if (sh.recorder) sh.recorder->wait(tid);
    r.latency.record(uint64_t((Clock::now() - t0).count()));
    if (o.inv_rate > 0) {
      next += std::chrono::duration_cast<Clock::duration>(period);
      std::this_thread::sleep_until(next);  // pacing a producer, not synchronisation
    }
  } while (!sh.stop.load(std::memory_order_relaxed));
  *out = std::move(r);
}

// Fills run->spaces from the threads' counts (left empty if any thread could not count) and
// says which spaces the storm targeted and how many of its operations reached each.
void per_space(const DriverOptions &o, const std::vector<GuestAddressSpace> &all,
               const std::vector<TranslatorResult> &tr, const std::vector<InvalidatorResult> &ir,
               RunReport *run) {
  for (const auto &t : tr)
    if (!t.counted) return;
  run->spaces.assign(all.size(), SpaceCounts{});
  for (const auto &t : tr)
    for (const auto &[index, c] : t.spaces) run->spaces[index].add(c);
  std::vector<uint64_t> own(all.size(), 0);
  std::map<uint16_t, uint64_t> by_source_id, by_domain;
  uint64_t everywhere = 0;
  for (const auto &i : ir) {
    for (size_t s = 0; s < i.addressed.size(); ++s) {
      own[s] += i.addressed[s][unsigned(Reach::kSpace)];
      by_source_id[all[s].source_id] += i.addressed[s][unsigned(Reach::kSourceId)];
      by_domain[all[s].did] += i.addressed[s][unsigned(Reach::kDomain)];
      everywhere += i.addressed[s][unsigned(Reach::kAll)];
    }
  }
  const std::vector<bool> reach = ir.empty() ? std::vector<bool>(all.size()) : storm_reach(o, all);
  for (size_t s = 0; s < all.size(); ++s) {
    SpaceCounts &c = run->spaces[s];
    c.targeted = reach[s];
    c.storm_ops = own[s] + everywhere;
    if (auto it = by_source_id.find(all[s].source_id); it != by_source_id.end())
      c.storm_ops += it->second;
    if (auto it = by_domain.find(all[s].did); it != by_domain.end()) c.storm_ops += it->second;
  }
}

template <class Target>
RunReport run_mix_on(const DriverOptions &o, VmMachine &m, Target &target, int threads,
                     uint64_t pages, trace::Recorder *recorder, const std::string &target_name) {
  Shared sh;
  sh.o = &o;
  sh.machine = &m;
  sh.recorder = recorder;
  sh.pages = pages;
  sh.threads = threads;
  sh.clock_overhead = clock_overhead_ns();
  const std::vector<uint32_t> zipf = zipf_samples(pages, o.zipf_s, o.seed, 1 << 16);
  sh.zipf = &zipf;
  sh.done = std::make_unique<std::atomic<uint64_t>[]>(size_t(threads));
  if (recorder && threads > int(m.spaces().size())) recorder->mark_concurrent();
  const int invalidators = o.scenario == "storm" ? o.invalidators : 0;

  std::vector<TranslatorResult> tr(static_cast<size_t>(threads));
  std::vector<InvalidatorResult> ir(static_cast<size_t>(invalidators));
  const EngineStats before = m.engine().stats();
  const auto t0 = Clock::now();
  {
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t)
      workers.emplace_back([&, t] { translator(sh, target, t, &tr[size_t(t)]); });
    for (int i = 0; i < invalidators; ++i)
      workers.emplace_back([&, i] { invalidator(sh, target, i, &ir[size_t(i)]); });
    // The driving thread only ends the run and reports progress; workers stop on `stop`.
    const auto deadline =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
    std::unique_lock lock(sh.mu);
    for (;;) {
      const bool all_done = sh.finished.load() == threads;
      if (all_done || (!o.ops && Clock::now() >= deadline)) break;
      sh.cv.wait_for(lock, std::chrono::milliseconds(100));
      if (o.progress) {
        uint64_t n = 0;
        for (int t = 0; t < threads; ++t) n += sh.done[size_t(t)].load(std::memory_order_relaxed);
        const double frac =
            o.ops ? double(n) / double(o.ops * uint64_t(threads))
                  : std::chrono::duration<double>(Clock::now() - t0).count() / o.seconds;
        lock.unlock();
        o.progress(std::min(frac, 1.0), n);
        lock.lock();
      }
    }
    lock.unlock();
    sh.stop.store(true);
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  RunReport rep;
  rep.target = target_name;
  rep.threads = threads;
  rep.invalidators = invalidators;
  rep.pages = pages;
  rep.seconds = secs;
  for (const auto &t : tr) {
    rep.translations += t.translations;
    rep.faults += t.faults;
    rep.mismatches += t.mismatches;
    rep.unverified += t.unverified;
    rep.remaps += t.remaps;
    for (unsigned g = 0; g < kGranularities; ++g) rep.invalidations[g] += t.invalidations[g];
    rep.translate_ns.merge(t.latency);
  }
  for (const auto &i : ir) {
    for (unsigned g = 0; g < kGranularities; ++g) rep.invalidations[g] += i.invalidations[g];
    rep.invalidate_ns.merge(i.latency);
  }
  per_space(o, m.spaces(), tr, ir, &rep);
  rep.stats = m.engine().stats() - before;
  rep.owner_queues = m.owner_queues();  // a fresh machine per run: its counters are the run's
  return rep;
}

RunReport run_mix(const DriverOptions &o, bool baseline, int threads, uint64_t pages, bool record) {
  MachineConfig mc = o.machine;
  mc.pages = pages;
  EngineConfig ec = o.engine;
  if (baseline) ec.caching = false;  // the baseline caches; its walker must not
  VmMachine m(mc, ec);
  // Declared after the machine: released before its engine goes.
  std::shared_ptr<void> observer;
  if (o.observe_engine && !baseline) observer = o.observe_engine(m.engine());
  std::unique_ptr<trace::Recorder> recorder;
  if (record) recorder = std::make_unique<trace::Recorder>(m.engine());
  m.build();
  RunReport rep;
  if (baseline) {
    baseline::QemuStyleIotlb q(m.engine());
    for (const auto &s : m.spaces()) q.set_did(s.source_id, s.did);
    BaselineTarget t(q);
    rep = run_mix_on(o, m, t, threads, pages, nullptr, "baseline");
    const auto c = q.counts();
    rep.has_cache_stats = false;
    rep.baseline_hits = c.hits;
    rep.baseline_misses = c.misses;
    rep.baseline_flushes = c.full_flushes;
  } else {
    NestorTarget t(m.engine(), o.path);
    rep = run_mix_on(o, m, t, threads, pages, recorder.get(), "nestor");
  }
  if (recorder) recorder->save(o.record_path);
  return rep;
}

void settings_common(const DriverOptions &o, ScenarioReport *rep) {
  const MachineConfig &m = o.machine;
  auto &s = rep->settings;
  s.emplace_back("vms", std::to_string(m.vms));
  s.emplace_back("devices/vm", std::to_string(m.devices_per_vm));
  s.emplace_back("pasids/device", std::to_string(m.pasids_per_device));
  s.emplace_back("tables", "FL " + std::to_string(m.fl_levels) + "-level on SL " +
                               std::to_string(m.sl_levels) + "-level");
  s.emplace_back("path", o.path == Path::kHandle    ? "handle"
                         : o.path == Path::kRequest ? "request"
                                                    : "batch");
  s.emplace_back("access mix", std::to_string(int(o.ring_fraction * 100)) + "% ring, zipf(" +
                                   std::to_string(o.zipf_s).substr(0, 4) + "), " +
                                   std::to_string(int(o.write_fraction * 100)) + "% writes");
  s.emplace_back("remaps", o.remap_every ? std::to_string(o.remap_pages) + " pages every " +
                                               std::to_string(o.remap_every) + " translations"
                                         : "off");
  s.emplace_back("guest invalidation",
                 m.direct_queues
                     ? "owner-direct queues (DIRECT_INVLD): 0x6 + 0x8 per aligned block, one wait"
                     : "forwarded (BindLayer::cache_invalidate, CACHE_INVLD), one call per remap");
  s.emplace_back("duration", o.ops ? std::to_string(o.ops) + " translations/thread"
                                   : std::to_string(o.seconds).substr(0, 5) + " s/run");
}

void add_run(ScenarioReport *rep, RunReport run, const std::string &label) {
  run.label = label;
  if (run.mismatches) rep->failed = true;
  rep->runs.push_back(std::move(run));
}

ScenarioReport run_vm_mix_like(const DriverOptions &o) {
  ScenarioReport rep;
  rep.scenario = o.scenario;
  settings_common(o, &rep);
  if (o.scenario == "storm") {
    rep.settings.emplace_back("invalidators", std::to_string(o.invalidators));
    rep.settings.emplace_back("granularity mix", format_mix(o.mix));
    rep.settings.emplace_back(
        "invalidation rate",
        o.inv_rate > 0 ? std::to_string(uint64_t(o.inv_rate)) + "/s/thread" : "unthrottled");
    rep.settings.emplace_back("batch", std::to_string(o.inv_batch) + " ops per wait");
    const MachineConfig &mc = o.machine;
    const size_t count = size_t(mc.vms) * size_t(mc.devices_per_vm) * size_t(mc.pasids_per_device);
    const size_t picked = storm_picked(o, count);
    rep.settings.emplace_back("invalidated spaces",
                              o.invalidators == 0 ? "none (no invalidators)"
                              : picked == count   ? "all " + std::to_string(count)
                                                  : "first " + std::to_string(picked) + " of " +
                                                      std::to_string(count) + " (--inv-spaces)");
    rep.notes.push_back(
        "targeted spaces: the invalidators address the first " + std::to_string(picked) + " of " +
        std::to_string(count) +
        " address spaces (--inv-spaces); a space is targeted when an operation of the mix can "
        "reach it: page, range and pasid operations reach the space addressed, context "
        "operations every space of its device, domain, gpa and gpa-unused operations every "
        "space of its domain, global operations every space. Untargeted spaces see no storm "
        "operation; guest remaps (--remap-every) invalidate pages of every space, both groups.");
    rep.notes.push_back(
        "hit rate by group: translations answered without an IOTLB miss / translations "
        "(nestor: by its handle cache or an IOTLB hit; baseline: by its table). 'IOTLB "
        "lookups' is nestor's IOTLB alone, over the translations its handle caches passed on.");
    if (o.path == Path::kRequest)
      rep.notes.push_back(
          "nestor's request path has no address-space handle to count in: its hit rates by "
          "group need --path handle or batch");
  }
  bool record = !o.record_path.empty();
  if (o.scenario == "scaling") {
    std::vector<int> counts = o.thread_counts;
    if (counts.empty())
      for (int t = 1; t <= o.threads; ++t) counts.push_back(t);
    for (int t : counts) {
      add_run(&rep, run_mix(o, false, t, o.pages.front(), record), "threads=" + std::to_string(t));
      record = false;
      if (o.baseline)
        add_run(&rep, run_mix(o, true, t, o.pages.front(), false), "threads=" + std::to_string(t));
    }
    return rep;
  }
  for (uint64_t pages : o.pages) {
    const std::string label = "pages=" + std::to_string(pages);
    add_run(&rep, run_mix(o, false, o.threads, pages, record), label);
    record = false;
    if (o.baseline) add_run(&rep, run_mix(o, true, o.threads, pages, false), label);
  }
  return rep;
}

ScenarioReport run_walk(const DriverOptions &o) {
  ScenarioReport rep;
  rep.scenario = "walk";
  rep.settings.emplace_back("pages", std::to_string(o.walk_pages));
  rep.settings.emplace_back("engine", "uncached: every translation is a full nested walk");
  bool record = !o.record_path.empty();
  for (int fl : o.walk_fl_levels) {
    for (int sl : o.walk_sl_levels) {
      bench::TestbedConfig tc;
      tc.mode = bench::Mode::kNested;
      tc.working_set_pages = o.walk_pages;
      tc.fl_levels = fl;
      tc.sl_levels = sl;
      tc.sl_page_shift = 12;  // 4K second-level pages: every nested table read walks SL fully
      EngineConfig ec = o.engine;
      ec.caching = false;
      std::unique_ptr<trace::Recorder> recorder;
      // Set while the testbed builds (so its setup is observed), hence declared before it;
      // `release` below drops it before the testbed's engine is destroyed.
      std::shared_ptr<void> observer;
      bench::Testbed bed(tc, ec, [&](Engine &e) {
        if (o.observe_engine) observer = o.observe_engine(e);
        if (record) recorder = std::make_unique<trace::Recorder>(e);
      });
      const struct Release {
        std::shared_ptr<void> &p;
        ~Release() { p.reset(); }
      } release{observer};
      const auto &dev = bed.devices().front();
      std::vector<uint64_t> order(o.walk_pages);
      for (uint64_t i = 0; i < o.walk_pages; ++i) order[i] = i;
      std::shuffle(order.begin(), order.end(), std::mt19937_64(o.seed));
      const uint64_t n = o.ops ? o.ops : o.walk_pages;
      const EngineStats before = bed.engine().stats();
      WalkRow row;
      row.fl_levels = fl;
      row.sl_levels = sl;
      const auto t0 = Clock::now();
      for (uint64_t i = 0; i < n; ++i) {
        Request q{dev.source_id, true, dev.pasid, bed.iova(order[i % o.walk_pages]),
                  kAccessRead,   false};
        const Result r = bed.engine().translate(q);
        row.faults += !r.ok;
        if (recorder) recorder->translate(0, q, r);
      }
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      const EngineStats s = bed.engine().stats() - before;
      row.walks = s.iotlb.walks;
      row.ns_per_walk = secs * 1e9 / double(n);
      row.refs_per_walk = s.iotlb.walks ? double(s.iotlb.walk_refs) / double(s.iotlb.walks) : 0;
      if (row.faults) rep.failed = true;
      rep.walks.push_back(row);
      if (recorder) recorder->save(o.record_path);
      record = false;
      if (o.progress)
        o.progress(
            double(rep.walks.size()) / double(o.walk_fl_levels.size() * o.walk_sl_levels.size()),
            n);
    }
  }
  return rep;
}

ScenarioReport run_replay(const DriverOptions &o) {
  ScenarioReport rep;
  rep.scenario = o.scenario;
  std::vector<uint8_t> bytes;
  if (!o.qemu_log.empty()) {
    std::ifstream in(o.qemu_log);
    if (!in) throw std::runtime_error("cannot open QEMU log " + o.qemu_log);
    trace::QemuImportStats st;
    bytes = trace::import_qemu_log(in, &st);
    rep.notes.push_back("imported " + o.qemu_log + ": " + st.summary());
    if (o.scenario == "import-qemu") {
      if (o.trace_path.empty()) throw std::runtime_error("import-qemu needs --trace OUT");
      trace::Writer::save_bytes(bytes, o.trace_path);
      rep.notes.push_back("wrote " + o.trace_path + " (" + std::to_string(bytes.size()) +
                          " bytes)");
      return rep;
    }
    rep.settings.emplace_back("source", o.qemu_log);
  } else {
    if (o.scenario == "import-qemu")
      throw std::runtime_error("import-qemu needs --qemu-log LOG (the input) and --trace OUT");
    if (o.trace_path.empty()) throw std::runtime_error("replay needs --trace FILE or --qemu-log");
    bytes = trace::Reader::read_file(o.trace_path);
    rep.settings.emplace_back("source", o.trace_path);
  }
  for (bool caching : {true, false}) {
    if (!caching && !o.baseline) break;
    trace::Reader reader(bytes);
    trace::ReplayOptions ro;
    ro.caching = caching;
    ro.repeat = o.replay_repeat;
    trace::ReplayResult res;
    if (caching && o.observe_engine) {
      // The engine replay() would build, built here so it can be observed first.
      Engine engine(trace::replay_setup(reader, ro).engine);
      const std::shared_ptr<void> observer = o.observe_engine(engine);
      res = trace::replay(reader, engine, ro);
    } else {
      res = trace::replay(reader, ro);
    }
    RunReport run;
    run.label = caching ? "replay" : "replay uncached";
    run.target = caching ? "nestor" : "uncached";
    run.threads = 1;
    run.seconds = res.seconds;
    run.translations = res.translations;
    run.faults = res.faults;
    run.mismatches = res.divergences;
    run.stats = res.stats;
    // Replayed operations by scope (a trace does not say which were single pages).
    run.invalidations[kGlobal] = res.by_scope[unsigned(invq::Scope::kGlobal)];
    run.invalidations[kDomainScope] = res.by_scope[unsigned(invq::Scope::kDomain)];
    run.invalidations[kContext] = res.by_scope[unsigned(invq::Scope::kDevice)];
    run.invalidations[kPasidScope] = res.by_scope[unsigned(invq::Scope::kPasid)];
    run.invalidations[kRange] = res.by_scope[unsigned(invq::Scope::kRange)];
    rep.notes.push_back(std::string(caching ? "cached" : "uncached") +
                        " replay: " + std::to_string(res.records) + " records, " +
                        std::to_string(res.checked) + " translations checked, " +
                        std::to_string(res.divergences) + " divergences" +
                        (res.concurrent ? " (concurrent recording: divergences expected)" : ""));
    for (const auto &m : res.messages) rep.notes.push_back("  " + m);
    if (res.divergences && !res.concurrent) rep.failed = true;
    rep.runs.push_back(std::move(run));
  }
  return rep;
}

}  // namespace

ScenarioReport run_scenario(const DriverOptions &o) {
  if (o.scenario == "walk") return run_walk(o);
  if (o.scenario == "replay" || o.scenario == "import-qemu") return run_replay(o);
  if (o.scenario == "vm-mix" || o.scenario == "storm" || o.scenario == "scaling") {
    if (o.latency_sample & (o.latency_sample - 1))
      throw std::invalid_argument("latency sample interval must be a power of two");
    if (o.pages.empty()) throw std::invalid_argument("no working set size given");
    return run_vm_mix_like(o);
  }
  throw std::invalid_argument("unknown scenario '" + o.scenario + "'");
}

}  // namespace nestor::driver
