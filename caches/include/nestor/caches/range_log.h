// The most recent address-range invalidations of a cache, for fills to check.
//
// Range invalidation of the IOTLB does not lock the sets it visits (see
// SetAssocCache::KeyRemover's probe mode): it publishes the range here and then reads each
// set's tag line, locking only a set that may hold a key of the range. A fill whose walk
// started before the invalidation (stamp <= its time) may then have written its entry after
// the probe read that set. The fill closes that window itself: it publishes its entry first,
// then asks recent() whether such a range was published, and takes the entry out again if so.
// Both sides use sequentially consistent operations (publish here, then load tags; store the
// tag, then load here), so at least one of them sees the other.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "nestor/caches/seqlock_order.h"

namespace nestor::caches {

class RangeLog {
 public:
  // Sized so that a fill finds its whole walk in the log: a walk takes microseconds, and a
  // flat-out storm publishes about one range per microsecond. A fill older than the log is
  // refused (a wasted walk, never a stale entry).
  static constexpr size_t kEntries = 256;

  // `space` identifies the address space (the cache's tag, e.g. DID and PASID); [first, last]
  // are byte addresses, inclusive. Times must come from the cache's InvalidationClock.
  void publish(uint64_t space, uint64_t first, uint64_t last, uint64_t time) {
    std::lock_guard lock(mu_);
    const uint64_t n = count_.load(std::memory_order_relaxed);
    // Times never decrease along the log, so a reader can stop at the first entry older than
    // its stamp. Raising a time is only conservative: it refuses more fills.
    const uint64_t t = std::max(time, newest_time_.load(std::memory_order_relaxed));
    Entry &e = ring_[n % kEntries];
    const uint64_t seq = e.seq.load(std::memory_order_relaxed);
    e.seq.store(seq + 1, std::memory_order_relaxed);
    write_fence();
    e.index.store(n, kDataStore);
    e.space.store(space, kDataStore);
    e.first.store(first, kDataStore);
    e.last.store(last, kDataStore);
    e.time.store(t, kDataStore);
    e.seq.store(seq + 2, std::memory_order_release);
    count_.store(n + 1, std::memory_order_release);
    // The one sequentially consistent store: what a fill's check reads first, and what the
    // publisher's probes must not be reordered before.
    newest_time_.store(t, std::memory_order_seq_cst);
  }

  // True if a range published with a time at or after `stamp` may overlap [first, last] of
  // `space`, or if the log can no longer tell (overwritten while read, or too old).
  bool recent(uint64_t stamp, uint64_t space, uint64_t first, uint64_t last) const {
    if (newest_time_.load(std::memory_order_seq_cst) < stamp) return false;
    const uint64_t count = count_.load(std::memory_order_acquire);
    const uint64_t oldest = count > kEntries ? count - kEntries : 0;
    for (uint64_t i = count; i-- > oldest;) {
      const Entry &e = ring_[i % kEntries];
      const uint64_t seq = e.seq.load(std::memory_order_acquire);
      const uint64_t index = e.index.load(kDataLoad), s = e.space.load(kDataLoad),
                     lo = e.first.load(kDataLoad), hi = e.last.load(kDataLoad),
                     t = e.time.load(kDataLoad);
      read_fence();
      if ((seq & 1) != 0 || e.seq.load(std::memory_order_relaxed) != seq || index != i) return true;
      if (t < stamp) return false;
      if (s == space && lo <= last && first <= hi) return true;
    }
    return oldest != 0;
  }

 private:
  // A seqlock per entry, like a SetAssocCache set.
  static constexpr std::memory_order kDataLoad = seqlock::kDataLoad;
  static constexpr std::memory_order kDataStore = seqlock::kDataStore;
  static void read_fence() { seqlock::read_fence(); }
  static void write_fence() { seqlock::write_fence(); }

  struct Entry {
    std::atomic<uint64_t> seq{0};  // odd while the publisher writes the entry
    std::atomic<uint64_t> index{0}, space{0}, first{0}, last{0}, time{0};
  };
  std::mutex mu_;  // publishers only
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> newest_time_{0};
  std::array<Entry, kEntries> ring_{};
};

}  // namespace nestor::caches
