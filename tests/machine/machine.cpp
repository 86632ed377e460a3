#include "nestor/machine/machine.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <utility>

namespace nestor::machine {

void check(build::Status s, const std::string &what) {
  if (s != build::Status::kOk)
    throw std::runtime_error("machine: " + what + ": " + build::status_name(s));
}

void check(int rc, const std::string &what) {
  if (rc != 0)
    throw std::runtime_error("machine: " + what + ": " + std::strerror(rc < 0 ? -rc : rc));
}

const char *mode_name(Mode m) {
  static const char *const kNames[] = {"FirstLevel", "SecondLevel", "Nested", "PassThrough"};
  return unsigned(m) < std::size(kNames) ? kNames[unsigned(m)] : "?";
}

vtd::PasidEntry pasid_entry(Mode mode, uint16_t did, uint64_t fl_root, uint64_t sl_root,
                            int fl_levels, int sl_levels) {
  static constexpr vtd::Pgtt kPgtt[] = {vtd::Pgtt::kFirstLevel, vtd::Pgtt::kSecondLevel,
                                        vtd::Pgtt::kNested, vtd::Pgtt::kPassThrough};
  vtd::PasidEntry pe;
  pe.present = true;
  pe.pgtt = kPgtt[unsigned(mode)];
  pe.did = did;
  pe.aw = uint8_t(sl_levels - 2);
  pe.sl_root = sl_root;
  pe.fl_levels = uint8_t(fl_levels);
  pe.fl_root = fl_root;
  return pe;
}

Request request(uint16_t source_id, uint32_t pasid, uint64_t iova, uint8_t access, bool has_pasid) {
  Request r;
  r.source_id = source_id;
  r.has_pasid = has_pasid;
  r.pasid = pasid;
  r.iova = iova;
  r.access = access;
  return r;
}

RamError::RamError(uint64_t bytes, int rc)
    : std::runtime_error("machine: cannot declare " + std::to_string(bytes >> 20) +
                         " MiB of RAM: " + std::strerror(rc < 0 ? -rc : rc)),
      bytes(bytes),
      rc(rc) {}

void Domain::map(uint64_t gpa, uint64_t hpa, uint64_t size, unsigned shift, uint8_t perms) {
  const uint64_t step = uint64_t{1} << shift;
  for (uint64_t off = 0; off < size; off += step)
    check(tables.map(gpa + off, hpa + off, shift, build::sl_leaf_bits(perms)),
          "second-level map of domain " + std::to_string(did));
}

build::Status Device::map(uint64_t iova, uint64_t out, unsigned shift, uint8_t perms) {
  const uint64_t fl_bits =
      build::fl_leaf_bits(perms & kAccessWrite, true, (perms & kAccessExec) != 0);
  switch (mode) {
    case Mode::kFirstLevel:
      return fl->map(iova, out, shift, fl_bits);
    case Mode::kNested:
      return guest_fl->map(iova, out, shift, fl_bits);
    case Mode::kSecondLevel:
      return domain->tables.map(iova, out, shift, build::sl_leaf_bits(perms));
    case Mode::kPassThrough:
      break;
  }
  return build::Status::kNotMapped;
}

build::Status Device::unmap(uint64_t iova, unsigned shift) {
  switch (mode) {
    case Mode::kFirstLevel:
      return fl->unmap(iova, shift);
    case Mode::kNested:
      return guest_fl->unmap(iova, shift);
    case Mode::kSecondLevel:
      return domain->tables.unmap(iova, shift);
    case Mode::kPassThrough:
      break;
  }
  return build::Status::kNotMapped;
}

// Lazily backed like the engine's own RAM: only the pages a test touches cost memory.
struct Machine::Mapping {
  explicit Mapping(uint64_t size) : size(size) {
    void *p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw RamError(size, -errno);
    ptr = p;
  }
  ~Mapping() { munmap(ptr, size); }
  Mapping(const Mapping &) = delete;
  Mapping &operator=(const Mapping &) = delete;

  uint64_t size;
  void *ptr = nullptr;
};

Machine::Machine(const RamLayout &layout, const EngineConfig &cfg) : layout_(layout) {
  if (layout.shared) ram_ = std::make_unique<Mapping>(layout.ram_size);
  engines_.push_back(std::make_unique<Engine>(cfg));
  const int rc = layout.shared ? memory().add_host_ram(0, layout.ram_size, ram_->ptr)
                               : memory().add_ram(0, layout.ram_size);
  if (rc != 0) throw RamError(layout.ram_size, rc);
}

Machine::~Machine() = default;
Machine::Machine(Machine &&) noexcept = default;
Machine &Machine::operator=(Machine &&) noexcept = default;

Engine &Machine::add_engine(const EngineConfig &cfg) {
  if (!ram_) throw std::runtime_error("machine: a second engine needs a shared RAM layout");
  auto e = std::make_unique<Engine>(cfg);
  if (const int rc = e->memory().add_host_ram(0, layout_.ram_size, ram_->ptr); rc != 0)
    throw RamError(layout_.ram_size, rc);
  if (const uint64_t root = engine().root_table())
    check(e->set_root_table(root), "set the root table");
  engines_.push_back(std::move(e));
  return *engines_.back();
}

void Machine::place_structures() {
  pages_ = std::make_unique<PageAllocator>(memory(), layout_.tables_base, layout_.tables_size);
  host_ = std::make_unique<HostTableSpace>(memory(), *pages_);
  structures_ = std::make_unique<StructuresWriter>(memory(), *pages_);
  for (auto &e : engines_) check(e->set_root_table(structures_->root_table()), "set root table");
}

BindLayer &Machine::place_bind_layer(BindConfig bc) {
  bc.table_base = layout_.tables_base;
  bc.table_size = layout_.tables_size;
  int err = 0;
  bind_ = BindLayer::create(engine(), bc, &err);
  check(err, "create the bind layer");
  return *bind_;
}

uint64_t Machine::alloc_table() {
  const uint64_t pa = pages_->alloc();
  if (!pa) throw std::runtime_error("machine: host table range exhausted");
  return pa;
}

Domain &Machine::add_domain(uint16_t did, int levels) {
  sl::Config slc;
  slc.root = alloc_table();
  slc.levels = uint8_t(levels);
  slc.host_width = engine().config().host_address_width;
  domains_.push_back(std::make_unique<Domain>(*host_, did, slc));
  return *domains_.back();
}

GuestTableSpace &Machine::add_guest(const sl::Config &slc, uint64_t tables_gpa,
                                    uint64_t tables_size) {
  guests_.push_back(std::make_unique<GuestTableSpace>(memory(), slc, tables_gpa, tables_size));
  return *guests_.back();
}

HostFl &Machine::add_first_level(int levels) {
  host_fl_.push_back(std::make_unique<HostFl>(*host_, alloc_table(), levels));
  return *host_fl_.back();
}

GuestFl &Machine::add_first_level(GuestTableSpace &guest, int levels) {
  const uint64_t root = guest.alloc_table();
  if (!root) throw std::runtime_error("machine: guest table space exhausted");
  guest_fl_.push_back(std::make_unique<GuestFl>(guest, root, levels));
  return *guest_fl_.back();
}

Device &Machine::add_device(const DeviceSpec &spec) {
  auto d = std::make_unique<Device>();
  d->mode = spec.mode;
  d->source_id = spec.source_id;
  d->pasid = spec.pasid;
  d->domain = spec.domain;
  d->did = spec.domain ? spec.domain->did : spec.did;
  const bool walks_sl = spec.mode == Mode::kSecondLevel || spec.mode == Mode::kNested;
  if (walks_sl && !spec.domain)
    throw std::runtime_error(std::string("machine: a ") + mode_name(spec.mode) +
                             " device needs a domain");
  uint64_t fl_root = 0;
  if (spec.mode == Mode::kFirstLevel) {
    d->fl = &add_first_level(spec.fl_levels);
    fl_root = d->fl->root();
  } else if (spec.mode == Mode::kNested) {
    if (!spec.guest) throw std::runtime_error("machine: a nested device needs a guest");
    d->guest_fl = &add_first_level(*spec.guest, spec.fl_levels);
    fl_root = d->guest_fl->root();
  }
  const uint64_t sl_root = walks_sl ? spec.domain->root() : 0;
  const int sl_levels = walks_sl ? spec.domain->slc.levels : 4;
  d->entry = pasid_entry(spec.mode, d->did, fl_root, sl_root, spec.fl_levels, sl_levels);
  d->entry.sre = spec.sre;
  d->entry.ere = spec.ere;
  set_pasid_entry(spec.source_id, spec.pasid, d->entry);
  devices_.push_back(std::move(d));
  return *devices_.back();
}

void Machine::set_pasid_entry(uint16_t source_id, uint32_t pasid, const vtd::PasidEntry &pe) {
  if (attached_.insert(source_id).second)
    check(structures_->attach(source_id, 0), "attach device " + std::to_string(source_id));
  check(structures_->set_pasid_entry(source_id, pasid, pe),
        "PASID entry " + std::to_string(pasid) + " of device " + std::to_string(source_id));
}

Vm Machine::add_vm(const VmSpec &spec) {
  Vm vm;
  vm.hpa_base = spec.hpa_base;
  vm.ram = spec.ram;
  check(bind_->create_owner(spec.quota, &vm.owner), "create owner");
  DomainConfig dc;
  dc.levels = spec.sl_levels;
  dc.nesting = true;
  dc.owner = vm.owner;
  check(bind_->create_domain(dc, &vm.did), "create domain");
  check(bind_->map(vm.did, 0, vm.hpa_base, vm.ram, kAccessRead | kAccessWrite), "map guest RAM");
  DomainInfo info;
  if (!bind_->domain_info(vm.did, &info)) throw std::runtime_error("machine: domain vanished");
  vm.slc.root = info.sl_root;
  vm.slc.levels = info.levels;
  vm.slc.host_width = engine().config().host_address_width;
  vm.space = &add_guest(vm.slc, spec.tables_gpa, spec.tables_size);
  return vm;
}

}  // namespace nestor::machine
