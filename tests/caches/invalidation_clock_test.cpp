// The invalidation clock's contract, and the interleaving that made an open Interval necessary
// (docs/STRESS.md finding 7): one type 0x2 operation removes IOTLB entries, then nested-table
// entries; a walk stamped between the two read the not-yet-removed nested-table entry (the old
// host page of a first-level table) and filled the IOTLB, whose removal was already done.
// The interleaving is replayed step by step on one thread, so the test is deterministic.
#include "nestor/caches/invalidation_clock.h"

#include <gtest/gtest.h>

#include <memory>

#include "nestor/caches/iotlb.h"
#include "nestor/caches/paging_structure_caches.h"

namespace nestor::caches {
namespace {

TEST(InvalidationClock, StampsAfterAnAdvanceAreNewer) {
  InvalidationClock clock;
  const uint64_t before = clock.now();
  const uint64_t t = clock.advance();
  EXPECT_LE(before, t);
  EXPECT_GT(clock.now(), t);
}

TEST(InvalidationClock, OpenIntervalHoldsStampsAtItsOpening) {
  InvalidationClock clock;
  clock.advance();
  const uint64_t opened_at = clock.now();
  auto op = std::make_unique<InvalidationClock::Interval>(clock);
  const uint64_t t1 = clock.advance();
  const uint64_t t2 = clock.advance();
  // Every time the operation takes is at or after any stamp a walk can take meanwhile.
  EXPECT_LE(clock.now(), t1);
  EXPECT_LE(clock.now(), opened_at);
  EXPECT_LT(t1, t2);
  op.reset();
  EXPECT_GT(clock.now(), t2);
}

TEST(InvalidationClock, OldestOpenIntervalWins) {
  InvalidationClock clock;
  auto first = std::make_unique<InvalidationClock::Interval>(clock);
  const uint64_t first_time = clock.advance();
  clock.advance();
  auto second = std::make_unique<InvalidationClock::Interval>(clock);
  const uint64_t second_time = clock.advance();
  second.reset();  // closes out of order: the first operation is still removing entries
  EXPECT_LE(clock.now(), first_time);
  first.reset();
  EXPECT_GT(clock.now(), second_time);
}

TEST(InvalidationClock, ManyOpenIntervals) {
  InvalidationClock clock;
  std::unique_ptr<InvalidationClock::Interval> ops[InvalidationClock::kMaxOpenIntervals];
  uint64_t first_time = 0;
  for (auto &op : ops) {
    op = std::make_unique<InvalidationClock::Interval>(clock);
    const uint64_t t = clock.advance();
    if (!first_time) first_time = t;
  }
  EXPECT_LE(clock.now(), first_time);
  for (auto &op : ops) op.reset();
  EXPECT_GT(clock.now(), first_time);
}

// The engine's order for a type 0x2 page-selective invalidation of a first-level table page:
// IOTLB (every nested entry of the domain), then the paging-structure caches (the nested-table
// translation of the page). A walk runs between the two.
class SplitOperation : public ::testing::TestWithParam<bool> {
 protected:
  static constexpr uint16_t kDid = 2;
  static constexpr uint32_t kPasid = 7;
  static constexpr uint64_t kTableGpa = 0x3000, kOldHpa = 0x4003000, kIova = 0x1000'0000;
  InvalidationClock clock;
  Iotlb tlb{clock};
  PagingStructureCaches psc{clock};

  // A walk of kIova through the first-level table at kTableGpa: its page is found through the
  // nested-table cache, and the translation is filled into the IOTLB under the walk's stamp.
  bool walk_and_fill() {
    const uint64_t stamp = clock.now();
    NestedTableEntry nt;
    if (!psc.lookup_nested_table(kDid, kTableGpa, &nt)) return false;  // would walk afresh
    IotlbEntry e;
    e.hpa_base = nt.hpa_page + 0x100000;  // stands for "read through the old page"
    e.page_shift = 12;
    e.perms = 3;
    e.flags = kIotlbNested;
    return tlb.fill(stamp, kDid, kPasid, kIova, e);
  }
};

TEST_P(SplitOperation, WalkBetweenTheCachesOfOneOperationLeavesNothingStale) {
  const bool interval = GetParam();
  ASSERT_TRUE(psc.fill_nested_table(clock.now(), kDid, kTableGpa, {kOldHpa, 7}));
  ASSERT_TRUE(walk_and_fill());
  {
    // The host has unmapped kTableGpa; the invalidation announcing it runs now.
    std::unique_ptr<InvalidationClock::Interval> op;
    if (interval) op = std::make_unique<InvalidationClock::Interval>(clock);
    tlb.invalidate_gpa_range(kDid, kTableGpa, 1);
    walk_and_fill();  // a translator on another CPU, between the two caches
    psc.invalidate_gpa_range(kDid, kTableGpa, 1, /*leaf_hint=*/false);
  }
  // VT-d: once the invalidation completed, no translation through the old page may be used.
  IotlbEntry e;
  const bool stale = tlb.lookup(kDid, kPasid, kIova, &e);
  if (interval)
    EXPECT_FALSE(stale) << "a walk stamped inside the operation survived it";
  else
    EXPECT_TRUE(stale) << "without the interval this interleaving is expected to leave the "
                          "stale entry; if not, the test no longer replays the race";
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutInterval, SplitOperation, ::testing::Bool(),
                         [](const auto &info) {
                           return info.param ? std::string("Interval") : std::string("Bare");
                         });

}  // namespace
}  // namespace nestor::caches
