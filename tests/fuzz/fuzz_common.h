// Shared helpers for the libFuzzer targets (tests/fuzz). Failures call FUZZ_CHECK, which
// prints what broke and aborts so libFuzzer records the input as a crash.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include <fuzzer/FuzzedDataProvider.h>

#include "nestor/engine.h"

#define FUZZ_CHECK(cond, ...)                                                             \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d): ", #cond, __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                                                  \
      std::fprintf(stderr, "\n");                                                         \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace nestor::fuzz {

// Small caches and logs: evictions and overflows happen within one short input.
inline EngineConfig small_caches() {
  EngineConfig c;
  c.iotlb_entries = 64;
  c.iotlb_shards = 2;
  c.context_cache_entries = 16;
  c.pasid_cache_entries = 16;
  c.psc_entries = 16;
  c.fault_log_entries = 8;
  return c;
}

// small_caches() with features drawn from one input byte; `*key` (if given) receives that
// byte, for pooled_engine().
inline EngineConfig small_config(FuzzedDataProvider &in, unsigned *key = nullptr) {
  EngineConfig c = small_caches();
  const uint8_t f = in.ConsumeIntegral<uint8_t>();
  if (key) *key = f;
  c.first_level_5 = f & 1;
  c.first_level_1g = f & 2;
  c.second_level_2m = f & 4;
  c.second_level_1g = f & 8;
  c.first_level_ad = f & 16;
  c.drain = f & 32;
  c.coalesce = f & 64;
  c.caching = !(f & 128);
  return c;
}

// Resets a new pooled engine once. An engine's first reset keeps an allocation, so without
// this the first input on a new engine and libFuzzer's re-run of it (done whenever an input
// allocates more than it frees) both look like leaks, and libFuzzer then runs LeakSanitizer
// over the whole heap, every pooled engine included: that was over half of fuzz_capi's time.
inline void warm(Engine &e) {
  e.reset();
}

// One engine per configuration for the whole fuzzing process, with RAM [0, ram_size), reset
// (Engine::reset) before each input instead of rebuilt: construction and mapping RAM cost
// milliseconds under ASan, a reset microseconds. A reset engine behaves like a new one, so an
// input still replays alone. `key` must identify `c` (and the RAM size) within the target.
inline Engine &pooled_engine(const EngineConfig &c, unsigned key, uint64_t ram_size) {
  static std::map<unsigned, std::unique_ptr<Engine>> pool;
  std::unique_ptr<Engine> &e = pool[key];
  if (e) {
    e->reset();
  } else {
    e = std::make_unique<Engine>(c);
    FUZZ_CHECK(e->memory().add_ram(0, ram_size) == 0, "pooled RAM of %llu bytes",
               (unsigned long long)ram_size);
    warm(*e);
  }
  return *e;
}

// Engines (or C handles) kept across inputs under a key naming everything a fresh one would
// differ in (configuration, memory map), for targets whose inputs choose those: a hit costs a
// reset, a miss a construction. Bounded: when full, an arbitrary entry goes, so a fuzzer
// wandering over many configurations stays inside its RSS limit.
template <class T, class Deleter = std::default_delete<T>>
class EnginePool {
 public:
  explicit EnginePool(size_t max_entries) : max_(max_entries) {}
  // NESTOR_FUZZ_POOL_STATS=1: hits and misses at exit, to see whether a pool pays.
  ~EnginePool() {
    if (std::getenv("NESTOR_FUZZ_POOL_STATS"))
      std::fprintf(stderr, "engine pool: %llu hits, %llu misses, %zu pooled\n",
                   (unsigned long long)hits_, (unsigned long long)misses_, pool_.size());
  }
  T *find(const std::string &key) {
    auto it = pool_.find(key);
    ++(it == pool_.end() ? misses_ : hits_);
    return it == pool_.end() ? nullptr : it->second.get();
  }
  T *put(const std::string &key, std::unique_ptr<T, Deleter> v) {
    if (pool_.size() >= max_ && !pool_.count(key)) pool_.erase(pool_.begin());
    return (pool_[key] = std::move(v)).get();
  }

 private:
  size_t max_;
  uint64_t hits_ = 0, misses_ = 0;
  std::map<std::string, std::unique_ptr<T, Deleter>> pool_;
};

// Event hooks for one input (when `on`): every event of every kind is checked for what holds
// whatever the input, so the emission sites and the observed translate paths are fuzzed as well
// (inputs without them keep the plain paths covered). Removed when it goes out of scope.
class CheckedEvents {
 public:
  CheckedEvents(Engine &engine, bool on) : engine_(engine) {
    if (!on) return;
    id_ = engine.add_event_hook(kEventAll, check, nullptr);
    FUZZ_CHECK(id_ >= 0, "add_event_hook: %d", id_);
  }
  ~CheckedEvents() {
    if (id_ >= 0) FUZZ_CHECK(engine_.remove_event_hook(id_) == 0, "remove_event_hook");
  }
  CheckedEvents(const CheckedEvents &) = delete;
  CheckedEvents &operator=(const CheckedEvents &) = delete;

 private:
  static void check(void *, const Event &e) {
    if (e.translate) {
      const TranslateEvent &t = *e.translate;
      FUZZ_CHECK(!t.result.ok || t.result.fault.reason == FaultReason{}, "answer with a fault");
      FUZZ_CHECK(t.result.ok || t.result.fault.reason != FaultReason{}, "fault without reason");
      FUZZ_CHECK(t.source != TranslateSource::kStructures ||
                     (!t.result.ok && t.result.fault.stage == FaultStage::kStructures),
                 "structure source but stage %d", int(t.result.fault.stage));
      FUZZ_CHECK(e.kind != kEventFault || !t.result.ok, "fault event for a translation");
    } else if (e.invalidation) {
      const InvalidationEvent &inv = *e.invalidation;
      uint64_t removed = 0;
      for (size_t c = 0; c < kEventCaches; ++c) {
        removed += inv.removed[c];
        FUZZ_CHECK(inv.over[c] <= inv.removed[c], "over > removed in cache %zu", c);
      }
      FUZZ_CHECK(removed == inv.entries.size(), "%llu counted, %zu listed",
                 (unsigned long long)removed, inv.entries.size());
      for (const RemovedEntry &r : inv.entries)
        FUZZ_CHECK(r.required == invq::covers(inv.op, r.key) || r.pages > 1 || !r.has_domain,
                   "required flag disagrees with covers()");
    } else if (e.queue) {
      FUZZ_CHECK(e.queue->descriptor_bits == 128 || e.queue->descriptor_bits == 256, "width %u",
                 e.queue->descriptor_bits);
      FUZZ_CHECK(e.queue->type != QueueEventType::kError || e.queue->error != nullptr,
                 "error without text");
    } else {
      FUZZ_CHECK(e.fill || e.bind, "event kind %u with no payload", e.kind);
    }
  }

  Engine &engine_;
  int id_ = -1;
};

}  // namespace nestor::fuzz
