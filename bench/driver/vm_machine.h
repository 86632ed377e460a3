// The machine the vm-mix, storm and scaling scenarios run on, built the way a hypervisor would
// through the bind layer: per VM an owner and a nesting second-level domain mapping guest RAM;
// per device an attach and, per PASID, a system-wide PASID bound to a first-level table the
// guest keeps in its own memory. Guest "drivers" remap pages in those tables and send the
// invalidations CACHE_INVLD requires.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nestor/bind.h"
#include "nestor/engine.h"
#include "nestor/machine/machine.h"

namespace nestor::driver {

struct MachineConfig {
  int vms = 2;
  int devices_per_vm = 2;
  int pasids_per_device = 1;
  uint64_t pages = 4096;  // 4K pages each address space maps at kIovaBase
  int fl_levels = 4;      // guest first level: 4 or 5
  int sl_levels = 4;      // host second level: 3, 4 or 5
  uint64_t guest_ram = 256ull << 20;
  // DIRECT_INVLD: each VM gets an owner-direct invalidation queue in its own RAM, and guest
  // remaps write VT-d descriptors there instead of calling BindLayer::cache_invalidate.
  bool direct_queues = false;
};

// One VM's owner-direct queue as its guest driver sees it, and the bind layer's counters.
struct OwnerQueueReport {
  int vm = 0;
  uint32_t owner = 0, queue = 0;
  OwnerQueueStats stats;
};

inline constexpr uint64_t kIovaBase = 0x10'0000'0000ull;

inline constexpr uint32_t kBalloonPages = 256;

// One device address space (source-id, PASID) and the guest's current view of it.
struct GuestAddressSpace {
  int vm = 0;
  uint16_t source_id = 0;
  uint32_t pasid = 0;
  uint16_t did = 0;
  uint32_t owner = 0;
  uint64_t hpa_base = 0;      // where the VM's guest RAM lives in host memory
  std::vector<uint32_t> gpa;  // guest data page each IOVA page maps to
  uint32_t next_free = 0;     // remap target cursor (within this space's data slice)
  uint32_t slice_first = 0, slice_pages = 0;
  uint32_t balloon_first = 0;  // kBalloonPages guest pages of the VM no IOVA ever maps
  uint64_t expected(uint64_t iova) const {
    return hpa_base + uint64_t(gpa[(iova - kIovaBase) >> 12]) * 4096 + (iova & 0xFFF);
  }
  Request request(uint64_t iova = 0, uint8_t access = kAccessRead) const {
    return machine::request(source_id, pasid, iova, access);
  }
};

class VmMachine {
 public:
  // Creates the engine and declares RAM; build() then writes every structure and table, so a
  // trace recorder attached in between captures the whole setup.
  VmMachine(const MachineConfig &cfg, const EngineConfig &ecfg);
  ~VmMachine();
  void build();

  Engine &engine() { return machine_.engine(); }
  BindLayer &bind() { return machine_.bind(); }
  const MachineConfig &config() const { return cfg_; }
  std::vector<GuestAddressSpace> &spaces() { return spaces_; }

  // The guest driver of `as` moves `npages` pages from `first` to fresh guest pages: clears
  // the PTEs, invalidates the range through the bind layer (CACHE_INVLD), then maps the new
  // pages. Call only from the thread that owns `as`. Returns the op it had the engine apply.
  // With direct queues the guest writes PASID-based IOTLB (0x6) and device-TLB (0x8)
  // descriptors for the range, and a wait, into its VM's queue (guest_descriptors).
  invq::InvalidationOp remap(GuestAddressSpace &as, uint64_t first, uint64_t npages);

  // Every VM's queue counters (empty without direct queues).
  std::vector<OwnerQueueReport> owner_queues();
  bool direct_queues() const { return cfg_.direct_queues; }

  // With direct queues: the 256-bit descriptors a guest driver writes for `op` of `as` (first-
  // level kRange: page-selective-within-PASID 0x6s for the fewest naturally aligned blocks
  // making up the range; kPasid: a PASID-selective 0x6; kCacheDevTlb in op.caches adds the
  // matching 0x8s), appended to `out`. Other scopes are the host's: throws std::logic_error.
  using GuestDescriptor = std::array<uint64_t, 4>;
  static void guest_descriptors(const GuestAddressSpace &as, const invq::InvalidationOp &op,
                                std::vector<GuestDescriptor> *out);
  // Writes `descs` into the VM's queue, each run of them followed by a wait, moves the tail and
  // returns once every wait's status is in the guest's memory. Thread-safe (per-VM lock).
  void submit_to_queue(int vm, const std::vector<GuestDescriptor> &descs);

 private:
  struct GuestQueue;  // vm_machine.cpp
  void build_vm(int vm);
  static machine::Machine declare_ram(const MachineConfig &cfg, const EngineConfig &ecfg);

  MachineConfig cfg_;
  uint64_t table_bytes_ = 0;  // guest RAM reserved for first-level tables, at its top
  machine::Machine machine_;
  std::vector<machine::GuestFl *> fl_;  // per address space
  std::vector<GuestAddressSpace> spaces_;
  std::vector<std::unique_ptr<GuestQueue>> queues_;  // per VM, with direct queues
};

}  // namespace nestor::driver
