// Nested (two-stage) translation: a first-level walk whose table pointers, entry addresses
// and output are guest-physical, each resolved through the second level.
#pragma once

#include <algorithm>

#include "nestor/walkers/first_level.h"
#include "nestor/walkers/second_level.h"

namespace nestor::nested {

// The fault for a second-level failure while resolving a first-level table at `gpa`: its own
// stage, the GPA as address, and permission failures renamed to the nested-specific errors.
inline WalkFault table_fault(const WalkFault &sl_fault, uint64_t gpa, WalkError denied) {
  WalkFault f = sl_fault;
  f.stage = FaultStage::kNestedTable;
  f.address = gpa;
  if (f.error == WalkError::kReadDenied || f.error == WalkError::kWriteDenied) f.error = denied;
  return f;
}

// What reading a first-level table (the root one, or below) is denied as.
constexpr WalkError table_read_denied(bool is_root) {
  return is_root ? WalkError::kRootTableReadDenied : WalkError::kTableReadDenied;
}

// A first-level table GPA the second level cannot translate at all: checked before its walk,
// and reported at the first-level level that pointed there.
inline bool beyond_second_level(uint64_t gpa, const sl::Config &slc, int fl_level, WalkFault *f) {
  if ((gpa >> sl::width_for_levels(slc.levels)) == 0) return false;
  *f = {WalkError::kOutputBeyondWidth, FaultStage::kNestedTable, uint8_t(fl_level), gpa};
  return true;
}

// Resolves first-level table GPAs through the second level. Engines that cache GPA->HPA of
// table pages provide their own adapter with the same two members.
template <PhysicalMemory Mem>
struct SecondLevelTables {
  Mem &mem;
  const sl::Config &slc;

  bool fetch_table(uint64_t gpa, int fl_level, bool is_root, uint64_t *hpa, WalkFault *f,
                   uint8_t *refs) {
    return resolve(gpa, fl_level, kAccessRead, table_read_denied(is_root), hpa, f, refs);
  }
  bool table_for_update(uint64_t gpa, int fl_level, uint64_t *hpa, WalkFault *f) {
    uint8_t refs = 0;
    return resolve(gpa, fl_level, kAccessWrite, WalkError::kTableWriteDenied, hpa, f, &refs);
  }
  // The second-level walk of the first level's output.
  sl::Result final_walk(uint64_t gpa, uint8_t access) { return sl::walk(mem, slc, gpa, access); }

 private:
  bool resolve(uint64_t gpa, int fl_level, uint8_t access, WalkError denied, uint64_t *hpa,
               WalkFault *f, uint8_t *refs) {
    if (beyond_second_level(gpa, slc, fl_level, f)) return false;
    sl::Result r = sl::walk(mem, slc, gpa, access);
    *refs = uint8_t(*refs + r.refs);
    if (!r.ok) {
      *f = table_fault(r.fault, gpa, denied);
      return false;
    }
    *hpa = r.t.out & page_mask(12);
    return true;
  }
};

struct Result {
  bool ok = false;
  Translation t;     // out = HPA; page size = smaller of the two stages; perms intersected
  uint64_t gpa = 0;  // GPA the first level produced (for GPA-indexed invalidation)
  uint8_t fl_attrs = 0;
  uint8_t sl_perms = 0;  // second-level R/W/X before SLEE (sl::Result::raw_perms)
  bool sl_dirty = false;
  uint8_t sl_page_shift = 0;  // size of the second-level leaf that mapped the final GPA
  WalkFault fault;
  uint8_t refs = 0;
};

template <PhysicalMemory Mem, class Tables>
inline Result walk(Mem &mem, Tables &tables, const fl::Config &flc, const sl::Config &slc,
                   uint64_t iova, uint8_t access, bool privileged, const fl::Start &start = {},
                   fl::Path *path = nullptr) {
  Result r;
  fl::Result f = fl::walk(mem, tables, flc, iova, access, privileged, start, path);
  r.refs = f.refs;
  if (!f.ok) {
    r.fault = f.fault;
    return r;
  }
  const uint64_t gpa = f.t.out;
  if ((gpa >> sl::width_for_levels(slc.levels)) != 0) {
    r.fault = {WalkError::kOutputBeyondWidth, FaultStage::kFirstLevel, f.t.level, iova};
    return r;
  }
  sl::Result s = tables.final_walk(gpa, access);
  r.refs = uint8_t(r.refs + s.refs);
  if (!s.ok) {
    r.fault = s.fault;
    r.fault.address = gpa;
    return r;
  }
  r.ok = true;
  r.gpa = gpa;
  r.fl_attrs = f.attrs;
  r.sl_perms = s.raw_perms;  // before SLEE, like every cached second-level permission
  r.sl_dirty = s.dirty;
  r.sl_page_shift = s.t.page_shift;
  r.t.out = s.t.out;
  r.t.page_shift = std::min(f.t.page_shift, s.t.page_shift);
  r.t.perms = uint8_t(f.t.perms & s.t.perms);
  r.t.level = f.t.level;
  return r;
}

template <PhysicalMemory Mem>
inline Result walk(Mem &mem, const fl::Config &flc, const sl::Config &slc, uint64_t iova,
                   uint8_t access, bool privileged) {
  SecondLevelTables<Mem> tables{mem, slc};
  return walk(mem, tables, flc, slc, iova, access, privileged);
}

}  // namespace nestor::nested
