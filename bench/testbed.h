// The machine the benchmark suites and the driver's walk scenario measure: per VM a domain
// mapping guest RAM, guest first-level tables in guest memory, and devices translating nested,
// first-level only or second-level only, each mapping a working set at kIovaBase. Built with
// the shared machine builder (tests/machine); the layout is what the recorded figures used.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "nestor/machine/machine.h"

namespace nestor::bench {

using Mode = machine::Mode;

struct TestbedConfig {
  Mode mode = Mode::kNested;
  int vms = 1;
  uint64_t guest_ram = 256ull << 20;  // GPA [0, guest_ram) per VM
  uint64_t working_set_pages = 4096;  // 4K pages mapped per device at iova kIovaBase
  int fl_levels = 4;
  int sl_levels = 4;
  unsigned sl_page_shift = 21;  // second-level pages mapping guest RAM
  int devices_per_vm = 1;
};

inline constexpr uint64_t kIovaBase = 0x10'0000'0000ull;

class Testbed {
 public:
  struct Device {
    uint16_t source_id;
    uint32_t pasid;
    Request request(uint64_t iova = 0, uint8_t access = kAccessRead) const {
      return machine::request(source_id, pasid, iova, access);
    }
  };

  // `after_ram` runs once RAM is declared and before anything is written (a trace recorder
  // attaches there to capture the setup).
  explicit Testbed(const TestbedConfig &cfg, const EngineConfig &ecfg = {},
                   const std::function<void(Engine &)> &after_ram = {})
      : cfg_(cfg), machine_(layout(cfg), ecfg) {
    if (after_ram) after_ram(machine_.engine());
    machine_.place_structures();
    for (int vm = 0; vm < cfg.vms; ++vm) build_vm(vm);
  }

  Engine &engine() { return machine_.engine(); }
  const std::vector<Device> &devices() const { return devices_; }
  uint64_t iova(uint64_t page) const { return kIovaBase + page * 4096; }

 private:
  // Host RAM: tables in [1 GiB, 2 GiB), guest RAM backing from 4 GiB up; lazily backed.
  static constexpr uint64_t kGuestBacking = 4ull << 30;
  static machine::RamLayout layout(const TestbedConfig &cfg) {
    machine::RamLayout l;
    l.ram_size = kGuestBacking + uint64_t(cfg.vms) * cfg.guest_ram;
    l.tables_base = 1ull << 30;
    l.tables_size = 1ull << 30;
    return l;
  }

  uint64_t guest_table_bytes() const {
    const uint64_t pages = cfg_.working_set_pages;
    const uint64_t per_device = pages / 512 + pages / (512 * 512) + 2 * 6;
    const uint64_t bytes = uint64_t(cfg_.devices_per_vm) * per_device * 4096;
    return std::max<uint64_t>(16ull << 20, (bytes + (2ull << 20) - 1) & ~((2ull << 20) - 1));
  }

  void build_vm(int vm) {
    const uint64_t hpa_base = kGuestBacking + uint64_t(vm) * cfg_.guest_ram;
    const uint16_t did = uint16_t(vm + 1);
    // Second level: GPA [0, guest_ram) -> HPA [hpa_base, ...).
    machine::Domain &domain = machine_.add_domain(did, cfg_.sl_levels);
    domain.map(0, hpa_base, cfg_.guest_ram, cfg_.sl_page_shift);
    // Guest first-level tables live at the top of guest RAM, sized from the request (one leaf
    // table per 512 pages per device, the levels above, never below 16 MiB); data pages below.
    const uint64_t table_bytes = guest_table_bytes();
    if (table_bytes + (16ull << 20) > cfg_.guest_ram)
      throw std::runtime_error("testbed: " + std::to_string(cfg_.working_set_pages) +
                               " pages per device need more guest RAM for tables than " +
                               std::to_string(cfg_.guest_ram >> 20) +
                               " MiB: lower the pages or the devices per VM");
    const uint64_t table_gpa = cfg_.guest_ram - table_bytes;
    GuestTableSpace &guest = machine_.add_guest(domain.slc, table_gpa, table_bytes);
    const uint64_t data_pages = table_gpa >> 12;
    for (int d = 0; d < cfg_.devices_per_vm; ++d) {
      machine::DeviceSpec spec;
      spec.source_id = uint16_t(((vm + 1) << 8) | (d << 3));
      spec.pasid = uint32_t(1 + d);
      spec.mode = cfg_.mode;
      spec.did = did;
      spec.fl_levels = cfg_.fl_levels;
      spec.guest = &guest;
      // Second-level only: the working set at kIovaBase in a fresh second level of its own.
      spec.domain = cfg_.mode == Mode::kSecondLevel ? &machine_.add_domain(did, cfg_.sl_levels)
                    : cfg_.mode == Mode::kNested    ? &domain
                                                    : nullptr;
      machine::Device &dev = machine_.add_device(spec);
      // Nested outputs are GPAs of the VM's data pages, the others the HPAs backing them.
      const uint64_t out_base = cfg_.mode == Mode::kNested ? 0 : hpa_base;
      // Second-level leaves executable, first-level ones not: the figures were taken so.
      const uint8_t perms =
          kAccessRead | kAccessWrite | (cfg_.mode == Mode::kSecondLevel ? kAccessExec : 0);
      for (uint64_t p = 0; p < cfg_.working_set_pages; ++p)
        machine::check(dev.map(iova(p), out_base + (p % data_pages) * 4096, 12, perms),
                       "testbed working set");
      devices_.push_back({spec.source_id, spec.pasid});
    }
  }

  TestbedConfig cfg_;
  machine::Machine machine_;
  std::vector<Device> devices_;
};

}  // namespace nestor::bench
