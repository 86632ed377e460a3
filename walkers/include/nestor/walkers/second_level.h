// VT-d second-level (second-stage) page tables: 3-, 4- and 5-level (39/48/57-bit AGAW).
// Bit positions checked against the VT-d specification (section 9.8) and QEMU's
// intel_iommu_internal.h; see docs/VTD-FORMATS.md.
#pragma once

#include <cstdint>

#include "nestor/walkers/memory.h"
#include "nestor/walkers/types.h"

namespace nestor::sl {

inline constexpr uint64_t kRead = 1ull << 0;
inline constexpr uint64_t kWrite = 1ull << 1;
inline constexpr uint64_t kExec = 1ull << 2;
inline constexpr uint64_t kPageSize = 1ull << 7;
inline constexpr uint64_t kAccessed = 1ull << 8;
inline constexpr uint64_t kDirty = 1ull << 9;
// Bit 11 must be zero in scalable mode; bits 63 and 61:52 are ignored, bit 62 is TM.
inline constexpr uint64_t kReservedLow = 1ull << 11;
inline constexpr uint64_t kAddrMask52 = 0x000F'FFFF'FFFF'F000ull;

// Number of levels for an AGAW: 39 -> 3, 48 -> 4, 57 -> 5.
constexpr int levels_for_width(unsigned agaw) {
  return agaw <= 39 ? 3 : agaw <= 48 ? 4 : 5;
}
constexpr unsigned width_for_levels(int levels) {
  return 12 + 9 * static_cast<unsigned>(levels);
}

struct Config {
  uint64_t root = 0;        // HPA of the top-level table
  uint8_t levels = 4;       // 3, 4 or 5
  uint8_t host_width = 48;  // HAW: address bits above it are reserved in entries
  bool ad_enabled = false;  // PASID entry SLADE: set A on every level, D on writes
  // PASID entry SLEE: the X bit governs execute requests only when set; without it X is
  // ignored and an instruction fetch needs what a read needs.
  bool execute_enable = true;
  bool large_2m = true;  // SLLPS bit 0
  bool large_1g = true;  // SLLPS bit 1
};

// Bits that must be zero in an entry at `level` (1 = last table). `leaf_large` is PS=1.
constexpr uint64_t reserved_mask(const Config &c, int level, bool leaf_large) {
  uint64_t m = kReservedLow | (kAddrMask52 & ~((uint64_t{1} << c.host_width) - 1));
  if (level >= 4) m |= kPageSize;                     // no 512G pages
  if (leaf_large && level == 2) m |= 0x1F'F000ull;    // bits 20:12 of a 2M page
  if (leaf_large && level == 3) m |= 0x3FFF'F000ull;  // bits 29:12 of a 1G page
  return m;
}

// Where a walk may start: the top table, or (with a paging-structure cache) a lower one.
struct Start {
  int level = 0;  // 0 = from the root
  uint64_t table = 0;
  uint8_t perms = 7;  // permissions accumulated above `level`
};

// A trace of the non-leaf entries a walk went through, for paging-structure cache fills.
struct Path {
  uint64_t next_table[6] = {};  // next_table[l]: table the level-l entry points to
  uint8_t perms[6] = {};        // accumulated permissions down to and including level l
};

struct Result {
  bool ok = false;
  Translation t;  // out = HPA of the input GPA
  WalkFault fault;
  uint8_t refs = 0;    // entry reads done
  bool dirty = false;  // the leaf has D set (or A/D tracking is off)
  // R/W/X as the entries grant them, before SLEE: what a cache shared by PASIDs with
  // different SLEE must keep (apply_execute_enable() gives t.perms back).
  uint8_t raw_perms = 0;
};

// Without SLEE the X bit is ignored and an instruction fetch needs what a read needs. Applying
// it once to the intersection over all levels equals applying it per level: X then equals R at
// every level, and the intersection of the R bits is the R of the intersection.
constexpr uint8_t apply_execute_enable(uint8_t raw, bool execute_enable) {
  return execute_enable ? raw : uint8_t((raw & ~kExec) | ((raw & kRead) ? kExec : 0));
}

// Walks one GPA. `access` is the request's AccessBits. The walker reads each entry once
// with an atomic load; A/D updates use compare-exchange and retry on interference.
template <PhysicalMemory Mem>
inline Result walk(Mem &mem, const Config &c, uint64_t gpa, uint8_t access, const Start &start = {},
                   Path *path = nullptr) {
  Result r;
  const unsigned width = width_for_levels(c.levels);
  if (width < 64 && (gpa >> width) != 0) {
    r.fault = {WalkError::kInputBeyondWidth, FaultStage::kSecondLevel, uint8_t(c.levels), gpa};
    return r;
  }
  if (c.root & ~page_mask(12) || (c.host_width < 64 && (c.root >> c.host_width) != 0)) {
    r.fault = {WalkError::kTablePointerInvalid, FaultStage::kSecondLevel, uint8_t(c.levels), gpa};
    return r;
  }
  int level = start.level ? start.level : c.levels;
  uint64_t table = start.level ? start.table : c.root;
  uint8_t perms = start.level ? start.perms : 7;
  for (int retries = 0;; ++retries) {
    const unsigned shift = 12 + 9 * unsigned(level - 1);
    const uint64_t entry_pa = table + ((gpa >> shift) & 511) * 8;
    uint64_t e;
    ++r.refs;
    if (!mem.read64(entry_pa, &e)) {
      r.fault = {WalkError::kEntryAccess, FaultStage::kSecondLevel, uint8_t(level), gpa};
      return r;
    }
    if ((e & (kRead | kWrite)) == 0) {
      r.fault = {WalkError::kNotPresent, FaultStage::kSecondLevel, uint8_t(level), gpa};
      return r;
    }
    const bool large = (e & kPageSize) && level > 1;
    if (large && ((level == 2 && !c.large_2m) || (level == 3 && !c.large_1g))) {
      r.fault = {WalkError::kReserved, FaultStage::kSecondLevel, uint8_t(level), gpa};
      return r;
    }
    if (e & reserved_mask(c, level, large)) {
      r.fault = {WalkError::kReserved, FaultStage::kSecondLevel, uint8_t(level), gpa};
      return r;
    }
    const uint8_t p = uint8_t(perms & e & 7);  // raw: SLEE applies at the leaf
    const bool leaf = level == 1 || large;
    if (c.ad_enabled) {
      uint64_t want = e | kAccessed;
      if (leaf && (access & kAccessWrite) && (p & kAccessWrite)) want |= kDirty;
      if (want != e) {
        uint64_t expected = e;
        CasStatus s = mem.cas64(entry_pa, expected, want);
        if (s == CasStatus::kError) {
          r.fault = {WalkError::kEntryAccess, FaultStage::kSecondLevel, uint8_t(level), gpa};
          return r;
        }
        if (s == CasStatus::kChanged) {
          if (retries < 64) continue;  // re-read this entry
          r.fault = {WalkError::kEntryAccess, FaultStage::kSecondLevel, uint8_t(level), gpa};
          return r;
        }
        e = want;
      }
    }
    perms = p;
    if (leaf) {
      const uint8_t raw = perms;
      perms = apply_execute_enable(raw, c.execute_enable);
      if ((access & kAccessRead) && !(perms & kAccessRead)) {
        r.fault = {WalkError::kReadDenied, FaultStage::kSecondLevel, uint8_t(level), gpa};
        return r;
      }
      if ((access & kAccessWrite) && !(perms & kAccessWrite)) {
        r.fault = {WalkError::kWriteDenied, FaultStage::kSecondLevel, uint8_t(level), gpa};
        return r;
      }
      if ((access & kAccessExec) && !(perms & kAccessExec)) {
        r.fault = {WalkError::kExecuteDenied, FaultStage::kSecondLevel, uint8_t(level), gpa};
        return r;
      }
      r.ok = true;
      r.t.page_shift = uint8_t(shift);
      r.t.out = (e & kAddrMask52 & page_mask(shift)) | (gpa & ~page_mask(shift));
      r.t.perms = perms;
      r.raw_perms = raw;
      r.t.level = uint8_t(level);
      r.dirty = !c.ad_enabled || (e & kDirty) || (access & kAccessWrite);
      return r;
    }
    table = e & kAddrMask52;
    if (path) {
      path->next_table[level] = table;
      path->perms[level] = perms;
    }
    --level;
  }
}

}  // namespace nestor::sl
