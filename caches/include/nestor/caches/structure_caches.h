// Context cache (source-id -> decoded context entry) and PASID cache ((source-id, PASID) ->
// decoded PASID entry). The decoded formats belong to the engine; these caches only need them
// trivially copyable.
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "nestor/caches/invalidation_clock.h"
#include "nestor/caches/set_assoc_cache.h"
#include "nestor/caches/stats.h"

namespace nestor::caches {

struct StructureCacheConfig {
  SetAssocConfig cache{.capacity = 1024, .shards = 8, .ways = 0};
  size_t pasid_scope_slots = 4096;  // hashed (DID, PASID) scope table (PASID cache)
};

namespace detail {

// VT-d device-selective invalidation's function mask: FM=1 ignores SID bit 2, FM=2 bits 2:1,
// FM=3 bits 2:0 (the function number of a bus/device/function).
inline uint16_t function_mask_bits(unsigned fm) {
  static constexpr uint16_t kBits[4] = {0, 0x4, 0x6, 0x7};
  return kBits[fm & 3];
}

// Every source-id the (sid, fm) pair selects gets time t; at most 8 slots.
inline void raise_device(ScopeTable &table, uint16_t sid, unsigned fm, uint64_t t) {
  const uint16_t bits = function_mask_bits(fm);
  const uint16_t base = static_cast<uint16_t>(sid & ~bits);
  for (uint16_t v = 0;; v = static_cast<uint16_t>((v - bits) & bits)) {
    table.raise(static_cast<uint16_t>(base | v), t);
    if (((v - bits) & bits) == 0) break;
  }
}

}  // namespace detail

// Context cache. Scalable-mode context entries carry no DID, so fills may be untagged
// (kNoDid); an untagged entry is dropped by every domain-scope invalidation, which is the
// over-invalidation VT-d itself permits for domain-selective context-cache invalidation.
// Context entries do not depend on a PASID, so there is no PASID scope here.
template <class Value, unsigned kWays = 4>
class ContextCache {
  static_assert(std::is_trivially_copyable_v<Value>);

 public:
  static constexpr uint32_t kNoDid = 0x10000;

  explicit ContextCache(InvalidationClock &clock, const StructureCacheConfig &cfg = {})
      : clock_(clock),
        cache_(cfg.cache),
        device_times_(1u << 16, detail::ScopeTable::Indexing::kDirect),
        did_times_(1u << 16, detail::ScopeTable::Indexing::kDirect) {}

  InvalidationClock &clock() const { return clock_; }
  size_t capacity() const { return cache_.capacity(); }

  bool lookup(uint16_t sid, Value *out) const {
    Stored s;
    if (cache_.lookup(Key{sid}, &s, valid_fn())) {
      *out = s.value;
      stats_.add(Counter::kHits);
      return true;
    }
    stats_.add(Counter::kMisses);
    return false;
  }

  // did: the domain the entry belongs to, or kNoDid when the format has none.
  bool fill(uint64_t stamp, uint16_t sid, const Value &v, uint32_t did = kNoDid) {
    Stored s{};
    s.value = v;
    s.did = did;
    const FillResult r = cache_.fill(stamp, Key{sid}, s, valid_fn());
    count_fill(stats_, r);
    return accepted(r);
  }

  void invalidate_global() {
    detail::raise_to(global_time_, clock_.advance());
    stats_.add(Counter::kInvGlobal);
  }

  // fm: VT-d function mask (0..3).
  void invalidate_device(uint16_t sid, unsigned fm = 0) {
    detail::raise_device(device_times_, sid, fm, clock_.advance());
    stats_.add(Counter::kInvDevice);
  }

  void invalidate_domain(uint16_t did) {
    const uint64_t t = clock_.advance();
    did_times_.raise(did, t);
    detail::raise_to(any_domain_time_, t);
    stats_.add(Counter::kInvDomain);
  }

  CacheStats stats() const { return stats_.snapshot(); }

  // Diagnostics only (locks every set): f(sid, did or kNoDid) for every live entry.
  template <class F>
  void for_each_live(F &&f) {
    auto valid = valid_fn();
    cache_.count_if([&](uint64_t st, const Key &k, const Stored &v) {
      if (valid(st, k, v)) f(k.sid, v.did);
      return false;
    });
  }

 private:
  struct Key {
    uint16_t sid;
  };
  struct Stored {
    Value value;
    uint32_t did;
  };

  // Named functor, not a lambda: member functions defined above use it.
  struct Valid {
    const ContextCache *self;
    bool operator()(uint64_t stamp, const Key &k, const Stored &s) const {
      if (stamp <= self->global_time_.load(std::memory_order_acquire)) return false;
      if (stamp <= self->device_times_.get(k.sid)) return false;
      const uint64_t dt = s.did == kNoDid ? self->any_domain_time_.load(std::memory_order_acquire)
                                          : self->did_times_.get(s.did);
      return stamp > dt;
    }
  };
  Valid valid_fn() const { return Valid{this}; }

  static void count_fill(Stats &stats, FillResult r) {
    if (r == FillResult::kRefused) {
      stats.add(Counter::kRefusedFills);
      return;
    }
    stats.add(Counter::kFills);
    if (r == FillResult::kEvicted) stats.add(Counter::kEvictions);
  }

  InvalidationClock &clock_;
  SetAssocCache<Key, Stored, kWays> cache_;
  alignas(64) std::atomic<uint64_t> global_time_{0};
  std::atomic<uint64_t> any_domain_time_{0};
  detail::ScopeTable device_times_;
  detail::ScopeTable did_times_;
  mutable Stats stats_;
};

// PASID cache. Every PASID entry names its DID, so fills are tagged and domain / (DID, PASID)
// invalidations are exact up to hash collisions in the (DID, PASID) table.
template <class Value, unsigned kWays = 4>
class PasidCache {
  static_assert(std::is_trivially_copyable_v<Value>);

 public:
  explicit PasidCache(InvalidationClock &clock, const StructureCacheConfig &cfg = {})
      : clock_(clock),
        cache_(cfg.cache),
        device_times_(1u << 16, detail::ScopeTable::Indexing::kDirect),
        did_times_(1u << 16, detail::ScopeTable::Indexing::kDirect),
        pasid_times_(cfg.pasid_scope_slots, detail::ScopeTable::Indexing::kHashed) {}

  InvalidationClock &clock() const { return clock_; }
  size_t capacity() const { return cache_.capacity(); }

  // did_out (optional) receives the DID the entry was tagged with.
  bool lookup(uint16_t sid, uint32_t pasid, Value *out, uint16_t *did_out = nullptr) const {
    Stored s;
    if (cache_.lookup(key(sid, pasid), &s, valid_fn())) {
      *out = s.value;
      if (did_out) *did_out = s.did;
      stats_.add(Counter::kHits);
      return true;
    }
    stats_.add(Counter::kMisses);
    return false;
  }

  bool fill(uint64_t stamp, uint16_t sid, uint32_t pasid, uint16_t did, const Value &v) {
    Stored s{};
    s.value = v;
    s.did = did;
    const FillResult r = cache_.fill(stamp, key(sid, pasid), s, valid_fn());
    if (r == FillResult::kRefused) {
      stats_.add(Counter::kRefusedFills);
    } else {
      stats_.add(Counter::kFills);
      if (r == FillResult::kEvicted) stats_.add(Counter::kEvictions);
    }
    return accepted(r);
  }

  void invalidate_global() {
    detail::raise_to(global_time_, clock_.advance());
    stats_.add(Counter::kInvGlobal);
  }

  void invalidate_device(uint16_t sid, unsigned fm = 0) {
    detail::raise_device(device_times_, sid, fm, clock_.advance());
    stats_.add(Counter::kInvDevice);
  }

  void invalidate_domain(uint16_t did) {
    did_times_.raise(did, clock_.advance());
    stats_.add(Counter::kInvDomain);
  }

  void invalidate_pasid(uint16_t did, uint32_t pasid) {
    pasid_times_.raise(detail::did_pasid_key(did, pasid), clock_.advance());
    stats_.add(Counter::kInvPasid);
  }

  CacheStats stats() const { return stats_.snapshot(); }

  // Diagnostics only (locks every set): f(sid, pasid, did) for every live entry.
  template <class F>
  void for_each_live(F &&f) {
    auto valid = valid_fn();
    cache_.count_if([&](uint64_t st, const Key &k, const Stored &v) {
      if (valid(st, k, v)) f(k.sid, k.pasid, v.did);
      return false;
    });
  }

 private:
  struct Key {
    uint32_t pasid;
    uint16_t sid;
    uint16_t zero;  // no padding: keys are compared word-wise
  };
  static Key key(uint16_t sid, uint32_t pasid) {
    static_assert(offsetof(Key, sid) == 4 && sizeof(Key) == 8);
    return key_from_words<Key>(uint64_t(pasid) | (uint64_t(sid) << 32));
  }
  struct Stored {
    Value value;
    uint16_t did;
  };

  struct Valid {
    const PasidCache *self;
    bool operator()(uint64_t stamp, const Key &k, const Stored &s) const {
      return stamp > self->global_time_.load(std::memory_order_acquire) &&
             stamp > self->device_times_.get(k.sid) && stamp > self->did_times_.get(s.did) &&
             stamp > self->pasid_times_.get(detail::did_pasid_key(s.did, k.pasid));
    }
  };
  Valid valid_fn() const { return Valid{this}; }

  InvalidationClock &clock_;
  SetAssocCache<Key, Stored, kWays> cache_;
  alignas(64) std::atomic<uint64_t> global_time_{0};
  detail::ScopeTable device_times_;
  detail::ScopeTable did_times_;
  detail::ScopeTable pasid_times_;
  mutable Stats stats_;
};

}  // namespace nestor::caches
