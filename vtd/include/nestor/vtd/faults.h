// VT-d's fault codes: the fault reasons of the scalable-mode fault recording registers, their
// names, and how a neutral walk fault (nestor/walkers/types.h) becomes one of them.
#pragma once

#include <cstdint>

#include "nestor/personality.h"
#include "nestor/walkers/types.h"

namespace nestor {

// Defines the enumerators of the opaque code nestor/personality.h declares.
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
    case FaultReason::kNone:
      return "no fault";
    case FaultReason::kRootTableAddressInvalid:
      return "SM: Invalid Root Table Address";
    case FaultReason::kRootEntryAccess:
      return "SM: Error attempting to access Root Entry";
    case FaultReason::kRootEntryNotPresent:
      return "SM: Present bit in Root Entry is clear";
    case FaultReason::kRootEntryReserved:
      return "SM: Non-zero reserved field set in Root Entry";
    case FaultReason::kContextEntryAccess:
      return "SM: Error attempting to access Context Entry";
    case FaultReason::kContextEntryNotPresent:
      return "SM: Present bit in Context Entry is clear";
    case FaultReason::kContextEntryReserved:
      return "SM: Non-zero reserved field set in the Context Entry";
    case FaultReason::kContextPasidDisabled:
      return "SM: PASID Enable field in Context Entry is clear";
    case FaultReason::kPasidTooLarge:
      return "SM: PASID is larger than the max in Context Entry";
    case FaultReason::kRidPasidError:
      return "SM: RID_PASID field error in Context-Entry";
    case FaultReason::kPasidDirEntryAccess:
      return "SM: Error attempting to access the PASID Directory Entry";
    case FaultReason::kPasidDirEntryNotPresent:
      return "SM: Present bit in Directory Entry is clear";
    case FaultReason::kPasidDirEntryReserved:
      return "SM: Non-zero reserved field set in PASID Directory Entry";
    case FaultReason::kPasidEntryAccess:
      return "SM: Error attempting to access PASID Table Entry";
    case FaultReason::kPasidEntryNotPresent:
      return "SM: Present bit in PASID Table Entry is clear";
    case FaultReason::kPasidEntryReserved:
      return "SM: Non-zero reserved field set in PASID Table Entry";
    case FaultReason::kPasidEntryInvalid:
      return "SM: Invalid Scalable-Mode PASID Table Entry";
    case FaultReason::kExecuteRequestsDisabled:
      return "SM: ERE field is clear in PASID Table Entry";
    case FaultReason::kSupervisorRequestsDisabled:
      return "SM: SRE field is clear in PASID Table Entry";
    case FaultReason::kFirstLevelEntryAccess:
      return "SM: Error attempting to access first-level paging entry";
    case FaultReason::kFirstLevelEntryNotPresent:
      return "SM: Present bit in first-level paging entry is clear";
    case FaultReason::kFirstLevelEntryReserved:
      return "SM: Non-zero reserved field set in first-level paging entry";
    case FaultReason::kFirstLevelRootAccess:
      return "SM: Error attempting to access FL-PML4 entry";
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
    case FaultReason::kWriteDenied:
      return "SM: No write permission for Write/AtomicOp request";
    case FaultReason::kReadDenied:
      return "SM: No read permission for Read/AtomicOp request";
  }
  return "Unknown";
}

namespace vtd {

// The reason VT-d reports for a walk fault (spec 7.1.3, "Fault Conditions and Remapping
// Hardware Behavior", scalable-mode table). The stage tells apart the reasons VT-d keeps per
// level: a paging entry that cannot be read, is not present or has reserved bits set is a
// first-level fault (0x70-0x72) in the first-level walk, and a second-level one (0x78-0x7A) in
// a second-level walk, whether of the final GPA or, nested, of a first-level table's GPA.
constexpr FaultReason fault_reason(const WalkFault &w) {
  const bool first = w.stage == FaultStage::kFirstLevel;
  switch (w.error) {
    case WalkError::kNone:
      return FaultReason::kNone;
    case WalkError::kEntryAccess:
      return first ? FaultReason::kFirstLevelEntryAccess : FaultReason::kSecondLevelEntryAccess;
    case WalkError::kRootEntryAccess:
      return FaultReason::kFirstLevelRootAccess;
    case WalkError::kNotPresent:
      return first ? FaultReason::kFirstLevelEntryNotPresent
                   : FaultReason::kSecondLevelEntryNotPresent;
    case WalkError::kReserved:
      return first ? FaultReason::kFirstLevelEntryReserved : FaultReason::kSecondLevelEntryReserved;
    case WalkError::kTablePointerInvalid:
      return FaultReason::kSecondLevelPointerInvalid;
    case WalkError::kInputBeyondWidth:
      return FaultReason::kAddressBeyondMax;
    case WalkError::kOutputBeyondWidth:
      return FaultReason::kFirstLevelAddressBeyondGaw;
    case WalkError::kNonCanonical:
      return FaultReason::kNonCanonicalAddress;
    case WalkError::kPrivilegedDisabled:
      return FaultReason::kSupervisorRequestsDisabled;
    case WalkError::kExecuteDisabled:
      return FaultReason::kExecuteRequestsDisabled;
    case WalkError::kUserDenied:
      return FaultReason::kUserAccessDenied;
    case WalkError::kReadDenied:
      return FaultReason::kReadDenied;
    case WalkError::kWriteDenied:
      return FaultReason::kWriteDenied;
    case WalkError::kExecuteDenied:
      return FaultReason::kExecuteDenied;
    case WalkError::kRootTableReadDenied:
      return FaultReason::kFirstLevelRootReadDenied;
    case WalkError::kTableReadDenied:
      return FaultReason::kFirstLevelEntryReadDenied;
    case WalkError::kTableWriteDenied:
      return FaultReason::kFirstLevelEntryWriteDenied;
  }
  return FaultReason::kNone;
}

constexpr Fault fault(const WalkFault &w) {
  return {fault_reason(w), w.stage, w.level, w.address};
}

}  // namespace vtd
}  // namespace nestor
