// What a nesting-capable engine tells the software that assigns devices to guests: which
// host-side duties come with nesting (the feature bits below), the address widths and PASID
// space, and the VT-d CAP/ECAP register values a vIOMMU would present to its guest.
//
// Reference revision: Liu Yi L's "iommu: Report domain nesting info", v2 of the vSVA series
// (patch 02/15, posted 2020-06-11 to iommu@lists.linux-foundation.org). The header
// (size, format, features, flags) and the feature numbering (SYSWIDE_PASID 1 << 0,
// BIND_PGTBL 1 << 1, CACHE_INVLD 1 << 2) are that revision's. What follows the header is
// nestor's own: that revision put addr_width/pasid_bits and cap/ecap (plus masks) in its VT-d
// data[]; here the widths are common fields and the VT-d data holds the registers only.
//
// The struct is versioned by `size`: get_nesting_info() copies only the prefix a caller knows
// and zeroes any tail the engine does not know, so old and new callers both work. Feature bits
// are added without a layout change: a caller that does not know a bit never sees it set
// unless the host configured it, and a configuration without a bit refuses its calls.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nestor/engine.h"
#include "nestor/vtd/capabilities.h"

namespace nestor {

// Feature bits. Each names a duty of the host software; a configuration without the bit
// really lacks the operation (it is refused with -EOPNOTSUPP), so software can rely on the
// bits in both directions.
enum NestingFeature : uint32_t {
  // PASIDs are managed system-wide, not per device: whoever assigns a device to a guest must
  // allocate and free its PASIDs through the engine's PASID allocator (BindLayer::alloc_pasid
  // / free_pasid), and a first-level table can be bound only to a PASID its owner holds.
  kNestingFeatSyswidePasid = 1u << 0,
  // The owner of a first-level table must explicitly bind it to its PASID (the one in the
  // request, or the device's default PASID) through the engine's bind operation
  // (BindLayer::bind); nothing else makes the engine translate through it.
  kNestingFeatBindPgtbl = 1u << 1,
  // The owner of a first-level table must explicitly invalidate the IOMMU caches through the
  // engine (BindLayer::cache_invalidate) whenever it changes the table, as the vendor (VT-d)
  // requires; the engine never snoops table writes. The series called it mandatory for a
  // nesting-capable IOMMU: a bound table's owner has no other way to invalidate, so it is
  // reported (and provided) whenever kNestingFeatBindPgtbl is.
  kNestingFeatCacheInvld = 1u << 2,
  // nestor's own bit (not in the v2 series): the owner of a first-level table invalidates
  // through a VT-d-format invalidation queue in its own memory that the engine consumes
  // directly (BindLayer::owner_queue_*), with guest DIDs and PASIDs translated and confined to
  // the owner's bindings; the host no longer forwards anything. This is the "vendor [that]
  // allow[s] the owner of [the] 1st-level page table to directly invalidate cache w/o going
  // through [the] host IOMMU driver" the series kept CACHE_INVLD separate for, so a
  // configuration with it reports (and provides) no CACHE_INVLD.
  kNestingFeatDirectInvld = 1u << 3,
};
// The features a default configuration offers: the v2 series' three. Direct invalidation is
// opt-in because it takes CACHE_INVLD away, which existing hosts rely on.
inline constexpr uint32_t kNestingFeatAll =
    kNestingFeatSyswidePasid | kNestingFeatBindPgtbl | kNestingFeatCacheInvld;
// Every bit a configuration may ask for.
inline constexpr uint32_t kNestingFeatKnown = kNestingFeatAll | kNestingFeatDirectInvld;

// The features a configuration asking for `requested` really has.
constexpr uint32_t effective_nesting_features(uint32_t requested) {
  const uint32_t f = requested & kNestingFeatKnown;
  if (f & kNestingFeatDirectInvld) return f & ~uint32_t(kNestingFeatCacheInvld);
  return (f & kNestingFeatBindPgtbl) ? (f | kNestingFeatCacheInvld) : f;
}

inline constexpr uint32_t kNestingFormatVtd = 1;

// Vendor data for kNestingFormatVtd: the capability registers as VT-d defines them (spec
// 11.4.2/11.4.3; bit positions as in Linux's drivers/iommu/intel/iommu.h cap_*/ecap_*).
// Register-offset fields (FRO, IRO) are zero: the engine is not a register file.
struct NestingInfoVtd {
  uint64_t cap_reg = 0;
  uint64_t ecap_reg = 0;
  uint32_t flags = 0;  // reserved, 0
  uint32_t reserved = 0;
};

struct NestingInfo {
  uint32_t size = sizeof(NestingInfo);  // bytes the engine knows (on output)
  uint32_t format = kNestingFormatVtd;
  uint32_t features = 0;            // NestingFeature
  uint32_t flags = 0;               // reserved, 0
  uint8_t host_address_width = 0;   // HAW: output (host physical) address bits
  uint8_t guest_address_width = 0;  // MGAW: widest second-level input (guest physical) width
  uint8_t pasid_bits = 0;           // PASIDs are < 2^pasid_bits
  uint8_t fl_levels = 0;            // bit n set: n-level first-level tables (bits 4 and 5)
  uint8_t sl_levels = 0;            // bit n set: n-level second-level tables (bits 3, 4, 5)
  uint8_t reserved[3] = {};
  NestingInfoVtd vtd;
};
static_assert(sizeof(NestingInfo) == 48 && offsetof(NestingInfo, vtd) == 24);

// The registers for an engine configuration (vtd::cap_register/ecap_register).
// `max_domain_id`: highest DID the host may allocate (ND covers it).
NESTOR_CXX_API uint64_t vtd_cap(const EngineConfig &cfg, uint16_t max_domain_id = 0xFFFF);
NESTOR_CXX_API uint64_t vtd_ecap(const EngineConfig &cfg);
NESTOR_CXX_API NestingInfo make_nesting_info(const EngineConfig &cfg, uint32_t features,
                                             uint16_t max_domain_id = 0xFFFF);

// Copies `info` into a caller buffer of `size` bytes: the prefix the caller knows, and zeroes
// past sizeof(NestingInfo). The copied `size` field says how many bytes the engine knows.
// Returns 0, or -EINVAL for a null buffer or one too small for the `size` field.
NESTOR_CXX_API int copy_nesting_info(const NestingInfo &info, void *out, uint32_t size);

}  // namespace nestor
