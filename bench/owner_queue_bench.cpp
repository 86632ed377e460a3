// Google Benchmark suite (in nestor_invq_benchmarks): one guest's page-selective invalidations
// of its PASID (issue 17), two ways.
//  - BM_OwnerQueueDescriptors: through the owner's direct queue (DIRECT_INVLD): the guest's
//    256-bit 0x6 descriptors sit in its own memory; one tail write covers kBatch of them and a
//    wait (BindLayer::owner_queue_write_tail: fetch through the domain, decode, tag
//    translation, processor).
//  - BM_ForwardedOneByOne: the same invalidations forwarded the way a host does without
//    direct queues: one BindLayer::cache_invalidate per descriptor (translated, submitted and
//    waited for each time).
// Both report descriptors/s. arg spread: 0 consecutive pages (coalescing merges a direct
// batch into one range), 1 every other page (nothing to merge).
#include <benchmark/benchmark.h>

#include <cstdint>

#include "nestor/bind.h"
#include "nestor/machine/machine.h"

using namespace nestor;

namespace {

constexpr uint64_t kTableBase = 1ull << 30, kTableSize = 16ull << 20;
constexpr uint64_t kVmHpa = 2ull << 30, kGuestRam = 64ull << 20;
constexpr uint64_t kRingGpa = 0x100000, kStatusGpa = 0x200000;
constexpr uint64_t kRingEntries = 1024;  // 256-bit: 32 KiB
constexpr uint64_t kBatch = 511;         // + 1 wait = half the ring per tail write
constexpr uint64_t kIova = 0x7f00'0000'0000ull;
constexpr uint16_t kSid = 0x0100;
constexpr uint32_t kGuestPasid = 1;

struct Guest {
  explicit Guest(bool direct) : m(layout()) {
    BindConfig bc;
    bc.features = kNestingFeatAll | (direct ? kNestingFeatDirectInvld : 0u);
    m.place_bind_layer(bc);
    machine::VmSpec spec;
    spec.hpa_base = kVmHpa;
    spec.ram = kGuestRam;
    spec.tables_gpa = kGuestRam - (8ull << 20);
    spec.tables_size = 8ull << 20;
    vm = m.add_vm(spec);
    BindLayer &b = m.bind();
    machine::check(b.attach_device(kSid, vm.did), "attach");
    machine::check(b.alloc_pasid(vm.owner, 0, kGuestPasid, &pasid), "alloc PASID");
    const uint64_t root = vm.space->alloc_table();
    machine::GuestFl fl(*vm.space, root, 4);
    for (uint64_t p = 0; p < 2 * kBatch; ++p)
      machine::check(
          fl.map(kIova + p * 4096, 0x400000 + p * 4096, 12, build::fl_leaf_bits(true, true, false)),
          "map");
    BindRequest req;
    req.fl_root_gpa = root;
    req.guest_pasid = kGuestPasid;
    machine::check(b.bind(vm.owner, kSid, pasid, req), "bind");
    if (direct)
      machine::check(b.owner_queue_create(vm.owner, vm.did, kRingGpa, kRingEntries, 256, &queue),
                     "queue");
  }
  static machine::RamLayout layout() {
    machine::RamLayout l;
    l.ram_size = kVmHpa + kGuestRam;
    l.tables_base = kTableBase;
    l.tables_size = kTableSize;
    return l;
  }
  void warm() {
    for (uint64_t p = 0; p < 2 * kBatch; ++p)
      benchmark::DoNotOptimize(
          m.engine().translate(machine::request(kSid, pasid, kIova + p * 4096)));
  }

  machine::Machine m;
  machine::Vm vm;
  uint32_t pasid = 0, queue = 0;
};

uint64_t page_of(uint64_t i, bool spread) {
  return kIova + (spread ? 2 * i : i) * 4096;
}

void BM_OwnerQueueDescriptors(benchmark::State &state) {
  const bool spread = state.range(0) != 0;
  Guest g(true);
  g.warm();
  // Ring: [kBatch 0x6 page-selective (G=11b, guest DID 1, guest PASID 1), wait] twice.
  for (uint64_t slot = 0; slot < kRingEntries; ++slot) {
    const uint64_t i = slot % (kBatch + 1);
    const uint64_t qw[4] = {i == kBatch
                                ? 0x5 | (1u << 5) | (slot << 32)
                                : 0x6 | (3u << 4) | (1u << 16) | (uint64_t(kGuestPasid) << 32),
                            i == kBatch ? kStatusGpa : page_of(i, spread), 0, 0};
    if (g.m.memory().write(kVmHpa + kRingGpa + slot * 32, qw, sizeof qw) != 0) {
      state.SkipWithError("ring not backed");
      return;
    }
  }
  uint64_t tail = 0;
  for (auto _ : state) {
    tail = (tail + kBatch + 1) % kRingEntries;
    if (g.m.bind().owner_queue_write_tail(g.queue, tail) != 0) {
      state.SkipWithError("queue error");
      return;
    }
  }
  state.SetLabel(spread ? "spread" : "adjacent");
  state.counters["descriptors/s"] =
      benchmark::Counter(double(state.iterations() * kBatch), benchmark::Counter::kIsRate);
}

void BM_ForwardedOneByOne(benchmark::State &state) {
  const bool spread = state.range(0) != 0;
  Guest g(false);
  g.warm();
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb | invq::kCachePaging;
  op.scope = invq::Scope::kRange;
  op.source_id = kSid;
  op.pasid = kGuestPasid;
  op.npages = 1;
  for (auto _ : state) {
    for (uint64_t i = 0; i < kBatch; ++i) {
      op.addr = page_of(i, spread);
      if (g.m.bind().cache_invalidate(g.vm.owner, op, kInvGuestPasid) != 0) {
        state.SkipWithError("cache_invalidate failed");
        return;
      }
    }
  }
  state.SetLabel(spread ? "spread" : "adjacent");
  state.counters["descriptors/s"] =
      benchmark::Counter(double(state.iterations() * kBatch), benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_OwnerQueueDescriptors)->Arg(0)->Arg(1)->ArgName("spread");
BENCHMARK(BM_ForwardedOneByOne)->Arg(0)->Arg(1)->ArgName("spread");
