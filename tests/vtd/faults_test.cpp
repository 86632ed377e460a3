// VT-d's naming of neutral walk faults. The expected codes are written as numbers from the VT-d
// specification's scalable-mode fault reason table (7.1.3), with the text Linux's dmar.c prints
// for each, not taken from the enum, so a wrong mapping or a wrong enumerator value both fail.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "nestor/vtd/faults.h"
#include "nestor/vtd/personality.h"

namespace nestor {
namespace {

struct Case {
  WalkError error;
  FaultStage stage;
  uint8_t code;
  const char *linux_text;  // a distinctive part of dmar.c's string for the code
};

// Entry faults keep VT-d's per-stage codes: a first-level walk's 0x70-0x72, a second-level
// walk's 0x78-0x7A whether it translates the final GPA or (nested) a first-level table's GPA.
constexpr Case kCases[] = {
    {WalkError::kEntryAccess, FaultStage::kFirstLevel, 0x70, "access first-level paging entry"},
    {WalkError::kRootEntryAccess, FaultStage::kFirstLevel, 0x73, "FL-PML4 entry"},
    {WalkError::kNotPresent, FaultStage::kFirstLevel, 0x71, "Present bit in first-level"},
    {WalkError::kReserved, FaultStage::kFirstLevel, 0x72, "reserved field set in first-level"},
    {WalkError::kEntryAccess, FaultStage::kSecondLevel, 0x78, "access second-level paging entry"},
    {WalkError::kNotPresent, FaultStage::kSecondLevel, 0x79, "permission error in second-level"},
    {WalkError::kReserved, FaultStage::kSecondLevel, 0x7A, "reserved field set in second-level"},
    {WalkError::kEntryAccess, FaultStage::kNestedTable, 0x78, "access second-level paging entry"},
    {WalkError::kNotPresent, FaultStage::kNestedTable, 0x79, "permission error in second-level"},
    {WalkError::kReserved, FaultStage::kNestedTable, 0x7A, "reserved field set in second-level"},
    {WalkError::kTablePointerInvalid, FaultStage::kSecondLevel, 0x7B, "second-level page table"},
    {WalkError::kTablePointerInvalid, FaultStage::kNestedTable, 0x7B, "second-level page table"},
    {WalkError::kInputBeyondWidth, FaultStage::kSecondLevel, 0x83, "DMA hardware max"},
    {WalkError::kOutputBeyondWidth, FaultStage::kFirstLevel, 0x74, "beyond MGAW"},
    {WalkError::kOutputBeyondWidth, FaultStage::kNestedTable, 0x74, "beyond MGAW"},
    {WalkError::kNonCanonical, FaultStage::kFirstLevel, 0x80, "not canonical"},
    {WalkError::kPrivilegedDisabled, FaultStage::kStructures, 0x5D, "SRE field is clear"},
    {WalkError::kExecuteDisabled, FaultStage::kStructures, 0x5C, "ERE field is clear"},
    {WalkError::kUserDenied, FaultStage::kFirstLevel, 0x81, "U/S set 0"},
    {WalkError::kReadDenied, FaultStage::kSecondLevel, 0x86, "No read permission"},
    {WalkError::kWriteDenied, FaultStage::kFirstLevel, 0x85, "No write permission"},
    {WalkError::kWriteDenied, FaultStage::kSecondLevel, 0x85, "No write permission"},
    {WalkError::kExecuteDenied, FaultStage::kFirstLevel, 0x82, "No execute permission"},
    {WalkError::kExecuteDenied, FaultStage::kSecondLevel, 0x82, "No execute permission"},
    {WalkError::kRootTableReadDenied, FaultStage::kNestedTable, 0x75, "FL-PML4 entry in Nested"},
    {WalkError::kTableReadDenied, FaultStage::kNestedTable, 0x76, "Read permission error in first"},
    {WalkError::kTableWriteDenied, FaultStage::kNestedTable, 0x77, "Write permission error in"},
};

TEST(VtdFaults, WalkErrorsBecomeTheSpecificationsFaultReasons) {
  for (const Case &c : kCases) {
    const WalkFault w{c.error, c.stage, 3, 0xabc000};
    const Fault f = VtdPersonality::walk_fault(w);
    EXPECT_EQ(int(f.reason), int(c.code)) << "error " << int(c.error) << " stage " << int(c.stage);
    EXPECT_EQ(f.stage, c.stage);
    EXPECT_EQ(f.level, 3);
    EXPECT_EQ(f.address, 0xabc000u);
    EXPECT_NE(std::strstr(fault_reason_name(f.reason), c.linux_text), nullptr)
        << std::hex << int(c.code) << ": " << fault_reason_name(f.reason);
  }
}

TEST(VtdFaults, EveryWalkErrorHasAReasonAndNoneHasNone) {
  EXPECT_EQ(int(vtd::fault_reason({})), 0);
  const int last = int(WalkError::kTableWriteDenied);
  for (int e = 1; e <= last; ++e) {
    bool covered = false;
    for (const Case &c : kCases) covered |= int(c.error) == e;
    EXPECT_TRUE(covered) << "walk error " << e << " has no case above";
    for (FaultStage s : {FaultStage::kFirstLevel, FaultStage::kSecondLevel,
                         FaultStage::kNestedTable, FaultStage::kStructures}) {
      const FaultReason r = vtd::fault_reason({WalkError(e), s, 1, 0});
      EXPECT_NE(int(r), 0) << e;
      EXPECT_STRNE(fault_reason_name(r), "Unknown") << e;
    }
  }
}

}  // namespace
}  // namespace nestor
