// Engine + VT-d scalable-mode structures, built only with nestor_mem_write (via the C99
// vtd_writer) and driven only through the C ABI.
#include <gtest/gtest.h>

#include "capi_fixture.h"
#include "nestor/walkers/builder.h"

namespace nestor {
namespace {

using test::BumpSpace;
using test::CapiEngine;
using CMem = test::CapiEngine::Mem;

constexpr uint64_t kOut = 0x0000'0066'0000'0000ull;  // 1G aligned, within HAW 48
constexpr uint8_t R = NESTOR_ACCESS_READ, W = NESTOR_ACCESS_WRITE, X = NESTOR_ACCESS_EXEC;
constexpr uint64_t kUserRW = build::fl_leaf_bits(true, true, true);
constexpr uint64_t kSupRW = build::fl_leaf_bits(true, false, true);
constexpr uint16_t kSid = 0x0210;  // 02:02.0

using FlB = build::FirstLevelBuilder<BumpSpace<CMem>>;
using SlB = build::SecondLevelBuilder<BumpSpace<CMem>>;

TEST(EngineStructures, FirstLevelTranslation) {
  for (bool five : {false, true}) {
    CapiEngine x;
    FlB fl(x.tables, x.tables.alloc_table(), five ? 5 : 4);
    ASSERT_EQ(fl.map(0x40'0000, kOut, 21, kUserRW), build::Status::kOk);
    ASSERT_EQ(fl.map(0x1000, kOut + 0x7000, 12, kSupRW), build::Status::kOk);
    x.layout.device(kSid);
    x.layout.pasid(kSid, 7, test::pe_first_level(fl.root(), five));
    auto r = x.tr(kSid, true, 7, 0x41'2345, R | W);
    ASSERT_EQ(r.fault, 0) << std::hex << r.fault;
    EXPECT_EQ(r.hpa, kOut + 0x1'2345);
    EXPECT_EQ(r.page_size, 2u << 20);
    EXPECT_EQ(r.perms, R | W | X);
    EXPECT_EQ(r.level, 2);
    r = x.tr(kSid, true, 7, 0x1ABC, R, true);
    ASSERT_EQ(r.fault, 0);
    EXPECT_EQ(r.hpa, kOut + 0x7ABC);
    EXPECT_EQ(r.page_size, 4096u);
    EXPECT_EQ(x.fault(kSid, true, 7, 0x1ABC, R, false), NESTOR_FAULT_USER_DENIED);
    EXPECT_EQ(x.fault(kSid, true, 7, 0x2000), NESTOR_FAULT_FL_ENTRY_NOT_PRESENT);
  }
}

TEST(EngineStructures, PasidEntryFlagsReachTheWalker) {
  CapiEngine x;
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x1000, kOut, 12, build::fl_leaf_bits(false, false, true)), build::Status::kOk);
  x.layout.device(kSid);
  auto pe = test::pe_first_level(fl.root());
  pe.sre = 0;
  x.layout.pasid(kSid, 1, pe);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000, R, true), NESTOR_FAULT_SRE_CLEAR);
  pe.sre = 1;
  pe.ere = 0;
  x.layout.pasid(kSid, 1, pe);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000, X, true), NESTOR_FAULT_ERE_CLEAR);
  pe.ere = 1;
  x.layout.pasid(kSid, 1, pe);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000, W, true), 0);  // WPE=0: read-only page writable
  pe.wpe = 1;
  x.layout.pasid(kSid, 1, pe);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000, W, true), NESTOR_FAULT_WRITE_DENIED);
  // EAFE: bit 10 set alongside A.
  pe.eafe = 1;
  x.layout.pasid(kSid, 1, pe);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000, R, true), 0);
  uint64_t leaf = 0;
  ASSERT_EQ(nestor_mem_read(x.e, fl.entry_address(0x1000, 1), &leaf, 8), 0);
  EXPECT_TRUE(leaf & (1u << 5));
  EXPECT_TRUE(leaf & (1u << 10));
}

// Execute requests and the PASID entry's NXE (bit 133), SMEP (bit 134) and SLEE (bit 5).
// NXE: as with IA32_EFER.NXE on the CPU, XD (bit 63) is a field only when NXE=1 and a reserved
// bit otherwise (fault 0x72); Linux's VT-d driver set NXE exactly when it used XD. SMEP: a
// supervisor instruction fetch from a user page is denied only when SMEP=1 (x86 CR4.SMEP).
// SLEE: the second-level X bit governs execute only when SLEE=1; with SLEE=0 an instruction
// fetch needs what a read needs (VT-d 2.x extended-context SLEE, 3.x PASID-entry SLEE).
TEST(EngineStructures, ExecuteControlsFromThePasidEntry) {
  CapiEngine x;
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x1000, kOut, 12, build::fl_leaf_bits(true, true, false)),  // XD set
            build::Status::kOk);
  ASSERT_EQ(fl.map(0x2000, kOut + 0x1000, 12, kUserRW), build::Status::kOk);  // user, no XD
  x.layout.device(kSid);
  auto pe = test::pe_first_level(fl.root());
  pe.extra[2] = 0;  // NXE=0, SMEP=0
  x.layout.pasid(kSid, 1, pe);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000, R), NESTOR_FAULT_FL_ENTRY_RESERVED);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x2000, X, true), 0);  // SMEP=0: supervisor may fetch
  pe.extra[2] = test::kPeNxe;
  x.layout.pasid(kSid, 1, pe);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000, R), 0);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000, X), NESTOR_FAULT_EXEC_DENIED);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x2000, X, true), 0);
  pe.extra[2] = test::kPeNxe | test::kPeSmep;
  x.layout.pasid(kSid, 1, pe);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x2000, X, true), NESTOR_FAULT_EXEC_DENIED);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x2000, X, false), 0);  // the user itself may fetch

  SlB sl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(sl.map(0x3000, kOut + 0x2000, 12, build::sl_leaf_bits(R)), build::Status::kOk);
  auto spe = test::pe_second_level(sl.root());
  spe.extra[0] = 0;  // SLEE=0
  x.layout.pasid(kSid, 2, spe);
  EXPECT_EQ(x.fault(kSid, true, 2, 0x3000, X), 0);
  spe.extra[0] = test::kPeSlee;
  x.layout.pasid(kSid, 2, spe);
  EXPECT_EQ(x.fault(kSid, true, 2, 0x3000, X), NESTOR_FAULT_EXEC_DENIED);
}

class SecondLevelAw : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Aw, SecondLevelAw, ::testing::Values(1u, 2u, 3u));

TEST_P(SecondLevelAw, SecondLevelTranslationAndWidth) {
  const unsigned aw = GetParam(), levels = aw + 2, width = 12 + 9 * levels;
  CapiEngine x;
  SlB sl(x.tables, x.tables.alloc_table(), int(levels));
  const uint64_t top = (1ull << width) - (1ull << 30);
  ASSERT_EQ(sl.map(top, kOut, 30, build::sl_leaf_bits(R | W)), build::Status::kOk);
  ASSERT_EQ(sl.map(0x3000, kOut + 0x5000, 12, build::sl_leaf_bits(R)), build::Status::kOk);
  x.layout.device(kSid);
  x.layout.pasid(kSid, 0x1234, test::pe_second_level(sl.root(), aw));
  auto r = x.tr(kSid, true, 0x1234, top + 0x1234'5678, W);
  ASSERT_EQ(r.fault, 0);
  EXPECT_EQ(r.hpa, kOut + 0x1234'5678);
  EXPECT_EQ(r.page_size, 1u << 30);
  EXPECT_EQ(r.perms, R | W);
  EXPECT_EQ(x.fault(kSid, true, 0x1234, 0x3000, W), NESTOR_FAULT_WRITE_DENIED);
  EXPECT_EQ(x.fault(kSid, true, 0x1234, 0x3000, X), NESTOR_FAULT_EXEC_DENIED);
  EXPECT_EQ(x.fault(kSid, true, 0x1234, 0x4000, R), NESTOR_FAULT_SL_ENTRY_NOT_PRESENT);
  EXPECT_EQ(x.fault(kSid, true, 0x1234, 1ull << width), NESTOR_FAULT_ADDRESS_BEYOND_MAX);
}

TEST(EngineStructures, NestedTranslation) {
  CapiEngine x;
  SlB sl(x.tables, x.tables.alloc_table(), 4);
  // Guest FL tables at GPAs 0x100000.. whose host pages come from the table pool.
  test::GuestSpace<CMem, BumpSpace<CMem>> guest(x.mem, x.tables, sl, 0x1000'0000, 0x1100'0000);
  build::FirstLevelBuilder<decltype(guest)> fl(guest, guest.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x7000'0000, 0x2000'0000, 21, kUserRW), build::Status::kOk);
  ASSERT_EQ(sl.map(0x2000'0000 + 0x3000, kOut + 0x9000, 12, build::sl_leaf_bits(R | W | X)),
            build::Status::kOk);
  x.layout.device(kSid);
  x.layout.pasid(kSid, 3, test::pe_nested(fl.root(), sl.root()));
  auto r = x.tr(kSid, true, 3, 0x7000'3456, R | W);
  ASSERT_EQ(r.fault, 0) << std::hex << r.fault;
  EXPECT_EQ(r.hpa, kOut + 0x9456);
  EXPECT_EQ(r.page_size, 4096u);
  EXPECT_EQ(x.fault(kSid, true, 3, 0x7000'4000), NESTOR_FAULT_SL_ENTRY_NOT_PRESENT);
  auto recs = x.drain();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].stage, NESTOR_STAGE_SECOND_LEVEL);
  EXPECT_EQ(recs[0].address, 0x2000'4000u);  // the GPA
  EXPECT_EQ(recs[0].iova, 0x7000'4000u);
  // The FL root GPA itself unmapped in SL: a nested-table fault naming the GPA.
  auto pe = test::pe_nested(0x5000'0000, sl.root());
  x.layout.pasid(kSid, 4, pe);
  EXPECT_EQ(x.fault(kSid, true, 4, 0x1000), NESTOR_FAULT_SL_ENTRY_NOT_PRESENT);
  recs = x.drain();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].stage, NESTOR_STAGE_NESTED_TABLE);
  EXPECT_EQ(recs[0].address, 0x5000'0000u);
}

TEST(EngineStructures, PassThrough) {
  CapiEngine x;
  x.layout.device(kSid);
  x.layout.pasid(kSid, 9, test::pe_pass_through());
  auto r = x.tr(kSid, true, 9, 0x1234'5678'9ABCull, W);
  ASSERT_EQ(r.fault, 0);
  EXPECT_EQ(r.hpa, 0x1234'5678'9ABCull);
  EXPECT_EQ(r.perms, R | W | X);
  EXPECT_EQ(x.fault(kSid, true, 9, 1ull << 48), NESTOR_FAULT_ADDRESS_BEYOND_MAX);
}

TEST(EngineStructures, RequestsWithoutPasidUseRidPasidAndRidPriv) {
  CapiEngine x;
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x1000, kOut, 12, kSupRW), build::Status::kOk);  // supervisor-only page
  auto c = test::VtdLayout::default_context();
  c.rid_pasid = 0x4567;
  x.layout.device(kSid, c);
  x.layout.pasid(kSid, 0x4567, test::pe_first_level(fl.root()));
  EXPECT_EQ(x.fault(kSid, false, 0, 0x1000), NESTOR_FAULT_USER_DENIED);  // RID_PRIV=0: user
  c.rid_priv = 1;
  x.layout.device(kSid, c);
  auto r = x.tr(kSid, false, 0, 0x1000);
  ASSERT_EQ(r.fault, 0);
  EXPECT_EQ(r.hpa, kOut);
  // `privileged` in a request without PASID is ignored: RID_PRIV decides.
  c.rid_priv = 0;
  x.layout.device(kSid, c);
  EXPECT_EQ(x.fault(kSid, false, 0, 0x1000, R, true), NESTOR_FAULT_USER_DENIED);
  // PASIDE=0: requests without PASID still work, requests with PASID fault.
  c.paside = 0;
  c.rid_priv = 1;
  x.layout.device(kSid, c);
  EXPECT_EQ(x.fault(kSid, false, 0, 0x1000), 0);
  EXPECT_EQ(x.fault(kSid, true, 0x4567, 0x1000), NESTOR_FAULT_CONTEXT_PASID_DISABLED);
}

TEST(EngineStructures, UpperAndLowerContextTables) {
  CapiEngine x;
  SlB a(x.tables, x.tables.alloc_table(), 4), b(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(a.map(0, kOut, 12, build::sl_leaf_bits(R)), build::Status::kOk);
  ASSERT_EQ(b.map(0, kOut + 0x1000, 12, build::sl_leaf_bits(R)), build::Status::kOk);
  const uint16_t lo = 0x0305, hi = 0x0385;  // same devfn & 0x7F, different halves
  // Different tables need different domain ids: the IOTLB is tagged by (DID, PASID).
  auto pa = test::pe_second_level(a.root()), pb = test::pe_second_level(b.root());
  pa.did = 1;
  pb.did = 2;
  x.layout.device(lo);
  x.layout.pasid(lo, 1, pa);
  EXPECT_EQ(x.fault(hi, true, 1, 0), NESTOR_FAULT_ROOT_ENTRY_NOT_PRESENT);  // UP=0
  x.layout.device(hi);
  x.layout.pasid(hi, 1, pb);
  EXPECT_NE(x.layout.context_table(lo), x.layout.context_table(hi));
  EXPECT_EQ(x.tr(lo, true, 1, 0).hpa, kOut);
  EXPECT_EQ(x.tr(hi, true, 1, 0).hpa, kOut + 0x1000);
  // Context entries are 32 bytes apart: devfn 0x06 is the next entry, still absent.
  EXPECT_EQ(x.fault(0x0306, true, 1, 0), NESTOR_FAULT_CONTEXT_ENTRY_NOT_PRESENT);
  // Another bus: its own root entry (16 bytes per bus).
  EXPECT_EQ(x.fault(0x0405, true, 1, 0), NESTOR_FAULT_ROOT_ENTRY_NOT_PRESENT);
  // PASID 64 lives in the next directory slot and a different PASID table.
  x.layout.pasid(lo, 64, pb);
  EXPECT_NE(x.layout.pasid_table(lo, 64), x.layout.pasid_table(lo, 1));
  EXPECT_EQ(x.tr(lo, true, 64, 0).hpa, kOut + 0x1000);
  EXPECT_EQ(x.fault(lo, true, 65, 0), NESTOR_FAULT_PASID_ENTRY_NOT_PRESENT);
  EXPECT_EQ(x.fault(lo, true, 128, 0), NESTOR_FAULT_PASID_DIR_NOT_PRESENT);
}

// --- structure faults ----------------------------------------------------------------------

TEST(EngineStructureFaults, RootTable) {
  CapiEngine unset(nullptr, false);
  EXPECT_EQ(unset.fault(kSid, true, 1, 0), NESTOR_FAULT_ROOT_TABLE_ADDRESS);
  CapiEngine x;
  EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_ROOT_ENTRY_NOT_PRESENT);
  x.layout.device(kSid);
  x.layout.pasid(kSid, 1, test::pe_pass_through());
  ASSERT_EQ(x.fault(kSid, true, 1, 0), 0);
  const uint64_t ctx = x.layout.context_table(kSid);
  const auto w = x.layout.writer();
  for (uint64_t bad : {1ull << 1, 1ull << 11, 1ull << 48, 1ull << 63}) {
    vtdw_root(&w, x.layout.root(), kSid >> 8, ctx, 0, bad, 0);
    EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_ROOT_ENTRY_RESERVED) << std::hex << bad;
  }
  // Reserved bits in the other half do not matter for this devfn.
  vtdw_root(&w, x.layout.root(), kSid >> 8, ctx, 0, 0, 1ull << 5);
  EXPECT_EQ(x.fault(kSid, true, 1, 0), 0);
  EXPECT_EQ(x.fault(kSid | 0x80, true, 1, 0), NESTOR_FAULT_ROOT_ENTRY_NOT_PRESENT);
}

TEST(EngineStructureFaults, ContextEntry) {
  CapiEngine x;
  auto c = test::VtdLayout::default_context();
  c.present = 0;
  x.layout.device(kSid, c);
  EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_CONTEXT_ENTRY_NOT_PRESENT);
  c.present = 1;
  x.layout.device(kSid, c);
  x.layout.pasid(kSid, 1, test::pe_pass_through());
  ASSERT_EQ(x.fault(kSid, true, 1, 0), 0);
  const struct {
    int word;
    uint64_t bit;
  } bad[] = {{0, 1ull << 5},  {0, 1ull << 8}, {0, 1ull << 50}, {1, 1ull << 21},
             {1, 1ull << 63}, {2, 1},         {3, 1ull << 40}};
  for (const auto &b : bad) {
    auto cc = c;
    cc.extra[b.word] = b.bit;
    x.layout.device(kSid, cc);
    EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_CONTEXT_ENTRY_RESERVED)
        << b.word << " " << std::hex << b.bit;
  }
  // DTE (bit 2) and PRE (bit 4) are defined fields, not reserved.
  auto cc = c;
  cc.extra[0] = (1u << 2) | (1u << 4);
  x.layout.device(kSid, cc);
  EXPECT_EQ(x.fault(kSid, true, 1, 0), 0);
}

TEST(EngineStructureFaults, PasidBeyondDirectorySize) {
  CapiEngine x;
  for (unsigned pdts : {0u, 3u, 7u}) {
    auto c = test::VtdLayout::default_context();
    c.pdts = pdts;
    x.layout.device(kSid, c);
    const uint32_t max = 1u << (pdts + 7 + 6);
    if (max <= (1u << 20) - 1) {
      x.layout.pasid(kSid, max - 1, test::pe_pass_through());
      EXPECT_EQ(x.fault(kSid, true, max - 1, 0), 0) << pdts;
    }
    if (max < (1u << 20)) {
      EXPECT_EQ(x.fault(kSid, true, max, 0), NESTOR_FAULT_PASID_TOO_LARGE);
    }
  }
  EXPECT_EQ(x.fault(kSid, true, 1u << 20, 0), NESTOR_FAULT_PASID_TOO_LARGE);
  // The engine's own PASID width caps it too.
  nestor_config cfg{};
  cfg.size = sizeof cfg;
  cfg.pasid_bits = 8;
  CapiEngine y(&cfg);
  y.layout.device(kSid);
  y.layout.pasid(kSid, 255, test::pe_pass_through());
  EXPECT_EQ(y.fault(kSid, true, 255, 0), 0);
  EXPECT_EQ(y.fault(kSid, true, 256, 0), NESTOR_FAULT_PASID_TOO_LARGE);
}

TEST(EngineStructureFaults, PasidDirectoryEntry) {
  CapiEngine x;
  x.layout.device(kSid);
  const uint64_t dir = x.layout.pasid_dir(kSid);
  EXPECT_EQ(x.fault(kSid, true, 70, 0), NESTOR_FAULT_PASID_DIR_NOT_PRESENT);
  x.layout.pasid(kSid, 70, test::pe_pass_through());
  const uint64_t table = x.layout.pasid_table(kSid, 70);
  const auto w = x.layout.writer();
  ASSERT_EQ(x.fault(kSid, true, 70, 0), 0);
  for (uint64_t bad : {1ull << 2, 1ull << 11, 1ull << 48}) {
    vtdw_pasid_dir_entry(&w, dir, 70, table, 1, 0, bad);
    EXPECT_EQ(x.fault(kSid, true, 70, 0), NESTOR_FAULT_PASID_DIR_RESERVED) << std::hex << bad;
  }
  vtdw_pasid_dir_entry(&w, dir, 70, table, 0, 0, 0);
  EXPECT_EQ(x.fault(kSid, true, 70, 0), NESTOR_FAULT_PASID_DIR_NOT_PRESENT);
}

TEST(EngineStructureFaults, PasidEntry) {
  nestor_config cfg{};
  cfg.size = sizeof cfg;
  cfg.sagaw = 0b0110;  // 39 and 48-bit only
  cfg.flags = NESTOR_CFG_NO_FL5;
  CapiEngine x(&cfg);
  x.layout.device(kSid);
  vtdw_pasid_entry pe{};
  x.layout.pasid(kSid, 5, pe);
  EXPECT_EQ(x.fault(kSid, true, 5, 0), NESTOR_FAULT_PASID_ENTRY_NOT_PRESENT);
  for (unsigned pgtt : {0u, 5u, 6u, 7u}) {
    pe = test::pe_second_level(0x80'0000);
    pe.pgtt = pgtt;
    x.layout.pasid(kSid, 5, pe);
    EXPECT_EQ(x.fault(kSid, true, 5, 0), NESTOR_FAULT_PASID_ENTRY_INVALID) << pgtt;
  }
  for (unsigned pgtt : {2u, 3u}) {
    // QEMU (vtd_get_pe_in_pasid_leaf_table) answers a width the hardware does not support
    // with the invalid-PASID-entry fault.
    for (unsigned aw : {0u, 3u, 4u, 7u}) {  // 3 = 57-bit, not in this SAGAW
      pe =
          pgtt == 2 ? test::pe_second_level(0x80'0000, aw) : test::pe_nested(0x1000, 0x80'0000, aw);
      x.layout.pasid(kSid, 5, pe);
      EXPECT_EQ(x.fault(kSid, true, 5, 0), NESTOR_FAULT_PASID_ENTRY_INVALID) << pgtt << "/" << aw;
    }
    pe = pgtt == 2 ? test::pe_second_level(0x80'0000) : test::pe_nested(0x1000, 0x80'0000);
    pe.extra[0] = 1ull << 50;  // SL pointer beyond HAW
    x.layout.pasid(kSid, 5, pe);
    EXPECT_EQ(x.fault(kSid, true, 5, 0), NESTOR_FAULT_PASID_ENTRY_RESERVED);
  }
  for (unsigned pgtt : {1u, 3u}) {
    // Same QEMU choice for a first-level paging mode the hardware lacks.
    for (unsigned flpm : {1u, 2u, 3u}) {  // 1 = 5-level, unsupported here
      pe = pgtt == 1 ? test::pe_first_level(0x80'0000) : test::pe_nested(0x1000, 0x80'0000);
      pe.flpm = flpm;
      x.layout.pasid(kSid, 5, pe);
      EXPECT_EQ(x.fault(kSid, true, 5, 0), NESTOR_FAULT_PASID_ENTRY_INVALID) << pgtt << "/" << flpm;
    }
  }
  pe = test::pe_first_level(0x80'0000);
  pe.extra[2] = 1ull << 50;  // FL pointer beyond HAW (first-level only: it is an HPA)
  x.layout.pasid(kSid, 5, pe);
  EXPECT_EQ(x.fault(kSid, true, 5, 0), NESTOR_FAULT_PASID_ENTRY_RESERVED);
  // Pass-through ignores AW and FLPM.
  pe = test::pe_pass_through();
  pe.aw = 0;
  pe.flpm = 3;
  x.layout.pasid(kSid, 5, pe);
  EXPECT_EQ(x.fault(kSid, true, 5, 0), 0);
}

// VT-d 9.6 (scalable-mode PASID-table entry): bits 11:10, 86:80, 139:136 and 511:192 are
// reserved; a present entry with any of them set is fault 0x5A. Every field bit around them
// (SLEE 5, PWSNP 87 .. PAT 127:96, SRE .. EAFE 135:128) is accepted.
TEST(EngineStructureFaults, PasidEntryReservedFields) {
  CapiEngine x;
  SlB sl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(sl.map(0x4000, kOut, 12, build::sl_leaf_bits(R | W)), build::Status::kOk);
  x.layout.device(kSid);
  const struct {
    unsigned word;
    uint64_t bits;
    bool reserved;
  } cases[] = {
      {0, 1ull << 10, true},  {0, 1ull << 11, true},  {1, 1ull << 16, true}, {1, 1ull << 22, true},
      {2, 1ull << 8, true},   {2, 1ull << 11, true},  {3, 1ull << 0, true},  {3, 1ull << 63, true},
      {5, 1ull << 7, true},   {7, 1ull << 63, true},  {0, 1ull << 5, false}, {1, 1ull << 23, false},
      {1, 1ull << 31, false}, {1, 1ull << 63, false}, {2, 1ull << 6, false},
  };
  for (const auto &c : cases) {
    vtdw_pasid_entry pe = test::pe_second_level(sl.root());
    pe.extra[c.word] |= c.bits;
    x.layout.pasid(kSid, 5, pe);
    EXPECT_EQ(x.fault(kSid, true, 5, 0x4000), c.reserved ? NESTOR_FAULT_PASID_ENTRY_RESERVED : 0)
        << "word " << c.word << " bits " << std::hex << c.bits;
  }
}

// VT-d 7.1.3, fault 0x48 (Linux dmar.c: "RID_PASID field error in Context-Entry"): a request
// without PASID whose context entry names a RID_PASID its own PASID directory cannot hold.
// A request with that PASID is still 0x46.
TEST(EngineStructureFaults, RidPasidBeyondDirectory) {
  CapiEngine x;
  auto c = test::VtdLayout::default_context();
  c.pdts = 0;              // 2^7 directory entries: PASIDs below 2^13
  c.rid_pasid = 1u << 13;  // the first one beyond
  x.layout.device(kSid, c);
  EXPECT_EQ(x.fault(kSid, false, 0, 0x1000), NESTOR_FAULT_RID_PASID);
  EXPECT_EQ(x.fault(kSid, true, 1u << 13, 0x1000), NESTOR_FAULT_PASID_TOO_LARGE);
}

TEST(EngineStructureFaults, FiveLevelFirstLevelAcceptedWhenSupported) {
  CapiEngine x;
  FlB fl(x.tables, x.tables.alloc_table(), 5);
  ASSERT_EQ(fl.map(0x00F0'0000'0000'0000ull, kOut, 12, kUserRW), build::Status::kOk);
  x.layout.device(kSid);
  x.layout.pasid(kSid, 5, test::pe_first_level(fl.root(), true));
  EXPECT_EQ(x.tr(kSid, true, 5, 0x00F0'0000'0000'0123ull).hpa, kOut + 0x123);
}

TEST(EngineStructureFaults, StructuresInUnbackedMemoryAreAccessFaults) {
  const uint64_t nowhere = 0x40'0000'0000ull;  // 256 GiB: no RAM, no I/O callback
  CapiEngine x;
  ASSERT_EQ(x.set_root_table(nowhere), 0);
  EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_ROOT_ENTRY_ACCESS);
  ASSERT_EQ(x.set_root_table(x.layout.root()), 0);
  const auto w = x.layout.writer();
  vtdw_root(&w, x.layout.root(), kSid >> 8, nowhere, 0, 0, 0);
  EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_CONTEXT_ENTRY_ACCESS);
  auto c = test::VtdLayout::default_context();
  c.pasid_dir = nowhere;
  x.layout.device(kSid, c);
  EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_PASID_DIR_ACCESS);
  c.pasid_dir = x.structs.alloc_table();
  x.layout.device(kSid, c);
  vtdw_pasid_dir_entry(&w, c.pasid_dir, 1, nowhere, 1, 0, 0);
  EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_PASID_ENTRY_ACCESS);
  x.layout.pasid(kSid, 1, test::pe_first_level(nowhere));
  EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_FL_ROOT_ACCESS);
  x.layout.pasid(kSid, 1, test::pe_second_level(nowhere));
  EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_SL_ENTRY_ACCESS);
  x.layout.pasid(kSid, 1, test::pe_nested(0, nowhere));
  EXPECT_EQ(x.fault(kSid, true, 1, 0), NESTOR_FAULT_SL_ENTRY_ACCESS);
}

// --- fault log -----------------------------------------------------------------------------

TEST(EngineFaultLog, RecordsReasonStageAndAddress) {
  CapiEngine x;
  SlB sl(x.tables, x.tables.alloc_table(), 4);
  x.layout.device(kSid);
  x.layout.pasid(kSid, 0x99, test::pe_second_level(sl.root()));
  EXPECT_EQ(x.fault(kSid, true, 0x99, 0xABC000, W), NESTOR_FAULT_SL_ENTRY_NOT_PRESENT);
  EXPECT_EQ(x.fault(kSid, true, 0x98, 0x5000, R), NESTOR_FAULT_PASID_ENTRY_NOT_PRESENT);
  const auto recs = x.drain();
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].source_id, kSid);
  EXPECT_EQ(recs[0].has_pasid, 1);
  EXPECT_EQ(recs[0].pasid, 0x99u);
  EXPECT_EQ(recs[0].iova, 0xABC000u);
  EXPECT_EQ(recs[0].access, W);
  EXPECT_EQ(recs[0].reason, NESTOR_FAULT_SL_ENTRY_NOT_PRESENT);
  EXPECT_EQ(recs[0].stage, NESTOR_STAGE_SECOND_LEVEL);
  EXPECT_EQ(recs[0].level, 4);
  EXPECT_EQ(recs[0].address, 0xABC000u);
  EXPECT_EQ(recs[1].reason, NESTOR_FAULT_PASID_ENTRY_NOT_PRESENT);
  EXPECT_EQ(recs[1].stage, NESTOR_STAGE_STRUCTURES);
  EXPECT_EQ(recs[1].address, 0x5000u);
  EXPECT_TRUE(x.drain().empty());  // drained
  // Successful translations record nothing.
  ASSERT_EQ(sl.map(0, kOut, 12, build::sl_leaf_bits(R)), build::Status::kOk);
  EXPECT_EQ(x.fault(kSid, true, 0x99, 0), 0);
  EXPECT_TRUE(x.drain().empty());
}

TEST(EngineFaultLog, FaultProcessingDisableSuppressesRecording) {
  CapiEngine x;
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  auto c = test::VtdLayout::default_context();
  x.layout.device(kSid, c);
  // FPD in the PASID entry: walk faults are not recorded (but still returned).
  auto pe = test::pe_first_level(fl.root());
  pe.fpd = 1;
  x.layout.pasid(kSid, 1, pe);
  EXPECT_EQ(x.fault(kSid, true, 1, 0x1000), NESTOR_FAULT_FL_ENTRY_NOT_PRESENT);
  // ... and not-present PASID entries with FPD set are not recorded either.
  vtdw_pasid_entry np{};
  np.fpd = 1;
  x.layout.pasid(kSid, 2, np);
  EXPECT_EQ(x.fault(kSid, true, 2, 0), NESTOR_FAULT_PASID_ENTRY_NOT_PRESENT);
  EXPECT_TRUE(x.drain().empty());
  // FPD in the PASID directory entry covers the PASID entry and the walk.
  pe.fpd = 0;
  x.layout.pasid(kSid, 3, pe);
  const auto w = x.layout.writer();
  vtdw_pasid_dir_entry(&w, x.layout.pasid_dir(kSid), 3, x.layout.pasid_table(kSid, 3), 1, 1, 0);
  EXPECT_EQ(x.fault(kSid, true, 3, 0x1000), NESTOR_FAULT_FL_ENTRY_NOT_PRESENT);
  EXPECT_EQ(x.fault(kSid, true, 4, 0x1000), NESTOR_FAULT_PASID_ENTRY_NOT_PRESENT);
  EXPECT_TRUE(x.drain().empty());
  // FPD in the context entry covers everything reached through it.
  c.fpd = 1;
  x.layout.device(kSid, c);
  vtdw_pasid_dir_entry(&w, x.layout.pasid_dir(kSid), 3, x.layout.pasid_table(kSid, 3), 1, 0, 0);
  EXPECT_EQ(x.fault(kSid, true, 3, 0x1000), NESTOR_FAULT_FL_ENTRY_NOT_PRESENT);
  EXPECT_EQ(x.fault(kSid, true, 4, 0x1000), NESTOR_FAULT_PASID_ENTRY_NOT_PRESENT);
  EXPECT_EQ(x.fault(kSid, true, 200, 0x1000), NESTOR_FAULT_PASID_DIR_NOT_PRESENT);
  auto cc = c;
  cc.extra[2] = 1;
  x.layout.device(kSid, cc);
  EXPECT_EQ(x.fault(kSid, true, 3, 0x1000), NESTOR_FAULT_CONTEXT_ENTRY_RESERVED);
  EXPECT_TRUE(x.drain().empty());
  // Without FPD, the same fault is recorded.
  c.fpd = 0;
  x.layout.device(kSid, c);
  EXPECT_EQ(x.fault(kSid, true, 3, 0x1000), NESTOR_FAULT_FL_ENTRY_NOT_PRESENT);
  EXPECT_EQ(x.drain().size(), 1u);
}

TEST(EngineFaultLog, BoundedWithOverflowFlag) {
  nestor_config cfg{};
  cfg.size = sizeof cfg;
  cfg.fault_log_entries = 4;
  CapiEngine x(&cfg);
  for (int i = 0; i < 6; ++i)
    EXPECT_NE(x.fault(uint16_t(0x100 + i), true, 1, uint64_t(i) << 12), 0);
  nestor_fault_record out[8];
  int overflow = 0;
  // Draining in two steps keeps the order.
  ASSERT_EQ(nestor_fault_log_drain(x.e, out, 3, &overflow), 3);
  EXPECT_EQ(overflow, 1);
  EXPECT_EQ(out[0].source_id, 0x100);
  EXPECT_EQ(out[2].source_id, 0x102);
  ASSERT_EQ(nestor_fault_log_drain(x.e, out, 8, &overflow), 1);
  EXPECT_EQ(out[0].source_id, 0x103);  // the 5th and 6th faults were dropped
  EXPECT_EQ(overflow, 1);              // sticky until cleared
  ASSERT_EQ(nestor_fault_log_clear_overflow(x.e), 0);
  ASSERT_EQ(nestor_fault_log_drain(x.e, out, 8, &overflow), 0);
  EXPECT_EQ(overflow, 0);
  EXPECT_EQ(nestor_fault_log_drain(x.e, nullptr, 0, nullptr), 0);
}

}  // namespace
}  // namespace nestor
