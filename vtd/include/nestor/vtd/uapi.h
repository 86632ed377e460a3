// uAPI-style entry points: a Linux-iommu-like cache invalidation request and an iommufd-like
// array of stage-1 IOTLB ranges, both turned into canonical ops or a precise error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "nestor/invq/op.h"

namespace nestor::invq {

enum class UapiError : uint8_t {
  kNone = 0,
  kInvalidCacheType,    // empty mask or unknown bits
  kInvalidGranularity,  // not DOMAIN / PASID / ADDR
  kInvalidCombination,  // cache type not defined at that granularity (see docs/INVQ.md)
  kInvalidPasid,        // wider than 20 bits
  kInvalidGranuleSize,  // not a power of two of at least 4K
  kMisalignedAddress,   // not aligned to the granule (or to 4K)
  kZeroLength,
  kOverflow,  // range wraps or leaves the 64-bit (52-bit page) space
  kUnknownFlags,
  kReservedField,
};
const char *to_string(UapiError error);
// Negative errno for an error: Linux's intel_nested_cache_invalidate_user answers unknown
// flags with -EOPNOTSUPP (an extension this kernel lacks), everything else with -EINVAL.
int to_errno(UapiError error);

// --- (a) Linux iommu_cache_invalidate_info-like request -------------------------------------
enum UserCacheType : uint32_t {
  kUserCacheIotlb = 1u << 0,
  kUserCacheDevIotlb = 1u << 1,
  kUserCachePasid = 1u << 2,
};
enum class UserGranularity : uint8_t { kDomain = 0, kPasid = 1, kAddr = 2 };

struct UserCacheInvalidate {
  uint32_t cache = 0;  // UserCacheType mask
  UserGranularity granularity = UserGranularity::kDomain;
  uint32_t pasid = 0;
  // kAddr only:
  uint64_t addr = 0;
  uint64_t granule_size = kPageSize;  // any power of two >= 4K; addr aligned to it
  uint64_t nb_granules = 1;
  bool leaf = false;
  // kAddr only: false is Linux's iommu_inv_addr_info without IOMMU_INV_ADDR_FLAGS_PASID, a
  // range in whatever the device's requests without PASID use (see docs/INVQ.md, "uAPI").
  bool has_pasid = true;
};

// Who the request is for; the caller (engine) resolved it from the device/domain handle.
struct UserTarget {
  uint16_t did = 0;
  uint16_t source_id = 0;
};

struct UapiOps {
  UapiError error = UapiError::kNone;
  std::vector<InvalidationOp> ops;
  bool ok() const { return error == UapiError::kNone; }
};

UapiOps cache_invalidate_user(const UserCacheInvalidate &request, const UserTarget &target);

// --- (b) iommufd IOMMU_HWPT_INVALIDATE_DATA_VTD_S1-like array --------------------------------
inline constexpr uint32_t kIotlbInvalidateFlagLeaf = 1;
inline constexpr uint64_t kIotlbInvalidateAllPages = ~uint64_t{0};

struct IotlbInvalidateEntry {
  uint64_t addr = 0;
  uint64_t npages = 0;
  uint32_t flags = 0;
  uint32_t reserved = 0;
};

struct UapiArrayResult {
  size_t handled = 0;  // entries converted before the first error (all of them on success)
  UapiError error = UapiError::kNone;
  std::vector<InvalidationOp> ops;  // ops of the handled entries only
  bool ok() const { return error == UapiError::kNone; }
};

// First-level (stage-1) IOTLB and paging-structure invalidation for (did, pasid).
UapiArrayResult invalidate_iotlb_array(std::span<const IotlbInvalidateEntry> entries, uint16_t did,
                                       uint32_t pasid);

}  // namespace nestor::invq
