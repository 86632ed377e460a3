#include "nestor/vtd/descriptor.h"

#include <bit>

namespace nestor::invq {

namespace {

constexpr uint64_t kAllOnes = ~uint64_t{0};

uint64_t bits(uint64_t value, unsigned low, unsigned width) {
  return (value >> low) & ((uint64_t{1} << width) - 1);
}

// Page-selective IOTLB / PASID-IOTLB address: ADDR 63:12, IH 6, AM 5:0 of qw1. `mamv_applies`
// is false for type 0x6: Linux's qi_flush_piotlb sends masks up to the address width for large
// unmaps and QEMU's vtd_process_piotlb_desc takes any AM, so CAP.MAMV bounds only type 0x2.
// A mask at or beyond the 52-bit page space names every page.
DecodeError decode_page_range(uint64_t qw1, const DecodeOptions &options, bool mamv_applies,
                              InvalidationOp &op) {
  unsigned address_mask = static_cast<unsigned>(bits(qw1, 0, 6));
  const unsigned mamv = options.mamv > 52 ? 52u : options.mamv;
  if (mamv_applies && address_mask > mamv) return DecodeError::kAddressMaskTooLarge;
  if (address_mask > 52) address_mask = 52;
  uint64_t page = qw1 >> kPageShift;
  const uint64_t low_pages = (uint64_t{1} << address_mask) - 1;
  if ((page & low_pages) != 0) {
    if (options.strict_address_alignment) return DecodeError::kMisalignedAddress;
    page &= ~low_pages;
  }
  op.scope = Scope::kRange;
  op.addr = page << kPageShift;
  op.npages = uint64_t{1} << address_mask;
  op.leaf = bits(qw1, 6, 1) != 0;
  return DecodeError::kNone;
}

// Device-TLB size: S=0 is one page; S=1 means the lowest clear bit of ADDR[63:12] at position
// k (counted from bit 12) selects 2^(k+1) pages; all ones selects the whole address space.
// Returns false for the whole space.
bool decode_devtlb_range(uint64_t qw1, bool size_bit, InvalidationOp &op) {
  uint64_t page = qw1 >> kPageShift;
  if (!size_bit) {
    op.addr = page << kPageShift;
    op.npages = 1;
    return true;
  }
  const unsigned trailing_ones = static_cast<unsigned>(std::countr_one(page));
  if (trailing_ones >= 51) return false;  // 2^52 pages: every address
  const unsigned order = trailing_ones + 1;
  page = (page >> order) << order;
  op.addr = page << kPageShift;
  op.npages = uint64_t{1} << order;
  return true;
}

uint16_t decode_pfsid(uint64_t qw0) {
  return static_cast<uint16_t>(bits(qw0, 12, 4) | (bits(qw0, 52, 12) << 4));
}

}  // namespace

const char *to_string(DecodeError error) {
  switch (error) {
    case DecodeError::kNone:
      return "none";
    case DecodeError::kUnknownType:
      return "unknown descriptor type";
    case DecodeError::kReservedBit:
      return "reserved bit set";
    case DecodeError::kInvalidGranularity:
      return "invalid granularity";
    case DecodeError::kAddressMaskTooLarge:
      return "address mask larger than MAMV";
    case DecodeError::kMisalignedAddress:
      return "address not aligned to 2^AM pages";
    case DecodeError::kRequires256Bit:
      return "256-bit descriptor in a 128-bit queue";
    case DecodeError::kWaitWithoutAction:
      return "wait descriptor with none of SW, IF, FN";
  }
  return "?";
}

uint8_t descriptor_type(uint64_t qw0) {
  return static_cast<uint8_t>(bits(qw0, 0, 4) | (bits(qw0, 9, 3) << 4));
}

bool requires_256bit(DescriptorType type) {
  return type == DescriptorType::kPasidIotlb || type == DescriptorType::kPasidCache ||
         type == DescriptorType::kPasidDevTlb;
}

ReservedMasks reserved_masks(DescriptorType type) {
  switch (type) {
    case DescriptorType::kContextCache:
      // G 5:4, DID 31:16, SID 47:32, FM 49:48.
      return {0xFFFC00000000F1C0ull, kAllOnes};
    case DescriptorType::kIotlb:
      // G 5:4, DW 6, DR 7 (both ignored), DID 31:16 | AM 5:0, IH 6, ADDR 63:12.
      return {0xFFFFFFFF0000F100ull, 0xF80ull};
    case DescriptorType::kDevTlb:
      // PFSID 15:12 + 63:52, MIP 20:16, SID 47:32 | S 0, ADDR 63:12.
      return {0x000F0000FFE001F0ull, 0xFFEull};
    case DescriptorType::kInterruptEntryCache:
      // G 4, IM 31:27, IIDX 47:32.
      return {0xFFFF000007FFF1E0ull, kAllOnes};
    case DescriptorType::kWait:
      // IF 4, SW 5, FN 6, PD 7, status data 63:32 | status address 63:2.
      return {0x00000000FFFFF100ull, 0x3ull};
    case DescriptorType::kPasidIotlb:
      // G 5:4, DID 31:16, PASID 51:32 | AM 5:0, IH 6, ADDR 63:12.
      return {0xFFF000000000F1C0ull, 0xF80ull};
    case DescriptorType::kPasidCache:
      // G 5:4, DID 31:16, PASID 51:32.
      return {0xFFF000000000F1C0ull, kAllOnes};
    case DescriptorType::kPasidDevTlb:
      // MIP 8:4, PFSID 15:12 + 63:52, SID 31:16, PASID 51:32 | G 0, S 11, ADDR 63:12.
      return {0, 0x7FEull};
  }
  return {kAllOnes, kAllOnes};
}

// Writes straight into `out`, which the queue reuses for every descriptor of a tail write:
// building the result on the stack and copying it out (with a WaitOp and its std::function
// constructed and destroyed each time) cost more than the decoding itself.
DecodeError decode_descriptor(const RawDescriptor &raw, DescriptorWidth width,
                              const DecodeOptions &options, DecodedDescriptor &out) {
  const uint64_t qw0 = raw.qw[0];
  const uint64_t qw1 = raw.qw[1];
  const uint8_t type = descriptor_type(qw0);
  out.type = type;
  out.kind = DecodedKind::kNoOp;
  if (type < 0x1 || type > 0x8) return DecodeError::kUnknownType;
  const auto kind = static_cast<DescriptorType>(type);
  // QEMU's vtd_inv_desc_reserved_check refuses a 256-bit-only descriptor in a 128-bit queue;
  // a caller handing over a non-zero upper half for a 128-bit queue has the same mismatch.
  if (width == DescriptorWidth::k128 &&
      (requires_256bit(kind) || raw.qw[2] != 0 || raw.qw[3] != 0)) {
    return DecodeError::kRequires256Bit;
  }
  const ReservedMasks reserved = reserved_masks(kind);
  if ((qw0 & reserved.qw0) != 0 || (qw1 & reserved.qw1) != 0) {
    return DecodeError::kReservedBit;
  }
  // No descriptor type defines fields in the upper half of a 256-bit descriptor.
  if (width == DescriptorWidth::k256 && (raw.qw[2] != 0 || raw.qw[3] != 0)) {
    return DecodeError::kReservedBit;
  }

  const unsigned granularity = static_cast<unsigned>(bits(qw0, 4, 2));
  InvalidationOp &op = out.op;
  op = InvalidationOp{};
  switch (kind) {
    case DescriptorType::kContextCache: {
      op.caches = kCacheContext;
      op.did = static_cast<uint16_t>(bits(qw0, 16, 16));
      if (granularity == 1) {
        op.scope = Scope::kGlobal;
      } else if (granularity == 2) {
        op.scope = Scope::kDomain;
      } else if (granularity == 3) {
        op.scope = Scope::kDevice;
        op.source_id = static_cast<uint16_t>(bits(qw0, 32, 16));
        op.function_mask = static_cast<uint8_t>(bits(qw0, 48, 2));
      } else {
        return DecodeError::kInvalidGranularity;
      }
      out.kind = DecodedKind::kOp;
      return DecodeError::kNone;
    }
    case DescriptorType::kIotlb: {
      // IOTLB invalidation also covers the paging-structure caches (unless IH on a page op).
      op.caches = kCacheIotlb | kCachePaging;
      op.did = static_cast<uint16_t>(bits(qw0, 16, 16));
      if (granularity == 1) {
        op.scope = Scope::kGlobal;
      } else if (granularity == 2) {
        op.scope = Scope::kDomain;
      } else if (granularity == 3) {
        op.addr_is_gpa = true;
        const DecodeError error = decode_page_range(qw1, options, true, op);
        if (error != DecodeError::kNone) return error;
      } else {
        return DecodeError::kInvalidGranularity;
      }
      out.kind = DecodedKind::kOp;
      return DecodeError::kNone;
    }
    case DescriptorType::kDevTlb: {
      op.caches = kCacheDevTlb;
      op.source_id = static_cast<uint16_t>(bits(qw0, 32, 16));
      op.pfsid = decode_pfsid(qw0);
      op.max_invs_pending = static_cast<uint8_t>(bits(qw0, 16, 5));
      op.pasid = kNoPasid;
      op.scope = decode_devtlb_range(qw1, (qw1 & 1) != 0, op) ? Scope::kRange : Scope::kPasid;
      out.kind = DecodedKind::kOp;
      return DecodeError::kNone;
    }
    case DescriptorType::kInterruptEntryCache:
      return DecodeError::kNone;
    case DescriptorType::kWait: {
      WaitOp &wait = out.wait;
      wait.callback = nullptr;
      wait.interrupt = bits(qw0, 4, 1) != 0;
      wait.status_write = bits(qw0, 5, 1) != 0;
      wait.fence = bits(qw0, 6, 1) != 0;
      wait.page_request_drain = bits(qw0, 7, 1) != 0;
      wait.status_data = static_cast<uint32_t>(qw0 >> 32);
      wait.status_addr = qw1 & ~uint64_t{0x3};
      // QEMU's vtd_process_wait_desc: a wait asking for nothing is invalid; FN alone is the
      // ordering barrier of VT-d 7.10 and is valid.
      if (!wait.interrupt && !wait.status_write && !wait.fence) {
        return DecodeError::kWaitWithoutAction;
      }
      out.kind = DecodedKind::kWait;
      return DecodeError::kNone;
    }
    case DescriptorType::kPasidIotlb: {
      op.caches = kCacheIotlb | kCachePaging;
      op.did = static_cast<uint16_t>(bits(qw0, 16, 16));
      op.pasid = static_cast<uint32_t>(bits(qw0, 32, 20));
      if (granularity == 2) {
        op.scope = Scope::kPasid;
      } else if (granularity == 3) {
        const DecodeError error = decode_page_range(qw1, options, false, op);
        if (error != DecodeError::kNone) return error;
      } else {
        return DecodeError::kInvalidGranularity;
      }
      out.kind = DecodedKind::kOp;
      return DecodeError::kNone;
    }
    case DescriptorType::kPasidCache: {
      op.caches = kCachePasid;
      op.did = static_cast<uint16_t>(bits(qw0, 16, 16));
      if (granularity == 0) {
        op.scope = Scope::kDomain;
      } else if (granularity == 1) {
        op.scope = Scope::kPasid;
        op.pasid = static_cast<uint32_t>(bits(qw0, 32, 20));
      } else if (granularity == 3) {
        op.scope = Scope::kGlobal;
      } else {
        return DecodeError::kInvalidGranularity;
      }
      out.kind = DecodedKind::kOp;
      return DecodeError::kNone;
    }
    case DescriptorType::kPasidDevTlb: {
      op.caches = kCacheDevTlb;
      op.source_id = static_cast<uint16_t>(bits(qw0, 16, 16));
      op.pasid = static_cast<uint32_t>(bits(qw0, 32, 20));
      op.pfsid = decode_pfsid(qw0);
      op.max_invs_pending = static_cast<uint8_t>(bits(qw0, 4, 5));
      op.devtlb_global = (qw1 & 1) != 0;
      op.scope =
          decode_devtlb_range(qw1, bits(qw1, 11, 1) != 0, op) ? Scope::kRange : Scope::kPasid;
      out.kind = DecodedKind::kOp;
      return DecodeError::kNone;
    }
  }
  return DecodeError::kUnknownType;
}

DecodeResult decode_descriptor(const RawDescriptor &raw, DescriptorWidth width,
                               const DecodeOptions &options) {
  DecodeResult result;
  result.error = decode_descriptor(raw, width, options, result.descriptor);
  if (!result.ok()) {
    // A failed decode reports only the type, as before the in-place form existed.
    const uint8_t type = result.descriptor.type;
    result.descriptor = DecodedDescriptor{};
    result.descriptor.type = type;
  }
  return result;
}

}  // namespace nestor::invq
