#include "vm_machine.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace nestor::driver {

namespace {

constexpr uint64_t kTableBase = 1ull << 30;  // bind layer's structures and second levels
constexpr uint64_t kTableSize = 1ull << 30;
// VM n's guest RAM at kGuestBase + n * guest_ram, right after the table range: every byte
// declared counts against the process's address-space limit even though it is lazily backed.
constexpr uint64_t kGuestBase = kTableBase + kTableSize;

using machine::check;

uint64_t round_up(uint64_t v, uint64_t to) {
  return (v + to - 1) / to * to;
}

// Guest RAM: data pages, then the guest's first-level tables at the top (about one table page
// per 512 mapped pages per address space, plus the upper levels).
uint64_t guest_table_bytes(const MachineConfig &cfg) {
  const uint64_t spaces_per_vm = uint64_t(cfg.devices_per_vm) * uint64_t(cfg.pasids_per_device);
  return round_up(spaces_per_vm * (cfg.pages / 512 + 16) * 4096, 2ull << 20);
}

MachineConfig sized(MachineConfig cfg) {
  if (cfg.vms < 1 || cfg.devices_per_vm < 1 || cfg.pasids_per_device < 1 || cfg.pages < 1)
    throw std::runtime_error("vm machine: need at least one VM, device, PASID and page");
  if (cfg.devices_per_vm > 32) throw std::runtime_error("vm machine: at most 32 devices per VM");
  cfg.guest_ram = std::max<uint64_t>(round_up(cfg.guest_ram, 2ull << 20),
                                     2 * guest_table_bytes(cfg) + (64ull << 20));
  return cfg;
}

}  // namespace

VmMachine::VmMachine(const MachineConfig &cfg, const EngineConfig &ecfg)
    : cfg_(sized(cfg)), table_bytes_(guest_table_bytes(cfg_)), machine_(declare_ram(cfg_, ecfg)) {}

machine::Machine VmMachine::declare_ram(const MachineConfig &cfg, const EngineConfig &ecfg) {
  machine::RamLayout layout;
  layout.ram_size = kGuestBase + uint64_t(cfg.vms) * cfg.guest_ram;
  layout.tables_base = kTableBase;
  layout.tables_size = kTableSize;
  try {
    return machine::Machine(layout, ecfg);
  } catch (const machine::RamError &e) {
    throw std::runtime_error(
        "vm machine: cannot reserve " + std::to_string(e.bytes >> 20) +
        " MiB of lazily backed RAM (" + std::to_string(kGuestBase >> 20) + " MiB of tables, " +
        std::to_string(cfg.vms) + " VMs x " + std::to_string(cfg.guest_ram >> 20) +
        " MiB): " + std::strerror(-e.rc) +
        " (an address-space limit?); lower --vms, --devices, --pasids or --pages");
  }
}

VmMachine::~VmMachine() = default;

void VmMachine::build() {
  machine_.place_bind_layer();
  for (int vm = 0; vm < cfg_.vms; ++vm) build_vm(vm);
}

void VmMachine::build_vm(int vm) {
  machine::VmSpec spec;
  spec.hpa_base = kGuestBase + uint64_t(vm) * cfg_.guest_ram;
  spec.ram = cfg_.guest_ram;
  spec.tables_gpa = cfg_.guest_ram - table_bytes_;
  spec.tables_size = table_bytes_;
  spec.sl_levels = uint8_t(cfg_.sl_levels);
  const machine::Vm v = machine_.add_vm(spec);
  BindLayer &bind = machine_.bind();
  GuestAddressSpace proto;
  proto.vm = vm;
  proto.hpa_base = v.hpa_base;
  proto.owner = v.owner;
  proto.did = v.did;

  // The last kBalloonPages data pages stay unmapped by every IOVA (second-level changes there
  // touch nothing a translation depends on).
  const uint32_t data_pages = uint32_t(spec.tables_gpa >> 12) - kBalloonPages;
  proto.balloon_first = data_pages;
  const uint32_t per_vm = uint32_t(cfg_.devices_per_vm * cfg_.pasids_per_device);
  const uint32_t slice = std::max<uint32_t>(1, data_pages / per_vm);
  uint32_t index = 0;
  for (int d = 0; d < cfg_.devices_per_vm; ++d) {
    const uint16_t sid = uint16_t(((vm + 1) << 8) | (d << 3));
    check(bind.attach_device(sid, proto.did), "attach device");
    for (int p = 0; p < cfg_.pasids_per_device; ++p, ++index) {
      GuestAddressSpace as = proto;
      as.source_id = sid;
      check(bind.alloc_pasid(proto.owner, PasidAllocator::kAnyPasid, PasidAllocator::kNoGuestPasid,
                             &as.pasid),
            "allocate PASID");
      as.slice_first = index * slice;
      as.slice_pages = slice;
      as.gpa.resize(cfg_.pages);
      machine::GuestFl &fl = machine_.add_first_level(*v.space, cfg_.fl_levels);
      fl_.push_back(&fl);
      for (uint64_t page = 0; page < cfg_.pages; ++page) {
        as.gpa[page] = as.slice_first + uint32_t(page % slice);
        check(fl.map(kIovaBase + page * 4096, uint64_t(as.gpa[page]) * 4096, 12,
                     build::fl_leaf_bits(true, true, false)),
              "guest map");
      }
      as.next_free = uint32_t(cfg_.pages % slice);
      BindRequest br;
      br.fl_root_gpa = fl.root();
      br.addr_width = cfg_.fl_levels == 5 ? 57 : 48;
      check(bind.bind(proto.owner, sid, as.pasid, br), "bind first-level table");
      spaces_.push_back(std::move(as));
    }
  }
}

invq::InvalidationOp VmMachine::remap(GuestAddressSpace &as, uint64_t first, uint64_t npages) {
  machine::GuestFl &fl = *fl_[size_t(&as - spaces_.data())];
  for (uint64_t p = first; p < first + npages; ++p)
    check(fl.unmap(kIovaBase + p * 4096, 12), "guest unmap");
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb | invq::kCachePaging | invq::kCacheDevTlb;
  op.scope = invq::Scope::kRange;
  op.source_id = as.source_id;
  op.pasid = as.pasid;
  op.addr = kIovaBase + first * 4096;
  op.npages = npages;
  op.leaf = true;
  check(bind().cache_invalidate(as.owner, op), "guest cache invalidation");
  for (uint64_t p = first; p < first + npages; ++p) {
    // The next page of this space's slice that is not the one just released.
    const uint32_t step = 1 + as.next_free % std::max<uint32_t>(1, as.slice_pages - 1);
    as.gpa[p] = as.slice_first + (as.gpa[p] - as.slice_first + step) % as.slice_pages;
    as.next_free = (as.next_free + 1) % as.slice_pages;
    check(fl.map(kIovaBase + p * 4096, uint64_t(as.gpa[p]) * 4096, 12,
                 build::fl_leaf_bits(true, true, false)),
          "guest map");
  }
  op.did = as.did;  // what the bind layer forwarded to the engine
  return op;
}

}  // namespace nestor::driver
