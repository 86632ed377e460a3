// Nested (first level over second level) walker: every first-level table pointer is a GPA.
#include <gtest/gtest.h>

#include "flat_memory.h"
#include "nestor/walkers/builder.h"
#include "nestor/walkers/nested.h"

namespace nestor {
namespace {

using test::FlatMemory;
using test::FlatSpace;
using Guest = test::GuestSpace<FlatMemory, FlatSpace>;

constexpr uint64_t kMemSize = 8ull << 20;
// Host pages for all tables come from [0x1000, 4M); guest table GPAs from [6M, 7M), whose
// identical HPAs hold a decoy table tree: a walker that used a GPA as an HPA would land there.
constexpr uint64_t kHostEnd = 4ull << 20;
constexpr uint64_t kGuestTables = 6ull << 20, kGuestTablesEnd = 7ull << 20;
constexpr uint64_t kDecoyOut = 0x0000'00DE'C000'0000ull;
constexpr uint64_t kOut = 0x0000'0055'0000'0000ull;
constexpr uint64_t kUserRW = build::fl_leaf_bits(true, true, true);
constexpr uint8_t kRW = kAccessRead | kAccessWrite;
constexpr uint8_t kRWX = kRW | kAccessExec;

struct NestedParam {
  int fl_levels, sl_levels;
};

class NestedTest : public ::testing::TestWithParam<NestedParam> {
 protected:
  NestedTest()
      : mem(0, kMemSize),
        host(mem, 0x1000, kHostEnd),
        slb(host, host.alloc_table(), GetParam().sl_levels),
        guest(mem, host, slb, kGuestTables, kGuestTablesEnd),
        flb(guest, guest.alloc_table(), GetParam().fl_levels) {
    for (uint64_t a = kGuestTables; a < kGuestTablesEnd; a += 8)
      mem.poke(a, kDecoyOut | kUserRW);  // every decoy entry: present, user, RW, -> decoy
    flc.root = flb.root();
    flc.levels = uint8_t(GetParam().fl_levels);
    flc.sre = flc.ere = true;
    flc.host_width = 52;
    slc.root = slb.root();
    slc.levels = uint8_t(GetParam().sl_levels);
  }
  nested::Result walk(uint64_t iova, uint8_t access, bool priv = false) {
    return nested::walk(mem, flc, slc, iova, access, priv);
  }
  // Second-level leaf entry (host address) of a guest table page.
  uint64_t sl_entry_of(uint64_t gpa) { return slb.entry_address(gpa & ~0xFFFull, 1); }
  uint64_t fl_entry_hpa(uint64_t iova, int level) {
    return guest.hpa_of(flb.entry_address(iova, level));
  }

  FlatMemory mem;
  FlatSpace host;
  build::SecondLevelBuilder<FlatSpace> slb;
  Guest guest;
  build::FirstLevelBuilder<Guest> flb;
  fl::Config flc;
  sl::Config slc;
};

INSTANTIATE_TEST_SUITE_P(Levels, NestedTest,
                         ::testing::Values(NestedParam{4, 4}, NestedParam{4, 3}, NestedParam{5, 4},
                                           NestedParam{5, 5}, NestedParam{4, 5}),
                         [](const auto &i) {
                           return "fl" + std::to_string(i.param.fl_levels) + "_sl" +
                                  std::to_string(i.param.sl_levels);
                         });

TEST_P(NestedTest, TablePointersAreGuestPhysical) {
  const uint64_t iova = 0x0000'0012'3456'7000ull, gpa = 0x0000'0000'1234'5000ull;
  ASSERT_EQ(flb.map(iova, gpa, 12, kUserRW), build::Status::kOk);
  ASSERT_EQ(slb.map(gpa, kOut, 12, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  for (const auto &[g, h] : guest.gpa_to_hpa) ASSERT_NE(g, h);
  const auto r = walk(iova | 0xABC, kAccessRead);
  ASSERT_TRUE(r.ok) << std::hex << int(r.fault.error) << " at " << r.fault.address;
  EXPECT_EQ(r.t.out, kOut | 0xABC);
  EXPECT_EQ(r.gpa, gpa | 0xABC);
  EXPECT_EQ(r.t.page_shift, 12);
  EXPECT_EQ(r.t.perms, kRWX);
  // Every FL table costs an SL walk plus its own entry read, then the final GPA's SL walk.
  const int fl = GetParam().fl_levels, sl = GetParam().sl_levels;
  EXPECT_EQ(r.refs, fl * (sl + 1) + sl);
  // The first-level A bits landed in the host pages behind the GPAs.
  for (int l = fl; l >= 1; --l) EXPECT_TRUE(mem.peek(fl_entry_hpa(iova, l)) & fl::kAccessed);
  // The decoy was never touched.
  EXPECT_EQ(mem.peek(kGuestTables), kDecoyOut | kUserRW);
}

TEST_P(NestedTest, FirstLevelRootNotMappedInSecondLevel) {
  flc.root = 0x0000'0000'7777'7000ull;  // no SL mapping
  const auto r = walk(0x1000, kAccessRead);
  EXPECT_EQ(r.fault.stage, FaultStage::kNestedTable);
  EXPECT_EQ(r.fault.error, WalkError::kNotPresent);
  EXPECT_EQ(r.fault.address, flc.root);
  // For nested-table faults the level is the second-level one that faulted: the GPA's
  // level-3 (1G) slot is empty in every SL configuration used here.
  EXPECT_EQ(r.fault.level, 3);
}

TEST_P(NestedTest, SecondLevelReadDeniedOnTables) {
  const uint64_t iova = 0x4000'0000, gpa = 0x20'0000;
  ASSERT_EQ(flb.map(iova, gpa, 12, kUserRW), build::Status::kOk);
  ASSERT_EQ(slb.map(gpa, kOut, 12, build::sl_leaf_bits(kRW)), build::Status::kOk);
  const int top = GetParam().fl_levels;
  for (int level = top; level >= 1; --level) {
    const uint64_t table_gpa =
        level == top ? flb.root() : mem.peek(fl_entry_hpa(iova, level + 1)) & fl::kAddrMask52;
    const uint64_t se = sl_entry_of(table_gpa), old = mem.peek(se);
    mem.poke(se, old & ~sl::kRead);  // write-only: still present, not readable
    const auto r = walk(iova, kAccessRead);
    EXPECT_EQ(r.fault.error,
              level == top ? WalkError::kRootTableReadDenied : WalkError::kTableReadDenied)
        << level;
    EXPECT_EQ(r.fault.stage, FaultStage::kNestedTable);
    EXPECT_EQ(r.fault.address, table_gpa);
    EXPECT_EQ(r.fault.level, 1);  // the SL leaf denied the read
    mem.poke(se, old);
  }
  EXPECT_TRUE(walk(iova, kAccessRead).ok);
}

TEST_P(NestedTest, AccessedUpdateNeedsSecondLevelWrite) {
  const uint64_t iova = 0x4000'0000, gpa = 0x20'0000;
  ASSERT_EQ(flb.map(iova, gpa, 12, kUserRW), build::Status::kOk);
  ASSERT_EQ(slb.map(gpa, kOut, 12, build::sl_leaf_bits(kRW)), build::Status::kOk);
  const uint64_t leaf_table_gpa = mem.peek(fl_entry_hpa(iova, 2)) & fl::kAddrMask52;
  const uint64_t se = sl_entry_of(leaf_table_gpa);
  mem.poke(se, mem.peek(se) & ~sl::kWrite);  // the FL leaf table is read-only in SL
  auto r = walk(iova, kAccessRead);
  EXPECT_EQ(r.fault.error, WalkError::kTableWriteDenied);
  EXPECT_EQ(r.fault.stage, FaultStage::kNestedTable);
  EXPECT_EQ(r.fault.address, leaf_table_gpa);
  EXPECT_EQ(r.fault.level, 1);
  EXPECT_FALSE(mem.peek(fl_entry_hpa(iova, 1)) & fl::kAccessed);
  // Once A is already set, reads need no update and succeed; a first write (D) still faults.
  mem.poke(fl_entry_hpa(iova, 1), mem.peek(fl_entry_hpa(iova, 1)) | fl::kAccessed);
  r = walk(iova, kAccessRead);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(walk(iova, kAccessWrite).fault.error, WalkError::kTableWriteDenied);
}

TEST_P(NestedTest, SecondLevelAccessedDirtyOnTablePagesWhenEnabled) {
  slc.ad_enabled = true;
  const uint64_t iova = 0x4000'0000, gpa = 0x20'0000;
  ASSERT_EQ(flb.map(iova, gpa, 12, kUserRW), build::Status::kOk);
  ASSERT_EQ(slb.map(gpa, kOut, 12, build::sl_leaf_bits(kRW)), build::Status::kOk);
  ASSERT_TRUE(walk(iova, kAccessRead).ok);
  // The root table page was written (A update) through the second level: SL A and D set.
  const uint64_t se = mem.peek(sl_entry_of(flb.root()));
  EXPECT_TRUE(se & sl::kAccessed);
  EXPECT_TRUE(se & sl::kDirty);
  // The data page was only read.
  const uint64_t de = mem.peek(slb.entry_address(gpa, 1));
  EXPECT_TRUE(de & sl::kAccessed);
  EXPECT_FALSE(de & sl::kDirty);
}

TEST_P(NestedTest, OutputGpaBeyondSecondLevelWidth) {
  const unsigned w = sl::width_for_levels(GetParam().sl_levels);
  if (w >= 52) GTEST_SKIP() << "FL output cannot exceed a 57-bit SL in 52 address bits";
  const uint64_t iova = 0x1000, gpa = 1ull << w;
  ASSERT_EQ(flb.map(iova, gpa, 12, kUserRW), build::Status::kOk);
  const auto r = walk(iova | 0x10, kAccessRead);
  EXPECT_EQ(r.fault.error, WalkError::kOutputBeyondWidth);
  EXPECT_EQ(r.fault.address, iova | 0x10);
}

TEST_P(NestedTest, TablePointerBeyondSecondLevelWidth) {
  const unsigned w = sl::width_for_levels(GetParam().sl_levels);
  if (w >= 52) GTEST_SKIP();
  const uint64_t iova = 0x1000;
  ASSERT_EQ(flb.map(iova, 0x20'0000, 12, kUserRW), build::Status::kOk);
  const uint64_t e = fl_entry_hpa(iova, 2);
  const uint64_t bad = 1ull << w;
  mem.poke(e, (mem.peek(e) & ~fl::kAddrMask52) | bad);
  const auto r = walk(iova, kAccessRead);
  EXPECT_EQ(r.fault.error, WalkError::kOutputBeyondWidth);
  EXPECT_EQ(r.fault.stage, FaultStage::kNestedTable);
  EXPECT_EQ(r.fault.address, bad);
}

TEST_P(NestedTest, FinalGpaFaultIsSecondLevelWithGpa) {
  const uint64_t iova = 0x0000'0000'0030'0000ull, gpa = 0x0000'0000'0abc'd000ull;
  ASSERT_EQ(flb.map(iova, gpa, 12, kUserRW), build::Status::kOk);
  auto r = walk(iova | 0x42, kAccessRead);
  EXPECT_EQ(r.fault.error, WalkError::kNotPresent);
  EXPECT_EQ(r.fault.stage, FaultStage::kSecondLevel);
  EXPECT_EQ(r.fault.address, gpa | 0x42);
  ASSERT_EQ(slb.map(gpa, kOut, 12, build::sl_leaf_bits(kAccessWrite)), build::Status::kOk);
  r = walk(iova, kAccessRead);
  EXPECT_EQ(r.fault.error, WalkError::kReadDenied);
  EXPECT_EQ(r.fault.stage, FaultStage::kSecondLevel);
  EXPECT_EQ(r.fault.address, gpa);
}

TEST_P(NestedTest, PermissionsIntersect) {
  const uint64_t gpa_ro = 0x10'0000, gpa_rw = 0x10'1000;
  ASSERT_EQ(slb.map(gpa_ro, kOut, 12, build::sl_leaf_bits(kAccessRead)), build::Status::kOk);
  ASSERT_EQ(slb.map(gpa_rw, kOut + 0x1000, 12, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  // FL RW over SL R: write denied by the second level.
  ASSERT_EQ(flb.map(0x1000, gpa_ro, 12, kUserRW), build::Status::kOk);
  auto r = walk(0x1000, kAccessRead);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.perms, kAccessRead);
  r = walk(0x1000, kAccessWrite);
  EXPECT_EQ(r.fault.error, WalkError::kWriteDenied);
  EXPECT_EQ(r.fault.stage, FaultStage::kSecondLevel);
  // FL read-only over SL RWX: write denied by the first level; X from both.
  ASSERT_EQ(flb.map(0x2000, gpa_rw, 12, build::fl_leaf_bits(false, true, true)),
            build::Status::kOk);
  r = walk(0x2000, kAccessRead);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.perms, kAccessRead | kAccessExec);
  r = walk(0x2000, kAccessWrite);
  EXPECT_EQ(r.fault.error, WalkError::kWriteDenied);
  EXPECT_EQ(r.fault.stage, FaultStage::kFirstLevel);
  // Execute over an SL page without X.
  EXPECT_EQ(walk(0x1000, kAccessExec).fault.error, WalkError::kExecuteDenied);
  EXPECT_EQ(walk(0x1000, kAccessExec).fault.stage, FaultStage::kSecondLevel);
}

TEST_P(NestedTest, PageSizeIsTheSmallerStage) {
  struct Case {
    unsigned fl_shift, sl_shift;
    uint64_t iova, gpa_base, off;
    unsigned want;
  } cases[] = {
      {21, 12, 0x0000'0000'0040'0000ull, 0x0000'0000'4000'0000ull, 0x1'2345, 12},
      {12, 30, 0x0000'0000'0000'5000ull, 0x0000'0004'4123'4000ull, 0x678, 12},
      {30, 21, 0x0000'0001'4000'0000ull, 0x0000'0008'0000'0000ull, 0x1234'5678, 21},
      {21, 21, 0x0000'0000'0060'0000ull, 0x0000'0000'0080'0000ull, 0x1F'FFFF, 21},
  };
  uint64_t out = kOut;
  for (const auto &c : cases) {
    ASSERT_EQ(flb.map(c.iova, c.gpa_base, c.fl_shift, kUserRW), build::Status::kOk);
    const uint64_t gpa = c.gpa_base + c.off;
    const uint64_t sl_base = gpa & page_mask(c.sl_shift);
    ASSERT_EQ(slb.map(sl_base, out, c.sl_shift, build::sl_leaf_bits(kRWX)), build::Status::kOk);
    const auto r = walk(c.iova + c.off, kAccessRead);
    ASSERT_TRUE(r.ok) << c.fl_shift << "/" << c.sl_shift << " " << std::hex << int(r.fault.error);
    EXPECT_EQ(r.t.page_shift, c.want);
    EXPECT_EQ(r.t.out, out + (gpa - sl_base));
    EXPECT_EQ(r.gpa, gpa);
    out += 1ull << 30;
  }
}

}  // namespace
}  // namespace nestor
