// The guest-physical pages that nested walks have read first-level tables from, per domain:
// a Bloom filter that answers "might a second-level change of this range have moved a table
// page?" for dependency-tracked GPA invalidation (GpaReach::kFinalGpaDependents).
//
// A false "yes" costs over-invalidation (the caller falls back to the architecture's reach);
// a false "no" would be a stale translation, so pages are only ever added, and the filter is
// emptied only by clear(), whose caller must invalidate every first-level entry it covered.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

#include "nestor/caches/hash.h"

// GCC refuses std::atomic_thread_fence under ThreadSanitizer (it cannot model fences).
#if defined(__SANITIZE_THREAD__)
#define NESTOR_CACHES_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NESTOR_CACHES_TSAN 1
#endif
#endif

namespace nestor::caches {

class TablePageFilter {
 public:
  // bits: rounded up to a power of two (at least 64).
  explicit TablePageFilter(size_t bits = size_t{1} << 20)
      : words_(round_up_pow2(bits < 64 ? 64 : bits) / 64),
        // calloc: the pages stay untouched until a nested walk marks one.
        bits_(static_cast<uint64_t *>(std::calloc(words_, sizeof(uint64_t)))) {
    if (!bits_) throw std::bad_alloc();
  }
  TablePageFilter(const TablePageFilter &) = delete;
  TablePageFilter &operator=(const TablePageFilter &) = delete;

  // Marks (did, 4K page of gpa). Must happen before the walk reads anything through that page,
  // with the fence pairing with the one in might_contain(): either the walk reads the host's
  // new second-level entry, or the invalidation that follows the change sees the mark.
  void add(uint16_t did, uint64_t gpa) {
    const uint64_t h = mix64((gpa >> 12) << 16 | did);
    for (uint64_t hh : {h, h >> 32 | h << 32}) {
      std::atomic_ref<uint64_t> w(bits_[(hh >> 6) & (words_ - 1)]);
      const uint64_t bit = uint64_t{1} << (hh & 63);
      if (!(w.load(std::memory_order_acquire) & bit)) {
        w.fetch_or(bit, std::memory_order_seq_cst);
        marked_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    store_load_barrier();
  }

  // Whether any 4K page of [gpa, gpa + npages * 4K) of did may have been marked.
  bool might_contain(uint16_t did, uint64_t gpa, uint64_t npages) const {
    store_load_barrier();
    // No "nothing marked" shortcut: marked_ is only a hint (see clear()).
    for (uint64_t p = gpa >> 12, n = 0; n < npages; ++p, ++n) {
      const uint64_t h = mix64(p << 16 | did);
      bool all = true;
      for (uint64_t hh : {h, h >> 32 | h << 32}) {
        std::atomic_ref<uint64_t> w(bits_[(hh >> 6) & (words_ - 1)]);
        if (!(w.load(std::memory_order_relaxed) & (uint64_t{1} << (hh & 63)))) all = false;
      }
      if (all) return true;
    }
    return false;
  }

  // Bits set so far (an upper bound: concurrent markers may both count one bit).
  uint64_t marked() const { return marked_.load(std::memory_order_relaxed); }
  size_t bits() const { return words_ * 64; }

  // Forgets every page. The caller must, after this and before any invalidation may consult
  // the filter again, invalidate every entry that depended on a marked page.
  // The count is reset before the bits, so a mark that survives the clear (its fetch_or read
  // a zeroed word) is also counted after the reset.
  void clear() {
    marked_.store(0, std::memory_order_relaxed);
    for (size_t i = 0; i < words_; ++i)
      std::atomic_ref<uint64_t>(bits_[i]).store(0, std::memory_order_release);
    store_load_barrier();
  }

 private:
  // Orders this thread's earlier stores before its later loads (Dekker): the marks before the
  // walk's reads, the host's table write before the invalidation's check.
  void store_load_barrier() const {
#if defined(NESTOR_CACHES_TSAN)
    // acq_rel RMWs on one shared word give the same guarantee in a form TSan models.
    // Contended, so only for sanitizer builds.
    tsan_barrier_.fetch_add(0, std::memory_order_acq_rel);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  }

  struct Free {
    void operator()(uint64_t *p) const { std::free(p); }
  };
  size_t words_;
  std::unique_ptr<uint64_t[], Free> bits_;
  std::atomic<uint64_t> marked_{0};
#if defined(NESTOR_CACHES_TSAN)
  mutable std::atomic<uint64_t> tsan_barrier_{0};
#endif
};

}  // namespace nestor::caches
