// The cached engine against the uncached reference engine over the same memory: after every
// invalidation the two must agree, through the request path, handles and the batch API.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "machine.h"

namespace nestor::test {
namespace {

constexpr uint64_t kPages = 512;  // iova pages [0, 512) in play

using ModelParam = std::tuple<Mode, EngineConfig::GpaInvalidation>;
class CachedEngineModel : public ::testing::TestWithParam<ModelParam> {};

// Compares `n` random translations (plus the ones at `focus`) through every cached path.
void compare(Machine &m, AddressSpace &handle, std::mt19937_64 &rng, uint64_t focus, int n,
             const char *after) {
  std::vector<Request> reqs;
  for (int i = 0; i < n; ++i) {
    const uint64_t page = i == 0 ? focus : rng() % kPages;
    const uint8_t access = (rng() & 3) == 0 ? kAccessWrite : kAccessRead;
    reqs.push_back(Machine::request(page, access, (rng() % 512) * 8));
  }
  std::vector<Result> batch(reqs.size());
  m.cached->translate_batch(reqs.data(), batch.data(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    const Result ref = m.reference->translate(reqs[i]);
    ASSERT_TRUE(same(m.cached->translate(reqs[i]), ref))
        << "request path after " << after << ", iova 0x" << std::hex << reqs[i].iova;
    ASSERT_TRUE(same(handle.translate(reqs[i].iova, reqs[i].access), ref))
        << "handle after " << after << ", iova 0x" << std::hex << reqs[i].iova;
    ASSERT_TRUE(same(batch[i], ref))
        << "batch after " << after << ", iova 0x" << std::hex << reqs[i].iova;
  }
}

TEST_P(CachedEngineModel, AgreesWithUncachedWalkAfterEveryInvalidation) {
  const auto [mode, gpa_mode] = GetParam();
  EngineConfig cfg;
  cfg.iotlb_entries = 256;  // small: evictions and set conflicts happen too
  cfg.psc_entries = 64;
  cfg.gpa_invalidation = gpa_mode;
  Machine m(mode, cfg);
  const uint64_t seed = 0x5eed0000u + uint64_t(mode);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const uint64_t targets = mode == Mode::kNested ? (kGuestTables >> 12) : 4096;
  for (uint64_t p = 0; p < kPages; p += 2) ASSERT_EQ(m.map(p, p, 12, true), build::Status::kOk);
  AddressSpace handle = m.cached->open(kSid, true, kPasid);
  for (int step = 0; step < 3000; ++step) {
    const uint64_t page = rng() % kPages;
    const int what = int(rng() % 7);
    const char *after = "";
    if (what == 0) {
      (void)m.map(page, rng() % targets, 12, rng() & 1);  // remap or new mapping
      m.invalidate_pages(page, 1, true);
      after = "remap + page invalidation (leaf hint)";
    } else if (what == 1) {
      (void)m.unmap(page, 12);
      m.invalidate_pages(page, 1, false);
      after = "unmap + page invalidation";
    } else if (what == 2) {
      // A range that covers the page among others, unaligned start.
      const uint64_t first = page >= 3 ? page - 3 : 0;
      for (uint64_t p = first; p < first + 7 && p < kPages; ++p)
        (void)m.map(p, rng() % targets, 12, true);
      m.invalidate_pages(first, 7, false);
      after = "range remap + range invalidation";
    } else if (what == 3 && mode == Mode::kNested) {
      // The host moves a guest page: a GPA-addressed (type 0x2) invalidation must reach the
      // combined nested entries that depend on it.
      const uint64_t gpa_page = rng() % (kGuestTables >> 12);
      ASSERT_EQ(m.map(page, gpa_page, 12, true), build::Status::kOk);
      m.invalidate_pages(page, 1, true);
      ASSERT_TRUE(m.cached->translate(Machine::request(page, kAccessRead)).ok);  // cache it
      ASSERT_EQ(m.remap_guest_page(gpa_page, (kGuestRam >> 12) + rng() % 1024), build::Status::kOk);
      m.invalidate_gpa(gpa_page, 1);
      after = "second-level remap + GPA invalidation";
    } else if (what == 6 && mode == Mode::kNested) {
      // The host edits the second-level mapping of a page holding one of the guest's
      // first-level tables on this page's walk and announces it with a type 0x2 invalidation
      // of that GPA (as Linux flushes a nesting parent): unmap then restore, remap to a copy,
      // or move and scrub the old page. Between the steps the engines must agree.
      ASSERT_EQ(m.map(page, rng() % (kGuestTables >> 12), 12, true), build::Status::kOk);
      m.invalidate_pages(page, 1, true);
      (void)m.cached->translate(Machine::request(page, kAccessRead));  // cache the walk
      const int level = 1 + int(rng() % 4);
      const uint64_t iova = Machine::request(page, kAccessRead).iova;
      const uint64_t table =
          level == 4 ? m.pasid_entry.fl_root : m.fl_guest->entry_address(iova, level) & ~0xFFFull;
      const uint64_t hpa = m.host_page_of(table);
      ASSERT_NE(hpa, 0u);
      const int kind = int(rng() % 3);
      if (kind == 0) {
        ASSERT_EQ(m.unmap_guest_page(table), build::Status::kOk);
        m.invalidate_gpa(table >> 12, 1);
        compare(m, handle, rng, page, 8, "host unmap of a first-level table page + GPA inv");
        if (HasFatalFailure()) return;
        ASSERT_EQ(m.map_guest_page_to(table, hpa), build::Status::kOk);
        after = "host restore of a first-level table page + GPA invalidation";
      } else {
        const uint64_t copy = m.alloc_host_table();
        std::vector<uint8_t> bytes(4096);
        ASSERT_EQ(m.cached->memory().read(hpa, bytes.data(), bytes.size()), 0);
        ASSERT_EQ(m.cached->memory().write(copy, bytes.data(), bytes.size()), 0);
        ASSERT_EQ(m.map_guest_page_to(table, copy), build::Status::kOk);
        m.invalidate_gpa(table >> 12, 1);
        if (kind == 2) {  // the old host page is reused for something else
          std::fill(bytes.begin(), bytes.end(), 0);
          ASSERT_EQ(m.cached->memory().write(hpa, bytes.data(), bytes.size()), 0);
        }
        compare(m, handle, rng, page, 8, "host remap of a first-level table page + GPA inv");
        if (HasFatalFailure()) return;
        // A guest edit now lands in the new host page; announced as a first-level change.
        (void)m.map(page, rng() % (kGuestTables >> 12), 12, true);
        m.invalidate_pages(page, 1, true);
        after = kind == 1 ? "remap to a copy + guest edit" : "move+scrub + guest edit";
      }
      m.invalidate_gpa(table >> 12, 1);
    } else if (what == 4) {
      // PASID entry rewrite (flags change) + PASID-cache and PASID-scope IOTLB invalidation.
      vtd::PasidEntry pe = m.pasid_entry;
      pe.wpe = !pe.wpe;
      m.rewrite_pasid_entry(pe);
      m.invalidate_scope(invq::Scope::kPasid, invq::kCachePasid);
      m.invalidate_scope(invq::Scope::kDomain, invq::kCacheIotlb | invq::kCachePaging);
      after = "PASID entry rewrite + PASID-cache/domain invalidation";
    } else {
      (void)m.map(page, rng() % targets, 12, rng() & 1);
      m.invalidate_scope(invq::Scope::kGlobal, invq::kAllCaches);
      after = "remap + global invalidation";
    }
    compare(m, handle, rng, page, 8, after);
    if (HasFatalFailure()) return;
  }
  const EngineStats st = m.cached->stats();
  EXPECT_GT(st.iotlb.hits, 0u);
  EXPECT_GT(st.iotlb.fills, 0u);
  EXPECT_GT(st.iotlb.entries_removed + st.iotlb.inv_global, 0u);
}

std::string model_name(const ::testing::TestParamInfo<ModelParam> &info) {
  std::string name = mode_name(std::get<0>(info.param));
  if (std::get<1>(info.param) == EngineConfig::GpaInvalidation::kDependencies)
    name += "_GpaDependencies";
  return name;
}

INSTANTIATE_TEST_SUITE_P(
    Modes, CachedEngineModel,
    ::testing::Combine(::testing::Values(Mode::kFirstLevel, Mode::kSecondLevel, Mode::kNested),
                       ::testing::Values(EngineConfig::GpaInvalidation::kArchitectural,
                                         EngineConfig::GpaInvalidation::kDependencies)),
    model_name);

// Two PASIDs of one second-level domain that disagree on SLEE share second-level-only IOTLB
// entries (a PGTT=SL translation depends on (DID, GPA) only). VT-d: with SLEE=0 the X bit is
// ignored and an execute request needs read permission; with SLEE=1, X decides. Whichever
// PASID filled the entry, each must get its own rule, as the uncached walk gives it.
TEST(CachedEngine, SharedSecondLevelEntriesFollowEachPasidsSlee) {
  for (bool fill_with_slee : {false, true}) {
    Machine m(Mode::kSecondLevel);
    ASSERT_EQ(m.map(0, 0, 12, true), build::Status::kOk);  // R/W, X clear
    vtd::PasidEntry with = m.pasid_entry, without = m.pasid_entry;
    with.slee = true;
    without.slee = false;
    m.rewrite_pasid_entry(fill_with_slee ? with : without);
    m.set_other_pasid_entry(kPasid + 1, fill_with_slee ? without : with);
    Request first = Machine::request(0, kAccessExec);
    Request second = first;
    second.pasid = kPasid + 1;
    ASSERT_TRUE(same(m.cached->translate(first), m.reference->translate(first)));
    ASSERT_TRUE(same(m.cached->translate(first), m.reference->translate(first)));  // a hit
    const Result ref = m.reference->translate(second);
    EXPECT_EQ(ref.ok, fill_with_slee) << "the reference walk itself: SLEE=0 lets X follow R";
    EXPECT_TRUE(same(m.cached->translate(second), ref)) << "filled with SLEE=" << fill_with_slee;
  }
}

// CACHE_INVLD: the engine never snoops table writes. Without an invalidation the cached
// engine may keep serving the old mapping; after it, the new one must be served.
TEST(CachedEngine, TableChangeNeedsInvalidation) {
  Machine m(Mode::kFirstLevel);
  ASSERT_EQ(m.map(1, 10, 12, true), build::Status::kOk);
  const Result before = m.cached->translate(Machine::request(1, kAccessRead));
  ASSERT_TRUE(before.ok);
  ASSERT_EQ(m.map(1, 20, 12, true), build::Status::kOk);
  const Result stale = m.cached->translate(Machine::request(1, kAccessRead));
  EXPECT_EQ(stale.t.out, before.t.out) << "a hit is served from the IOTLB until invalidated";
  m.invalidate_pages(1, 1, true);
  const Result after = m.cached->translate(Machine::request(1, kAccessRead));
  ASSERT_TRUE(after.ok);
  EXPECT_EQ(after.t.out, kDataBase + 20 * 4096);
}

TEST(CachedEngine, HitsAreCountedAndWarmNestedMissesSkipUpperLevels) {
  Machine m(Mode::kNested);
  for (uint64_t p = 0; p < 64; ++p) ASSERT_EQ(m.map(p, p, 12, true), build::Status::kOk);
  for (uint64_t p = 0; p < 64; ++p) ASSERT_TRUE(m.cached->translate(Machine::request(p, 1)).ok);
  EngineStats s1 = m.cached->stats();
  for (uint64_t p = 0; p < 64; ++p) ASSERT_TRUE(m.cached->translate(Machine::request(p, 1)).ok);
  EngineStats s2 = m.cached->stats();
  EXPECT_EQ(s2.iotlb.hits - s1.iotlb.hits, 64u);
  EXPECT_EQ(s2.iotlb.misses, s1.iotlb.misses);
  // The first 64 misses share upper levels: the paging-structure caches served most of them.
  EXPECT_GE(s1.psc_first_level.hits, 60u);
  EXPECT_GE(s1.psc_nested_table.hits + s1.psc_second_level.hits, 1u);
}

// AddressSpace::stats(): the handle's IOTLB hits and misses are the ones EngineStats counts;
// what the handle's own cache answers, and what other paths look up, count in neither.
TEST(CachedEngine, HandleCountsItsIotlbLookups) {
  Machine m(Mode::kFirstLevel);
  ASSERT_EQ(m.map(3, 30, 12, true), build::Status::kOk);
  ASSERT_EQ(m.map(4, 40, 12, true), build::Status::kOk);
  AddressSpace h = m.cached->open(kSid, true, kPasid);
  const EngineStats before = m.cached->stats();
  auto translate = [](AddressSpace &as, uint64_t page, uint8_t access) {
    ASSERT_TRUE(as.translate(kIovaBase + page * 4096, access).ok) << page;
  };
  translate(h, 3, kAccessRead);    // IOTLB miss, walk
  translate(h, 3, kAccessRead);    // the handle's own cache: no lookup
  translate(h, 4, kAccessRead);    // IOTLB miss
  m.invalidate_pages(4, 1, true);  // moves the generation: the handle cache starts over
  translate(h, 3, kAccessRead);    // IOTLB hit
  translate(h, 4, kAccessRead);    // removed: IOTLB miss
  // A first write through an entry filled by a read hits the IOTLB, then walks to set D: a
  // hit all the same, as the IOTLB counts it.
  translate(h, 3, kAccessWrite);
  // The request path has no handle: it counts in the engine only.
  ASSERT_TRUE(m.cached->translate(Machine::request(3, kAccessRead)).ok);
  const AddressSpace::HandleStats s = h.stats();
  EXPECT_EQ(s.iotlb_hits, 2u);
  EXPECT_EQ(s.iotlb_misses, 3u);
  EXPECT_EQ(s.lookups(), 5u) << "six translations, one answered by the handle's cache";
  const EngineStats d = m.cached->stats() - before;
  EXPECT_EQ(d.iotlb.hits, s.iotlb_hits + 1) << "plus the request-path hit";
  EXPECT_EQ(d.iotlb.misses, s.iotlb_misses);
  AddressSpace copy = h;
  translate(copy, 4, kAccessWrite);  // filled by a read: past the handle cache to the IOTLB
  EXPECT_EQ(copy.stats().iotlb_hits, 3u) << "a copy continues from the original's counts";
  EXPECT_EQ(h.stats().iotlb_hits, 2u);
}

// A handle's own cache holds copies of its domain's IOTLB entries, so an invalidation of
// IOTLB and paging-structure entries of another domain (VT-d: DID-tagged, 6.5.1) cannot touch
// what it holds and must not empty it; one of its own domain must, or the next translation
// would return the old page.
TEST(CachedEngine, HandleCacheSurvivesInvalidationsOfOtherDomainsOnly) {
  Machine m(Mode::kFirstLevel);
  ASSERT_EQ(m.map(3, 30, 12, true), build::Status::kOk);
  AddressSpace h = m.cached->open(kSid, true, kPasid);
  ASSERT_EQ(h.translate(kIovaBase + 3 * 4096, kAccessRead).t.out, kDataBase + 30 * 4096);
  const uint64_t lookups = h.stats().lookups();
  for (invq::Scope scope : {invq::Scope::kRange, invq::Scope::kPasid, invq::Scope::kDomain}) {
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging;
    op.scope = scope;
    op.did = kDid + 1;
    op.pasid = kPasid;
    op.addr = kIovaBase + 3 * 4096;
    op.npages = 1;
    m.cached->invalidate(op);
    m.cached->invalidate_wait();
    ASSERT_TRUE(h.translate(kIovaBase + 3 * 4096, kAccessRead).ok);
    EXPECT_EQ(h.stats().lookups(), lookups) << "emptied by a scope " << int(scope) << " op";
  }
  ASSERT_EQ(m.map(3, 31, 12, true), build::Status::kOk);
  m.invalidate_pages(3, 1, true);
  EXPECT_EQ(h.translate(kIovaBase + 3 * 4096, kAccessRead).t.out, kDataBase + 31 * 4096);
  EXPECT_EQ(h.stats().lookups(), lookups + 1);
}

TEST(CachedEngine, HandleSeesPasidEntryChangeOnlyAfterInvalidation) {
  Machine m(Mode::kFirstLevel);
  ASSERT_EQ(m.map(3, 30, 12, true), build::Status::kOk);
  AddressSpace h = m.cached->open(kSid, true, kPasid);
  ASSERT_TRUE(h.translate(kIovaBase + 3 * 4096, kAccessRead).ok);
  vtd::PasidEntry pe = m.pasid_entry;
  pe.present = false;
  m.rewrite_pasid_entry(pe);
  m.invalidate_scope(invq::Scope::kPasid, invq::kCachePasid | invq::kCacheIotlb);
  const Result r = h.translate(kIovaBase + 3 * 4096, kAccessRead);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.fault.reason, FaultReason::kPasidEntryNotPresent);
}

TEST(CachedEngine, WriteThroughCleanEntrySetsDirty) {
  Machine m(Mode::kFirstLevel);
  ASSERT_EQ(m.map(4, 40, 12, true), build::Status::kOk);
  ASSERT_TRUE(m.cached->translate(Machine::request(4, kAccessRead)).ok);  // fills, D clear
  ASSERT_TRUE(m.cached->translate(Machine::request(4, kAccessWrite)).ok);
  uint64_t leaf_addr = m.fl_host->entry_address(kIovaBase + 4 * 4096, 1), leaf = 0;
  ASSERT_TRUE(m.cached->memory().read64(leaf_addr, &leaf));
  EXPECT_TRUE(leaf & fl::kDirty) << "a write hit on an entry filled by a read must set D";
}

TEST(CachedEngine, PermissionDowngradeVisibleAfterInvalidation) {
  Machine m(Mode::kSecondLevel);
  ASSERT_EQ(m.map(5, 50, 12, true), build::Status::kOk);
  ASSERT_TRUE(m.cached->translate(Machine::request(5, kAccessWrite)).ok);
  ASSERT_EQ(m.map(5, 50, 12, false), build::Status::kOk);
  m.invalidate_pages(5, 1, true);
  const Result r = m.cached->translate(Machine::request(5, kAccessWrite));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.fault.reason, FaultReason::kWriteDenied);
}

// Walk references: an uncached 4-level x 4-level nested walk reads 4 first-level entries,
// 4 x 4 second-level entries to find the first-level tables and 4 for the final GPA (24); the
// cached engine walks only on misses and reads fewer entries once the structure caches are warm.
TEST(CachedEngine, WalkReferencesAreCountedPerMiss) {
  Machine m(Mode::kNested);
  for (uint64_t p = 0; p < 32; ++p) ASSERT_EQ(m.map(p, p, 12, true), build::Status::kOk);
  for (uint64_t p = 0; p < 32; ++p) {
    ASSERT_TRUE(m.reference->translate(Machine::request(p, kAccessRead)).ok);
    ASSERT_TRUE(m.cached->translate(Machine::request(p, kAccessRead)).ok);
    ASSERT_TRUE(m.cached->translate(Machine::request(p, kAccessRead)).ok);
  }
  const EngineStats ref = m.reference->stats();
  EXPECT_EQ(ref.iotlb.walks, 32u);
  EXPECT_EQ(ref.iotlb.walk_refs, 32u * 24u);
  const EngineStats c = m.cached->stats();
  EXPECT_EQ(c.iotlb.walks, c.iotlb.misses);
  EXPECT_EQ(c.iotlb.walks, 32u);
  EXPECT_LT(c.iotlb.walk_refs, ref.iotlb.walk_refs / 4) << "warm structure caches skip levels";
  EXPECT_GE(c.iotlb.walk_refs, 24u + 31u) << "every walk reads at least the leaf";
}

}  // namespace
}  // namespace nestor::test
