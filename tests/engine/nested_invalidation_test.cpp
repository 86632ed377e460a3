// Second-level (type 0x2) invalidation under nesting, through the C ABI only: the host changes
// the second-level mapping of a guest page that holds a first-level table, announces it with a
// page-selective-within-domain IOTLB descriptor in the queue, and after the wait's status
// write every translation whose walk goes through that table must fault.
//
// The rule comes from the architecture, not from the engine: VT-d's IOTLB invalidation with
// page-selective-within-domain granularity removes the second-stage entries of the DID in the
// range and every first-stage and nested entry of the DID (QEMU's vtd_hash_remove_by_page
// quotes the spec); Linux relies on it when it flushes a nesting parent ("implicitly done by HW
// when s2 cache is invalidated", drivers/iommu/intel/cache.c).
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "capi_fixture.h"
#include "nestor.h"
#include "nestor/walkers/builder.h"
#include "qi_descriptors.h"

namespace nestor {
namespace {

using test::BumpSpace;
using test::CapiEngine;
using CMem = test::CapiEngine::Mem;
using SlB = build::SecondLevelBuilder<BumpSpace<CMem>>;

constexpr uint8_t R = NESTOR_ACCESS_READ, W = NESTOR_ACCESS_WRITE, X = NESTOR_ACCESS_EXEC;
constexpr uint16_t kSid = 0x0308;
constexpr uint16_t kDid = 9;
constexpr uint64_t kRing = 0x3F0'0000;
constexpr uint64_t kStatus = 0x3F8'0000;
constexpr uint64_t kGuestTables = 0x1000'0000;  // GPAs of the guest's first-level tables
constexpr uint64_t kGuestData = 0x4000'0000;    // GPAs of the guest's DMA buffers
constexpr uint64_t kHostData = 0x0000'0055'0000'0000ull;
// Accessed and dirty preset, as a guest that pre-faults its buffers leaves them: the walks
// then never write the tables, so the only change is the host's.
constexpr uint64_t kLeaf = build::fl_leaf_bits(true, true, true) | (1u << 5) | (1u << 6);

// IOVAs spread so that the walk shares tables at every level: 2 level-4 entries x 2 level-3
// entries x 2 level-2 entries x 37 pages.
std::vector<uint64_t> iovas() {
  std::vector<uint64_t> v;
  for (uint64_t a = 0; a < 2; ++a)
    for (uint64_t b = 0; b < 2; ++b)
      for (uint64_t c = 0; c < 2; ++c)
        for (uint64_t p = 0; p < 37; ++p)
          v.push_back((a + 1) << 39 | (b + 3) << 30 | (c + 5) << 21 | (p * 3 + 1) << 12);
  return v;
}

using namespace test::qi;  // descriptor encoders

nestor_config config(uint32_t gpa_invalidation) {
  nestor_config c{};
  c.size = sizeof c;
  c.gpa_invalidation = gpa_invalidation;
  return c;
}

class NestedMachine {
 public:
  explicit NestedMachine(uint32_t gpa_invalidation)
      : cfg_(config(gpa_invalidation)),
        x(&cfg_),
        sl(x.tables, x.tables.alloc_table(), 4),
        guest(x.mem, x.tables, sl, kGuestTables, kGuestTables + (16u << 20), R | W),
        fl(guest, guest.alloc_table(), 4) {
    const std::vector<uint64_t> all = iovas();
    for (size_t i = 0; i < all.size(); ++i)
      EXPECT_EQ(fl.map(all[i], kGuestData + i * 4096, 12, kLeaf), build::Status::kOk);
    // Guest RAM for the buffers: 2M second-level pages.
    for (uint64_t off = 0; off < (4u << 20); off += 2u << 20)
      EXPECT_EQ(sl.map(kGuestData + off, kHostData + off, 21, build::sl_leaf_bits(R | W | X)),
                build::Status::kOk);
    x.layout.device(kSid);
    vtdw_pasid_entry pe = test::pe_nested(fl.root(), sl.root());
    pe.did = kDid;
    x.layout.pasid(kSid, 1, pe);
    x.fault(kSid, true, 1, 0xFFFF'F000);  // the fixture settles its engine on first use
    // 256-bit descriptors: PASID-based IOTLB invalidation (0x6) exists only in that width.
    EXPECT_EQ(nestor_qi_configure(x.e, kRing, 128, 256), 0);
  }

  nestor_result tr(uint64_t iova, uint8_t access = R) {
    nestor_result r{};
    EXPECT_GE(vtdw_translate(x.e, kSid, 1, 1, iova, access, 0, &r), 0);
    return r;
  }
  uint64_t expected(size_t i) const { return kHostData + i * 4096; }

  // Queues descriptors followed by a wait with a status write, moves the tail and checks
  // that the status landed before the tail write returned.
  void submit(std::initializer_list<Desc> ds) {
    const uint32_t token = ++token_;
    std::vector<Desc> all(ds);
    all.push_back(wait_status(kStatus, token));
    for (const Desc &d : all) {
      const uint64_t qw[4] = {d.qw0, d.qw1, 0, 0};
      ASSERT_EQ(nestor_mem_write(x.e, kRing + tail_ * 32, qw, 32), 0);
      tail_ = (tail_ + 1) % 128;
    }
    ASSERT_EQ(nestor_qi_write_tail(x.e, tail_), 0);
    uint32_t status = 0;
    ASSERT_EQ(nestor_mem_read(x.e, kStatus, &status, 4), 0);
    ASSERT_EQ(status, token) << "the wait's status write has not landed";
  }

  // The guest page holding the level-`level` table on iova's walk.
  uint64_t table_gpa(uint64_t iova, int level) { return fl.entry_address(iova, level) & ~0xFFFull; }

  nestor_stats stats() {
    nestor_stats s{};
    s.size = sizeof s;
    EXPECT_EQ(nestor_get_stats(x.e, &s), 0);
    return s;
  }

  nestor_config cfg_;
  CapiEngine x;
  SlB sl;
  test::GuestSpace<CMem, BumpSpace<CMem>> guest;
  build::FirstLevelBuilder<decltype(guest)> fl;

 private:
  uint64_t tail_ = 0;
  uint32_t token_ = 0;
};

// (first-level table level whose page the host unmaps, GPA invalidation mode, announce by
// domain instead of by page)
using Param = std::tuple<int, uint32_t, bool>;

class HostUnmapsTablePage : public ::testing::TestWithParam<Param> {};

TEST_P(HostUnmapsTablePage, EveryWalkThroughItFaultsAfterTheWait) {
  const auto [level, mode, by_domain] = GetParam();
  NestedMachine m(mode);
  const std::vector<uint64_t> all = iovas();
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(m.tr(all[i]).hpa, m.expected(i)) << i;
  ASSERT_EQ(m.tr(all[0], W).hpa, m.expected(0));

  const uint64_t victim = m.table_gpa(all[0], level);
  std::vector<bool> through(all.size());
  size_t n_through = 0;
  for (size_t i = 0; i < all.size(); ++i)
    n_through += through[i] = m.table_gpa(all[i], level) == victim;
  ASSERT_GT(n_through, 0u);
  // Level 4 is the root table: every walk goes through it.
  if (level < 4) {
    ASSERT_LT(n_through, all.size()) << "the test needs walks that avoid it too";
  }
  ASSERT_EQ(m.sl.unmap(victim, 12), build::Status::kOk);
  // Still served from the caches: otherwise the check below would prove nothing.
  ASSERT_EQ(m.tr(all[0]).hpa, m.expected(0));

  // As the issue reproduces it: G=11b, DR=DW=1, the domain's DID, AM=0.
  m.submit({by_domain ? iotlb_domain(kDid) : iotlb_page_gpa(kDid, victim, 0, false, true)});
  for (size_t i = 0; i < all.size(); ++i) {
    const nestor_result r = m.tr(all[i], i % 4 == 0 ? W : R);
    if (through[i]) {
      // The second-level walk of the table pointer fails: a first-level entry read fault
      // reached through the nested (second-level) lookup of the table's GPA.
      EXPECT_NE(r.fault, 0) << "stale translation of iova 0x" << std::hex << all[i]
                            << " whose level-" << level << " table page was unmapped";
    } else {
      EXPECT_EQ(r.fault, 0) << "iova 0x" << std::hex << all[i];
      EXPECT_EQ(r.hpa, m.expected(i));
    }
  }
}

std::string param_name(const ::testing::TestParamInfo<Param> &info) {
  const auto [level, mode, by_domain] = info.param;
  return "L" + std::to_string(level) +
         (mode == NESTOR_GPA_INV_DEPENDENCIES ? "_dependencies" : "_architectural") +
         (by_domain ? "_domain" : "_page");
}

INSTANTIATE_TEST_SUITE_P(
    Levels, HostUnmapsTablePage,
    ::testing::Combine(::testing::Values(1, 2, 3, 4),
                       ::testing::Values(uint32_t{NESTOR_GPA_INV_ARCHITECTURAL},
                                         uint32_t{NESTOR_GPA_INV_DEPENDENCIES}),
                       ::testing::Bool()),
    param_name);

TEST(NestedInvalidation, HostRemapOfTablePageToACopyThenGuestEditIsSeen) {
  // Remap to a copy, as migration or compaction does: the walk must follow the new host page,
  // so a later guest edit (written through the new mapping) shows after its own invalidation.
  for (uint32_t mode :
       {uint32_t{NESTOR_GPA_INV_ARCHITECTURAL}, uint32_t{NESTOR_GPA_INV_DEPENDENCIES}}) {
    NestedMachine m(mode);
    const std::vector<uint64_t> all = iovas();
    for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(m.tr(all[i]).hpa, m.expected(i));
    const uint64_t table = m.table_gpa(all[0], 1);
    const uint64_t old_hpa = m.guest.hpa_of(table);
    const uint64_t copy = m.x.tables.alloc_table();
    std::vector<uint64_t> page(512);
    ASSERT_EQ(nestor_mem_read(m.x.e, old_hpa, page.data(), 4096), 0);
    ASSERT_EQ(nestor_mem_write(m.x.e, copy, page.data(), 4096), 0);
    ASSERT_EQ(m.sl.map(table, copy, 12, build::sl_leaf_bits(R | W)), build::Status::kOk);
    m.guest.gpa_to_hpa[table] = copy;
    m.submit({iotlb_page_gpa(kDid, table)});
    // The guest remaps all[0] (its leaf lives in the copied table) and announces it the way
    // the owner of a first-level table does (PASID-based IOTLB, CACHE_INVLD).
    ASSERT_EQ(m.fl.map(all[0], kGuestData + (1u << 20), 12, kLeaf), build::Status::kOk);
    m.submit({piotlb_page(kDid, 1, all[0])});
    EXPECT_EQ(m.tr(all[0]).hpa, kHostData + (1u << 20)) << "walk read the old host page";
    for (size_t i = 1; i < all.size(); ++i) EXPECT_EQ(m.tr(all[i]).hpa, m.expected(i));
  }
}

TEST(NestedInvalidation, ArchitecturalTypeTwoRemovesFirstLevelEntriesOfTheDomain) {
  // VT-d: page-selective-within-domain IOTLB invalidation removes every first-stage entry of
  // the DID whatever the address. A guest leaf change announced only by a type 0x2 of an
  // unrelated GPA must therefore be visible afterwards in the architectural mode.
  NestedMachine m(NESTOR_GPA_INV_ARCHITECTURAL);
  const std::vector<uint64_t> all = iovas();
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(m.tr(all[i]).hpa, m.expected(i));
  ASSERT_EQ(m.fl.map(all[5], kGuestData + (1u << 20), 12, kLeaf), build::Status::kOk);
  ASSERT_EQ(m.tr(all[5]).hpa, m.expected(5)) << "not cached: the test proves nothing";
  m.submit({iotlb_page_gpa(kDid, kGuestData + (3u << 20))});
  EXPECT_EQ(m.tr(all[5]).hpa, kHostData + (1u << 20));
}

TEST(NestedInvalidation, DependencyModeKeepsEntriesThatDoNotDependOnTheRange) {
  // 100 type 0x2 invalidations of guest pages no translation uses: in the dependency mode the
  // nested entries stay cached (no walks), while the architecture's reach drops them all.
  for (uint32_t mode :
       {uint32_t{NESTOR_GPA_INV_ARCHITECTURAL}, uint32_t{NESTOR_GPA_INV_DEPENDENCIES}}) {
    NestedMachine m(mode);
    const std::vector<uint64_t> all = iovas();
    for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(m.tr(all[i]).hpa, m.expected(i));
    const uint64_t walks_before = m.stats().walks;
    for (uint64_t k = 0; k < 100; ++k) {
      m.submit({iotlb_page_gpa(kDid, kGuestData + (3u << 20) + k * 4096)});
      for (size_t i = 0; i < all.size(); i += 7) ASSERT_EQ(m.tr(all[i]).hpa, m.expected(i));
    }
    const uint64_t walks = m.stats().walks - walks_before;
    if (mode == NESTOR_GPA_INV_DEPENDENCIES)
      EXPECT_EQ(walks, 0u) << "an unrelated second-level change dropped nested entries";
    else
      EXPECT_GE(walks, 100u * ((all.size() + 6) / 7)) << "type 0x2 kept first-level entries";
  }
}

TEST(NestedInvalidation, PagingOnlyGlobalFlushDoesNotForgetTablePages) {
  // A global flush of the paging-structure caches alone leaves IOTLB entries whose walks read
  // first-level tables; a later host unmap of such a table page, announced by GPA, must still
  // reach them in the dependency mode.
  NestedMachine m(NESTOR_GPA_INV_DEPENDENCIES);
  const std::vector<uint64_t> all = iovas();
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(m.tr(all[i]).hpa, m.expected(i));
  nestor_inv_op op{};
  op.cache = NESTOR_CACHE_PAGING;
  op.scope = NESTOR_SCOPE_GLOBAL;
  ASSERT_EQ(nestor_inv_submit(m.x.e, &op), 0);
  ASSERT_EQ(nestor_inv_wait(m.x.e), 0);
  const uint64_t victim = m.table_gpa(all[0], 1);
  ASSERT_EQ(m.sl.unmap(victim, 12), build::Status::kOk);
  m.submit({iotlb_page_gpa(kDid, victim)});
  EXPECT_NE(m.tr(all[0]).fault, 0) << "stale translation through an unmapped table page";
}

TEST(NestedInvalidation, UnknownGpaInvalidationModeIsRefused) {
  nestor_config c = config(7);
  EXPECT_EQ(nestor_engine_create(&c), nullptr);
}

}  // namespace
}  // namespace nestor
