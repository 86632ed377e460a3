// Second-level (VT-d second-stage, 3/4/5-level) walker.
#include <gtest/gtest.h>

#include <vector>

#include "flat_memory.h"
#include "nestor/walkers/builder.h"
#include "nestor/walkers/second_level.h"

namespace nestor {
namespace {

using test::FlatMemory;
using test::FlatSpace;

constexpr uint64_t kMemSize = 4ull << 20;
constexpr uint64_t kOut = 0x0000'0033'4000'0000ull;  // 1G aligned, beyond the flat memory
constexpr uint8_t kRWX = kAccessRead | kAccessWrite | kAccessExec;

class SecondLevelTest : public ::testing::TestWithParam<int> {
 protected:
  SecondLevelTest()
      : mem(0, kMemSize), space(mem, 0x1000, kMemSize), b(space, space.alloc_table(), GetParam()) {
    cfg.root = b.root();
    cfg.levels = uint8_t(GetParam());
  }
  int top() const { return GetParam(); }
  unsigned width() const { return sl::width_for_levels(top()); }
  sl::Result walk(uint64_t gpa, uint8_t access) { return sl::walk(mem, cfg, gpa, access); }
  uint64_t entry(uint64_t gpa, int level) {
    const uint64_t a = b.entry_address(gpa, level);
    EXPECT_NE(a, 0u);
    return a;
  }
  void set_bits(uint64_t gpa, int level, uint64_t set, uint64_t clear = 0) {
    const uint64_t a = entry(gpa, level);
    mem.poke(a, (mem.peek(a) | set) & ~clear);
  }
  std::vector<uint64_t> path_values(uint64_t gpa, int leaf) {
    std::vector<uint64_t> v;
    for (int l = top(); l >= leaf; --l) v.push_back(mem.peek(entry(gpa, l)));
    return v;
  }
  FlatMemory mem;
  FlatSpace space;
  build::SecondLevelBuilder<FlatSpace> b;
  sl::Config cfg;
};

INSTANTIATE_TEST_SUITE_P(Levels, SecondLevelTest, ::testing::Values(3, 4, 5),
                         [](const auto &i) { return std::to_string(i.param) + "level"; });

TEST(SecondLevelWidths, LevelsAndWidths) {
  EXPECT_EQ(sl::width_for_levels(3), 39u);
  EXPECT_EQ(sl::width_for_levels(4), 48u);
  EXPECT_EQ(sl::width_for_levels(5), 57u);
  EXPECT_EQ(sl::levels_for_width(39), 3);
  EXPECT_EQ(sl::levels_for_width(48), 4);
  EXPECT_EQ(sl::levels_for_width(57), 5);
}

TEST_P(SecondLevelTest, PageSizesTranslateWithOffsets) {
  const uint64_t top_gpa = (1ull << width()) - (1ull << 30);  // the last 1G of the space
  struct Case {
    uint64_t gpa;
    unsigned shift;
    uint64_t off;
  } cases[] = {{0x1000, 12, 0xFFF}, {0x60'0000, 21, 0x1F'FFF8}, {top_gpa, 30, 0x3FFF'FFFF}};
  uint64_t out = kOut;
  for (const auto &c : cases) {
    ASSERT_EQ(b.map(c.gpa, out, c.shift, build::sl_leaf_bits(kRWX)), build::Status::kOk);
    const auto r = walk(c.gpa + c.off, kAccessRead);
    ASSERT_TRUE(r.ok) << std::hex << int(r.fault.error);
    EXPECT_EQ(r.t.out, out + c.off);
    EXPECT_EQ(r.t.page_shift, c.shift);
    EXPECT_EQ(r.t.perms, kRWX);
    EXPECT_EQ(r.t.level, (c.shift - 12) / 9 + 1);
    out += 1ull << 30;
  }
}

TEST_P(SecondLevelTest, InputBeyondWidthFaults) {
  for (uint64_t gpa : {1ull << width(), (1ull << width()) | 0x1000, ~0ull}) {
    const auto r = walk(gpa, kAccessRead);
    EXPECT_EQ(r.fault.error, WalkError::kInputBeyondWidth) << std::hex << gpa;
    EXPECT_EQ(r.fault.address, gpa);
    EXPECT_EQ(r.fault.stage, FaultStage::kSecondLevel);
  }
  EXPECT_EQ(mem.reads, 0u);
  EXPECT_EQ(walk((1ull << width()) - 1, kAccessRead).fault.error, WalkError::kNotPresent);
}

TEST_P(SecondLevelTest, InvalidRootPointerFaults) {
  cfg.root = b.root() | 0x800;
  EXPECT_EQ(walk(0, kAccessRead).fault.error, WalkError::kTablePointerInvalid);
  cfg.root = 1ull << 50;  // beyond the 48-bit host width
  EXPECT_EQ(walk(0, kAccessRead).fault.error, WalkError::kTablePointerInvalid);
  EXPECT_EQ(mem.reads, 0u);
}

TEST_P(SecondLevelTest, NotPresentAtEveryLevel) {
  const uint64_t gpa = 0x0000'0000'4060'3000ull;
  ASSERT_EQ(b.map(gpa, kOut, 12, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  for (int level = top(); level >= 1; --level) {
    const uint64_t a = entry(gpa, level), old = mem.peek(a);
    mem.poke(a, old & ~(sl::kRead | sl::kWrite));  // X alone does not make it present
    const auto r = walk(gpa, kAccessRead);
    EXPECT_EQ(r.fault.error, WalkError::kNotPresent);
    EXPECT_EQ(r.fault.level, level);
    EXPECT_EQ(r.fault.address, gpa);
    mem.poke(a, old);
  }
  EXPECT_TRUE(walk(gpa, kAccessRead).ok);
}

TEST_P(SecondLevelTest, LeafPermissions) {
  const uint8_t perms_cases[] = {kAccessRead, kAccessWrite, kAccessRead | kAccessWrite,
                                 kAccessRead | kAccessExec, kRWX};
  uint64_t gpa = 0x10000;
  for (uint8_t p : perms_cases) {
    ASSERT_EQ(b.map(gpa, kOut, 12, build::sl_leaf_bits(p)), build::Status::kOk);
    for (uint8_t acc : {kAccessRead, kAccessWrite, kAccessExec}) {
      const auto r = walk(gpa, acc);
      if (p & acc) {
        ASSERT_TRUE(r.ok);
        EXPECT_EQ(r.t.perms, p);
      } else {
        const WalkError want = acc == kAccessRead    ? WalkError::kReadDenied
                               : acc == kAccessWrite ? WalkError::kWriteDenied
                                                     : WalkError::kExecuteDenied;
        EXPECT_EQ(r.fault.error, want) << int(p) << "/" << int(acc);
        EXPECT_EQ(r.fault.level, 1);
      }
    }
    gpa += 0x1000;
  }
}

TEST_P(SecondLevelTest, NonLeafPermissionsIntersect) {
  const uint64_t gpa = 0x0000'0000'8000'0000ull;
  for (unsigned shift : {12u, 21u, 30u}) {
    const int leaf = int(shift - 12) / 9 + 1;
    for (int level = top(); level > leaf; --level) {
      for (uint64_t drop : {sl::kRead, sl::kWrite, sl::kExec}) {
        FlatMemory m(0, kMemSize);
        FlatSpace s(m, 0x1000, kMemSize);
        build::SecondLevelBuilder<FlatSpace> bb(s, s.alloc_table(), top());
        ASSERT_EQ(bb.map(gpa, kOut, shift, build::sl_leaf_bits(kRWX)), build::Status::kOk);
        const uint64_t a = bb.entry_address(gpa, level);
        m.poke(a, m.peek(a) & ~drop);
        sl::Config c = cfg;
        c.root = bb.root();
        const uint8_t acc = uint8_t(drop);  // the access the dropped bit would grant
        const auto r = sl::walk(m, c, gpa, acc);
        EXPECT_FALSE(r.ok) << shift << "/" << level << "/" << drop;
        const auto other =
            sl::walk(m, c, gpa, uint8_t(kRWX & ~drop & (kAccessRead | kAccessWrite)));
        ASSERT_TRUE(other.ok);
        EXPECT_EQ(other.t.perms, uint8_t(kRWX & ~drop));
      }
    }
  }
}

TEST_P(SecondLevelTest, ReservedBitElevenAndAddressBitsAtEveryLevel) {
  const uint64_t gpa = 0x0000'0000'C000'5000ull;
  ASSERT_EQ(b.map(gpa, kOut, 12, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  cfg.host_width = 46;
  ASSERT_TRUE(walk(gpa, kAccessRead).ok);
  for (int level = top(); level >= 1; --level) {
    for (uint64_t bit : {11, 46, 51}) {
      const uint64_t a = entry(gpa, level), old = mem.peek(a);
      mem.poke(a, old | (1ull << bit));
      const auto r = walk(gpa, kAccessRead);
      EXPECT_EQ(r.fault.error, WalkError::kReserved) << level << "/" << bit;
      EXPECT_EQ(r.fault.level, level);
      mem.poke(a, old);
    }
  }
  // Bits 61:52 and 63 are ignored.
  set_bits(gpa, 1, (0x3FFull << 52) | (1ull << 63));
  EXPECT_TRUE(walk(gpa, kAccessRead).ok);
}

// PASID-entry SLEE (VT-d 9.6; VT-d 2.x extended-context SLEE: with 0, instruction fetch is
// allowed from any GPA with read permission): X is honoured only when SLEE=1.
TEST_P(SecondLevelTest, ExecuteFollowsReadWithoutSlee) {
  ASSERT_EQ(b.map(0x5000, kOut, 12, build::sl_leaf_bits(kAccessRead)), build::Status::kOk);
  ASSERT_EQ(b.map(0x6000, kOut, 12, build::sl_leaf_bits(kAccessWrite | kAccessExec)),
            build::Status::kOk);
  EXPECT_EQ(walk(0x5000, kAccessExec).fault.error, WalkError::kExecuteDenied);
  cfg.execute_enable = false;
  const auto r = walk(0x5000, kAccessExec);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.perms, kAccessRead | kAccessExec);
  EXPECT_EQ(walk(0x6000, kAccessExec).fault.error, WalkError::kExecuteDenied);  // X, no R
}

TEST_P(SecondLevelTest, PageSizeAtLevelFourOrFiveIsReserved) {
  if (top() < 4) GTEST_SKIP();
  ASSERT_EQ(b.map(0x1000, kOut, 12, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  for (int level = 4; level <= top(); ++level) {
    set_bits(0x1000, level, sl::kPageSize);
    const auto r = walk(0x1000, kAccessRead);
    EXPECT_EQ(r.fault.error, WalkError::kReserved);
    EXPECT_EQ(r.fault.level, level);
    set_bits(0x1000, level, 0, sl::kPageSize);
  }
}

TEST_P(SecondLevelTest, LargePageLowBitsAreReserved) {
  const uint64_t g2m = 0x20'0000, g1g = 0x4000'0000;
  ASSERT_EQ(b.map(g2m, kOut, 21, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  ASSERT_EQ(b.map(g1g, kOut, 30, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  for (int bit = 12; bit <= 20; ++bit) {
    set_bits(g2m, 2, 1ull << bit);
    EXPECT_EQ(walk(g2m, kAccessRead).fault.error, WalkError::kReserved) << bit;
    set_bits(g2m, 2, 0, 1ull << bit);
  }
  for (int bit = 12; bit <= 29; ++bit) {
    set_bits(g1g, 3, 1ull << bit);
    EXPECT_EQ(walk(g1g, kAccessRead).fault.error, WalkError::kReserved) << bit;
    set_bits(g1g, 3, 0, 1ull << bit);
  }
  EXPECT_TRUE(walk(g2m, kAccessRead).ok);
  EXPECT_TRUE(walk(g1g, kAccessRead).ok);
}

TEST_P(SecondLevelTest, LargePagesWhenUnsupportedAreReserved) {
  ASSERT_EQ(b.map(0x20'0000, kOut, 21, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  ASSERT_EQ(b.map(0x4000'0000, kOut, 30, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  cfg.large_2m = false;
  EXPECT_EQ(walk(0x20'0000, kAccessRead).fault.error, WalkError::kReserved);
  EXPECT_TRUE(walk(0x4000'0000, kAccessRead).ok);
  cfg.large_2m = true;
  cfg.large_1g = false;
  const auto r = walk(0x4000'0000, kAccessRead);
  EXPECT_EQ(r.fault.error, WalkError::kReserved);
  EXPECT_EQ(r.fault.level, 3);
  EXPECT_TRUE(walk(0x20'0000, kAccessRead).ok);
}

TEST_P(SecondLevelTest, AccessedAndDirtyWhenEnabled) {
  for (unsigned shift : {12u, 21u, 30u}) {
    const uint64_t gpa = uint64_t(shift) << 31;
    const int leaf = int(shift - 12) / 9 + 1;
    ASSERT_EQ(b.map(gpa, kOut, shift, build::sl_leaf_bits(kRWX)), build::Status::kOk);
    cfg.ad_enabled = false;
    const auto before = path_values(gpa, leaf);
    ASSERT_TRUE(walk(gpa, kAccessWrite).ok);
    EXPECT_EQ(path_values(gpa, leaf), before) << "no A/D without SLADE";
    cfg.ad_enabled = true;
    auto r = walk(gpa, kAccessRead);
    ASSERT_TRUE(r.ok);
    EXPECT_FALSE(r.dirty);
    for (uint64_t e : path_values(gpa, leaf)) {
      EXPECT_TRUE(e & sl::kAccessed);
      EXPECT_FALSE(e & sl::kDirty);
    }
    r = walk(gpa, kAccessWrite);
    ASSERT_TRUE(r.ok);
    EXPECT_TRUE(r.dirty);
    auto v = path_values(gpa, leaf);
    for (size_t i = 0; i < v.size(); ++i) {
      EXPECT_TRUE(v[i] & sl::kAccessed);
      EXPECT_EQ(bool(v[i] & sl::kDirty), i + 1 == v.size());
    }
  }
}

TEST_P(SecondLevelTest, DeniedWriteDoesNotSetDirty) {
  cfg.ad_enabled = true;
  ASSERT_EQ(b.map(0x1000, kOut, 12, build::sl_leaf_bits(kAccessRead)), build::Status::kOk);
  EXPECT_EQ(walk(0x1000, kAccessWrite).fault.error, WalkError::kWriteDenied);
  EXPECT_FALSE(mem.peek(entry(0x1000, 1)) & sl::kDirty);
}

TEST_P(SecondLevelTest, MemoryFailuresAreAccessFaults) {
  ASSERT_EQ(b.map(0x1000, kOut, 12, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  for (int level = top(); level >= 1; --level) {
    mem.fail_reads.insert(entry(0x1000, level));
    const auto r = walk(0x1000, kAccessRead);
    EXPECT_EQ(r.fault.error, WalkError::kEntryAccess);
    EXPECT_EQ(r.fault.level, level);
    mem.fail_reads.clear();
  }
  cfg.ad_enabled = true;
  mem.fail_writes.insert(entry(0x1000, 1));
  EXPECT_EQ(walk(0x1000, kAccessRead).fault.error, WalkError::kEntryAccess);
  mem.fail_writes.clear();
  // A table pointer outside memory.
  set_bits(0x1000, 2, 0, sl::kAddrMask52);
  set_bits(0x1000, 2, kMemSize * 2);
  const auto r = walk(0x1000, kAccessRead);
  EXPECT_EQ(r.fault.error, WalkError::kEntryAccess);
  EXPECT_EQ(r.fault.level, 1);
}

TEST_P(SecondLevelTest, DirtyUpdateRetriesOnInterference) {
  cfg.ad_enabled = true;
  ASSERT_EQ(b.map(0x1000, kOut, 12, build::sl_leaf_bits(kRWX)), build::Status::kOk);
  const uint64_t leaf = entry(0x1000, 1);
  mem.interfere_once[leaf] = (kOut + 0x5000) | build::sl_leaf_bits(kRWX);
  const auto r = walk(0x1000, kAccessWrite);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, kOut + 0x5000);
  EXPECT_TRUE(mem.peek(leaf) & sl::kDirty);
}

TEST_P(SecondLevelTest, PathTraceAndResume) {
  ASSERT_EQ(b.map(0x1000, kOut, 12, build::sl_leaf_bits(kAccessRead | kAccessWrite)),
            build::Status::kOk);
  sl::Path path;
  const auto r = sl::walk(mem, cfg, 0x1234, kAccessRead, {}, &path);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.refs, top());
  sl::Start st{1, path.next_table[2], path.perms[2]};
  const auto r2 = sl::walk(mem, cfg, 0x1234, kAccessRead, st);
  ASSERT_TRUE(r2.ok);
  EXPECT_EQ(r2.t.out, kOut + 0x234);
  EXPECT_EQ(r2.refs, 1);
}

}  // namespace
}  // namespace nestor
