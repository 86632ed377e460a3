// VT-d scalable mode as a personality of the generic engine (nestor/personality.h): how a
// request's source-id and PASID reach a PASID-table entry through the root, context and PASID
// directory tables in machine memory, and what that entry says to walk.
#pragma once

#include <atomic>
#include <cstdint>

#include "nestor/caches/structure_caches.h"
#include "nestor/events.h"
#include "nestor/machine_memory.h"
#include "nestor/personality.h"
#include "nestor/vtd/structures.h"

namespace nestor {

class VtdPersonality {
 public:
  // The capabilities the structures are decoded against (the engine's configuration).
  struct Config {
    uint8_t host_address_width = 48;
    uint8_t pasid_bits = 20;
    uint8_t sagaw = 0b1110;
    bool first_level_5 = true;
    bool first_level_1g = true;
    bool second_level_2m = true;
    bool second_level_1g = true;
    bool first_level_ad = true;
  };
  // What the context and PASID caches hold (the engine's CacheSet is built on these).
  using ContextValue = vtd::ContextEntry;
  using PasidValue = vtd::PasidEntry;
  using ContextCache = caches::ContextCache<ContextValue>;
  using PasidCache = caches::PasidCache<PasidValue>;

  // Null caches: every resolution reads the structures (the uncached engine).
  VtdPersonality(MachineMemory &mem, const Config &cfg, ContextCache *context, PasidCache *pasid)
      : mem_(mem), cfg_(cfg), context_(context), pasid_(pasid) {}

  // Where context and PASID cache fills are reported (kEventCacheFill); the engine sets it.
  void set_event_hooks(const EventHooks *hooks) { hooks_ = hooks; }

  // Root-table address register. 0 or -EINVAL (misaligned or beyond HAW).
  int set_root_table(uint64_t pa);
  uint64_t root_table() const { return root_table_.load(std::memory_order_acquire); }
  void clear_root_table();

  // The Personality concept's entry point: VT-d scalable-mode translation of a request, its
  // steps numbered in the definition.
  bool resolve(uint64_t stamp, const Request &req, WalkContext *out, Fault *fault, bool *fpd);

  // The Personality concept's naming of walk faults: VT-d's fault reasons.
  static constexpr Fault walk_fault(const WalkFault &w) { return vtd::fault(w); }

  // The structure reads resolve() is made of, for tools and tests.
  bool read_context(uint16_t source_id, vtd::ContextEntry *ctx, Fault *fault, bool *fpd);
  bool pasid_in_range(const vtd::ContextEntry &ctx, uint32_t pasid) const {
    return pasid < (1u << cfg_.pasid_bits) && pasid < ctx.max_pasids();
  }
  bool read_pasid_entry(const vtd::ContextEntry &ctx, uint32_t pasid, vtd::PasidEntry *pe,
                        Fault *fault, bool *fpd);

  // What a PASID-table entry says to walk (its PGTT, DID, stage roots and control bits).
  WalkContext walk_context(const vtd::PasidEntry &pe, uint32_t pasid, bool privileged,
                           bool fpd) const;

 private:
  MachineMemory &mem_;
  const Config cfg_;
  ContextCache *const context_;
  PasidCache *const pasid_;
  const EventHooks *hooks_ = nullptr;
  std::atomic<uint64_t> root_table_{0};
  std::atomic<bool> root_set_{false};
};

static_assert(Personality<VtdPersonality>);

}  // namespace nestor
