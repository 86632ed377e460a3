// Raw VT-d queued-invalidation descriptors (128-bit and 256-bit) decoded into canonical ops.
// Bit layouts and where they were checked: docs/INVQ.md.
#pragma once

#include <array>
#include <cstdint>

#include "nestor/invq/op.h"

namespace nestor::invq {

// Descriptor type: bits 3:0 plus type-high bits 11:9 (as bits 6:4 of the type).
enum class DescriptorType : uint8_t {
  kContextCache = 0x1,
  kIotlb = 0x2,
  kDevTlb = 0x3,
  kInterruptEntryCache = 0x4,
  kWait = 0x5,
  kPasidIotlb = 0x6,
  kPasidCache = 0x7,
  kPasidDevTlb = 0x8,
};

enum class DescriptorWidth : uint8_t { k128 = 16, k256 = 32 };

enum class DecodeError : uint8_t {
  kNone = 0,
  kUnknownType,
  kReservedBit,
  kInvalidGranularity,
  kAddressMaskTooLarge,  // AM > MAMV (type 0x2 only)
  kMisalignedAddress,    // low AM bits of ADDR set, only with strict_address_alignment
  kRequires256Bit,       // 256-bit-only descriptor (0x6, 0x7, 0x8, or upper half set) in a
                         // queue configured for 128-bit descriptors
  kWaitWithoutAction,    // wait descriptor with none of SW, IF and FN set
};
const char *to_string(DecodeError error);

struct DecodeOptions {
  // Maximum address mask value (CAP.MAMV). Page-selective IOTLB (0x2) ops with AM > mamv are
  // rejected; PASID-based IOTLB (0x6) ops are not limited by it (docs/INVQ.md, "Address mask").
  uint8_t mamv = 18;
  // VT-d says hardware ignores ADDR bits below 2^AM pages; the default follows that (the
  // region is aligned down). Strict mode reports them instead, to catch buggy guests.
  bool strict_address_alignment = false;
};

// Quadwords as read from memory (little-endian); qw[2], qw[3] only exist in 256-bit mode.
struct RawDescriptor {
  std::array<uint64_t, 4> qw{};
};

enum class DecodedKind : uint8_t { kOp, kWait, kNoOp };

struct DecodedDescriptor {
  DecodedKind kind = DecodedKind::kNoOp;
  uint8_t type = 0;  // raw 7-bit type, valid even on error
  InvalidationOp op;
  WaitOp wait;
};

struct DecodeResult {
  DecodeError error = DecodeError::kNone;
  DecodedDescriptor descriptor;
  bool ok() const { return error == DecodeError::kNone; }
};

uint8_t descriptor_type(uint64_t qw0);

DecodeResult decode_descriptor(const RawDescriptor &raw, DescriptorWidth width,
                               const DecodeOptions &options = {});
// The same decode into a caller-owned descriptor (reused across a queue's descriptors). On
// success only the member `kind` names is meaningful; on error only `type`.
DecodeError decode_descriptor(const RawDescriptor &raw, DescriptorWidth width,
                              const DecodeOptions &options, DecodedDescriptor &out);

// Types that exist only in the 256-bit format (VT-d 6.5.2: the PASID-granular descriptors).
bool requires_256bit(DescriptorType type);

// Reserved-bit masks for 128-bit descriptors, {qw0, qw1}; exposed so tests and docs agree.
struct ReservedMasks {
  uint64_t qw0;
  uint64_t qw1;
};
ReservedMasks reserved_masks(DescriptorType type);

}  // namespace nestor::invq
