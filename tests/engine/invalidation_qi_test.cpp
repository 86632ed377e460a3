// Queued invalidation through the C ABI: hand-built VT-d descriptors in machine memory, the
// tail register, wait status writes, queue errors; the uAPI-style calls; statistics.
//
// Pattern of every effect test: build a mapping, translate (fills the caches), change the
// mapping in memory, translate again and see the OLD result (proves the cache holds it, so the
// later check is not vacuous), invalidate, translate and see the NEW result.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "capi_fixture.h"
#include "nestor.h"
#include "nestor/walkers/builder.h"
#include "qi_descriptors.h"

namespace nestor {
namespace {

using test::BumpSpace;
using test::CapiEngine;
using CMem = test::CapiEngine::Mem;
using FlB = build::FirstLevelBuilder<BumpSpace<CMem>>;
using SlB = build::SecondLevelBuilder<BumpSpace<CMem>>;

constexpr uint64_t kOut = 0x0000'0066'0000'0000ull;
constexpr uint8_t R = NESTOR_ACCESS_READ, W = NESTOR_ACCESS_WRITE, X = NESTOR_ACCESS_EXEC;
constexpr uint64_t kUserRW = build::fl_leaf_bits(true, true, true);
constexpr uint16_t kSid = 0x0210;
constexpr uint16_t kDid = 5;
// Queue and status words live high in the fixture's RAM, away from its bump allocators.
constexpr uint64_t kRing = 0x3F0'0000;
constexpr uint64_t kStatus = 0x3F8'0000;

using namespace test::qi;  // descriptor encoders

class Qi : public ::testing::Test {
 protected:
  // Writes descriptors from `index` on, in slots of the width start() configured.
  void put(uint64_t index, std::initializer_list<Desc> ds) {
    const unsigned bits = bits_;
    for (const Desc &d : ds) {
      uint64_t qw[4] = {d.qw0, d.qw1, 0, 0};
      ASSERT_EQ(nestor_mem_write(x.e, kRing + index * (bits / 8), qw, bits / 8), 0);
      ++index;
    }
  }
  uint32_t status() {
    uint32_t v = 0;
    EXPECT_EQ(nestor_mem_read(x.e, kStatus, &v, 4), 0);
    return v;
  }
  // Direct C ABI translation: the fixture's x.tr() would rebuild the engine after memory
  // writes, which would hide exactly the stale entries these tests look for.
  nestor_result tr(uint32_t pasid, uint64_t iova, uint8_t access = R) {
    nestor_result r{};
    EXPECT_GE(vtdw_translate(x.e, kSid, 1, pasid, iova, access, 0, &r), 0);
    return r;
  }
  // Call once all structures are written: the fixture rebuilds the engine on its first
  // translation after writes, so the queue is configured on the final engine.
  // PASID-granular descriptors (0x6, 0x7, 0x8) need bits = 256.
  void start(uint64_t entries = 256, unsigned bits = 128) {
    x.fault(kSid, true, 1, 0xFFFF'F000);
    ASSERT_EQ(nestor_qi_configure(x.e, kRing, entries, bits), 0);
    bits_ = bits;
  }

  // A first-level table for (kSid, PASID 1, kDid) mapping one 4K page `iova` -> `hpa`.
  FlB &first_level_pasid1(uint64_t iova, uint64_t hpa) {
    fl_.emplace(x.tables, x.tables.alloc_table(), 4);
    EXPECT_EQ(fl_->map(iova, hpa, 12, kUserRW), build::Status::kOk);
    x.layout.device(kSid);
    vtdw_pasid_entry pe = test::pe_first_level(fl_->root());
    pe.did = kDid;
    x.layout.pasid(kSid, 1, pe);
    return *fl_;
  }

  CapiEngine x;
  unsigned bits_ = 128;
  std::optional<FlB> fl_;
};

// Nested (device, PASID 1): IOVA 0x7000'0000 (2M FL page) -> GPA 0x2000'0000; GPA
// 0x2000'3000 -> kOut + 0x9000 in the second level.
struct Nested {
  explicit Nested(CapiEngine &x)
      : sl(x.tables, x.tables.alloc_table(), 4),
        guest(x.mem, x.tables, sl, 0x1000'0000, 0x1100'0000),
        fl(guest, guest.alloc_table(), 4) {
    EXPECT_EQ(fl.map(0x7000'0000, 0x2000'0000, 21, kUserRW), build::Status::kOk);
    EXPECT_EQ(sl.map(0x2000'3000, kOut + 0x9000, 12, build::sl_leaf_bits(R | W | X)),
              build::Status::kOk);
    x.layout.device(kSid);
    vtdw_pasid_entry pe = test::pe_nested(fl.root(), sl.root());
    pe.did = kDid;
    x.layout.pasid(kSid, 1, pe);
  }
  SlB sl;
  test::GuestSpace<CMem, BumpSpace<CMem>> guest;
  build::FirstLevelBuilder<decltype(guest)> fl;
};

TEST_F(Qi, IotlbPageByGpaRemovesNestedEntry) {
  Nested n(x);
  start();
  ASSERT_EQ(tr(1, 0x7000'3456).hpa, kOut + 0x9456);
  // The guest's second level now maps the GPA elsewhere.
  ASSERT_EQ(n.sl.map(0x2000'3000, kOut + 0xA000, 12, build::sl_leaf_bits(R | W | X)),
            build::Status::kOk);
  ASSERT_EQ(tr(1, 0x7000'3456).hpa, kOut + 0x9456) << "not cached: the test proves nothing";
  put(0, {iotlb_page_gpa(kDid, 0x2000'3000), wait_status(kStatus, 0xC0DE)});
  EXPECT_EQ(nestor_qi_write_tail(x.e, 2), 0);
  EXPECT_EQ(status(), 0xC0DEu);  // the status write landed before the tail write returned
  const nestor_result r = tr(1, 0x7000'3456);
  EXPECT_EQ(r.fault, 0);
  EXPECT_EQ(r.hpa, kOut + 0xA456);
  uint64_t head = 99;
  int err = -1;
  ASSERT_EQ(nestor_qi_state(x.e, &head, &err), 0);
  EXPECT_EQ(head, 2u);
  EXPECT_EQ(err, NESTOR_QI_ERR_NONE);
}

TEST_F(Qi, IotlbPageByGpaOutsideRangeKeepsSecondLevelEntry) {
  // Second-level-only PASID: a GPA invalidation of another page must leave this one cached
  // (the range is honoured), while the covering one removes it.
  SlB sl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(sl.map(0x4000, kOut, 12, build::sl_leaf_bits(R | W)), build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_second_level(sl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, 1, pe);
  start();
  ASSERT_EQ(tr(1, 0x4000).hpa, kOut);
  ASSERT_EQ(sl.map(0x4000, kOut + 0x1000, 12, build::sl_leaf_bits(R | W)), build::Status::kOk);
  put(0, {iotlb_page_gpa(kDid, 0x8000), wait_status(kStatus, 1)});
  ASSERT_EQ(nestor_qi_write_tail(x.e, 2), 0);
  EXPECT_EQ(tr(1, 0x4000).hpa, kOut) << "page outside the range was invalidated";
  put(2, {iotlb_page_gpa(kDid, 0x4000), wait_status(kStatus, 2)});
  ASSERT_EQ(nestor_qi_write_tail(x.e, 4), 0);
  EXPECT_EQ(status(), 2u);
  EXPECT_EQ(tr(1, 0x4000).hpa, kOut + 0x1000);
}

TEST_F(Qi, PasidIotlbRemovesStaleFirstLevelTranslation) {
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x1000, 12, kUserRW), build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_first_level(fl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, 1, pe);
  start(128, 256);
  ASSERT_EQ(tr(1, 0x5000).hpa, kOut + 0x1000);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x2000, 12, kUserRW), build::Status::kOk);
  ASSERT_EQ(tr(1, 0x5000).hpa, kOut + 0x1000) << "not cached";
  // Another PASID's page does not touch this one.
  put(0, {piotlb_page(kDid, 2, 0x5000), wait_status(kStatus, 7)});
  ASSERT_EQ(nestor_qi_write_tail(x.e, 2), 0);
  EXPECT_EQ(tr(1, 0x5000).hpa, kOut + 0x1000);
  put(2, {piotlb_page(kDid, 1, 0x5000), wait_status(kStatus, 8)});
  ASSERT_EQ(nestor_qi_write_tail(x.e, 4), 0);
  EXPECT_EQ(status(), 8u);
  EXPECT_EQ(tr(1, 0x5000).hpa, kOut + 0x2000);
}

TEST_F(Qi, ContextCacheInvalidationMakesContextChangeVisible) {
  SlB sl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(sl.map(0x4000, kOut, 12, build::sl_leaf_bits(R | W)), build::Status::kOk);
  x.layout.device(kSid);
  x.layout.pasid(kSid, 1, test::pe_second_level(sl.root()));
  start();
  ASSERT_EQ(tr(1, 0x4000).fault, 0);
  // PASIDs disabled in the context entry (same directory), written behind the engine's back.
  vtdw_context c = test::VtdLayout::default_context();
  c.paside = 0;
  c.pasid_dir = x.layout.pasid_dir(kSid);
  const vtdw_writer raw = vtdw_capi_writer(x.e);
  ASSERT_EQ(vtdw_context_entry(&raw, x.layout.context_table(kSid), kSid & 0xFF, &c), 0);
  ASSERT_EQ(tr(1, 0x4000).fault, 0) << "context entry not cached";
  put(0, {context_device(kSid, 0), wait_status(kStatus, 1)});
  ASSERT_EQ(nestor_qi_write_tail(x.e, 2), 0);
  EXPECT_EQ(tr(1, 0x4000).fault, NESTOR_FAULT_CONTEXT_PASID_DISABLED);
  // Global variant: re-enable and invalidate everything.
  c.paside = 1;
  ASSERT_EQ(vtdw_context_entry(&raw, x.layout.context_table(kSid), kSid & 0xFF, &c), 0);
  put(2, {context_global(), wait_status(kStatus, 2)});
  ASSERT_EQ(nestor_qi_write_tail(x.e, 4), 0);
  EXPECT_EQ(tr(1, 0x4000).fault, 0);
}

TEST_F(Qi, PasidCacheInvalidationMakesPasidEntryChangeVisible) {
  SlB sl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(sl.map(0x4000, kOut, 12, build::sl_leaf_bits(R | W)), build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_second_level(sl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, 1, pe);
  start(128, 256);
  ASSERT_EQ(tr(1, 0x4000).fault, 0);
  vtdw_pasid_entry gone{};  // not present
  const vtdw_writer raw = vtdw_capi_writer(x.e);
  ASSERT_EQ(vtdw_pasid_entry_write(&raw, x.layout.pasid_table(kSid, 1), 1, &gone), 0);
  ASSERT_EQ(tr(1, 0x4000).fault, 0) << "PASID entry not cached";
  put(0, {pasid_cache_pasid(kDid, 2), wait_status(kStatus, 1)});  // other PASID: no effect
  ASSERT_EQ(nestor_qi_write_tail(x.e, 2), 0);
  EXPECT_EQ(tr(1, 0x4000).fault, 0);
  put(2, {pasid_cache_pasid(kDid, 1), wait_status(kStatus, 2)});
  ASSERT_EQ(nestor_qi_write_tail(x.e, 4), 0);
  EXPECT_EQ(tr(1, 0x4000).fault, NESTOR_FAULT_PASID_ENTRY_NOT_PRESENT);
}

TEST_F(Qi, BadDescriptorStopsQueueUntilClearError) {
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x1000, 12, kUserRW), build::Status::kOk);
  ASSERT_EQ(fl.map(0x6000, kOut + 0x3000, 12, kUserRW), build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_first_level(fl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, 1, pe);
  start(128, 256);
  ASSERT_EQ(tr(1, 0x5000).hpa, kOut + 0x1000);
  ASSERT_EQ(tr(1, 0x6000).hpa, kOut + 0x3000);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x2000, 12, kUserRW), build::Status::kOk);
  ASSERT_EQ(fl.map(0x6000, kOut + 0x4000, 12, kUserRW), build::Status::kOk);
  Desc bad = piotlb_page(kDid, 1, 0x6000);
  bad.qw0 |= 1u << 8;  // reserved
  put(0, {piotlb_page(kDid, 1, 0x5000), bad, piotlb_page(kDid, 1, 0x6000),
          wait_status(kStatus, 0x77)});
  EXPECT_EQ(nestor_qi_write_tail(x.e, 4), -EBUSY);
  uint64_t head = 0;
  int err = 0;
  ASSERT_EQ(nestor_qi_state(x.e, &head, &err), 0);
  EXPECT_EQ(head, 1u);
  EXPECT_EQ(err, NESTOR_QI_ERR_IQE);
  // The descriptor before the bad one took effect; the ones after it did not.
  EXPECT_EQ(tr(1, 0x5000).hpa, kOut + 0x2000);
  EXPECT_EQ(tr(1, 0x6000).hpa, kOut + 0x3000);
  EXPECT_EQ(status(), 0u);
  // Still stopped: another tail write does nothing until the error is cleared.
  EXPECT_EQ(nestor_qi_write_tail(x.e, 4), -EBUSY);
  EXPECT_EQ(tr(1, 0x6000).hpa, kOut + 0x3000);
  // Software fixes the descriptor, clears the error and rings the doorbell again.
  put(1, {piotlb_page(kDid, 1, 0x6000)});
  ASSERT_EQ(nestor_qi_clear_error(x.e), 0);
  EXPECT_EQ(nestor_qi_write_tail(x.e, 4), 0);
  ASSERT_EQ(nestor_qi_state(x.e, &head, &err), 0);
  EXPECT_EQ(head, 4u);
  EXPECT_EQ(err, NESTOR_QI_ERR_NONE);
  EXPECT_EQ(status(), 0x77u);
  EXPECT_EQ(tr(1, 0x6000).hpa, kOut + 0x4000);
  nestor_inv_stats st{};
  st.size = sizeof st;
  ASSERT_EQ(nestor_inv_get_stats(x.e, &st), 0);
  // Counted once decoded: slot 0, then (after the fix) slots 1 and 2; the bad one is not.
  EXPECT_EQ(st.descriptors_by_type[6], 3u);
  EXPECT_EQ(st.descriptors_by_type[5], 1u);
  EXPECT_GE(st.errors, 1u);
}

// QEMU vtd_inv_desc_reserved_check: a 256-bit-only descriptor (here a PASID-based IOTLB
// invalidation, 0x6) in a queue set up for 128-bit descriptors is an invalid descriptor: IQE,
// head on it, and nothing behind it runs.
TEST_F(Qi, PasidGranularDescriptorIn128BitQueueIsInvalid) {
  first_level_pasid1(0x5000, kOut + 0x1000);
  start();
  put(0, {piotlb_page(kDid, 1, 0x5000), wait_status(kStatus, 3)});
  EXPECT_EQ(nestor_qi_write_tail(x.e, 2), -EBUSY);
  uint64_t head = 9;
  int err = 0;
  ASSERT_EQ(nestor_qi_state(x.e, &head, &err), 0);
  EXPECT_EQ(head, 0u);
  EXPECT_EQ(err, NESTOR_QI_ERR_IQE);
  EXPECT_EQ(status(), 0u);
}

// Linux's qi_flush_piotlb sends address masks up to the address width for large unmaps and
// QEMU's vtd_process_piotlb_desc takes them; CAP.MAMV (18 here) limits only type 0x2. A large
// unmap must therefore take effect instead of stopping the queue.
TEST_F(Qi, PasidIotlbAddressMaskAboveMamvTakesEffect) {
  FlB &fl = first_level_pasid1(0x5000, kOut + 0x1000);
  start(128, 256);
  ASSERT_EQ(tr(1, 0x5000).hpa, kOut + 0x1000);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x2000, 12, kUserRW), build::Status::kOk);
  ASSERT_EQ(tr(1, 0x5000).hpa, kOut + 0x1000) << "not cached";
  put(0, {piotlb_page(kDid, 1, 0, 36), wait_status(kStatus, 4)});  // 2^36 pages from 0
  ASSERT_EQ(nestor_qi_write_tail(x.e, 2), 0);
  EXPECT_EQ(status(), 4u);
  EXPECT_EQ(tr(1, 0x5000).hpa, kOut + 0x2000);
}

// Invalidation wait, QEMU vtd_process_wait_desc: a status write that fails makes the
// descriptor invalid (IQE); a wait with none of SW, IF and FN is invalid; FN alone is the
// VT-d 7.10 barrier and completes.
TEST_F(Qi, WaitStatusOutsideRamAndEmptyWaitAreInvalid) {
  start();
  put(0, {context_global(), wait_status(uint64_t{1} << 40, 1)});  // no RAM at 1 TiB
  EXPECT_EQ(nestor_qi_write_tail(x.e, 2), -EBUSY);
  uint64_t head = 9;
  int err = 0;
  ASSERT_EQ(nestor_qi_state(x.e, &head, &err), 0);
  EXPECT_EQ(head, 1u);
  EXPECT_EQ(err, NESTOR_QI_ERR_IQE);

  put(1, {Desc{0x5 | (1u << 7), 0}});  // PD alone: asks for nothing
  ASSERT_EQ(nestor_qi_clear_error(x.e), 0);
  EXPECT_EQ(nestor_qi_write_tail(x.e, 2), -EBUSY);
  ASSERT_EQ(nestor_qi_state(x.e, &head, &err), 0);
  EXPECT_EQ(head, 1u);
  EXPECT_EQ(err, NESTOR_QI_ERR_IQE);

  put(1, {Desc{0x5 | (1u << 6), 0}, wait_status(kStatus, 6)});  // FN alone, then a status
  ASSERT_EQ(nestor_qi_clear_error(x.e), 0);
  EXPECT_EQ(nestor_qi_write_tail(x.e, 3), 0);
  ASSERT_EQ(nestor_qi_state(x.e, &head, &err), 0);
  EXPECT_EQ(head, 3u);
  EXPECT_EQ(err, NESTOR_QI_ERR_NONE);
  EXPECT_EQ(status(), 6u);
}

TEST_F(Qi, Wide256BitDescriptorsAndConfigureValidation) {
  EXPECT_EQ(nestor_qi_write_tail(x.e, 1), -EINVAL);  // not configured
  EXPECT_EQ(nestor_qi_configure(x.e, kRing, 256, 64), -EINVAL);
  EXPECT_EQ(nestor_qi_configure(x.e, kRing + 8, 256, 128), -EINVAL);  // misaligned base
  EXPECT_EQ(nestor_qi_configure(x.e, kRing, 100, 128), -EINVAL);      // not 2^n pages
  EXPECT_EQ(nestor_qi_configure(x.e, kRing, 0, 128), -EINVAL);
  EXPECT_EQ(nestor_qi_configure(x.e, kRing, 256 << 8, 128), -EINVAL);  // > 128 pages
  EXPECT_EQ(nestor_qi_configure(nullptr, kRing, 256, 128), -EINVAL);
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x1000, 12, kUserRW), build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_first_level(fl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, 1, pe);
  start(128, 256);
  ASSERT_EQ(tr(1, 0x5000).hpa, kOut + 0x1000);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x2000, 12, kUserRW), build::Status::kOk);
  put(0, {piotlb_page(kDid, 1, 0x5000), wait_status(kStatus, 9)});
  ASSERT_EQ(nestor_qi_write_tail(x.e, 2), 0);
  EXPECT_EQ(status(), 9u);
  EXPECT_EQ(tr(1, 0x5000).hpa, kOut + 0x2000);
  EXPECT_EQ(nestor_qi_write_tail(x.e, 128), -EBUSY);  // beyond the queue: IQE
  int err = 0;
  ASSERT_EQ(nestor_qi_state(x.e, nullptr, &err), 0);
  EXPECT_EQ(err, NESTOR_QI_ERR_IQE);
}

TEST_F(Qi, BackgroundWorkerCompletesStatusWrites) {
  nestor_config cfg{};
  cfg.size = sizeof cfg;
  cfg.flags = NESTOR_CFG_BACKGROUND_INV;
  CapiEngine bg(&cfg);
  FlB fl(bg.tables, bg.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x1000, 12, kUserRW), build::Status::kOk);
  bg.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_first_level(fl.root());
  pe.did = kDid;
  bg.layout.pasid(kSid, 1, pe);
  ASSERT_EQ(bg.tr(kSid, true, 1, 0x5000).hpa, kOut + 0x1000);
  ASSERT_EQ(nestor_qi_configure(bg.e, kRing, 128, 256), 0);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x2000, 12, kUserRW), build::Status::kOk);
  uint64_t qw[8] = {piotlb_page(kDid, 1, 0x5000).qw0, piotlb_page(kDid, 1, 0x5000).qw1, 0, 0,
                    wait_status(kStatus, 5).qw0,      wait_status(kStatus, 5).qw1,      0, 0};
  ASSERT_EQ(nestor_mem_write(bg.e, kRing, qw, sizeof qw), 0);
  ASSERT_EQ(nestor_qi_write_tail(bg.e, 2), 0);
  // The worker completes asynchronously; a typed wait orders after the queued wait.
  ASSERT_EQ(nestor_inv_wait(bg.e), 0);
  uint32_t v = 0;
  ASSERT_EQ(nestor_mem_read(bg.e, kStatus, &v, 4), 0);
  EXPECT_EQ(v, 5u);
  nestor_result r{};
  ASSERT_EQ(vtdw_translate(bg.e, kSid, 1, 1, 0x5000, R, 0, &r), 0);
  EXPECT_EQ(r.hpa, kOut + 0x2000);
}

// --- typed and uAPI front ends --------------------------------------------------------------

TEST_F(Qi, TypedSubmitTakesEffectAtWait) {
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x1000, 12, kUserRW), build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_first_level(fl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, 1, pe);
  start();
  ASSERT_EQ(tr(1, 0x5000).hpa, kOut + 0x1000);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x2000, 12, kUserRW), build::Status::kOk);
  nestor_inv_op op{};
  op.cache = NESTOR_CACHE_IOTLB | NESTOR_CACHE_PAGING;
  op.scope = NESTOR_SCOPE_RANGE;
  op.did = kDid;
  op.pasid = 1;
  op.addr = 0x5000;
  op.npages = 1;
  ASSERT_EQ(nestor_inv_submit(x.e, &op), 0);
  ASSERT_EQ(nestor_inv_wait(x.e), 0);
  EXPECT_EQ(tr(1, 0x5000).hpa, kOut + 0x2000);
  op.npages = 0;
  EXPECT_EQ(nestor_inv_submit(x.e, &op), -EINVAL);
  EXPECT_EQ(nestor_inv_submit(nullptr, &op), -EINVAL);
  EXPECT_EQ(nestor_inv_wait(nullptr), -EINVAL);
}

TEST(InvUapi, ValidityTable) {
  CapiEngine x;
  const uint32_t I = NESTOR_UAPI_CACHE_IOTLB, D = NESTOR_UAPI_CACHE_DEV_IOTLB,
                 P = NESTOR_UAPI_CACHE_PASID;
  struct Row {
    uint32_t cache;
    bool ok[3];  // DOMAIN, PASID, ADDR
  };
  // docs/INVQ.md "uAPI": a mask is valid only if every type in it is valid for the granularity.
  const Row rows[] = {
      {I, {true, true, true}},           {D, {false, true, true}},
      {P, {true, true, false}},          {I | D, {false, true, true}},
      {I | P, {true, true, false}},      {D | P, {false, true, false}},
      {I | D | P, {false, true, false}}, {0, {false, false, false}},
      {8, {false, false, false}},
  };
  for (const Row &row : rows) {
    for (uint32_t g = 0; g < 3; ++g) {
      nestor_uapi_cache_inv inv{};
      inv.size = sizeof inv;
      inv.cache = row.cache;
      inv.granularity = g;
      inv.did = kDid;
      inv.source_id = kSid;
      inv.pasid = 1;
      inv.addr = 0x20'0000;
      inv.granule_size = 4096;
      inv.nb_granules = 2;
      EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), row.ok[g] ? 0 : -EINVAL)
          << "cache " << row.cache << " granularity " << g;
    }
  }
  nestor_uapi_cache_inv inv{};
  inv.size = sizeof inv;
  inv.cache = I;
  inv.granularity = NESTOR_UAPI_GRAN_ADDR;
  inv.pasid = 1;
  inv.addr = 0x20'0000;
  inv.granule_size = 2u << 20;
  inv.nb_granules = 1;
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), 0);
  inv.addr = 0x20'1000;  // not 2M aligned
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), -EINVAL);
  inv.addr = 0x20'0000;
  // Linux iommu_inv_addr_info: granule_size is the page/block size of the mapping, any power
  // of two from 4K with addr aligned to it.
  inv.granule_size = 8192;
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), 0);
  inv.granule_size = 64u << 10;
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), 0);
  inv.granule_size = 12288;  // not a power of two
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), -EINVAL);
  inv.granule_size = 2048;  // below 4K
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), -EINVAL);
  inv.granule_size = 64u << 10;
  inv.addr = 0x20'8000;  // not aligned to 64K
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), -EINVAL);
  inv.addr = 0x20'0000;
  inv.granule_size = 4096;
  inv.nb_granules = 0;
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), -EINVAL);
  inv.nb_granules = 1;
  inv.granularity = 3;
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), -EINVAL);
  inv.granularity = NESTOR_UAPI_GRAN_ADDR;
  inv.flags = 0x4;  // unknown flag
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), -EINVAL);
  inv.flags = NESTOR_UAPI_FLAG_LEAF;
  inv.pasid = 1u << 20;  // wider than 20 bits
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), -EINVAL);
  EXPECT_EQ(nestor_uapi_cache_invalidate(x.e, nullptr), -EINVAL);
  EXPECT_EQ(nestor_uapi_cache_invalidate(nullptr, &inv), -EINVAL);
}

TEST_F(Qi, UapiAddrInvalidationRemovesFirstLevelEntry) {
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x1000, 12, kUserRW), build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_first_level(fl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, 1, pe);
  start();
  ASSERT_EQ(tr(1, 0x5000).hpa, kOut + 0x1000);
  ASSERT_EQ(fl.map(0x5000, kOut + 0x2000, 12, kUserRW), build::Status::kOk);
  nestor_uapi_cache_inv inv{};
  inv.size = sizeof inv;
  inv.cache = NESTOR_UAPI_CACHE_IOTLB;
  inv.granularity = NESTOR_UAPI_GRAN_ADDR;
  inv.did = kDid;
  inv.pasid = 1;
  inv.addr = 0x4000;
  inv.granule_size = 4096;
  inv.nb_granules = 2;
  ASSERT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), 0);
  ASSERT_EQ(nestor_inv_wait(x.e), 0);
  EXPECT_EQ(tr(1, 0x5000).hpa, kOut + 0x2000);
}

// Linux iommu_inv_addr_info without IOMMU_INV_ADDR_FLAGS_PASID: an address-selective
// invalidation of the device's requests without PASID. It must be accepted and must remove
// the stale translation those requests hit.
TEST_F(Qi, UapiAddrInvalidationWithoutPasid) {
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x4000, kOut + 0x1000, 12, kUserRW), build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_first_level(fl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, 0, pe);  // RID_PASID 0: what requests without PASID use
  start();
  nestor_result r{};
  ASSERT_GE(vtdw_translate(x.e, kSid, 0, 0, 0x4000, R, 0, &r), 0);
  ASSERT_EQ(r.hpa, kOut + 0x1000);
  ASSERT_EQ(fl.map(0x4000, kOut + 0x2000, 12, kUserRW), build::Status::kOk);
  ASSERT_GE(vtdw_translate(x.e, kSid, 0, 0, 0x4000, R, 0, &r), 0);
  ASSERT_EQ(r.hpa, kOut + 0x1000) << "not cached";
  nestor_uapi_cache_inv inv{};
  inv.size = sizeof inv;
  inv.cache = NESTOR_UAPI_CACHE_IOTLB;
  inv.granularity = NESTOR_UAPI_GRAN_ADDR;
  inv.flags = NESTOR_UAPI_FLAG_ADDR_NO_PASID;
  inv.did = kDid;
  inv.pasid = 0xFFFF'FFFF;  // ignored without a PASID
  inv.addr = 0x4000;
  inv.granule_size = 4096;
  inv.nb_granules = 1;
  ASSERT_EQ(nestor_uapi_cache_invalidate(x.e, &inv), 0);
  ASSERT_EQ(nestor_inv_wait(x.e), 0);
  ASSERT_GE(vtdw_translate(x.e, kSid, 0, 0, 0x4000, R, 0, &r), 0);
  EXPECT_EQ(r.hpa, kOut + 0x2000);
}

TEST_F(Qi, UapiArrayPartialProgress) {
  FlB fl(x.tables, x.tables.alloc_table(), 4);
  for (uint64_t p = 1; p <= 4; ++p)
    ASSERT_EQ(fl.map(p << 12, kOut + (p << 12), 12, kUserRW), build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_first_level(fl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, 1, pe);
  start();
  for (uint64_t p = 1; p <= 4; ++p) ASSERT_EQ(tr(1, p << 12).hpa, kOut + (p << 12));
  for (uint64_t p = 1; p <= 4; ++p)
    ASSERT_EQ(fl.map(p << 12, kOut + 0x10'0000 + (p << 12), 12, kUserRW), build::Status::kOk);
  // Entries 0 and 1 are valid, entry 2 is misaligned, entry 3 would be valid but comes after
  // the error and must not be handled.
  const nestor_uapi_iotlb_entry entries[] = {{0x1000, 1, 0, 0},
                                             {0x2000, 1, NESTOR_UAPI_IOTLB_LEAF, 0},
                                             {0x3001, 1, 0, 0},
                                             {0x4000, 1, 0, 0}};
  int err = 0;
  EXPECT_EQ(nestor_uapi_iotlb_invalidate_array(x.e, kDid, 1, entries, 4, &err), 2);
  EXPECT_EQ(err, -EINVAL);
  ASSERT_EQ(nestor_inv_wait(x.e), 0);
  EXPECT_EQ(tr(1, 0x1000).hpa, kOut + 0x10'1000);
  EXPECT_EQ(tr(1, 0x2000).hpa, kOut + 0x10'2000);
  EXPECT_EQ(tr(1, 0x4000).hpa, kOut + 0x4000) << "entry after the error was handled";
  EXPECT_EQ(nestor_uapi_iotlb_invalidate_array(x.e, kDid, 1, entries + 3, 1, &err), 1);
  EXPECT_EQ(err, 0);
  // Linux intel_nested_cache_invalidate_user: an unknown flag is -EOPNOTSUPP (a feature this
  // kernel lacks), and so is a non-zero reserved field; misalignment stays -EINVAL.
  const nestor_uapi_iotlb_entry bad_reserved[] = {{0x1000, 1, 0, 1}};
  EXPECT_EQ(nestor_uapi_iotlb_invalidate_array(x.e, kDid, 1, bad_reserved, 1, &err), 0);
  EXPECT_EQ(err, -EOPNOTSUPP);
  const nestor_uapi_iotlb_entry bad_flags[] = {{0x1000, 1, 0, 0}, {0x2000, 1, 0x2, 0}};
  EXPECT_EQ(nestor_uapi_iotlb_invalidate_array(x.e, kDid, 1, bad_flags, 2, &err), 1);
  EXPECT_EQ(err, -EOPNOTSUPP);
  EXPECT_EQ(nestor_uapi_iotlb_invalidate_array(x.e, kDid, 1, nullptr, 1, &err), -EINVAL);
  ASSERT_EQ(nestor_inv_wait(x.e), 0);
  EXPECT_EQ(tr(1, 0x4000).hpa, kOut + 0x10'4000);
}

TEST(InvStats, VersionedBySize) {
  CapiEngine x;
  nestor_inv_op op{};
  op.cache = NESTOR_CACHE_IOTLB;
  op.scope = NESTOR_SCOPE_GLOBAL;
  ASSERT_EQ(nestor_inv_submit(x.e, &op), 0);
  ASSERT_EQ(nestor_inv_submit(x.e, &op), 0);
  ASSERT_EQ(nestor_inv_wait(x.e), 0);
  nestor_inv_stats st{};
  st.size = sizeof st;
  ASSERT_EQ(nestor_inv_get_stats(x.e, &st), 0);
  EXPECT_EQ(st.size, sizeof st);
  EXPECT_EQ(st.version, NESTOR_INV_STATS_VERSION);
  EXPECT_EQ(st.ops_submitted, 2u);
  EXPECT_EQ(st.batches, 1u);
  EXPECT_EQ(st.batch_ops_sum, 2u);
  EXPECT_EQ(st.ops_applied, 1u);  // the duplicate coalesced away
  EXPECT_EQ(st.coalesced_away, 1u);
  EXPECT_EQ(st.waits_completed, 1u);
  // An older caller that knows only the header: nothing past it is touched.
  nestor_inv_stats old;
  std::memset(&old, 0xAB, sizeof old);
  old.size = 8;
  ASSERT_EQ(nestor_inv_get_stats(x.e, &old), 0);
  EXPECT_EQ(old.size, 8u);
  EXPECT_EQ(old.version, NESTOR_INV_STATS_VERSION);
  EXPECT_EQ(old.ops_submitted, 0xABABABABABABABABull);
  old.size = 4;
  EXPECT_EQ(nestor_inv_get_stats(x.e, &old), -EINVAL);
  EXPECT_EQ(nestor_inv_get_stats(nullptr, &st), -EINVAL);
}

TEST(InvStats, NoCoalesceConfigAppliesEveryOp) {
  nestor_config cfg{};
  cfg.size = sizeof cfg;
  cfg.flags = NESTOR_CFG_NO_COALESCE;
  CapiEngine x(&cfg);
  nestor_inv_op op{};
  op.cache = NESTOR_CACHE_IOTLB;
  op.scope = NESTOR_SCOPE_GLOBAL;
  ASSERT_EQ(nestor_inv_submit(x.e, &op), 0);
  ASSERT_EQ(nestor_inv_submit(x.e, &op), 0);
  ASSERT_EQ(nestor_inv_wait(x.e), 0);
  nestor_inv_stats st{};
  st.size = sizeof st;
  ASSERT_EQ(nestor_inv_get_stats(x.e, &st), 0);
  EXPECT_EQ(st.ops_applied, 2u);
  EXPECT_EQ(st.coalesced_away, 0u);
}

}  // namespace
}  // namespace nestor
