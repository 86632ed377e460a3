// The bind layer's named flushes go through the engine's invalidation processor, the path the
// QI and typed front ends take: its ops are counted there, and a full bind-layer cycle works
// with a background worker and drain on (the layer waits while holding its own lock, which
// the worker never takes, so the wait cannot deadlock).
#include <gtest/gtest.h>

#include "bind_fixture.h"
#include "nestor/invalidation.h"

namespace nestor::bindtest {
namespace {

constexpr uint16_t kSid = 0x0100;
constexpr uint64_t k4K = 4096;

uint64_t submitted(Engine &e) {
  return e.invalidation().stats().ops_submitted;
}

class FlushPath : public ::testing::TestWithParam<bool> {};

TEST_P(FlushPath, EveryChangeIsQueuedAndWaitedFor) {
  EngineConfig ec;
  ec.background_invalidation = GetParam();
  ec.drain = GetParam();
  World w(ec, {}, 1);
  Vm vm = w.make_vm(0);
  uint32_t pasid = 0;
  ASSERT_EQ(w.layer().alloc_pasid(vm.owner, 0, PasidAllocator::kNoGuestPasid, &pasid), 0);

  uint64_t before = submitted(w.engine());
  ASSERT_EQ(w.layer().attach_device(kSid, vm.did), 0);
  // Context entry + RID_PASID entry: context cache, device TLB, PASID cache, IOTLB by PASID
  // and by domain (RID_PASID is second-level only), device TLB by PASID.
  EXPECT_GE(submitted(w.engine()) - before, 6u);

  const uint64_t root = vm.space->alloc_table();
  GuestFl fl(*vm.space, root, 4);
  ASSERT_EQ(fl.map(kIovaBase, 0x30'0000, 12, user_rw()), build::Status::kOk);
  before = submitted(w.engine());
  ASSERT_EQ(w.layer().bind(vm.owner, kSid, pasid, bind_req(root)), 0);
  EXPECT_GE(submitted(w.engine()) - before, 3u);  // PASID cache, IOTLB by PASID, device TLB
  Result r = w.translate(kSid, true, pasid, kIovaBase);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, vm.hpa_base + 0x30'0000);

  // First-level change announced by the owner.
  ASSERT_EQ(fl.map(kIovaBase + k4K, 0x31'0000, 12, user_rw()), build::Status::kOk);
  ASSERT_EQ(fl.unmap(kIovaBase, 12), build::Status::kOk);
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb | invq::kCachePaging;
  op.scope = invq::Scope::kRange;
  op.source_id = kSid;
  op.pasid = pasid;
  op.addr = kIovaBase;
  op.npages = 2;
  before = submitted(w.engine());
  ASSERT_EQ(w.layer().cache_invalidate(vm.owner, op), 0);
  EXPECT_EQ(submitted(w.engine()) - before, 1u);
  EXPECT_FALSE(w.translate(kSid, true, pasid, kIovaBase).ok);
  r = w.translate(kSid, true, pasid, kIovaBase + k4K);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, vm.hpa_base + 0x31'0000);

  // Second-level change by the host: gone on return.
  before = submitted(w.engine());
  ASSERT_EQ(w.layer().unmap(vm.did, 0x20'0000, 2ull << 20), 0);
  EXPECT_GE(submitted(w.engine()) - before, 2u);  // type 0x2 by GPA, the device's TLB
  EXPECT_FALSE(w.translate(kSid, true, pasid, kIovaBase + k4K).ok);

  before = submitted(w.engine());
  ASSERT_EQ(w.layer().unbind(vm.owner, kSid, pasid), 0);
  EXPECT_GE(submitted(w.engine()) - before, 3u);
  EXPECT_EQ(w.translate(kSid, true, pasid, kIovaBase + k4K).fault.reason,
            FaultReason::kPasidEntryNotPresent);

  before = submitted(w.engine());
  ASSERT_EQ(w.layer().detach_device(kSid), 0);
  EXPECT_GE(submitted(w.engine()) - before, 6u);
  EXPECT_FALSE(w.translate(kSid, false, 0, 0x40'0000).ok);

  before = submitted(w.engine());
  ASSERT_EQ(w.layer().destroy_domain(vm.did), 0);
  EXPECT_GE(submitted(w.engine()) - before, 1u);
}

INSTANTIATE_TEST_SUITE_P(Worker, FlushPath, ::testing::Bool(),
                         [](const auto &info) { return info.param ? "worker_drain" : "inline"; });

}  // namespace
}  // namespace nestor::bindtest
