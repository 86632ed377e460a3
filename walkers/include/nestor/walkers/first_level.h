// x86 first-level (first-stage) paging as VT-d scalable mode uses it: IA-32e 4-level (48-bit)
// and 5-level (57-bit) tables, 4K/2M/1G pages. Bit positions checked against the VT-d
// specification (section 9.7) and Linux's pgtable definitions; see docs/VTD-FORMATS.md.
#pragma once

#include <cstdint>

#include "nestor/walkers/memory.h"
#include "nestor/walkers/types.h"

namespace nestor::fl {

inline constexpr uint64_t kPresent = 1ull << 0;
inline constexpr uint64_t kWritable = 1ull << 1;
inline constexpr uint64_t kUser = 1ull << 2;
inline constexpr uint64_t kPwt = 1ull << 3;
inline constexpr uint64_t kPcd = 1ull << 4;
inline constexpr uint64_t kAccessed = 1ull << 5;
inline constexpr uint64_t kDirty = 1ull << 6;
inline constexpr uint64_t kPageSize = 1ull << 7;
inline constexpr uint64_t kExtendedAccessed = 1ull << 10;  // set with A when EAFE=1
inline constexpr uint64_t kNoExecute = 1ull << 63;
inline constexpr uint64_t kAddrMask52 = 0x000F'FFFF'FFFF'F000ull;

// Attributes accumulated over a path; together with the PASID entry flags they decide
// the permissions for a request of either privilege, so caches store these, not perms.
enum AttrBits : uint8_t {
  kAttrWritable = 1,  // R/W=1 on every level
  kAttrUser = 2,      // U/S=1 on every level
  kAttrNoExec = 4,    // XD=1 somewhere
  kAttrDirty = 8,     // leaf D is set (a write needs no A/D update)
};

struct Config {
  uint64_t root = 0;        // top table address (a GPA when nested)
  uint8_t levels = 4;       // 4 or 5 (PASID entry FLPM)
  uint8_t host_width = 48;  // output-address width: entry address bits above it are reserved
  bool sre = false;         // supervisor requests enabled
  bool wpe = false;         // supervisor writes honour R/W
  bool ere = false;         // execute requests enabled
  bool eafe = false;        // extended-accessed flag enabled
  // PASID-entry NXE: XD (bit 63) is a field only with it; without it XD is reserved, as with
  // IA32_EFER.NXE=0 on the CPU (Linux sets NXE exactly when it will use XD).
  bool nxe = true;
  // PASID-entry SMEP: supervisor instruction fetches from user pages are denied only with it.
  bool smep = true;
  bool update_ad = true;  // set A/D in the tables as the hardware does
  bool large_1g = true;   // FL1GP
};

constexpr unsigned input_width(int levels) {
  return levels == 5 ? 57 : 48;
}

// Permissions a path with `attrs` grants to a request of the given privilege.
constexpr uint8_t perms_for(uint8_t attrs, bool privileged, const Config &c) {
  uint8_t p = kAccessRead;
  if (!privileged) {
    if (!(attrs & kAttrUser)) return 0;
    if (attrs & kAttrWritable) p |= kAccessWrite;
    if (c.ere && !(attrs & kAttrNoExec)) p |= kAccessExec;
  } else {
    if (!c.sre) return 0;
    if (!c.wpe || (attrs & kAttrWritable)) p |= kAccessWrite;
    if (c.ere && !(attrs & kAttrNoExec) && !(c.smep && (attrs & kAttrUser))) p |= kAccessExec;
  }
  return p;
}

// The fault (or kNone) for a request against a path with `attrs`.
constexpr WalkError check_access(uint8_t attrs, uint8_t access, bool privileged, const Config &c) {
  if (privileged && !c.sre) return WalkError::kPrivilegedDisabled;
  if ((access & kAccessExec) && !c.ere) return WalkError::kExecuteDisabled;
  if (!privileged && !(attrs & kAttrUser)) return WalkError::kUserDenied;
  const uint8_t p = perms_for(attrs, privileged, c);
  if ((access & kAccessWrite) && !(p & kAccessWrite)) return WalkError::kWriteDenied;
  if ((access & kAccessExec) && !(p & kAccessExec)) return WalkError::kExecuteDenied;
  return WalkError::kNone;
}

constexpr uint64_t reserved_mask(const Config &c, int level, bool large) {
  uint64_t m = kAddrMask52 & ~((uint64_t{1} << c.host_width) - 1);
  if (level >= 4) m |= kPageSize;
  if (large && level == 2) m |= 0x1F'E000ull;    // bits 20:13 (bit 12 is PAT)
  if (large && level == 3) m |= 0x3FFF'E000ull;  // bits 29:13
  if (!c.nxe) m |= kNoExecute;
  return m;
}

struct Start {
  int level = 0;  // 0 = from the root
  uint64_t table = 0;
  uint8_t attrs = kAttrWritable | kAttrUser;
};

struct Path {
  uint64_t next_table[6] = {};
  uint8_t attrs[6] = {};
};

struct Result {
  bool ok = false;
  Translation t;      // out = output address (GPA when nested); perms for this request
  uint8_t attrs = 0;  // AttrBits of the path
  WalkFault fault;
  uint8_t refs = 0;
};

// Table addresses are host physical: the single-stage case.
struct DirectTables {
  bool fetch_table(uint64_t table, int, bool, uint64_t *hpa, WalkFault *, uint8_t *) {
    *hpa = table;
    return true;
  }
  bool table_for_update(uint64_t table, int, uint64_t *hpa, WalkFault *) {
    *hpa = table;
    return true;
  }
};

namespace detail {
inline Result fail(Result &r, WalkError error, FaultStage stage, int level, uint64_t addr) {
  r.ok = false;
  r.fault = {error, stage, uint8_t(level), addr};
  return r;
}
}  // namespace detail

// Walks one iova. `Tables` maps table addresses to host addresses (identity, or a
// second-level walk when nested) so the same loop serves both cases without virtual calls.
template <PhysicalMemory Mem, class Tables>
inline Result walk(Mem &mem, Tables &tables, const Config &c, uint64_t iova, uint8_t access,
                   bool privileged, const Start &start = {}, Path *path = nullptr) {
  Result r;
  const unsigned width = input_width(c.levels);
  const uint64_t top = iova >> (width - 1);
  if (top != 0 && top != (~uint64_t{0} >> (width - 1)))
    return detail::fail(r, WalkError::kNonCanonical, FaultStage::kFirstLevel, c.levels, iova);
  if (WalkError pre = check_access(kAttrWritable | kAttrUser, access & kAccessExec, privileged, c);
      pre == WalkError::kPrivilegedDisabled || pre == WalkError::kExecuteDisabled)
    return detail::fail(r, pre, FaultStage::kStructures, 0, iova);

  struct Visited {
    uint64_t table;  // table address in table space (for A/D updates through Tables)
    uint64_t entry_hpa;
    uint64_t value;
  };
  for (int attempt = 0;; ++attempt) {
    Visited visited[5];
    int nvisited = 0;
    int level = start.level ? start.level : c.levels;
    uint64_t table = start.level ? start.table : c.root;
    uint8_t attrs = start.level ? start.attrs : uint8_t(kAttrWritable | kAttrUser);
    r.refs = 0;
    unsigned shift = 12;
    uint64_t e = 0;
    for (;;) {
      shift = 12 + 9 * unsigned(level - 1);
      uint64_t table_hpa;
      if (!tables.fetch_table(table, level, level == c.levels, &table_hpa, &r.fault, &r.refs)) {
        r.ok = false;
        return r;
      }
      const uint64_t entry_pa = table_hpa + ((iova >> shift) & 511) * 8;
      ++r.refs;
      if (!mem.read64(entry_pa, &e))
        return detail::fail(
            r, level == c.levels ? WalkError::kRootEntryAccess : WalkError::kEntryAccess,
            FaultStage::kFirstLevel, level, iova);
      if (!(e & kPresent))
        return detail::fail(r, WalkError::kNotPresent, FaultStage::kFirstLevel, level, iova);
      const bool large = (e & kPageSize) && (level == 2 || level == 3);
      if ((large && level == 3 && !c.large_1g) || (e & reserved_mask(c, level, large)))
        return detail::fail(r, WalkError::kReserved, FaultStage::kFirstLevel, level, iova);
      if (!(e & kWritable)) attrs &= uint8_t(~kAttrWritable);
      if (!(e & kUser)) attrs &= uint8_t(~kAttrUser);
      if (e & kNoExecute) attrs |= kAttrNoExec;
      visited[nvisited++] = {table, entry_pa, e};
      if (level == 1 || large) break;
      table = e & kAddrMask52;
      if (path) {
        path->next_table[level] = table;
        path->attrs[level] = attrs;
      }
      --level;
    }
    if (WalkError f = check_access(attrs, access, privileged, c); f != WalkError::kNone)
      return detail::fail(r, f, FaultStage::kFirstLevel, level, iova);

    const bool write = access & kAccessWrite;
    bool restart = false;
    if (c.update_ad) {
      const uint64_t accessed = kAccessed | (c.eafe ? kExtendedAccessed : 0);
      for (int i = 0; i < nvisited && !restart; ++i) {
        const bool is_leaf = i == nvisited - 1;
        uint64_t want = visited[i].value | accessed;
        if (is_leaf && write) want |= kDirty;
        if (want == visited[i].value) continue;
        const int vlevel = (start.level ? start.level : c.levels) - i;
        uint64_t table_hpa;
        if (!tables.table_for_update(visited[i].table, vlevel, &table_hpa, &r.fault)) {
          r.ok = false;
          return r;
        }
        uint64_t expected = visited[i].value;
        const uint64_t entry_hpa = table_hpa + (visited[i].entry_hpa & 0xFFF);
        switch (mem.cas64(entry_hpa, expected, want)) {
          case CasStatus::kOk:
            visited[i].value = want;
            break;
          case CasStatus::kChanged:
            restart = true;  // the entry changed under us: walk again from the top
            break;
          case CasStatus::kError:
            return detail::fail(r, WalkError::kEntryAccess, FaultStage::kFirstLevel, vlevel, iova);
        }
      }
    }
    if (restart) {
      if (attempt < 16) continue;
      return detail::fail(r, WalkError::kEntryAccess, FaultStage::kFirstLevel, level, iova);
    }
    const uint64_t leaf = visited[nvisited - 1].value;
    if (!c.update_ad || (leaf & kDirty)) attrs |= kAttrDirty;
    r.ok = true;
    r.attrs = attrs;
    r.t.page_shift = uint8_t(shift);
    r.t.level = uint8_t(level);
    r.t.perms = perms_for(attrs, privileged, c);
    r.t.out = (leaf & kAddrMask52 & page_mask(shift)) | (iova & ~page_mask(shift));
    return r;
  }
}

template <PhysicalMemory Mem>
inline Result walk(Mem &mem, const Config &c, uint64_t iova, uint8_t access, bool privileged,
                   const Start &start = {}, Path *path = nullptr) {
  DirectTables direct;
  return walk(mem, direct, c, iova, access, privileged, start, path);
}

}  // namespace nestor::fl
