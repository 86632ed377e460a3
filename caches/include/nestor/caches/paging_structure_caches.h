// Paging-structure caches: non-leaf entries of first-level and second-level walks, and the
// second-level translation of first-level table pages used by nested walks.
//
// Level numbering follows the page tables: a level-L non-leaf entry (L = 2..5) points at a
// level L-1 table and covers 2^(12 + 9*(L-1)) bytes (L2: 2 MiB, L3: 1 GiB, L4: 512 GiB,
// L5: 256 TiB). Its key holds address >> that shift.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <limits>

#include "nestor/caches/invalidation_clock.h"
#include "nestor/caches/set_assoc_cache.h"
#include "nestor/caches/stats.h"

namespace nestor::caches {

struct PscEntry {
  // The table address exactly as the non-leaf entry holds it. For a nested first-level walk
  // that is a GPA, translated through the nested-table cache: that keeps first-level entries
  // independent of the second level, so second-level invalidation never has to touch them.
  uint64_t next_table = 0;
  uint8_t attrs = 0;  // accumulated permission/attribute bits, opaque to the cache
};

struct NestedTableEntry {
  uint64_t hpa_page = 0;  // host address of the 4K page holding the first-level table
  uint8_t sl_perms = 0;   // second-level permissions of that page, opaque to the cache
};

struct PscConfig {
  SetAssocConfig first_level{.capacity = 2048, .shards = 8, .ways = 0};
  SetAssocConfig second_level{.capacity = 2048, .shards = 8, .ways = 0};
  SetAssocConfig nested_table{.capacity = 2048, .shards = 8, .ways = 0};
  // Ranges above this many 4K pages become PASID scope (first level) or domain scope for the
  // second-level structures: removal costs one set per covered page or prefix.
  uint64_t promote_threshold_pages = 1024;
  size_t pasid_scope_slots = 4096;
};

inline constexpr unsigned kPscMinLevel = 2;
inline constexpr unsigned kPscMaxLevel = 5;
constexpr unsigned psc_level_shift(unsigned level) {
  return 12 + 9 * (level - 1);
}

class PagingStructureCaches {
 public:
  static constexpr unsigned kWays = 4;

  // First-level keys already removed inside one open InvalidationClock::Interval (one
  // CacheSet::apply_batch). Removing such a key again removes nothing: a walk stamped inside
  // the interval is stamped no later than the first removal's time, which the key's set
  // recorded, so its fill is refused; a walk stamped after the interval closed read the tables
  // as they were when the batch was queued. A storm batch of page invalidations shares its
  // upper-level prefixes (and its 2 MiB ones in runs), so each op locks ~0 sets instead of 4.
  // Remembers the last key per level; a forgotten key is only removed twice.
  class RemovalMemo {
   public:
    // True the first time (level, prefix, pasid, did) is seen since the last different key of
    // that level; records it.
    bool first(unsigned level, uint64_t prefix, uint32_t pasid, uint16_t did) {
      if (seen(level, prefix, pasid, did)) return false;
      last_[level] = Key{prefix, pasid, did, true};
      return true;
    }
    bool seen(unsigned level, uint64_t prefix, uint32_t pasid, uint16_t did) const {
      const Key &k = last_[level];
      return k.valid && k.prefix == prefix && k.pasid == pasid && k.did == did;
    }

   private:
    struct Key {
      uint64_t prefix = 0;
      uint32_t pasid = 0;
      uint16_t did = 0;
      bool valid = false;
    };
    std::array<Key, kPscMaxLevel + 1> last_{};
  };

  explicit PagingStructureCaches(InvalidationClock &clock, const PscConfig &cfg = {})
      : clock_(clock),
        cfg_(cfg),
        fl_(cfg.first_level),
        sl_(cfg.second_level),
        nt_(cfg.nested_table),
        did_times_(1u << 16, detail::ScopeTable::Indexing::kDirect),
        sl_did_times_(1u << 16, detail::ScopeTable::Indexing::kDirect),
        fl_did_times_(1u << 16, detail::ScopeTable::Indexing::kDirect),
        pasid_times_(cfg.pasid_scope_slots, detail::ScopeTable::Indexing::kHashed) {}

  PagingStructureCaches(const PagingStructureCaches &) = delete;
  PagingStructureCaches &operator=(const PagingStructureCaches &) = delete;

  InvalidationClock &clock() const { return clock_; }

  // ---- first level: (DID, PASID, level, iova prefix) ----
  bool lookup_fl(uint16_t did, uint32_t pasid, unsigned level, uint64_t iova, PscEntry *out) const {
    const bool hit =
        level_ok(level) && fl_.lookup(fl_key(did, pasid, level, iova), out, fl_valid());
    fl_stats_.add(hit ? Counter::kHits : Counter::kMisses);
    return hit;
  }

  // Deepest cached level in [kPscMinLevel, max_level] (the one that skips most of the walk),
  // or 0 if none; counts a single hit or miss.
  unsigned lookup_fl_deepest(uint16_t did, uint32_t pasid, uint64_t iova, unsigned max_level,
                             PscEntry *out) const {
    for (unsigned l = kPscMinLevel; l <= max_level && l <= kPscMaxLevel; ++l) {
      if (fl_.lookup(fl_key(did, pasid, l, iova), out, fl_valid())) {
        fl_stats_.add(Counter::kHits);
        return l;
      }
    }
    fl_stats_.add(Counter::kMisses);
    return 0;
  }

  bool fill_fl(uint64_t stamp, uint16_t did, uint32_t pasid, unsigned level, uint64_t iova,
               const PscEntry &e) {
    if (!level_ok(level)) return refuse(fl_stats_);
    return count_fill(fl_stats_, fl_.fill(stamp, fl_key(did, pasid, level, iova), e, fl_valid()));
  }

  // ---- second level: (DID, level, gpa prefix) ----
  bool lookup_sl(uint16_t did, unsigned level, uint64_t gpa, PscEntry *out) const {
    const bool hit = level_ok(level) && sl_.lookup(sl_key(did, level, gpa), out, sl_valid());
    sl_stats_.add(hit ? Counter::kHits : Counter::kMisses);
    return hit;
  }

  unsigned lookup_sl_deepest(uint16_t did, uint64_t gpa, unsigned max_level, PscEntry *out) const {
    for (unsigned l = kPscMinLevel; l <= max_level && l <= kPscMaxLevel; ++l) {
      if (sl_.lookup(sl_key(did, l, gpa), out, sl_valid())) {
        sl_stats_.add(Counter::kHits);
        return l;
      }
    }
    sl_stats_.add(Counter::kMisses);
    return 0;
  }

  bool fill_sl(uint64_t stamp, uint16_t did, unsigned level, uint64_t gpa, const PscEntry &e) {
    if (!level_ok(level)) return refuse(sl_stats_);
    return count_fill(sl_stats_, sl_.fill(stamp, sl_key(did, level, gpa), e, sl_valid()));
  }

  // ---- nested first-level tables: (DID, GPA page) -> HPA page ----
  bool lookup_nested_table(uint16_t did, uint64_t gpa, NestedTableEntry *out) const {
    const bool hit = nt_.lookup(nt_key(did, gpa), out, sl_valid());
    nt_stats_.add(hit ? Counter::kHits : Counter::kMisses);
    return hit;
  }

  bool fill_nested_table(uint64_t stamp, uint16_t did, uint64_t gpa, const NestedTableEntry &e) {
    return count_fill(nt_stats_, nt_.fill(stamp, nt_key(did, gpa), e, sl_valid()));
  }

  // ---- invalidation ----
  void invalidate_global() {
    detail::raise_to(global_time_, clock_.advance());
    for (Stats *s : {&fl_stats_, &sl_stats_, &nt_stats_}) s->add(Counter::kInvGlobal);
  }

  void invalidate_domain(uint16_t did) {
    did_times_.raise(did, clock_.advance());
    for (Stats *s : {&fl_stats_, &sl_stats_, &nt_stats_}) s->add(Counter::kInvDomain);
  }

  // First level only: second-level structures are shared by every PASID of the domain.
  void invalidate_pasid(uint16_t did, uint32_t pasid) {
    pasid_times_.raise(detail::did_pasid_key(did, pasid), clock_.advance());
    fl_stats_.add(Counter::kInvPasid);
  }

  // PASID-based page/range invalidation of the first level. With the leaf hint (VT-d IH) only
  // leaf entries changed, so non-leaf entries are kept, as the architecture allows.
  // `memo` (optional): keys removed earlier in the same interval, skipped (RemovalMemo).
  void invalidate_range(uint16_t did, uint32_t pasid, uint64_t addr, uint64_t npages,
                        bool leaf_hint, RemovalMemo *memo = nullptr) {
    if (npages == 0) return;
    fl_stats_.add(npages == 1 ? Counter::kInvPage : Counter::kInvRange);
    if (leaf_hint) return;
    addr &= ~uint64_t{0xFFF};
    if (npages > cfg_.promote_threshold_pages) {
      pasid_times_.raise(detail::did_pasid_key(did, pasid), clock_.advance());
      fl_stats_.add(Counter::kInvPromoted);
      fl_stats_.add(Counter::kOverInvalidations);
      return;
    }
    const uint64_t last = last_byte(addr, npages);
    // for_each_prefix names every (level, prefix) an entry overlapping the range can have.
    // With every one of them removed already, neither the clock nor a remover is needed.
    if (memo) {
      bool fresh = false;
      for_each_prefix(addr, last, [&](unsigned level, uint64_t prefix) {
        fresh = fresh || !memo->seen(level, prefix, pasid, did);
      });
      if (!fresh) return;
    }
    FlCache::KeyRemover remover(fl_, clock_.advance());
    for_each_prefix(addr, last, [&](unsigned level, uint64_t prefix) {
      if (memo && !memo->first(level, prefix, pasid, did)) return;
      remover.add(fl_key_at(did, pasid, level, prefix));
    });
    const size_t removed = remover.removed();
    if (removed) fl_stats_.add(Counter::kEntriesRemoved, removed);
  }

  // Second-level change of [gpa, gpa + npages*4K) in domain did (VT-d IOTLB page-selective
  // invalidation). Non-leaf second-level entries covering the range go unless leaf_hint.
  // Nested-table entries in the range always go: they cache second-level leaf translations.
  // With `first_level_of_domain`, every first-level entry of the domain goes too (VT-d type
  // 0x2 reaches first-level and nested paging-structure entries of the DID whatever their
  // address; a nested walk read them through the second level). The leaf hint does not spare
  // them: a changed second-level leaf may map a first-level table page.
  void invalidate_gpa_range(uint16_t did, uint64_t gpa, uint64_t npages, bool leaf_hint,
                            bool first_level_of_domain = true) {
    if (npages == 0) return;
    if (first_level_of_domain) invalidate_first_level_of_domain(did);
    sl_stats_.add(Counter::kInvGpa);
    nt_stats_.add(Counter::kInvGpa);
    gpa &= ~uint64_t{0xFFF};
    const uint64_t t = clock_.advance();
    if (npages > cfg_.promote_threshold_pages) {
      sl_did_times_.raise(did, t);
      for (Stats *s : {&sl_stats_, &nt_stats_}) {
        s->add(Counter::kInvPromoted);
        s->add(Counter::kOverInvalidations);
      }
      return;
    }
    const uint64_t last = last_byte(gpa, npages);
    if (!leaf_hint) {
      SlCache::KeyRemover remover(sl_, t);
      for_each_prefix(gpa, last, [&](unsigned level, uint64_t prefix) {
        remover.add(sl_key_at(did, unsigned(level), prefix));
      });
      const size_t removed = remover.removed();
      if (removed) sl_stats_.add(Counter::kEntriesRemoved, removed);
    }
    NtCache::KeyRemover remover(nt_, t);
    for (uint64_t p = gpa >> 12;; ++p) {
      remover.add(nt_key_at(did, p));
      if (p == (last >> 12)) break;
    }
    const size_t removed = remover.removed();
    if (removed) nt_stats_.add(Counter::kEntriesRemoved, removed);
  }

  // The first-level part of a type 0x2 invalidation: every first-level entry of the domain.
  void invalidate_first_level_of_domain(uint16_t did) {
    fl_did_times_.raise(did, clock_.advance());
    fl_stats_.add(Counter::kInvGpa);
    fl_stats_.add(Counter::kOverInvalidations);
  }

  CacheStats fl_stats() const { return fl_stats_.snapshot(); }
  CacheStats sl_stats() const { return sl_stats_.snapshot(); }
  CacheStats nested_table_stats() const { return nt_stats_.snapshot(); }

  // Diagnostics only (locks every set), one call per live entry: first level f(did, pasid,
  // level, iova base), second level f(did, level, gpa base), nested tables f(did, gpa page).
  template <class F>
  void for_each_live_fl(F &&f) {
    auto valid = fl_valid();
    fl_.count_if([&](uint64_t st, const FlKey &k, const PscEntry &v) {
      if (valid(st, k, v))
        f(k.did, k.pasid, unsigned(k.level), k.prefix << psc_level_shift(k.level));
      return false;
    });
  }
  template <class F>
  void for_each_live_sl(F &&f) {
    auto valid = sl_valid();
    sl_.count_if([&](uint64_t st, const SlKey &k, const PscEntry &v) {
      if (valid(st, k, v)) f(k.did, unsigned(k.level), k.prefix << psc_level_shift(k.level));
      return false;
    });
  }
  template <class F>
  void for_each_live_nested_table(F &&f) {
    auto valid = sl_valid();
    nt_.count_if([&](uint64_t st, const NtKey &k, const NestedTableEntry &v) {
      if (valid(st, k, v)) f(k.did, k.page << 12);
      return false;
    });
  }

 private:
  struct FlKey {
    uint64_t prefix;
    uint32_t pasid;
    uint16_t did;
    uint8_t level;
    uint8_t zero;  // no padding: keys are compared word-wise
  };
  struct SlKey {
    uint64_t prefix;
    uint16_t did;
    uint8_t level;
    uint8_t zero[5];
  };
  struct NtKey {
    uint64_t page;
    uint16_t did;
    uint8_t zero[6];
  };

  using FlCache = SetAssocCache<FlKey, PscEntry, kWays>;
  using SlCache = SetAssocCache<SlKey, PscEntry, kWays>;
  using NtCache = SetAssocCache<NtKey, NestedTableEntry, kWays>;

  static bool level_ok(unsigned level) { return level >= kPscMinLevel && level <= kPscMaxLevel; }

  // Word by word (key_from_words): the field layouts are pinned here. The *_at forms take the
  // prefix (address >> the level's shift) that removals enumerate.
  static FlKey fl_key(uint16_t did, uint32_t pasid, unsigned level, uint64_t iova) {
    return fl_key_at(did, pasid, level, iova >> psc_level_shift(level));
  }
  static FlKey fl_key_at(uint16_t did, uint32_t pasid, unsigned level, uint64_t prefix) {
    static_assert(offsetof(FlKey, pasid) == 8 && offsetof(FlKey, did) == 12 &&
                  offsetof(FlKey, level) == 14 && sizeof(FlKey) == 16);
    return key_from_words<FlKey>(
        prefix, uint64_t(pasid) | (uint64_t(did) << 32) | (uint64_t(level & 0xFF) << 48));
  }
  static SlKey sl_key(uint16_t did, unsigned level, uint64_t gpa) {
    return sl_key_at(did, level, gpa >> psc_level_shift(level));
  }
  static SlKey sl_key_at(uint16_t did, unsigned level, uint64_t prefix) {
    static_assert(offsetof(SlKey, did) == 8 && offsetof(SlKey, level) == 10 && sizeof(SlKey) == 16);
    return key_from_words<SlKey>(prefix, uint64_t(did) | (uint64_t(level & 0xFF) << 16));
  }
  static NtKey nt_key(uint16_t did, uint64_t gpa) { return nt_key_at(did, gpa >> 12); }
  static NtKey nt_key_at(uint16_t did, uint64_t page) {
    static_assert(offsetof(NtKey, did) == 8 && sizeof(NtKey) == 16);
    return key_from_words<NtKey>(page, uint64_t(did));
  }

  static uint64_t last_byte(uint64_t addr, uint64_t npages) {
    constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
    if (npages > (kMax >> 12)) return kMax;
    const uint64_t len = npages << 12;
    return addr > kMax - (len - 1) ? kMax : addr + (len - 1);
  }

  template <class F>
  static void for_each_prefix(uint64_t first, uint64_t last, F &&f) {
    for (unsigned l = kPscMinLevel; l <= kPscMaxLevel; ++l) {
      const unsigned shift = psc_level_shift(l);
      for (uint64_t p = first >> shift;; ++p) {
        f(l, p);
        if (p == (last >> shift)) break;
      }
    }
  }

  // Named functors, not lambdas: member functions defined above use them.
  struct FlValid {
    const PagingStructureCaches *self;
    bool operator()(uint64_t stamp, const FlKey &k, const PscEntry &) const {
      return stamp > self->global_time_.load(std::memory_order_acquire) &&
             stamp > self->did_times_.get(k.did) && stamp > self->fl_did_times_.get(k.did) &&
             stamp > self->pasid_times_.get(detail::did_pasid_key(k.did, k.pasid));
    }
  };
  // Second-level and nested-table entries share the domain-level scopes.
  struct SlValid {
    const PagingStructureCaches *self;
    template <class K, class V>
    bool operator()(uint64_t stamp, const K &k, const V &) const {
      return stamp > self->global_time_.load(std::memory_order_acquire) &&
             stamp > self->did_times_.get(k.did) && stamp > self->sl_did_times_.get(k.did);
    }
  };
  FlValid fl_valid() const { return FlValid{this}; }
  SlValid sl_valid() const { return SlValid{this}; }

  static bool refuse(Stats &s) {
    s.add(Counter::kRefusedFills);
    return false;
  }

  static bool count_fill(Stats &s, FillResult r) {
    if (r == FillResult::kRefused) return refuse(s);
    s.add(Counter::kFills);
    if (r == FillResult::kEvicted) s.add(Counter::kEvictions);
    return true;
  }

  InvalidationClock &clock_;
  PscConfig cfg_;
  FlCache fl_;
  SlCache sl_;
  NtCache nt_;
  alignas(64) std::atomic<uint64_t> global_time_{0};
  detail::ScopeTable did_times_;
  detail::ScopeTable sl_did_times_;
  detail::ScopeTable fl_did_times_;  // second-level changes reaching first-level entries
  detail::ScopeTable pasid_times_;
  mutable Stats fl_stats_;
  mutable Stats sl_stats_;
  mutable Stats nt_stats_;
};

}  // namespace nestor::caches
