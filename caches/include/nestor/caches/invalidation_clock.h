// The invalidation clock and the per-scope "invalidated at" tables that make scope invalidation
// O(1) and close the fill race (DESIGN.md invariants 2 and 5).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

#include "nestor/caches/hash.h"

namespace nestor::caches {

// One clock shared by every cache a walk may fill, so a single stamp taken before the walk is
// comparable with the time of any invalidation of any of those caches.
//
// Contract: advance() returns T; every now() that happened before it returned <= T and every
// now() that happens after it returns > T. Hence "stamp > T" means "the walk began after the
// invalidation was issued" and the entry may be trusted.
class InvalidationClock {
 public:
  // Stamp 0 is reserved to mark empty cache slots, so real stamps start at 1.
  InvalidationClock() : now_(1) {}
  InvalidationClock(const InvalidationClock &) = delete;
  InvalidationClock &operator=(const InvalidationClock &) = delete;

  // Acquire pairs with advance()'s release: a walk whose stamp is newer than an invalidation
  // also sees the page-table writes the invalidator made before issuing it.
  uint64_t now() const { return now_.load(std::memory_order_acquire); }

  uint64_t advance() { return now_.fetch_add(1, std::memory_order_acq_rel); }

 private:
  alignas(64) std::atomic<uint64_t> now_;
};

namespace detail {

// Concurrent invalidators obtain times in one order and may publish them in another; a plain
// store could move a scope time backwards and revive entries (under-invalidation).
template <class AtomicWord>  // std::atomic<uint64_t> or std::atomic_ref<uint64_t>
inline void raise_to(AtomicWord &&slot, uint64_t t) {
  uint64_t cur = slot.load(std::memory_order_relaxed);
  while (cur < t && !slot.compare_exchange_weak(cur, t, std::memory_order_release,
                                                std::memory_order_relaxed)) {
  }
}

// A fixed table of scope times. Keys that collide share a slot, which can only make entries
// look older than they are (over-invalidation), never younger.
class ScopeTable {
 public:
  // kDirect: the key space is small (16-bit DID or source-id) and gets one exact slot per key.
  enum class Indexing { kDirect, kHashed };

  ScopeTable(size_t slots, Indexing indexing)
      : mask_(round_up_pow2(slots) - 1),
        direct_(indexing == Indexing::kDirect),
        times_(static_cast<uint64_t *>(std::calloc(mask_ + 1, sizeof(uint64_t)))) {
    if (!times_) throw std::bad_alloc();
  }

  uint64_t get(uint64_t key) const { return slot(key).load(std::memory_order_acquire); }
  void raise(uint64_t key, uint64_t t) { raise_to(slot(key), t); }
  size_t slots() const { return mask_ + 1; }

 private:
  size_t index(uint64_t key) const {
    return static_cast<size_t>(direct_ ? key & mask_ : mix64(key) & mask_);
  }
  std::atomic_ref<uint64_t> slot(uint64_t key) const {
    return std::atomic_ref<uint64_t>(times_[index(key)]);
  }

  struct Free {
    void operator()(uint64_t *p) const { std::free(p); }
  };
  size_t mask_;
  bool direct_;
  // calloc, not a zero-initialising new: the 64K-slot DID tables (512 KiB each, several per
  // engine) stay untouched fresh pages until a scope is invalidated, so building an engine
  // costs no page faults for them. Accessed only through atomic_ref.
  std::unique_ptr<uint64_t[], Free> times_;
};

inline uint64_t did_pasid_key(uint16_t did, uint32_t pasid) {
  return (static_cast<uint64_t>(did) << 32) | pasid;
}

}  // namespace detail
}  // namespace nestor::caches
