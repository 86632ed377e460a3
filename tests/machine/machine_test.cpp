// The machine builder: a device in each translation mode translates what its tables say, a
// second engine over shared RAM sees the same machine, bind-layer VMs translate nested, and
// the guest table range's edge cases are answered.
#include "nestor/machine/machine.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace nestor::machine {
namespace {

constexpr uint64_t kIova = 0x40'0000'0000ull;
constexpr uint64_t kGuestHpa = 32ull << 20;  // guest RAM [0, 16 MiB) lives here
constexpr uint64_t kGuestRam = 16ull << 20;
constexpr uint64_t kGuestTables = 12ull << 20;  // guest tables: GPA [12, 16) MiB

RamLayout small(bool shared = false) {
  RamLayout l;
  l.ram_size = 64ull << 20;
  l.tables_base = 16ull << 20;
  l.tables_size = 16ull << 20;
  l.shared = shared;
  return l;
}

// A machine with a domain mapping the guest's RAM and one device in `mode` (did 9).
struct OneDevice {
  explicit OneDevice(Mode mode, bool shared = false) : m(small(shared)) {
    m.place_structures();
    Domain &d = m.add_domain(9);
    d.map(0, kGuestHpa, kGuestRam);
    DeviceSpec spec;
    spec.source_id = 0x0208;
    spec.pasid = 3;
    spec.mode = mode;
    spec.did = 9;
    if (mode == Mode::kSecondLevel || mode == Mode::kNested) spec.domain = &d;
    if (mode == Mode::kNested)
      spec.guest = &m.add_guest(d.slc, kGuestTables, kGuestRam - kGuestTables);
    dev = &m.add_device(spec);
  }
  Machine m;
  Device *dev = nullptr;
};

class EveryMode : public ::testing::TestWithParam<Mode> {};

TEST_P(EveryMode, DeviceTranslatesThroughItsTables) {
  const Mode mode = GetParam();
  OneDevice x(mode);
  EXPECT_EQ(x.dev->did, 9);
  EXPECT_EQ(x.dev->entry.pgtt, pasid_entry(mode, 9, 0, 0).pgtt);
  const uint64_t out = mode == Mode::kNested ? 0x5000 : kGuestHpa + 0x5000;
  const uint64_t want = mode == Mode::kPassThrough ? kIova + 0x18 : kGuestHpa + 0x5018;
  const build::Status s = x.dev->map(kIova, out, 12, kAccessRead | kAccessWrite);
  EXPECT_EQ(s, mode == Mode::kPassThrough ? build::Status::kNotMapped : build::Status::kOk);
  const Result r = x.m.engine().translate(x.dev->request(kIova + 0x18, kAccessWrite));
  ASSERT_TRUE(r.ok) << mode_name(mode) << " fault 0x" << std::hex << int(r.fault.reason);
  EXPECT_EQ(r.t.out, want);
  if (mode == Mode::kPassThrough) return;
  ASSERT_EQ(x.dev->unmap(kIova, 12), build::Status::kOk);
  invq::InvalidationOp all;  // global
  all.caches = invq::kAllCaches;
  x.m.engine().invalidate(all);
  x.m.engine().invalidate_wait();
  EXPECT_FALSE(x.m.engine().translate(x.dev->request(kIova + 0x18)).ok);
}

INSTANTIATE_TEST_SUITE_P(Modes, EveryMode,
                         ::testing::Values(Mode::kFirstLevel, Mode::kSecondLevel, Mode::kNested,
                                           Mode::kPassThrough),
                         [](const auto &info) { return std::string(mode_name(info.param)); });

TEST(Machine, SecondEngineSeesTheSharedRam) {
  OneDevice x(Mode::kNested, true);
  EngineConfig uncached;
  uncached.caching = false;
  Engine &ref = x.m.add_engine(uncached);
  ASSERT_EQ(x.dev->map(kIova, 0x7000, 12, kAccessRead), build::Status::kOk);
  const Result r = ref.translate(x.dev->request(kIova));
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, kGuestHpa + 0x7000);
  EXPECT_EQ(ref.root_table(), x.m.engine().root_table());
}

TEST(Machine, SecondEngineNeedsSharedRam) {
  Machine m(small());
  EXPECT_THROW(m.add_engine({}), std::runtime_error);
}

TEST(Machine, BindLayerVmTranslatesNested) {
  RamLayout l;
  l.ram_size = 2ull << 30;
  l.tables_base = 1ull << 30;
  l.tables_size = 64ull << 20;
  Machine m(l);
  BindLayer &bind = m.place_bind_layer();
  VmSpec spec;
  spec.hpa_base = 1536ull << 20;
  spec.ram = kGuestRam;
  spec.tables_gpa = kGuestTables;
  spec.tables_size = kGuestRam - kGuestTables;
  const Vm vm = m.add_vm(spec);
  EXPECT_TRUE(vm.owns_hpa(spec.hpa_base + kGuestRam - 1));
  EXPECT_FALSE(vm.owns_hpa(spec.hpa_base + kGuestRam));
  GuestFl &fl = m.add_first_level(*vm.space);
  ASSERT_EQ(fl.map(kIova, 0x3000, 12, build::fl_leaf_bits(true, true, false)), build::Status::kOk);
  const uint16_t sid = 0x0300;
  ASSERT_EQ(bind.attach_device(sid, vm.did), 0);
  uint32_t pasid = 0;
  ASSERT_EQ(
      bind.alloc_pasid(vm.owner, PasidAllocator::kAnyPasid, PasidAllocator::kNoGuestPasid, &pasid),
      0);
  BindRequest br;
  br.fl_root_gpa = fl.root();
  br.addr_width = 48;
  ASSERT_EQ(bind.bind(vm.owner, sid, pasid, br), 0);
  const Result r = m.engine().translate(request(sid, pasid, kIova + 4));
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, spec.hpa_base + 0x3004);
}

// A table space's 0 means "no table" (build::TableSpace), so a guest table range starting at
// GPA 0 must not hand 0 out: a builder would take its first table for exhaustion. It gives the
// page up instead, and reports exhaustion when the rest is used.
TEST(Machine, GuestTableRangeAtGpaZero) {
  Machine m(small());
  m.place_structures();
  Domain &d = m.add_domain(1);
  d.map(0, kGuestHpa, 3 * 4096);
  GuestTableSpace &g = m.add_guest(d.slc, 0, 3 * 4096);
  EXPECT_EQ(m.add_first_level(g).root(), 4096u);
  GuestFl &fl = m.add_first_level(g);
  EXPECT_EQ(fl.root(), 2 * 4096u);
  EXPECT_EQ(g.alloc_table(), 0u);  // exhausted
  EXPECT_THROW(m.add_first_level(g), std::runtime_error);
}

TEST(Machine, DeviceWithoutItsTablesIsRefused) {
  Machine m(small());
  m.place_structures();
  DeviceSpec spec;
  spec.mode = Mode::kNested;
  EXPECT_THROW(m.add_device(spec), std::runtime_error);
  spec.domain = &m.add_domain(1);
  EXPECT_THROW(m.add_device(spec), std::runtime_error);  // no guest
  spec.mode = Mode::kSecondLevel;
  spec.domain = nullptr;
  EXPECT_THROW(m.add_device(spec), std::runtime_error);
}

TEST(Machine, RamThatCannotBeDeclaredSaysHowMuch) {
  RamLayout l;
  l.ram_size = 4097;  // not page-aligned
  try {
    Machine m(l);
    FAIL() << "declared";
  } catch (const RamError &e) {
    EXPECT_EQ(e.bytes, 4097u);
    EXPECT_LT(e.rc, 0);
  }
}

}  // namespace
}  // namespace nestor::machine
