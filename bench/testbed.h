// A ready-made machine for benchmarks and the workload driver: host RAM, a second-level
// domain per VM mapping guest RAM, guest first-level tables living in guest memory, and
// devices whose PASID entries translate nested, first-level only or second-level only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "nestor/engine.h"
#include "nestor/vtd/structures_writer.h"
#include "nestor/walkers/builder.h"

namespace nestor::bench {

enum class Mode { kNested, kFirstLevel, kSecondLevel };

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
  };

  // `after_ram` runs once RAM is declared and before anything is written (a trace recorder
  // attaches there to capture the setup).
  explicit Testbed(const TestbedConfig &cfg, const EngineConfig &ecfg = {},
                   const std::function<void(Engine &)> &after_ram = {})
      : cfg_(cfg), engine_(std::make_unique<Engine>(ecfg)) {
    MachineMemory &mem = engine_->memory();
    // Host RAM: tables in [1 GiB, 2 GiB), guest RAM backing from 4 GiB up; lazily backed.
    if (mem.add_ram(0, (4ull << 30) + uint64_t(cfg.vms) * cfg.guest_ram) != 0)
      throw std::runtime_error("testbed: cannot declare RAM");
    if (after_ram) after_ram(*engine_);
    pages_ = std::make_unique<PageAllocator>(mem, 1ull << 30, 1ull << 30);
    host_space_ = std::make_unique<HostTableSpace>(mem, *pages_);
    structures_ = std::make_unique<StructuresWriter>(mem, *pages_);
    engine_->set_root_table(structures_->root_table());
    for (int vm = 0; vm < cfg.vms; ++vm) build_vm(vm);
  }

  Engine &engine() { return *engine_; }
  const std::vector<Device> &devices() const { return devices_; }
  uint64_t iova(uint64_t page) const { return kIovaBase + page * 4096; }

 private:
  void check(build::Status s, const char *what) {
    if (s != build::Status::kOk)
      throw std::runtime_error(std::string("testbed: ") + what + ": " + build::status_name(s));
  }

  uint64_t guest_table_bytes() const {
    const uint64_t pages = cfg_.working_set_pages;
    const uint64_t per_device = pages / 512 + pages / (512 * 512) + 2 * 6;
    const uint64_t bytes = uint64_t(cfg_.devices_per_vm) * per_device * 4096;
    return std::max<uint64_t>(16ull << 20, (bytes + (2ull << 20) - 1) & ~((2ull << 20) - 1));
  }

  void build_vm(int vm) {
    MachineMemory &mem = engine_->memory();
    const uint64_t hpa_base = (4ull << 30) + uint64_t(vm) * cfg_.guest_ram;
    const uint16_t did = uint16_t(vm + 1);
    // Second level: GPA [0, guest_ram) -> HPA [hpa_base, ...).
    sl::Config slc;
    slc.levels = uint8_t(cfg_.sl_levels);
    slc.root = pages_->alloc();
    build::SecondLevelBuilder<HostTableSpace> slb(*host_space_, slc.root, cfg_.sl_levels);
    const uint64_t step = uint64_t{1} << cfg_.sl_page_shift;
    for (uint64_t gpa = 0; gpa < cfg_.guest_ram; gpa += step)
      check(slb.map(gpa, hpa_base + gpa, cfg_.sl_page_shift, build::sl_leaf_bits(7)), "sl map");
    // Guest first-level tables live at the top of guest RAM, sized from the request (one leaf
    // table per 512 pages per device, the levels above, never below 16 MiB); data pages below.
    const uint64_t table_bytes = guest_table_bytes();
    if (table_bytes + (16ull << 20) > cfg_.guest_ram)
      throw std::runtime_error("testbed: " + std::to_string(cfg_.working_set_pages) +
                               " pages per device need more guest RAM for tables than " +
                               std::to_string(cfg_.guest_ram >> 20) +
                               " MiB: lower the pages or the devices per VM");
    const uint64_t table_gpa = cfg_.guest_ram - table_bytes;
    GuestTableSpace guest_space(mem, slc, table_gpa, table_bytes);
    for (int d = 0; d < cfg_.devices_per_vm; ++d) {
      const uint16_t sid = uint16_t(((vm + 1) << 8) | (d << 3));
      const uint32_t pasid = uint32_t(1 + d);
      vtd::PasidEntry pe;
      pe.present = true;
      pe.did = did;
      pe.aw = uint8_t(cfg_.sl_levels - 2);
      pe.sl_root = slc.root;
      pe.fl_levels = uint8_t(cfg_.fl_levels);
      const uint64_t data_pages = (table_gpa >> 12);
      if (cfg_.mode == Mode::kSecondLevel) {
        pe.pgtt = vtd::Pgtt::kSecondLevel;
        // Map the working set at kIovaBase in a fresh second level of its own domain.
        const uint64_t root = pages_->alloc();
        build::SecondLevelBuilder<HostTableSpace> own(*host_space_, root, cfg_.sl_levels);
        for (uint64_t p = 0; p < cfg_.working_set_pages; ++p)
          check(own.map(iova(p), hpa_base + (p % data_pages) * 4096, 12, build::sl_leaf_bits(7)),
                "sl-only map");
        pe.sl_root = root;
      } else if (cfg_.mode == Mode::kFirstLevel) {
        pe.pgtt = vtd::Pgtt::kFirstLevel;
        const uint64_t root = pages_->alloc();
        build::FirstLevelBuilder<HostTableSpace> flb(*host_space_, root, cfg_.fl_levels);
        for (uint64_t p = 0; p < cfg_.working_set_pages; ++p)
          check(flb.map(iova(p), hpa_base + (p % data_pages) * 4096, 12,
                        build::fl_leaf_bits(true, true, false)),
                "fl map");
        pe.fl_root = root;
      } else {
        pe.pgtt = vtd::Pgtt::kNested;
        const uint64_t root = guest_space.alloc_table();
        build::FirstLevelBuilder<GuestTableSpace> flb(guest_space, root, cfg_.fl_levels);
        for (uint64_t p = 0; p < cfg_.working_set_pages; ++p)
          check(
              flb.map(iova(p), (p % data_pages) * 4096, 12, build::fl_leaf_bits(true, true, false)),
              "guest fl map");
        pe.fl_root = root;
      }
      if (structures_->attach(sid, 0) != 0 || structures_->set_pasid_entry(sid, pasid, pe) != 0)
        throw std::runtime_error("testbed: cannot write device structures");
      devices_.push_back({sid, pasid});
    }
  }

  TestbedConfig cfg_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<PageAllocator> pages_;
  std::unique_ptr<HostTableSpace> host_space_;
  std::unique_ptr<StructuresWriter> structures_;
  std::vector<Device> devices_;
};

}  // namespace nestor::bench
