// Writes VT-d scalable-mode structures (root table, context tables, PASID directories and
// tables) into machine memory the way a driver would, and gives page-table builders a place to
// put their tables. Used by the bind layer, the workload driver, examples and tests.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>

#include "nestor/machine_memory.h"
#include "nestor/vtd/structures.h"
#include "nestor/walkers/builder.h"

namespace nestor {

// Host-physical table space: tables come from a PageAllocator in machine memory.
class NESTOR_CXX_API HostTableSpace {
 public:
  HostTableSpace(MachineMemory &mem, PageAllocator &pages) : mem_(mem), pages_(pages) {}
  uint64_t alloc_table() { return pages_.alloc(); }
  bool read(uint64_t pa, uint64_t *v) { return mem_.read64(pa, v); }
  bool write(uint64_t pa, uint64_t v) { return mem_.write64(pa, v); }

 private:
  MachineMemory &mem_;
  PageAllocator &pages_;
};
static_assert(build::TableSpace<HostTableSpace>);

// A guest's physical address space as seen through its second level: table addresses are
// GPAs, accesses are resolved with a second-level walk. Tables are carved from a guest-physical
// range the caller reserves for them. GPA 0 is never handed out, because a table space's 0
// means "no table" (build::TableSpace): a range starting at 0 gives its first page up.
class NESTOR_CXX_API GuestTableSpace {
 public:
  GuestTableSpace(MachineMemory &mem, const sl::Config &slc, uint64_t gpa_base, uint64_t gpa_size)
      : mem_(mem), slc_(slc), next_(gpa_base == 0 ? 4096 : gpa_base), end_(gpa_base + gpa_size) {}
  uint64_t alloc_table();
  bool read(uint64_t gpa, uint64_t *v);
  bool write(uint64_t gpa, uint64_t v);
  // GPA -> HPA through the second level (read access), or false if unmapped.
  bool resolve(uint64_t gpa, uint64_t *hpa);

 private:
  MachineMemory &mem_;
  sl::Config slc_;
  std::mutex mu_;
  uint64_t next_, end_;
};
static_assert(build::TableSpace<GuestTableSpace>);

// Owns the root table and allocates context tables, PASID directories and PASID tables on
// demand. Not thread-safe: callers serialise configuration.
class NESTOR_CXX_API StructuresWriter {
 public:
  StructuresWriter(MachineMemory &mem, PageAllocator &pages);

  uint64_t root_table() const { return root_; }

  // Makes the context entry of `source_id` present with a PASID directory of 2^(pdts+7)
  // entries. Returns 0 or -ENOMEM / -EFAULT.
  int attach(uint16_t source_id, uint32_t rid_pasid, bool pasid_enable = true, uint8_t pdts = 7,
             bool rid_priv = false);
  int detach(uint16_t source_id);
  // Writes the PASID-table entry (allocating the directory entry's table if needed).
  int set_pasid_entry(uint16_t source_id, uint32_t pasid, const vtd::PasidEntry &pe);
  int clear_pasid_entry(uint16_t source_id, uint32_t pasid);
  // Address of the PASID-table entry, or 0 when the device/directory slot is absent.
  uint64_t pasid_entry_address(uint16_t source_id, uint32_t pasid);
  // If the PASID table holding `pasid` is entirely zero, clears its directory entry and
  // returns the table's address (the caller frees it once no walker can still be reading it,
  // i.e. after an invalidation wait); else 0.
  uint64_t unlink_pasid_table_if_empty(uint16_t source_id, uint32_t pasid);
  // Pages of a PASID directory of 2^(pdts+7) 8-byte entries.
  static constexpr uint64_t pasid_dir_pages(uint8_t pdts) {
    return pdts >= 2 ? uint64_t{1} << (pdts - 2) : 1;
  }

 private:
  struct Device {
    uint64_t pasid_dir = 0;
    uint8_t pdts = 0;
  };
  uint64_t context_entry_address(uint16_t source_id, bool create);

  MachineMemory &mem_;
  PageAllocator &pages_;
  uint64_t root_ = 0;
  std::map<uint16_t, Device> devices_;
};

}  // namespace nestor
