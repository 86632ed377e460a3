// The C++ entry point: an engine owns machine memory, reads the VT-d structures from it and
// translates device requests through them. The translation machinery is EngineCore, generic
// over the architecture; Engine is VT-d's engine on it.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "nestor/cache_set.h"
#include "nestor/caches/caches.h"
#include "nestor/events.h"
#include "nestor/export.h"
#include "nestor/invq/op.h"
#include "nestor/machine_memory.h"
#include "nestor/personality.h"
#include "nestor/vtd/personality.h"
#include "nestor/vtd/structures.h"
#include "nestor/walkers/first_level.h"
#include "nestor/walkers/second_level.h"
#include "nestor/walkers/types.h"

namespace nestor {

class EngineInvalidation;

struct EngineConfig {
  uint8_t host_address_width = 48;  // HAW: physical address bits
  uint8_t pasid_bits = 20;          // PASIDs are < 2^pasid_bits
  uint8_t sagaw = 0b1110;           // second-level widths: bit1 39, bit2 48, bit3 57
  bool first_level_5 = true;        // 5-level first-level tables supported
  bool first_level_1g = true;       // FL1GP
  bool second_level_2m = true;      // SLLPS
  bool second_level_1g = true;
  bool first_level_ad = true;  // update A/D in first-level tables
  uint32_t fault_log_entries = 256;
  // Caches. `caching = false` gives the uncached reference engine (every translation walks).
  bool caching = true;
  uint32_t iotlb_entries = 65536;
  uint32_t iotlb_shards = 16;
  uint32_t iotlb_ways = 0;  // 0: the IOTLB's compile-time associativity
  uint32_t context_cache_entries = 1024;
  uint32_t pasid_cache_entries = 4096;
  uint32_t psc_entries = 4096;  // each of: first-level, second-level, nested-table caches
  uint64_t promote_threshold_pages = 1024;  // ranges above this become PASID/domain scope
  // What a second-level (GPA-addressed, VT-d type 0x2) invalidation removes; docs/CACHES.md.
  enum class GpaInvalidation : uint8_t {
    // The architecture's rule: every first-level-only and nested entry of the domain, whatever
    // its address, besides the second-level entries in range.
    kArchitectural,
    // Only what depends on the range: nested entries whose final GPA or any first-level table
    // page on whose walk lies in it. Exact under the nesting contract (BIND_PGTBL/CACHE_INVLD:
    // first-level changes are announced with PASID-based invalidations), not for software
    // that relies on type 0x2 to flush first-level changes.
    kDependencies,
  };
  GpaInvalidation gpa_invalidation = GpaInvalidation::kArchitectural;
  // Invalidation (nestor/invalidation.h). Drain: translations announce themselves so a wait
  // also covers those already in flight (costs a fence per translation; off by default).
  bool drain = false;
  bool coalesce = true;                  // coalesce the ops between two waits
  bool background_invalidation = false;  // a worker thread processes queued invalidations
};

// Documented limits (docs/LIMITS.md). Larger caches than these cost gigabytes and seconds to
// build; callers that need them have a different problem.
inline constexpr uint32_t kMaxIotlbEntries = 1u << 22;
inline constexpr uint32_t kMaxIotlbShards = 256;
inline constexpr uint32_t kMaxIotlbWays = 8;
inline constexpr uint32_t kMaxStructureCacheEntries = 1u << 20;  // context, PASID, each PSC
inline constexpr uint32_t kMaxFaultLogEntries = 1u << 20;

// 0 if `cfg` is within the documented limits, else -EINVAL with *why (if non-NULL) naming
// the field and its range. Engine's constructor does not check (it clamps a few fields for
// C++ callers that always did so); the C ABI refuses an invalid configuration with this.
NESTOR_CXX_API int validate_config(const EngineConfig &cfg, const char **why);

// Per-cache statistics summed over threads.
struct EngineStats {
  caches::CacheStats context, pasid, iotlb, psc_first_level, psc_second_level, psc_nested_table;

  friend EngineStats operator-(const EngineStats &a, const EngineStats &b) {
    return {a.context - b.context,
            a.pasid - b.pasid,
            a.iotlb - b.iotlb,
            a.psc_first_level - b.psc_first_level,
            a.psc_second_level - b.psc_second_level,
            a.psc_nested_table - b.psc_nested_table};
  }
};

struct FaultRecord {
  Request request;
  Fault fault;
};

// A bounded log of faults, as hardware's fault-recording registers: when full, new faults
// are dropped and the overflow flag is set until the log is drained. A deque, so recording is
// O(1) and draining k records costs O(k) (a vector erased from the front made draining a full
// log quadratic while faulting translations waited on the lock).
class NESTOR_CXX_API FaultLog {
 public:
  explicit FaultLog(uint32_t capacity) : capacity_(capacity ? capacity : 1) {}
  void record(const FaultRecord &r);
  // Moves up to `max` records out, oldest first. Returns how many.
  size_t drain(FaultRecord *out, size_t max);
  size_t size() const;
  bool overflowed() const;
  void clear_overflow();
  // Drops every record and the overflow flag.
  void clear();

 private:
  mutable std::mutex mu_;
  std::deque<FaultRecord> records_;
  uint32_t capacity_;
  bool overflow_ = false;
};

class Engine;
template <Personality P>
class EngineCore;
template <Personality P, bool kCaching>
class PipelineTables;

// A device's address space (source-id + PASID) resolved once: translations through it skip the
// context and PASID-cache lookups until an invalidation changes a resolution (CacheSet's
// resolution generation moves). Cheap
// to copy; one per thread (not safe to share between threads without external locking).
class NESTOR_CXX_API AddressSpace {
 public:
  AddressSpace() = default;
  Result translate(uint64_t iova, uint8_t access);
  // Translates n addresses with one access type; prefetches IOTLB sets a few requests ahead.
  void translate_batch(const uint64_t *iovas, uint8_t access, Result *out, size_t n);
  uint16_t source_id() const { return base_.source_id; }
  bool valid() const { return engine_ != nullptr; }

  // This handle's IOTLB lookups, so that a caller can tell the hit rate of one address space
  // from the engine's (EngineStats sum every space). Plain fields counted by the thread that
  // translates through the handle (the rule above): read them on that thread, or after it has
  // stopped using the handle. A copy of a handle starts from the counts of its original.
  // Translations the handle's own cache answers look nothing up and count in neither field,
  // which leaves that path, the fastest hit, as it was: a caller that counts its translations
  // gets those as translations - lookups() (less any that faulted before the IOTLB, on the
  // context or PASID entry, and pass-through ones, which look nothing up either).
  struct HandleStats {
    // As EngineStats::iotlb counts them: a hit that the access is not allowed through, or a
    // first write that must set the dirty bit, walks afterwards but is a hit.
    uint64_t iotlb_hits = 0;
    uint64_t iotlb_misses = 0;  // a walk followed
    uint64_t lookups() const { return iotlb_hits + iotlb_misses; }
  };
  HandleStats stats() const { return stats_; }

 private:
  friend class Engine;
  template <Personality P>
  friend class EngineCore;
  // A small direct-mapped translation cache private to the handle (what a device's ATC is to
  // the IOMMU). Entries carry the sum of the resolution generation and their domain's
  // generation at fill time; every applied invalidation that could reach them advances one of
  // the two, so a stale entry is never served after an invalidation returns.
  struct MicroEntry {
    uint64_t page = ~uint64_t{0};  // iova >> 12
    uint64_t out_page = 0;         // output address of that 4K page
    uint64_t generation = ~uint64_t{0};
    uint8_t page_shift = 12;
    uint8_t perms = 0;
    uint8_t allowed = 0;  // accesses a hit may serve (W only once D is known to be set)
    uint8_t level = 1;    // from page_shift, derived once per fill rather than on every hit
  };
  static constexpr size_t kMicroEntries = 64;
  Engine *engine_ = nullptr;
  Request base_;
  uint64_t generation_ = ~uint64_t{0};
  uint64_t stamp_ = 0;
  WalkContext resolved_;
  std::array<MicroEntry, kMicroEntries> micro_{};
  // Last, so the fields the handle-cache hit reads keep their offsets.
  HandleStats stats_;
};

// The generic engine, written once over a personality (nestor/personality.h): the request
// path's resolution memo, address-space handles, the translate pipeline (IOTLB, paging-structure
// and nested-table caches, walks, fills), batches, drain brackets, fault recording and cache
// statistics. The personality resolves requests to walk contexts and names walk faults; nothing
// here knows an architecture's structures. `Engine` is the VT-d engine built on it; the member
// definitions are in engine/src/engine_core.h and translate_pipeline.h, instantiated for VT-d in
// engine/src/engine_core_vtd.cpp.
template <Personality P>
class EngineCore {
 public:
  using Caches = CacheSet<typename P::ContextValue, typename P::PasidValue>;
  static constexpr uint64_t kStaleGeneration = ~uint64_t{0};

  // `cfg`, `mem` and `faults` belong to the owner and outlive the core.
  EngineCore(const EngineConfig &cfg, MachineMemory &mem, FaultLog &faults,
             const typename P::Config &personality_config);
  EngineCore(const EngineCore &) = delete;
  EngineCore &operator=(const EngineCore &) = delete;
  // The owner's invalidation wiring, for the drain bracket (set once, before translating).
  void attach(EngineInvalidation *inv) { inv_ = inv; }

  P &personality() { return personality_; }
  const P &personality() const { return personality_; }
  Caches &caches() { return caches_; }
  const Caches &caches() const { return caches_; }
  EngineStats stats() const;

  // Event hooks (nestor/events.h). Adding or removing one also re-arms the translate gate.
  EventHooks &event_hooks() { return hooks_; }
  int add_event_hook(uint32_t kinds, EventCallback callback, void *user);
  int remove_event_hook(int id);

  Result translate(const Request &req);
  void translate_batch(const Request *reqs, Result *out, size_t n);
  // A handle's translation (AddressSpace or an equal handle type): its resolution and its
  // micro-TLB first, then the pipeline.
  template <class Handle>
  Result translate_in(Handle &as, const Request &req);
  template <class Handle>
  void translate_batch_in(Handle &as, const uint64_t *iovas, uint8_t access, Result *out, size_t n);
  Result translate_undrained(const Request &req);

  // The space an IOTLB entry is tagged with: second-stage-only translations depend on
  // (domain, GPA) alone, so every space of the domain shares them.
  static uint32_t iotlb_space(const WalkContext &c) {
    return c.stages == StageSet::kSecondOnly ? caches::Iotlb::kSecondLevelPasid : c.space;
  }

 private:
  template <Personality Q, bool kCaching>
  friend class PipelineTables;
  using Resolved = WalkContext;
  bool resolve(uint64_t stamp, const Request &req, Resolved *out, Result *fault_out,
               bool *fpd_out = nullptr);
  // What the pipeline tells translate_in besides the result, behind one pointer: a seventh
  // argument would go on the stack, and the frame pointer that takes made translate_in keep
  // the handle in memory, reloaded on its handle-cache hit path too.
  struct PipelineNotes {
    bool write_ready = false;  // a later write may reuse this result without a walk
    enum class Iotlb : uint8_t { kNotLookedUp, kHit, kMiss } iotlb = Iotlb::kNotLookedUp;
    bool walked = false;  // the answer (or fault) came from a walk
    // In: the caller has already asked the IOTLB (iotlb_answer) and had no usable answer, so
    // the pipeline goes straight to the walk instead of probing the same set again.
    bool iotlb_probed = false;
  };
  // The IOTLB's answer to req, if it has one that needs no walk (present, permitted, and not a
  // first write to a clean entry). Inlined into the handle path's micro-TLB miss and into
  // walk_pipeline, so an IOTLB hit through a handle costs one call (the set lookup). The
  // attribute must be on this declaration: on the definition alone GCC ignored it, and the
  // explicitly instantiated member was called out of line.
  [[gnu::always_inline]] inline bool iotlb_answer(const WalkContext &c, const Request &req,
                                                 Result *r, PipelineNotes *notes);
  // What a walk's fills are stamped with. A resolution's stamp ages with every invalidation
  // after it, and fills judged by an old stamp are refused by any overlapping one since; a
  // walk of a resolution still valid at `generation` stamps itself when it starts instead
  // (walk_stamp), which is safe because CacheSet moves the generation before an operation's
  // interval closes. kStaleGeneration: always `resolved` (batches, which re-resolve anyway).
  struct WalkStamp {
    uint64_t resolved = 0;
    uint64_t generation = kStaleGeneration;
  };
  uint64_t walk_stamp(const WalkStamp &st) const {
    if (st.generation == kStaleGeneration) return st.resolved;
    // now() before the generation: an operation older than `fresh` has closed its interval,
    // so its generation move is visible to the load below.
    const uint64_t fresh = caches_.clock().now();
    return caches_.generation() == st.generation ? fresh : st.resolved;
  }
  Result translate_resolved(const WalkStamp &stamp, const Resolved &rs, const Request &req,
                            PipelineNotes *notes = nullptr);
  // Translations while the gate is up (drain on, or a hook wants translation events): the
  // drain bracket, then the plain path or the observed one.
  Result translate_gated(const Request &req);
  Result translate_observed(const Request &req);
  // The request path, written once: kObserved also fills *ev with where the answer came from.
  template <bool kObserved>
  Result translate_request_impl(const Request &req, TranslateEvent *ev);
  template <class Handle>
  Result translate_in_gated(Handle &as, const Request &req);
  // The handle path, written once: kObserved also fills *ev with where the answer came from;
  // kMicroChecked: the caller has already looked in the micro-TLB and missed.
  template <bool kObserved, bool kMicroChecked, class Handle>
  Result translate_in_impl(Handle &as, const Request &req, TranslateEvent *ev);
  // A handle's micro-TLB entry m answers req if it holds page under tag (the handle's
  // generations) and allows the access; the answer goes to *r.
  template <class MicroEntry>
  static bool micro_answer(const MicroEntry &m, uint64_t page, uint64_t tag, const Request &req,
                           Result *r);
  // Everything after a micro-TLB miss, out of line (see translate_in).
  template <class Handle>
  Result translate_in_miss(Handle &as, const Request &req);
  void emit_translate(uint32_t kind, const TranslateEvent &ev) {
    Event e;
    e.kind = kind;
    e.translate = &ev;
    hooks_.emit(e);
  }
  static void describe(TranslateEvent *ev, const Resolved &rs, const PipelineNotes &notes);
  void note_fill(const FillEvent &f) {
    Event e;
    e.kind = kEventCacheFill;
    e.fill = &f;
    hooks_.emit(e);
  }
  void update_gate();
  // The one walk path, with (kCaching) or without the caches.
  template <bool kCaching>
  Result walk_pipeline(const WalkStamp &stamp, const WalkContext &c, const Request &req,
                       PipelineNotes *notes);
  // `rs`: the address space the fault happened in (null: resolving it faulted).
  Result fail(const Request &req, Fault f, bool fpd, const Resolved *rs = nullptr);
  // The request path's memo of recent resolutions, one small array per thread: a device that
  // keeps translating skips the personality's structure lookups until an invalidation moves
  // the generation, exactly as an address-space handle does. Tagged with a never-reused engine
  // id, so an engine allocated where a destroyed one lived cannot inherit its entries.
  struct RecentResolution {
    uint64_t engine_id = 0;  // 0: empty
    uint64_t generation = 0;
    uint64_t stamp = 0;
    uint32_t pasid = 0;
    uint16_t source_id = 0;
    uint8_t flags = 0;  // has_pasid | privileged << 1
    Resolved rs;
  };
  static constexpr size_t kRecentResolutions = 4;
  static RecentResolution &recent_resolution(uint16_t source_id, uint32_t pasid);

  const EngineConfig &cfg_;
  const uint64_t id_;
  MachineMemory &mem_;
  FaultLog &faults_;
  // Every cache and the one mapping of invalidation ops onto them; its generations are what
  // handles and per-thread memos check before reusing a resolution or a translation.
  Caches caches_;
  P personality_;
  EngineInvalidation *inv_ = nullptr;
  // What the translate entry points test before anything else: nonzero sends them to
  // translate_gated (kGateDrain: cfg.drain; kGateEvents: a hook wants translation events). One
  // word the hit paths read anyway in place of the drain flag, so hooks cost them nothing.
  static constexpr uint32_t kGateDrain = 1, kGateEvents = 2;
  std::atomic<uint32_t> gate_{0};
  EventHooks hooks_;
  std::mutex hook_mu_;  // add/remove and the gate update they make, as one step
};

class NESTOR_CXX_API Engine {
 public:
  explicit Engine(const EngineConfig &cfg = {});
  ~Engine();
  Engine(const Engine &) = delete;
  Engine &operator=(const Engine &) = delete;

  const EngineConfig &config() const { return cfg_; }
  MachineMemory &memory() { return mem_; }
  FaultLog &fault_log() { return faults_; }

  // Root-table address register (scalable mode). Returns 0 or -EINVAL (misaligned/beyond HAW).
  int set_root_table(uint64_t root_table_pa);
  uint64_t root_table() const;

  Result translate(const Request &req);

  EngineStats stats() const;

  // Back to the state of a freshly created engine with the same configuration and memory map,
  // as on a platform reset (an embedder's guest reboot, a fuzzer's next input): every cache
  // (context, PASID, IOTLB, paging-structure) and every handle's or thread's resolution memo
  // stop serving anything filled before; invalidations queued but not yet waited for are
  // processed (their waits complete) and the invalidation queue registers return to their
  // power-on values (IQA 0, head = tail = 0, no error, QI unconfigured); the fault log is
  // emptied and its overflow flag cleared; the root-table pointer is unset; engine-owned RAM
  // reads as zero again (MachineMemory::zero_ram), still mapped. Kept: the configuration,
  // RAM regions (caller-owned RAM keeps its contents), I/O callbacks, fail injector, write
  // observer, a running background invalidation worker, and cumulative statistics (the reset
  // counts as one global invalidation of each cache). Only safe while no other thread
  // translates, invalidates or touches machine memory, and not from a callback of this engine.
  void reset();

  // Address-space handle: the fastest path for repeated translations of one device/PASID.
  // `privileged` applies to requests with PASID; without PASID the context's RID_PRIV does.
  AddressSpace open(uint16_t source_id, bool has_pasid, uint32_t pasid, bool privileged = false);
  // Translates n requests; results are the same as n translate() calls.
  void translate_batch(const Request *reqs, Result *out, size_t n);

  // Invalidation entry point for software that changed structures or tables: applies `op`
  // to every cache it names. Completion (and drain) is `invalidate_wait()`; together they are
  // the typed equivalent of queueing descriptors followed by a wait descriptor.
  void invalidate(const invq::InvalidationOp &op);
  // The same for several ops at once, applied in order as one operation: one open interval
  // and one generation step for all of them (what the queue processor does with a batch).
  void invalidate_batch(std::span<const invq::InvalidationOp> ops);
  // Returns once every earlier invalidation is applied (and, with drain on, every translation
  // that began before it has finished).
  void invalidate_wait();
  // Queued invalidation, QI registers, uAPI front ends, drain (nestor/invalidation.h).
  EngineInvalidation &invalidation() { return *inv_; }

  // Event hooks (nestor/events.h, which says where callbacks run and what they may not call):
  // `callback(user, event)` for every event whose kind is in `kinds` (EventKindBits). Returns
  // a hook id >= 0, -EINVAL or -ENOSPC (EventHooks::kMaxHooks). Any thread, any time.
  int add_event_hook(uint32_t kinds, EventCallback callback, void *user);
  // 0 or -ENOENT; once it returns the hook's callback is not running and is never called again.
  // Not from a callback.
  int remove_event_hook(int id);
  // The hooks themselves, for layers built on the engine that emit events of their own (the
  // bind layer).
  EventHooks &event_hooks() { return core_.event_hooks(); }

  // Structure lookups, exposed for tools and tests. On a fault, `fault` says why.
  bool read_context(uint16_t source_id, vtd::ContextEntry *ctx, Fault *fault, bool *fpd) {
    return core_.personality().read_context(source_id, ctx, fault, fpd);
  }
  // Whether `pasid` fits both the engine's PASID width and the context's PASID directory.
  bool pasid_in_range(const vtd::ContextEntry &ctx, uint32_t pasid) const {
    return core_.personality().pasid_in_range(ctx, pasid);
  }
  bool read_pasid_entry(const vtd::ContextEntry &ctx, uint32_t pasid, vtd::PasidEntry *pe,
                        Fault *fault, bool *fpd) {
    return core_.personality().read_pasid_entry(ctx, pasid, pe, fault, fpd);
  }

 private:
  // The architecture this build's engine is: how requests resolve to walk contexts and what
  // walk faults are called (nestor/personality.h). Everything else is EngineCore, generic.
  using Personality = VtdPersonality;
  static_assert(nestor::Personality<Personality>);
  // The constructor's clamping of fields C++ callers have always been allowed to get wrong.
  static EngineConfig clamped(EngineConfig cfg);
  friend class AddressSpace;
  friend class EngineInvalidation;

  EngineConfig cfg_;
  MachineMemory mem_;
  FaultLog faults_;
  EngineCore<Personality> core_;
  // Last: destroyed first, so its worker stops before the caches it applies to go away.
  std::unique_ptr<EngineInvalidation> inv_;
};

}  // namespace nestor
