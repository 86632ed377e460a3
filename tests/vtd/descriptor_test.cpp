// Decode tests built from hand-assembled VT-d descriptor bit patterns.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "nestor/vtd/descriptor.h"

namespace nestor::invq {
namespace {

constexpr uint64_t bit(unsigned n) {
  return uint64_t{1} << n;
}

DecodeResult decode128(uint64_t qw0, uint64_t qw1, DecodeOptions options = {}) {
  RawDescriptor raw;
  raw.qw = {qw0, qw1, 0, 0};
  return decode_descriptor(raw, DescriptorWidth::k128, options);
}

DecodeResult decode256(uint64_t qw0, uint64_t qw1, DecodeOptions options = {}) {
  RawDescriptor raw;
  raw.qw = {qw0, qw1, 0, 0};
  return decode_descriptor(raw, DescriptorWidth::k256, options);
}

// The PASID-granular types exist only as 256-bit descriptors (VT-d 6.5.2.5-6.5.2.7 lay them
// out over 256 bits); every other type is tested in a 128-bit queue.
DecodeResult decode_native(uint64_t qw0, uint64_t qw1) {
  const uint64_t type = qw0 & 0xF;
  return type >= 0x6 ? decode256(qw0, qw1) : decode128(qw0, qw1);
}

// --- type field --------------------------------------------------------------------------

TEST(DescriptorType, CombinesLowAndHighTypeBits) {
  EXPECT_EQ(descriptor_type(0x7), 0x7);
  EXPECT_EQ(descriptor_type(bit(9) | 0x1), 0x11);
  EXPECT_EQ(descriptor_type(bit(11) | 0xF), 0x4F);
  EXPECT_EQ(descriptor_type(0xFFFFFFFFFFFFF1F0ull), 0);  // only non-type bits set
}

TEST(DescriptorType, UnknownTypesAreRejected) {
  for (uint64_t type : {0x0ull, 0x9ull, 0xAull, 0xFull}) {
    EXPECT_EQ(decode128(type, 0).error, DecodeError::kUnknownType) << type;
  }
  // A known low nibble with type-high bits set is a different (unknown) type.
  for (unsigned high : {9u, 10u, 11u}) {
    const DecodeResult result = decode128(bit(high) | 0x2 | (1u << 4), 0);
    EXPECT_EQ(result.error, DecodeError::kUnknownType) << high;
    EXPECT_EQ(result.descriptor.type, 0x2 | (1u << (high - 5)));
  }
}

// --- reserved bits: every bit of both quadwords, per type ----------------------------------

struct ReservedCase {
  DescriptorType type;
  uint64_t valid_qw0;  // a descriptor that decodes fine
  uint64_t valid_qw1;
  uint64_t reserved_qw0;  // expected masks, from the layouts in docs/INVQ.md
  uint64_t reserved_qw1;
};

// Masks written out from the field layouts, independently of the library's table.
const ReservedCase kReservedCases[] = {
    // CC: G 5:4, DID 31:16, SID 47:32, FM 49:48; rsvd 8:6, 15:12, 63:50, all of qw1.
    {DescriptorType::kContextCache, 0x1 | (1u << 4), 0,
     bit(6) | bit(7) | bit(8) | 0xF000ull | 0xFFFC000000000000ull, ~0ull},
    // IOTLB: G 5:4, DW 6, DR 7, DID 31:16; rsvd 8, 15:12, 63:32. qw1 rsvd 11:7.
    {DescriptorType::kIotlb, 0x2 | (1u << 4), 0, bit(8) | 0xF000ull | 0xFFFFFFFF00000000ull,
     0xF80ull},
    // DevTLB: rsvd 8:4, 31:21, 51:48. qw1 rsvd 11:1.
    {DescriptorType::kDevTlb, 0x3, 0, 0x1F0ull | 0xFFE00000ull | 0x000F000000000000ull, 0xFFEull},
    // IEC: G 4, IM 31:27, IIDX 47:32; rsvd 8:5, 15:12, 26:16, 63:48; all of qw1.
    {DescriptorType::kInterruptEntryCache, 0x4, 0,
     0x1E0ull | 0xF000ull | 0x07FF0000ull | 0xFFFF000000000000ull, ~0ull},
    // Wait: IF 4, SW 5, FN 6, PD 7, data 63:32; rsvd 8, 31:12. qw1 rsvd 1:0.
    {DescriptorType::kWait, 0x5 | bit(6), 0, bit(8) | 0xFFFFF000ull, 0x3ull},
    // PASID-IOTLB: rsvd 8:6, 15:12, 63:52. qw1 rsvd 11:7.
    {DescriptorType::kPasidIotlb, 0x6 | (2u << 4), 0, 0x1C0ull | 0xF000ull | 0xFFF0000000000000ull,
     0xF80ull},
    // PASID cache: rsvd 8:6, 15:12, 63:52; all of qw1.
    {DescriptorType::kPasidCache, 0x7 | (3u << 4), 0, 0x1C0ull | 0xF000ull | 0xFFF0000000000000ull,
     ~0ull},
    // PASID DevTLB: every qw0 bit is a field. qw1 rsvd 10:1.
    {DescriptorType::kPasidDevTlb, 0x8, 0, 0, 0x7FEull},
};

TEST(DescriptorReserved, LibraryMasksMatchLayouts) {
  for (const ReservedCase &c : kReservedCases) {
    const ReservedMasks masks = reserved_masks(c.type);
    EXPECT_EQ(masks.qw0, c.reserved_qw0) << static_cast<int>(c.type);
    EXPECT_EQ(masks.qw1, c.reserved_qw1) << static_cast<int>(c.type);
  }
}

TEST(DescriptorReserved, EveryReservedBitIsRejectedAndNoFieldBitIs) {
  constexpr uint64_t kTypeBits = 0xFull | bit(9) | bit(10) | bit(11);
  for (const ReservedCase &c : kReservedCases) {
    ASSERT_TRUE(decode_native(c.valid_qw0, c.valid_qw1).ok()) << static_cast<int>(c.type);
    for (unsigned n = 0; n < 64; ++n) {
      if ((kTypeBits & bit(n)) != 0) continue;
      // Clearing FN leaves a wait that asks for nothing: invalid, but not for a reserved bit.
      if (c.type == DescriptorType::kWait && n == 6) continue;
      const DecodeResult low = decode_native(c.valid_qw0 ^ bit(n), c.valid_qw1);
      const bool low_reserved = (c.reserved_qw0 & bit(n)) != 0;
      EXPECT_EQ(low.error == DecodeError::kReservedBit, low_reserved)
          << "type " << static_cast<int>(c.type) << " qw0 bit " << n;
      const DecodeResult high = decode_native(c.valid_qw0, c.valid_qw1 ^ bit(n));
      const bool high_reserved = (c.reserved_qw1 & bit(n)) != 0;
      EXPECT_EQ(high.error == DecodeError::kReservedBit, high_reserved)
          << "type " << static_cast<int>(c.type) << " qw1 bit " << n;
    }
  }
}

TEST(DescriptorReserved, UpperHalfOf256BitDescriptorMustBeZero) {
  for (const ReservedCase &c : kReservedCases) {
    RawDescriptor raw;
    raw.qw = {c.valid_qw0, c.valid_qw1, 0, 0};
    EXPECT_TRUE(decode_descriptor(raw, DescriptorWidth::k256).ok());
    for (unsigned word : {2u, 3u}) {
      for (unsigned n : {0u, 17u, 63u}) {
        raw.qw = {c.valid_qw0, c.valid_qw1, 0, 0};
        raw.qw[word] = bit(n);
        EXPECT_EQ(decode_descriptor(raw, DescriptorWidth::k256).error, DecodeError::kReservedBit);
        // A non-zero upper half handed over for a 128-bit queue is a 256-bit descriptor in
        // the wrong queue (QEMU vtd_inv_desc_reserved_check: invalid descriptor).
        EXPECT_EQ(decode_descriptor(raw, DescriptorWidth::k128).error,
                  DecodeError::kRequires256Bit);
      }
    }
  }
}

// --- context cache (0x1) ------------------------------------------------------------------

TEST(ContextCacheDescriptor, Granularities) {
  const uint64_t did = uint64_t{0xBEEF} << 16;
  const DecodeResult global = decode128(0x1 | (1u << 4) | did, 0);
  ASSERT_TRUE(global.ok());
  EXPECT_EQ(global.descriptor.kind, DecodedKind::kOp);
  EXPECT_EQ(global.descriptor.op.caches, kCacheContext);
  EXPECT_EQ(global.descriptor.op.scope, Scope::kGlobal);

  const DecodeResult domain = decode128(0x1 | (2u << 4) | did, 0);
  ASSERT_TRUE(domain.ok());
  EXPECT_EQ(domain.descriptor.op.scope, Scope::kDomain);
  EXPECT_EQ(domain.descriptor.op.did, 0xBEEF);

  const uint64_t sid = uint64_t{0x1234} << 32;
  const uint64_t fm = uint64_t{2} << 48;
  const DecodeResult device = decode128(0x1 | (3u << 4) | did | sid | fm, 0);
  ASSERT_TRUE(device.ok());
  EXPECT_EQ(device.descriptor.op.scope, Scope::kDevice);
  EXPECT_EQ(device.descriptor.op.source_id, 0x1234);
  EXPECT_EQ(device.descriptor.op.function_mask, 2);

  EXPECT_EQ(decode128(0x1 | did, 0).error, DecodeError::kInvalidGranularity);
}

TEST(ContextCacheDescriptor, FunctionMaskIgnoresHighFunctionBits) {
  EXPECT_TRUE(source_id_matches(0x0100, 0x0100, 0));
  EXPECT_FALSE(source_id_matches(0x0104, 0x0100, 0));
  EXPECT_TRUE(source_id_matches(0x0104, 0x0100, 1));   // bit 2 masked
  EXPECT_FALSE(source_id_matches(0x0102, 0x0100, 1));  // bit 1 still compared
  EXPECT_TRUE(source_id_matches(0x0106, 0x0100, 2));
  EXPECT_FALSE(source_id_matches(0x0101, 0x0100, 2));
  EXPECT_TRUE(source_id_matches(0x0107, 0x0100, 3));
  EXPECT_FALSE(source_id_matches(0x0108, 0x0100, 3));  // device number never masked
}

// --- IOTLB (0x2) ----------------------------------------------------------------------------

TEST(IotlbDescriptor, GlobalAndDomain) {
  const uint64_t did = uint64_t{7} << 16;
  const DecodeResult global = decode128(0x2 | (1u << 4) | did | bit(6) | bit(7), 0);
  ASSERT_TRUE(global.ok());  // DR/DW are ignored
  EXPECT_EQ(global.descriptor.op.scope, Scope::kGlobal);
  EXPECT_EQ(global.descriptor.op.caches, kCacheIotlb | kCachePaging);
  const DecodeResult domain = decode128(0x2 | (2u << 4) | did, 0);
  ASSERT_TRUE(domain.ok());
  EXPECT_EQ(domain.descriptor.op.scope, Scope::kDomain);
  EXPECT_EQ(domain.descriptor.op.did, 7);
  EXPECT_EQ(decode128(0x2 | did, 0).error, DecodeError::kInvalidGranularity);
}

TEST(IotlbDescriptor, PageSelectiveAddressesSecondLevelByGpa) {
  const uint64_t qw0 = 0x2 | (3u << 4) | (uint64_t{9} << 16);
  const DecodeResult page = decode128(qw0, 0x12345000ull | bit(6) | 3);  // IH, AM=3
  ASSERT_TRUE(page.ok());
  const InvalidationOp &op = page.descriptor.op;
  EXPECT_EQ(op.scope, Scope::kRange);
  EXPECT_TRUE(op.addr_is_gpa);
  EXPECT_TRUE(op.leaf);
  EXPECT_EQ(op.did, 9);
  EXPECT_EQ(op.npages, 8u);
  EXPECT_EQ(op.addr, 0x12340000ull);  // low AM bits of the page number ignored
  const DecodeResult single = decode128(qw0, 0x7000);
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(single.descriptor.op.npages, 1u);
  EXPECT_FALSE(single.descriptor.op.leaf);
}

TEST(IotlbDescriptor, AddressMaskLimits) {
  const uint64_t qw0 = 0x2 | (3u << 4);
  EXPECT_TRUE(decode128(qw0, 18).ok());  // default MAMV = 18
  EXPECT_EQ(decode128(qw0, 19).error, DecodeError::kAddressMaskTooLarge);
  EXPECT_EQ(decode128(qw0, 63).error, DecodeError::kAddressMaskTooLarge);
  DecodeOptions small;
  small.mamv = 4;
  EXPECT_TRUE(decode128(qw0, 4, small).ok());
  EXPECT_EQ(decode128(qw0, 5, small).error, DecodeError::kAddressMaskTooLarge);
}

TEST(IotlbDescriptor, StrictAlignmentRejectsLowAddressBits) {
  DecodeOptions strict;
  strict.strict_address_alignment = true;
  const uint64_t qw0 = 0x2 | (3u << 4);
  EXPECT_EQ(decode128(qw0, 0x1000 | 1, strict).error, DecodeError::kMisalignedAddress);
  EXPECT_TRUE(decode128(qw0, 0x2000 | 1, strict).ok());
  EXPECT_TRUE(decode128(qw0, 0x1000 | 1).ok());  // lenient default
}

// --- device TLB (0x3) -----------------------------------------------------------------------

TEST(DevTlbDescriptor, FieldsAndSingtePage) {
  const uint64_t qw0 = 0x3 | (uint64_t{0xA} << 12) | (uint64_t{0x1F} << 16) |
                       (uint64_t{0x0810} << 32) | (uint64_t{0xABC} << 52);
  const DecodeResult result = decode128(qw0, 0xDEAD000);
  ASSERT_TRUE(result.ok());
  const InvalidationOp &op = result.descriptor.op;
  EXPECT_EQ(op.caches, kCacheDevTlb);
  EXPECT_EQ(op.scope, Scope::kRange);
  EXPECT_EQ(op.source_id, 0x0810);
  EXPECT_EQ(op.pfsid, 0xABCA);
  EXPECT_EQ(op.max_invs_pending, 0x1F);
  EXPECT_EQ(op.pasid, kNoPasid);
  EXPECT_EQ(op.addr, 0xDEAD000ull);
  EXPECT_EQ(op.npages, 1u);
}

TEST(DevTlbDescriptor, SizeBitEncodesPowerOfTwoByLowestClearBit) {
  // S=1, ADDR[12]=0: 8K.
  DecodeResult r = decode128(0x3, 0x4000 | 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.descriptor.op.npages, 2u);
  EXPECT_EQ(r.descriptor.op.addr, 0x4000ull);
  // S=1, ADDR[13:12]=01b: 16K, aligned down.
  r = decode128(0x3, 0x9000 | 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.descriptor.op.npages, 4u);
  EXPECT_EQ(r.descriptor.op.addr, 0x8000ull);
  // S=1, ADDR[63:12] = 0x7FFFF... except bit 63: 2^52 / 2 pages... bit 62 lowest clear -> 2^51.
  r = decode128(0x3, 0xBFFFFFFFFFFFF000ull | 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.descriptor.op.npages, uint64_t{1} << 51);
  EXPECT_EQ(r.descriptor.op.addr, 0x8000000000000000ull);
  // All ones: every address of the device.
  r = decode128(0x3, 0xFFFFFFFFFFFFF000ull | 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.descriptor.op.scope, Scope::kPasid);
  EXPECT_EQ(r.descriptor.op.pasid, kNoPasid);
}

// --- interrupt entry cache (0x4) ------------------------------------------------------------

TEST(IecDescriptor, AcceptedAsNoOp) {
  const DecodeResult r = decode128(0x4 | bit(4) | (uint64_t{0x1F} << 27) | (uint64_t{5} << 32), 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.descriptor.kind, DecodedKind::kNoOp);
  EXPECT_EQ(r.descriptor.type, 0x4);
}

// --- wait (0x5) -----------------------------------------------------------------------------

TEST(WaitDescriptor, Fields) {
  const uint64_t qw0 = 0x5 | bit(4) | bit(5) | bit(6) | (uint64_t{0xCAFEF00D} << 32);
  const DecodeResult r = decode128(qw0, 0x123456788ull);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.descriptor.kind, DecodedKind::kWait);
  const WaitOp &w = r.descriptor.wait;
  EXPECT_TRUE(w.interrupt);
  EXPECT_TRUE(w.status_write);
  EXPECT_TRUE(w.fence);
  EXPECT_FALSE(w.page_request_drain);
  EXPECT_EQ(w.status_data, 0xCAFEF00Du);
  EXPECT_EQ(w.status_addr, 0x123456788ull);

  const DecodeResult drain = decode128(0x5 | bit(6) | bit(7), 0);
  ASSERT_TRUE(drain.ok());
  EXPECT_FALSE(drain.descriptor.wait.status_write);
  EXPECT_FALSE(drain.descriptor.wait.interrupt);
  EXPECT_TRUE(drain.descriptor.wait.fence);
  EXPECT_TRUE(drain.descriptor.wait.page_request_drain);
}

// QEMU vtd_process_wait_desc: a wait with none of IF, SW and FN set is an invalid descriptor;
// FN alone is valid, being the ordering barrier of VT-d 7.10 (software drains with it).
TEST(WaitDescriptor, MustAskForStatusInterruptOrFence) {
  EXPECT_EQ(decode128(0x5, 0).error, DecodeError::kWaitWithoutAction);
  EXPECT_EQ(decode128(0x5 | bit(7), 0).error, DecodeError::kWaitWithoutAction);  // PD alone
  const DecodeResult fence = decode128(0x5 | bit(6), 0);
  ASSERT_TRUE(fence.ok());
  EXPECT_TRUE(fence.descriptor.wait.fence);
  EXPECT_TRUE(decode128(0x5 | bit(4), 0).ok());
  EXPECT_TRUE(decode128(0x5 | bit(5), 0x1000).ok());
}

// QEMU vtd_inv_desc_reserved_check: a descriptor type defined only in the 256-bit format
// (PASID-based IOTLB 0x6, PASID cache 0x7, PASID-based device TLB 0x8) found in a queue set
// up for 128-bit descriptors is an invalid descriptor.
TEST(DescriptorWidth128, PasidGranularTypesAreInvalid) {
  const uint64_t pasid_iotlb = 0x6 | (2u << 4);
  const uint64_t pasid_cache = 0x7 | (3u << 4);
  const uint64_t pasid_devtlb = 0x8;
  for (uint64_t qw0 : {pasid_iotlb, pasid_cache, pasid_devtlb}) {
    EXPECT_EQ(decode128(qw0, 0).error, DecodeError::kRequires256Bit) << qw0;
    EXPECT_TRUE(decode256(qw0, 0).ok()) << qw0;
  }
  EXPECT_TRUE(decode128(0x2 | (1u << 4), 0).ok());
}

// --- PASID-based IOTLB (0x6) ----------------------------------------------------------------

TEST(PasidIotlbDescriptor, Granularities) {
  const uint64_t ids = (uint64_t{3} << 16) | (uint64_t{0xABCDE} << 32);
  const DecodeResult all = decode256(0x6 | (2u << 4) | ids, 0);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all.descriptor.op.scope, Scope::kPasid);
  EXPECT_EQ(all.descriptor.op.did, 3);
  EXPECT_EQ(all.descriptor.op.pasid, 0xABCDEu);
  EXPECT_EQ(all.descriptor.op.caches, kCacheIotlb | kCachePaging);

  const DecodeResult page = decode256(0x6 | (3u << 4) | ids, 0x40000ull | bit(6) | 2);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page.descriptor.op.scope, Scope::kRange);
  EXPECT_FALSE(page.descriptor.op.addr_is_gpa);
  EXPECT_TRUE(page.descriptor.op.leaf);
  EXPECT_EQ(page.descriptor.op.addr, 0x40000ull);
  EXPECT_EQ(page.descriptor.op.npages, 4u);

  EXPECT_EQ(decode256(0x6 | (0u << 4) | ids, 0).error, DecodeError::kInvalidGranularity);
  EXPECT_EQ(decode256(0x6 | (1u << 4) | ids, 0).error, DecodeError::kInvalidGranularity);
}

// CAP.MAMV bounds the address mask of page-selective IOTLB invalidation (type 0x2); QEMU's
// vtd_process_piotlb_desc takes any AM for type 0x6 and Linux's qi_flush_piotlb sends masks
// up to the address width for large unmaps, so 0x6 must not stop the queue for AM > MAMV.
TEST(PasidIotlbDescriptor, AddressMaskAboveMamvIsAccepted) {
  const uint64_t qw0 = 0x6 | (3u << 4) | (uint64_t{3} << 16) | (uint64_t{9} << 32);
  const DecodeResult big = decode256(qw0, (uint64_t{1} << 42) | 30);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big.descriptor.op.scope, Scope::kRange);
  EXPECT_EQ(big.descriptor.op.addr, uint64_t{1} << 42);
  EXPECT_EQ(big.descriptor.op.npages, uint64_t{1} << 30);
  // A mask as wide as the 52-bit page space (or wider) names every address.
  for (unsigned am : {52u, 63u}) {
    const DecodeResult all = decode256(qw0, 0x1234000ull | am);
    ASSERT_TRUE(all.ok()) << am;
    EXPECT_EQ(all.descriptor.op.addr, 0u) << am;
    EXPECT_EQ(all.descriptor.op.npages, uint64_t{1} << 52) << am;
  }
  // Type 0x2 keeps the MAMV limit.
  EXPECT_EQ(decode128(0x2 | (3u << 4), 19).error, DecodeError::kAddressMaskTooLarge);
}

// --- PASID cache (0x7) ----------------------------------------------------------------------

TEST(PasidCacheDescriptor, Granularities) {
  const uint64_t ids = (uint64_t{0x44} << 16) | (uint64_t{0x77} << 32);
  const DecodeResult domain = decode256(0x7 | (0u << 4) | ids, 0);
  ASSERT_TRUE(domain.ok());
  EXPECT_EQ(domain.descriptor.op.caches, kCachePasid);
  EXPECT_EQ(domain.descriptor.op.scope, Scope::kDomain);
  EXPECT_EQ(domain.descriptor.op.did, 0x44);
  const DecodeResult pasid = decode256(0x7 | (1u << 4) | ids, 0);
  ASSERT_TRUE(pasid.ok());
  EXPECT_EQ(pasid.descriptor.op.scope, Scope::kPasid);
  EXPECT_EQ(pasid.descriptor.op.pasid, 0x77u);
  const DecodeResult global = decode256(0x7 | (3u << 4) | ids, 0);
  ASSERT_TRUE(global.ok());
  EXPECT_EQ(global.descriptor.op.scope, Scope::kGlobal);
  EXPECT_EQ(decode256(0x7 | (2u << 4) | ids, 0).error, DecodeError::kInvalidGranularity);
}

// --- PASID-based device TLB (0x8) -----------------------------------------------------------

TEST(PasidDevTlbDescriptor, FieldsSizeAndGlobal) {
  const uint64_t qw0 = 0x8 | (uint64_t{0x11} << 4) | (uint64_t{0x5} << 12) |
                       (uint64_t{0x0300} << 16) | (uint64_t{0x12345} << 32) |
                       (uint64_t{0xFFF} << 52);
  DecodeResult r = decode256(qw0, 0x10000ull | 1);  // G=1, S=0
  ASSERT_TRUE(r.ok());
  const InvalidationOp &op = r.descriptor.op;
  EXPECT_EQ(op.caches, kCacheDevTlb);
  EXPECT_EQ(op.source_id, 0x0300);
  EXPECT_EQ(op.pasid, 0x12345u);
  EXPECT_EQ(op.pfsid, 0xFFF5);
  EXPECT_EQ(op.max_invs_pending, 0x11);
  EXPECT_TRUE(op.devtlb_global);
  EXPECT_EQ(op.scope, Scope::kRange);
  EXPECT_EQ(op.npages, 1u);

  r = decode256(qw0, 0x13000ull | bit(11));  // S=1, ADDR[13:12]=11b, [14]=0 -> 8 pages
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.descriptor.op.devtlb_global);
  EXPECT_EQ(r.descriptor.op.npages, 8u);
  EXPECT_EQ(r.descriptor.op.addr, 0x10000ull);

  r = decode256(qw0, 0xFFFFFFFFFFFFF000ull | bit(11));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.descriptor.op.scope, Scope::kPasid);
  EXPECT_EQ(r.descriptor.op.pasid, 0x12345u);
}

}  // namespace
}  // namespace nestor::invq
