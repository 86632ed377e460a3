// Context and PASID caches: every invalidation scope, precision, fill refusal.
#include "nestor/caches/structure_caches.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace nestor::caches {
namespace {

struct Ctx {
  uint64_t lo, hi;
};
struct Pasid {
  uint64_t w[4];
};

class ContextCacheTest : public ::testing::Test {
 protected:
  InvalidationClock clock;
  ContextCache<Ctx> cc{clock};
  bool hit(uint16_t sid) {
    Ctx c;
    return cc.lookup(sid, &c);
  }
};

TEST_F(ContextCacheTest, FillLookup) {
  ASSERT_TRUE(cc.fill(clock.now(), 0x0108, Ctx{1, 2}));
  Ctx c{};
  ASSERT_TRUE(cc.lookup(0x0108, &c));
  EXPECT_EQ(c.lo, 1u);
  EXPECT_EQ(c.hi, 2u);
  EXPECT_FALSE(hit(0x0109));
}

TEST_F(ContextCacheTest, GlobalAndDevice) {
  for (uint16_t sid = 0x100; sid < 0x110; ++sid)
    ASSERT_TRUE(cc.fill(clock.now(), sid, Ctx{sid, 0}));
  cc.invalidate_device(0x103);
  for (uint16_t sid = 0x100; sid < 0x110; ++sid) EXPECT_EQ(hit(sid), sid != 0x103) << sid;
  cc.invalidate_global();
  for (uint16_t sid = 0x100; sid < 0x110; ++sid) EXPECT_FALSE(hit(sid));
  const CacheStats s = cc.stats();
  EXPECT_EQ(s.inv_device, 1u);
  EXPECT_EQ(s.inv_global, 1u);
}

TEST_F(ContextCacheTest, FunctionMaskSelectsFunctions) {
  for (uint16_t sid = 0x100; sid < 0x110; ++sid) ASSERT_TRUE(cc.fill(clock.now(), sid, Ctx{}));
  cc.invalidate_device(0x10A, 2);  // FM=2: ignore SID bits 2:1 -> 0x108, 0x10A, 0x10C, 0x10E
  for (uint16_t sid = 0x100; sid < 0x110; ++sid) {
    const bool gone = sid == 0x108 || sid == 0x10A || sid == 0x10C || sid == 0x10E;
    EXPECT_EQ(hit(sid), !gone) << std::hex << sid;
  }
  cc.invalidate_device(0x101, 3);  // FM=3: functions 0..7 of device 0x100
  for (uint16_t sid = 0x100; sid < 0x108; ++sid) EXPECT_FALSE(hit(sid));
  EXPECT_TRUE(hit(0x109));
}

TEST_F(ContextCacheTest, DomainScopeTaggedAndUntagged) {
  ASSERT_TRUE(cc.fill(clock.now(), 1, Ctx{}, 5));
  ASSERT_TRUE(cc.fill(clock.now(), 2, Ctx{}, 6));
  ASSERT_TRUE(cc.fill(clock.now(), 3, Ctx{}));  // untagged
  cc.invalidate_domain(5);
  EXPECT_FALSE(hit(1));
  EXPECT_TRUE(hit(2));
  EXPECT_FALSE(hit(3));  // untagged entries go with any domain invalidation
}

TEST_F(ContextCacheTest, FillRefusedAfterInvalidation) {
  uint64_t stamp = clock.now();
  cc.invalidate_device(7);
  EXPECT_FALSE(cc.fill(stamp, 7, Ctx{}));
  EXPECT_FALSE(hit(7));
  EXPECT_TRUE(cc.fill(stamp, 8, Ctx{}));  // other device unaffected
  stamp = clock.now();
  cc.invalidate_global();
  EXPECT_FALSE(cc.fill(stamp, 9, Ctx{}));
  stamp = clock.now();
  cc.invalidate_domain(4);
  EXPECT_FALSE(cc.fill(stamp, 9, Ctx{}, 4));
  EXPECT_TRUE(cc.fill(stamp, 9, Ctx{}, 3));
  EXPECT_EQ(cc.stats().refused_fills, 3u);
}

class PasidCacheTest : public ::testing::Test {
 protected:
  InvalidationClock clock;
  PasidCache<Pasid> pc{clock};
  bool hit(uint16_t sid, uint32_t pasid) {
    Pasid p;
    return pc.lookup(sid, pasid, &p);
  }
};

TEST_F(PasidCacheTest, FillLookupReturnsDid) {
  ASSERT_TRUE(pc.fill(clock.now(), 0x10, 42, 7, Pasid{{1, 2, 3, 4}}));
  Pasid p{};
  uint16_t did = 0;
  ASSERT_TRUE(pc.lookup(0x10, 42, &p, &did));
  EXPECT_EQ(p.w[3], 4u);
  EXPECT_EQ(did, 7);
  EXPECT_FALSE(hit(0x10, 43));
  EXPECT_FALSE(hit(0x11, 42));
}

TEST_F(PasidCacheTest, EveryScopeIsPrecise) {
  auto fill_all = [&] {
    pc.invalidate_global();
    ASSERT_TRUE(pc.fill(clock.now(), 1, 100, 10, Pasid{}));
    ASSERT_TRUE(pc.fill(clock.now(), 1, 101, 10, Pasid{}));
    ASSERT_TRUE(pc.fill(clock.now(), 2, 100, 11, Pasid{}));
    ASSERT_TRUE(pc.fill(clock.now(), 3, 100, 10, Pasid{}));
  };
  fill_all();
  pc.invalidate_pasid(10, 100);
  EXPECT_FALSE(hit(1, 100));
  EXPECT_TRUE(hit(1, 101));
  EXPECT_TRUE(hit(2, 100));   // same PASID, other DID
  EXPECT_FALSE(hit(3, 100));  // same (DID, PASID) from another device
  fill_all();
  pc.invalidate_domain(10);
  EXPECT_FALSE(hit(1, 100));
  EXPECT_FALSE(hit(1, 101));
  EXPECT_TRUE(hit(2, 100));
  EXPECT_FALSE(hit(3, 100));
  fill_all();
  pc.invalidate_device(1);
  EXPECT_FALSE(hit(1, 100));
  EXPECT_FALSE(hit(1, 101));
  EXPECT_TRUE(hit(2, 100));
  EXPECT_TRUE(hit(3, 100));
  const CacheStats s = pc.stats();
  EXPECT_EQ(s.inv_pasid, 1u);
  EXPECT_EQ(s.inv_domain, 1u);
  EXPECT_EQ(s.inv_device, 1u);
  EXPECT_EQ(s.inv_global, 3u);
}

TEST_F(PasidCacheTest, FillRefusedAfterInvalidation) {
  const uint64_t stamp = clock.now();
  pc.invalidate_pasid(10, 100);
  EXPECT_FALSE(pc.fill(stamp, 1, 100, 10, Pasid{}));
  EXPECT_FALSE(hit(1, 100));
  EXPECT_TRUE(pc.fill(stamp, 1, 100, 11, Pasid{}));  // tagged with another DID
  EXPECT_TRUE(pc.fill(clock.now(), 1, 100, 10, Pasid{}));
}

}  // namespace
}  // namespace nestor::caches
