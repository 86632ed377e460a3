// A small machine for bind-layer tests: an engine with lazily backed RAM, a bind layer over a
// table range, and helpers to build VMs (owner + nesting domain mapping guest RAM) whose guests
// write first-level tables in their own GPA space.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <memory>

#include "nestor/bind.h"
#include "nestor/engine.h"
#include "nestor/vtd/structures_writer.h"
#include "nestor/walkers/builder.h"

namespace nestor::bindtest {

inline constexpr uint64_t kTableBase = 1ull << 30;
inline constexpr uint64_t kTableSize = 64ull << 20;
inline constexpr uint64_t kVmHpaBase = 4ull << 30;
inline constexpr uint64_t kGuestRam = 64ull << 20;    // GPA [0, kGuestRam) per VM
inline constexpr uint64_t kGuestTables = 8ull << 20;  // FL tables: the top of guest RAM
inline constexpr uint64_t kGuestTableGpa = kGuestRam - kGuestTables;
inline constexpr uint64_t kIovaBase = 0x7f00'0000'0000ull;

using GuestFl = build::FirstLevelBuilder<GuestTableSpace>;

struct Vm {
  uint32_t owner = 0;
  uint16_t did = 0;
  uint64_t hpa_base = 0;
  sl::Config slc;
  std::unique_ptr<GuestTableSpace> space;

  bool owns_hpa(uint64_t hpa) const { return hpa >= hpa_base && hpa - hpa_base < kGuestRam; }
};

class World {
 public:
  explicit World(const EngineConfig &ec = {}, BindConfig bc = {}, int max_vms = 4)
      : engine_(std::make_unique<Engine>(ec)) {
    EXPECT_EQ(engine_->memory().add_ram(0, kVmHpaBase + uint64_t(max_vms) * kGuestRam), 0);
    bc.table_base = kTableBase;
    if (!bc.table_size) bc.table_size = kTableSize;
    int err = 1;
    layer_ = BindLayer::create(*engine_, bc, &err);
    EXPECT_EQ(err, 0);
    EXPECT_NE(layer_, nullptr);
  }

  Engine &engine() { return *engine_; }
  BindLayer &layer() { return *layer_; }
  MachineMemory &mem() { return engine_->memory(); }

  // Owner + nesting domain mapping GPA [0, kGuestRam) -> its own HPA slice.
  Vm make_vm(int index, uint8_t sl_levels = 4, uint32_t quota = 0) {
    Vm vm;
    vm.hpa_base = kVmHpaBase + uint64_t(index) * kGuestRam;
    EXPECT_EQ(layer_->create_owner(quota, &vm.owner), 0);
    DomainConfig dc;
    dc.levels = sl_levels;
    dc.nesting = true;
    dc.owner = vm.owner;
    EXPECT_EQ(layer_->create_domain(dc, &vm.did), 0);
    EXPECT_EQ(layer_->map(vm.did, 0, vm.hpa_base, kGuestRam, kAccessRead | kAccessWrite), 0);
    DomainInfo info;
    EXPECT_TRUE(layer_->domain_info(vm.did, &info));
    vm.slc.root = info.sl_root;
    vm.slc.levels = info.levels;
    vm.slc.host_width = engine_->config().host_address_width;
    vm.space = std::make_unique<GuestTableSpace>(mem(), vm.slc, kGuestTableGpa, kGuestTables);
    return vm;
  }

  Result translate(uint16_t sid, bool has_pasid, uint32_t pasid, uint64_t iova,
                   uint8_t access = kAccessRead) {
    Request r;
    r.source_id = sid;
    r.has_pasid = has_pasid;
    r.pasid = pasid;
    r.iova = iova;
    r.access = access;
    return engine_->translate(r);
  }

 private:
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<BindLayer> layer_;
};

inline BindRequest bind_req(uint64_t root, uint8_t width = 48, uint32_t flags = 0) {
  BindRequest r;
  r.fl_root_gpa = root;
  r.addr_width = width;
  r.flags = flags;
  return r;
}

inline uint64_t user_rw() {
  return build::fl_leaf_bits(true, true, false);
}

}  // namespace nestor::bindtest
