// IOTLB: size classes, every invalidation scope, range/AM edge cases, GPA-addressed
// invalidation, fill refusal.
#include "nestor/caches/iotlb.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>

namespace nestor::caches {
namespace {

constexpr uint64_t k4K = 1ull << 12, k2M = 1ull << 21, k1G = 1ull << 30;

IotlbEntry entry(uint64_t hpa, unsigned shift, uint8_t flags = 0, uint64_t gpa = 0) {
  IotlbEntry e;
  e.hpa_base = hpa;
  e.page_shift = static_cast<uint8_t>(shift);
  e.perms = 3;
  e.flags = flags;
  e.gpa_base = gpa;
  return e;
}

class IotlbTest : public ::testing::Test {
 protected:
  InvalidationClock clock;
  Iotlb tlb{clock, IotlbConfig{.cache = {.capacity = 4096, .shards = 4, .ways = 0},
                               .promote_threshold_pages = 600}};

  bool fill(uint16_t did, uint32_t pasid, uint64_t iova, const IotlbEntry &e) {
    return tlb.fill(clock.now(), did, pasid, iova, e);
  }
  bool hit(uint16_t did, uint32_t pasid, uint64_t iova) {
    IotlbEntry e;
    return tlb.lookup(did, pasid, iova, &e);
  }
};

// A buffer of consecutive pages is the common working set. Placement spreads consecutive page
// numbers evenly over the sets (multiplicative hashing, SetAssocCache::hash_key), so such a
// buffer fits as long as it is no larger than three quarters of the capacity: nothing is
// evicted, every page stays a hit. A hash that scatters keys at random overflows some 8-way
// sets already at half capacity (about 1 set in 50 draws more than 8 of a Poisson(4) load).
TEST(IotlbPlacement, ConsecutivePagesUpToThreeQuartersOfCapacityAreNeverEvicted) {
  for (size_t capacity : {size_t{4096}, size_t{65536}}) {
    for (uint64_t base : {uint64_t{0}, uint64_t{0x7f12'3456'7000}}) {
      InvalidationClock clock;
      Iotlb tlb(clock, IotlbConfig{.cache = {.capacity = capacity, .shards = 4, .ways = 0}});
      const size_t pages = capacity * 3 / 4;
      for (size_t i = 0; i < pages; ++i)
        ASSERT_TRUE(tlb.fill(clock.now(), 3, 7, base + i * k4K, entry(i * k4K, 12)));
      EXPECT_EQ(tlb.stats().evictions, 0u) << "capacity " << capacity << " base " << base;
      size_t hits = 0;
      IotlbEntry e;
      for (size_t i = 0; i < pages; ++i) hits += tlb.lookup(3, 7, base + i * k4K, &e);
      EXPECT_EQ(hits, pages);
    }
  }
}

TEST_F(IotlbTest, FindsEverySizeClass) {
  ASSERT_TRUE(fill(1, 5, 0x1234'5000, entry(0xA000, 12)));
  ASSERT_TRUE(fill(1, 5, 0x4020'0000, entry(0x4000'0000, 21)));
  ASSERT_TRUE(fill(1, 5, 3 * k1G, entry(7 * k1G, 30)));
  IotlbEntry e;
  ASSERT_TRUE(tlb.lookup(1, 5, 0x1234'5FFF, &e));
  EXPECT_EQ(e.hpa_base, 0xA000u);
  EXPECT_EQ(e.page_shift, 12);
  // An address in the middle of the 2M page hits the 2M entry.
  ASSERT_TRUE(tlb.lookup(1, 5, 0x4020'0000 + 0x1F'F123, &e));
  EXPECT_EQ(e.hpa_base, 0x4000'0000u);
  EXPECT_EQ(e.page_shift, 21);
  ASSERT_TRUE(tlb.lookup(1, 5, 3 * k1G + 0x3FFF'FFFF, &e));
  EXPECT_EQ(e.hpa_base, 7 * k1G);
  EXPECT_EQ(e.page_shift, 30);
  EXPECT_FALSE(hit(1, 5, 0x1234'6000));  // next 4K page
  EXPECT_FALSE(hit(1, 5, 0x4040'0000));  // next 2M page
  EXPECT_FALSE(hit(2, 5, 0x1234'5000));  // other DID
  EXPECT_FALSE(hit(1, 6, 0x1234'5000));  // other PASID
}

TEST_F(IotlbTest, RejectsUnsupportedPageShift) {
  EXPECT_FALSE(fill(1, 1, 0, entry(0, 13)));
  EXPECT_EQ(tlb.stats().refused_fills, 1u);
}

TEST_F(IotlbTest, GlobalInvalidationRemovesEverything) {
  ASSERT_TRUE(fill(1, 1, 0x1000, entry(0, 12)));
  ASSERT_TRUE(fill(2, 7, 0x2000, entry(0, 12)));
  tlb.invalidate_global();
  EXPECT_FALSE(hit(1, 1, 0x1000));
  EXPECT_FALSE(hit(2, 7, 0x2000));
  // Entries filled after the invalidation are fine.
  ASSERT_TRUE(fill(1, 1, 0x1000, entry(0, 12)));
  EXPECT_TRUE(hit(1, 1, 0x1000));
}

TEST_F(IotlbTest, DomainInvalidationIsPrecise) {
  ASSERT_TRUE(fill(1, 1, 0x1000, entry(0, 12)));
  ASSERT_TRUE(fill(1, 2, 0x1000, entry(0, 21)));
  ASSERT_TRUE(fill(2, 1, 0x1000, entry(0, 12)));
  tlb.invalidate_domain(1);
  EXPECT_FALSE(hit(1, 1, 0x1000));
  EXPECT_FALSE(hit(1, 2, 0x1000));
  EXPECT_TRUE(hit(2, 1, 0x1000));
}

TEST_F(IotlbTest, PasidInvalidationIsPrecise) {
  ASSERT_TRUE(fill(1, 1, 0x1000, entry(0, 12)));
  ASSERT_TRUE(fill(1, 2, 0x1000, entry(0, 12)));
  ASSERT_TRUE(fill(2, 1, 0x1000, entry(0, 12)));
  tlb.invalidate_pasid(1, 1);
  EXPECT_FALSE(hit(1, 1, 0x1000));
  EXPECT_TRUE(hit(1, 2, 0x1000));
  EXPECT_TRUE(hit(2, 1, 0x1000));
}

TEST_F(IotlbTest, PageInvalidationRemovesOnlyThatPage) {
  for (uint64_t p = 0; p < 4; ++p) ASSERT_TRUE(fill(1, 1, 0x10'0000 + p * k4K, entry(p, 12)));
  ASSERT_TRUE(fill(1, 2, 0x10'1000, entry(0, 12)));
  tlb.invalidate_range(1, 1, 0x10'1000, 1);
  EXPECT_TRUE(hit(1, 1, 0x10'0000));
  EXPECT_FALSE(hit(1, 1, 0x10'1000));
  EXPECT_TRUE(hit(1, 1, 0x10'2000));
  EXPECT_TRUE(hit(1, 1, 0x10'3000));
  EXPECT_TRUE(hit(1, 2, 0x10'1000));  // same page, other PASID
  EXPECT_EQ(tlb.stats().inv_page, 1u);
  EXPECT_EQ(tlb.stats().entries_removed, 1u);
}

TEST_F(IotlbTest, FourKInvalidationInsideOneGigEntryRemovesIt) {
  ASSERT_TRUE(fill(1, 1, 2 * k1G, entry(0, 30)));
  ASSERT_TRUE(fill(1, 1, 3 * k1G, entry(k1G, 30)));
  tlb.invalidate_range(1, 1, 2 * k1G + 0x1234'5000, 1);
  EXPECT_FALSE(hit(1, 1, 2 * k1G));
  EXPECT_FALSE(hit(1, 1, 2 * k1G + 0x3FFF'F000));
  EXPECT_TRUE(hit(1, 1, 3 * k1G));
}

TEST_F(IotlbTest, FourKInvalidationInsideTwoMegEntryRemovesIt) {
  ASSERT_TRUE(fill(1, 1, 4 * k2M, entry(0, 21)));
  ASSERT_TRUE(fill(1, 1, 5 * k2M, entry(0, 21)));
  tlb.invalidate_range(1, 1, 4 * k2M + 0x7000, 1);
  EXPECT_FALSE(hit(1, 1, 4 * k2M));
  EXPECT_TRUE(hit(1, 1, 5 * k2M));
}

TEST_F(IotlbTest, RangeCrossingLargePagesRemovesBoth) {
  ASSERT_TRUE(fill(1, 1, 6 * k2M, entry(0, 21)));
  ASSERT_TRUE(fill(1, 1, 7 * k2M, entry(0, 21)));
  ASSERT_TRUE(fill(1, 1, 8 * k2M, entry(0, 21)));
  ASSERT_TRUE(fill(1, 1, 5 * k2M, entry(0, 21)));
  // Two pages straddling the 6M/7M boundary... starting unaligned inside the page.
  tlb.invalidate_range(1, 1, 7 * k2M - k4K + 0x10, 2);
  EXPECT_TRUE(hit(1, 1, 5 * k2M));
  EXPECT_FALSE(hit(1, 1, 6 * k2M));
  EXPECT_FALSE(hit(1, 1, 7 * k2M));
  EXPECT_TRUE(hit(1, 1, 8 * k2M));
  EXPECT_EQ(tlb.stats().inv_range, 1u);
}

TEST_F(IotlbTest, UnalignedStartCoversPagesTouched) {
  for (uint64_t p = 0; p < 4; ++p) ASSERT_TRUE(fill(1, 1, p * k4K, entry(p, 12)));
  // Offset bits are ignored, as VT-d does: two pages starting in page 1 are pages 1 and 2.
  tlb.invalidate_range(1, 1, k4K + 0x800, 2);
  EXPECT_TRUE(hit(1, 1, 0));
  EXPECT_FALSE(hit(1, 1, k4K));
  EXPECT_FALSE(hit(1, 1, 2 * k4K));
  EXPECT_TRUE(hit(1, 1, 3 * k4K));
}

TEST_F(IotlbTest, AddressMaskAlignsDown) {
  for (uint64_t p = 0; p < 20; ++p) ASSERT_TRUE(fill(1, 1, p * k4K, entry(p, 12)));
  // am=3 at page 13 covers pages 8..15.
  tlb.invalidate_page_am(1, 1, 13 * k4K + 0x123, 3);
  for (uint64_t p = 0; p < 20; ++p) EXPECT_EQ(hit(1, 1, p * k4K), p < 8 || p > 15) << p;
  // am=9 covers the whole 2M page containing the address.
  ASSERT_TRUE(fill(1, 1, 9 * k2M, entry(0, 21)));
  ASSERT_TRUE(fill(1, 1, 10 * k2M + 5 * k4K, entry(0, 12)));
  tlb.invalidate_page_am(1, 1, 10 * k2M + 0x1F'0000, 9);
  EXPECT_TRUE(hit(1, 1, 9 * k2M));
  EXPECT_FALSE(hit(1, 1, 10 * k2M + 5 * k4K));
  // am=0 counts as a page invalidation.
  tlb.invalidate_page_am(1, 1, 0, 0);
  EXPECT_EQ(tlb.stats().inv_page, 1u);
  EXPECT_EQ(tlb.stats().inv_range, 2u);
}

TEST_F(IotlbTest, LargeRangePromotesToPasidScope) {
  ASSERT_TRUE(fill(1, 1, 0x1000, entry(0, 12)));
  ASSERT_TRUE(fill(1, 1, 100 * k1G, entry(0, 30)));  // far outside the range
  ASSERT_TRUE(fill(1, 2, 0x1000, entry(0, 12)));
  ASSERT_TRUE(fill(2, 1, 0x1000, entry(0, 12)));
  tlb.invalidate_range(1, 1, 0, 601);  // threshold is 600
  EXPECT_FALSE(hit(1, 1, 0x1000));
  EXPECT_FALSE(hit(1, 1, 100 * k1G));  // over-invalidated by promotion
  EXPECT_TRUE(hit(1, 2, 0x1000));
  EXPECT_TRUE(hit(2, 1, 0x1000));
  const CacheStats s = tlb.stats();
  EXPECT_EQ(s.inv_promoted, 1u);
  EXPECT_EQ(s.over_invalidations, 1u);
  // At the threshold itself removal stays precise.
  ASSERT_TRUE(fill(1, 1, 100 * k1G, entry(0, 30)));
  ASSERT_TRUE(fill(1, 1, 0x1000, entry(0, 12)));
  tlb.invalidate_range(1, 1, 0, 600);
  EXPECT_FALSE(hit(1, 1, 0x1000));
  EXPECT_TRUE(hit(1, 1, 100 * k1G));
  EXPECT_EQ(tlb.stats().inv_promoted, 1u);
}

TEST_F(IotlbTest, RangeAtTopOfAddressSpaceDoesNotWrap) {
  const uint64_t top = ~uint64_t{0} & ~(k4K - 1);
  ASSERT_TRUE(fill(1, 1, top, entry(0, 12)));
  ASSERT_TRUE(fill(1, 1, 0, entry(0, 12)));
  tlb.invalidate_range(1, 1, top, 2);  // would wrap to page 0
  EXPECT_FALSE(hit(1, 1, top));
  EXPECT_TRUE(hit(1, 1, 0));
}

TEST_F(IotlbTest, GpaInvalidationRemovesFirstLevelAndNestedEntriesOfTheDomain) {
  // VT-d type 0x2, page-selective-within-domain (QEMU's vtd_hash_remove_by_page quotes the
  // spec): second-stage entries of the DID in the range, and every first-stage and nested
  // entry of the DID whatever its address.
  ASSERT_TRUE(fill(1, 10, 0x1000, entry(0xA000, 12, kIotlbNested, 5 * k1G)));
  ASSERT_TRUE(fill(1, 10, 0x2000, entry(0xC000, 12, kIotlbNested, 9 * k1G)));
  ASSERT_TRUE(fill(1, 12, 5 * k1G, entry(0xE000, 12)));  // first-level only
  ASSERT_TRUE(fill(2, 10, 0x1000, entry(0xD000, 12, kIotlbNested, 5 * k1G)));
  ASSERT_TRUE(fill(2, 12, 0x1000, entry(0xD000, 12)));
  ASSERT_TRUE(fill(1, Iotlb::kSecondLevelPasid, 5 * k1G, entry(0xF000, 12)));
  ASSERT_TRUE(fill(1, Iotlb::kSecondLevelPasid, 5 * k1G + 2 * k4K, entry(0xF000, 12)));
  tlb.invalidate_gpa_range(1, 5 * k1G, 2);
  EXPECT_FALSE(hit(1, 10, 0x1000));
  EXPECT_FALSE(hit(1, 10, 0x2000));
  EXPECT_FALSE(hit(1, 12, 5 * k1G));
  EXPECT_TRUE(hit(2, 10, 0x1000));
  EXPECT_TRUE(hit(2, 12, 0x1000));
  EXPECT_FALSE(hit(1, Iotlb::kSecondLevelPasid, 5 * k1G));
  EXPECT_TRUE(hit(1, Iotlb::kSecondLevelPasid, 5 * k1G + 2 * k4K));
  const CacheStats s = tlb.stats();
  EXPECT_EQ(s.inv_gpa, 1u);
  EXPECT_EQ(s.over_invalidations, 1u);  // the domain-wide reach, counted once per op
}

TEST_F(IotlbTest, GpaDependentsReachOnlyNestedEntriesWhoseFinalGpaIsInRange) {
  ASSERT_TRUE(fill(1, 10, 0x1000, entry(0xA000, 12, kIotlbNested, 5 * k1G)));
  ASSERT_TRUE(fill(1, 11, 0x7000, entry(0xB000, 12, kIotlbNested, 5 * k1G + k4K)));
  ASSERT_TRUE(fill(1, 10, 0x2000, entry(0xC000, 12, kIotlbNested, 5 * k1G + 2 * k4K)));
  ASSERT_TRUE(fill(1, 10, 0x3000, entry(0xC000, 12, kIotlbNested, 9 * k1G)));
  ASSERT_TRUE(fill(1, 12, 5 * k1G, entry(0xE000, 12)));  // first-level only: no GPA at all
  // A 2M nested page containing the range is found under its own base.
  ASSERT_TRUE(fill(1, 13, 4 * k2M, entry(0, 21, kIotlbNested, 5 * k1G)));
  tlb.invalidate_gpa_range(1, 5 * k1G, 2, GpaReach::kFinalGpaDependents);
  EXPECT_FALSE(hit(1, 10, 0x1000));
  EXPECT_FALSE(hit(1, 11, 0x7000));
  EXPECT_FALSE(hit(1, 13, 4 * k2M + 5));
  EXPECT_TRUE(hit(1, 10, 0x2000));
  EXPECT_TRUE(hit(1, 10, 0x3000));
  EXPECT_TRUE(hit(1, 12, 5 * k1G));
  EXPECT_EQ(tlb.stats().over_invalidations, 0u);
  // A range too large to mark page by page takes the architecture's reach, counted (as is the
  // promotion of its second-level-only part to a scope).
  tlb.invalidate_gpa_range(1, 0, 2000, GpaReach::kFinalGpaDependents);
  EXPECT_FALSE(hit(1, 12, 5 * k1G));
  EXPECT_EQ(tlb.stats().over_invalidations, 2u);
}

TEST_F(IotlbTest, GpaDependentsFollowTheSecondLevelLeafSize) {
  // VT-d: invalidating any address inside a large second-level page invalidates that page's
  // translation, so every nested entry built on it goes, even a 4K one elsewhere in it.
  IotlbEntry e = entry(0xA000, 12, kIotlbNested, 5 * k1G + 300 * k4K);
  e.sl_page_shift = 30;
  ASSERT_TRUE(fill(1, 10, 0x1000, e));
  IotlbEntry small = entry(0xB000, 12, kIotlbNested, 7 * k1G + 300 * k4K);
  ASSERT_TRUE(fill(1, 10, 0x2000, small));  // 4K second-level leaf: only its own page counts
  tlb.invalidate_gpa_range(1, 5 * k1G + 7 * k4K, 1, GpaReach::kFinalGpaDependents);
  tlb.invalidate_gpa_range(1, 7 * k1G + 7 * k4K, 1, GpaReach::kFinalGpaDependents);
  EXPECT_FALSE(hit(1, 10, 0x1000));
  EXPECT_TRUE(hit(1, 10, 0x2000));
}

TEST_F(IotlbTest, GpaInvalidationCoversLargeNestedEntrySpanningRange) {
  for (GpaReach reach : {GpaReach::kFirstLevelOfDomain, GpaReach::kFinalGpaDependents}) {
    ASSERT_TRUE(fill(1, 10, 4 * k2M, entry(0, 21, kIotlbNested, 3 * k1G + 2 * k2M)));
    ASSERT_TRUE(fill(1, 10, 2 * k1G, entry(0, 30, kIotlbNested, 3 * k1G)));
    tlb.invalidate_gpa_range(1, 3 * k1G + 2 * k2M + 17 * k4K, 1, reach);
    EXPECT_FALSE(hit(1, 10, 4 * k2M + 5));
    EXPECT_FALSE(hit(1, 10, 2 * k1G + 5));
  }
}

TEST_F(IotlbTest, SecondLevelOnlyEntriesUnderRealPasidFollowGpaInvalidation) {
  for (GpaReach reach : {GpaReach::kFirstLevelOfDomain, GpaReach::kFinalGpaDependents}) {
    ASSERT_TRUE(fill(1, 3, 5 * k1G, entry(0, 12, kIotlbSecondLevelOnly, 5 * k1G)));
    tlb.invalidate_gpa_range(1, 5 * k1G, 1, reach);
    EXPECT_FALSE(hit(1, 3, 5 * k1G));
  }
}

// Invariant 2, deterministically: the stamp predates the invalidation, so the fill must lose.
TEST_F(IotlbTest, FillRefusedAfterInvalidationOfEveryKind) {
  struct Case {
    const char *name;
    std::function<void()> invalidate;
    uint8_t flags;
  };
  const Case cases[] = {
      {"global", [&] { tlb.invalidate_global(); }, 0},
      {"domain", [&] { tlb.invalidate_domain(1); }, 0},
      {"pasid", [&] { tlb.invalidate_pasid(1, 1); }, 0},
      {"page", [&] { tlb.invalidate_range(1, 1, 0x5000, 1); }, 0},
      {"range", [&] { tlb.invalidate_range(1, 1, 0x4000, 4); }, 0},
      {"am", [&] { tlb.invalidate_page_am(1, 1, 0x5000, 2); }, 0},
      {"promoted", [&] { tlb.invalidate_range(1, 1, 0, 1000); }, 0},
      {"gpa", [&] { tlb.invalidate_gpa_range(1, 7 * k1G, 1); }, kIotlbNested},
  };
  for (const Case &c : cases) {
    const uint64_t stamp = clock.now();
    c.invalidate();
    EXPECT_FALSE(tlb.fill(stamp, 1, 1, 0x5000, entry(0, 12, c.flags, 7 * k1G))) << c.name;
    EXPECT_FALSE(hit(1, 1, 0x5000)) << c.name;
    // A walk that starts after the invalidation fills normally.
    EXPECT_TRUE(tlb.fill(clock.now(), 1, 1, 0x5000, entry(0, 12, c.flags, 7 * k1G))) << c.name;
    EXPECT_TRUE(hit(1, 1, 0x5000)) << c.name;
    tlb.invalidate_global();
  }
}

TEST_F(IotlbTest, UnrelatedInvalidationDoesNotRefuseFill) {
  const uint64_t stamp = clock.now();
  tlb.invalidate_domain(2);
  tlb.invalidate_pasid(1, 2);
  tlb.invalidate_range(1, 1, 0x100'0000, 1);
  EXPECT_TRUE(tlb.fill(stamp, 1, 1, 0x5000, entry(0, 12)));
  EXPECT_TRUE(hit(1, 1, 0x5000));
}

TEST_F(IotlbTest, StatsAddUp) {
  ASSERT_TRUE(fill(1, 1, 0x1000, entry(0, 12)));
  ASSERT_TRUE(fill(1, 1, 0x1000, entry(0, 12)));  // replace
  hit(1, 1, 0x1000);
  hit(1, 1, 0x1000);
  hit(1, 1, 0x2000);
  const uint64_t old = clock.now();
  tlb.invalidate_global();
  EXPECT_FALSE(tlb.fill(old, 1, 1, 0x1000, entry(0, 12)));
  tlb.invalidate_domain(3);
  tlb.invalidate_pasid(3, 3);
  const CacheStats s = tlb.stats();
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.lookups(), 3u);
  EXPECT_EQ(s.fills, 2u);
  EXPECT_EQ(s.refused_fills, 1u);
  EXPECT_EQ(s.inv_global, 1u);
  EXPECT_EQ(s.inv_domain, 1u);
  EXPECT_EQ(s.inv_pasid, 1u);
  EXPECT_EQ(s.evictions, 0u);
}

TEST(IotlbCapacity, EvictionsCountedWhenOverfull) {
  InvalidationClock clock;
  Iotlb tlb(clock, IotlbConfig{.cache = {.capacity = 64, .shards = 1, .ways = 0}});
  EXPECT_EQ(tlb.capacity(), 64u);
  for (uint64_t p = 0; p < 1000; ++p) {
    IotlbEntry e;
    ASSERT_TRUE(tlb.fill(clock.now(), 1, 1, p << 12, e));
  }
  const CacheStats s = tlb.stats();
  EXPECT_EQ(s.fills, 1000u);
  EXPECT_GE(s.evictions, 1000u - 64u);
  EXPECT_EQ(tlb.count_live(), 64u);
}

}  // namespace
}  // namespace nestor::caches
