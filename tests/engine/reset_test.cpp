// Engine::reset() / nestor_engine_reset(): after a reset nothing filled, queued or logged
// before it may show, and RAM reads as zero. The tables are rebuilt at the same addresses with
// the same DID but a different output page and no invalidation, so any cache, handle or
// per-thread memo that survived the reset would answer with the old page.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>

#include "nestor.h"
#include "nestor/engine.h"
#include "nestor/invalidation.h"
#include "nestor/machine/machine.h"
#include "nestor/vtd/structures_writer.h"
#include "nestor/walkers/builder.h"

namespace nestor {
namespace {

constexpr uint64_t kRam = 4ull << 20;
constexpr uint64_t kTables = 1ull << 20;  // [1, 2) MiB
constexpr uint64_t kQueue = 3ull << 20;
constexpr uint16_t kSid = 0x0100;
constexpr uint32_t kPasid = 1;
constexpr uint16_t kDid = 5;
constexpr uint64_t kIova = 0x10000;

EngineConfig small() {
  EngineConfig c;
  c.iotlb_entries = 64;
  c.iotlb_shards = 1;
  c.context_cache_entries = 8;
  c.pasid_cache_entries = 8;
  c.psc_entries = 8;
  c.fault_log_entries = 2;
  return c;
}

// Second-level-only PASID kPasid of kSid: kIova -> `hpa`. Same table addresses every time.
void build(Engine &e, uint64_t hpa) {
  MachineMemory &mem = e.memory();
  PageAllocator pages(mem, kTables, 1u << 20);
  HostTableSpace host(mem, pages);
  StructuresWriter structures(mem, pages);
  const uint64_t root = pages.alloc();
  build::SecondLevelBuilder<HostTableSpace> sl(host, root, 4);
  ASSERT_EQ(sl.map(kIova, hpa, 12, build::sl_leaf_bits(kAccessRead | kAccessWrite)),
            build::Status::kOk);
  ASSERT_EQ(structures.attach(kSid, 0), 0);
  const vtd::PasidEntry pe = machine::pasid_entry(machine::Mode::kSecondLevel, kDid, 0, root);
  ASSERT_EQ(structures.set_pasid_entry(kSid, kPasid, pe), 0);
  ASSERT_EQ(e.set_root_table(structures.root_table()), 0);
}

Request request(uint64_t iova) {
  return machine::request(kSid, kPasid, iova);
}

TEST(EngineReset, NothingBeforeTheResetSurvivesIt) {
  Engine e(small());
  ASSERT_EQ(e.memory().add_ram(0, kRam), 0);
  ASSERT_NO_FATAL_FAILURE(build(e, 0x200000));
  AddressSpace as = e.open(kSid, true, kPasid);
  ASSERT_EQ(e.translate(request(kIova)).t.out, 0x200000u);
  ASSERT_EQ(as.translate(kIova, kAccessRead).t.out, 0x200000u);
  // Three faults into a two-entry log: records and the overflow flag.
  for (int i = 1; i <= 3; ++i) EXPECT_FALSE(e.translate(request(kIova + 0x1000 * i)).ok);
  ASSERT_EQ(e.fault_log().size(), 2u);
  ASSERT_TRUE(e.fault_log().overflowed());
  // A queue stopped on a bad descriptor (type 0xF is reserved), and an op left unwaited.
  EngineInvalidation &inv = e.invalidation();
  ASSERT_EQ(inv.qi_configure(kQueue, 256, 128), 0);
  ASSERT_TRUE(e.memory().write64(kQueue, 0xF));
  ASSERT_EQ(inv.qi_write_tail(1), -EBUSY);
  ASSERT_NE(inv.queue().error(), invq::QiError::kNone);
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb;
  inv.submit(op);

  e.reset();

  EXPECT_EQ(e.fault_log().size(), 0u);
  EXPECT_FALSE(e.fault_log().overflowed());
  EXPECT_EQ(inv.queue().error(), invq::QiError::kNone);
  EXPECT_EQ(inv.queue().read_iqa(), 0u);
  EXPECT_EQ(inv.queue().head(), 0u);
  EXPECT_EQ(inv.queue().tail(), 0u);
  EXPECT_EQ(inv.qi_write_tail(0), -EINVAL);  // unconfigured again, as at power-on
  EXPECT_EQ(inv.processor().process_pending(), 0u);
  uint64_t word = 1;
  ASSERT_TRUE(e.memory().read64(kTables, &word));  // was the root table
  EXPECT_EQ(word, 0u);
  ASSERT_TRUE(e.memory().read64(kQueue, &word));
  EXPECT_EQ(word, 0u);
  EXPECT_EQ(e.memory().regions().size(), 1u);
  const Result unset = e.translate(request(kIova));
  EXPECT_FALSE(unset.ok);
  EXPECT_EQ(unset.fault.reason, FaultReason::kRootTableAddressInvalid);
  EXPECT_EQ(e.fault_log().size(), 1u);

  ASSERT_NO_FATAL_FAILURE(build(e, 0x280000));
  EXPECT_EQ(e.translate(request(kIova)).t.out, 0x280000u);
  EXPECT_EQ(as.translate(kIova, kAccessRead).t.out, 0x280000u);
  Result batch;
  const Request r = request(kIova);
  e.translate_batch(&r, &batch, 1);
  EXPECT_EQ(batch.t.out, 0x280000u);
}

TEST(EngineReset, CallerOwnedRamIsLeftToTheCaller) {
  alignas(4096) static uint64_t host[512];
  host[0] = 0x1234;
  Engine e(small());
  ASSERT_EQ(e.memory().add_host_ram(0x100000, sizeof host, host), 0);
  ASSERT_EQ(e.memory().add_ram(0, 0x10000), 0);
  ASSERT_TRUE(e.memory().write64(0x8, 0x5678));
  e.reset();
  uint64_t v = 0;
  ASSERT_TRUE(e.memory().read64(0x8, &v));
  EXPECT_EQ(v, 0u);
  ASSERT_TRUE(e.memory().read64(0x100000, &v));
  EXPECT_EQ(v, 0x1234u);
}

TEST(EngineReset, CAbi) {
  EXPECT_EQ(nestor_engine_reset(nullptr), -EINVAL);
  nestor_engine *e = nestor_engine_create(nullptr);
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(nestor_mem_add_ram(e, 0, 0x10000), 0);
  const uint64_t v = 0xABCD;
  ASSERT_EQ(nestor_mem_write(e, 0x40, &v, sizeof v), 0);
  ASSERT_EQ(nestor_set_root_table(e, 0x1000), 0);
  EXPECT_EQ(nestor_engine_reset(e), 0);
  uint64_t back = 1;
  ASSERT_EQ(nestor_mem_read(e, 0x40, &back, sizeof back), 0);
  EXPECT_EQ(back, 0u);
  nestor_request req{};
  nestor_result res{};
  req.access = NESTOR_ACCESS_READ;
  ASSERT_EQ(nestor_translate(e, &req, &res), 0);
  EXPECT_EQ(res.fault, NESTOR_FAULT_ROOT_TABLE_ADDRESS);
  nestor_engine_destroy(e);
}

}  // namespace
}  // namespace nestor
