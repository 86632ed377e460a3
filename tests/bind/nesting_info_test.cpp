#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

#include "bind_fixture.h"
#include "nestor/nesting_info.h"

namespace nestor {
namespace {

// Independent decoders, written from Linux's drivers/iommu/intel/iommu.h cap_*/ecap_* macros,
// so that a wrong constant in nesting_info.h cannot hide behind itself.
uint64_t cap_sagaw(uint64_t c) {
  return (c >> 8) & 0x1f;
}
uint64_t cap_mgaw(uint64_t c) {
  return ((c >> 16) & 0x3f) + 1;
}
uint64_t cap_ndoms(uint64_t c) {
  return uint64_t{1} << (4 + 2 * (c & 7));
}
uint64_t cap_super_page_val(uint64_t c) {
  return (c >> 34) & 0xf;
}
uint64_t cap_pgsel_inv(uint64_t c) {
  return (c >> 39) & 1;
}
uint64_t cap_fl1gp_support(uint64_t c) {
  return (c >> 56) & 1;
}
uint64_t cap_fl5lp_support(uint64_t c) {
  return (c >> 60) & 1;
}
uint64_t cap_max_amask_val(uint64_t c) {
  return (c >> 48) & 0x3f;
}
uint64_t cap_caching_mode(uint64_t c) {
  return (c >> 7) & 1;
}
uint64_t ecap_flts(uint64_t e) {
  return (e >> 47) & 1;
}
uint64_t ecap_slts(uint64_t e) {
  return (e >> 46) & 1;
}
uint64_t ecap_slads(uint64_t e) {
  return (e >> 45) & 1;
}
uint64_t ecap_smts(uint64_t e) {
  return (e >> 43) & 1;
}
uint64_t ecap_pasid(uint64_t e) {
  return (e >> 40) & 1;
}
uint64_t ecap_pss(uint64_t e) {
  return (e >> 35) & 0x1f;
}
uint64_t ecap_eafs(uint64_t e) {
  return (e >> 34) & 1;
}
uint64_t ecap_srs(uint64_t e) {
  return (e >> 31) & 1;
}
uint64_t ecap_ers(uint64_t e) {
  return (e >> 30) & 1;
}
uint64_t ecap_prs(uint64_t e) {
  return (e >> 29) & 1;
}
uint64_t ecap_nest(uint64_t e) {
  return (e >> 26) & 1;
}
uint64_t ecap_pass_through(uint64_t e) {
  return (e >> 6) & 1;
}
uint64_t ecap_dev_iotlb_support(uint64_t e) {
  return (e >> 2) & 1;
}
uint64_t ecap_qis(uint64_t e) {
  return (e >> 1) & 1;
}

TEST(NestingInfo, DefaultConfiguration) {
  const NestingInfo info = make_nesting_info(EngineConfig{}, kNestingFeatAll);
  EXPECT_EQ(info.size, sizeof(NestingInfo));
  EXPECT_EQ(info.format, kNestingFormatVtd);
  EXPECT_EQ(info.features, kNestingFeatAll);
  EXPECT_EQ(info.flags, 0u);
  EXPECT_EQ(info.host_address_width, 48);
  EXPECT_EQ(info.guest_address_width, 57);
  EXPECT_EQ(info.pasid_bits, 20);
  EXPECT_EQ(info.fl_levels, (1u << 4) | (1u << 5));
  EXPECT_EQ(info.sl_levels, (1u << 3) | (1u << 4) | (1u << 5));
  const uint64_t c = info.vtd.cap_reg, e = info.vtd.ecap_reg;
  EXPECT_EQ(cap_sagaw(c), 0b1110u);
  EXPECT_EQ(cap_mgaw(c), 57u);
  EXPECT_EQ(cap_ndoms(c), 65536u);
  EXPECT_EQ(cap_super_page_val(c), 3u);
  EXPECT_EQ(cap_pgsel_inv(c), 1u);
  EXPECT_EQ(cap_fl1gp_support(c), 1u);
  EXPECT_EQ(cap_fl5lp_support(c), 1u);
  EXPECT_EQ(cap_max_amask_val(c), 18u);
  EXPECT_EQ(cap_caching_mode(c), 0u);
  EXPECT_EQ(ecap_flts(e), 1u);
  EXPECT_EQ(ecap_slts(e), 1u);
  EXPECT_EQ(ecap_slads(e), 1u);
  EXPECT_EQ(ecap_smts(e), 1u);
  EXPECT_EQ(ecap_nest(e), 1u);
  EXPECT_EQ(ecap_pasid(e), 1u);
  EXPECT_EQ(ecap_pss(e), 19u);
  EXPECT_EQ(ecap_eafs(e), 1u);
  EXPECT_EQ(ecap_srs(e), 1u);
  EXPECT_EQ(ecap_ers(e), 1u);
  EXPECT_EQ(ecap_prs(e), 0u);  // no page-request queue
  EXPECT_EQ(ecap_pass_through(e), 1u);
  EXPECT_EQ(ecap_dev_iotlb_support(e), 1u);
  EXPECT_EQ(ecap_qis(e), 1u);
}

TEST(NestingInfo, RegistersFollowTheConfiguration) {
  EngineConfig ec;
  ec.first_level_5 = false;
  ec.first_level_1g = false;
  ec.second_level_1g = false;
  ec.sagaw = 0b0100;  // 48-bit only
  ec.pasid_bits = 10;
  const NestingInfo info = make_nesting_info(ec, kNestingFeatSyswidePasid, 255);
  const uint64_t c = info.vtd.cap_reg, e = info.vtd.ecap_reg;
  EXPECT_EQ(cap_fl5lp_support(c), 0u);
  EXPECT_EQ(cap_fl1gp_support(c), 0u);
  EXPECT_EQ(cap_super_page_val(c), 1u);  // 2M only
  EXPECT_EQ(cap_sagaw(c), 0b0100u);
  EXPECT_EQ(cap_mgaw(c), 48u);
  EXPECT_EQ(cap_ndoms(c), 256u);
  EXPECT_EQ(ecap_pss(e), 9u);
  EXPECT_EQ(info.fl_levels, 1u << 4);
  EXPECT_EQ(info.sl_levels, 1u << 4);
  EXPECT_EQ(info.guest_address_width, 48);
  EXPECT_EQ(info.pasid_bits, 10);
  EXPECT_EQ(info.features, uint32_t(kNestingFeatSyswidePasid));
  ec.second_level_2m = false;
  EXPECT_EQ(cap_super_page_val(vtd_cap(ec)), 0u);
}

TEST(NestingInfo, LayerReportsExactlyItsFeatures) {
  for (uint32_t f = 0; f <= kNestingFeatAll; ++f) {
    BindConfig bc;
    bc.features = f;
    bindtest::World w({}, bc, 1);
    // CACHE_INVLD comes with BIND_PGTBL (mandatory for nesting in the v2 nesting-info series);
    // otherwise a configuration has exactly the features it asked for.
    const uint32_t want = (f & kNestingFeatBindPgtbl) ? (f | uint32_t(kNestingFeatCacheInvld)) : f;
    EXPECT_EQ(w.layer().nesting_info().features, want);
    NestingInfo out;
    ASSERT_EQ(w.layer().get_nesting_info(&out, sizeof out), 0);
    EXPECT_EQ(out.features, want);
  }
}

// DIRECT_INVLD (nestor's bit 3): the owner invalidates through its own queue, so the duty
// CACHE_INVLD names is gone and the bit is not reported, asked for or not.
TEST(NestingInfo, DirectInvalidationReplacesCacheInvld) {
  for (uint32_t f = 0; f <= kNestingFeatAll; ++f) {
    BindConfig bc;
    bc.features = f | kNestingFeatDirectInvld;
    bindtest::World w({}, bc, 1);
    const uint32_t want = (f & ~uint32_t(kNestingFeatCacheInvld)) | kNestingFeatDirectInvld;
    EXPECT_EQ(w.layer().nesting_info().features, want) << f;
  }
  // Unknown bits are still refused.
  BindConfig bad;
  bad.features = kNestingFeatKnown | (1u << 4);
  EXPECT_THROW(bindtest::World w({}, bad, 1), std::runtime_error);
}

TEST(NestingInfo, SmallerCallerGetsThePrefixOnly) {
  const NestingInfo info = make_nesting_info(EngineConfig{}, kNestingFeatAll);
  uint8_t buf[64];
  std::memset(buf, 0xAA, sizeof buf);
  ASSERT_EQ(copy_nesting_info(info, buf, 12), 0);
  EXPECT_EQ(std::memcmp(buf, &info, 12), 0);
  for (size_t i = 12; i < sizeof buf; ++i) ASSERT_EQ(buf[i], 0xAA) << i;
  uint32_t size;
  std::memcpy(&size, buf, 4);
  EXPECT_EQ(size, sizeof(NestingInfo));  // tells the caller there is more
}

TEST(NestingInfo, LargerCallerGetsTheTailZeroed) {
  const NestingInfo info = make_nesting_info(EngineConfig{}, kNestingFeatAll);
  uint8_t buf[100];
  std::memset(buf, 0xAA, sizeof buf);
  ASSERT_EQ(copy_nesting_info(info, buf, sizeof buf), 0);
  EXPECT_EQ(std::memcmp(buf, &info, sizeof info), 0);
  for (size_t i = sizeof info; i < sizeof buf; ++i) ASSERT_EQ(buf[i], 0) << i;
}

TEST(NestingInfo, TooSmallOrNull) {
  const NestingInfo info;
  uint8_t buf[4] = {1, 2, 3, 4};
  EXPECT_EQ(copy_nesting_info(info, buf, 3), -EINVAL);
  EXPECT_EQ(buf[0], 1);
  EXPECT_EQ(copy_nesting_info(info, nullptr, 48), -EINVAL);
  EXPECT_EQ(copy_nesting_info(info, buf, 4), 0);
}

}  // namespace
}  // namespace nestor
