#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <set>
#include <vector>

#include "nestor/pasid_allocator.h"

namespace nestor {
namespace {

// Sets or clears `bit` in the bitmap under test and in the plain reference alike.
void change(HierarchicalBitmap &bm, std::vector<bool> &ref, uint32_t bit, bool set) {
  if (set)
    bm.set(bit);
  else
    bm.clear(bit);
  ref[bit] = set;
}

// What find_next() must answer, by a linear scan of a plain bitmap.
uint32_t reference_next(const std::vector<bool> &ref, uint32_t from) {
  for (uint32_t j = from; j < ref.size(); ++j)
    if (ref[j]) return j;
  return HierarchicalBitmap::kNone;
}

TEST(HierarchicalBitmap, FindNextMatchesReferenceUnderRandomOps) {
  // 2^14 + 5 bits: three summary levels and a partial last word.
  const uint32_t n = (1u << 14) + 5;
  HierarchicalBitmap bm(n);
  std::vector<bool> ref(n, false);
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const uint32_t bit = rng() % n;
    change(bm, ref, bit, rng() % 3 != 0);
    const uint32_t from = rng() % n;
    ASSERT_EQ(bm.find_next(from), reference_next(ref, from)) << "op " << i << " from " << from;
    ASSERT_EQ(bm.test(bit), bool(ref[bit]));
  }
}

TEST(HierarchicalBitmap, SetAllMatchesSettingEachBit) {
  for (uint32_t n : {1u, 63u, 64u, 65u, 4097u, (1u << 12) * 64 + 1}) {
    HierarchicalBitmap all(n), each(n);
    all.set_all();
    for (uint32_t i = 0; i < n; ++i) each.set(i);
    for (uint32_t i = 0; i < n; i += 7) {
      all.clear(i);
      each.clear(i);
    }
    for (uint32_t from = 0; from < n; from += 5)
      ASSERT_EQ(all.find_next(from), each.find_next(from));
    ASSERT_EQ(all.find_next(n - 1), each.find_next(n - 1));
  }
}

TEST(HierarchicalBitmap, EmptyFullAndEdges) {
  HierarchicalBitmap bm(1u << 20);
  EXPECT_EQ(bm.find_next(0), HierarchicalBitmap::kNone);
  bm.set((1u << 20) - 1);
  EXPECT_EQ(bm.find_next(0), (1u << 20) - 1);
  EXPECT_EQ(bm.find_next(1u << 20), HierarchicalBitmap::kNone);
  bm.set(64);
  EXPECT_EQ(bm.find_next(1), 64u);
  EXPECT_EQ(bm.find_next(65), (1u << 20) - 1);
  bm.clear((1u << 20) - 1);
  EXPECT_EQ(bm.find_next(65), HierarchicalBitmap::kNone);
}

// Level 0 is allocated by chunk on first change, over a uniform fill (HierarchicalBitmap):
// changes on either side of a chunk boundary, a set_all() that drops changed chunks, and a
// partial last word must all read like the plain bitmap, with clear and set fills alike.
TEST(HierarchicalBitmap, LazyChunksMatchReferenceAcrossSetAll) {
  const uint32_t n = 3 * 4096 + 70;  // four chunks, the last one partial, a partial last word
  HierarchicalBitmap bm(n);
  std::vector<bool> ref(n, false);
  std::mt19937 rng(11);
  auto check = [&](int step) {
    for (uint32_t from = 0; from < n; from += 97)
      ASSERT_EQ(bm.find_next(from), reference_next(ref, from))
          << "step " << step << " from " << from;
    for (uint32_t i = 0; i < n; i += 61) ASSERT_EQ(bm.test(i), bool(ref[i])) << i;
  };
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 300; ++i) {
      // Around chunk boundaries (multiples of 4096) and the end, where mistakes would show.
      const uint32_t edge = 4096 * (rng() % 4);
      const uint32_t bit = std::min<uint32_t>(n - 1, edge + rng() % 130 - (edge ? 65 : 0));
      change(bm, ref, bit, rng() % 2 != 0);
    }
    check(round);
    bm.set_all();
    ref.assign(n, true);
    check(round);
    // Clearing every bit of a chunk through the fill must empty it for find_next.
    for (uint32_t i = 4096; i < 8192; ++i) {
      bm.clear(i);
      ref[i] = false;
    }
    check(round);
    EXPECT_EQ(bm.find_next(4096), 8192u);
  }
}

TEST(Allocator, FullSpaceWithFewPasidsHeld) {
  // 20 bits (the space the lazy map exists for): allocation at both ends, specific and any,
  // and owner_of() of PASIDs never allocated.
  PasidAllocator a(20);
  uint32_t o = 0, p = 0;
  ASSERT_EQ(a.create_owner(0, &o), 0);
  ASSERT_EQ(a.alloc(o, (1u << 20) - 1, PasidAllocator::kNoGuestPasid, &p), 0);
  EXPECT_EQ(a.owner_of((1u << 20) - 1), o);
  EXPECT_EQ(a.owner_of((1u << 20) - 2), 0u);
  EXPECT_EQ(a.owner_of(1u << 20), 0u);
  ASSERT_EQ(a.alloc(o, PasidAllocator::kAnyPasid, PasidAllocator::kNoGuestPasid, &p), 0);
  EXPECT_EQ(p, 1u);
  EXPECT_EQ(a.free(o, 5), -EALREADY);
  EXPECT_EQ(a.free(o, 1), 0);
  EXPECT_EQ(a.owner_of(1), 0u);
  EXPECT_EQ(a.release_all(o), 1);
  EXPECT_EQ(a.allocated(), 0u);
}

class AllocatorTest : public ::testing::Test {
 protected:
  PasidAllocator a{20};
  uint32_t owner(uint32_t quota = 0) {
    uint32_t o = 0;
    EXPECT_EQ(a.create_owner(quota, &o), 0);
    return o;
  }
};

TEST_F(AllocatorTest, AnyAllocationsAreDistinctAndNeverZero) {
  const uint32_t o = owner();
  std::set<uint32_t> seen;
  for (int i = 0; i < 100000; ++i) {
    uint32_t p;
    ASSERT_EQ(a.alloc(o, PasidAllocator::kAnyPasid, PasidAllocator::kNoGuestPasid, &p), 0);
    ASSERT_NE(p, 0u);
    ASSERT_LT(p, 1u << 20);
    ASSERT_TRUE(seen.insert(p).second) << p;
    ASSERT_EQ(a.owner_of(p), o);
  }
  EXPECT_EQ(a.held(o), 100000u);
  EXPECT_EQ(a.allocated(), 100000u);
}

TEST(Allocator, ExhaustionWithSmallPasidSpace) {
  PasidAllocator a(4);  // PASIDs 1..15
  uint32_t o;
  ASSERT_EQ(a.create_owner(0, &o), 0);
  EXPECT_EQ(a.capacity(), 15u);
  std::set<uint32_t> got;
  for (int i = 0; i < 15; ++i) {
    uint32_t p;
    ASSERT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &p), 0);
    got.insert(p);
  }
  EXPECT_EQ(got.size(), 15u);
  EXPECT_EQ(*got.begin(), 1u);
  EXPECT_EQ(*got.rbegin(), 15u);
  uint32_t p = 99;
  EXPECT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &p), -ENOSPC);
  EXPECT_EQ(p, 99u);  // refusal writes nothing
  EXPECT_EQ(a.allocated(), 15u);
  ASSERT_EQ(a.free(o, 9), 0);
  ASSERT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &p), 0);
  EXPECT_EQ(p, 9u);
}

TEST_F(AllocatorTest, NextFitDoesNotReuseAFreedPasidImmediately) {
  const uint32_t o = owner();
  uint32_t p1, p2, p3;
  ASSERT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &p1), 0);
  ASSERT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &p2), 0);
  ASSERT_EQ(a.free(o, p1), 0);
  ASSERT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &p3), 0);
  EXPECT_NE(p3, p1);
  EXPECT_NE(p3, p2);
}

TEST_F(AllocatorTest, Quota) {
  const uint32_t o = owner(3), other = owner(1);
  uint32_t p[3], q;
  for (auto &x : p) ASSERT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &x), 0);
  EXPECT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &q), -EDQUOT);
  EXPECT_EQ(a.alloc(o, 777, PasidAllocator::kNoGuestPasid, &q), -EDQUOT);
  EXPECT_EQ(a.owner_of(777), 0u);
  EXPECT_EQ(a.held(o), 3u);
  // Another owner's quota is its own.
  EXPECT_EQ(a.alloc(other, 0, PasidAllocator::kNoGuestPasid, &q), 0);
  EXPECT_EQ(a.alloc(other, 0, PasidAllocator::kNoGuestPasid, &q), -EDQUOT);
  ASSERT_EQ(a.free(o, p[1]), 0);
  EXPECT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &q), 0);
}

TEST_F(AllocatorTest, SpecificAllocation) {
  const uint32_t o = owner(), other = owner();
  uint32_t p;
  ASSERT_EQ(a.alloc(o, 42, PasidAllocator::kNoGuestPasid, &p), 0);
  EXPECT_EQ(p, 42u);
  EXPECT_EQ(a.alloc(other, 42, PasidAllocator::kNoGuestPasid, &p), -EBUSY);
  EXPECT_EQ(a.alloc(o, 42, PasidAllocator::kNoGuestPasid, &p), -EBUSY);
  EXPECT_EQ(a.owner_of(42), o);
  EXPECT_EQ(a.held(other), 0u);
  EXPECT_EQ(a.alloc(o, 1u << 20, PasidAllocator::kNoGuestPasid, &p), -EINVAL);
  EXPECT_EQ(a.alloc(o, 43, PasidAllocator::kNoGuestPasid, nullptr), -EINVAL);
  EXPECT_EQ(a.alloc(999, 43, PasidAllocator::kNoGuestPasid, &p), -ENOENT);
  EXPECT_EQ(a.allocated(), 1u);
}

TEST_F(AllocatorTest, FreeErrors) {
  const uint32_t o = owner(), other = owner();
  uint32_t p;
  ASSERT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &p), 0);
  EXPECT_EQ(a.free(other, p), -EPERM);
  EXPECT_EQ(a.owner_of(p), o);
  EXPECT_EQ(a.free(12345, p), -ENOENT);
  EXPECT_EQ(a.free(o, 0), -EINVAL);
  EXPECT_EQ(a.free(o, 1u << 20), -EINVAL);
  EXPECT_EQ(a.free(o, p), 0);
  EXPECT_EQ(a.free(o, p), -EALREADY);
  EXPECT_EQ(a.free(o, 5000), -EALREADY);
  EXPECT_EQ(a.allocated(), 0u);
}

TEST_F(AllocatorTest, ReleaseAllOnlyTouchesThatOwner) {
  const uint32_t o = owner(), other = owner();
  std::vector<uint32_t> mine, theirs;
  for (int i = 0; i < 10; ++i) {
    uint32_t p;
    ASSERT_EQ(a.alloc(o, 0, 100 + uint32_t(i), &p), 0);
    mine.push_back(p);
  }
  for (int i = 0; i < 5; ++i) {
    uint32_t p;
    ASSERT_EQ(a.alloc(other, 0, PasidAllocator::kNoGuestPasid, &p), 0);
    theirs.push_back(p);
  }
  std::vector<uint32_t> freed;
  EXPECT_EQ(a.release_all(o, &freed), 10);
  EXPECT_EQ(std::set<uint32_t>(freed.begin(), freed.end()),
            std::set<uint32_t>(mine.begin(), mine.end()));
  for (uint32_t p : mine) EXPECT_EQ(a.owner_of(p), 0u);
  for (uint32_t p : theirs) EXPECT_EQ(a.owner_of(p), other);
  EXPECT_EQ(a.guest_to_host(o, 100, nullptr), -ENOENT);
  EXPECT_EQ(a.allocated(), 5u);
  EXPECT_EQ(a.release_all(o), 0);
  EXPECT_EQ(a.release_all(777), -ENOENT);
}

TEST_F(AllocatorTest, OwnerLifecycle) {
  const uint32_t o = owner();
  uint32_t p;
  ASSERT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &p), 0);
  EXPECT_EQ(a.destroy_owner(o), -EBUSY);
  EXPECT_TRUE(a.has_owner(o));
  ASSERT_EQ(a.free(o, p), 0);
  EXPECT_EQ(a.destroy_owner(o), 0);
  EXPECT_FALSE(a.has_owner(o));
  EXPECT_EQ(a.destroy_owner(o), -ENOENT);
  EXPECT_EQ(a.alloc(o, 0, PasidAllocator::kNoGuestPasid, &p), -ENOENT);
  EXPECT_NE(owner(), o);  // ids are not reused
}

TEST_F(AllocatorTest, GuestPasidMapping) {
  const uint32_t o = owner(), other = owner();
  uint32_t p, q, h;
  ASSERT_EQ(a.alloc(o, 0, 7, &p), 0);
  ASSERT_EQ(a.guest_to_host(o, 7, &h), 0);
  EXPECT_EQ(h, p);
  EXPECT_EQ(a.guest_to_host(other, 7, &h), -ENOENT);
  // The same guest PASID in another guest's namespace is a different PASID.
  ASSERT_EQ(a.alloc(other, 0, 7, &q), 0);
  EXPECT_NE(q, p);
  EXPECT_EQ(a.alloc(o, 0, 7, &q), -EBUSY);
  EXPECT_EQ(a.held(o), 1u);
  EXPECT_EQ(a.alloc(o, 0, 1u << 20, &q), -EINVAL);
  ASSERT_EQ(a.free(o, p), 0);
  EXPECT_EQ(a.guest_to_host(o, 7, &h), -ENOENT);
  EXPECT_EQ(a.alloc(o, 0, 7, &q), 0);  // reusable once freed
}

TEST(Allocator, BitsAreClamped) {
  PasidAllocator big(32), tiny(0);
  EXPECT_EQ(big.pasid_bits(), 20);
  EXPECT_EQ(tiny.pasid_bits(), 1);
  EXPECT_EQ(tiny.capacity(), 1u);
}

}  // namespace
}  // namespace nestor
