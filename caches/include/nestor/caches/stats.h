// Per-thread cache statistics: counting on the hot path touches only the calling thread's own
// cache line, never a shared atomic read-modify-write.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace nestor::caches {

// Summed snapshot, plain data so callers can diff, print or compare it freely.
struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t fills = 0;
  uint64_t refused_fills = 0;  // stamp older than an applicable invalidation
  uint64_t evictions = 0;      // a live entry displaced by a fill into a full set
  uint64_t inv_global = 0;
  uint64_t inv_domain = 0;
  uint64_t inv_pasid = 0;
  uint64_t inv_device = 0;  // source-id scope (context and PASID caches)
  uint64_t inv_page = 0;
  uint64_t inv_range = 0;
  uint64_t inv_gpa = 0;             // GPA-addressed (second-level) invalidations
  uint64_t inv_promoted = 0;        // ranges above the threshold widened to a scope
  uint64_t over_invalidations = 0;  // invalidations applied to a wider scope than asked
  uint64_t entries_removed = 0;     // entries erased by page/range invalidation
  // Page walks done on this cache's misses and the table entries they read (IOTLB only).
  uint64_t walks = 0;
  uint64_t walk_refs = 0;

  uint64_t lookups() const { return hits + misses; }

  // Counts between two snapshots (later - earlier): what one run or phase did.
  friend CacheStats operator-(const CacheStats &a, const CacheStats &b) {
    CacheStats r;
    r.hits = a.hits - b.hits;
    r.misses = a.misses - b.misses;
    r.fills = a.fills - b.fills;
    r.refused_fills = a.refused_fills - b.refused_fills;
    r.evictions = a.evictions - b.evictions;
    r.inv_global = a.inv_global - b.inv_global;
    r.inv_domain = a.inv_domain - b.inv_domain;
    r.inv_pasid = a.inv_pasid - b.inv_pasid;
    r.inv_device = a.inv_device - b.inv_device;
    r.inv_page = a.inv_page - b.inv_page;
    r.inv_range = a.inv_range - b.inv_range;
    r.inv_gpa = a.inv_gpa - b.inv_gpa;
    r.inv_promoted = a.inv_promoted - b.inv_promoted;
    r.over_invalidations = a.over_invalidations - b.over_invalidations;
    r.entries_removed = a.entries_removed - b.entries_removed;
    r.walks = a.walks - b.walks;
    r.walk_refs = a.walk_refs - b.walk_refs;
    return r;
  }
};

enum class Counter : unsigned {
  kHits,
  kMisses,
  kFills,
  kRefusedFills,
  kEvictions,
  kInvGlobal,
  kInvDomain,
  kInvPasid,
  kInvDevice,
  kInvPage,
  kInvRange,
  kInvGpa,
  kInvPromoted,
  kOverInvalidations,
  kEntriesRemoved,
  kWalks,
  kWalkRefs,
  kCount,
};

namespace detail {

inline constexpr size_t kMaxStatThreads = 256;
inline constexpr size_t kNoSlot = kMaxStatThreads;

// Process-wide slot bitmap. A slot belongs to one live thread at a time, so that thread may
// update its counters with plain load+store; the CAS/clear pair hands a slot (and the counts
// already in it) from an exited thread to a new one.
inline std::atomic<uint64_t> g_stat_slot_bits[kMaxStatThreads / 64];

class StatSlot {
 public:
  StatSlot() : slot_(claim()) {}
  ~StatSlot() {
    if (slot_ != kNoSlot) {
      g_stat_slot_bits[slot_ / 64].fetch_and(~(uint64_t{1} << (slot_ % 64)),
                                             std::memory_order_release);
    }
  }
  StatSlot(const StatSlot &) = delete;
  StatSlot &operator=(const StatSlot &) = delete;
  size_t slot() const { return slot_; }

 private:
  static size_t claim() {
    for (size_t w = 0; w < kMaxStatThreads / 64; ++w) {
      uint64_t bits = g_stat_slot_bits[w].load(std::memory_order_relaxed);
      while (~bits != 0) {
        const int bit = __builtin_ctzll(~bits);
        if (g_stat_slot_bits[w].compare_exchange_weak(bits, bits | (uint64_t{1} << bit),
                                                      std::memory_order_acquire,
                                                      std::memory_order_relaxed)) {
          return w * 64 + static_cast<size_t>(bit);
        }
      }
    }
    return kNoSlot;  // more live threads than slots: share the overflow block
  }
  size_t slot_;
};

inline size_t this_thread_stat_slot() {
  thread_local StatSlot slot;
  return slot.slot();
}

}  // namespace detail

// One counter block per thread slot plus a shared overflow block; allocated once, at
// construction.
class Stats {
 public:
  Stats() : blocks_(std::make_unique<Block[]>(detail::kMaxStatThreads + 1)) {}

  void add(Counter c, uint64_t n = 1) {
    const size_t slot = detail::this_thread_stat_slot();
    std::atomic<uint64_t> &a = blocks_[slot].c[static_cast<unsigned>(c)];
    if (slot == detail::kNoSlot) {
      a.fetch_add(n, std::memory_order_relaxed);
    } else {
      // Single writer per slot: no read-modify-write needed, only atomicity for the summer.
      a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
  }

  // Sums every block; concurrent updates may or may not be included (counts are monotonic).
  CacheStats snapshot() const {
    std::array<uint64_t, static_cast<size_t>(Counter::kCount)> sum{};
    for (size_t b = 0; b <= detail::kMaxStatThreads; ++b) {
      for (size_t i = 0; i < sum.size(); ++i) {
        sum[i] += blocks_[b].c[i].load(std::memory_order_relaxed);
      }
    }
    auto at = [&](Counter c) { return sum[static_cast<size_t>(c)]; };
    CacheStats s;
    s.hits = at(Counter::kHits);
    s.misses = at(Counter::kMisses);
    s.fills = at(Counter::kFills);
    s.refused_fills = at(Counter::kRefusedFills);
    s.evictions = at(Counter::kEvictions);
    s.inv_global = at(Counter::kInvGlobal);
    s.inv_domain = at(Counter::kInvDomain);
    s.inv_pasid = at(Counter::kInvPasid);
    s.inv_device = at(Counter::kInvDevice);
    s.inv_page = at(Counter::kInvPage);
    s.inv_range = at(Counter::kInvRange);
    s.inv_gpa = at(Counter::kInvGpa);
    s.inv_promoted = at(Counter::kInvPromoted);
    s.over_invalidations = at(Counter::kOverInvalidations);
    s.entries_removed = at(Counter::kEntriesRemoved);
    s.walks = at(Counter::kWalks);
    s.walk_refs = at(Counter::kWalkRefs);
    return s;
  }

 private:
  struct alignas(64) Block {
    std::array<std::atomic<uint64_t>, static_cast<size_t>(Counter::kCount)> c{};
  };
  std::unique_ptr<Block[]> blocks_;
};

}  // namespace nestor::caches
