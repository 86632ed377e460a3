// Fuzz target (f): the caching engine against the uncached one, on one machine image.
//
// The uncached engine walks every structure on every request, so it needs no rule about what
// an invalidation removes: after software edits the image and issues the invalidation Linux
// issues for that kind of edit, then waits, the caching engine must answer every request
// exactly as the uncached one does (ok, output address, fault reason, fault address).
//
// Machine image (2 MiB, owned by the caching engine, lent to the uncached one as host RAM):
//   [4K, 64K)     root, context tables, PASID directories and tables (StructuresWriter)
//   [64K, 1M-8K)  second-level tables of the two host domains; then wait status, QI ring
//   [1M, 1.5M)    guest first-level tables (two trees; pointers are HPAs for first-level-only
//                 PASIDs and GPAs for nested ones: both domains start as GPA == HPA there)
//   [1.5M, 2M)    data pages
// Host domain d maps GPA [1M, 2M) in 4K pages. A DID names one set of tables, as the IOTLB's
// (DID, PASID) tags require of software (did() below): per device, second-level-only DIDs per
// domain, nested DIDs per (domain, first-level tree), first-level-only DIDs per tree, and one
// pass-through DID.
//
// Program: a sequence of records, each an opcode byte followed by its operands (bytes read
// front to back; a record cut short reads zeros):
//   0 FL map     tree, va, data page, flags   guest first-level leaf (4K) written or replaced
//   1 FL unmap   tree, va
//   2 FL raw     tree, table#, slot, 8 bytes  any first-level entry, leaf or not
//   3 SL map     domain, gpa page, hpa page, perms
//   4 SL unmap   domain, gpa page
//   5 PASID      device, pasid, kind, flags   rewrite (or clear) a PASID-table entry
//   6 context    device, flags                rewrite (or clear) a context entry
//   7.. translate device, pasid?, va, access, privileged   compared on both engines
// Each edit is followed by its invalidation, through the typed calls or the QI (the flags
// byte of the edit chooses), and a wait. See invalidate_* below for what Linux issues.
#include <array>
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz_common.h"
#include "nestor/invalidation.h"
#include "nestor/vtd/descriptor.h"
#include "nestor/vtd/structures_writer.h"
#include "nestor/walkers/builder.h"

using namespace nestor;

namespace {

constexpr uint64_t kRam = 2ull << 20;
constexpr uint64_t kStructs = 4096, kStructsSize = (64ull << 10) - 4096;  // PA 0 means "none"
constexpr uint64_t kSlTables = 64ull << 10, kSlTablesSize = (1ull << 20) - (64ull << 10) - 8192;
constexpr uint64_t kFlTables = 1ull << 20, kFlTablesSize = 512ull << 10;
constexpr uint64_t kData = kFlTables + kFlTablesSize;
constexpr uint64_t kGuest = 1ull << 20;  // GPA == HPA window the domains map
constexpr unsigned kGuestPages = 256;
constexpr uint64_t kStatus = kSlTables + kSlTablesSize;  // wait status word
constexpr uint64_t kQueue = kStatus + 4096;  // one 4K ring, 128 x 256 bit (0x6 needs 256)
constexpr uint16_t kSids[2] = {0x0100, 0x0208};
constexpr unsigned kPasids = 4;  // 0..3 per device; requests without PASID use RID_PASID 0

uint16_t did(int dev, vtd::Pgtt pgtt, int domain, int tree) {
  const uint16_t base = uint16_t(dev * 16);
  switch (pgtt) {
    case vtd::Pgtt::kSecondLevel:
      return base + 1 + domain;
    case vtd::Pgtt::kNested:
      return base + 3 + 2 * domain + tree;
    case vtd::Pgtt::kFirstLevel:
      return base + 7 + tree;
    default:
      return base + 9;
  }
}

// NESTOR_FUZZ_TRACE=1 prints each step of a program, to read a crash input as a story.
const bool g_trace = std::getenv("NESTOR_FUZZ_TRACE") != nullptr;
#define TRACE(...)                                  \
  do {                                              \
    if (g_trace) std::fprintf(stderr, __VA_ARGS__); \
  } while (0)

struct Reader {
  const uint8_t *p;
  size_t n;
  uint8_t u8() { return n ? (--n, *p++) : 0; }
  uint64_t u64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t(u8()) << (8 * i);
    return v;
  }
};

// The two engines, built once per process; reset() returns them to power-on between inputs.
struct Engines {
  std::unique_ptr<Engine> cached, uncached;
  Engines() {
    EngineConfig c = fuzz::small_caches();
    c.first_level_5 = false;
    // First-level A/D updates by both engines would race on the shared tables and differ
    // by who walked first; second-level A/D stays off through SLADE = 0 in every entry.
    c.first_level_ad = false;
    cached = std::make_unique<Engine>(c);
    c.caching = false;
    uncached = std::make_unique<Engine>(c);
    FUZZ_CHECK(cached->memory().add_ram(0, kRam) == 0, "ram");
    uint8_t *host = cached->memory().host_ptr(0, kRam);
    FUZZ_CHECK(uncached->memory().add_host_ram(0, kRam, host) == 0, "shared ram");
  }
};

// Page tables addressed by HPA, pages from a bump allocator (a PageAllocator per input).
struct Program {
  Engine &c, &u;
  MachineMemory &mem;
  PageAllocator struct_pages{mem, kStructs, kStructsSize};
  PageAllocator sl_pages{mem, kSlTables, kSlTablesSize};
  PageAllocator fl_pages{mem, kFlTables, kFlTablesSize};
  HostTableSpace sl_space{mem, sl_pages}, fl_space{mem, fl_pages};
  StructuresWriter structures{mem, struct_pages};
  std::array<uint64_t, 2> sl_root{}, fl_root{};
  std::vector<uint64_t> fl_tables;  // every first-level table page handed out, for raw edits
  std::array<std::array<vtd::PasidEntry, kPasids>, 2> pasid{};  // what software last wrote
  std::array<bool, 2> rid_priv{};
  uint64_t qi_tail = 0;
  uint32_t wait_seq = 0;

  Program(Engine &cached, Engine &uncached) : c(cached), u(uncached), mem(cached.memory()) {}

  void setup() {
    for (int d = 0; d < 2; ++d) {
      sl_root[d] = sl_pages.alloc();
      build::SecondLevelBuilder<HostTableSpace> sl(sl_space, sl_root[d], 4);
      // The builder makes the path for the first page; the window's 256 leaves share its
      // leaf table, written in one go: the same bytes as 256 map() calls, each of which walks
      // from the root, which was a fifth of an input's time.
      FUZZ_CHECK(sl.map(kGuest, kGuest, 12, build::sl_leaf_bits(7)) == build::Status::kOk, "sl");
      const uint64_t first = sl.entry_address(kGuest, 1);
      FUZZ_CHECK(first && (first & 4095) / 8 + kGuestPages <= 512, "one leaf table");
      std::array<uint64_t, kGuestPages> leaves;
      for (unsigned p = 0; p < kGuestPages; ++p)
        leaves[p] = (kGuest + p * 4096ull) | build::sl_leaf_bits(7);
      FUZZ_CHECK(mem.write(first, leaves.data(), sizeof leaves) == 0, "sl leaves");
      fl_root[d] = fl_pages.alloc();
      fl_tables.push_back(fl_root[d]);
    }
    for (int dev = 0; dev < 2; ++dev)
      FUZZ_CHECK(structures.attach(kSids[dev], 0, true, 0) == 0, "attach");
    FUZZ_CHECK(c.set_root_table(structures.root_table()) == 0 &&
                   u.set_root_table(structures.root_table()) == 0,
               "root");
    for (Engine *e : {&c, &u})
      FUZZ_CHECK(e->invalidation().qi_configure(kQueue, 128, 256) == 0, "qi");
  }

  // --- invalidation delivery: typed ops, or descriptors in the ring + a tail write ---------
  struct Batch {
    std::vector<invq::InvalidationOp> ops;
    std::vector<invq::RawDescriptor> descriptors;
  };
  static invq::RawDescriptor raw(uint64_t lo, uint64_t hi) {
    invq::RawDescriptor r{};
    r.qw[0] = lo;
    r.qw[1] = hi;
    return r;
  }
  void context_device(Batch &b, uint16_t sid) {
    invq::InvalidationOp op;
    op.caches = invq::kCacheContext;
    op.scope = invq::Scope::kDevice;
    op.source_id = sid;
    b.ops.push_back(op);
    b.descriptors.push_back(raw(0x1 | 3u << 4 | uint64_t(sid) << 32, 0));
  }
  void pasid_cache(Batch &b, uint16_t did, const uint32_t *pasid) {  // null: domain-selective
    invq::InvalidationOp op;
    op.caches = invq::kCachePasid;
    op.scope = pasid ? invq::Scope::kPasid : invq::Scope::kDomain;
    op.did = did;
    if (pasid) op.pasid = *pasid;
    b.ops.push_back(op);
    b.descriptors.push_back(
        raw(0x7 | (pasid ? 1u : 0u) << 4 | uint64_t(did) << 16 | uint64_t(pasid ? *pasid : 0) << 32,
            0));
  }
  void iotlb_domain(Batch &b, uint16_t did) {  // type 0x2, domain-selective
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging;
    op.scope = invq::Scope::kDomain;
    op.did = did;
    b.ops.push_back(op);
    b.descriptors.push_back(raw(0x2 | 2u << 4 | uint64_t(did) << 16, 0));
  }
  void iotlb_gpa_page(Batch &b, uint16_t did, uint64_t gpa, bool ih) {  // type 0x2, page-selective
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging;
    op.scope = invq::Scope::kRange;
    op.did = did;
    op.addr = gpa;
    op.npages = 1;
    op.addr_is_gpa = true;
    op.leaf = ih;
    b.ops.push_back(op);
    b.descriptors.push_back(raw(0x2 | 3u << 4 | uint64_t(did) << 16, gpa | uint64_t(ih) << 6));
  }
  void piotlb(Batch &b, uint16_t did, uint32_t pasid,
              const uint64_t *va) {  // null: PASID-selective
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging;
    op.scope = va ? invq::Scope::kRange : invq::Scope::kPasid;
    op.did = did;
    op.pasid = pasid;
    if (va) {
      op.addr = *va;
      op.npages = 1;
    }
    b.ops.push_back(op);
    b.descriptors.push_back(
        raw(0x6 | (va ? 3u : 2u) << 4 | uint64_t(did) << 16 | uint64_t(pasid) << 32, va ? *va : 0));
  }

  void deliver(const Batch &b, bool through_qi) {
    for (const invq::InvalidationOp &op : b.ops)
      TRACE("    inv caches %#x scope %d did %u pasid %u sid %#x addr %#llx%s%s\n", op.caches,
            int(op.scope), op.did, op.pasid, op.source_id, (unsigned long long)op.addr,
            op.addr_is_gpa ? " gpa" : "", op.leaf ? " ih" : "");
    TRACE("    wait (%s)\n", through_qi ? "QI" : "typed");
    if (!through_qi) {
      for (Engine *e : {&c, &u}) {
        for (const invq::InvalidationOp &op : b.ops) e->invalidation().submit(op);
        e->invalidation().wait();
      }
      return;
    }
    std::vector<invq::RawDescriptor> ring = b.descriptors;
    ++wait_seq;
    ring.push_back(raw(0x5 | 1u << 5 | uint64_t(wait_seq) << 32, kStatus));  // wait, status write
    for (const invq::RawDescriptor &d : ring) {
      // Our encodings must decode to the ops the typed path submits; catch a slip here.
      FUZZ_CHECK(invq::decode_descriptor(d, invq::DescriptorWidth::k256, {}).ok(),
                 "encoding 0x%llx", (unsigned long long)d.qw[0]);
      FUZZ_CHECK(mem.write(kQueue + qi_tail * 32, d.qw.data(), 32) == 0, "ring");
      qi_tail = (qi_tail + 1) % 128;
    }
    for (Engine *e : {&c, &u}) FUZZ_CHECK(e->invalidation().qi_write_tail(qi_tail) == 0, "tail");
    uint64_t status = 0;
    FUZZ_CHECK(mem.read64(kStatus, &status) && uint32_t(status) == wait_seq, "wait status");
  }

  // Linux, guest first-level change (drivers/iommu/intel/cache.c cache_tag_flush_range ->
  // cache_tag_flush_iotlb with domain->use_first_level): a PASID-based IOTLB invalidation
  // (type 0x6) per (DID, PASID) the first-level table is attached to, page-selective for the
  // range or PASID-selective; in a nested setup the guest's descriptor reaches the host as
  // the same P_IOTLB with the nested domain's DID (iommufd cache_invalidate_user).
  void invalidate_fl(int tree, const uint64_t *va, bool qi) {
    Batch b;
    for (int dev = 0; dev < 2; ++dev)
      for (uint32_t p = 0; p < kPasids; ++p) {
        const vtd::PasidEntry &pe = pasid[dev][p];
        if (pe.present && (pe.pgtt == vtd::Pgtt::kFirstLevel || pe.pgtt == vtd::Pgtt::kNested) &&
            pe.fl_root == fl_root[tree])
          piotlb(b, pe.did, p, va);
      }
    deliver(b, qi);
  }

  // Linux, host second-level change (cache.c cache_tag_flush_range over the parent domain's
  // tags): CACHE_TAG_IOTLB (its own DID) and CACHE_TAG_NESTING_IOTLB (the DID of every nested
  // domain on it) each get a type 0x2 IOTLB invalidation, page-selective by GPA with the IH
  // hint, or domain-selective when PSI does not fit (cap_pgsel_inv, the mask, pages == -1).
  void invalidate_sl(int domain, uint64_t gpa, bool qi, bool dsi, bool ih) {
    Batch b;
    for (int dev = 0; dev < 2; ++dev)
      for (uint16_t id :
           {did(dev, vtd::Pgtt::kSecondLevel, domain, 0), did(dev, vtd::Pgtt::kNested, domain, 0),
            did(dev, vtd::Pgtt::kNested, domain, 1)}) {
        if (dsi)
          iotlb_domain(b, id);
        else
          iotlb_gpa_page(b, id, gpa, ih);
      }
    deliver(b, qi);
  }

  // Linux, PASID-table entry change (drivers/iommu/intel/pasid.c intel_pasid_tear_down_entry
  // and the replace paths): PASID-selective PASID-cache invalidation for the old DID, then a
  // PASID-selective P_IOTLB if the old entry was first-level or pass-through, else a
  // domain-selective type 0x2. The new entry's DID gets the same in caching mode (CM=1, what
  // an emulated IOMMU reports: pasid_flush_caches / the setup paths flush on CM).
  void invalidate_pasid_entry(const vtd::PasidEntry &old, const vtd::PasidEntry &now, uint32_t p,
                              bool qi) {
    Batch b;
    for (const vtd::PasidEntry *pe : {&old, &now}) {
      pasid_cache(b, pe->did, &p);
      if (pe->pgtt == vtd::Pgtt::kFirstLevel || pe->pgtt == vtd::Pgtt::kPassThrough)
        piotlb(b, pe->did, p, nullptr);
      else
        iotlb_domain(b, pe->did);
    }
    deliver(b, qi);
  }

  // Linux, context entry change (pasid.c intel_context_flush_present, VT-d 6.5.3.3): a
  // device-selective context-cache invalidation, then for every DID the device's PASID
  // entries use a domain-selective PASID-cache and a domain-selective IOTLB invalidation.
  void invalidate_context(int dev, bool qi) {
    Batch b;
    context_device(b, kSids[dev]);
    for (uint32_t p = 0; p < kPasids; ++p) {
      if (!pasid[dev][p].present) continue;
      pasid_cache(b, pasid[dev][p].did, nullptr);
      iotlb_domain(b, pasid[dev][p].did);
    }
    deliver(b, qi);
  }

  // 64 pages in each of four 1G regions, at the data pages' offset: the same IOVA is then a
  // mapped GPA for second-level-only and pass-through PASIDs, and a first-level VA elsewhere.
  static uint64_t va_of(uint8_t v) {
    return uint64_t(v >> 6) << 30 | (kData + uint64_t(v & 63) * 4096);
  }

  void fl_map(Reader &in) {
    const int tree = in.u8() & 1;
    const uint64_t va = va_of(in.u8());
    const uint64_t data = kData + (in.u8() % 128) * 4096ull;
    const uint8_t f = in.u8();
    build::FirstLevelBuilder<HostTableSpace> fl(fl_space, fl_root[tree], 4);
    const size_t before = fl_pages.pages_in_use();
    TRACE("FL map tree %d va %#llx -> %#llx flags %#x\n", tree, (unsigned long long)va,
          (unsigned long long)data, f);
    if (fl.map(va, data, 12, build::fl_leaf_bits(f & 1, f & 2, f & 4)) != build::Status::kOk)
      return;
    // The builder's new tables came from the bump allocator in ascending order.
    for (size_t i = before; i < fl_pages.pages_in_use(); ++i)
      fl_tables.push_back(kFlTables + i * 4096);
    invalidate_fl(tree, f & 8 ? nullptr : &va, f & 16);
  }

  void fl_unmap(Reader &in) {
    const int tree = in.u8() & 1;
    const uint64_t va = va_of(in.u8());
    const uint8_t f = in.u8();
    build::FirstLevelBuilder<HostTableSpace> fl(fl_space, fl_root[tree], 4);
    TRACE("FL unmap tree %d va %#llx\n", tree, (unsigned long long)va);
    if (fl.unmap(va, 12) != build::Status::kOk) return;
    invalidate_fl(tree, f & 8 ? nullptr : &va, f & 16);
  }

  void fl_raw(Reader &in) {
    const int tree = in.u8() & 1;
    const uint64_t table = fl_tables[in.u8() % fl_tables.size()];
    const unsigned slot = in.u8() & 511;
    uint64_t v = in.u64();
    // Mostly pointers into the guest window, so raw edits redirect walks instead of faulting.
    if (!(v & (1ull << 62)))
      v = (v & 0x8000'0000'0000'0FFFull) | (kGuest + (v >> 12) % kGuestPages * 4096);
    TRACE("FL raw entry %#llx = %#llx\n", (unsigned long long)(table + slot * 8),
          (unsigned long long)v);
    FUZZ_CHECK(mem.write64(table + slot * 8, v), "fl raw");
    // Which PASIDs see this table is not tracked; the guest flushes every PASID of both trees.
    invalidate_fl(tree, nullptr, v & 16);
    invalidate_fl(tree ^ 1, nullptr, v & 16);
  }

  void sl_map(Reader &in, bool unmap) {
    const int d = in.u8() & 1;
    const uint64_t gpa = kGuest + (in.u8() % kGuestPages) * 4096ull;
    const uint64_t hpa = unmap ? 0 : kGuest + (in.u8() % kGuestPages) * 4096ull;
    const uint8_t f = in.u8();
    build::SecondLevelBuilder<HostTableSpace> sl(sl_space, sl_root[d], 4);
    const build::Status s =
        unmap ? sl.unmap(gpa, 12) : sl.map(gpa, hpa, 12, build::sl_leaf_bits(f & 7 ? f & 7 : 1));
    TRACE("SL %s domain %d gpa %#llx -> %#llx perms %u: %s\n", unmap ? "unmap" : "map", d,
          (unsigned long long)gpa, (unsigned long long)hpa, f & 7, build::status_name(s));
    if (s != build::Status::kOk) return;
    invalidate_sl(d, gpa, f & 16, f & 32, f & 64);
  }

  void set_pasid(Reader &in) {
    const int dev = in.u8() & 1;
    const uint32_t p = in.u8() % kPasids;
    const uint8_t kind = in.u8();
    const uint8_t f = in.u8();
    vtd::PasidEntry pe;
    const int d = (kind >> 3) & 1, tree = (kind >> 4) & 1;
    static constexpr vtd::Pgtt kKinds[8] = {vtd::Pgtt::kSecondLevel, vtd::Pgtt::kFirstLevel,
                                            vtd::Pgtt::kSecondLevel, vtd::Pgtt::kSecondLevel,
                                            vtd::Pgtt::kNested,      vtd::Pgtt::kNested,
                                            vtd::Pgtt::kNested,      vtd::Pgtt::kPassThrough};
    pe.present = (kind & 7) != 0;  // kind 0: not present
    pe.pgtt = kKinds[kind & 7];
    pe.did = did(dev, pe.pgtt, d, tree);
    pe.aw = 2;
    pe.sl_root = sl_root[d];
    pe.fl_root = fl_root[tree];
    pe.fl_levels = 4;
    pe.sre = f & 1;
    pe.wpe = f & 2;
    pe.ere = f & 4;
    pe.eafe = f & 8;
    const vtd::PasidEntry old = pasid[dev][p];
    TRACE(
        "PASID dev %d pasid %u present %d pgtt %d did %u sl %#llx fl %#llx sre %d wpe %d ere %d "
        "eafe %d\n",
        dev, p, pe.present, int(pe.pgtt), pe.did, (unsigned long long)pe.sl_root,
        (unsigned long long)pe.fl_root, pe.sre, pe.wpe, pe.ere, pe.eafe);
    if (!old.present && !pe.present) return;
    if (pe.present)
      FUZZ_CHECK(structures.set_pasid_entry(kSids[dev], p, pe) == 0, "pasid entry");
    else
      FUZZ_CHECK(structures.clear_pasid_entry(kSids[dev], p) == 0, "clear pasid");
    pasid[dev][p] = pe;
    invalidate_pasid_entry(old.present ? old : pe, pe.present ? pe : old, p, f & 16);
  }

  void set_context(Reader &in) {
    const int dev = in.u8() & 1;
    const uint8_t f = in.u8();
    TRACE("context dev %d %s rid_pasid %d rid_priv %d\n", dev, f & 1 ? "detach" : "attach",
          (f >> 2) & 3, (f & 2) != 0);
    if (f & 1) {
      FUZZ_CHECK(structures.detach(kSids[dev]) == 0, "detach");
    } else {
      rid_priv[dev] = f & 2;
      FUZZ_CHECK(structures.attach(kSids[dev], (f >> 2) & 3, true, 0, rid_priv[dev]) == 0,
                 "attach");
    }
    invalidate_context(dev, f & 16);
  }

  void translate(Reader &in) {
    const uint8_t a = in.u8();
    Request r;
    r.source_id = kSids[a & 1];
    r.has_pasid = !(a & 2);
    r.pasid = (a >> 2) % kPasids;
    r.iova = va_of(in.u8()) | (a & 0x80 ? 0x123 : 0);
    const uint8_t acc = in.u8();
    r.access = acc & 7 ? acc & 7 : kAccessRead;
    r.privileged = acc & 8;
    const Result rc = c.translate(r), ru = u.translate(r);
    TRACE("translate sid %#x pasid %s%u iova %#llx access %u%s: %s %#llx (%#x)\n", r.source_id,
          r.has_pasid ? "" : "none/", r.pasid, (unsigned long long)r.iova, r.access,
          r.privileged ? " priv" : "", ru.ok ? "ok" : "fault",
          (unsigned long long)(ru.ok ? ru.t.out : ru.fault.address), unsigned(ru.fault.reason));
    const bool same = rc.ok == ru.ok && (rc.ok ? rc.t.out == ru.t.out
                                               : rc.fault.reason == ru.fault.reason &&
                                                     rc.fault.address == ru.fault.address);
    FUZZ_CHECK(same,
               "sid %#x pasid %s%u iova %#llx access %u%s: cached %s %#llx (reason %#x), "
               "uncached %s %#llx (reason %#x)",
               r.source_id, r.has_pasid ? "" : "none/", r.pasid, (unsigned long long)r.iova,
               r.access, r.privileged ? " priv" : "", rc.ok ? "ok" : "fault",
               (unsigned long long)(rc.ok ? rc.t.out : rc.fault.address), unsigned(rc.fault.reason),
               ru.ok ? "ok" : "fault", (unsigned long long)(ru.ok ? ru.t.out : ru.fault.address),
               unsigned(ru.fault.reason));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static Engines engines;
  engines.cached->reset();
  engines.uncached->reset();
  // The top bit of the first byte (not consumed: the input reads as before) turns the hooks on.
  fuzz::CheckedEvents events(*engines.cached, size > 0 && (data[0] & 0x80));
  Program prog(*engines.cached, *engines.uncached);
  prog.setup();
  Reader in{data, size};
  for (int steps = 0; in.n > 0 && steps < 256; ++steps) {
    switch (in.u8() % 10) {
      case 0:
        prog.fl_map(in);
        break;
      case 1:
        prog.fl_unmap(in);
        break;
      case 2:
        prog.fl_raw(in);
        break;
      case 3:
        prog.sl_map(in, false);
        break;
      case 4:
        prog.sl_map(in, true);
        break;
      case 5:
        prog.set_pasid(in);
        break;
      case 6:
        prog.set_context(in);
        break;
      default:
        prog.translate(in);
        break;
    }
  }
  return 0;
}
