// Issue 13, bind layer: isolation and resource accounting, driven through the C ABI as a
// hostile embedder would (one owner churning, a second layer, DMA aimed at the tables).
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>

#include "capi_vm.h"
#include "nestor.h"

namespace {

constexpr uint64_t kTableBase = 1ull << 30;
constexpr uint64_t kVmBase = 2ull << 30;  // VM n's guest RAM: [kVmBase + n * kVmRam, +kVmRam)
constexpr uint64_t kVmRam = 2ull << 20;   // one 2M mapping per VM
constexpr uint64_t kData = nestor::test::kCapiData;  // guest GPA the IOVA 0 page maps to

class Machine {
 public:
  explicit Machine(uint64_t table_size) {
    e_ = nestor_engine_create(nullptr);
    EXPECT_NE(e_, nullptr);
    EXPECT_EQ(nestor_mem_add_ram(e_, 0, 4ull << 30), 0);
    nestor_bind_config c{};
    c.size = sizeof c;
    c.table_base = kTableBase;
    c.table_size = table_size;
    int err = 1;
    b_ = nestor_bind_create(e_, &c, &err);
    EXPECT_EQ(err, 0);
    EXPECT_NE(b_, nullptr);
  }
  ~Machine() {
    nestor_bind_destroy(b_);
    nestor_engine_destroy(e_);
  }
  nestor_engine *e() { return e_; }
  nestor_bind *b() { return b_; }

  using Vm = nestor::test::CapiVm;
  Vm make_vm(int n, uint32_t quota) {
    Vm vm;
    EXPECT_EQ(
        nestor::test::capi_make_vm(e_, b_, kVmBase + uint64_t(n) * kVmRam, kVmRam, quota, &vm), 0);
    return vm;
  }
  static nestor_bind_data bind_data() { return nestor::test::capi_bind_data(); }
  nestor_result translate(uint16_t sid, uint32_t pasid) {
    nestor_request r{};
    r.source_id = sid;
    r.has_pasid = 1;
    r.pasid = pasid;
    r.iova = 0;
    r.access = NESTOR_ACCESS_READ;
    nestor_result res{};
    EXPECT_EQ(nestor_translate(e_, &r, &res), 0);
    return res;
  }

 private:
  nestor_engine *e_ = nullptr;
  nestor_bind *b_ = nullptr;
};

// Item 1: an owner with quota 1 cycling alloc -> bind -> unbind -> free over PASIDs 64 apart
// allocated a fresh PASID table each cycle and never returned it; within 60 cycles in a
// 2 MiB table range (128 structure pages, 68 taken by two devices) every other owner's bind
// and the host's attach got -ENOMEM.
TEST(BindHardening, ChurningOwnerCannotStarveOthers) {
  Machine m(2ull << 20);
  auto a = m.make_vm(0, 1);
  auto v = m.make_vm(1, 0);
  ASSERT_EQ(nestor_device_attach(m.b(), 0x0100, a.did), 0);
  ASSERT_EQ(nestor_device_attach(m.b(), 0x0200, v.did), 0);
  uint32_t vp;
  ASSERT_EQ(nestor_pasid_alloc(m.b(), v.owner, 0, NESTOR_NO_GUEST_PASID, &vp), 0);
  const nestor_bind_data d = Machine::bind_data();
  ASSERT_EQ(nestor_bind_pgtbl(m.b(), v.owner, 0x0200, vp, &d), 0);
  for (uint32_t i = 1; i <= 400; ++i) {
    uint32_t p;
    ASSERT_EQ(nestor_pasid_alloc(m.b(), a.owner, i * 64, NESTOR_NO_GUEST_PASID, &p), 0) << i;
    ASSERT_EQ(nestor_bind_pgtbl(m.b(), a.owner, 0x0100, p, &d), 0) << "cycle " << i;
    ASSERT_EQ(nestor_unbind_pgtbl(m.b(), a.owner, 0x0100, p), 0) << i;
    ASSERT_EQ(nestor_pasid_free(m.b(), a.owner, p), 0) << i;
  }
  // The victim's binding still translates into its own memory, it can bind more, and the
  // host can still attach devices.
  nestor_result r = m.translate(0x0200, vp);
  EXPECT_EQ(r.fault, 0);
  EXPECT_EQ(r.hpa, v.hpa + kData);
  uint32_t vp2;
  ASSERT_EQ(nestor_pasid_alloc(m.b(), v.owner, 5000, NESTOR_NO_GUEST_PASID, &vp2), 0);
  EXPECT_EQ(nestor_bind_pgtbl(m.b(), v.owner, 0x0200, vp2, &d), 0);
  EXPECT_EQ(m.translate(0x0200, vp2).hpa, v.hpa + kData);
  EXPECT_EQ(nestor_device_attach(m.b(), 0x0300, v.did), 0);
}

// Item 1 (release and detach paths): tables freed by release_owner and detach are reused.
TEST(BindHardening, ReleaseAndDetachReturnPasidTables) {
  Machine m(2ull << 20);
  auto a = m.make_vm(0, 0);
  const nestor_bind_data d = Machine::bind_data();
  for (int round = 0; round < 200; ++round) {
    ASSERT_EQ(nestor_device_attach(m.b(), 0x0100, a.did), 0) << round;
    for (uint32_t i = 1; i <= 4; ++i) {
      uint32_t p;
      ASSERT_EQ(nestor_pasid_alloc(m.b(), a.owner, uint32_t(round * 4 + i) * 64 % (1u << 20),
                                   NESTOR_NO_GUEST_PASID, &p),
                0);
      ASSERT_EQ(nestor_bind_pgtbl(m.b(), a.owner, 0x0100, p, &d), 0) << round;
    }
    ASSERT_EQ(nestor_owner_release(m.b(), a.owner), 4);
    ASSERT_EQ(nestor_device_detach(m.b(), 0x0100), 0);
  }
}

// Item 2: with 20-bit PASIDs the directory is 2^14 entries = 128 KiB; attach allocated
// 512 KiB, so the documented minimum table range (256 KiB) failed on the first attach and a
// 64 MiB range held only 31 devices.
TEST(BindHardening, AttachFitsTheDocumentedMinimumRange) {
  Machine m(256ull << 10);
  auto a = m.make_vm(0, 0);
  EXPECT_EQ(nestor_device_attach(m.b(), 0x0100, a.did), 0);
  const nestor_bind_data d = Machine::bind_data();
  EXPECT_EQ(nestor_bind_pgtbl(m.b(), a.owner, 0x0100, 0, &d), 0);
  EXPECT_EQ(m.translate(0x0100, 0).hpa, a.hpa + kData);
}

TEST(BindHardening, SixtyFourMiBHoldsMoreThanThirtyOneDevices) {
  Machine m(64ull << 20);
  auto a = m.make_vm(0, 0);
  for (uint16_t sid = 1; sid <= 100; ++sid)
    ASSERT_EQ(nestor_device_attach(m.b(), sid, a.did), 0) << "device " << sid;
}

// Item 3: a second layer on the same engine overwrote the first one's tables.
TEST(BindHardening, SecondLayerOnOneEngineIsRefused) {
  Machine m(8ull << 20);
  auto a = m.make_vm(0, 0);
  ASSERT_EQ(nestor_device_attach(m.b(), 0x0100, a.did), 0);
  nestor_bind_config c{};
  c.size = sizeof c;
  c.table_base = kTableBase;
  c.table_size = 8ull << 20;
  int err = 0;
  EXPECT_EQ(nestor_bind_create(m.e(), &c, &err), nullptr);
  EXPECT_EQ(err, -EBUSY);
  c.table_base = kTableBase + (16ull << 20);  // another range does not make it right either
  EXPECT_EQ(nestor_bind_create(m.e(), &c, &err), nullptr);
  EXPECT_EQ(err, -EBUSY);
  const nestor_bind_data d = Machine::bind_data();
  ASSERT_EQ(nestor_bind_pgtbl(m.b(), a.owner, 0x0100, 0, &d), 0);
  EXPECT_EQ(m.translate(0x0100, 0).hpa, a.hpa + kData);
}

TEST(BindHardening, LayerCanBeRecreatedAfterDestroy) {
  nestor_engine *e = nestor_engine_create(nullptr);
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(nestor_mem_add_ram(e, 0, 2ull << 30), 0);
  nestor_bind_config c{};
  c.size = sizeof c;
  c.table_base = kTableBase;
  c.table_size = 8ull << 20;
  int err = 1;
  nestor_bind *b = nestor_bind_create(e, &c, &err);
  ASSERT_NE(b, nullptr);
  nestor_bind_destroy(b);
  b = nestor_bind_create(e, &c, &err);
  EXPECT_NE(b, nullptr);
  EXPECT_EQ(err, 0);
  nestor_bind_destroy(b);
  nestor_engine_destroy(e);
}

// Item 4: a domain mapping whose HPA range overlaps the layer's table range would let a guest
// device rewrite root/context/PASID tables.
TEST(BindHardening, MapOntoTheTableRangeIsRefused) {
  Machine m(8ull << 20);
  auto a = m.make_vm(0, 0);
  const uint8_t rw = NESTOR_ACCESS_READ | NESTOR_ACCESS_WRITE;
  EXPECT_EQ(nestor_domain_map(m.b(), a.did, 1ull << 30, kTableBase, 4096, rw), -EPERM);
  EXPECT_EQ(nestor_domain_map(m.b(), a.did, 1ull << 30, kTableBase - 4096, 8192, rw), -EPERM);
  EXPECT_EQ(nestor_domain_map(m.b(), a.did, 1ull << 30, kTableBase + (8ull << 20) - 4096, 4096, rw),
            -EPERM);
  EXPECT_EQ(nestor_domain_map(m.b(), a.did, 1ull << 30, kTableBase - (1ull << 30), 1ull << 31, rw),
            -EPERM);
  // Right next to it is fine.
  EXPECT_EQ(nestor_domain_map(m.b(), a.did, 1ull << 30, kTableBase + (8ull << 20), 4096, rw), 0);
  EXPECT_EQ(nestor_domain_map(m.b(), a.did, (1ull << 30) + 4096, kTableBase - 4096, 4096, rw), 0);
}

}  // namespace
