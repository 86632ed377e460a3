// Paging-structure caches: levels, scopes, range coverage, the leaf hint, GPA invalidation.
#include "nestor/caches/paging_structure_caches.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace nestor::caches {
namespace {

constexpr uint64_t k4K = 1ull << 12, k2M = 1ull << 21, k1G = 1ull << 30;

class PscTest : public ::testing::Test {
 protected:
  InvalidationClock clock;
  PagingStructureCaches psc{clock, PscConfig{.promote_threshold_pages = 1024}};

  bool fl(uint16_t did, uint32_t pasid, unsigned level, uint64_t iova) {
    PscEntry e;
    return psc.lookup_fl(did, pasid, level, iova, &e);
  }
  bool sl(uint16_t did, unsigned level, uint64_t gpa) {
    PscEntry e;
    return psc.lookup_sl(did, level, gpa, &e);
  }
  bool nt(uint16_t did, uint64_t gpa) {
    NestedTableEntry e;
    return psc.lookup_nested_table(did, gpa, &e);
  }
  void fill_fl_levels(uint16_t did, uint32_t pasid, uint64_t iova) {
    for (unsigned l = 2; l <= 4; ++l) {
      ASSERT_TRUE(psc.fill_fl(clock.now(), did, pasid, l, iova, PscEntry{l * 0x1000, 3}));
    }
  }
};

TEST_F(PscTest, LevelPrefixesCoverTheirRegion) {
  ASSERT_TRUE(psc.fill_fl(clock.now(), 1, 1, 2, 5 * k2M + 123, PscEntry{0xAB000, 7}));
  PscEntry e;
  ASSERT_TRUE(psc.lookup_fl(1, 1, 2, 5 * k2M + k2M - 1, &e));
  EXPECT_EQ(e.next_table, 0xAB000u);
  EXPECT_EQ(e.attrs, 7);
  EXPECT_FALSE(fl(1, 1, 2, 6 * k2M));
  EXPECT_FALSE(fl(1, 1, 3, 5 * k2M));                              // other level
  EXPECT_FALSE(fl(1, 2, 2, 5 * k2M));                              // other PASID
  EXPECT_FALSE(psc.fill_fl(clock.now(), 1, 1, 1, 0, PscEntry{}));  // leaf level is not cached
  EXPECT_FALSE(psc.fill_fl(clock.now(), 1, 1, 6, 0, PscEntry{}));
}

TEST_F(PscTest, DeepestLookupPrefersLowestLevel) {
  ASSERT_TRUE(psc.fill_fl(clock.now(), 1, 1, 4, 0x1234'5678, PscEntry{4, 0}));
  ASSERT_TRUE(psc.fill_fl(clock.now(), 1, 1, 3, 0x1234'5678, PscEntry{3, 0}));
  PscEntry e;
  EXPECT_EQ(psc.lookup_fl_deepest(1, 1, 0x1234'5678, 4, &e), 3u);
  EXPECT_EQ(e.next_table, 3u);
  ASSERT_TRUE(psc.fill_fl(clock.now(), 1, 1, 2, 0x1234'5678, PscEntry{2, 0}));
  EXPECT_EQ(psc.lookup_fl_deepest(1, 1, 0x1234'5678, 4, &e), 2u);
  EXPECT_EQ(psc.lookup_fl_deepest(1, 1, 0x1234'5678 + k1G, 4, &e), 4u);
  EXPECT_EQ(psc.lookup_fl_deepest(1, 1, 0x1234'5678 + k1G, 3, &e), 0u);
  ASSERT_TRUE(psc.fill_sl(clock.now(), 2, 3, 7 * k1G, PscEntry{9, 0}));
  EXPECT_EQ(psc.lookup_sl_deepest(2, 7 * k1G + 5, 4, &e), 3u);
  EXPECT_EQ(e.next_table, 9u);
}

TEST_F(PscTest, RangeRemovesCoveringFirstLevelEntriesOnly) {
  fill_fl_levels(1, 1, 4 * k1G);
  fill_fl_levels(1, 1, 6 * k1G);
  fill_fl_levels(1, 2, 4 * k1G);
  psc.invalidate_range(1, 1, 4 * k1G + 3 * k4K, 1, /*leaf_hint=*/false);
  for (unsigned l = 2; l <= 4; ++l) {
    EXPECT_FALSE(fl(1, 1, l, 4 * k1G)) << l;
    EXPECT_TRUE(fl(1, 2, l, 4 * k1G)) << l;  // other PASID
  }
  // 6G shares the level-4 (512G) entry with 4G but not its level-2/3 entries.
  EXPECT_TRUE(fl(1, 1, 2, 6 * k1G));
  EXPECT_TRUE(fl(1, 1, 3, 6 * k1G));
  EXPECT_FALSE(fl(1, 1, 4, 6 * k1G));
}

TEST_F(PscTest, LeafHintKeepsNonLeafEntries) {
  fill_fl_levels(1, 1, 4 * k1G);
  psc.invalidate_range(1, 1, 4 * k1G, 8, /*leaf_hint=*/true);
  for (unsigned l = 2; l <= 4; ++l) EXPECT_TRUE(fl(1, 1, l, 4 * k1G)) << l;
  ASSERT_TRUE(psc.fill_sl(clock.now(), 1, 2, 4 * k1G, PscEntry{}));
  ASSERT_TRUE(psc.fill_nested_table(clock.now(), 1, 4 * k1G, NestedTableEntry{0x9000, 1}));
  psc.invalidate_gpa_range(1, 4 * k1G, 1, /*leaf_hint=*/true);
  EXPECT_TRUE(sl(1, 2, 4 * k1G));
  EXPECT_FALSE(nt(1, 4 * k1G));  // leaf second-level translations always go
}

TEST_F(PscTest, GpaRangeRemovesSecondLevelAndNestedTablesInRange) {
  for (unsigned l = 2; l <= 4; ++l) {
    ASSERT_TRUE(psc.fill_sl(clock.now(), 1, l, 2 * k1G, PscEntry{}));
    ASSERT_TRUE(psc.fill_sl(clock.now(), 2, l, 2 * k1G, PscEntry{}));
  }
  ASSERT_TRUE(psc.fill_sl(clock.now(), 1, 2, 2 * k1G + 4 * k2M, PscEntry{}));
  for (uint64_t p = 0; p < 4; ++p) {
    ASSERT_TRUE(psc.fill_nested_table(clock.now(), 1, 2 * k1G + p * k4K, NestedTableEntry{}));
  }
  fill_fl_levels(1, 1, 2 * k1G);
  fill_fl_levels(2, 1, 2 * k1G);
  psc.invalidate_gpa_range(1, 2 * k1G + k4K, 2, /*leaf_hint=*/false);
  for (unsigned l = 2; l <= 4; ++l) {
    EXPECT_FALSE(sl(1, l, 2 * k1G)) << l;
    EXPECT_TRUE(sl(2, l, 2 * k1G)) << l;
    // VT-d type 0x2 reaches the first-level and nested paging-structure entries of the DID
    // whatever their address; another DID keeps its own.
    EXPECT_FALSE(fl(1, 1, l, 2 * k1G)) << l;
    EXPECT_TRUE(fl(2, 1, l, 2 * k1G)) << l;
  }
  EXPECT_TRUE(sl(1, 2, 2 * k1G + 4 * k2M));
  EXPECT_TRUE(nt(1, 2 * k1G));
  EXPECT_FALSE(nt(1, 2 * k1G + k4K));
  EXPECT_FALSE(nt(1, 2 * k1G + 2 * k4K));
  EXPECT_TRUE(nt(1, 2 * k1G + 3 * k4K));
}

TEST_F(PscTest, GpaRangeKeepsFirstLevelWhenCallerTracksDependencies) {
  fill_fl_levels(1, 1, 2 * k1G);
  ASSERT_TRUE(psc.fill_nested_table(clock.now(), 1, 7 * k1G, NestedTableEntry{}));
  psc.invalidate_gpa_range(1, 7 * k1G, 1, /*leaf_hint=*/true, /*first_level_of_domain=*/false);
  for (unsigned l = 2; l <= 4; ++l) EXPECT_TRUE(fl(1, 1, l, 2 * k1G)) << l;
  EXPECT_FALSE(nt(1, 7 * k1G));
  // The leaf hint never spares first-level entries under the architecture's reach.
  psc.invalidate_gpa_range(1, 7 * k1G, 1, /*leaf_hint=*/true);
  for (unsigned l = 2; l <= 4; ++l) EXPECT_FALSE(fl(1, 1, l, 2 * k1G)) << l;
}

TEST_F(PscTest, Scopes) {
  fill_fl_levels(1, 1, 0);
  fill_fl_levels(1, 2, 0);
  fill_fl_levels(2, 1, 0);
  ASSERT_TRUE(psc.fill_sl(clock.now(), 1, 2, 0, PscEntry{}));
  ASSERT_TRUE(psc.fill_nested_table(clock.now(), 1, 0, NestedTableEntry{}));
  ASSERT_TRUE(psc.fill_sl(clock.now(), 2, 2, 0, PscEntry{}));
  psc.invalidate_pasid(1, 1);
  EXPECT_FALSE(fl(1, 1, 2, 0));
  EXPECT_TRUE(fl(1, 2, 2, 0));
  EXPECT_TRUE(sl(1, 2, 0));  // PASID scope leaves the second level alone
  psc.invalidate_domain(1);
  EXPECT_FALSE(fl(1, 2, 2, 0));
  EXPECT_FALSE(sl(1, 2, 0));
  EXPECT_FALSE(nt(1, 0));
  EXPECT_TRUE(fl(2, 1, 2, 0));
  EXPECT_TRUE(sl(2, 2, 0));
  psc.invalidate_global();
  EXPECT_FALSE(fl(2, 1, 2, 0));
  EXPECT_FALSE(sl(2, 2, 0));
}

TEST_F(PscTest, LargeRangesPromote) {
  fill_fl_levels(1, 1, 100 * k1G);
  fill_fl_levels(1, 2, 100 * k1G);
  psc.invalidate_range(1, 1, 0, 1025, false);
  EXPECT_FALSE(fl(1, 1, 2, 100 * k1G));  // promoted to PASID scope
  EXPECT_TRUE(fl(1, 2, 2, 100 * k1G));
  EXPECT_EQ(psc.fl_stats().inv_promoted, 1u);
  ASSERT_TRUE(psc.fill_sl(clock.now(), 1, 2, 100 * k1G, PscEntry{}));
  ASSERT_TRUE(psc.fill_nested_table(clock.now(), 1, 100 * k1G, NestedTableEntry{}));
  psc.invalidate_gpa_range(1, 0, 2000, false, /*first_level_of_domain=*/false);
  EXPECT_FALSE(sl(1, 2, 100 * k1G));
  EXPECT_FALSE(nt(1, 100 * k1G));
  EXPECT_TRUE(fl(1, 2, 2, 100 * k1G));
  EXPECT_EQ(psc.sl_stats().over_invalidations, 1u);
  EXPECT_EQ(psc.nested_table_stats().inv_promoted, 1u);
}

TEST_F(PscTest, FillRefusedAfterInvalidation) {
  uint64_t stamp = clock.now();
  psc.invalidate_range(1, 1, 5 * k2M, 1, false);
  EXPECT_FALSE(psc.fill_fl(stamp, 1, 1, 2, 5 * k2M, PscEntry{}));
  EXPECT_FALSE(fl(1, 1, 2, 5 * k2M));
  stamp = clock.now();
  psc.invalidate_gpa_range(1, 5 * k2M, 1, false);
  EXPECT_FALSE(psc.fill_sl(stamp, 1, 3, 5 * k2M, PscEntry{}));
  EXPECT_FALSE(psc.fill_nested_table(stamp, 1, 5 * k2M, NestedTableEntry{}));
  stamp = clock.now();
  psc.invalidate_domain(1);
  EXPECT_FALSE(psc.fill_fl(stamp, 1, 9, 3, 0, PscEntry{}));
  EXPECT_EQ(psc.fl_stats().refused_fills, 2u);
  EXPECT_EQ(psc.sl_stats().refused_fills, 1u);
  EXPECT_EQ(psc.nested_table_stats().refused_fills, 1u);
}

// One batch of ops shares a RemovalMemo (CacheSet::apply_batch, inside one clock interval).
// VT-d 6.5.2.6: a PASID-based IOTLB invalidation with IH=0 removes the paging-structure entries
// of its (DID, PASID) that translate the range; the memo may skip only a key it already
// removed, so a second PASID, DID or region sharing a prefix still loses its entries.
TEST_F(PscTest, RemovalMemoSkipsOnlyKeysAlreadyRemovedInTheInterval) {
  const uint64_t a = 4 * k1G + 3 * k2M, b = a + k2M;  // same level 3-5 prefixes, other 2M
  fill_fl_levels(1, 1, a);
  fill_fl_levels(1, 2, a);
  fill_fl_levels(2, 1, a);
  fill_fl_levels(1, 1, b);
  const uint64_t stale = clock.now();  // a walk that began before the batch
  InvalidationClock::Interval interval(clock);
  PagingStructureCaches::RemovalMemo memo;
  psc.invalidate_range(1, 1, a, 1, false, &memo);
  psc.invalidate_range(1, 2, a, 1, false, &memo);        // same prefixes, other PASID
  psc.invalidate_range(2, 1, a, 1, false, &memo);        // other DID
  psc.invalidate_range(1, 1, a + k4K, 1, false, &memo);  // every key seen: nothing to lock
  for (unsigned l = 2; l <= 4; ++l) {
    EXPECT_FALSE(fl(1, 1, l, a)) << l;
    EXPECT_FALSE(fl(1, 2, l, a)) << l;
    EXPECT_FALSE(fl(2, 1, l, a)) << l;
  }
  // The level-2 entry of the other 2M region survived the first three ops, which did not
  // cover it; its upper levels went with region a's.
  EXPECT_TRUE(fl(1, 1, 2, b));
  psc.invalidate_range(1, 1, b, 1, false, &memo);
  EXPECT_FALSE(fl(1, 1, 2, b));
  // The skipped repeats are safe: a fill from a walk stamped before the batch (or inside the
  // interval) is refused by the time the first removal left on the set.
  EXPECT_FALSE(psc.fill_fl(stale, 1, 1, 2, a, PscEntry{}));
  EXPECT_FALSE(psc.fill_fl(clock.now(), 1, 2, 3, a, PscEntry{}));
}

}  // namespace
}  // namespace nestor::caches
