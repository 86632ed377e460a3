// The one builder of the machines that tests, benchmarks, the workload driver and the stress
// tool run on: RAM, second-level domains (host tables), guest first-level tables in guest
// memory, and devices attached in every translation mode. It writes only through the engine's
// StructuresWriter, bind layer and table builders, so no VT-d format is encoded here again.
// Every address comes from the caller: tests and benchmarks keep the layouts they depend on.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "nestor/bind.h"
#include "nestor/engine.h"
#include "nestor/vtd/structures_writer.h"
#include "nestor/walkers/builder.h"

namespace nestor::machine {

using HostSl = build::SecondLevelBuilder<HostTableSpace>;
using HostFl = build::FirstLevelBuilder<HostTableSpace>;
using GuestFl = build::FirstLevelBuilder<GuestTableSpace>;

// A machine that cannot be built is a broken setup, never an outcome a test checks: failures
// throw std::runtime_error naming the step.
void check(build::Status s, const std::string &what);
void check(int rc, const std::string &what);  // rc: 0 or an errno (either sign)

// The translation type a PASID entry selects (PGTT).
enum class Mode : uint8_t { kFirstLevel, kSecondLevel, kNested, kPassThrough };
// "FirstLevel", "SecondLevel", "Nested", "PassThrough": test-name suffixes.
const char *mode_name(Mode m);

// The PASID-table entry a driver writes for `mode`: present, `did`, AW from `sl_levels`, FLPM
// from `fl_levels`, both roots as given (the one a mode does not use is ignored by the
// hardware); every other field keeps vtd::PasidEntry's default.
vtd::PasidEntry pasid_entry(Mode mode, uint16_t did, uint64_t fl_root, uint64_t sl_root,
                            int fl_levels = 4, int sl_levels = 4);

Request request(uint16_t source_id, uint32_t pasid, uint64_t iova, uint8_t access = kAccessRead,
                bool has_pasid = true);

// Where a machine's memory goes (host-physical addresses).
struct RamLayout {
  uint64_t ram_size = 0;  // RAM [0, ram_size)
  // VT-d structures and host page tables are allocated from here.
  uint64_t tables_base = 0, tables_size = 0;
  // false: lazily backed RAM the engine owns. true: one anonymous mapping the machine owns and
  // every engine it creates declares, so a second engine (add_engine) sees the same bytes.
  bool shared = false;
};

// Declaring the RAM failed (typically an address-space limit): callers that know which of
// their options sized it say what to lower.
struct RamError : std::runtime_error {
  RamError(uint64_t bytes, int rc);
  uint64_t bytes;
  int rc;  // negative errno
};

// A second-level domain: its DID and host page tables.
struct Domain {
  Domain(HostTableSpace &host, uint16_t did, const sl::Config &slc)
      : did(did), slc(slc), tables(host, slc.root, slc.levels) {}
  uint64_t root() const { return slc.root; }
  // Maps [gpa, gpa + size) to [hpa, hpa + size) in pages of 2^shift bytes; throws on failure.
  void map(uint64_t gpa, uint64_t hpa, uint64_t size, unsigned shift = 12,
           uint8_t perms = kAccessRead | kAccessWrite | kAccessExec);

  uint16_t did;
  sl::Config slc;  // what a walk through this domain (GuestTableSpace) uses
  HostSl tables;
};

struct DeviceSpec {
  uint16_t source_id = 0;
  uint32_t pasid = 0;
  Mode mode = Mode::kNested;
  // Second-level and nested: the domain walked (its DID tags the entry). First-level and
  // pass-through take `did` instead.
  Domain *domain = nullptr;
  uint16_t did = 0;
  GuestTableSpace *guest = nullptr;  // nested: where the first-level table goes
  int fl_levels = 4;
  bool sre = false, ere = false;  // supervisor and execute requests
};

// A device's address space (source-id, PASID) and the table its PASID entry points at: a new
// first-level table in host memory (first-level) or guest memory (nested), the domain's
// second level (second-level), none (pass-through).
struct Device {
  // Maps [iova, iova + 2^shift) to `out` (guest-physical when nested, else host-physical).
  // First-level leaves are user pages, no-execute unless `perms` has kAccessExec.
  // Pass-through has no table: kNotMapped.
  build::Status map(uint64_t iova, uint64_t out, unsigned shift, uint8_t perms);
  build::Status unmap(uint64_t iova, unsigned shift);
  Request request(uint64_t iova, uint8_t access = kAccessRead) const {
    return machine::request(source_id, pasid, iova, access);
  }

  Mode mode = Mode::kNested;
  uint16_t source_id = 0;
  uint32_t pasid = 0;
  uint16_t did = 0;
  vtd::PasidEntry entry;  // as written
  HostFl *fl = nullptr;
  GuestFl *guest_fl = nullptr;
  Domain *domain = nullptr;
};

// A VM as a hypervisor builds it through the bind layer: an owner, a nesting domain mapping
// guest RAM [0, ram) read/write to host [hpa_base, hpa_base + ram), and the guest's table
// space, GPA [tables_gpa, tables_gpa + tables_size).
struct VmSpec {
  uint64_t hpa_base = 0, ram = 0;
  uint64_t tables_gpa = 0, tables_size = 0;
  uint8_t sl_levels = 4;
  uint32_t quota = 0;  // the owner's PASID quota (0: none)
};

struct Vm {
  bool owns_hpa(uint64_t hpa) const { return hpa >= hpa_base && hpa - hpa_base < ram; }

  uint32_t owner = 0;
  uint16_t did = 0;
  uint64_t hpa_base = 0, ram = 0;
  sl::Config slc;
  GuestTableSpace *space = nullptr;  // owned by the machine
};

class Machine {
 public:
  // Creates the engine and declares the RAM; nothing is written yet, so a trace recorder
  // attached now captures the whole setup. Throws RamError.
  explicit Machine(const RamLayout &layout, const EngineConfig &cfg = {});
  ~Machine();
  Machine(Machine &&) noexcept;
  Machine &operator=(Machine &&) noexcept;

  Engine &engine() { return *engines_.front(); }
  MachineMemory &memory() { return engine().memory(); }
  const RamLayout &layout() const { return layout_; }
  // Another engine over the same RAM (shared layouts only) and the same root table.
  Engine &add_engine(const EngineConfig &cfg);

  // The layout's table range gets one owner. Either the structures writer (host tables come
  // from the same allocator; every engine's root table is set) ...
  void place_structures();
  // ... or a bind layer, which places the structures and its domains' tables itself.
  BindLayer &place_bind_layer(BindConfig bc = {});

  StructuresWriter &structures() { return *structures_; }
  HostTableSpace &host() { return *host_; }
  PageAllocator &pages() { return *pages_; }
  BindLayer &bind() { return *bind_; }
  // A zeroed host page from the table range.
  uint64_t alloc_table();

  // With place_structures: a domain whose second level is an empty table.
  Domain &add_domain(uint16_t did, int levels = 4);
  // A guest's memory seen through `slc`; its first-level tables are carved from GPA
  // [tables_gpa, tables_gpa + tables_size), which the second level must map.
  GuestTableSpace &add_guest(const sl::Config &slc, uint64_t tables_gpa, uint64_t tables_size);
  // An empty first-level table in host memory, or in a guest's.
  HostFl &add_first_level(int levels = 4);
  GuestFl &add_first_level(GuestTableSpace &guest, int levels = 4);
  // Builds the device's table (see Device) and writes its PASID entry, attaching the
  // source-id the first time it is seen.
  Device &add_device(const DeviceSpec &spec);
  // Writes a PASID entry as is (attaching the source-id the first time): a rewrite, another
  // PASID of a device, an entry a test crafts.
  void set_pasid_entry(uint16_t source_id, uint32_t pasid, const vtd::PasidEntry &pe);

  // With place_bind_layer.
  Vm add_vm(const VmSpec &spec);

 private:
  struct Mapping;  // the RAM of a shared layout

  RamLayout layout_;
  // Declaration order is teardown order reversed: everything below writes into the engines'
  // memory, and the engines read the shared mapping.
  std::unique_ptr<Mapping> ram_;
  std::vector<std::unique_ptr<Engine>> engines_;
  std::unique_ptr<PageAllocator> pages_;
  std::unique_ptr<HostTableSpace> host_;
  std::unique_ptr<StructuresWriter> structures_;
  std::unique_ptr<BindLayer> bind_;
  std::vector<std::unique_ptr<Domain>> domains_;
  std::vector<std::unique_ptr<GuestTableSpace>> guests_;
  std::vector<std::unique_ptr<HostFl>> host_fl_;
  std::vector<std::unique_ptr<GuestFl>> guest_fl_;
  std::vector<std::unique_ptr<Device>> devices_;
  std::set<uint16_t> attached_;
};

}  // namespace nestor::machine
