// The invalidation clock and the per-scope "invalidated at" tables that make scope invalidation
// O(1) and close the fill race (DESIGN.md invariants 2 and 5).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <thread>

#include "nestor/caches/hash.h"

namespace nestor::caches {

// One clock shared by every cache a walk may fill, so a single stamp taken before the walk is
// comparable with the time of any invalidation of any of those caches.
//
// Contract: advance() returns T; every now() that happened before it returned <= T and every
// now() that happens after it returns > T. Hence "stamp > T" means "the walk began after the
// invalidation was issued" and the entry may be trusted.
//
// One operation may touch several caches, each removing its entries set by set after its own
// advance(). A walk stamped after the first advance but while removals are still under way can
// read a not-yet-removed entry of one cache (a nested-table or paging-structure entry) and
// fill another (the IOTLB) whose removal is already done; its stamp is newer than that cache's
// time, so the fill would survive the operation. An Interval closes that hole: while one is
// open, now() returns no more than the clock's value when it opened, so every walk stamped
// during the operation is judged by all of the operation's times, and a walk stamped after it
// closed reads the caches with every removal in place.
class InvalidationClock {
 public:
  static constexpr size_t kMaxOpenIntervals = 8;

  // Stamp 0 is reserved to mark empty cache slots, so real stamps start at 1.
  InvalidationClock() : now_(1) {}
  InvalidationClock(const InvalidationClock &) = delete;
  InvalidationClock &operator=(const InvalidationClock &) = delete;

  // Acquire pairs with advance()'s release: a walk whose stamp is newer than an invalidation
  // also sees the page-table writes the invalidator made before issuing it; the interval loads
  // pair with Interval's open and close (see there).
  uint64_t now() const {
    uint64_t t = now_.load(std::memory_order_acquire);
    for (const auto &slot : open_) {
      const uint64_t o = slot.load(std::memory_order_acquire);
      if (o != 0 && o < t) t = o;
    }
    return t;
  }

  uint64_t advance() { return now_.fetch_add(1, std::memory_order_acq_rel); }

  // Brackets one invalidation operation (all its advance() calls and removals).
  class Interval {
   public:
    explicit Interval(InvalidationClock &clock) {
      for (;;) {
        // Claimed before the operation's first advance(): a now() that reads a value that
        // advance() wrote is ordered after the claim (release sequence of now_), so it sees it.
        const uint64_t t = clock.now_.load(std::memory_order_acquire);
        for (auto &slot : clock.open_) {
          uint64_t expected = 0;
          if (slot.compare_exchange_strong(expected, t, std::memory_order_acq_rel)) {
            slot_ = &slot;
            return;
          }
        }
        // More operations in flight than slots: rare (one per invalidating thread), and each
        // holder finishes without needing a slot.
        std::this_thread::yield();
      }
    }
    // Release: a now() that sees the slot free also sees every removal of the operation.
    ~Interval() { slot_->store(0, std::memory_order_release); }
    Interval(const Interval &) = delete;
    Interval &operator=(const Interval &) = delete;

   private:
    std::atomic<uint64_t> *slot_ = nullptr;
  };

 private:
  alignas(64) std::atomic<uint64_t> now_;
  alignas(64) std::array<std::atomic<uint64_t>, kMaxOpenIntervals> open_{};
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
