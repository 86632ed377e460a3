// The caches one engine fills (context, PASID, IOTLB, paging-structure caches, the table-page
// filter) and the one place that says which of their entries an invalidation operation removes.
//
// It lives in engine/, not caches/, because it reads invq's InvalidationOp: caches/ includes
// nothing of the project and invq/ never includes caches/ (DESIGN.md), so the mapping between
// the two can only sit above both. It is templated on the decoded context and PASID entry types
// so that it carries nothing of a personality's formats.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <tuple>
#include <vector>

#include "nestor/caches/caches.h"
#include "nestor/caches/table_page_filter.h"
#include "nestor/events.h"
#include "nestor/invq/op.h"

namespace nestor {

// Each cache's own configuration; the range promotion threshold of `iotlb` also bounds the
// dependency-tracked reach of a type 0x2 op.
struct CacheSetConfig {
  caches::StructureCacheConfig context;
  caches::StructureCacheConfig pasid;
  caches::IotlbConfig iotlb;
  caches::PscConfig psc;
  // Dependency-tracked type 0x2 invalidation (docs/CACHES.md): nested walks mark the GPA pages
  // they read first-level tables from, and a GPA op that hits no mark keeps the domain's
  // first-level entries. Off: the architecture's domain-wide reach.
  bool track_table_pages = false;
};

template <class ContextValue, class PasidValue>
class CacheSet {
 public:
  explicit CacheSet(const CacheSetConfig &cfg)
      : promote_threshold_pages_(cfg.iotlb.promote_threshold_pages),
        clock_(std::make_unique<caches::InvalidationClock>()),
        context_(std::make_unique<caches::ContextCache<ContextValue>>(*clock_, cfg.context)),
        pasid_(std::make_unique<caches::PasidCache<PasidValue>>(*clock_, cfg.pasid)),
        iotlb_(std::make_unique<caches::Iotlb>(*clock_, cfg.iotlb)),
        psc_(std::make_unique<caches::PagingStructureCaches>(*clock_, cfg.psc)) {
    if (cfg.track_table_pages) table_pages_ = std::make_unique<caches::TablePageFilter>();
  }
  CacheSet(const CacheSet &) = delete;
  CacheSet &operator=(const CacheSet &) = delete;

  // Where invalidation events go (kEventInvalidation); null: nowhere. Set before use.
  void set_event_hooks(const EventHooks *hooks) { hooks_ = hooks; }

  // One clock for every cache a walk may fill (caches/README.md's usage contract).
  caches::InvalidationClock &clock() const { return *clock_; }
  caches::ContextCache<ContextValue> &context() const { return *context_; }
  caches::PasidCache<PasidValue> &pasid() const { return *pasid_; }
  caches::Iotlb &iotlb() const { return *iotlb_; }
  caches::PagingStructureCaches &psc() const { return *psc_; }
  // Null unless track_table_pages.
  caches::TablePageFilter *table_pages() const { return table_pages_.get(); }

  // Moves after every applied operation that may change a resolution (context or PASID cache,
  // global or device scope, device-TLB) once its removals are in place: whatever memoises a
  // resolution outside these caches (address-space handles, per-thread memos) re-resolves from
  // them when it sees a new value.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // Moves after every applied operation confined to one domain's translations (IOTLB and
  // paging-structure entries of a DID: domain, PASID and range scopes), in that domain's
  // bucket. A translation memoised outside the caches (a handle's micro-TLB) is valid while
  // generation() + domain_generation(its DID) is what it was filled under: both only grow, so
  // the sum moves whenever either does. Domains share buckets (DID mod kDomainBuckets); a
  // bucket's move only costs its other domains their memoised translations.
  static constexpr size_t kDomainBuckets = 64;
  uint64_t domain_generation(uint16_t did) const {
    return domain_generations_[did % kDomainBuckets].value.load(std::memory_order_acquire);
  }

  // Removes at least every entry invq::covers(op, entry) selects (docs/CACHES.md says where it
  // removes more); the kDependencies reach of a type 0x2 op is the one documented exception.
  // Safe to call from several threads at once and concurrently with lookups and fills.
  void apply(const invq::InvalidationOp &op) { apply_batch(std::span(&op, 1)); }

  // Several ops applied in order as one operation: a walk stamped while any of them is under
  // way is judged by all of their removals, and the generations move once, after the last. Same
  // result as apply() on each, one interval claim and one generation step instead of one each.
  void apply_batch(std::span<const invq::InvalidationOp> ops) {
    if (ops.empty()) return;
    const bool observed = hooks_ && hooks_->wants(kEventInvalidation);
    caches::InvalidationClock::Interval interval(*clock_);
    Memo memo;  // valid while `interval` is open
    for (const invq::InvalidationOp &op : ops) {
      if (observed) [[unlikely]]
        apply_observed(op, memo);
      else
        apply_one(op, memo);
    }
    // Inside the interval, after the removals: a walk stamped after the interval closes (a
    // stamp newer than the operation) then sees the new generations, and a handle that still
    // sees its old one may stamp its walk freshly (EngineCore::walk_stamp) without missing
    // this operation. A reader that sees a new value while the interval is open re-resolves
    // with a stamp the operation refuses, which costs that walk its fills, not correctness.
    const bool confined = std::all_of(ops.begin(), ops.end(), confined_to_domain);
    if (!confined) {
      generation_.fetch_add(1, std::memory_order_acq_rel);
      return;
    }
    for (const invq::InvalidationOp &op : ops)
      domain_generations_[op.did % kDomainBuckets].value.fetch_add(1, std::memory_order_acq_rel);
  }

 private:
  // What one batch's removals already did (the caches' RemovalMemo), valid in its interval.
  struct Memo {
    caches::PagingStructureCaches::RemovalMemo psc;
    caches::Iotlb::RemovalMemo iotlb;
  };

  // An op that removes nothing but IOTLB and paging-structure entries of its DID: no
  // resolution depends on those, and only translations of that domain do.
  static bool confined_to_domain(const invq::InvalidationOp &op) {
    using invq::Scope;
    return (op.caches & ~(invq::kCacheIotlb | invq::kCachePaging)) == 0 &&
           (op.scope == Scope::kDomain || op.scope == Scope::kPasid || op.scope == Scope::kRange);
  }

  // Runs inside an open Interval (apply, apply_batch); `memo` belongs to that interval.
  void apply_one(const invq::InvalidationOp &op, Memo &memo) {
    using invq::Scope;
    // Second-level changes and global ops touch the table-page filter: its check and the
    // removals it decides must not interleave with a clear.
    std::unique_lock<std::mutex> gpa_lock;
    const bool gpa_op = op.scope == Scope::kRange && op.addr_is_gpa &&
                        (op.caches & (invq::kCacheIotlb | invq::kCachePaging));
    if (table_pages_ && (gpa_op || op.scope == Scope::kGlobal))
      gpa_lock = std::unique_lock<std::mutex>(gpa_mu_);
    // An IOTLB op also empties the paging-structure caches (below), so every entry that
    // depended on a marked page goes with it; the lock keeps GPA ops from consulting the
    // emptied filter before those removals are in place. A paging-only op leaves IOTLB
    // dependents.
    if (op.scope == Scope::kGlobal && table_pages_ && (op.caches & invq::kCacheIotlb) &&
        table_pages_->marked() != 0) {
      table_pages_->clear();
    }
    // Sources before dependents: structure caches, then second-level and nested-table
    // entries, then first level, then the IOTLB (docs/STRESS.md finding 7).
    if (op.caches & invq::kCacheContext) apply_context(op);
    if (op.caches & invq::kCachePasid) apply_pasid(op);
    // Paging-structure caches go with IOTLB invalidations (VT-d); within a range the leaf hint
    // lets them keep their entries, which the range calls decide from op.leaf.
    if (op.caches & (invq::kCachePaging | invq::kCacheIotlb)) apply_paging(op, memo);
    // Decided after the second-level and nested-table entries of the range are gone: a walk
    // marks a table page before it reads the page's translation, from memory or from the
    // nested-table cache, so either the walk misses the cached translation and sees the host's
    // change, or this check sees its mark (both sides fence; TablePageFilter).
    caches::GpaReach reach = caches::GpaReach::kFirstLevelOfDomain;
    if (gpa_op && table_pages_ && op.npages <= promote_threshold_pages_ &&
        !table_pages_->might_contain(op.did, op.addr, op.npages))
      reach = caches::GpaReach::kFinalGpaDependents;
    if (gpa_op && reach == caches::GpaReach::kFirstLevelOfDomain)
      psc_->invalidate_first_level_of_domain(op.did);
    if (op.caches & invq::kCacheIotlb) apply_iotlb(op, reach, memo);
  }

  // apply_one with an invalidation event: what it removed is told apart by listing every live
  // entry before and after (diagnostics cost: every set of every cache is read twice, which is
  // why it only happens while a hook asks for these events).
  void apply_observed(const invq::InvalidationOp &op, Memo &memo) {
    std::vector<RemovedEntry> before = live_entries();
    apply_one(op, memo);
    std::vector<RemovedEntry> after = live_entries();
    auto identity = [](const RemovedEntry &e) {
      const invq::CacheEntryKey &k = e.key;
      return std::tuple(e.cache, k.did, k.source_id, k.pasid, k.page, k.second_level, k.nested,
                        k.gpa_page, e.pages, e.level, e.has_domain);
    };
    auto less = [&](const RemovedEntry &a, const RemovedEntry &b) {
      return identity(a) < identity(b);
    };
    std::sort(before.begin(), before.end(), less);
    std::sort(after.begin(), after.end(), less);
    std::vector<RemovedEntry> removed;
    std::set_difference(before.begin(), before.end(), after.begin(), after.end(),
                        std::back_inserter(removed), less);
    InvalidationEvent ev;
    ev.op = op;
    for (RemovedEntry &e : removed) {
      e.required = required(op, e);
      ++ev.removed[size_t(e.cache)];
      if (!e.required) ++ev.over[size_t(e.cache)];
    }
    ev.entries = removed;
    Event event;
    event.kind = kEventInvalidation;
    event.invalidation = &ev;
    hooks_->emit(event);
  }

  // Whether invq::covers requires the entry's removal. An entry spanning several pages is
  // judged by its page nearest the operation's range (inside it whenever the two overlap).
  static bool required(const invq::InvalidationOp &op, const RemovedEntry &e) {
    // An untagged context entry is no domain's: a domain scope reaches it only by widening.
    if (!e.has_domain && op.scope == invq::Scope::kDomain) return false;
    invq::CacheEntryKey probe = e.key;
    if (op.scope == invq::Scope::kRange && e.pages > 1) {
      const uint64_t first = op.addr >> invq::kPageShift;
      probe.page = std::clamp(first, e.key.page, e.key.page + (e.pages - 1));
    }
    return invq::covers(op, probe);
  }

  std::vector<RemovedEntry> live_entries() const {
    std::vector<RemovedEntry> out;
    auto add = [&](EventCache cache, uint8_t bit, auto &&fill_key) {
      RemovedEntry e;
      e.cache = cache;
      e.key.cache = bit;
      fill_key(e);
      out.push_back(e);
    };
    context_->for_each_live([&](uint16_t sid, uint32_t did) {
      add(EventCache::kContext, invq::kCacheContext, [&](RemovedEntry &e) {
        e.key.source_id = sid;
        e.has_domain = did <= 0xFFFF;
        e.key.did = e.has_domain ? uint16_t(did) : 0;
        e.pages = 0;
      });
    });
    pasid_->for_each_live([&](uint16_t sid, uint32_t pasid, uint16_t did) {
      add(EventCache::kPasid, invq::kCachePasid, [&](RemovedEntry &e) {
        e.key.source_id = sid;
        e.key.pasid = pasid;
        e.key.did = did;
        e.pages = 0;
      });
    });
    iotlb_->for_each_live(
        [&](uint16_t did, uint32_t pasid, uint64_t base, const caches::IotlbEntry &v) {
          add(EventCache::kIotlb, invq::kCacheIotlb, [&](RemovedEntry &e) {
            e.key.did = did;
            e.key.second_level = pasid == caches::Iotlb::kSecondLevelPasid;
            e.key.pasid = e.key.second_level ? 0 : pasid;
            e.key.page = base >> invq::kPageShift;
            e.key.nested = (v.flags & caches::kIotlbNested) != 0;
            e.key.gpa_page = v.gpa_base >> invq::kPageShift;
            e.pages = uint64_t{1} << (v.page_shift - invq::kPageShift);
          });
        });
    psc_->for_each_live_fl([&](uint16_t did, uint32_t pasid, unsigned level, uint64_t base) {
      add(EventCache::kPscFirstLevel, invq::kCachePaging, [&](RemovedEntry &e) {
        e.key.did = did;
        e.key.pasid = pasid;
        e.key.page = base >> invq::kPageShift;
        e.level = uint8_t(level);
        e.pages = uint64_t{1} << (caches::psc_level_shift(level) - invq::kPageShift);
      });
    });
    psc_->for_each_live_sl([&](uint16_t did, unsigned level, uint64_t base) {
      add(EventCache::kPscSecondLevel, invq::kCachePaging, [&](RemovedEntry &e) {
        e.key.did = did;
        e.key.second_level = true;
        e.key.page = base >> invq::kPageShift;
        e.level = uint8_t(level);
        e.pages = uint64_t{1} << (caches::psc_level_shift(level) - invq::kPageShift);
      });
    });
    psc_->for_each_live_nested_table([&](uint16_t did, uint64_t gpa) {
      add(EventCache::kNestedTable, invq::kCachePaging, [&](RemovedEntry &e) {
        e.key.did = did;
        e.key.second_level = true;
        e.key.page = gpa >> invq::kPageShift;
      });
    });
    return out;
  }

  // The context and PASID caches share their scopes; a PASID or range scope is each one's own.
  template <class Cache, class PasidScope>
  static void structure_by_scope(Cache &cache, const invq::InvalidationOp &op,
                                 PasidScope &&pasid_scope) {
    switch (op.scope) {
      case invq::Scope::kDomain:
        cache.invalidate_domain(op.did);
        break;
      case invq::Scope::kDevice:
        cache.invalidate_device(op.source_id, op.function_mask);
        break;
      case invq::Scope::kPasid:
      case invq::Scope::kRange:
        pasid_scope();
        break;
      default:
        cache.invalidate_global();
        break;
    }
  }

  void apply_context(const invq::InvalidationOp &op) {
    // Context entries carry no PASID or address: widen.
    structure_by_scope(*context_, op, [&] { context_->invalidate_global(); });
  }

  void apply_pasid(const invq::InvalidationOp &op) {
    structure_by_scope(*pasid_, op, [&] {
      // A GPA range names no PASID, and covers() has it reach every entry of the domain that is
      // not a second-level translation, PASID entries included. Otherwise a PASID entry has no
      // address: a range takes its whole (DID, PASID).
      if (op.scope == invq::Scope::kRange && op.addr_is_gpa)
        pasid_->invalidate_domain(op.did);
      else
        pasid_->invalidate_pasid(op.did, op.pasid);
    });
  }

  // The IOTLB and the paging-structure caches share their scopes; a range is each one's own.
  // Device scope has no tag in either: it widens to global.
  template <class Cache, class Range>
  static void by_scope(Cache &cache, const invq::InvalidationOp &op, Range &&range) {
    switch (op.scope) {
      case invq::Scope::kDomain:
        cache.invalidate_domain(op.did);
        break;
      case invq::Scope::kPasid:
        cache.invalidate_pasid(op.did, op.pasid);
        break;
      case invq::Scope::kRange:
        range();
        break;
      default:
        cache.invalidate_global();
        break;
    }
  }

  void apply_paging(const invq::InvalidationOp &op, Memo &memo) {
    by_scope(*psc_, op, [&] {
      if (op.addr_is_gpa)
        psc_->invalidate_gpa_range(op.did, op.addr, op.npages, op.leaf,
                                   /*first_level_of_domain=*/false);
      else
        psc_->invalidate_range(op.did, op.pasid, op.addr, op.npages, op.leaf, &memo.psc);
    });
  }

  void apply_iotlb(const invq::InvalidationOp &op, caches::GpaReach reach, Memo &memo) {
    by_scope(*iotlb_, op, [&] {
      if (op.addr_is_gpa)
        iotlb_->invalidate_gpa_range(op.did, op.addr, op.npages, reach);
      else
        iotlb_->invalidate_range(op.did, op.pasid, op.addr, op.npages, &memo.iotlb);
    });
  }

  const uint64_t promote_threshold_pages_;
  const EventHooks *hooks_ = nullptr;
  std::unique_ptr<caches::InvalidationClock> clock_;
  std::unique_ptr<caches::ContextCache<ContextValue>> context_;
  std::unique_ptr<caches::PasidCache<PasidValue>> pasid_;
  std::unique_ptr<caches::Iotlb> iotlb_;
  std::unique_ptr<caches::PagingStructureCaches> psc_;
  std::unique_ptr<caches::TablePageFilter> table_pages_;
  // Keeps a GPA op's filter check and its removals atomic against a global op's clear.
  std::mutex gpa_mu_;
  alignas(64) std::atomic<uint64_t> generation_{0};
  struct alignas(64) DomainGeneration {
    std::atomic<uint64_t> value{0};
  };
  std::array<DomainGeneration, kDomainBuckets> domain_generations_{};
};

}  // namespace nestor
