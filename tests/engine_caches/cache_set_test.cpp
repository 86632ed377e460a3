// CacheSet::apply against invq::covers, the queue's statement of which cached entries an
// operation must remove (written from the VT-d invalidation descriptors, 6.5.2: e.g. "IOTLB
// entries and paging-structure-cache entries ... for the specified domain-id"; type 0x2
// page-selective-within-domain removes every first-stage and nested entry of the domain,
// docs/CACHES.md).
//
// Entries of every kind the engine caches are filled, one operation is applied, and each entry
// is looked up again. An entry covers() selects must be gone (DESIGN.md invariant 5: never
// under-invalidate). An entry it does not select must still be there unless one of the
// widenings docs/CACHES.md documents reaches it, so a CacheSet that flushed everything fails
// as surely as one that forgot a cache. invq's own tests check covers() and coalescing; the
// engine tests check translations end to end; this is the link between the two.
#include "nestor/cache_set.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "nestor/invq/op.h"

namespace nestor {
namespace {

using invq::CacheEntryKey;
using invq::InvalidationOp;
using invq::Scope;

// Plain payloads: the set needs nothing of VT-d's decoded formats.
struct ContextValue {
  uint64_t word;
};
struct PasidValue {
  uint64_t word;
};
using Set = CacheSet<ContextValue, PasidValue>;

constexpr uint32_t kSl = caches::Iotlb::kSecondLevelPasid;
constexpr unsigned kPscLevel = 2;  // a level-2 non-leaf entry maps 2 MiB
constexpr uint64_t kPscRegionPages = 512;
// Context entries in scalable mode carry no domain id; this tag matches no op's DID.
constexpr uint16_t kUntagged = 0xFFFF;

enum class Kind {
  kContext,
  kPasidEntry,
  kIotlbFirstLevel,
  kIotlbNested,
  kIotlbSecondLevel,
  kPscFirstLevel,
  kPscSecondLevel,
  kNestedTable,
};

struct Probe {
  Kind kind;
  CacheEntryKey key;
  uint64_t addr = 0;  // IOVA (first-level kinds) or GPA (second-level kinds)
  uint64_t gpa = 0;   // nested IOTLB entries: the final GPA
};

std::string describe(const Probe &p) {
  static const char *const kNames[] = {"context",  "pasid-entry", "iotlb-fl", "iotlb-nested",
                                       "iotlb-sl", "psc-fl",      "psc-sl",   "nested-table"};
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s did %u sid %#x pasid %#x page %#llx gpa_page %#llx",
                kNames[int(p.kind)], unsigned(p.key.did), unsigned(p.key.source_id),
                unsigned(p.key.pasid), (unsigned long long)p.key.page,
                (unsigned long long)p.key.gpa_page);
  return buf;
}

std::string describe(const InvalidationOp &op) {
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "op caches %#x scope %d did %u sid %#x fm %u pasid %#x addr %#llx npages %llu "
                "leaf %d gpa %d",
                unsigned(op.caches), int(op.scope), unsigned(op.did), unsigned(op.source_id),
                unsigned(op.function_mask), unsigned(op.pasid), (unsigned long long)op.addr,
                (unsigned long long)op.npages, int(op.leaf), int(op.addr_is_gpa));
  return buf;
}

constexpr uint16_t kDids[] = {1, 2};
constexpr uint32_t kPasids[] = {1, 2};
// 0x08 and 0x0C are functions 0 and 4 of one device (FM 3 selects both); 0x10 another device.
constexpr uint16_t kSids[] = {0x08, 0x0C, 0x10};
constexpr uint64_t kPages[] = {0x100, 0x101, 0x180, 0x300};  // 0x100..0x180 share a 2M region

std::vector<Probe> population() {
  std::vector<Probe> out;
  for (uint16_t sid : kSids) {
    out.push_back({Kind::kContext,
                   {.cache = invq::kCacheContext,
                    .did = kUntagged,
                    .source_id = sid,
                    .pasid = invq::kNoPasid}});
    for (uint32_t pasid : kPasids)
      out.push_back(
          {Kind::kPasidEntry,
           {.cache = invq::kCachePasid, .did = kDids[sid & 1], .source_id = sid, .pasid = pasid}});
  }
  // Translations and paging-structure entries, all filled by a walk of device 0x08.
  auto add = [&out](Kind kind, uint8_t cache, uint16_t did, uint32_t pasid, uint64_t page) {
    out.push_back({kind,
                   {.cache = cache,
                    .did = did,
                    .source_id = 0x08,
                    .pasid = pasid,
                    .page = page,
                    .second_level = pasid == kSl},
                   page << 12});
  };
  for (uint16_t did : kDids) {
    for (uint64_t page : kPages) {
      for (uint32_t pasid : kPasids) {
        add(Kind::kIotlbFirstLevel, invq::kCacheIotlb, did, pasid, page);
        add(Kind::kPscFirstLevel, invq::kCachePaging, did, pasid, page);
        // A nested entry at a far IOVA whose final GPA is `page`.
        add(Kind::kIotlbNested, invq::kCacheIotlb, did, pasid, page + 0x10000);
        out.back().key.nested = true;
        out.back().key.gpa_page = page;
        out.back().gpa = page << 12;
      }
      add(Kind::kIotlbSecondLevel, invq::kCacheIotlb, did, kSl, page);
      add(Kind::kPscSecondLevel, invq::kCachePaging, did, kSl, page);
      // A nested-table entry is the second-level *leaf* translation of a first-level table
      // page: removed like an IOTLB entry, which the leaf hint does not protect.
      add(Kind::kNestedTable, invq::kCacheIotlb, did, kSl, page);
    }
  }
  return out;
}

// The caches' default sizes, far more than the population: nothing is evicted.
CacheSetConfig config(bool track_table_pages) {
  CacheSetConfig c;
  c.track_table_pages = track_table_pages;
  return c;
}

void fill(Set &set, const Probe &p) {
  const uint64_t stamp = set.clock().now();
  const CacheEntryKey &k = p.key;
  bool ok = false;
  switch (p.kind) {
    case Kind::kContext:
      ok = set.context().fill(stamp, k.source_id, ContextValue{k.source_id});
      break;
    case Kind::kPasidEntry:
      ok = set.pasid().fill(stamp, k.source_id, k.pasid, k.did, PasidValue{k.pasid});
      break;
    case Kind::kIotlbFirstLevel:
    case Kind::kIotlbNested:
    case Kind::kIotlbSecondLevel: {
      caches::IotlbEntry e;
      e.hpa_base = 0x40000000 + (k.page << 12);
      if (p.kind == Kind::kIotlbNested) {
        e.flags = caches::kIotlbNested;
        e.gpa_base = p.gpa;
      } else if (p.kind == Kind::kIotlbSecondLevel) {
        e.flags = caches::kIotlbSecondLevelOnly;
      }
      ok = set.iotlb().fill(stamp, k.did, k.pasid, p.addr, e);
      break;
    }
    case Kind::kPscFirstLevel:
      ok = set.psc().fill_fl(stamp, k.did, k.pasid, kPscLevel, p.addr, {0x7000, 1});
      break;
    case Kind::kPscSecondLevel:
      ok = set.psc().fill_sl(stamp, k.did, kPscLevel, p.addr, {0x8000, 7});
      break;
    case Kind::kNestedTable:
      ok = set.psc().fill_nested_table(stamp, k.did, p.addr, {0x9000, 7});
      break;
  }
  ASSERT_TRUE(ok) << "fill refused: " << describe(p);
}

bool present(const Set &set, const Probe &p) {
  const CacheEntryKey &k = p.key;
  switch (p.kind) {
    case Kind::kContext: {
      ContextValue v;
      return set.context().lookup(k.source_id, &v);
    }
    case Kind::kPasidEntry: {
      PasidValue v;
      return set.pasid().lookup(k.source_id, k.pasid, &v);
    }
    case Kind::kIotlbFirstLevel:
    case Kind::kIotlbNested:
    case Kind::kIotlbSecondLevel: {
      caches::IotlbEntry e;
      return set.iotlb().lookup(k.did, k.pasid, p.addr, &e);
    }
    case Kind::kPscFirstLevel: {
      caches::PscEntry e;
      return set.psc().lookup_fl(k.did, k.pasid, kPscLevel, p.addr, &e);
    }
    case Kind::kPscSecondLevel: {
      caches::PscEntry e;
      return set.psc().lookup_sl(k.did, kPscLevel, p.addr, &e);
    }
    case Kind::kNestedTable: {
      caches::NestedTableEntry e;
      return set.psc().lookup_nested_table(k.did, p.addr, &e);
    }
  }
  return false;
}

bool is_paging_structure(Kind k) {
  return k == Kind::kPscFirstLevel || k == Kind::kPscSecondLevel || k == Kind::kNestedTable;
}

// What docs/CACHES.md allows apply() to remove beyond covers(): each clause is a documented
// over-invalidation, never a reading of the code under test.
bool widening_reaches(const InvalidationOp &op, const Probe &p, uint64_t promote_pages) {
  InvalidationOp wide = op;
  // "Paging-structure caches go with IOTLB invalidations" (VT-d: IOTLB invalidation also
  // invalidates the paging-structure caches), and nested-table entries live in them.
  if (is_paging_structure(p.kind) && (op.caches & (invq::kCacheIotlb | invq::kCachePaging)))
    wide.caches |= invq::kCacheIotlb | invq::kCachePaging;
  if (covers(wide, p.key)) return true;
  if ((wide.caches & p.key.cache) == 0) return false;
  switch (p.kind) {
    case Kind::kContext:
      // Untagged context entries go with every domain op; context entries have no PASID or
      // address, so PASID and range scopes widen to global.
      return op.scope != Scope::kDevice;
    case Kind::kPasidEntry:
      // A PASID entry has no address: a range takes its whole (DID, PASID).
      return op.scope == Scope::kRange && !op.addr_is_gpa && p.key.did == op.did &&
             p.key.pasid == op.pasid;
    default:
      break;
  }
  // IOTLB and paging-structure entries carry no source-id: device scope widens to global.
  if (op.scope == Scope::kDevice) return true;
  if (op.scope != Scope::kRange) return false;
  // Ranges above the promotion threshold become PASID scope (GPA ranges: domain scope).
  if (op.npages > promote_pages) {
    if (p.key.did != op.did) return false;
    return op.addr_is_gpa || p.key.pasid == op.pasid;
  }
  // A level-2 paging-structure entry maps 2 MiB: a range overlapping that region takes it.
  if (p.kind == Kind::kPscFirstLevel || p.kind == Kind::kPscSecondLevel) {
    const uint64_t first = op.addr >> 12, region = p.key.page & ~(kPscRegionPages - 1);
    const bool overlaps = first < region + kPscRegionPages && region < first + op.npages;
    const bool same_tag = p.key.did == op.did && (op.addr_is_gpa ? p.kind == Kind::kPscSecondLevel
                                                                 : p.key.pasid == op.pasid);
    return overlaps && same_tag && !op.leaf;
  }
  return false;
}

std::vector<InvalidationOp> every_op() {
  const uint8_t masks[] = {invq::kCacheContext, invq::kCachePasid,
                           invq::kCacheIotlb,   invq::kCachePaging,
                           invq::kCacheDevTlb,  invq::kCacheIotlb | invq::kCachePaging,
                           invq::kAllCaches};
  std::vector<InvalidationOp> scopes;
  scopes.push_back({.scope = Scope::kGlobal});
  scopes.push_back({.scope = Scope::kDomain, .did = 1});
  for (uint8_t fm : {0, 3})
    scopes.push_back({.scope = Scope::kDevice, .source_id = 0x08, .function_mask = fm});
  scopes.push_back({.scope = Scope::kPasid, .did = 1, .source_id = 0x08, .pasid = 1});
  auto range = [&scopes](uint64_t page, uint64_t npages, bool leaf, bool gpa) {
    scopes.push_back({.scope = Scope::kRange,
                      .did = 1,
                      .source_id = 0x08,
                      .pasid = 1,
                      .addr = page << 12,
                      .npages = npages,
                      .leaf = leaf,
                      .addr_is_gpa = gpa});
  };
  for (bool gpa : {false, true}) {
    // Pages 0x100 and 0x101, then 0x180 alone (in their 2M region but neither page), then a
    // range above the promotion threshold.
    for (bool leaf : {false, true}) {
      range(0x100, 2, leaf, gpa);
      range(0x180, 1, leaf, gpa);
    }
    range(0, 4096, false, gpa);
  }
  std::vector<InvalidationOp> ops;
  for (uint8_t m : masks)
    for (InvalidationOp op : scopes) {
      op.caches = m;
      ops.push_back(op);
    }
  return ops;
}

// After `ops` were applied to a set holding every probe: whatever some op covers is gone, and
// whatever no op's documented widening reaches is still there. Counts both kinds of probe.
void expect_applied(Set &set, const std::vector<Probe> &probes, std::span<const InvalidationOp> ops,
                    uint64_t promote_threshold_pages, size_t *required, size_t *kept) {
  for (const Probe &p : probes) {
    const bool covered =
        std::any_of(ops.begin(), ops.end(), [&](const auto &op) { return covers(op, p.key); });
    const bool widened = std::any_of(ops.begin(), ops.end(), [&](const auto &op) {
      return widening_reaches(op, p, promote_threshold_pages);
    });
    if (covered) {
      ++*required;
      EXPECT_FALSE(present(set, p)) << "under-invalidation: " << describe(p);
    } else if (!widened) {
      ++*kept;
      EXPECT_TRUE(present(set, p)) << "undocumented over-invalidation: " << describe(p);
    }
  }
}

// The generations handles and memos check (CacheSet::generation, domain_generation), read
// before `ops` were applied. A resolution depends on context and PASID entries, and a memoised
// translation of domain D on D's IOTLB and paging-structure entries; so whatever an op covers
// (invq::covers, the queue's contract with the caches) must move the value its dependents
// compare. And an op on IOTLB and paging-structure entries of one DID, which no resolution
// depends on, leaves the resolution generation and the other domains' values alone.
struct Generations {
  uint64_t resolution = 0;
  std::map<uint16_t, uint64_t> domain;  // generation + domain_generation(did)
};

Generations generations(const Set &set, const std::vector<Probe> &probes) {
  Generations g{set.generation(), {}};
  for (const Probe &p : probes)
    g.domain[p.key.did] = set.generation() + set.domain_generation(p.key.did);
  return g;
}

void expect_generations_moved(const Set &set, const std::vector<Probe> &probes,
                              std::span<const InvalidationOp> ops, const Generations &before) {
  const Generations after = generations(set, probes);
  for (const Probe &p : probes) {
    if (!std::any_of(ops.begin(), ops.end(), [&](const auto &op) { return covers(op, p.key); }))
      continue;
    if (p.key.cache == invq::kCacheContext || p.key.cache == invq::kCachePasid) {
      EXPECT_GT(after.resolution, before.resolution) << "resolutions kept: " << describe(p);
    } else {
      EXPECT_GT(after.domain.at(p.key.did), before.domain.at(p.key.did))
          << "memoised translations kept: " << describe(p);
    }
  }
  const bool one_domain_only = std::all_of(ops.begin(), ops.end(), [](const auto &op) {
    return (op.caches & ~(invq::kCacheIotlb | invq::kCachePaging)) == 0 &&
           op.scope != invq::Scope::kGlobal && op.scope != invq::Scope::kDevice;
  });
  if (!one_domain_only) return;
  EXPECT_EQ(after.resolution, before.resolution);
  for (const auto &[did, value] : before.domain) {
    const bool named = std::any_of(ops.begin(), ops.end(), [&](const auto &op) {
      return op.did % Set::kDomainBuckets == did % Set::kDomainBuckets;
    });
    if (!named) {
      EXPECT_EQ(after.domain.at(did), value) << "domain " << did << " lost its memos";
    }
  }
}

TEST(CacheSet, ApplyRemovesWhatCoversSelectsAndKeepsWhatNoWideningReaches) {
  const std::vector<Probe> probes = population();
  const CacheSetConfig cfg = config(false);
  size_t required = 0, kept = 0;
  for (const InvalidationOp &op : every_op()) {
    SCOPED_TRACE(describe(op));
    Set set(cfg);
    for (const Probe &p : probes) ASSERT_NO_FATAL_FAILURE(fill(set, p));
    for (const Probe &p : probes) ASSERT_TRUE(present(set, p)) << describe(p);
    const Generations before = generations(set, probes);
    set.apply(op);
    expect_generations_moved(set, probes, {&op, 1}, before);
    expect_applied(set, probes, {&op, 1}, cfg.iotlb.promote_threshold_pages, &required, &kept);
  }
  // Both directions were exercised at scale, not vacuously.
  EXPECT_GT(required, 1000u);
  EXPECT_GT(kept, 1000u);
}

// A batch is applied as one operation (the queue processor hands over the ops between two
// waits): every entry some op of the batch covers goes, nothing that no op's documented
// widening reaches goes, and handles and memos see the generations move as for the ops one by
// one, with at most one resolution step for the whole batch.
TEST(CacheSet, ApplyBatchRemovesWhatEachOpCoversAndStepsTheGenerationOnce) {
  const std::vector<Probe> probes = population();
  const CacheSetConfig cfg = config(false);
  const std::vector<InvalidationOp> ops = every_op();
  size_t required = 0, kept = 0;
  for (size_t i = 0; i < ops.size(); i += 3) {
    const InvalidationOp batch[2] = {ops[i], ops[(i * 7 + 5) % ops.size()]};
    SCOPED_TRACE(describe(batch[0]) + " then " + describe(batch[1]));
    Set set(cfg);
    for (const Probe &p : probes) ASSERT_NO_FATAL_FAILURE(fill(set, p));
    const Generations before = generations(set, probes);
    set.apply_batch(batch);
    EXPECT_LE(set.generation(), before.resolution + 1);
    expect_generations_moved(set, probes, batch, before);
    expect_applied(set, probes, batch, cfg.iotlb.promote_threshold_pages, &required, &kept);
  }
  EXPECT_GT(required, 100u);
  EXPECT_GT(kept, 100u);
}

// kDependencies (docs/CACHES.md, opt-in): a type 0x2 op whose range holds no first-level table
// page the domain's nested walks read removes, besides the second-level entries in range, only
// the nested entries whose final GPA is in range; once a walk has marked a table page in the
// range, the op has the architecture's full reach again.
TEST(CacheSet, DependencyModeNarrowsTypeTwoOnlyWhileNoTablePageIsInRange) {
  const std::vector<Probe> probes = population();
  const CacheSetConfig cfg = config(true);
  for (bool leaf : {false, true}) {
    for (bool marked : {false, true}) {
      const InvalidationOp op{.caches = invq::kCacheIotlb | invq::kCachePaging,
                              .scope = Scope::kRange,
                              .did = 1,
                              .addr = 0x100 << 12,
                              .npages = 2,
                              .leaf = leaf,
                              .addr_is_gpa = true};
      SCOPED_TRACE(describe(op) + (marked ? " table page marked" : " nothing marked"));
      Set set(cfg);
      for (const Probe &p : probes) ASSERT_NO_FATAL_FAILURE(fill(set, p));
      if (marked) set.table_pages()->add(1, 0x101 << 12);
      set.apply(op);
      for (const Probe &p : probes) {
        const bool first_level_of_did = p.key.did == 1 && !p.key.second_level;
        bool required = covers(op, p.key);
        if (!marked && first_level_of_did)
          required =
              p.kind == Kind::kIotlbNested && p.key.gpa_page >= 0x100 && p.key.gpa_page < 0x102;
        // Without a mark, keeping the domain's other first-level entries is the mode's point.
        const bool must_keep =
            !required && ((!marked && first_level_of_did) ||
                          !widening_reaches(op, p, cfg.iotlb.promote_threshold_pages));
        if (required) {
          EXPECT_FALSE(present(set, p)) << "under-invalidation: " << describe(p);
        } else if (must_keep) {
          EXPECT_TRUE(present(set, p)) << "over-invalidation: " << describe(p);
        }
      }
    }
  }
}

}  // namespace
}  // namespace nestor
