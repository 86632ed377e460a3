// The C++ API from several threads at once: one VM whose guest owns first-level tables on top
// of a host second-level domain (nested translation), one device per thread, each thread
// translating its device's working set through an address-space handle (Engine::open +
// AddressSpace::translate_batch) and through Engine::translate_batch, checking every result
// against the mapping it built. Meanwhile the main thread keeps invalidating (the mappings do
// not change, so every result must stay the same while handles re-resolve and caches refill).
// At the end the guest unmaps one page per device and invalidates it; every device must then
// fault on exactly that page. Exit code 0 only if every check holds.
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "nestor/engine.h"
#include "nestor/vtd/structures_writer.h"
#include "nestor/walkers/builder.h"

namespace {

using namespace nestor;

constexpr int kDevices = 4;         // one per translating thread
constexpr uint64_t kPages = 2048;   // working set per device, 4K pages
constexpr int kRounds = 40;         // translate_batch passes per thread
constexpr uint16_t kDid = 1;
constexpr uint64_t kIovaBase = 0x10'0000'0000ull;
constexpr uint64_t kGuestRam = 256ull << 20;          // GPA [0, 256 MiB)
constexpr uint64_t kGuestBacking = 1536ull << 20;     // ... backed at HPA 1.5 GiB
constexpr uint64_t kGuestTables = kGuestRam - (16ull << 20);  // guest FL tables: top 16 MiB

uint16_t source_id(int d) { return uint16_t((1 << 8) | (d << 3)); }  // 01:0d.0
// The devices share the VM's domain (one DID), so each needs its own PASID: VT-d tags cached
// first-level translations by (DID, PASID), and two different first-level tables under the
// same pair would be a programming error (they would share IOTLB entries).
uint32_t pasid_of(int d) { return uint32_t(1 + d); }
uint64_t iova(uint64_t p) { return kIovaBase + p * 4096; }
// Scattered guest pages, different per device, all below the guest's table area.
uint64_t gpa_of(int d, uint64_t p) {
  return ((uint64_t(d) * kPages + p) * 7919 % (kGuestTables >> 12)) << 12;
}
uint64_t hpa_of(int d, uint64_t p) { return kGuestBacking + gpa_of(d, p); }

std::atomic<int> g_failures{0};
void fail(const char *what, int d, uint64_t p) {
  if (g_failures.fetch_add(1) < 10)  // the first few are enough to debug; count the rest
    std::fprintf(stderr, "CHECK FAILED: %s (device %d page %" PRIu64 ")\n", what, d, p);
}

// The host (VMM) side: RAM, a second-level domain for the VM, structures for every device.
// The guest side: first-level tables in guest memory, built through the second level.
struct Machine {
  explicit Machine(const EngineConfig &cfg) : engine(cfg) {}
  Engine engine;
  std::unique_ptr<PageAllocator> pages;
  std::unique_ptr<HostTableSpace> host_space;
  std::unique_ptr<StructuresWriter> structures;
  std::unique_ptr<GuestTableSpace> guest_space;
  sl::Config slc;
  std::vector<uint64_t> fl_roots;

  bool build() {
    MachineMemory &mem = engine.memory();
    if (mem.add_ram(0, kGuestBacking + kGuestRam) != 0) return false;
    pages = std::make_unique<PageAllocator>(mem, 1ull << 30, 256ull << 20);
    host_space = std::make_unique<HostTableSpace>(mem, *pages);
    structures = std::make_unique<StructuresWriter>(mem, *pages);
    if (engine.set_root_table(structures->root_table()) != 0) return false;

    slc.levels = 4;
    slc.root = pages->alloc();
    build::SecondLevelBuilder<HostTableSpace> slb(*host_space, slc.root, slc.levels);
    for (uint64_t gpa = 0; gpa < kGuestRam; gpa += 2ull << 20)
      if (slb.map(gpa, kGuestBacking + gpa, 21, build::sl_leaf_bits(kAccessRead | kAccessWrite)) !=
          build::Status::kOk)
        return false;

    guest_space = std::make_unique<GuestTableSpace>(mem, slc, kGuestTables, 16ull << 20);
    for (int d = 0; d < kDevices; ++d) {
      const uint64_t root = guest_space->alloc_table();
      build::FirstLevelBuilder<GuestTableSpace> flb(*guest_space, root, 4);
      for (uint64_t p = 0; p < kPages; ++p)
        if (flb.map(iova(p), gpa_of(d, p), 12, build::fl_leaf_bits(true, true, false)) !=
            build::Status::kOk)
          return false;
      fl_roots.push_back(root);

      vtd::PasidEntry pe;
      pe.present = true;
      pe.pgtt = vtd::Pgtt::kNested;
      pe.did = kDid;
      pe.aw = 2;  // 48-bit, 4-level second level
      pe.sl_root = slc.root;
      pe.fl_levels = 4;
      pe.fl_root = root;  // a GPA: nested walks fetch it through the second level
      if (structures->attach(source_id(d), 0) != 0 ||
          structures->set_pasid_entry(source_id(d), pasid_of(d), pe) != 0)
        return false;
    }
    return true;
  }

  // The guest removes one page from device d's first-level table; it must invalidate after.
  bool guest_unmap(int d, uint64_t p) {
    build::FirstLevelBuilder<GuestTableSpace> flb(*guest_space, fl_roots[size_t(d)], 4);
    return flb.unmap(iova(p), 12) == build::Status::kOk;
  }
};

// One translating thread: a handle for its device, batches through the handle and through the
// engine, every result checked.
void device_thread(Engine &engine, int d, std::atomic<bool> &start) {
  while (!start.load(std::memory_order_acquire)) std::this_thread::yield();
  AddressSpace as = engine.open(source_id(d), true, pasid_of(d));
  if (!as.valid()) return fail("open", d, 0);
  std::vector<uint64_t> iovas(kPages);
  std::vector<Result> out(kPages);
  std::vector<Request> reqs(kPages);
  for (uint64_t p = 0; p < kPages; ++p) {
    iovas[p] = iova(p) + (p & 0xff8);  // a different offset per page: hpa keeps it
    reqs[p].source_id = source_id(d);
    reqs[p].has_pasid = true;
    reqs[p].pasid = pasid_of(d);
    reqs[p].iova = iovas[p];
    reqs[p].access = (p & 1) ? kAccessWrite : kAccessRead;
  }
  for (int round = 0; round < kRounds; ++round) {
    const bool via_engine = round % 4 == 3;  // mostly the handle; sometimes the engine batch
    if (via_engine)
      engine.translate_batch(reqs.data(), out.data(), kPages);
    else
      as.translate_batch(iovas.data(), (round & 1) ? kAccessWrite : kAccessRead, out.data(), kPages);
    for (uint64_t p = 0; p < kPages; ++p) {
      const Result &r = out[p];
      if (!r.ok) {
        fail("translation faulted", d, p);
      } else if (r.t.out != hpa_of(d, p) + (iovas[p] & 0xfff)) {
        fail("wrong host address", d, p);
      } else if (r.t.page_shift != 12) {
        fail("wrong page size", d, p);
      }
    }
  }
}

}  // namespace

int main() {
  // Drain on: an invalidation's wait also waits for translations that began before it, which
  // is what an emulator needs when it frees or reuses a page right after the wait.
  EngineConfig cfg;
  cfg.drain = true;
  auto m = std::make_unique<Machine>(cfg);
  if (!m->build()) {
    std::fprintf(stderr, "cpp_multithread: cannot build the machine\n");
    return 1;
  }
  Engine &engine = m->engine;

  std::atomic<bool> start{false};
  std::vector<std::thread> threads;
  for (int d = 0; d < kDevices; ++d)
    threads.emplace_back(device_thread, std::ref(engine), d, std::ref(start));
  start.store(true, std::memory_order_release);

  // Concurrent invalidations of every kind of scope while the devices translate. Nothing was
  // changed in memory, so they only cost refills: results must not change.
  const uint64_t hits_before = engine.stats().iotlb.hits;
  for (int i = 0; i < 200; ++i) {
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging | ((i % 10 == 0) ? invq::kCachePasid : 0);
    op.scope = (i % 3 == 0) ? invq::Scope::kDomain : invq::Scope::kRange;
    op.did = kDid;
    op.pasid = pasid_of(i % kDevices);
    op.addr = iova(uint64_t(i) * 7 % kPages);
    op.npages = 4;
    engine.invalidate(op);
    engine.invalidate_wait();
  }
  for (std::thread &t : threads) t.join();
  const uint64_t hits = engine.stats().iotlb.hits - hits_before;

  // The guest unmaps one page per device and invalidates it (IOTLB + paging-structure caches,
  // page-selective in (DID, PASID)); afterwards each device faults on exactly that page.
  for (int d = 0; d < kDevices; ++d) {
    const uint64_t p = 100 + uint64_t(d);
    if (!m->guest_unmap(d, p)) fail("guest unmap", d, p);
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging;
    op.scope = invq::Scope::kRange;
    op.did = kDid;
    op.pasid = pasid_of(d);
    op.addr = iova(p);
    op.npages = 1;
    op.leaf = true;
    engine.invalidate(op);
  }
  engine.invalidate_wait();
  std::vector<std::thread> checkers;
  for (int d = 0; d < kDevices; ++d)
    checkers.emplace_back([&engine, d] {
      AddressSpace as = engine.open(source_id(d), true, pasid_of(d));
      for (uint64_t p = 98; p < 106; ++p) {
        const Result r = as.translate(iova(p), kAccessRead);
        const bool unmapped = p == 100 + uint64_t(d);
        if (unmapped && (r.ok || r.fault.reason != FaultReason::kFirstLevelEntryNotPresent))
          fail("unmapped page did not fault with 0x71", d, p);
        if (!unmapped && (!r.ok || r.t.out != hpa_of(d, p)))
          fail("neighbour of the unmapped page changed", d, p);
      }
    });
  for (std::thread &t : checkers) t.join();
  FaultRecord records[16];
  const size_t logged = engine.fault_log().drain(records, 16);
  if (logged != size_t(kDevices)) fail("fault log should hold one fault per device", -1, logged);

  std::printf("cpp_multithread: %d threads x %d rounds x %" PRIu64
              " pages translated, %" PRIu64 " IOTLB hits, %zu faults logged\n",
              kDevices, kRounds, kPages, hits, logged);
  if (g_failures.load() != 0) {
    std::fprintf(stderr, "cpp_multithread: %d check(s) failed\n", g_failures.load());
    return 1;
  }
  std::printf("cpp_multithread: all checks passed\n");
  return 0;
}
