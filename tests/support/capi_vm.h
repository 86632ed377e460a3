// A nesting VM built through the bind layer's C ABI, shared by the bind tests and the
// fuzz_bind_churn target: an owner, a nesting domain mapping guest RAM [0, ram) to [hpa, +ram)
// read/write (the walker sets Accessed bits in the guest's tables), and a 4-level first-level
// table in guest memory at kCapiFlRoot that maps IOVA 0 to guest page kCapiData.
#pragma once

#include <cerrno>
#include <cstdint>

#include "nestor.h"

namespace nestor::test {

inline constexpr uint64_t kCapiFlRoot = 0x1000;
inline constexpr uint64_t kCapiData = 0x10000;

struct CapiVm {
  uint32_t owner = 0;
  uint16_t did = 0;
  uint64_t hpa = 0;
};

// An engine with RAM [0, 2 GiB) and its bind layer, which takes its tables from [1 GiB, +8 MiB):
// guest RAM can go below 1 GiB. 0, or the negative errno of the first call that failed (then
// *e and *b are what was made so far, or NULL).
inline int capi_make_bind_engine(nestor_engine **e, nestor_bind **b) {
  *b = nullptr;
  int err = -ENOMEM;
  *e = nestor_engine_create2(nullptr, &err);
  if (!*e) return err;
  if (int rc = nestor_mem_add_ram(*e, 0, 2ull << 30); rc != 0) return rc;
  nestor_bind_config bc{};
  bc.size = sizeof bc;
  bc.table_base = 1ull << 30;
  bc.table_size = 8ull << 20;
  *b = nestor_bind_create(*e, &bc, &err);
  return *b ? 0 : err;
}

// 0, or the negative errno of the first call that failed.
inline int capi_make_vm(nestor_engine *e, nestor_bind *b, uint64_t hpa, uint64_t ram,
                        uint32_t quota, CapiVm *vm) {
  vm->hpa = hpa;
  if (int rc = nestor_owner_create(b, quota, &vm->owner); rc != 0) return rc;
  nestor_domain_config dc{};
  dc.size = sizeof dc;
  dc.levels = 4;
  dc.flags = NESTOR_DOMAIN_NESTING;
  dc.owner = vm->owner;
  if (int rc = nestor_domain_create(b, &dc, &vm->did); rc != 0) return rc;
  if (int rc = nestor_domain_map(b, vm->did, 0, hpa, ram, NESTOR_ACCESS_READ | NESTOR_ACCESS_WRITE);
      rc != 0)
    return rc;
  const uint64_t present_rw_user = 0x7;
  for (uint64_t level = 0; level < 4; ++level) {
    const uint64_t next = level < 3 ? kCapiFlRoot + (level + 1) * 0x1000 : kCapiData;
    const uint64_t pte = next | present_rw_user;
    if (int rc = nestor_mem_write(e, hpa + kCapiFlRoot + level * 0x1000, &pte, 8); rc != 0)
      return rc;
  }
  return 0;
}

// Binds the VM's first-level table (4-level, no guest PASID).
inline nestor_bind_data capi_bind_data() {
  nestor_bind_data d{};
  d.size = sizeof d;
  d.fl_root_gpa = kCapiFlRoot;
  d.addr_width = 48;
  d.guest_pasid = NESTOR_NO_GUEST_PASID;
  return d;
}

}  // namespace nestor::test
