// The bind layer's C ABI: the C99 smoke flow, versioned structs, null handles.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

#include "nestor.h"

extern "C" int nestor_bind_c_smoke(void);
extern "C" int nestor_owner_queue_c_smoke(void);

namespace {

TEST(BindCApi, C99SmokeFlow) {
  EXPECT_EQ(nestor_bind_c_smoke(), 0) << "failed at c_api_check.c line";
}

TEST(BindCApi, C99OwnerQueueFlow) {
  EXPECT_EQ(nestor_owner_queue_c_smoke(), 0) << "failed at c_api_check.c line";
}

class CApi : public ::testing::Test {
 protected:
  void SetUp() override {
    e = nestor_engine_create(nullptr);
    ASSERT_NE(e, nullptr);
    ASSERT_EQ(nestor_mem_add_ram(e, 0, 2ull << 30), 0);
  }
  void TearDown() override {
    nestor_bind_destroy(b);
    nestor_engine_destroy(e);
  }
  nestor_bind *make(uint32_t features, uint32_t size = sizeof(nestor_bind_config)) {
    nestor_bind_config c{};
    c.size = size;
    c.features = features;
    c.table_base = 1ull << 30;
    c.table_size = 8ull << 20;
    int err = 1;
    nestor_bind *out = nestor_bind_create(e, &c, &err);
    if (out) {
      EXPECT_EQ(err, 0);
    }
    return out;
  }
  nestor_engine *e = nullptr;
  nestor_bind *b = nullptr;
};

TEST_F(CApi, CreateRefusals) {
  int err = 0;
  EXPECT_EQ(nestor_bind_create(nullptr, nullptr, &err), nullptr);
  EXPECT_EQ(err, -EINVAL);
  EXPECT_EQ(nestor_bind_create(e, nullptr, &err), nullptr);
  // A caller whose struct ends before table_base has no table range: refused.
  EXPECT_EQ(make(0, offsetof(nestor_bind_config, table_base)), nullptr);
  b = make(0);
  ASSERT_NE(b, nullptr);
}

TEST_F(CApi, FeatureMaskAndNestingInfoPrefix) {
  b = make(NESTOR_BIND_CFG_NO_FEATURES);
  ASSERT_NE(b, nullptr);
  uint32_t owner, pasid;
  ASSERT_EQ(nestor_owner_create(b, 0, &owner), 0);
  EXPECT_EQ(nestor_pasid_alloc(b, owner, 0, NESTOR_NO_GUEST_PASID, &pasid), -EOPNOTSUPP);
  unsigned char buf[80];
  std::memset(buf, 0xAA, sizeof buf);
  ASSERT_EQ(nestor_get_nesting_info(b, buf, 8), 0);
  nestor_nesting_info head;
  std::memcpy(&head, buf, 8);
  EXPECT_EQ(head.size, sizeof(nestor_nesting_info));
  EXPECT_EQ(head.format, NESTOR_NESTING_FORMAT_VTD);
  EXPECT_EQ(buf[8], 0xAA);
  ASSERT_EQ(nestor_get_nesting_info(b, buf, sizeof buf), 0);
  nestor_nesting_info full;
  std::memcpy(&full, buf, sizeof full);
  EXPECT_EQ(full.features, 0u);
  EXPECT_EQ(full.pasid_bits, 20);
  for (size_t i = sizeof full; i < sizeof buf; ++i) EXPECT_EQ(buf[i], 0) << i;
  EXPECT_EQ(nestor_get_nesting_info(b, nullptr, 48), -EINVAL);
  EXPECT_EQ(nestor_get_nesting_info(nullptr, buf, 48), -EINVAL);
}

TEST_F(CApi, ArgumentChecks) {
  b = make(0);
  ASSERT_NE(b, nullptr);
  nestor_domain_config dc{};
  dc.size = sizeof dc;
  dc.levels = 4;
  dc.flags = 0x80;
  uint16_t did;
  EXPECT_EQ(nestor_domain_create(b, &dc, &did), -EINVAL);
  dc.flags = NESTOR_DOMAIN_NESTING;
  EXPECT_EQ(nestor_domain_create(b, nullptr, &did), -EINVAL);
  EXPECT_EQ(nestor_domain_create(b, &dc, nullptr), -EINVAL);
  EXPECT_EQ(nestor_domain_create(nullptr, &dc, &did), -EINVAL);
  ASSERT_EQ(nestor_domain_create(b, &dc, &did), 0);
  EXPECT_EQ(nestor_bind_pgtbl(b, 1, 0x100, 1, nullptr), -EINVAL);
  nestor_bind_inv inv{};
  inv.size = sizeof inv;
  inv.caches = NESTOR_BIND_INV_CACHE_IOTLB;
  inv.scope = 7;
  EXPECT_EQ(nestor_cache_invalidate(b, 1, &inv), -EINVAL);
  inv.scope = NESTOR_BIND_INV_SCOPE_PASID;
  inv.flags = 0x100;
  EXPECT_EQ(nestor_cache_invalidate(b, 1, &inv), -EINVAL);
  EXPECT_EQ(nestor_cache_invalidate(b, 1, nullptr), -EINVAL);
  uint32_t host;
  EXPECT_EQ(nestor_pasid_guest_to_host(b, 1, 1, nullptr), -EINVAL);
  EXPECT_EQ(nestor_pasid_guest_to_host(b, 1, 1, &host), -ENOENT);
}

TEST_F(CApi, OlderBindDataWithoutGuestPasid) {
  b = make(0);
  ASSERT_NE(b, nullptr);
  uint32_t owner, pasid;
  ASSERT_EQ(nestor_owner_create(b, 0, &owner), 0);
  ASSERT_EQ(nestor_pasid_alloc(b, owner, 0, 9, &pasid), 0);
  nestor_domain_config dc{};
  dc.size = sizeof dc;
  dc.levels = 4;
  dc.flags = NESTOR_DOMAIN_NESTING;
  dc.owner = owner;
  uint16_t did;
  ASSERT_EQ(nestor_domain_create(b, &dc, &did), 0);
  ASSERT_EQ(nestor_domain_map(b, did, 0, 0x1000'0000, 2ull << 20, NESTOR_ACCESS_READ), 0);
  ASSERT_EQ(nestor_device_attach(b, 0x0100, did), 0);
  nestor_bind_data bd;
  std::memset(&bd, 0xFF, sizeof bd);  // garbage past the declared size must be ignored
  bd.size = offsetof(nestor_bind_data, guest_pasid);
  bd.flags = 0;
  bd.fl_root_gpa = 0x1000;
  bd.addr_width = 48;
  EXPECT_EQ(nestor_bind_pgtbl(b, owner, 0x0100, pasid, &bd), 0);
  bd.size = sizeof bd;
  bd.guest_pasid = 8;  // the owner's name for this PASID is 9
  EXPECT_EQ(nestor_bind_pgtbl(b, owner, 0x0100, pasid, &bd), -EINVAL);
  EXPECT_EQ(nestor_owner_release(b, owner), 1);
}

}  // namespace
