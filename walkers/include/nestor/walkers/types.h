// Vocabulary shared by every walker: access kinds, fault reasons, walk results.
#pragma once

#include <cstdint>

namespace nestor {

// Request access bits. Values are part of the C ABI (NESTOR_ACCESS_*).
enum AccessBits : uint8_t {
  kAccessRead = 1,
  kAccessWrite = 2,
  kAccessExec = 4,
};

// Which part of the translation produced a fault.
enum class FaultStage : uint8_t {
  kNone = 0,
  kStructures = 1,   // root/context/PASID directory/PASID table
  kFirstLevel = 2,   // first-level walk (iova -> gpa or hpa)
  kSecondLevel = 3,  // second-level walk of the final address
  kNestedTable = 4,  // second-level walk of a first-level table pointer or entry (address = GPA)
};

// VT-d scalable-mode fault reasons (VT-d spec 7.2.3, same codes Linux's dmar.c prints).
// Numeric values are architectural and part of the C ABI.
enum class FaultReason : uint8_t {
  kNone = 0,
  kRootTableAddressInvalid = 0x30,
  kRootEntryAccess = 0x38,
  kRootEntryNotPresent = 0x39,
  kRootEntryReserved = 0x3A,
  kContextEntryAccess = 0x40,
  kContextEntryNotPresent = 0x41,
  kContextEntryReserved = 0x42,
  kContextPasidDisabled = 0x45,
  kPasidTooLarge = 0x46,
  kRidPasidError = 0x48,
  kPasidDirEntryAccess = 0x50,
  kPasidDirEntryNotPresent = 0x51,
  kPasidDirEntryReserved = 0x52,
  kPasidEntryAccess = 0x58,
  kPasidEntryNotPresent = 0x59,
  kPasidEntryReserved = 0x5A,
  kPasidEntryInvalid = 0x5B,
  kExecuteRequestsDisabled = 0x5C,     // ERE clear in PASID entry
  kSupervisorRequestsDisabled = 0x5D,  // SRE clear in PASID entry
  kFirstLevelEntryAccess = 0x70,
  kFirstLevelEntryNotPresent = 0x71,
  kFirstLevelEntryReserved = 0x72,
  kFirstLevelRootAccess = 0x73,
  kFirstLevelAddressBeyondGaw = 0x74,  // nested: an FL pointer/output GPA beyond the SL width
  kFirstLevelRootReadDenied = 0x75,    // nested: SL forbids reading the FL root table
  kFirstLevelEntryReadDenied = 0x76,   // nested: SL forbids reading an FL table
  kFirstLevelEntryWriteDenied = 0x77,  // nested: SL forbids the A/D update of an FL entry
  kSecondLevelEntryAccess = 0x78,
  kSecondLevelEntryNotPresent = 0x79,  // R=W=0 in an SL entry
  kSecondLevelEntryReserved = 0x7A,
  kSecondLevelPointerInvalid = 0x7B,
  kNonCanonicalAddress = 0x80,
  kUserAccessDenied = 0x81,  // U/S clear somewhere on a user request's path
  kExecuteDenied = 0x82,
  kAddressBeyondMax = 0x83,
  kWriteDenied = 0x85,
  kReadDenied = 0x86,
};

// The message Linux prints for each reason, so logs read the same as on hardware.
constexpr const char *fault_reason_name(FaultReason r) noexcept {
  switch (r) {
    case FaultReason::kNone: return "no fault";
    case FaultReason::kRootTableAddressInvalid: return "SM: Invalid Root Table Address";
    case FaultReason::kRootEntryAccess: return "SM: Error attempting to access Root Entry";
    case FaultReason::kRootEntryNotPresent: return "SM: Present bit in Root Entry is clear";
    case FaultReason::kRootEntryReserved: return "SM: Non-zero reserved field set in Root Entry";
    case FaultReason::kContextEntryAccess: return "SM: Error attempting to access Context Entry";
    case FaultReason::kContextEntryNotPresent: return "SM: Present bit in Context Entry is clear";
    case FaultReason::kContextEntryReserved:
      return "SM: Non-zero reserved field set in the Context Entry";
    case FaultReason::kContextPasidDisabled:
      return "SM: PASID Enable field in Context Entry is clear";
    case FaultReason::kPasidTooLarge: return "SM: PASID is larger than the max in Context Entry";
    case FaultReason::kRidPasidError: return "SM: RID_PASID field error in Context-Entry";
    case FaultReason::kPasidDirEntryAccess:
      return "SM: Error attempting to access the PASID Directory Entry";
    case FaultReason::kPasidDirEntryNotPresent: return "SM: Present bit in Directory Entry is clear";
    case FaultReason::kPasidDirEntryReserved:
      return "SM: Non-zero reserved field set in PASID Directory Entry";
    case FaultReason::kPasidEntryAccess: return "SM: Error attempting to access PASID Table Entry";
    case FaultReason::kPasidEntryNotPresent: return "SM: Present bit in PASID Table Entry is clear";
    case FaultReason::kPasidEntryReserved:
      return "SM: Non-zero reserved field set in PASID Table Entry";
    case FaultReason::kPasidEntryInvalid: return "SM: Invalid Scalable-Mode PASID Table Entry";
    case FaultReason::kExecuteRequestsDisabled: return "SM: ERE field is clear in PASID Table Entry";
    case FaultReason::kSupervisorRequestsDisabled:
      return "SM: SRE field is clear in PASID Table Entry";
    case FaultReason::kFirstLevelEntryAccess:
      return "SM: Error attempting to access first-level paging entry";
    case FaultReason::kFirstLevelEntryNotPresent:
      return "SM: Present bit in first-level paging entry is clear";
    case FaultReason::kFirstLevelEntryReserved:
      return "SM: Non-zero reserved field set in first-level paging entry";
    case FaultReason::kFirstLevelRootAccess: return "SM: Error attempting to access FL-PML4 entry";
    case FaultReason::kFirstLevelAddressBeyondGaw:
      return "SM: First-level entry address beyond MGAW in Nested translation";
    case FaultReason::kFirstLevelRootReadDenied:
      return "SM: Read permission error in FL-PML4 entry in Nested translation";
    case FaultReason::kFirstLevelEntryReadDenied:
      return "SM: Read permission error in first-level paging entry in Nested translation";
    case FaultReason::kFirstLevelEntryWriteDenied:
      return "SM: Write permission error in first-level paging entry in Nested translation";
    case FaultReason::kSecondLevelEntryAccess:
      return "SM: Error attempting to access second-level paging entry";
    case FaultReason::kSecondLevelEntryNotPresent:
      return "SM: Read/Write permission error in second-level paging entry";
    case FaultReason::kSecondLevelEntryReserved:
      return "SM: Non-zero reserved field set in second-level paging entry";
    case FaultReason::kSecondLevelPointerInvalid:
      return "SM: Invalid second-level page table pointer";
    case FaultReason::kNonCanonicalAddress:
      return "SM: Address in first-level translation is not canonical";
    case FaultReason::kUserAccessDenied:
      return "SM: U/S set 0 for first-level translation with user privilege";
    case FaultReason::kExecuteDenied:
      return "SM: No execute permission for request with PASID and ER=1";
    case FaultReason::kAddressBeyondMax:
      return "SM: Address beyond the DMA hardware max";
    case FaultReason::kWriteDenied: return "SM: No write permission for Write/AtomicOp request";
    case FaultReason::kReadDenied: return "SM: No read permission for Read/AtomicOp request";
  }
  return "Unknown";
}

struct Fault {
  FaultReason reason = FaultReason::kNone;
  FaultStage stage = FaultStage::kNone;
  uint8_t level = 0;     // paging level (1 = leaf table) or 0 for structures
  uint64_t address = 0;  // iova for FL/input faults, GPA for second-level faults
};

// What a successful walk (or cached translation) yields.
struct Translation {
  uint64_t out = 0;         // translated address of the input (page base | offset)
  uint8_t page_shift = 12;  // 12, 21 or 30
  uint8_t perms = 0;        // AccessBits the mapping grants to this kind of request
  uint8_t level = 1;        // level of the leaf entry that produced it
};

inline constexpr uint64_t page_mask(unsigned shift) { return ~((uint64_t{1} << shift) - 1); }

}  // namespace nestor
