// Host second-level domains and device attach/detach.
#include <gtest/gtest.h>

#include <map>
#include <utility>
#include <vector>

#include "bind_fixture.h"

namespace nestor::bindtest {
namespace {

constexpr uint64_t k4K = 4096, k2M = 2ull << 20, k1G = 1ull << 30;

DomainConfig plain(uint8_t levels = 4) {
  DomainConfig dc;
  dc.levels = levels;
  return dc;
}

std::map<uint64_t, uint64_t> page_sizes(BindLayer &l, uint16_t did) {
  std::map<uint64_t, uint64_t> count;  // page size -> how many
  for (auto &r : l.domain_hpa_ranges(did)) ++count[r.second];
  return count;
}

TEST(Domain, DidsAreAllocatedFromOneAndExhaust) {
  BindConfig bc;
  bc.max_domain_id = 3;
  World w({}, bc, 1);
  uint16_t d[3], x = 0;
  for (auto &id : d) ASSERT_EQ(w.layer().create_domain(plain(), &id), 0);
  EXPECT_EQ(d[0], 1);
  EXPECT_EQ(d[1], 2);
  EXPECT_EQ(d[2], 3);
  EXPECT_EQ(w.layer().create_domain(plain(), &x), -ENOSPC);
  EXPECT_EQ(x, 0);
  ASSERT_EQ(w.layer().destroy_domain(2), 0);
  EXPECT_EQ(w.layer().destroy_domain(2), -ENOENT);
  ASSERT_EQ(w.layer().create_domain(plain(), &x), 0);
  EXPECT_EQ(x, 2);
}

TEST(Domain, CreateRefusals) {
  EngineConfig ec;
  ec.sagaw = 0b0100;  // 48-bit second level only
  World w(ec, {}, 1);
  uint16_t did = 0;
  EXPECT_EQ(w.layer().create_domain(plain(2), &did), -EINVAL);
  EXPECT_EQ(w.layer().create_domain(plain(6), &did), -EINVAL);
  EXPECT_EQ(w.layer().create_domain(plain(5), &did), -EOPNOTSUPP);
  EXPECT_EQ(w.layer().create_domain(plain(3), &did), -EOPNOTSUPP);
  DomainConfig dc = plain();
  dc.owner = 1234;
  EXPECT_EQ(w.layer().create_domain(dc, &did), -ENOENT);
  EXPECT_EQ(did, 0);
  EXPECT_EQ(w.layer().create_domain(plain(), nullptr), -EINVAL);
  ASSERT_EQ(w.layer().create_domain(plain(4), &did), 0);
  EXPECT_EQ(did, 1);  // the refusals consumed no DID
}

TEST(Domain, MapChoosesTheLargestPagesThatFit) {
  World w({}, {}, 4);
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(), &did), 0);
  // [1G - 8K, 2G + 2M + 8K): 2 x 4K, then 1G, then 2M, then 2 x 4K.
  const uint64_t gpa = k1G - 2 * k4K, size = k1G + k2M + 4 * k4K;
  const uint64_t hpa = kVmHpaBase + k1G - 2 * k4K;
  ASSERT_EQ(w.layer().map(did, gpa, hpa, size, kAccessRead | kAccessWrite), 0);
  auto sizes = page_sizes(w.layer(), did);
  EXPECT_EQ(sizes[k4K], 4u);
  EXPECT_EQ(sizes[k2M], 1u);
  EXPECT_EQ(sizes[k1G], 1u);
  for (uint64_t off :
       {uint64_t{0}, k4K, 2 * k4K + 123, k1G / 2, k1G + 2 * k4K + k2M - 8, size - 1}) {
    uint64_t out;
    ASSERT_TRUE(w.layer().domain_resolve(did, gpa + off, &out)) << off;
    EXPECT_EQ(out, hpa + off);
  }
  uint64_t out;
  EXPECT_FALSE(w.layer().domain_resolve(did, gpa - 1, &out));
  EXPECT_FALSE(w.layer().domain_resolve(did, gpa + size, &out));
}

TEST(Domain, MapHonoursDisabledLargePages) {
  EngineConfig ec;
  ec.second_level_1g = false;
  World w(ec, {}, 4);
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(), &did), 0);
  ASSERT_EQ(w.layer().map(did, 0, kVmHpaBase, k1G, kAccessRead), 0);
  auto sizes = page_sizes(w.layer(), did);
  EXPECT_EQ(sizes[k2M], 512u);
  EXPECT_EQ(sizes.count(k1G), 0u);
}

TEST(Domain, MapRefusalsChangeNothing) {
  World w({}, {}, 1);
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(3), &did), 0);
  ASSERT_EQ(w.layer().map(did, k2M, kVmHpaBase, k2M, kAccessRead), 0);
  const uint64_t pages = w.layer().table_pages_in_use();
  EXPECT_EQ(w.layer().map(did, 1, kVmHpaBase, k4K, kAccessRead), -EINVAL);
  EXPECT_EQ(w.layer().map(did, 0, kVmHpaBase + 1, k4K, kAccessRead), -EINVAL);
  EXPECT_EQ(w.layer().map(did, 0, kVmHpaBase, 0, kAccessRead), -EINVAL);
  EXPECT_EQ(w.layer().map(did, 0, kVmHpaBase, k4K, 0), -EINVAL);
  EXPECT_EQ(w.layer().map(did, 0, kVmHpaBase, k4K, kAccessExec), -EINVAL);  // R or W needed
  EXPECT_EQ(w.layer().map(did, 0, kVmHpaBase, k4K, 8), -EINVAL);
  EXPECT_EQ(w.layer().map(did, 1ull << 39, kVmHpaBase, k4K, kAccessRead), -EINVAL);  // 3-level
  EXPECT_EQ(w.layer().map(did, 0, 1ull << 48, k4K, kAccessRead), -EINVAL);           // beyond HAW
  EXPECT_EQ(w.layer().map(did, ~uint64_t{0} & ~(k4K - 1), 0, 2 * k4K, kAccessRead), -EINVAL);
  EXPECT_EQ(w.layer().map(did, k2M + k4K, kVmHpaBase, k4K, kAccessRead), -EEXIST);
  EXPECT_EQ(w.layer().map(did, k2M - k4K, kVmHpaBase, 2 * k4K, kAccessRead), -EEXIST);
  EXPECT_EQ(w.layer().map(99, 0, kVmHpaBase, k4K, kAccessRead), -ENOENT);
  EXPECT_EQ(w.layer().table_pages_in_use(), pages);
  uint64_t out;
  EXPECT_FALSE(w.layer().domain_resolve(did, k2M - k4K, &out));
  EXPECT_EQ(page_sizes(w.layer(), did)[k2M], 1u);
}

TEST(Domain, MapOutOfTablePagesLeavesNothingMapped) {
  BindConfig bc;
  bc.table_size = 64 * k4K;  // 16 structure pages, 48 second-level table pages
  EngineConfig ec;
  ec.pasid_bits = 15;  // a one-page PASID directory: the structure share stays a quarter
  World w(ec, bc, 1);
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(4), &did), 0);              // root: 1 page
  ASSERT_EQ(w.layer().map(did, 0, kVmHpaBase, k4K, kAccessRead), 0);  // L3, L2, L1: 3 pages
  // 4K pages 1G apart each need their own L2 and L1 table: 21 more leave 2 pages free.
  for (uint64_t i = 1; i <= 21; ++i)
    ASSERT_EQ(w.layer().map(did, i * k1G, kVmHpaBase, k4K, kAccessRead), 0) << i;
  // Two 4K chunks in two fresh 1G regions: the first fits, the second does not, and the
  // refusal must take the first back out.
  const uint64_t gpa = 100 * k1G - k4K;
  EXPECT_EQ(w.layer().map(did, gpa, kVmHpaBase, 2 * k4K, kAccessRead), -ENOMEM);
  uint64_t out;
  EXPECT_FALSE(w.layer().domain_resolve(did, gpa, &out));
  EXPECT_FALSE(w.layer().domain_resolve(did, gpa + k4K, &out));
  EXPECT_EQ(w.layer().domain_hpa_ranges(did).size(), 22u);
  uint16_t did2 = 0;
  EXPECT_EQ(w.layer().create_domain(plain(4), &did2), -ENOMEM);
  EXPECT_EQ(did2, 0);
  EXPECT_TRUE(w.layer().domain_resolve(did, 0, &out));
  EXPECT_TRUE(w.layer().domain_resolve(did, 21 * k1G, &out));
}

TEST(Domain, UnmapRules) {
  World w({}, {}, 1);
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(), &did), 0);
  ASSERT_EQ(w.layer().map(did, 0, kVmHpaBase, k2M + k4K, kAccessRead | kAccessWrite), 0);
  EXPECT_EQ(w.layer().unmap(did, k4K, k4K), -EINVAL);  // would split the 2M page
  EXPECT_EQ(w.layer().unmap(did, 0, k4K), -EINVAL);    // the range ends inside the 2M page
  EXPECT_EQ(w.layer().unmap(did, 8 * k2M, k4K), -ENOENT);
  EXPECT_EQ(w.layer().unmap(did, 1, k4K), -EINVAL);
  EXPECT_EQ(w.layer().unmap(99, 0, k4K), -ENOENT);
  uint64_t out;
  EXPECT_TRUE(w.layer().domain_resolve(did, k4K, &out));
  ASSERT_EQ(w.layer().unmap(did, k2M, k4K), 0);
  EXPECT_FALSE(w.layer().domain_resolve(did, k2M, &out));
  EXPECT_TRUE(w.layer().domain_resolve(did, 0, &out));
  ASSERT_EQ(w.layer().unmap(did, 0, k2M), 0);
  EXPECT_FALSE(w.layer().domain_resolve(did, 0, &out));
}

// One map() call's 4K leaves can be unmapped one by one, from the middle of the call's range,
// and what is left still translates and is reported page by page.
TEST(Domain, UnmapPartOfOneMapCall) {
  World w({}, {}, 1);
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(), &did), 0);
  const uint64_t gpa = k4K, hpa = kVmHpaBase + k4K;  // unaligned for 2M: sixteen 4K leaves
  ASSERT_EQ(w.layer().map(did, gpa, hpa, 16 * k4K, kAccessRead | kAccessWrite), 0);
  ASSERT_EQ(w.layer().unmap(did, gpa + 4 * k4K, 2 * k4K), 0);
  EXPECT_EQ(w.layer().unmap(did, gpa + 5 * k4K, k4K), -ENOENT);
  uint64_t out;
  EXPECT_FALSE(w.layer().domain_resolve(did, gpa + 4 * k4K, &out));
  EXPECT_FALSE(w.layer().domain_resolve(did, gpa + 5 * k4K, &out));
  ASSERT_TRUE(w.layer().domain_resolve(did, gpa + 6 * k4K + 8, &out));
  EXPECT_EQ(out, hpa + 6 * k4K + 8);
  ASSERT_TRUE(w.layer().domain_resolve(did, gpa + 3 * k4K, &out));
  EXPECT_EQ(out, hpa + 3 * k4K);
  std::vector<std::pair<uint64_t, uint64_t>> want;
  for (uint64_t i = 0; i < 16; ++i)
    if (i != 4 && i != 5) want.emplace_back(hpa + i * k4K, k4K);
  EXPECT_EQ(w.layer().domain_hpa_ranges(did), want);
  // A range across the hole takes the leaves on both sides; the hole itself may be remapped,
  // but not over a leaf that is still there.
  ASSERT_EQ(w.layer().unmap(did, gpa + 3 * k4K, 4 * k4K), 0);
  EXPECT_FALSE(w.layer().domain_resolve(did, gpa + 3 * k4K, &out));
  EXPECT_FALSE(w.layer().domain_resolve(did, gpa + 6 * k4K, &out));
  EXPECT_EQ(w.layer().map(did, gpa + 2 * k4K, hpa, 2 * k4K, kAccessRead), -EEXIST);
  ASSERT_EQ(w.layer().map(did, gpa + 4 * k4K, kVmHpaBase, k4K, kAccessRead), 0);
  ASSERT_TRUE(w.layer().domain_resolve(did, gpa + 4 * k4K, &out));
  EXPECT_EQ(out, kVmHpaBase);
  EXPECT_EQ(w.layer().domain_hpa_ranges(did).size(), 16u - 4u + 1u);
  ASSERT_EQ(w.layer().unmap(did, 0, 32 * k4K), 0);
  EXPECT_TRUE(w.layer().domain_hpa_ranges(did).empty());
}

TEST(Domain, RemapAfterUnmapFillsLeftoverTables) {
  World w({}, {}, 1);
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(), &did), 0);
  ASSERT_EQ(w.layer().map(did, 0, kVmHpaBase, k4K, kAccessRead), 0);
  ASSERT_EQ(w.layer().unmap(did, 0, k4K), 0);
  // The empty 4K table still hangs under the first 2M slot; a 2M map must still succeed.
  ASSERT_EQ(w.layer().map(did, 0, kVmHpaBase + k2M, k2M, kAccessRead), 0);
  uint64_t out;
  ASSERT_TRUE(w.layer().domain_resolve(did, k2M - 8, &out));
  EXPECT_EQ(out, kVmHpaBase + 2 * k2M - 8);
}

TEST(Domain, DestroyFreesTablesAndRefusesWhileAttached) {
  World w({}, {}, 1);
  const uint64_t base = w.layer().table_pages_in_use();
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(), &did), 0);
  ASSERT_EQ(w.layer().map(did, 0, kVmHpaBase, 3 * k2M + 5 * k4K, kAccessRead), 0);
  ASSERT_GT(w.layer().table_pages_in_use(), base + 1);
  ASSERT_EQ(w.layer().attach_device(0x0100, did), 0);
  EXPECT_EQ(w.layer().destroy_domain(did), -EBUSY);
  ASSERT_EQ(w.layer().detach_device(0x0100), 0);
  ASSERT_EQ(w.layer().destroy_domain(did), 0);
  EXPECT_EQ(w.layer().table_pages_in_use(), base);
}

TEST(Device, AttachTranslatesThroughTheSecondLevel) {
  World w({}, {}, 1);
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(), &did), 0);
  ASSERT_EQ(w.layer().map(did, 0x10'0000, kVmHpaBase + 0x20'0000, k4K, kAccessRead), 0);
  Result r = w.translate(0x0108, false, 0, 0x10'0123);
  EXPECT_FALSE(r.ok);  // not attached yet
  ASSERT_EQ(w.layer().attach_device(0x0108, did), 0);
  r = w.translate(0x0108, false, 0, 0x10'0123);
  ASSERT_TRUE(r.ok) << int(r.fault.reason);
  EXPECT_EQ(r.t.out, kVmHpaBase + 0x20'0123);
  EXPECT_FALSE(w.translate(0x0108, false, 0, 0x10'0123, kAccessWrite).ok);
  // Requests with a PASID that nobody bound find no entry.
  EXPECT_EQ(w.translate(0x0108, true, 5, 0x10'0123).fault.reason,
            FaultReason::kPasidEntryNotPresent);
  EXPECT_EQ(w.layer().attach_device(0x0108, did), -EBUSY);
  EXPECT_EQ(w.layer().attach_device(0x0109, 77), -ENOENT);
  ASSERT_EQ(w.layer().detach_device(0x0108), 0);
  EXPECT_EQ(w.layer().detach_device(0x0108), -ENOENT);
  r = w.translate(0x0108, false, 0, 0x10'0123);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.fault.reason, FaultReason::kContextEntryNotPresent);
  // Re-attach to another domain: no trace of the first.
  uint16_t did2;
  ASSERT_EQ(w.layer().create_domain(plain(3), &did2), 0);
  ASSERT_EQ(w.layer().attach_device(0x0108, did2), 0);
  EXPECT_EQ(w.translate(0x0108, false, 0, 0x10'0123).fault.reason,
            FaultReason::kSecondLevelEntryNotPresent);
}

TEST(Device, HostUnmapIsGoneWhenUnmapReturns) {
  World w({}, {}, 1);
  uint16_t did;
  ASSERT_EQ(w.layer().create_domain(plain(), &did), 0);
  ASSERT_EQ(w.layer().map(did, 0, kVmHpaBase, k2M, kAccessRead), 0);
  ASSERT_EQ(w.layer().attach_device(0x0200, did), 0);
  ASSERT_TRUE(w.translate(0x0200, false, 0, 0x1000).ok);  // may now be cached
  ASSERT_EQ(w.layer().unmap(did, 0, k2M), 0);
  EXPECT_FALSE(w.translate(0x0200, false, 0, 0x1000).ok);
}

TEST(Domain, AdoptExistingSecondLevel) {
  World w({}, {}, 1);
  // The caller builds its own table in RAM it manages.
  PageAllocator mine(w.mem(), 3ull << 30, 1ull << 20);
  HostTableSpace space(w.mem(), mine);
  const uint64_t root = mine.alloc();
  build::SecondLevelBuilder<HostTableSpace> b(space, root, 4);
  ASSERT_EQ(b.map(0x4000, kVmHpaBase + 0x9000, 12, build::sl_leaf_bits(kAccessRead)),
            build::Status::kOk);
  uint16_t did;
  EXPECT_EQ(w.layer().adopt_domain(plain(), root + 8, &did), -EINVAL);
  EXPECT_EQ(w.layer().adopt_domain(plain(), 1ull << 48, &did), -EINVAL);
  ASSERT_EQ(w.layer().adopt_domain(plain(), root, &did), 0);
  EXPECT_EQ(w.layer().map(did, 0, kVmHpaBase, k4K, kAccessRead), -EPERM);
  EXPECT_EQ(w.layer().unmap(did, 0x4000, k4K), -EPERM);
  ASSERT_EQ(w.layer().attach_device(0x0300, did), 0);
  Result r = w.translate(0x0300, false, 0, 0x4010);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, kVmHpaBase + 0x9010);
  ASSERT_EQ(w.layer().detach_device(0x0300), 0);
  const uint64_t before = mine.pages_in_use();
  ASSERT_EQ(w.layer().destroy_domain(did), 0);
  EXPECT_EQ(mine.pages_in_use(), before);  // the caller's tables are the caller's
  uint64_t e;
  ASSERT_TRUE(w.mem().read64(root, &e));
  EXPECT_NE(e, 0u);
}

}  // namespace
}  // namespace nestor::bindtest
