// Vocabulary shared by every walker: access kinds, walk faults, walk results. Nothing here
// belongs to one IOMMU architecture.
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
  kStructures = 1,   // the personality's device structures (VT-d: root/context/PASID)
  kFirstLevel = 2,   // first-level walk (iova -> gpa or hpa)
  kSecondLevel = 3,  // second-level walk of the final address
  kNestedTable = 4,  // second-level walk of a first-level table pointer or entry (address = GPA)
};

// Why a walk failed, in the walkers' own terms. What an architecture reports for it is its
// personality's business (nestor/personality.h: Personality::walk_fault): VT-d, for example,
// tells a first-level "not present" (0x71) from a second-level one (0x79) by the stage.
enum class WalkError : uint8_t {
  kNone = 0,
  kEntryAccess,          // reading (or atomically updating) a paging entry failed
  kRootEntryAccess,      // the same for an entry of the root table (first level)
  kNotPresent,           // first level: P clear; second level: R = W = 0
  kReserved,             // a reserved bit set, or a large page the configuration does not allow
  kTablePointerInvalid,  // the root table pointer is misaligned or beyond the host width
  kInputBeyondWidth,     // the input address has bits above what the walk translates
  kOutputBeyondWidth,    // nested: a first-level table or output GPA beyond the second level
  kNonCanonical,         // first level: the input address is not sign-extended
  kPrivilegedDisabled,   // a supervisor request to an address space that refuses them
  kExecuteDisabled,      // an execute request to an address space that refuses them
  kUserDenied,           // a user request through an entry with U/S clear
  kReadDenied,
  kWriteDenied,
  kExecuteDenied,
  kRootTableReadDenied,  // nested: the second level does not allow reading the first-level root
  kTableReadDenied,      // nested: ... reading a first-level table
  kTableWriteDenied,     // nested: ... writing a first-level entry's A/D bits
};

// A failed walk: what went wrong, in which stage, at which paging level, on which address.
struct WalkFault {
  WalkError error = WalkError::kNone;
  FaultStage stage = FaultStage::kNone;
  uint8_t level = 0;     // paging level (1 = leaf table) or 0 for structures
  uint64_t address = 0;  // iova for first-level/input faults, GPA for second-level ones
};

// What a successful walk (or cached translation) yields.
struct Translation {
  uint64_t out = 0;         // translated address of the input (page base | offset)
  uint8_t page_shift = 12;  // 12, 21 or 30
  uint8_t perms = 0;        // AccessBits the mapping grants to this kind of request
  uint8_t level = 1;        // level of the leaf entry that produced it
};

inline constexpr uint64_t page_mask(unsigned shift) {
  return ~((uint64_t{1} << shift) - 1);
}

}  // namespace nestor
