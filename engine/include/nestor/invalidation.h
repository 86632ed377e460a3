// The engine's invalidation machinery: it owns an invq::InvalidationProcessor and the drain
// epoch domain, and plugs the engine's caches in as the processor's target. Every front end
// ends up in that processor, so batching, coalescing, drain and wait completion behave
// identically for all of them: the typed C/C++ calls here, and the architecture's own (VT-d's
// queued invalidation and uAPI, vtd::InvalidationFrontEnd, whose calls this class forwards).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "nestor/export.h"
#include "nestor/invq/epoch.h"
#include "nestor/invq/processor.h"
#include "nestor/invq/stats.h"
#include "nestor/machine_memory.h"
#include "nestor/vtd/front_end.h"

namespace nestor {

class Engine;
struct EngineConfig;

class NESTOR_CXX_API EngineInvalidation final : public invq::InvalidationTarget,
                                                public invq::StatusWriter {
 public:
  // Shared with per-thread reader bookkeeping (see invalidation.cpp), so a thread that exits
  // after the engine is gone can tell, instead of touching freed memory.
  struct DrainState;

  // What invalidations apply to: an engine's CacheSet, type-erased (one indirect call per op
  // or batch, never per entry), so the wiring serves an engine of any personality.
  struct CacheTarget {
    void *caches = nullptr;
    void (*apply)(void *caches, const invq::InvalidationOp &op) = nullptr;
    void (*apply_batch)(void *caches, std::span<const invq::InvalidationOp> ops) = nullptr;

    template <class Caches>
    static CacheTarget of(Caches &c) {
      return {&c,
              [](void *p, const invq::InvalidationOp &op) { static_cast<Caches *>(p)->apply(op); },
              [](void *p, std::span<const invq::InvalidationOp> ops) {
                static_cast<Caches *>(p)->apply_batch(ops);
              }};
    }
  };

  // `mem` receives wait status writes and holds the VT-d queue; `caches` are what ops apply to.
  // VT-d's queued-invalidation registers and uAPI come with the wiring (front_end_): an engine
  // of another architecture leaves them unconfigured and puts its own front end over
  // processor().
  EngineInvalidation(MachineMemory &mem, CacheTarget caches, const EngineConfig &cfg);
  // Engine's: its memory and its core's caches.
  EngineInvalidation(Engine &engine, const EngineConfig &cfg);
  ~EngineInvalidation() override;
  // Where the queue's events go (Engine's hooks; the Engine& constructor sets them).
  void set_event_hooks(const EventHooks *hooks) { front_end_.set_event_hooks(hooks); }
  EngineInvalidation(const EngineInvalidation &) = delete;
  EngineInvalidation &operator=(const EngineInvalidation &) = delete;

  // InvalidationTarget: apply and apply_batch go to the CacheTarget (for Engine, what
  // Engine::invalidate and invalidate_batch do);
  // drain = one grace period of the engine's translating threads (only when
  // EngineConfig::drain is on; otherwise nothing to wait for).
  void apply(const invq::InvalidationOp &op) override;
  void apply_batch(std::span<const invq::InvalidationOp> ops) override;
  void drain() override;
  // StatusWriter: the 32-bit wait status goes to machine memory like any DMA write.
  bool write_status(uint64_t pa, uint32_t data) override;

  // Typed front end. submit() only queues; wait() returns once every earlier op (queued here,
  // through the QI or applied directly with Engine::invalidate) is applied and, with drain on,
  // every translation that began before the call has finished. Without a background worker
  // the caller processes the queue itself.
  void submit(const invq::InvalidationOp &op);
  void wait();

  // uAPI front ends: converted ops are queued like submit(); nothing is queued for an invalid
  // request, and for the array only the entries before the first invalid one.
  invq::UapiError submit_user(const invq::UserCacheInvalidate &request,
                              const invq::UserTarget &target) {
    return front_end_.submit_user(request, target);
  }
  invq::UapiArrayResult submit_iotlb_array(std::span<const invq::IotlbInvalidateEntry> entries,
                                           uint16_t did, uint32_t pasid) {
    return front_end_.submit_iotlb_array(entries, did, pasid);
  }

  // Queued invalidation (VT-d QI). configure() programs IQA (base 4K aligned, entries * width
  // a power-of-two number of 4K pages, at most 128). write_tail() fetches and decodes
  // [head, tail) from machine memory, queues the ops and waits, and (without a worker)
  // processes them before returning, so status writes have landed. Returns 0, -EINVAL (not
  // configured / bad arguments) or -EBUSY (the queue is stopped on an error; see queue()).
  int qi_configure(uint64_t base_pa, uint64_t entries, unsigned descriptor_bits) {
    return front_end_.qi_configure(base_pa, entries, descriptor_bits);
  }
  int qi_write_tail(uint64_t tail_index) { return front_end_.qi_write_tail(tail_index); }

  // Engine::reset()'s part: processes whatever is queued, then puts the QI registers back to
  // their power-on values and marks the queue unconfigured.
  void reset();

  invq::InvalidationProcessor &processor() { return processor_; }
  invq::InvalidationQueue &queue() { return front_end_.queue(); }
  invq::EpochDomain &epoch();

  // Processor counters plus the queue's per-type descriptor counts and queue errors.
  invq::StatsSnapshot stats() const;

  // Per-thread announcement of a translation (drain on). Cheap after the first call on a
  // thread: a thread-local lookup and EpochDomain::Reader::enter/exit.
  class TranslationGuard {
   public:
    explicit TranslationGuard(EngineInvalidation &inv);
    ~TranslationGuard();
    TranslationGuard(const TranslationGuard &) = delete;
    TranslationGuard &operator=(const TranslationGuard &) = delete;

   private:
    DrainState *state_;
    invq::EpochDomain::Reader *reader_;  // null: the state's overflow counter is used
  };

 private:
  MachineMemory &mem_;
  const CacheTarget caches_;
  const bool drain_enabled_;
  std::shared_ptr<DrainState> drain_state_;
  // Declared after what its worker uses: destroyed first, so the worker stops before they go.
  invq::InvalidationProcessor processor_;
  vtd::InvalidationFrontEnd front_end_;
};

}  // namespace nestor
