// First-level (x86 IA-32e, 4/5-level) walker: permissions, page sizes, faults, A/D updates.
#include <gtest/gtest.h>

#include <vector>

#include "flat_memory.h"
#include "nestor/walkers/builder.h"
#include "nestor/walkers/first_level.h"

namespace nestor {
namespace {

using test::FlatMemory;
using test::FlatSpace;

constexpr uint64_t kMemSize = 4ull << 20;
constexpr uint64_t kOutBase =
    0x0000'0012'4000'0000ull;  // 1G aligned  // output addresses need no backing

class FirstLevelTest : public ::testing::TestWithParam<int> {
 protected:
  FirstLevelTest()
      : mem(0, kMemSize), space(mem, 0x1000, kMemSize), b(space, space.alloc_table(), GetParam()) {
    cfg.root = b.root();
    cfg.levels = uint8_t(GetParam());
    cfg.sre = cfg.ere = true;
  }
  int top() const { return GetParam(); }
  fl::Result walk(uint64_t iova, uint8_t access, bool priv) {
    return fl::walk(mem, cfg, iova, access, priv);
  }
  uint64_t entry(uint64_t va, int level) {
    const uint64_t a = b.entry_address(va, level);
    EXPECT_NE(a, 0u) << "no entry at level " << level;
    return a;
  }
  void set_bits(uint64_t va, int level, uint64_t set, uint64_t clear = 0) {
    const uint64_t a = entry(va, level);
    mem.poke(a, (mem.peek(a) | set) & ~clear);
  }
  std::vector<uint64_t> path_values(uint64_t va, int leaf_level) {
    std::vector<uint64_t> v;
    for (int l = top(); l >= leaf_level; --l) v.push_back(mem.peek(entry(va, l)));
    return v;
  }

  FlatMemory mem;
  FlatSpace space;
  build::FirstLevelBuilder<FlatSpace> b;
  fl::Config cfg;
};

INSTANTIATE_TEST_SUITE_P(Levels, FirstLevelTest, ::testing::Values(4, 5),
                         [](const auto &i) { return std::to_string(i.param) + "level"; });

constexpr uint64_t kUserRW = build::fl_leaf_bits(true, true, true);
constexpr uint64_t kSupRW = build::fl_leaf_bits(true, false, true);

TEST_P(FirstLevelTest, PageSizesTranslateWithOffsets) {
  struct Case {
    uint64_t va;
    unsigned shift;
    uint64_t off;
  } cases[] = {{0x0000'7654'3210'0000ull, 12, 0xABC},
               {0x0000'5555'5540'0000ull, 21, 0x1'2345},
               {0x0000'7FFF'C000'0000ull, 30, 0x3ABC'DEF0}};
  uint64_t out = kOutBase;
  for (const auto &c : cases) {
    ASSERT_EQ(b.map(c.va, out, c.shift, kUserRW), build::Status::kOk);
    const auto r = walk(c.va + c.off, kAccessRead, false);
    ASSERT_TRUE(r.ok) << std::hex << int(r.fault.error);
    EXPECT_EQ(r.t.out, out + c.off);
    EXPECT_EQ(r.t.page_shift, c.shift);
    EXPECT_EQ(r.t.level, (c.shift - 12) / 9 + 1);
    EXPECT_EQ(r.t.perms, kAccessRead | kAccessWrite | kAccessExec);
    out += 1ull << 30;
  }
}

TEST_P(FirstLevelTest, FiveLevelUsesBits56To48) {
  if (top() != 5) GTEST_SKIP();
  const uint64_t va = 0x00AB'CDEF'1234'5000ull;  // canonical in 57 bits, not in 48
  ASSERT_EQ(b.map(va, kOutBase, 12, kUserRW), build::Status::kOk);
  const auto r = walk(va | 0x123, kAccessRead, false);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, kOutBase | 0x123);
  // The same low 48 bits with a different level-5 index is not mapped.
  EXPECT_EQ(walk(va & ((1ull << 48) - 1), kAccessRead, false).fault.error, WalkError::kNotPresent);
}

TEST_P(FirstLevelTest, NonCanonicalAddressFaults) {
  const unsigned w = fl::input_width(top());
  const uint64_t bad[] = {1ull << (w - 1), (1ull << 63), ~0ull ^ (1ull << (w - 1)),
                          (1ull << w) | 0x1000};
  for (uint64_t iova : bad) {
    const auto r = walk(iova, kAccessRead, false);
    EXPECT_EQ(r.fault.error, WalkError::kNonCanonical) << std::hex << iova;
    EXPECT_EQ(r.fault.address, iova);
  }
  // Upper-half canonical addresses are walked (and are simply not mapped here).
  const uint64_t upper = ~0ull << (w - 1);
  EXPECT_EQ(walk(upper, kAccessRead, false).fault.error, WalkError::kNotPresent);
  EXPECT_EQ(mem.reads, 1u);
}

TEST_P(FirstLevelTest, NotPresentAtEveryLevelReportsTheLevel) {
  const uint64_t va = 0x0000'1234'5678'9000ull;
  for (int level = top(); level >= 1; --level) {
    FlatMemory m2(0, kMemSize);
    FlatSpace s2(m2, 0x1000, kMemSize);
    build::FirstLevelBuilder<FlatSpace> b2(s2, s2.alloc_table(), top());
    ASSERT_EQ(b2.map(va, kOutBase, 12, kUserRW), build::Status::kOk);
    const uint64_t a = b2.entry_address(va, level);
    m2.poke(a, m2.peek(a) & ~fl::kPresent);
    fl::Config c = cfg;
    c.root = b2.root();
    const auto r = fl::walk(m2, c, va, kAccessRead, false);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.fault.error, WalkError::kNotPresent);
    EXPECT_EQ(r.fault.level, level);
    EXPECT_EQ(r.fault.stage, FaultStage::kFirstLevel);
    EXPECT_EQ(r.fault.address, va);
  }
}

TEST_P(FirstLevelTest, AddressBitsAboveHostWidthAreReservedAtEveryLevel) {
  const uint64_t va = 0x0000'0000'4020'3000ull;
  ASSERT_EQ(b.map(va, kOutBase, 12, kUserRW), build::Status::kOk);
  cfg.host_width = 46;
  ASSERT_TRUE(walk(va, kAccessRead, false).ok);
  for (int level = top(); level >= 1; --level) {
    for (uint64_t bit : {46, 51}) {
      const uint64_t a = entry(va, level), old = mem.peek(a);
      mem.poke(a, old | (1ull << bit));
      const auto r = walk(va, kAccessRead, false);
      EXPECT_EQ(r.fault.error, WalkError::kReserved) << level << " " << bit;
      EXPECT_EQ(r.fault.level, level);
      mem.poke(a, old);
    }
  }
  // Bits 62:52 are ignored (software-available / protection keys), not reserved.
  set_bits(va, 1, 0x7FFull << 52);
  EXPECT_TRUE(walk(va, kAccessRead, false).ok);
}

TEST_P(FirstLevelTest, PageSizeBitAtLevelFourAndFiveIsReserved) {
  const uint64_t va = 0x0000'0040'0000'0000ull;
  ASSERT_EQ(b.map(va, kOutBase, 12, kUserRW), build::Status::kOk);
  for (int level = 4; level <= top(); ++level) {
    const uint64_t a = entry(va, level), old = mem.peek(a);
    mem.poke(a, old | fl::kPageSize);
    const auto r = walk(va, kAccessRead, false);
    EXPECT_EQ(r.fault.error, WalkError::kReserved);
    EXPECT_EQ(r.fault.level, level);
    mem.poke(a, old);
  }
}

TEST_P(FirstLevelTest, LargePageLowAddressBitsAreReserved) {
  const uint64_t va2m = 0x0000'0000'8020'0000ull, va1g = 0x0000'0001'0000'0000ull;
  ASSERT_EQ(b.map(va2m, kOutBase, 21, kUserRW), build::Status::kOk);
  ASSERT_EQ(b.map(va1g, kOutBase + (1ull << 30), 30, kUserRW), build::Status::kOk);
  // Bit 12 is PAT in a large page: allowed.
  set_bits(va2m, 2, 1ull << 12);
  set_bits(va1g, 3, 1ull << 12);
  ASSERT_TRUE(walk(va2m, kAccessRead, false).ok);
  ASSERT_TRUE(walk(va1g, kAccessRead, false).ok);
  for (int bit = 13; bit <= 20; ++bit) {
    set_bits(va2m, 2, 1ull << bit);
    EXPECT_EQ(walk(va2m, kAccessRead, false).fault.error, WalkError::kReserved) << bit;
    set_bits(va2m, 2, 0, 1ull << bit);
  }
  for (int bit = 13; bit <= 29; ++bit) {
    set_bits(va1g, 3, 1ull << bit);
    const auto r = walk(va1g, kAccessRead, false);
    EXPECT_EQ(r.fault.error, WalkError::kReserved) << bit;
    EXPECT_EQ(r.fault.level, 3);
    set_bits(va1g, 3, 0, 1ull << bit);
  }
  EXPECT_TRUE(walk(va1g, kAccessRead, false).ok);
  // A 4K entry's bits 20:13 are address bits.
  ASSERT_EQ(b.map(0x3000, kOutBase | 0x1FE000, 12, kUserRW), build::Status::kOk);
  EXPECT_EQ(walk(0x3000, kAccessRead, false).t.out, kOutBase | 0x1FE000);
}

TEST_P(FirstLevelTest, OneGigPageWithoutSupportIsReserved) {
  const uint64_t va = 0x0000'0002'0000'0000ull;
  ASSERT_EQ(b.map(va, kOutBase, 30, kUserRW), build::Status::kOk);
  cfg.large_1g = false;
  const auto r = walk(va, kAccessRead, false);
  EXPECT_EQ(r.fault.error, WalkError::kReserved);
  EXPECT_EQ(r.fault.level, 3);
  // 2M pages stay fine.
  ASSERT_EQ(b.map(0x20'0000, kOutBase, 21, kUserRW), build::Status::kOk);
  EXPECT_TRUE(walk(0x20'0000, kAccessRead, false).ok);
}

// --- permissions -------------------------------------------------------------------------

TEST_P(FirstLevelTest, SupervisorRequestsNeedSre) {
  cfg.sre = false;
  const auto r = walk(0x1000, kAccessRead, true);  // not even mapped: checked first
  EXPECT_EQ(r.fault.error, WalkError::kPrivilegedDisabled);
  ASSERT_EQ(b.map(0x1000, kOutBase, 12, kSupRW), build::Status::kOk);
  EXPECT_EQ(walk(0x1000, kAccessRead, true).fault.error, WalkError::kPrivilegedDisabled);
  cfg.sre = true;
  EXPECT_TRUE(walk(0x1000, kAccessRead, true).ok);
}

TEST_P(FirstLevelTest, ExecuteRequestsNeedEre) {
  ASSERT_EQ(b.map(0x1000, kOutBase, 12, kUserRW), build::Status::kOk);
  cfg.ere = false;
  EXPECT_EQ(walk(0x1000, kAccessExec, false).fault.error, WalkError::kExecuteDisabled);
  EXPECT_EQ(walk(0x5000, kAccessExec | kAccessRead, false).fault.error,
            WalkError::kExecuteDisabled);
  const auto r = walk(0x1000, kAccessRead, false);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.perms, kAccessRead | kAccessWrite);  // no X granted without ERE
  cfg.ere = true;
  EXPECT_TRUE(walk(0x1000, kAccessExec, false).ok);
}

struct PathCase {
  uint64_t va;
  unsigned shift;
};

TEST_P(FirstLevelTest, UserClearAnywhereOnPathDeniesUserRequests) {
  for (unsigned shift : {12u, 21u, 30u}) {
    const uint64_t va = 0x0000'0100'0000'0000ull;
    for (int level = top(); level >= int(shift - 12) / 9 + 1; --level) {
      FlatMemory m(0, kMemSize);
      FlatSpace s(m, 0x1000, kMemSize);
      build::FirstLevelBuilder<FlatSpace> bb(s, s.alloc_table(), top());
      ASSERT_EQ(bb.map(va, kOutBase, shift, kUserRW), build::Status::kOk);
      const uint64_t a = bb.entry_address(va, level);
      m.poke(a, m.peek(a) & ~fl::kUser);
      fl::Config c = cfg;
      c.root = bb.root();
      for (uint8_t acc : {kAccessRead, kAccessWrite, kAccessExec}) {
        const auto r = fl::walk(m, c, va, acc, false);
        EXPECT_EQ(r.fault.error, WalkError::kUserDenied) << shift << "/" << level;
        EXPECT_EQ(r.fault.stage, FaultStage::kFirstLevel);
      }
      // Supervisor requests may use it (and may execute it: it is a supervisor page now).
      const auto sup = fl::walk(m, c, va, kAccessExec | kAccessRead, true);
      ASSERT_TRUE(sup.ok) << std::hex << int(sup.fault.error);
      EXPECT_EQ(sup.t.perms, kAccessRead | kAccessWrite | kAccessExec);
    }
  }
}

TEST_P(FirstLevelTest, WritableClearAnywhereDeniesUserWrites) {
  const uint64_t va = 0x0000'0000'C000'0000ull;
  for (unsigned shift : {12u, 21u, 30u}) {
    for (int level = top(); level >= int(shift - 12) / 9 + 1; --level) {
      FlatMemory m(0, kMemSize);
      FlatSpace s(m, 0x1000, kMemSize);
      build::FirstLevelBuilder<FlatSpace> bb(s, s.alloc_table(), top());
      ASSERT_EQ(bb.map(va, kOutBase, shift, kUserRW), build::Status::kOk);
      const uint64_t a = bb.entry_address(va, level);
      m.poke(a, m.peek(a) & ~fl::kWritable);
      fl::Config c = cfg;
      c.root = bb.root();
      EXPECT_EQ(fl::walk(m, c, va, kAccessWrite, false).fault.error, WalkError::kWriteDenied);
      const auto rd = fl::walk(m, c, va, kAccessRead, false);
      ASSERT_TRUE(rd.ok);
      EXPECT_EQ(rd.t.perms, kAccessRead | kAccessExec);
      // Supervisor writes: allowed with WPE=0, denied with WPE=1.
      c.wpe = false;
      const auto sw = fl::walk(m, c, va, kAccessWrite, true);
      ASSERT_TRUE(sw.ok);
      EXPECT_TRUE(sw.t.perms & kAccessWrite);
      c.wpe = true;
      EXPECT_EQ(fl::walk(m, c, va, kAccessWrite, true).fault.error, WalkError::kWriteDenied);
      EXPECT_FALSE(fl::walk(m, c, va, kAccessRead, true).t.perms & kAccessWrite);
    }
  }
}

TEST_P(FirstLevelTest, ExecuteDisableAnywhereDeniesExecute) {
  const uint64_t va = 0x0000'0000'4000'0000ull;
  for (unsigned shift : {12u, 21u, 30u}) {
    for (int level = top(); level >= int(shift - 12) / 9 + 1; --level) {
      FlatMemory m(0, kMemSize);
      FlatSpace s(m, 0x1000, kMemSize);
      build::FirstLevelBuilder<FlatSpace> bb(s, s.alloc_table(), top());
      ASSERT_EQ(bb.map(va, kOutBase, shift, kSupRW), build::Status::kOk);
      // Make the path user-accessible everywhere except XD at `level`.
      for (int l = top(); l >= int(shift - 12) / 9 + 1; --l) {
        const uint64_t a = bb.entry_address(va, l);
        m.poke(a, m.peek(a) | fl::kUser);
      }
      const uint64_t a = bb.entry_address(va, level);
      m.poke(a, m.peek(a) | fl::kNoExecute);
      fl::Config c = cfg;
      c.root = bb.root();
      EXPECT_EQ(fl::walk(m, c, va, kAccessExec, false).fault.error, WalkError::kExecuteDenied);
      EXPECT_EQ(fl::walk(m, c, va, kAccessExec | kAccessRead, true).fault.error,
                WalkError::kExecuteDenied);
      const auto r = fl::walk(m, c, va, kAccessRead, false);
      ASSERT_TRUE(r.ok);
      EXPECT_EQ(r.t.perms, kAccessRead | kAccessWrite);
    }
  }
}

TEST_P(FirstLevelTest, SupervisorCannotExecuteUserPages) {
  ASSERT_EQ(b.map(0x1000, kOutBase, 12, kUserRW), build::Status::kOk);
  ASSERT_EQ(b.map(0x2000, kOutBase, 12, kSupRW), build::Status::kOk);
  EXPECT_EQ(walk(0x1000, kAccessExec, true).fault.error, WalkError::kExecuteDenied);
  const auto user_page = walk(0x1000, kAccessRead, true);
  ASSERT_TRUE(user_page.ok);
  EXPECT_EQ(user_page.t.perms, kAccessRead | kAccessWrite);
  EXPECT_TRUE(walk(0x2000, kAccessExec, true).ok);
  EXPECT_TRUE(walk(0x1000, kAccessExec, false).ok);
  EXPECT_EQ(walk(0x2000, kAccessExec, false).fault.error, WalkError::kUserDenied);
}

// PASID-entry SMEP (VT-d 9.6, like CR4.SMEP): without it a supervisor may fetch from a user
// page; PASID-entry NXE (like IA32_EFER.NXE): without it XD is a reserved bit at every level.
TEST_P(FirstLevelTest, SmepAndNxeComeFromThePasidEntry) {
  ASSERT_EQ(b.map(0x1000, kOutBase, 12, kUserRW), build::Status::kOk);
  cfg.smep = false;
  EXPECT_TRUE(walk(0x1000, kAccessExec, true).ok);
  for (int level = top(); level >= 1; --level) {
    const uint64_t a = b.entry_address(0x1000, level), old = mem.peek(a);
    mem.poke(a, old | fl::kNoExecute);
    cfg.nxe = false;
    const auto r = walk(0x1000, kAccessRead, false);
    EXPECT_EQ(r.fault.error, WalkError::kReserved) << level;
    EXPECT_EQ(r.fault.level, level);
    cfg.nxe = true;
    EXPECT_EQ(walk(0x1000, kAccessExec, false).fault.error, WalkError::kExecuteDenied);
    mem.poke(a, old);
  }
}

// --- accessed / dirty --------------------------------------------------------------------

TEST_P(FirstLevelTest, ReadSetsAccessedOnEveryLevelAndNoDirty) {
  for (unsigned shift : {12u, 21u, 30u}) {
    const uint64_t va = uint64_t(shift) << 32;
    ASSERT_EQ(b.map(va, kOutBase, shift, kUserRW), build::Status::kOk);
    const int leaf = int(shift - 12) / 9 + 1;
    ASSERT_TRUE(walk(va, kAccessRead, false).ok);
    for (uint64_t e : path_values(va, leaf)) {
      EXPECT_TRUE(e & fl::kAccessed);
      EXPECT_FALSE(e & fl::kDirty);
      EXPECT_FALSE(e & fl::kExtendedAccessed);
    }
    ASSERT_TRUE(walk(va, kAccessWrite, false).ok);
    auto v = path_values(va, leaf);
    for (size_t i = 0; i < v.size(); ++i) {
      EXPECT_TRUE(v[i] & fl::kAccessed);
      EXPECT_EQ(bool(v[i] & fl::kDirty), i + 1 == v.size()) << "entry " << i;
    }
  }
}

TEST_P(FirstLevelTest, FirstWriteSetsDirtyOnLeafOnly) {
  ASSERT_EQ(b.map(0x7000, kOutBase, 12, kUserRW), build::Status::kOk);
  const auto r = walk(0x7000, kAccessWrite, false);
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(r.attrs & fl::kAttrDirty);
  auto v = path_values(0x7000, 1);
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_TRUE(v[i] & fl::kAccessed);
    EXPECT_EQ(bool(v[i] & fl::kDirty), i + 1 == v.size());
  }
}

TEST_P(FirstLevelTest, ExtendedAccessedSetWithAccessedWhenEafe) {
  cfg.eafe = true;
  ASSERT_EQ(b.map(0x20'0000, kOutBase, 21, kUserRW), build::Status::kOk);
  ASSERT_TRUE(walk(0x20'0000, kAccessRead, false).ok);
  for (uint64_t e : path_values(0x20'0000, 2)) {
    EXPECT_TRUE(e & fl::kAccessed);
    EXPECT_TRUE(e & fl::kExtendedAccessed);
  }
}

TEST_P(FirstLevelTest, NoAccessedDirtyUpdateWhenDisabledOrOnFault) {
  ASSERT_EQ(b.map(0x1000, kOutBase, 12, kSupRW), build::Status::kOk);
  const auto before = path_values(0x1000, 1);
  cfg.update_ad = false;
  const auto r = walk(0x1000, kAccessWrite, true);
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(r.attrs & fl::kAttrDirty);  // nothing to update: a cached write needs no walk
  EXPECT_EQ(path_values(0x1000, 1), before);
  EXPECT_EQ(mem.cas_calls, 0u);
  cfg.update_ad = true;
  // Every kind of permission fault leaves the tables untouched.
  EXPECT_EQ(walk(0x1000, kAccessRead, false).fault.error, WalkError::kUserDenied);
  cfg.wpe = true;
  set_bits(0x1000, 1, 0, fl::kWritable);
  const auto before2 = path_values(0x1000, 1);
  EXPECT_EQ(walk(0x1000, kAccessWrite, true).fault.error, WalkError::kWriteDenied);
  set_bits(0x1000, 1, fl::kNoExecute);
  const auto before3 = path_values(0x1000, 1);
  EXPECT_EQ(walk(0x1000, kAccessExec, true).fault.error, WalkError::kExecuteDenied);
  EXPECT_EQ(path_values(0x1000, 1), before3);
  (void)before2;
  EXPECT_EQ(mem.cas_calls, 0u);
}

TEST_P(FirstLevelTest, AccessedUpdateRetriesWhenEntryChangesUnderIt) {
  ASSERT_EQ(b.map(0x1000, kOutBase, 12, kUserRW), build::Status::kOk);
  const uint64_t leaf = entry(0x1000, 1);
  // A concurrent writer remaps the page between our read and our CAS.
  mem.interfere_once[leaf] = (kOutBase + 0x10000) | kUserRW;
  const auto r = walk(0x1000, kAccessRead, false);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, kOutBase + 0x10000);  // the walk restarted and saw the new entry
  EXPECT_TRUE(mem.peek(leaf) & fl::kAccessed);
}

TEST_P(FirstLevelTest, AccessedUpdateFailureIsAnAccessFault) {
  ASSERT_EQ(b.map(0x1000, kOutBase, 12, kUserRW), build::Status::kOk);
  mem.fail_writes.insert(entry(0x1000, 2));
  const auto r = walk(0x1000, kAccessRead, false);
  EXPECT_EQ(r.fault.error, WalkError::kEntryAccess);
  EXPECT_EQ(r.fault.level, 2);
}

TEST_P(FirstLevelTest, UnbackedTablesAreAccessFaults) {
  cfg.root = kMemSize + 0x1000;  // outside the flat memory
  auto r = walk(0x1000, kAccessRead, false);
  EXPECT_EQ(r.fault.error, WalkError::kRootEntryAccess);
  EXPECT_EQ(r.fault.level, top());
  cfg.root = b.root();
  ASSERT_EQ(b.map(0x1000, kOutBase, 12, kUserRW), build::Status::kOk);
  for (int level = top() - 1; level >= 1; --level) {
    FlatMemory m(0, kMemSize);
    FlatSpace s(m, 0x1000, kMemSize);
    build::FirstLevelBuilder<FlatSpace> bb(s, s.alloc_table(), top());
    ASSERT_EQ(bb.map(0x1000, kOutBase, 12, kUserRW), build::Status::kOk);
    const uint64_t a = bb.entry_address(0x1000, level + 1);
    m.poke(a, (m.peek(a) & 0xFFF) | (kMemSize + 0x10'0000));  // beyond the backed range
    fl::Config c = cfg;
    c.root = bb.root();
    r = fl::walk(m, c, 0x1000, kAccessRead, false);
    EXPECT_EQ(r.fault.error, WalkError::kEntryAccess) << level;
    EXPECT_EQ(r.fault.level, level);
  }
}

TEST_P(FirstLevelTest, PathTraceRecordsTables) {
  ASSERT_EQ(b.map(0x1000, kOutBase, 12, kUserRW), build::Status::kOk);
  fl::Path path;
  const auto r = fl::walk(mem, cfg, 0x1000, kAccessRead, false, {}, &path);
  ASSERT_TRUE(r.ok);
  for (int l = top(); l >= 2; --l)
    EXPECT_EQ(path.next_table[l], mem.peek(entry(0x1000, l)) & fl::kAddrMask52);
  // Resuming from the level-2 table gives the same answer with a single read.
  fl::Start st{1, path.next_table[2], path.attrs[2]};
  mem.reads = 0;
  const auto r2 = fl::walk(mem, cfg, 0x1000, kAccessRead, false, st);
  ASSERT_TRUE(r2.ok);
  EXPECT_EQ(r2.t.out, r.t.out);
  EXPECT_EQ(mem.reads, 1u);
}

}  // namespace
}  // namespace nestor
