#include "vm_machine.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace nestor::driver {

namespace {

constexpr uint64_t kTableBase = 1ull << 30;  // bind layer's structures and second levels
constexpr uint64_t kTableSize = 1ull << 30;
// VM n's guest RAM at kGuestBase + n * guest_ram, right after the table range: every byte
// declared counts against the process's address-space limit even though it is lazily backed.
constexpr uint64_t kGuestBase = kTableBase + kTableSize;

using machine::check;

// The guest's queue: 128 256-bit descriptors, one page (IQA QS=0), and the status dword its
// waits write, both in pages of the VM's table area that no IOVA maps.
constexpr uint64_t kQueueEntries = 128;
constexpr unsigned kQueueBits = 256;

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

// The guest side of one VM's direct queue. A guest driver serialises its queue (Linux's
// qi_submit_sync holds the IOMMU's register lock); address spaces of one VM are driven by
// different translating threads, so they take turns here.
struct VmMachine::GuestQueue {
  std::mutex mu;
  uint32_t id = 0, owner = 0;
  int vm = 0;
  uint64_t hpa_base = 0, ring_gpa = 0, status_gpa = 0;
  uint64_t tail = 0;
  uint32_t sequence = 0;  // the status data of the last wait
};

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
  BindConfig bc;
  if (cfg_.direct_queues) bc.features |= kNestingFeatDirectInvld;
  machine_.place_bind_layer(bc);
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
  if (cfg_.direct_queues) {
    auto q = std::make_unique<GuestQueue>();
    q->vm = vm;
    q->owner = v.owner;
    q->hpa_base = v.hpa_base;
    q->ring_gpa = v.space->alloc_table();  // zeroed, one page: the whole ring
    q->status_gpa = v.space->alloc_table();
    check(bind.owner_queue_create(v.owner, v.did, q->ring_gpa, kQueueEntries, kQueueBits, &q->id),
          "create owner queue");
    queues_.push_back(std::move(q));
  }
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
  if (cfg_.direct_queues) {
    std::vector<GuestDescriptor> descs;
    guest_descriptors(as, op, &descs);
    submit_to_queue(as.vm, descs);
  } else {
    check(bind().cache_invalidate(as.owner, op), "guest cache invalidation");
  }
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

void VmMachine::guest_descriptors(const GuestAddressSpace &as, const invq::InvalidationOp &op,
                                  std::vector<GuestDescriptor> *out) {
  // Layouts, VT-d 6.5.2: qw0[3:0] type. 0x6 P_IOTLB: G 5:4 (10b PASID-selective, 11b page-
  // selective-within-PASID), DID 31:16, PASID 51:32 | qw1 AM 5:0, IH 6, ADDR 63:12. 0x8 PASID-
  // based device-TLB: SID 31:16, PASID 51:32 | qw1 S 11 (size in ADDR's low ones), ADDR 63:12.
  // The guest names its PASIDs by the host's (it asked for no guest PASID); its DID is ignored
  // for PASID-tagged descriptors, and the guest writes its own anyway.
  const uint64_t tags = (uint64_t(as.did) << 16) | (uint64_t(as.pasid) << 32);
  const bool devtlb = (op.caches & invq::kCacheDevTlb) != 0;
  if (op.scope == invq::Scope::kPasid) {
    out->push_back({0x6 | (2u << 4) | tags, 0, 0, 0});
    if (devtlb)  // every page of the PASID: S=1 with ADDR all ones but bit 63
      out->push_back({0x8 | (uint64_t(as.source_id) << 16) | (uint64_t(as.pasid) << 32),
                      (~uint64_t{0} >> 1) & ~uint64_t{0x7FF}, 0, 0});
    return;
  }
  if (op.scope != invq::Scope::kRange || op.addr_is_gpa)
    throw std::logic_error("guest_descriptors: only first-level page, range and PASID scopes");
  // One descriptor covers a naturally aligned block of 2^AM pages (VT-d 6.5.2.4, ADDR/AM).
  // Linux asks for the one block holding the range (calculate_psi_aligned_address) and
  // over-invalidates the rest; this guest splits the range into the fewest aligned blocks
  // instead, so it invalidates exactly what the forwarded call does and the two modes compare
  // the paths, not the hit rates. 8 pages take at most 4 blocks.
  for (uint64_t page = op.addr >> 12, end = page + op.npages; page < end;) {
    unsigned am = page ? unsigned(std::countr_zero(page)) : 63u;
    while (am > 0 && page + (uint64_t{1} << am) > end) --am;
    const uint64_t addr = page << 12;
    out->push_back({0x6 | (3u << 4) | tags, addr | (op.leaf ? 1u << 6 : 0) | am, 0, 0});
    if (devtlb) {
      const uint64_t size_ones = am ? ((uint64_t{1} << (am - 1)) - 1) << 12 : 0;
      out->push_back({0x8 | (uint64_t(as.source_id) << 16) | (uint64_t(as.pasid) << 32),
                      addr | size_ones | (am ? 1u << 11 : 0), 0, 0});
    }
    page += uint64_t{1} << am;
  }
}

void VmMachine::submit_to_queue(int vm, const std::vector<GuestDescriptor> &descs) {
  GuestQueue &q = *queues_.at(size_t(vm));
  MachineMemory &mem = machine_.memory();
  std::lock_guard lock(q.mu);
  for (size_t next = 0; next < descs.size();) {
    // At most a ring's worth less one (the wait) per tail write: the tail may not catch up
    // with the head (IQT == IQH means empty).
    const size_t n = std::min<size_t>(descs.size() - next, kQueueEntries - 2);
    auto put = [&](const GuestDescriptor &d) {
      check(mem.write(q.hpa_base + q.ring_gpa + q.tail * 32, d.data(), 32), "write guest queue");
      q.tail = (q.tail + 1) % kQueueEntries;
    };
    for (size_t i = 0; i < n; ++i) put(descs[next + i]);
    next += n;
    // 0x5 wait: SW 5, status data 63:32 | status address.
    const uint32_t data = ++q.sequence;
    put({0x5 | (1u << 5) | (uint64_t(data) << 32), q.status_gpa, 0, 0});
    check(bind().owner_queue_write_tail(q.id, q.tail), "owner queue tail write (IQE)");
    // Without a background worker the status is written before the tail write returns; with
    // one, the guest polls its status dword, as a driver spins on its wait descriptor.
    for (uint32_t seen = 0;;) {
      check(mem.read(q.hpa_base + q.status_gpa, &seen, sizeof seen), "read wait status");
      if (seen == data) break;
      std::this_thread::yield();
    }
  }
}

std::vector<OwnerQueueReport> VmMachine::owner_queues() {
  std::vector<OwnerQueueReport> out;
  for (const auto &q : queues_) {
    OwnerQueueReport r;
    r.vm = q->vm;
    r.owner = q->owner;
    r.queue = q->id;
    check(bind().owner_queue_stats(q->id, &r.stats), "owner queue stats");
    out.push_back(r);
  }
  return out;
}

}  // namespace nestor::driver
