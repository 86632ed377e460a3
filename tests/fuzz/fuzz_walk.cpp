// Fuzz target (b): page walks over arbitrary machine memory.
//
// Mode "chaos" (first byte even): the input writes arbitrary words anywhere in a small RAM
// (root table, context entries, PASID structures, page tables alike) and points the root-table
// register anywhere; translations must answer with a result or a fault, never crash, hang or
// hit UB (invariant 4).
//
// Mode "isolation" (first byte odd): the host side is engine-built and out of the input's
// reach -- root/context/PASID structures and a second-level domain whose tables live in host
// memory, mapping GPA [0, 1 MiB) in 4K pages (some read-only, some absent) and GPA [4, 6) MiB
// as one 2M page. The input controls only guest memory (the domain's backing pages, where the
// guest's first-level tables live), the nested PASID entry's first-level root GPA, paging mode
// and flags. Invariant 3 is asserted: every translated HPA lies in the domain's backing, and
// host memory outside it (structures, second-level tables) is never written but for SL A/D, so A/D
// updates never escaped either.
#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz_common.h"
#include "nestor/vtd/structures_writer.h"
#include "nestor/walkers/builder.h"

using namespace nestor;

namespace {

constexpr uint64_t kRam = 6ull << 20;
constexpr uint64_t kHostTables = 1ull << 20;  // [1, 2) MiB: structures + second-level tables
constexpr uint64_t kGuestA = 2ull << 20;      // GPA [0, 1) MiB  -> HPA [2, 3) MiB
constexpr uint64_t kGuestB = 4ull << 20;      // GPA [4, 6) MiB  -> HPA [4, 6) MiB (2M page)
constexpr uint16_t kSid = 0x0308;
constexpr uint16_t kDid = 9;

Request fuzz_request(FuzzedDataProvider &in, bool isolation) {
  Request r;
  if (isolation) {
    r.source_id = kSid;
    r.has_pasid = true;
    r.pasid = in.ConsumeIntegralInRange<uint32_t>(1, 2);
    // Mostly low IOVAs so walks reach guest tables; sometimes anything.
    r.iova = in.ConsumeBool() ? in.ConsumeIntegral<uint32_t>() : in.ConsumeIntegral<uint64_t>();
  } else {
    r.source_id = in.ConsumeIntegral<uint16_t>();
    r.has_pasid = in.ConsumeBool();
    r.pasid = in.ConsumeIntegral<uint32_t>() & 0xFFFFF;
    r.iova = in.ConsumeIntegral<uint64_t>();
  }
  r.access = in.ConsumeIntegralInRange<uint8_t>(0, 7);
  r.privileged = in.ConsumeBool();
  return r;
}

bool in_domain(uint64_t hpa) {
  return (hpa >= kGuestA && hpa < kGuestA + (1u << 20)) ||
         (hpa >= kGuestB && hpa < kGuestB + (2u << 20));
}

void chaos(FuzzedDataProvider &in) {
  unsigned key = 0;
  const EngineConfig cfg = fuzz::small_config(in, &key);
  // Chaos only ever writes and points into the first MiB of the shared 6 MiB layout.
  Engine &e = fuzz::pooled_engine(cfg, key, kRam);
  MachineMemory &mem = e.memory();
  e.set_root_table(in.ConsumeIntegral<uint32_t>() & 0xFF000);
  while (in.remaining_bytes() > 0) {
    if (in.ConsumeIntegralInRange<int>(0, 3) != 0) {
      const uint64_t pa = in.ConsumeIntegral<uint32_t>() & 0xFFFF8;
      uint64_t v = in.ConsumeIntegral<uint64_t>();
      // Bias table pointers into RAM so walks go deep: keep low bits, fold the address.
      if (in.ConsumeBool()) v = (v & 0xFFF0'0000'0000'0FFFull) | (v & 0xFF000);
      mem.write64(pa, v);
    } else {
      (void)e.translate(fuzz_request(in, false));
      if (in.ConsumeBool()) {
        invq::InvalidationOp op;
        op.caches = invq::kAllCaches;
        e.invalidate(op);
        e.invalidate_wait();
      }
    }
  }
}

void isolation(FuzzedDataProvider &in) {
  unsigned key = 0;
  EngineConfig cfg = fuzz::small_config(in, &key);
  cfg.second_level_2m = true;
  Engine &e = fuzz::pooled_engine(cfg, key | 4 | 0x100, kRam);
  MachineMemory &mem = e.memory();
  PageAllocator pages(mem, kHostTables, 1u << 20);
  HostTableSpace host(mem, pages);
  StructuresWriter structures(mem, pages);
  FUZZ_CHECK(e.set_root_table(structures.root_table()) == 0, "root");
  sl::Config slc;
  slc.root = pages.alloc();
  slc.levels = 4;
  build::SecondLevelBuilder<HostTableSpace> sl(host, slc.root, 4);
  const uint8_t holes = in.ConsumeIntegral<uint8_t>();
  // The 256 leaves share one level-1 table: the builder maps the first present one (creating
  // the path), the rest go in with one write. The same image as 256 map() calls, which were a
  // sixth of an input's time.
  std::array<uint64_t, 256> leaves{};
  uint64_t first = ~uint64_t{0};
  for (uint64_t page = 0; page < leaves.size(); ++page) {
    if (page % 17 == holes % 17 && holes & 1) continue;  // a few GPAs unmapped
    const uint8_t perms = page % 13 == (holes >> 1) % 13 ? kAccessRead : 7;
    leaves[page] = (kGuestA + (page << 12)) | build::sl_leaf_bits(perms);
    if (first == ~uint64_t{0}) first = page;
  }
  FUZZ_CHECK(sl.map(first << 12, kGuestA + (first << 12), 12, leaves[first] & ~sl::kAddrMask52) ==
                 build::Status::kOk,
             "sl map");
  const uint64_t l1 = sl.entry_address(0, 1);
  FUZZ_CHECK(l1 != 0 && mem.write(l1, leaves.data(), sizeof leaves) == 0, "sl leaves");
  FUZZ_CHECK(sl.map(4u << 20, kGuestB, 21, build::sl_leaf_bits(7)) == build::Status::kOk, "sl 2M");
  // A one-page PASID directory (PDTS 0): PASIDs 1 and 2 need no more, and a default 128-page
  // one would be zeroed and compared on every input.
  FUZZ_CHECK(structures.attach(kSid, 0, true, 0) == 0, "attach");
  for (uint32_t pasid = 1; pasid <= 2; ++pasid) {
    vtd::PasidEntry pe;
    pe.present = true;
    pe.did = kDid;
    pe.aw = 2;
    pe.pgtt = vtd::Pgtt::kNested;
    pe.sl_root = slc.root;
    const uint8_t f = in.ConsumeIntegral<uint8_t>();
    pe.fl_levels = (f & 1) && cfg.first_level_5 ? 5 : 4;
    pe.sre = f & 2;
    pe.ere = f & 4;
    pe.wpe = f & 8;
    pe.eafe = f & 16;
    pe.slade = f & 32;  // second-level A/D: the engine writes host SL tables, not the guest
    // First-level root: a guest-physical address the guest chose (possibly unmapped).
    pe.fl_root = (in.ConsumeBool() ? in.ConsumeIntegral<uint32_t>() % (6u << 20)
                                   : in.ConsumeIntegral<uint64_t>() & ((uint64_t{1} << 48) - 1)) &
                 ~0xFFFull;
    FUZZ_CHECK(structures.set_pasid_entry(kSid, pasid, pe) == 0, "pasid entry");
  }
  // Host memory outside the guest's backing, snapshotted: nothing the guest controls may change
  // it. (Second-level A/D is host state by design; excluded when SLADE is on by comparing
  // entries with their A/D bits masked.)
  // Host memory is everything outside the guest's backing. From here on every write the
  // engine or the guest makes is seen by the (never failing) fail injector: a write outside the
  // backing must land in the host table pages, and there change second-level A/D bits only
  // (compared below). Cheaper than snapshotting all host memory twice per input, and exact.
  const uint64_t tables_end = kHostTables + pages.pages_in_use() * 4096;
  struct Fence {
    MachineMemory &mem;
    uint64_t tables_end;
    static bool check(void *ctx, uint64_t pa, bool is_write) {
      const Fence &f = *static_cast<const Fence *>(ctx);
      if (is_write && !in_domain(pa))
        FUZZ_CHECK(pa >= kHostTables && pa < f.tables_end, "write to host memory at 0x%llx",
                   (unsigned long long)pa);
      return false;
    }
    ~Fence() { mem.set_fail_injector(nullptr, nullptr); }  // the engine outlives this input
  } fence{mem, tables_end};
  mem.set_fail_injector(&Fence::check, &fence);
  // Straight from the RAM's host mapping: MachineMemory::read copies word by word.
  const size_t table_bytes = tables_end - kHostTables;
  const uint8_t *tables = mem.host_ptr(kHostTables, table_bytes);
  FUZZ_CHECK(tables != nullptr, "tables");
  const auto *table_words = reinterpret_cast<const uint64_t *>(tables);
  const std::vector<uint64_t> host_before(table_words, table_words + table_bytes / 8);

  while (in.remaining_bytes() > 0) {
    if (in.ConsumeIntegralInRange<int>(0, 2) != 0) {
      // Guest writes its own memory (first-level tables and data).
      const bool b = in.ConsumeBool();
      const uint64_t off = in.ConsumeIntegral<uint32_t>() % (b ? (2u << 20) : (1u << 20)) & ~7ull;
      uint64_t v = in.ConsumeIntegral<uint64_t>();
      if (in.ConsumeBool())
        v = (v & 0xFFF0'0000'0000'0FFFull) |
            (in.ConsumeIntegral<uint32_t>() % (6u << 20) & ~0xFFFull);
      mem.write64((b ? kGuestB : kGuestA) + off, v);
    } else {
      const Request r = fuzz_request(in, true);
      const Result res = e.translate(r);
      if (res.ok)
        FUZZ_CHECK(in_domain(res.t.out), "nested HPA 0x%llx outside the domain (iova 0x%llx)",
                   (unsigned long long)res.t.out, (unsigned long long)r.iova);
      if (in.ConsumeBool()) {  // the guest's invalidation after changing its tables
        invq::InvalidationOp op;
        op.caches = invq::kCacheIotlb | invq::kCachePaging | invq::kCachePasid;
        op.scope = invq::Scope::kPasid;
        op.did = kDid;
        op.pasid = r.pasid;
        e.invalidate(op);
        e.invalidate_wait();
      }
    }
  }
  // Usually nothing changed: one comparison, not one per word.
  if (std::memcmp(host_before.data(), tables, table_bytes) == 0) return;
  const std::vector<uint64_t> host_after(table_words, table_words + table_bytes / 8);
  for (size_t i = 0; i < host_before.size(); ++i) {
    if (host_before[i] == host_after[i]) continue;
    // Second-level leaf/non-leaf A/D (bits 8, 9) may be set by the engine when SLADE is on.
    FUZZ_CHECK((host_before[i] ^ host_after[i]) == ((host_before[i] ^ host_after[i]) & 0x300ull),
               "host memory at 0x%llx changed: 0x%llx -> 0x%llx",
               (unsigned long long)(kHostTables + i * 8), (unsigned long long)host_before[i],
               (unsigned long long)host_after[i]);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeIntegral<uint8_t>() & 1)
    isolation(in);
  else
    chaos(in);
  return 0;
}
