// IOTLB: (DID, PASID, page, size class) -> host page, permissions and, for nested entries, the
// GPA page the combined translation depends on.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "nestor/caches/invalidation_clock.h"
#include "nestor/caches/range_log.h"
#include "nestor/caches/set_assoc_cache.h"
#include "nestor/caches/stats.h"

namespace nestor::caches {

enum class PageSize : uint8_t { k4K = 0, k2M = 1, k1G = 2 };

inline constexpr unsigned kPageShift4K = 12;
constexpr unsigned page_shift_of(PageSize s) {
  return 12 + 9 * static_cast<unsigned>(s);
}

// Entry flags; opaque to the cache except for how GPA-addressed invalidation treats them.
enum IotlbFlags : uint8_t {
  kIotlbNested = 1,           // combined FL+SL translation; depends on gpa_base
  kIotlbDirty = 2,            // dirty already set in the leaf, writes need no A/D update
  kIotlbSecondLevelOnly = 4,  // SL-only translation (iova is a GPA)
};

struct IotlbEntry {
  uint64_t hpa_base = 0;  // host physical base of the page, aligned to its size
  uint64_t gpa_base = 0;  // nested: GPA base of the page (aligned to its size); else unused
  uint8_t page_shift = kPageShift4K;  // 12, 21 or 30
  uint8_t perms = 0;                  // permission/attribute bits, opaque to the cache
  uint8_t flags = 0;                  // IotlbFlags
  // Nested: size of the second-level leaf that mapped the final GPA (0: page_shift). A GPA
  // invalidation anywhere in that leaf reaches the entry, however small the entry is.
  uint8_t sl_page_shift = 0;
};

struct IotlbConfig {
  SetAssocConfig cache{.capacity = 8192, .shards = 16, .ways = 0};
  // Page/range invalidations above this many 4K pages become a PASID-scope invalidation:
  // removal walks one set per covered page, a scope bump is O(1).
  uint64_t promote_threshold_pages = 1024;
  size_t pasid_scope_slots = 4096;  // hashed (DID, PASID) scope table
  // Hashed (DID, size class, final GPA page) times of GpaReach::kFinalGpaDependents. A slot
  // shared by two keys can only make entries look older (over-invalidation).
  size_t gpa_page_slots = 65536;
};

// What a second-level (GPA-addressed) invalidation removes besides the second-level-only
// entries in its range, which it always removes precisely.
enum class GpaReach : uint8_t {
  // VT-d type 0x2, page-selective-within-domain: every first-level-only and every nested
  // entry of the domain, whatever its address (the architecture's rule).
  kFirstLevelOfDomain,
  // Only nested entries whose final GPA lies in the range. Correct only when nothing else a
  // nested entry depends on changed: the caller has established that no first-level table
  // page of the domain lies in the range, and first-level changes are announced separately.
  kFinalGpaDependents,
};

class Iotlb {
 public:
  // Entries for translations that depend only on the second level (requests without PASID and
  // PGTT=SL PASIDs) should be filled under this PASID value: they are a function of (DID, GPA),
  // so sharing them across PASIDs is correct, and it lets GPA-addressed invalidation remove
  // them precisely instead of by region.
  static constexpr uint32_t kSecondLevelPasid = 0xFFFF'FFFFu;
  static constexpr unsigned kWays = 8;

  explicit Iotlb(InvalidationClock &clock, const IotlbConfig &cfg = {})
      : clock_(clock),
        cfg_(cfg),
        cache_(cfg.cache),
        did_times_(1u << 16, detail::ScopeTable::Indexing::kDirect),
        pasid_times_(cfg.pasid_scope_slots, detail::ScopeTable::Indexing::kHashed),
        first_level_did_times_(1u << 16, detail::ScopeTable::Indexing::kDirect),
        gpa_page_times_(cfg.gpa_page_slots, detail::ScopeTable::Indexing::kHashed),
        did_scope_times_(1u << 16, detail::ScopeTable::Indexing::kDirect) {}

  Iotlb(const Iotlb &) = delete;
  Iotlb &operator=(const Iotlb &) = delete;

  InvalidationClock &clock() const { return clock_; }
  const IotlbConfig &config() const { return cfg_; }
  size_t capacity() const { return cache_.capacity(); }

  // Probes 4K, then 2M, then 1G: small pages dominate, so the common hit costs one set. Size
  // classes never filled are skipped: a miss in a 4K-only engine costs one probe, not three. A
  // lookup that skips a class whose first entry is being filled just misses (and walks).
  // Inlined: on a handle's IOTLB hit this and the set lookup were two calls where one will do.
  [[gnu::always_inline]] bool lookup(uint16_t did, uint32_t pasid, uint64_t iova,
                                     IotlbEntry *out) const {
    const unsigned sizes = sizes_filled_.load(std::memory_order_relaxed);
    for (unsigned s = 0; s < 3; ++s) {
      if (!(sizes & (1u << s))) continue;
      const Key key = make_key(did, pasid, iova >> page_shift_of(PageSize(s)), PageSize(s));
      if (cache_.lookup(key, out, valid_fn())) {
        stats_.add(Counter::kHits);
        return true;
      }
    }
    stats_.add(Counter::kMisses);
    return false;
  }

  // Prefetches the set a 4K lookup of iova would read first (the common page size).
  void prefetch(uint16_t did, uint32_t pasid, uint64_t iova) const {
    cache_.prefetch(make_key(did, pasid, iova >> kPageShift4K, PageSize::k4K));
  }
  // The two stages of SetAssocCache::prefetch_tags / prefetch_slot for a 4K lookup of iova.
  void prefetch_tags(uint16_t did, uint32_t pasid, uint64_t iova) const {
    cache_.prefetch_tags(make_key(did, pasid, iova >> kPageShift4K, PageSize::k4K));
  }
  void prefetch_slot(uint16_t did, uint32_t pasid, uint64_t iova) const {
    cache_.prefetch_slot(make_key(did, pasid, iova >> kPageShift4K, PageSize::k4K));
  }

  // stamp: clock().now() read before the walk began. Returns false (refused) if any
  // invalidation that applies to this entry was issued at or after the stamp.
  bool fill(uint64_t stamp, uint16_t did, uint32_t pasid, uint64_t iova, const IotlbEntry &e) {
    PageSize size;
    if (e.page_shift == 12) {
      size = PageSize::k4K;
    } else if (e.page_shift == 21) {
      size = PageSize::k2M;
    } else if (e.page_shift == 30) {
      size = PageSize::k1G;
    } else {
      stats_.add(Counter::kRefusedFills);
      return false;
    }
    const Key key = make_key(did, pasid, iova >> e.page_shift, size);
    if (!(sizes_filled_.load(std::memory_order_relaxed) & (1u << unsigned(size))))
      sizes_filled_.fetch_or(uint8_t(1u << unsigned(size)), std::memory_order_relaxed);
    const FillResult r =
        cache_.fill_checked(stamp, key, e, valid_fn(), [this](uint64_t st, const Key &k) {
          const unsigned shift = page_shift_of(PageSize(k.size));
          const uint64_t lo = k.page << shift;
          return ranges_.recent(st, detail::did_pasid_key(k.did, k.pasid), lo,
                                lo + ((uint64_t{1} << shift) - 1));
        });
    count_fill(r);
    return accepted(r);
  }

  void invalidate_global() {
    const uint64_t t = clock_.advance();
    detail::raise_to(any_scope_time_, t);
    detail::raise_to(global_time_, t);
    stats_.add(Counter::kInvGlobal);
  }

  void invalidate_domain(uint16_t did) {
    const uint64_t t = clock_.advance();
    raise_scope_times(did, t);
    did_times_.raise(did, t);
    stats_.add(Counter::kInvDomain);
  }

  void invalidate_pasid(uint16_t did, uint32_t pasid) {
    const uint64_t t = clock_.advance();
    raise_scope_times(did, t);
    pasid_times_.raise(detail::did_pasid_key(did, pasid), t);
    stats_.add(Counter::kInvPasid);
  }

  // 2M and 1G keys already probed inside one open InvalidationClock::Interval (one
  // CacheSet::apply_batch). Probing one again finds nothing a walk could still fill: the first
  // probe followed its range's RangeLog entry, which refuses the fill of any entry overlapping
  // that range from a walk stamped before the interval closed (fill_checked), and a walk
  // stamped after it read the tables as they were when the batch was queued. A batch of page
  // invalidations mostly shares them, so a page costs one probe instead of three. Remembers
  // the last key per size class; a forgotten key is only probed twice.
  class RemovalMemo {
   public:
    bool first(uint16_t did, uint32_t pasid, unsigned size, uint64_t page) {
      Last &l = last_[size];
      if (l.valid && l.page == page && l.pasid == pasid && l.did == did) return false;
      l = Last{page, pasid, did, true};
      return true;
    }

   private:
    struct Last {
      uint64_t page = 0;
      uint32_t pasid = 0;
      uint16_t did = 0;
      bool valid = false;
    };
    std::array<Last, 3> last_{};
  };

  // Removes every entry of (did, pasid), any size class, overlapping the npages 4K pages
  // starting with the page that contains addr (offset bits are ignored, as in VT-d).
  // `memo` (optional): large-page keys probed earlier in the same interval, skipped.
  void invalidate_range(uint16_t did, uint32_t pasid, uint64_t addr, uint64_t npages,
                        RemovalMemo *memo = nullptr) {
    if (npages == 0) return;
    stats_.add(npages == 1 ? Counter::kInvPage : Counter::kInvRange);
    remove_range(did, pasid, addr, npages, clock_.advance(), memo);
  }

  // Same signature as the paging-structure caches' so invalidation code can treat every cache
  // alike; the leaf hint cannot spare IOTLB entries, which are all leaves.
  void invalidate_range(uint16_t did, uint32_t pasid, uint64_t addr, uint64_t npages,
                        bool /*leaf_hint*/) {
    invalidate_range(did, pasid, addr, npages);
  }

  // VT-d address-mask form: 2^am pages starting at addr aligned down to 2^am pages.
  void invalidate_page_am(uint16_t did, uint32_t pasid, uint64_t addr, unsigned am) {
    am = std::min(am, 52u);
    const uint64_t npages = uint64_t{1} << am;
    addr &= ~((npages << kPageShift4K) - 1);
    invalidate_range(did, pasid, addr, npages);
  }

  // Second-level change in [gpa, gpa + npages*4K) of domain did (VT-d IOTLB invalidation,
  // page-selective-within-domain). Second-level-only entries (kSecondLevelPasid) in the range
  // are removed precisely; what else goes is `reach` (see GpaReach and docs/CACHES.md).
  void invalidate_gpa_range(uint16_t did, uint64_t gpa, uint64_t npages,
                            GpaReach reach = GpaReach::kFirstLevelOfDomain) {
    if (npages == 0) return;
    stats_.add(Counter::kInvGpa);
    const uint64_t t = clock_.advance();
    gpa &= ~((uint64_t{1} << kPageShift4K) - 1);
    remove_range(did, kSecondLevelPasid, gpa, npages, t);
    if (reach == GpaReach::kFinalGpaDependents && npages <= cfg_.promote_threshold_pages) {
      // Every size class an entry may have: a 2M or 1G nested page overlapping the range is
      // found under its own base.
      const uint64_t last = last_byte(gpa, npages);
      for (unsigned s = 0; s < 3; ++s) {
        const unsigned shift = page_shift_of(PageSize(s));
        for (uint64_t p = gpa >> shift;; ++p) {
          gpa_page_times_.raise(gpa_page_key(did, PageSize(s), p), t);
          if (p == (last >> shift)) break;
        }
      }
      raise_scope_times(did, t);
      return;
    }
    // The architecture's reach (or a dependency range too large to mark page by page).
    raise_scope_times(did, t);
    first_level_did_times_.raise(did, t);
    stats_.add(Counter::kOverInvalidations);
  }

  CacheStats stats() const { return stats_.snapshot(); }
  // A page walk done because of a miss (or with caching off), and the entries it read.
  void count_walk(unsigned refs) {
    stats_.add(Counter::kWalks);
    stats_.add(Counter::kWalkRefs, refs);
  }

  // Diagnostics only (locks every set): live entries, i.e. present and not scope-invalidated.
  size_t count_live() {
    auto valid = valid_fn();
    return cache_.count_if(
        [&](uint64_t st, const Key &k, const IotlbEntry &v) { return valid(st, k, v); });
  }

  // Diagnostics only (locks every set): f(did, pasid, input base address, entry) for every live
  // entry. pasid is kSecondLevelPasid for second-level-only entries.
  template <class F>
  void for_each_live(F &&f) {
    auto valid = valid_fn();
    cache_.count_if([&](uint64_t st, const Key &k, const IotlbEntry &v) {
      if (valid(st, k, v)) f(k.did, k.pasid, k.page << page_shift_of(PageSize(k.size)), v);
      return false;
    });
  }

 private:
  struct Key {
    uint64_t page;  // address >> page shift of the size class
    uint32_t pasid;
    uint16_t did;
    uint8_t size;  // PageSize
    uint8_t zero;  // keeps the key free of padding: keys are compared word-wise
  };
  using Cache = SetAssocCache<Key, IotlbEntry, kWays>;

  static Key make_key(uint16_t did, uint32_t pasid, uint64_t page, PageSize s) {
    static_assert(offsetof(Key, pasid) == 8 && offsetof(Key, did) == 12 &&
                  offsetof(Key, size) == 14);
    return key_from_words<Key>(
        page, uint64_t(pasid) | (uint64_t(did) << 32) | (uint64_t(static_cast<uint8_t>(s)) << 48));
  }

  static uint64_t gpa_page_key(uint16_t did, PageSize s, uint64_t page) {
    return (page << 18) | (uint64_t(s) << 16) | did;
  }

  // Saturates instead of wrapping: a range running off the top of the address space covers
  // everything up to it.
  static uint64_t last_byte(uint64_t addr, uint64_t npages) {
    constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
    if (npages > (kMax >> kPageShift4K)) return kMax;
    const uint64_t len = npages << kPageShift4K;
    return addr > kMax - (len - 1) ? kMax : addr + (len - 1);
  }

  // The scope checks every hit and every admitted fill must pass. A named functor rather than
  // a lambda so member functions defined above can use it.
  struct Valid {
    const Iotlb *self;
    // Filled after the newest scope invalidation of any kind, so no scope table can reject
    // it. Scope invalidations are rare next to hits, so this is the usual case.
    bool live_by_stamp(uint64_t stamp) const {
      return stamp > self->any_scope_time_.load(std::memory_order_acquire);
    }
    // Filled after the newest global invalidation and the newest scope invalidation that
    // reached its domain: what keeps the hits of one address space on the short path while
    // other domains' PASIDs and domains are being invalidated.
    bool live_in_domain(uint64_t stamp, uint16_t did) const {
      return stamp > self->global_time_.load(std::memory_order_acquire) &&
             stamp > self->did_scope_times_.get(did);
    }
    [[gnu::always_inline]] bool operator()(uint64_t stamp, const Key &k,
                                           const IotlbEntry &v) const {
      return live_by_stamp(stamp) || live_in_domain(stamp, k.did) || by_scope_tables(stamp, k, v);
    }
    // Out of line: a hit filled after every scope invalidation, or after every one that
    // reached its own domain, never gets here.
    [[gnu::noinline]] bool by_scope_tables(uint64_t stamp, const Key &k,
                                           const IotlbEntry &v) const {
      if (stamp <= self->global_time_.load(std::memory_order_acquire)) return false;
      if (stamp <= self->did_times_.get(k.did)) return false;
      if (stamp <= self->pasid_times_.get(detail::did_pasid_key(k.did, k.pasid))) return false;
      if (k.pasid == kSecondLevelPasid) return true;
      // Entries tagged with a real PASID went through a first-level walk (or are nested).
      if (stamp <= self->first_level_did_times_.get(k.did)) return false;
      if (v.flags & (kIotlbNested | kIotlbSecondLevelOnly)) {
        const unsigned shift = v.sl_page_shift > v.page_shift ? v.sl_page_shift : v.page_shift;
        const PageSize size = shift >= 30   ? PageSize::k1G
                              : shift >= 21 ? PageSize::k2M
                                            : PageSize::k4K;
        const uint64_t key = gpa_page_key(k.did, size, v.gpa_base >> page_shift_of(size));
        if (stamp <= self->gpa_page_times_.get(key)) return false;
      }
      return true;
    }
  };
  Valid valid_fn() const { return Valid{this}; }

  // Beside the scope table the operation itself raises (in either order: a lookup racing the
  // operation may go either way, and one after its wait completed sees both).
  void raise_scope_times(uint16_t did, uint64_t t) {
    detail::raise_to(any_scope_time_, t);
    did_scope_times_.raise(did, t);
  }

  void remove_range(uint16_t did, uint32_t pasid, uint64_t addr, uint64_t npages, uint64_t t,
                    RemovalMemo *memo = nullptr) {
    addr &= ~((uint64_t{1} << kPageShift4K) - 1);
    if (npages > cfg_.promote_threshold_pages) {
      raise_scope_times(did, t);
      pasid_times_.raise(detail::did_pasid_key(did, pasid), t);
      stats_.add(Counter::kInvPromoted);
      stats_.add(Counter::kOverInvalidations);
      return;
    }
    const uint64_t last = last_byte(addr, npages);
    // Published before any set is probed: a fill that raced the probes finds it (fill_checked).
    ranges_.publish(detail::did_pasid_key(did, pasid), addr, last, t);
    // An entry overlapping the range has, in its size class, a page number between those of
    // the range's first and last byte; so these keys are all the keys that can hold one. Sets
    // are only read unless their tags say they may hold one: locking every set was 70% of a
    // storm's range invalidation (the lock's cache line is shared with the translators).
    Cache::KeyRemover remover(cache_, Cache::KeyRemover::Probe{});
    for (unsigned s = 0; s < 3; ++s) {
      const unsigned shift = page_shift_of(PageSize(s));
      const uint64_t first_page = addr >> shift, last_page = last >> shift;
      for (uint64_t p = first_page;; ++p) {
        // 4K keys are each op's own (the batch's ranges were merged); larger ones repeat.
        if (s == 0 || !memo || memo->first(did, pasid, s, p))
          remover.add(make_key(did, pasid, p, PageSize(s)));
        if (p == last_page) break;
      }
    }
    const size_t removed = remover.removed();
    if (removed) stats_.add(Counter::kEntriesRemoved, removed);
  }

  void count_fill(FillResult r) const {
    if (r == FillResult::kRefused) {
      stats_.add(Counter::kRefusedFills);
      return;
    }
    stats_.add(Counter::kFills);
    if (r == FillResult::kEvicted) stats_.add(Counter::kEvictions);
  }

  InvalidationClock &clock_;
  IotlbConfig cfg_;
  Cache cache_;
  // Newest time raised in any scope table below (a max over all of them).
  alignas(64) std::atomic<uint64_t> any_scope_time_{0};
  // Bit s: an entry of PageSize s was filled at some time (never cleared). 4K is always
  // probed. Its own line: read on every lookup, written at most twice.
  alignas(64) std::atomic<uint8_t> sizes_filled_{1};
  std::atomic<uint64_t> global_time_{0};
  detail::ScopeTable did_times_;
  detail::ScopeTable pasid_times_;
  detail::ScopeTable first_level_did_times_;  // GPA ops reaching FL-only and nested entries
  detail::ScopeTable gpa_page_times_;         // GpaReach::kFinalGpaDependents
  // Per DID, the newest time raised for that DID in any table above (Valid::live_in_domain).
  detail::ScopeTable did_scope_times_;
  RangeLog ranges_;  // page/range invalidations, for fill_checked
  mutable Stats stats_;
};

}  // namespace nestor::caches
