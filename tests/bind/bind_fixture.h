// The bind-layer tests' machine (built with tests/machine): an engine with lazily backed RAM, a
// bind layer over a table range, and VMs (owner + nesting domain mapping guest RAM) whose
// guests write first-level tables in their own GPA space.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <memory>

#include "nestor/bind.h"
#include "nestor/engine.h"
#include "nestor/machine/machine.h"

namespace nestor::bindtest {

inline constexpr uint64_t kTableBase = 1ull << 30;
inline constexpr uint64_t kTableSize = 64ull << 20;
inline constexpr uint64_t kVmHpaBase = 4ull << 30;
inline constexpr uint64_t kGuestRam = 64ull << 20;    // GPA [0, kGuestRam) per VM
inline constexpr uint64_t kGuestTables = 8ull << 20;  // FL tables: the top of guest RAM
inline constexpr uint64_t kGuestTableGpa = kGuestRam - kGuestTables;
inline constexpr uint64_t kIovaBase = 0x7f00'0000'0000ull;

using GuestFl = machine::GuestFl;
using Vm = machine::Vm;

class World {
 public:
  explicit World(const EngineConfig &ec = {}, const BindConfig &bc = {}, int max_vms = 4)
      : m_(layout(bc, max_vms), ec) {
    m_.place_bind_layer(bc);
  }

  Engine &engine() { return m_.engine(); }
  BindLayer &layer() { return m_.bind(); }
  MachineMemory &mem() { return m_.memory(); }

  // Owner + nesting domain mapping GPA [0, kGuestRam) -> its own HPA slice.
  Vm make_vm(int index, uint8_t sl_levels = 4, uint32_t quota = 0) {
    machine::VmSpec spec;
    spec.hpa_base = kVmHpaBase + uint64_t(index) * kGuestRam;
    spec.ram = kGuestRam;
    spec.tables_gpa = kGuestTableGpa;
    spec.tables_size = kGuestTables;
    spec.sl_levels = sl_levels;
    spec.quota = quota;
    return m_.add_vm(spec);
  }

  Result translate(uint16_t sid, bool has_pasid, uint32_t pasid, uint64_t iova,
                   uint8_t access = kAccessRead) {
    return engine().translate(machine::request(sid, pasid, iova, access, has_pasid));
  }

 private:
  static machine::RamLayout layout(const BindConfig &bc, int max_vms) {
    machine::RamLayout l;
    l.ram_size = kVmHpaBase + uint64_t(max_vms) * kGuestRam;
    l.tables_base = kTableBase;
    l.tables_size = bc.table_size ? bc.table_size : kTableSize;
    return l;
  }

  machine::Machine m_;
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
