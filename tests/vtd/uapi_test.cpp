// uAPI-style entry points: validity table, ranges, and the array's partial progress.
#include <gtest/gtest.h>

#include <cerrno>

#include <vector>

#include "nestor/vtd/uapi.h"

namespace nestor::invq {
namespace {

const UserTarget kTarget{.did = 12, .source_id = 0x0308};

UserCacheInvalidate request(uint32_t cache, UserGranularity granularity) {
  UserCacheInvalidate r;
  r.cache = cache;
  r.granularity = granularity;
  r.pasid = 5;
  r.addr = 0x200000;
  r.granule_size = uint64_t{1} << 21;
  r.nb_granules = 2;
  return r;
}

TEST(UapiCacheInvalidate, ValidityTable) {
  struct Row {
    uint32_t cache;
    UserGranularity granularity;
    bool valid;
  };
  const Row rows[] = {
      {kUserCacheIotlb, UserGranularity::kDomain, true},
      {kUserCacheIotlb, UserGranularity::kPasid, true},
      {kUserCacheIotlb, UserGranularity::kAddr, true},
      {kUserCacheDevIotlb, UserGranularity::kDomain, false},
      {kUserCacheDevIotlb, UserGranularity::kPasid, true},
      {kUserCacheDevIotlb, UserGranularity::kAddr, true},
      {kUserCachePasid, UserGranularity::kDomain, true},
      {kUserCachePasid, UserGranularity::kPasid, true},
      {kUserCachePasid, UserGranularity::kAddr, false},
      {kUserCacheIotlb | kUserCachePasid, UserGranularity::kAddr, false},
      {kUserCacheIotlb | kUserCacheDevIotlb, UserGranularity::kAddr, true},
  };
  for (const Row &row : rows) {
    const UapiOps result = cache_invalidate_user(request(row.cache, row.granularity), kTarget);
    EXPECT_EQ(result.ok(), row.valid) << row.cache << " " << int(row.granularity);
    if (!row.valid) {
      EXPECT_EQ(result.error, UapiError::kInvalidCombination);
    }
  }
}

TEST(UapiCacheInvalidate, BuildsOpsPerCacheType) {
  const UapiOps result = cache_invalidate_user(
      request(kUserCacheIotlb | kUserCacheDevIotlb, UserGranularity::kAddr), kTarget);
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result.ops.size(), 2u);
  EXPECT_EQ(result.ops[0].caches, kCacheIotlb | kCachePaging);
  EXPECT_EQ(result.ops[0].scope, Scope::kRange);
  EXPECT_EQ(result.ops[0].did, 12);
  EXPECT_EQ(result.ops[0].pasid, 5u);
  EXPECT_EQ(result.ops[0].addr, 0x200000u);
  EXPECT_EQ(result.ops[0].npages, 1024u);
  EXPECT_EQ(result.ops[1].caches, kCacheDevTlb);
  EXPECT_EQ(result.ops[1].source_id, 0x0308);

  const UapiOps pasid_cache =
      cache_invalidate_user(request(kUserCachePasid, UserGranularity::kDomain), kTarget);
  ASSERT_TRUE(pasid_cache.ok());
  EXPECT_EQ(pasid_cache.ops[0].scope, Scope::kDomain);
  EXPECT_EQ(pasid_cache.ops[0].caches, kCachePasid);
}

TEST(UapiCacheInvalidate, RejectsBadInput) {
  auto error = [](UserCacheInvalidate r) { return cache_invalidate_user(r, kTarget).error; };
  EXPECT_EQ(error(request(0, UserGranularity::kDomain)), UapiError::kInvalidCacheType);
  EXPECT_EQ(error(request(8, UserGranularity::kDomain)), UapiError::kInvalidCacheType);
  EXPECT_EQ(error(request(kUserCacheIotlb, static_cast<UserGranularity>(3))),
            UapiError::kInvalidGranularity);
  UserCacheInvalidate r = request(kUserCacheIotlb, UserGranularity::kPasid);
  r.pasid = 1u << 20;
  EXPECT_EQ(error(r), UapiError::kInvalidPasid);
  r = request(kUserCacheIotlb, UserGranularity::kAddr);
  r.granule_size = 12288;  // Linux iommu_inv_addr_info: a page/block size, so a power of two
  EXPECT_EQ(error(r), UapiError::kInvalidGranuleSize);
  r.granule_size = 2048;  // below the 4K VT-d page
  EXPECT_EQ(error(r), UapiError::kInvalidGranuleSize);
  r = request(kUserCacheIotlb, UserGranularity::kAddr);
  r.addr = 0x201000;
  EXPECT_EQ(error(r), UapiError::kMisalignedAddress);
  r = request(kUserCacheIotlb, UserGranularity::kAddr);
  r.nb_granules = 0;
  EXPECT_EQ(error(r), UapiError::kZeroLength);
  r = request(kUserCacheIotlb, UserGranularity::kAddr);
  r.addr = 0xFFFFFFFFC0000000ull;
  r.granule_size = uint64_t{1} << 30;
  r.nb_granules = 2;
  EXPECT_EQ(error(r), UapiError::kOverflow);
  r.nb_granules = 1;
  EXPECT_EQ(error(r), UapiError::kNone);
}

// Linux iommu_inv_addr_info: granule_size is the mapping's page/block size (any power of two
// from 4K) and IOMMU_INV_ADDR_FLAGS_PASID clear means the range has no PASID.
TEST(UapiCacheInvalidate, AddrFormGranulesAndNoPasid) {
  UserCacheInvalidate r = request(kUserCacheIotlb | kUserCacheDevIotlb, UserGranularity::kAddr);
  r.addr = 0x10000;
  r.granule_size = 64u << 10;
  r.nb_granules = 3;
  UapiOps ops = cache_invalidate_user(r, kTarget);
  ASSERT_TRUE(ops.ok());
  ASSERT_EQ(ops.ops.size(), 2u);
  EXPECT_EQ(ops.ops[0].scope, Scope::kRange);
  EXPECT_EQ(ops.ops[0].npages, 48u);
  r.has_pasid = false;
  r.pasid = 0xFFFFFFFFu;  // not looked at without a PASID
  ops = cache_invalidate_user(r, kTarget);
  ASSERT_TRUE(ops.ok());
  ASSERT_EQ(ops.ops.size(), 2u);
  // Requests without PASID use the context's RID_PASID, which the DID alone cannot name: the
  // IOTLB side must reach every PASID of the domain (never less than the range).
  EXPECT_EQ(ops.ops[0].scope, Scope::kDomain);
  EXPECT_EQ(ops.ops[0].did, kTarget.did);
  EXPECT_EQ(ops.ops[1].scope, Scope::kRange);
  EXPECT_EQ(ops.ops[1].pasid, kNoPasid);
  EXPECT_EQ(ops.ops[1].source_id, kTarget.source_id);
}

// Linux intel_nested_cache_invalidate_user: unknown flags are -EOPNOTSUPP; the issue extends
// that to a non-zero reserved field; every other entry error is -EINVAL.
TEST(UapiArray, ErrnoFollowsLinux) {
  EXPECT_EQ(to_errno(UapiError::kUnknownFlags), -EOPNOTSUPP);
  EXPECT_EQ(to_errno(UapiError::kReservedField), -EOPNOTSUPP);
  EXPECT_EQ(to_errno(UapiError::kMisalignedAddress), -EINVAL);
  EXPECT_EQ(to_errno(UapiError::kOverflow), -EINVAL);
  EXPECT_EQ(to_errno(UapiError::kNone), 0);
}

TEST(UapiArray, HandlesEntriesUntilFirstError) {
  const std::vector<IotlbInvalidateEntry> entries = {
      {.addr = 0x1000, .npages = 4, .flags = kIotlbInvalidateFlagLeaf},
      {.addr = 0, .npages = kIotlbInvalidateAllPages},
      {.addr = 0x1800, .npages = 1},  // unaligned
      {.addr = 0x2000, .npages = 1},
  };
  const UapiArrayResult result = invalidate_iotlb_array(entries, 3, 9);
  EXPECT_EQ(result.handled, 2u);
  EXPECT_EQ(result.error, UapiError::kMisalignedAddress);
  ASSERT_EQ(result.ops.size(), 2u);
  EXPECT_EQ(result.ops[0].scope, Scope::kRange);
  EXPECT_TRUE(result.ops[0].leaf);
  EXPECT_EQ(result.ops[0].npages, 4u);
  EXPECT_EQ(result.ops[0].did, 3);
  EXPECT_EQ(result.ops[0].pasid, 9u);
  EXPECT_EQ(result.ops[1].scope, Scope::kPasid);
}

TEST(UapiArray, EntryErrors) {
  auto first_error = [](IotlbInvalidateEntry e) {
    const std::vector<IotlbInvalidateEntry> one = {e};
    const UapiArrayResult r = invalidate_iotlb_array(one, 1, 1);
    EXPECT_EQ(r.handled, r.ok() ? 1u : 0u);
    return r.error;
  };
  EXPECT_EQ(first_error({.addr = 0x1000, .npages = 0}), UapiError::kZeroLength);
  EXPECT_EQ(first_error({.addr = 0x1000, .npages = 1, .flags = 2}), UapiError::kUnknownFlags);
  EXPECT_EQ(first_error({.addr = 0x1000, .npages = 1, .flags = 0, .reserved = 1}),
            UapiError::kReservedField);
  EXPECT_EQ(first_error({.addr = 0x1000, .npages = kIotlbInvalidateAllPages}),
            UapiError::kOverflow);
  EXPECT_EQ(first_error({.addr = 0xFFFFFFFFFFFFF000ull, .npages = 2}), UapiError::kOverflow);
  EXPECT_EQ(first_error({.addr = 0xFFFFFFFFFFFFF000ull, .npages = 1}), UapiError::kNone);
  EXPECT_EQ(invalidate_iotlb_array({}, 1, 1u << 20).error, UapiError::kInvalidPasid);
}

}  // namespace
}  // namespace nestor::invq
