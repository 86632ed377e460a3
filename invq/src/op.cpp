#include "nestor/invq/op.h"

namespace nestor::invq {

bool source_id_matches(uint16_t entry_sid, uint16_t op_sid, uint8_t function_mask) {
  // FM=n ignores the n most significant bits of the 3-bit function number (SID bits 2..0).
  const unsigned ignored_bits = function_mask > 3 ? 3u : function_mask;
  const uint16_t ignored =
      static_cast<uint16_t>(((1u << ignored_bits) - 1u) << (3u - ignored_bits));
  return (entry_sid & ~ignored) == (op_sid & ~ignored);
}

namespace {

// Device TLBs are tagged by requester, every other cache by domain.
bool owner_matches(const InvalidationOp &op, const CacheEntryKey &entry) {
  return entry.cache == kCacheDevTlb ? entry.source_id == op.source_id : entry.did == op.did;
}

bool page_in_range(const InvalidationOp &op, uint64_t page) {
  const uint64_t first = op.addr >> kPageShift;
  return page >= first && page - first < op.npages;
}

}  // namespace

bool covers(const InvalidationOp &op, const CacheEntryKey &entry) {
  if ((op.caches & entry.cache) == 0) return false;
  switch (op.scope) {
    case Scope::kGlobal:
      return true;
    case Scope::kDomain:
      return entry.did == op.did;
    case Scope::kDevice:
      return source_id_matches(entry.source_id, op.source_id, op.function_mask);
    case Scope::kPasid:
      return owner_matches(op, entry) && entry.pasid == op.pasid;
    case Scope::kRange:
      if (op.addr_is_gpa) {
        if (entry.cache == kCacheDevTlb || entry.did != op.did) return false;
        // VT-d type 0x2 page-selective-within-domain (IOTLB Invalidate Descriptor; QEMU's
        // vtd_hash_remove_by_page quotes it): second-stage entries of the DID in the range go
        // (non-leaf ones unless IH), and every first-stage and nested entry of the DID goes,
        // whatever its address: a nested walk read its first-level tables through the second
        // level, and a first-stage entry is reached by the rule as written.
        if (entry.second_level)
          return !(entry.cache == kCachePaging && op.leaf) && page_in_range(op, entry.page);
        return true;
      }
      // IH promises that no paging-structure entry changed, so those caches may keep theirs.
      if (entry.cache == kCachePaging && op.leaf) return false;
      return owner_matches(op, entry) && entry.pasid == op.pasid && page_in_range(op, entry.page);
  }
  return false;
}

}  // namespace nestor::invq
