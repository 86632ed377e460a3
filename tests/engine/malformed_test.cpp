// Malformed structures: self-referencing tables, pointers beyond RAM, random garbage.
// Every case must end in a defined fault (or a translation), never a crash or a hang.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "capi_fixture.h"
#include "nestor/walkers/builder.h"

namespace nestor {
namespace {

using test::BumpSpace;
using test::CapiEngine;
using CMem = test::CapiEngine::Mem;

constexpr uint16_t kSid = 0x0100;
constexpr uint8_t R = NESTOR_ACCESS_READ;

bool known_fault(int f) {
  static const std::set<int> known = {
      0x30, 0x38, 0x39, 0x3A, 0x40, 0x41, 0x42, 0x43, 0x45, 0x46, 0x48, 0x50, 0x51, 0x52,
      0x58, 0x59, 0x5A, 0x5B, 0x5C, 0x5D, 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77,
      0x78, 0x79, 0x7A, 0x7B, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86};
  return f == 0 || known.count(f);
}

// Points the entry at `level` on iova's path back at the table that holds it.
template <class B, class M>
void self_reference(B &b, M &mem, uint64_t iova, int level, uint64_t flags) {
  const uint64_t slot = b.entry_address(iova, level);
  ASSERT_NE(slot, 0u);
  ASSERT_TRUE(mem.write64(slot, (slot & ~0xFFFull) | flags));
}

TEST(Malformed, SelfReferencingFirstLevelTables) {
  for (int levels : {4, 5}) {
    for (int level = levels; level >= 2; --level) {
      CapiEngine x;
      build::FirstLevelBuilder<BumpSpace<CMem>> fl(x.tables, x.tables.alloc_table(), levels);
      ASSERT_EQ(fl.map(0x1000, 0x4000'0000, 12, build::fl_leaf_bits(true, true, true)),
                build::Status::kOk);
      self_reference(fl, x.mem, 0x1000, level, 0x7);
      x.layout.device(kSid);
      x.layout.pasid(kSid, 1, test::pe_first_level(fl.root(), levels == 5));
      for (uint8_t acc = 1; acc <= 7; ++acc) {
        const auto r = x.tr(kSid, true, 1, 0x1000, acc, acc & 1);
        EXPECT_TRUE(known_fault(r.fault)) << r.fault;
        if (r.fault == 0) {
          EXPECT_LE(r.level, level);  // a walk can only go down
        }
      }
    }
  }
}

TEST(Malformed, SelfReferencingSecondLevelTables) {
  for (int levels : {3, 4, 5}) {
    for (int level = levels; level >= 1; --level) {
      CapiEngine x;
      build::SecondLevelBuilder<BumpSpace<CMem>> sl(x.tables, x.tables.alloc_table(), levels);
      ASSERT_EQ(sl.map(0x1000, 0x4000'0000, 12, build::sl_leaf_bits(7)), build::Status::kOk);
      self_reference(sl, x.mem, 0x1000, level, 0x7);
      x.layout.device(kSid);
      x.layout.pasid(kSid, 1, test::pe_second_level(sl.root(), unsigned(levels - 2)));
      for (uint8_t acc = 1; acc <= 7; ++acc) EXPECT_TRUE(known_fault(x.fault(kSid, true, 1, 0x1000, acc)));
    }
  }
}

TEST(Malformed, SelfReferencingNestedTables) {
  for (int level = 4; level >= 1; --level) {
    for (bool in_fl : {true, false}) {
      CapiEngine x;
      build::SecondLevelBuilder<BumpSpace<CMem>> sl(x.tables, x.tables.alloc_table(), 4);
      test::GuestSpace<CMem, BumpSpace<CMem>> guest(x.mem, x.tables, sl, 0x1000'0000,
                                                          0x1100'0000);
      build::FirstLevelBuilder<decltype(guest)> fl(guest, guest.alloc_table(), 4);
      ASSERT_EQ(fl.map(0x1000, 0x2000'0000, 12, build::fl_leaf_bits(true, true, true)),
                build::Status::kOk);
      ASSERT_EQ(sl.map(0x2000'0000, 0x4000'0000, 12, build::sl_leaf_bits(7)), build::Status::kOk);
      if (in_fl) {
        // A guest entry pointing at its own table's GPA.
        const uint64_t slot = fl.entry_address(0x1000, level);
        ASSERT_TRUE(guest.write(slot, (slot & ~0xFFFull) | 0x7));
      } else {
        // An SL entry on the path of the FL root's GPA pointing at its own SL table.
        self_reference(sl, x.mem, fl.root(), level, 0x7);
      }
      x.layout.device(kSid);
      x.layout.pasid(kSid, 1, test::pe_nested(fl.root(), sl.root()));
      for (uint8_t acc = 1; acc <= 7; ++acc)
        EXPECT_TRUE(known_fault(x.fault(kSid, true, 1, 0x1000, acc, true)));
    }
  }
}

TEST(Malformed, SelfReferencingStructures) {
  CapiEngine x;
  const uint64_t root = x.layout.root();
  const auto w = x.layout.writer();
  // Root entry whose context table is the root table itself.
  vtdw_root(&w, root, 0, root, root, 0, 0);
  for (uint16_t sid : {0x0000, 0x0001, 0x0080, 0x00FF})
    EXPECT_TRUE(known_fault(x.fault(sid, true, 1, 0)));
  // Context entry whose PASID directory is the context table; directory entry pointing at
  // the directory itself as the PASID table.
  x.layout.device(0x0200);
  const uint64_t ctx = x.layout.context_table(0x0200);
  vtdw_context c = test::VtdLayout::default_context();
  c.pasid_dir = ctx;
  vtdw_context_entry(&w, ctx, 0, &c);
  for (uint32_t p : {0u, 1u, 64u, 1000u}) EXPECT_TRUE(known_fault(x.fault(0x0200, true, p, 0)));
  x.layout.device(0x0300);
  const uint64_t dir = x.layout.pasid_dir(0x0300);
  vtdw_pasid_dir_entry(&w, dir, 0, dir, 1, 0, 0);
  for (uint32_t p : {0u, 1u, 63u}) EXPECT_TRUE(known_fault(x.fault(0x0300, true, p, 0)));
  // PASID entry whose first- and second-level roots are the PASID table itself.
  x.layout.device(0x0400);
  const uint64_t table = x.layout.pasid(0x0400, 0, test::pe_pass_through());
  for (unsigned pgtt : {1u, 2u, 3u}) {
    vtdw_pasid_entry pe = test::pe_nested(table, table);
    pe.pgtt = pgtt;
    x.layout.pasid(0x0400, 0, pe);
    for (uint8_t acc = 1; acc <= 7; ++acc)
      EXPECT_TRUE(known_fault(x.fault(0x0400, true, 0, 0x1234'5000, acc, true)));
  }
}

TEST(Malformed, PointersBeyondRam) {
  CapiEngine x;
  build::FirstLevelBuilder<BumpSpace<CMem>> fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x1000, 0x4000'0000, 12, build::fl_leaf_bits(true, true, true)),
            build::Status::kOk);
  x.layout.device(kSid);
  x.layout.pasid(kSid, 1, test::pe_first_level(fl.root()));
  for (int level = 4; level >= 2; --level) {
    const uint64_t slot = fl.entry_address(0x1000, level);
    uint64_t old;
    ASSERT_TRUE(x.mem.read64(slot, &old));
    for (uint64_t target : {uint64_t{test::kRamSize}, uint64_t{1} << 40, (uint64_t{1} << 48) - 4096}) {
      ASSERT_TRUE(x.mem.write64(slot, target | 7));
      EXPECT_EQ(x.fault(kSid, true, 1, 0x1000), NESTOR_FAULT_FL_ENTRY_ACCESS);
    }
    ASSERT_TRUE(x.mem.write64(slot, old));
  }
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000), 0);
}

// Thousands of random requests over a region of random words whose "pointers" mostly land
// back inside the region, so walks go deep through garbage.
TEST(Malformed, RandomGarbage) {
  const uint64_t seed = 0xC0FFEE;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  CapiEngine x;
  const uint64_t base = 0x100'0000, pages = 256;
  auto word = [&]() -> uint64_t {
    switch (rng() % 6) {
      case 0: return rng();
      case 1: return 0;
      default: {
        uint64_t v = base + (rng() % pages) * 4096 + (rng() & 0xFFF);
        if (rng() % 4 == 0) v |= rng() & 0xFFF0'0000'0000'0000ull;
        if (rng() % 2) v |= 1;
        return v;
      }
    }
  };
  for (int round = 0; round < 4; ++round) {
    for (uint64_t a = base; a < base + pages * 4096; a += 8) ASSERT_TRUE(x.mem.write64(a, word()));
    ASSERT_EQ(x.set_root_table(base + (rng() % pages) * 4096), 0);
    for (int i = 0; i < 1500; ++i) {
      nestor_request req{};
      req.source_id = uint16_t(rng());
      req.has_pasid = rng() & 1;
      req.pasid = uint32_t(rng() % 4 ? rng() & 0xFFF : rng() & 0xFFFFF);
      req.iova = rng() % 3 ? (rng() & 0x0000'7FFF'FFFF'FFFFull) : rng();
      req.access = uint8_t(1 + rng() % 7);
      req.privileged = rng() & 1;
      nestor_result res{};
      ASSERT_EQ(nestor_translate(x.e, &req, &res), 0);
      ASSERT_TRUE(known_fault(res.fault)) << std::hex << res.fault;
      if (res.fault == 0) {
        EXPECT_TRUE(res.page_size == 4096 || res.page_size == (2u << 20) ||
                    res.page_size == (1u << 30));
        EXPECT_NE(res.perms, 0);
      }
    }
    x.drain();
  }
}

}  // namespace
}  // namespace nestor
