// Canonical invalidation vocabulary shared by every invq front end (raw VT-d descriptors, typed
// C++ calls, uAPI-style calls) and by the engine that applies it to the caches.
#pragma once

#include <cstdint>
#include <functional>

namespace nestor::invq {

// Cache bitmask. Values are part of the C ABI (NESTOR_CACHE_*).
enum CacheBits : uint8_t {
  kCacheContext = 1,
  kCachePasid = 2,
  kCacheIotlb = 4,
  kCachePaging = 8,  // paging-structure caches (first-level, second-level, nested)
  kCacheDevTlb = 16,
};
inline constexpr uint8_t kAllCaches =
    kCacheContext | kCachePasid | kCacheIotlb | kCachePaging | kCacheDevTlb;

// Scope of an operation. Values are part of the C ABI (NESTOR_SCOPE_*).
enum class Scope : uint8_t {
  kGlobal = 0,
  kDomain = 1,  // every entry tagged with `did`
  kDevice = 2,  // every entry of `source_id` (context cache: with function mask `fm`)
  kPasid = 3,   // every entry of (`did`, `pasid`); device TLB: (`source_id`, `pasid`)
  kRange = 4,   // [addr, addr + npages * 4K) within the PASID scope (or the domain for GPA ops)
};

// Requests without PASID (legacy device-TLB descriptors) carry this instead of a 20-bit PASID.
inline constexpr uint32_t kNoPasid = 0xFFFFFFFFu;
inline constexpr uint64_t kPageShift = 12;
inline constexpr uint64_t kPageSize = uint64_t{1} << kPageShift;
// Page numbers are limited to 52 bits, so page + npages never overflows a uint64_t.
inline constexpr uint64_t kMaxPageNumber = (uint64_t{1} << 52) - 1;

struct InvalidationOp {
  uint8_t caches = 0;  // CacheBits
  Scope scope = Scope::kGlobal;
  uint16_t did = 0;
  uint16_t source_id = 0;
  uint32_t pasid = kNoPasid;
  uint64_t addr = 0;    // 4K aligned; meaningful for kRange only
  uint64_t npages = 0;  // 4K pages; meaningful for kRange only
  // IH: only leaf entries changed, so paging-structure caches may keep their entries.
  bool leaf = false;
  // VT-d type-0x2 page-selective IOTLB invalidation: `addr` is a GPA in the second level of
  // `did` (any PASID), not a first-level IOVA of (`did`, `pasid`).
  bool addr_is_gpa = false;
  // Context-cache device scope: function mask (VT-d FM, 0..3 low function bits ignored).
  uint8_t function_mask = 0;
  // Device-TLB extras forwarded to an ATS model; they never widen or narrow the scope.
  uint16_t pfsid = 0;
  uint8_t max_invs_pending = 0;
  bool devtlb_global = false;  // PASID-based device-TLB G bit: global mappings too

  friend bool operator==(const InvalidationOp &, const InvalidationOp &) = default;
};

// Completion request that follows a batch of operations.
struct WaitOp {
  bool status_write = false;
  uint64_t status_addr = 0;  // 4-byte aligned machine address
  uint32_t status_data = 0;
  bool interrupt = false;           // counted; the embedder raises the interrupt if it wants one
  bool fence = false;               // later operations are not started before this wait completes
  bool page_request_drain = false;  // VT-d PD; accepted, there is no page-request queue here
  std::function<void()> callback;   // runs on the processing thread at completion
};

// A cached item as the reference semantics see it. The caches hold richer keys; this is the
// common denominator that decides whether an operation must remove an entry.
struct CacheEntryKey {
  uint8_t cache = kCacheIotlb;  // exactly one CacheBits value
  uint16_t did = 0;
  uint16_t source_id = 0;
  uint32_t pasid = 0;
  uint64_t page = 0;          // 4K page number of the input address
  bool second_level = false;  // `page` is a GPA translated by the second level only
  bool nested = false;        // combined first+second-level entry; depends on `gpa_page`
  uint64_t gpa_page = 0;      // nested: 4K page number of the GPA the entry depends on
};

// Whether `op` requires `entry` to be removed. This is the contract between invq and the
// caches: the engine removes at least these entries (more is allowed, fewer never).
bool covers(const InvalidationOp &op, const CacheEntryKey &entry);

// Context-cache device scope: FM masks the top FM bits of the 3-bit function number.
bool source_id_matches(uint16_t entry_sid, uint16_t op_sid, uint8_t function_mask);

}  // namespace nestor::invq
