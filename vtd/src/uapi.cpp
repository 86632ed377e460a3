#include "nestor/vtd/uapi.h"

#include <bit>
#include <cerrno>

namespace nestor::invq {

namespace {

constexpr uint32_t kMaxPasid = (1u << 20) - 1;
constexpr uint64_t kPageSpace = kMaxPageNumber + 1;  // pages in a 64-bit address space

UapiOps fail(UapiError error) {
  UapiOps result;
  result.error = error;
  return result;
}

// Whether `first_page + pages` stays within the 52-bit page space.
bool fits(uint64_t first_page, uint64_t pages) {
  return pages <= kPageSpace && first_page <= kPageSpace - pages;
}

}  // namespace

const char *to_string(UapiError error) {
  switch (error) {
    case UapiError::kNone:
      return "none";
    case UapiError::kInvalidCacheType:
      return "invalid cache type";
    case UapiError::kInvalidGranularity:
      return "invalid granularity";
    case UapiError::kInvalidCombination:
      return "cache type not valid at this granularity";
    case UapiError::kInvalidPasid:
      return "PASID wider than 20 bits";
    case UapiError::kInvalidGranuleSize:
      return "granule size not a power of two of at least 4K";
    case UapiError::kMisalignedAddress:
      return "address not aligned";
    case UapiError::kZeroLength:
      return "zero length";
    case UapiError::kOverflow:
      return "range overflows the address space";
    case UapiError::kUnknownFlags:
      return "unknown flags";
    case UapiError::kReservedField:
      return "reserved field not zero";
  }
  return "?";
}

int to_errno(UapiError error) {
  switch (error) {
    case UapiError::kNone:
      return 0;
    case UapiError::kUnknownFlags:
    case UapiError::kReservedField:
      return -EOPNOTSUPP;
    default:
      return -EINVAL;
  }
}

UapiOps cache_invalidate_user(const UserCacheInvalidate &request, const UserTarget &target) {
  constexpr uint32_t kKnown = kUserCacheIotlb | kUserCacheDevIotlb | kUserCachePasid;
  if (request.cache == 0 || (request.cache & ~kKnown) != 0) {
    return fail(UapiError::kInvalidCacheType);
  }
  const auto granularity = request.granularity;
  if (granularity != UserGranularity::kDomain && granularity != UserGranularity::kPasid &&
      granularity != UserGranularity::kAddr) {
    return fail(UapiError::kInvalidGranularity);
  }
  // Device TLBs are tagged by requester and PASID, never by domain; the PASID cache holds
  // whole PASID entries, so an address range means nothing to it.
  if ((request.cache & kUserCacheDevIotlb) && granularity == UserGranularity::kDomain) {
    return fail(UapiError::kInvalidCombination);
  }
  if ((request.cache & kUserCachePasid) && granularity == UserGranularity::kAddr) {
    return fail(UapiError::kInvalidCombination);
  }
  const bool pasid_given = granularity == UserGranularity::kPasid ||
                           (granularity == UserGranularity::kAddr && request.has_pasid);
  if (pasid_given && request.pasid > kMaxPasid) return fail(UapiError::kInvalidPasid);

  InvalidationOp base;
  base.did = target.did;
  base.source_id = target.source_id;
  base.pasid = pasid_given ? request.pasid : kNoPasid;
  if (granularity == UserGranularity::kDomain) {
    base.scope = Scope::kDomain;
  } else if (granularity == UserGranularity::kPasid) {
    base.scope = Scope::kPasid;
  } else {
    // Linux's iommu_inv_addr_info documents granule_size as the page/block size of the
    // mapping; any power of two from 4K is one (VT-d's AM covers 2^n pages).
    const uint64_t size = request.granule_size;
    if (size < kPageSize || !std::has_single_bit(size)) {
      return fail(UapiError::kInvalidGranuleSize);
    }
    if ((request.addr & (size - 1)) != 0) return fail(UapiError::kMisalignedAddress);
    if (request.nb_granules == 0) return fail(UapiError::kZeroLength);
    const uint64_t pages_per_granule = size >> kPageShift;
    if (request.nb_granules > kPageSpace / pages_per_granule) return fail(UapiError::kOverflow);
    const uint64_t pages = request.nb_granules * pages_per_granule;
    if (!fits(request.addr >> kPageShift, pages)) return fail(UapiError::kOverflow);
    base.scope = Scope::kRange;
    base.addr = request.addr;
    base.npages = pages;
    base.leaf = request.leaf;
  }

  UapiOps result;
  if (request.cache & kUserCacheIotlb) {
    InvalidationOp op = base;
    op.caches = kCacheIotlb | kCachePaging;
    // Without a PASID the range belongs to the device's requests without PASID, which use
    // its context entry's RID_PASID; the DID alone cannot name that PASID here, so every
    // PASID of the domain is flushed (over-invalidation, never under).
    if (base.scope == Scope::kRange && !pasid_given) {
      op.scope = Scope::kDomain;
      op.addr = 0;
      op.npages = 0;
      op.leaf = false;
    }
    result.ops.push_back(op);
  }
  if (request.cache & kUserCacheDevIotlb) {
    InvalidationOp op = base;
    op.caches = kCacheDevTlb;
    result.ops.push_back(op);
  }
  if (request.cache & kUserCachePasid) {
    InvalidationOp op = base;
    op.caches = kCachePasid;
    result.ops.push_back(op);
  }
  return result;
}

UapiArrayResult invalidate_iotlb_array(std::span<const IotlbInvalidateEntry> entries, uint16_t did,
                                       uint32_t pasid) {
  UapiArrayResult result;
  if (pasid > kMaxPasid && pasid != kNoPasid) {
    result.error = UapiError::kInvalidPasid;
    return result;
  }
  for (const IotlbInvalidateEntry &entry : entries) {
    UapiError error = UapiError::kNone;
    InvalidationOp op;
    op.caches = kCacheIotlb | kCachePaging;
    op.did = did;
    op.pasid = pasid;
    op.leaf = (entry.flags & kIotlbInvalidateFlagLeaf) != 0;
    if ((entry.flags & ~kIotlbInvalidateFlagLeaf) != 0) {
      error = UapiError::kUnknownFlags;
    } else if (entry.reserved != 0) {
      error = UapiError::kReservedField;
    } else if (entry.addr == 0 && entry.npages == kIotlbInvalidateAllPages) {
      op.scope = Scope::kPasid;
      op.leaf = false;
    } else if ((entry.addr & (kPageSize - 1)) != 0) {
      error = UapiError::kMisalignedAddress;
    } else if (entry.npages == 0) {
      error = UapiError::kZeroLength;
    } else if (!fits(entry.addr >> kPageShift, entry.npages)) {
      error = UapiError::kOverflow;
    } else {
      op.scope = Scope::kRange;
      op.addr = entry.addr;
      op.npages = entry.npages;
    }
    if (error != UapiError::kNone) {
      result.error = error;
      return result;
    }
    result.ops.push_back(op);
    ++result.handled;
  }
  return result;
}

}  // namespace nestor::invq
