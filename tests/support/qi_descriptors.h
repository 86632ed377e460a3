// VT-d invalidation descriptor encoders for tests that drive the queue in machine memory
// (VT-d 6.5.2 layouts; docs/INVQ.md has the field table). Written from the specification's
// bit positions, independently of invq's decoder.
#pragma once

#include <cstdint>

namespace nestor::test::qi {

struct Desc {
  uint64_t qw0, qw1;
};

// Context-cache invalidate (0x1): global, or device-selective (G=11b).
inline Desc context_global() {
  return {0x1 | (1u << 4), 0};
}
inline Desc context_device(uint16_t sid, uint16_t did) {
  return {0x1 | (3u << 4) | (uint64_t(did) << 16) | (uint64_t(sid) << 32), 0};
}
// IOTLB invalidate (0x2), page-selective-within-domain (G=11b): a GPA in the DID's second level.
// `drain` sets DR (bit 7) and DW (bit 6), as Linux's qi_flush_iotlb does when the hardware
// reports read/write draining.
inline Desc iotlb_page_gpa(uint16_t did, uint64_t gpa, unsigned am = 0, bool ih = false,
                           bool drain = false) {
  return {0x2 | (3u << 4) | (drain ? 3u << 6 : 0) | (uint64_t(did) << 16),
          gpa | am | (ih ? 1u << 6 : 0)};
}
// IOTLB invalidate (0x2), domain-selective (G=10b).
inline Desc iotlb_domain(uint16_t did) {
  return {0x2 | (2u << 4) | (uint64_t(did) << 16), 0};
}
// Invalidation wait (0x5) with a status write (SW, bit 5) of `data` to `addr`.
inline Desc wait_status(uint64_t addr, uint32_t data) {
  return {0x5 | (1u << 5) | (uint64_t(data) << 32), addr};
}
// PASID-based IOTLB invalidate (0x6), page-selective-within-PASID (G=11b); 256-bit only.
inline Desc piotlb_page(uint16_t did, uint32_t pasid, uint64_t addr, unsigned am = 0) {
  return {0x6 | (3u << 4) | (uint64_t(did) << 16) | (uint64_t(pasid) << 32), addr | am};
}
// PASID-cache invalidate (0x7), PASID-selective (G=01b); 256-bit only.
inline Desc pasid_cache_pasid(uint16_t did, uint32_t pasid) {
  return {0x7 | (1u << 4) | (uint64_t(did) << 16) | (uint64_t(pasid) << 32), 0};
}

}  // namespace nestor::test::qi
