// C ABI: argument validation, names, configuration.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "capi_fixture.h"
#include "nestor.h"

namespace nestor {
namespace {

using test::CapiEngine;

TEST(CApi, NullEngineIsEinval) {
  uint64_t v = 0;
  nestor_request req{};
  req.access = NESTOR_ACCESS_READ;
  nestor_result res{};
  nestor_fault_record rec{};
  EXPECT_EQ(nestor_mem_add_ram(nullptr, 0, 4096), -EINVAL);
  EXPECT_EQ(nestor_mem_add_host_ram(nullptr, 0, 4096, &v), -EINVAL);
  EXPECT_EQ(nestor_mem_remove_ram(nullptr, 0, 4096), -EINVAL);
  EXPECT_EQ(nestor_mem_set_io(nullptr, nullptr, nullptr, nullptr), -EINVAL);
  EXPECT_EQ(nestor_mem_write(nullptr, 0, &v, 8), -EINVAL);
  EXPECT_EQ(nestor_mem_read(nullptr, 0, &v, 8), -EINVAL);
  EXPECT_EQ(nestor_set_root_table(nullptr, 0), -EINVAL);
  EXPECT_EQ(nestor_translate(nullptr, &req, &res), -EINVAL);
  EXPECT_EQ(nestor_fault_log_drain(nullptr, &rec, 1, nullptr), -EINVAL);
  EXPECT_EQ(nestor_fault_log_clear_overflow(nullptr), -EINVAL);
  nestor_engine_destroy(nullptr);  // no-op
}

TEST(CApi, ArgumentValidation) {
  CapiEngine x;
  nestor_request req{};
  nestor_result res{};
  req.access = NESTOR_ACCESS_READ;
  EXPECT_EQ(nestor_translate(x.e, nullptr, &res), -EINVAL);
  EXPECT_EQ(nestor_translate(x.e, &req, nullptr), -EINVAL);
  for (uint8_t bad : {0, 8, 0x10, 0x80, 0xFF}) {
    req.access = bad;
    EXPECT_EQ(nestor_translate(x.e, &req, &res), -EINVAL) << int(bad);
  }
  for (uint8_t ok = 1; ok <= 7; ++ok) {
    req.access = ok;
    EXPECT_EQ(nestor_translate(x.e, &req, &res), 0);
    EXPECT_EQ(res.fault, NESTOR_FAULT_ROOT_ENTRY_NOT_PRESENT);
  }
  EXPECT_EQ(nestor_mem_write(x.e, 0, nullptr, 8), -EINVAL);
  EXPECT_EQ(nestor_mem_read(x.e, 0, nullptr, 8), -EINVAL);
  EXPECT_EQ(nestor_mem_write(x.e, 0, nullptr, 0), 0);
  EXPECT_EQ(nestor_fault_log_drain(x.e, nullptr, 4, nullptr), -EINVAL);
  EXPECT_EQ(nestor_set_root_table(x.e, 0x1800), -EINVAL);      // misaligned
  EXPECT_EQ(nestor_set_root_table(x.e, 1ull << 48), -EINVAL);  // beyond HAW
  EXPECT_EQ(nestor_set_root_table(x.e, (1ull << 48) - 4096), 0);
}

TEST(CApi, ConfigIsVersionedBySize) {
  // An older caller that only knows `size` and `host_address_width`: the rest are defaults,
  // even though the bytes after its struct hold garbage.
  struct {
    nestor_config cfg;
  } buf;
  std::memset(&buf, 0xFF, sizeof buf);
  buf.cfg.size = offsetof(nestor_config, pasid_bits);
  buf.cfg.host_address_width = 39;
  nestor_engine *e = nestor_engine_create(&buf.cfg);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(nestor_set_root_table(e, 1ull << 39), -EINVAL);  // HAW 39 was applied
  EXPECT_EQ(nestor_set_root_table(e, (1ull << 39) - 4096), 0);
  nestor_engine_destroy(e);
  e = nestor_engine_create(nullptr);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(nestor_set_root_table(e, (1ull << 48) - 4096), 0);  // default HAW 48
  nestor_engine_destroy(e);
}

TEST(CApi, FaultNamesMatchLinux) {
  // drivers/iommu/intel/dmar.c, dma_remap_sm_fault_reasons[] (reason - 0x30).
  const struct {
    int code;
    const char *name;
  } names[] = {
      {0x30, "SM: Invalid Root Table Address"},
      {0x31, "SM: TTM 0 for request with PASID"},
      {0x32, "SM: TTM 0 for page group request"},
      {0x38, "SM: Error attempting to access Root Entry"},
      {0x39, "SM: Present bit in Root Entry is clear"},
      {0x3A, "SM: Non-zero reserved field set in Root Entry"},
      {0x40, "SM: Error attempting to access Context Entry"},
      {0x41, "SM: Present bit in Context Entry is clear"},
      {0x42, "SM: Non-zero reserved field set in the Context Entry"},
      {0x43, "SM: Invalid Context Entry"},
      {0x44, "SM: DTE field in Context Entry is clear"},
      {0x45, "SM: PASID Enable field in Context Entry is clear"},
      {0x46, "SM: PASID is larger than the max in Context Entry"},
      {0x47, "SM: PRE field in Context-Entry is clear"},
      {0x48, "SM: RID_PASID field error in Context-Entry"},
      {0x50, "SM: Error attempting to access the PASID Directory Entry"},
      {0x51, "SM: Present bit in Directory Entry is clear"},
      {0x52, "SM: Non-zero reserved field set in PASID Directory Entry"},
      {0x58, "SM: Error attempting to access PASID Table Entry"},
      {0x59, "SM: Present bit in PASID Table Entry is clear"},
      {0x5A, "SM: Non-zero reserved field set in PASID Table Entry"},
      {0x5B, "SM: Invalid Scalable-Mode PASID Table Entry"},
      {0x5C, "SM: ERE field is clear in PASID Table Entry"},
      {0x5D, "SM: SRE field is clear in PASID Table Entry"},
      {0x70, "SM: Error attempting to access first-level paging entry"},
      {0x71, "SM: Present bit in first-level paging entry is clear"},
      {0x72, "SM: Non-zero reserved field set in first-level paging entry"},
      {0x73, "SM: Error attempting to access FL-PML4 entry"},
      {0x74, "SM: First-level entry address beyond MGAW in Nested translation"},
      {0x75, "SM: Read permission error in FL-PML4 entry in Nested translation"},
      {0x76, "SM: Read permission error in first-level paging entry in Nested translation"},
      {0x77, "SM: Write permission error in first-level paging entry in Nested translation"},
      {0x78, "SM: Error attempting to access second-level paging entry"},
      {0x79, "SM: Read/Write permission error in second-level paging entry"},
      {0x7A, "SM: Non-zero reserved field set in second-level paging entry"},
      {0x7B, "SM: Invalid second-level page table pointer"},
      {0x7C, "SM: A/D bit update needed in second-level entry when set up in no snoop"},
      {0x80, "SM: Address in first-level translation is not canonical"},
      {0x81, "SM: U/S set 0 for first-level translation with user privilege"},
      {0x82, "SM: No execute permission for request with PASID and ER=1"},
      {0x83, "SM: Address beyond the DMA hardware max"},
      {0x84, "SM: Second-level entry address beyond the max"},
      {0x85, "SM: No write permission for Write/AtomicOp request"},
      {0x86, "SM: No read permission for Read/AtomicOp request"},
      {0x87, "SM: Invalid address-interrupt address"},
      {0x90, "SM: A/D bit update needed in first-level entry when set up in no snoop"},
  };
  for (const auto &n : names) EXPECT_STREQ(nestor_fault_name(n.code), n.name) << std::hex << n.code;
  for (int unknown : {-1, 0x33, 0x37, 0x3B, 0x49, 0x53, 0x5E, 0x6F, 0x7D, 0x88, 0x91, 0xFF, 256})
    EXPECT_STREQ(nestor_fault_name(unknown), "Unknown") << unknown;
  EXPECT_STREQ(nestor_fault_name(0), "no fault");
}

TEST(CApi, StrerrorCoversEveryReturnedError) {
  const std::string unknown = nestor_strerror(-9999);
  for (int err : {0, -EINVAL, -EFAULT, -ENOMEM, -EEXIST, -ENOSPC, -EPERM, -EBUSY, -ENOENT,
                  -EOPNOTSUPP, -EDQUOT, -EALREADY}) {
    ASSERT_NE(nestor_strerror(err), nullptr);
    EXPECT_NE(unknown, nestor_strerror(err)) << err;
  }
  EXPECT_STREQ(nestor_strerror(0), "success");
}

TEST(CApi, ResultClearedOnFault) {
  CapiEngine x;
  nestor_result r;
  std::memset(&r, 0xAB, sizeof r);
  ASSERT_EQ(vtdw_translate(x.e, 0x100, 1, 1, 0x1000, NESTOR_ACCESS_READ, 0, &r),
            NESTOR_FAULT_ROOT_ENTRY_NOT_PRESENT);
  EXPECT_EQ(r.hpa, 0u);
  EXPECT_EQ(r.page_size, 0u);
  EXPECT_EQ(r.perms, 0);
}

}  // namespace
}  // namespace nestor
