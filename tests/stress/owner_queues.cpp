// nestor-stress, owner-queue world (--owner-queues N): N VMs built as a hypervisor builds them
// through the bind layer (owner, nesting domain over the VM's RAM, an attached device, a
// system-wide PASID every guest calls PASID 1, the guest's own first-level table bound to it,
// a direct invalidation queue in the guest's memory). The guests invalidate their own tables
// through their own queues; the checker proves the same invariants as the host-built world:
//
//   1  no stale translation after a completed wait (here: the owner read its wait's status
//      dword back from its own memory),
//   3  a VM's translation never leaves that VM's RAM,
//   and the permission contract (unmapped -> not-present fault, read-only -> no write).
//
// Addresses (per VM; guest-physical, the VM's RAM is [0, kVmRam) -> HPA hpa_base + GPA):
//   queue        GPA kQueueGpa, 128 x 256-bit descriptors (one page)
//   status       GPA kStatusGpa (the wait descriptors' status dword)
//   data area    GPA [kDataGpa, + pages * kSlots pages): version v of IOVA page p maps to the
//                data page p * kSlots + v % kSlots, so the output address names the page and
//                the low kVersionBits of the version; the history ring supplies the rest.
//   FL tables    GPA [kGuestTableGpa, + kGuestTables)
//
// Protocol (as stress.cpp's, per page, single writer per page):
//   guest mutator:     hist[v] = state; write leaf (through guest memory); written = v
//   owner invalidator: S = written for every page its descriptors cover (the oracle below);
//                      write the descriptors and a wait with status into its ring; write the
//                      tail; read the status back; completed = max(completed, S)
//   translator:        c = completed; translate; check version >= c
#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "nestor/bind.h"
#include "nestor/engine.h"
#include "nestor/invalidation.h"
#include "nestor/machine/machine.h"
#include "stress_internal.h"

namespace nestor::stress {
namespace {

constexpr uint64_t kTableBase = 1ull << 30;  // the bind layer's structures and host tables
constexpr uint64_t kTableSize = 64ull << 20;
constexpr uint64_t kVmHpaBase = 4ull << 30;  // VM i's RAM: [kVmHpaBase + i * kVmRam, + kVmRam)
constexpr uint64_t kVmRam = 64ull << 20;
constexpr uint64_t kQueueGpa = 0x20000;
constexpr uint64_t kStatusGpa = 0x30000;
constexpr uint64_t kDataGpa = 16ull << 20;  // up to 256 pages x kSlots x 4K = 16 MiB
constexpr uint64_t kGuestTableGpa = 56ull << 20;
constexpr uint64_t kGuestTables = 8ull << 20;
constexpr uint64_t kIova = 0x10'0000'0000ull;
constexpr uint32_t kGuestPasid = 1;  // every guest's name for its PASID
constexpr uint16_t kGuestDid = 1;    // the DID guests write (ignored by the layer, BIND.md)
constexpr uint64_t kQueueEntries = 128;
constexpr unsigned kVersionBits = 4;
constexpr uint64_t kSlots = uint64_t{1} << kVersionBits;
static_assert(kSlots > kMaxLead + 1, "a fresh translation's candidate versions must not alias");
constexpr unsigned kRingEntries = 64;
constexpr auto kStatusGrace = std::chrono::seconds(5);

uint64_t target_gpa(uint64_t p, uint64_t v) {
  return kDataGpa + (p * kSlots + v % kSlots) * 4096;
}

// VT-d descriptor encodings (VT-d 6.5.2; bit positions as in docs/INVQ.md), written here from
// the specification rather than taken from the engine's decoder.
struct Desc {
  uint64_t qw0 = 0, qw1 = 0;
};
Desc piotlb_page(uint32_t pasid, uint64_t addr, unsigned am, bool ih) {
  return {0x6 | (3u << 4) | uint64_t(kGuestDid) << 16 | uint64_t(pasid) << 32,
          addr | (ih ? 1u << 6 : 0) | am};
}
Desc piotlb_pasid(uint32_t pasid) {
  return {0x6 | (2u << 4) | uint64_t(kGuestDid) << 16 | uint64_t(pasid) << 32, 0};
}
Desc pasid_cache(unsigned g, uint32_t pasid) {  // G: 00b domain, 01b PASID, 11b global
  return {0x7 | uint64_t(g) << 4 | uint64_t(kGuestDid) << 16 | (g == 1 ? uint64_t(pasid) << 32 : 0),
          0};
}
Desc pasid_devtlb(uint16_t sid, uint32_t pasid, uint64_t addr) {  // one page, S=0
  return {0x8 | uint64_t(sid) << 16 | uint64_t(pasid) << 32, addr};
}
Desc iotlb_domain(uint16_t did) {  // 0x2 domain-selective: host-only in a direct queue
  return {0x2 | (2u << 4) | uint64_t(did) << 16, 0};
}
Desc wait_status(uint64_t gpa, uint32_t data) {
  return {0x5 | (1u << 5) | uint64_t(data) << 32, gpa};
}

// The oracle: which of the owner's pages a descriptor in its queue must remove from the IOTLB.
// From the VT-d specification (3.x, 6.5.2.4 and 6.5.2.5), not from the engine:
//  * PASID-based IOTLB invalidate (0x6), page-selective-within-PASID (G=11b): "first-stage and
//    nested IOTLB entries [...] tagged with the specified DID and PASID" whose address lies in
//    the 2^AM-page range, the address aligned down to 2^AM pages (ADDR's low AM bits ignored);
//  * 0x6 PASID-selective (G=10b): every non-global first-stage/nested entry of (DID, PASID);
//    the guests' leaves never set the global bit;
//  * PASID-cache invalidate (0x7), any granularity: PASID-cache entries only. The IOTLB and
//    paging-structure caches are left to a following 0x6 (VT-d 6.5.3.3's order: PASID cache,
//    then PASID-based IOTLB, then device TLB), so no leaf counts as invalidated by it;
//  * PASID-based device-TLB invalidate (0x8): the device's ATC; translations here are not
//    served from a device TLB, so no leaf counts either.
// docs/BIND.md adds the owner-queue rule: the descriptor's DID is the guest's own and names
// "this owner's bindings of the PASID"; domain/global scope means all the owner's bindings;
// the guest PASID is the owner's name for its host PASID. Each owner here has one binding,
// named kGuestPasid, so every 0x6 for kGuestPasid reaches that binding's (DID, PASID).
// Returns the covered page range [first, first + count) of `pages`.
struct Covered {
  uint64_t first = 0, count = 0;
};
Covered spec_covers(const Desc &d, uint64_t pages) {
  const unsigned type = unsigned(d.qw0 & 0xF);
  const unsigned g = unsigned(d.qw0 >> 4) & 3;
  const uint32_t pasid = uint32_t(d.qw0 >> 32) & 0xFFFFF;
  if (type != 0x6 || pasid != kGuestPasid) return {};
  if (g == 2) return {0, pages};
  if (g != 3) return {};
  const unsigned am = unsigned(d.qw1 & 0x3F);
  const uint64_t first = ((d.qw1 >> 12) >> am) << am;  // IOVA page number, aligned
  const uint64_t last = first + (uint64_t{1} << am);   // exclusive
  const uint64_t lo = std::max(first, kIova >> 12), hi = std::min(last, (kIova >> 12) + pages);
  if (lo >= hi) return {};
  return {lo - (kIova >> 12), hi - lo};
}

// --- operation log -----------------------------------------------------------------------
enum class LogKind : uint8_t { kTranslate, kMutate, kDescriptor, kTail, kWait, kHostile, kTyped };
struct LogEntry {
  uint64_t seq = 0;
  LogKind kind = LogKind::kTranslate;
  uint8_t owner = 0;
  uint16_t page = 0;
  uint64_t a = 0, b = 0, c = 0, d = 0;
};
struct Ring {
  std::array<LogEntry, kRingEntries> e{};
  uint64_t n = 0;
  void add(const LogEntry &x) { e[n++ % kRingEntries] = x; }
};

struct alignas(64) Counters {
  std::atomic<uint64_t> translations{0}, faults{0}, mutations{0}, waits{0}, unverifiable{0},
      hostile{0};
  std::array<std::atomic<uint64_t>, kOwnerGranCount> owner{};
  std::array<std::atomic<uint64_t>, kGranCount> typed{};
};

struct Owner {
  machine::Vm vm;
  uint16_t sid = 0;
  uint32_t pasid = 0;  // host PASID (the guest calls it kGuestPasid)
  uint32_t queue = 0;
  std::unique_ptr<machine::GuestFl> fl;
  uint64_t queue_hpa = 0, status_hpa = 0;  // where the domain maps kQueueGpa / kStatusGpa
  std::unique_ptr<Versioned[]> pages;
};

class OwnerRun {
 public:
  explicit OwnerRun(const Options &opt);
  Summary go();

 private:
  void translator(unsigned slot, unsigned index);
  void mutator(unsigned slot, unsigned owner, unsigned index);
  void owner_invalidator(unsigned slot, unsigned owner);
  bool hostile(unsigned slot, Owner &o, unsigned oi, Rng &rng, uint64_t &tail, uint32_t &seq);
  bool await_status(unsigned slot, const Owner &o, unsigned oi, uint32_t want);
  void host_invalidator(unsigned slot, unsigned index);

  static machine::RamLayout layout() {
    machine::RamLayout l;
    l.ram_size = kVmHpaBase + 8 * kVmRam;
    l.tables_base = kTableBase;
    l.tables_size = kTableSize;
    return l;
  }
  static EngineConfig engine_config(const Options &opt) {
    EngineConfig cfg;
    cfg.iotlb_entries = opt.iotlb_entries;
    cfg.psc_entries = opt.psc_entries;
    cfg.drain = opt.drain;
    cfg.coalesce = opt.coalesce;
    cfg.background_invalidation = opt.background;
    return cfg;
  }
  build::Status write_leaf(Owner &o, uint64_t p, uint64_t v, State st) {
    const uint64_t iova = kIova + p * 4096;
    if (st == kUnmapped) return o.fl->unmap(iova, 12);
    return o.fl->map(iova, target_gpa(p, v), 12,
                     build::fl_leaf_bits(st == kReadWrite, /*user=*/true, /*exec=*/false));
  }

  bool stopping() const { return stop_.load(std::memory_order_relaxed); }
  void request_stop() {
    {
      std::lock_guard lock(mu_);
      stop_.store(true);
    }
    cv_.notify_all();
  }
  void log(unsigned slot, LogEntry e) {
    e.seq = seq_.fetch_add(1, std::memory_order_relaxed);
    rings_[slot].add(e);
  }
  void violation(unsigned slot, const std::string &what);
  std::string dump_log() const;

  struct Credit {
    Versioned *vs;
    uint64_t version;
  };
  void credit(Owner &o, uint64_t first, uint64_t count, std::vector<Credit> &out) {
    for (uint64_t p = first; p < first + count; ++p) {
      Versioned &vs = o.pages[p];
      out.push_back({&vs, vs.written.load(std::memory_order_acquire)});
    }
  }
  static void publish(const std::vector<Credit> &credits) {
    for (const Credit &c : credits) fetch_max(c.vs->completed, c.version);
  }

  const Options &opt_;
  machine::Machine m_;
  BindLayer *layer_ = nullptr;
  Engine *engine_ = nullptr;
  std::vector<Owner> owners_;
  uint64_t pages_;
  std::vector<Ring> rings_;
  std::unique_ptr<Counters[]> counters_;
  std::atomic<uint64_t> seq_{0};
  std::atomic<uint64_t> translations_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> violations_{0};
  std::string first_violation_;  // guarded by mu_
};

OwnerRun::OwnerRun(const Options &opt)
    : opt_(opt), m_(layout(), engine_config(opt)), pages_(opt.pages) {
  BindConfig bc;
  bc.features = kNestingFeatAll | kNestingFeatDirectInvld;
  layer_ = &m_.place_bind_layer(bc);
  engine_ = &m_.engine();
  owners_.resize(opt.owner_queues);
  for (unsigned i = 0; i < opt.owner_queues; ++i) {
    Owner &o = owners_[i];
    machine::VmSpec spec;
    spec.hpa_base = kVmHpaBase + i * kVmRam;
    spec.ram = kVmRam;
    spec.tables_gpa = kGuestTableGpa;
    spec.tables_size = kGuestTables;
    o.vm = m_.add_vm(spec);
    o.sid = uint16_t((i + 1) << 8);
    machine::check(layer_->attach_device(o.sid, o.vm.did), "attach the VM's device");
    machine::check(layer_->alloc_pasid(o.vm.owner, 0, kGuestPasid, &o.pasid), "alloc PASID");
    o.fl = std::make_unique<machine::GuestFl>(*o.vm.space, o.vm.space->alloc_table(), 4);
    o.pages = std::make_unique<Versioned[]>(pages_);
    // Every leaf exists from the start, so the tables on the path are never created while
    // translators walk them and each page has one writer.
    for (uint64_t p = 0; p < pages_; ++p) {
      o.pages[p].hist[1].store(uint64_t{1} << 2 | kReadWrite);
      machine::check(write_leaf(o, p, 1, kReadWrite), "initial guest map");
    }
    BindRequest req;
    req.fl_root_gpa = o.fl->root();
    req.guest_pasid = kGuestPasid;
    machine::check(layer_->bind(o.vm.owner, o.sid, o.pasid, req), "bind the guest's table");
    machine::check(
        layer_->owner_queue_create(o.vm.owner, o.vm.did, kQueueGpa, kQueueEntries, 256, &o.queue),
        "create the owner's queue");
    if (!layer_->domain_resolve(o.vm.did, kQueueGpa, &o.queue_hpa) ||
        !layer_->domain_resolve(o.vm.did, kStatusGpa, &o.status_hpa))
      throw std::runtime_error("owner queue/status GPA not mapped");
  }
  const unsigned threads =
      opt.translators + opt.owner_queues * (opt.mutators + 1) + opt.invalidators;
  rings_.resize(threads);
  counters_ = std::make_unique<Counters[]>(threads);
}

void OwnerRun::violation(unsigned slot, const std::string &what) {
  violations_.fetch_add(1);
  {
    std::lock_guard lock(mu_);
    if (first_violation_.empty()) {
      std::ostringstream os;
      os << "VIOLATION (thread " << slot << "): " << what;
      first_violation_ = os.str();
    }
    stop_.store(true);
  }
  cv_.notify_all();
}

void OwnerRun::translator(unsigned slot, unsigned index) {
  Rng rng(opt_.seed * 1000 + 100 + index);
  Counters &ctr = counters_[slot];
  Engine &e = *engine_;
  std::vector<AddressSpace> handles;
  for (const Owner &o : owners_) handles.push_back(e.open(o.sid, true, o.pasid));
  uint64_t local = 0;
  while (!stopping()) {
    const unsigned oi = unsigned(rng.below(owners_.size()));
    Owner &o = owners_[oi];
    const uint64_t p = rng.below(pages_);
    const uint64_t off = rng.below(512) * 8;
    const uint8_t access = rng.below(4) == 0 ? kAccessWrite : kAccessRead;
    const bool use_handle = rng.next() & 1;
    Versioned &vs = o.pages[p];
    const uint64_t iova = kIova + p * 4096 + off;
    uint64_t c0, c1 = 0;
    Result r;
    {
      std::optional<EngineInvalidation::TranslationGuard> guard;
      if (opt_.drain) guard.emplace(e.invalidation());
      c0 = vs.completed.load(std::memory_order_acquire);
      r = use_handle ? handles[oi].translate(iova, access)
                     : e.translate(machine::request(o.sid, o.pasid, iova, access));
      if (opt_.drain) c1 = vs.completed.load(std::memory_order_acquire);
    }
    const uint64_t written_after = vs.written.load(std::memory_order_acquire);
    log(slot, {0, LogKind::kTranslate, uint8_t(oi), uint16_t(p),
               uint64_t(access) | uint64_t(use_handle) << 8 | off << 16, c0,
               r.ok ? r.t.out : (uint64_t{1} << 63) | uint64_t(r.fault.reason), c1});
    ctr.translations.fetch_add(1, std::memory_order_relaxed);

    std::ostringstream why;
    auto where = [&] {
      why << " [owner=" << oi << " page=" << p << " iova=0x" << std::hex << iova
          << " access=" << (access == kAccessWrite ? "W" : "R") << " handle=" << use_handle
          << std::dec << " completed_before=" << c0 << " completed_after=" << c1
          << " written_after=" << written_after << "]";
    };
    auto state_of = [&](uint64_t v, State *st) {
      const uint64_t h = vs.hist[v % kHist].load(std::memory_order_acquire);
      if ((h >> 2) != v) return false;
      *st = State(h & 3);
      return true;
    };
    if (r.ok) {
      const uint64_t out = r.t.out;
      // Invariant 3: whatever the guest wrote, the output is the VM's own RAM.
      if (!o.vm.owns_hpa(out)) {
        why << "HPA 0x" << std::hex << out << " outside the VM's RAM (invariant 3)";
        where();
        violation(slot, why.str());
        break;
      }
      const uint64_t gpa = out - o.vm.hpa_base;
      const uint64_t idx = (gpa - kDataGpa) >> 12;
      if (gpa < kDataGpa || idx / kSlots != p) {
        why << "GPA 0x" << std::hex << gpa << " is not one of this page's targets";
        where();
        violation(slot, why.str());
        break;
      }
      if ((out & 0xFFF) != off || r.t.page_shift != 12) {
        why << "offset/page size wrong: out=0x" << std::hex << out << " shift=" << std::dec
            << int(r.t.page_shift);
        where();
        violation(slot, why.str());
        break;
      }
      // The result's version v has v % kSlots == low and v <= written_after + 1 (a mutator
      // stores the leaf of v + 1 before it publishes written = v + 1). If fewer than kSlots
      // versions lie in [c0, written_after + 1], at most one of them has these bits, and if
      // none has them the result is older than c0.
      const uint64_t low = idx % kSlots, hi = written_after + 1;
      if (hi - c0 >= kSlots) {
        ctr.unverifiable.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      uint64_t v = 0;
      for (uint64_t x = c0; x <= hi; ++x)
        if (x % kSlots == low) v = x;
      if (v == 0) {
        why << "stale version (low bits " << low << ", below " << c0
            << ") returned after its invalidation's wait completed (invariant 1)";
        where();
        violation(slot, why.str());
        break;
      }
      if (opt_.drain && v < c1) {
        why << "stale version " << v
            << " returned by a translation in flight when the wait completed (drain)";
        where();
        violation(slot, why.str());
        break;
      }
      State st = kUnmapped;
      if (!state_of(v, &st)) {
        ctr.unverifiable.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const bool writable = (r.t.perms & kAccessWrite) != 0;
      if (st == kUnmapped || writable != (st == kReadWrite) ||
          ((access & kAccessWrite) && st != kReadWrite)) {
        // The address carries only the version's low bits: a stale result (invariant 1) from
        // an older version with the same low bits decodes as version v, so this is either a
        // permission bug or a stale translation; the message names both.
        why << "permissions of version " << v << " (state " << int(st) << ") but result perms "
            << int(r.t.perms) << ", or a stale result of an older version with the same low "
            << "bits returned after its invalidation's wait completed (invariant 1)";
        where();
        violation(slot, why.str());
        break;
      }
    } else {
      ctr.faults.fetch_add(1, std::memory_order_relaxed);
      const auto reason = r.fault.reason;
      const bool not_present = reason == FaultReason::kFirstLevelEntryNotPresent;
      const bool denied = reason == FaultReason::kWriteDenied && access == kAccessWrite;
      if (!not_present && !denied) {
        why << "unexpected fault 0x" << std::hex << int(reason) << " (" << fault_reason_name(reason)
            << ")";
        where();
        violation(slot, why.str());
        break;
      }
      // Some version in [c0, written_after + 1] must explain the fault (see stress.cpp).
      bool explained = false, unknown = written_after + 1 >= c0 + 64;
      for (uint64_t v = c0; v <= written_after + 1 && v < c0 + 64; ++v) {
        State st = kUnmapped;
        if (!state_of(v, &st)) {
          unknown |= v <= written_after;
          continue;
        }
        if ((not_present && st == kUnmapped) || (denied && st == kReadOnly)) explained = true;
      }
      if (!explained && unknown) {
        ctr.unverifiable.fetch_add(1, std::memory_order_relaxed);
      } else if (!explained) {
        why << (not_present ? "not-present" : "write-denied")
            << " fault although every version since the completed wait allows the access";
        where();
        violation(slot, why.str());
        break;
      }
    }
    if (opt_.max_translations && (++local & 255) == 0 &&
        translations_.fetch_add(256) + 256 >= opt_.max_translations)
      request_stop();
  }
}

void OwnerRun::mutator(unsigned slot, unsigned oi, unsigned index) {
  Rng rng(opt_.seed * 1000 + 200 + oi * 16 + index);
  Counters &ctr = counters_[slot];
  Owner &o = owners_[oi];
  const unsigned n = opt_.mutators;
  unsigned skipped = 0;
  while (!stopping()) {
    const uint64_t p = rng.below(pages_);
    if (p % n != index) continue;
    Versioned &vs = o.pages[p];
    const uint64_t v = vs.written.load(std::memory_order_relaxed);
    if (v - vs.completed.load(std::memory_order_acquire) >= kMaxLead) {
      if (++skipped % 64 == 0) std::this_thread::yield();  // let the invalidator catch up
      continue;
    }
    const State cur = State(vs.hist[v % kHist].load(std::memory_order_relaxed) & 3);
    State next;
    switch (rng.below(8)) {
      case 0:
      case 1:
      case 2:
        next = kReadWrite;  // remap
        break;
      case 3:
        next = kReadOnly;  // remap write-protected
        break;
      case 4:
      case 5:
        next = cur == kReadWrite ? kReadOnly : kReadWrite;  // permissions
        break;
      default:
        next = cur == kUnmapped ? kReadWrite : kUnmapped;  // unmap
        break;
    }
    vs.hist[(v + 1) % kHist].store((v + 1) << 2 | next, std::memory_order_release);
    if (write_leaf(o, p, v + 1, next) != build::Status::kOk) {
      violation(slot, "guest page-table write failed");
      break;
    }
    vs.written.store(v + 1, std::memory_order_release);
    log(slot, {0, LogKind::kMutate, uint8_t(oi), uint16_t(p), v + 1, next, 0, 0});
    ctr.mutations.fetch_add(1, std::memory_order_relaxed);
  }
}

// The guest's invalidation driver: descriptors and a wait with status into its own ring, the
// tail register, then the status dword read back from its memory.
void OwnerRun::owner_invalidator(unsigned slot, unsigned oi) {
  Rng rng(opt_.seed * 1000 + 400 + oi);
  Counters &ctr = counters_[slot];
  Owner &o = owners_[oi];
  MachineMemory &mem = engine_->memory();
  uint64_t tail = 0;
  uint32_t seq = 0;
  std::vector<Credit> credits;
  auto put = [&](const Desc &d) {
    const uint64_t qw[4] = {d.qw0, d.qw1, 0, 0};
    mem.write(o.queue_hpa + tail * 32, qw, sizeof qw);
    tail = (tail + 1) % kQueueEntries;
  };
  while (!stopping()) {
    if (rng.below(16) == 0 && !hostile(slot, o, oi, rng, tail, seq)) return;
    credits.clear();
    const unsigned nops = 1 + unsigned(rng.below(3));
    for (unsigned i = 0; i < nops; ++i) {
      const unsigned g = unsigned(rng.below(kOwnerGranCount));
      Desc d;
      switch (g) {
        case kOwnerPage:
        case kOwnerRange: {
          const unsigned am = g == kOwnerPage ? 0 : 1 + unsigned(rng.below(5));
          // Any page of the range, unaligned on purpose: the descriptor's ADDR low AM bits
          // are ignored by the hardware, so the oracle aligns down.
          const uint64_t p = rng.below(pages_);
          d = piotlb_page(kGuestPasid, kIova + p * 4096, am, rng.next() & 1);
          break;
        }
        case kOwnerPasid:
          d = piotlb_pasid(kGuestPasid);
          break;
        case kOwnerPcPasid:
          d = pasid_cache(1, kGuestPasid);
          break;
        case kOwnerPcDomain:
          d = pasid_cache(0, 0);
          break;
        case kOwnerPcGlobal:
          d = pasid_cache(3, 0);
          break;
        default:
          d = pasid_devtlb(o.sid, kGuestPasid, kIova + rng.below(pages_) * 4096);
          break;
      }
      const Covered c = spec_covers(d, pages_);
      credit(o, c.first, c.count, credits);
      if (opt_.sabotage != Sabotage::kSkipOwnerInvalidation) put(d);
      log(slot, {0, LogKind::kDescriptor, uint8_t(oi), 0, g, d.qw0, d.qw1, c.count});
      ctr.owner[g].fetch_add(1, std::memory_order_relaxed);
    }
    if (++seq == 0) seq = 1;
    put(wait_status(kStatusGpa, seq));
    const int rc = layer_->owner_queue_write_tail(o.queue, tail);
    if (rc != 0) {
      OwnerQueueState st;
      layer_->owner_queue_state(o.queue, &st);
      violation(slot, "owner " + std::to_string(oi) + ": owner_queue_write_tail returned " +
                          std::to_string(rc) + " (fault " + std::to_string(int(st.fault)) +
                          ", head " + std::to_string(st.head) + ")");
      return;
    }
    log(slot, {0, LogKind::kTail, uint8_t(oi), 0, tail, seq, 0, 0});
    if (!await_status(slot, o, oi, seq)) return;
    OwnerQueueState st;
    if (layer_->owner_queue_state(o.queue, &st) != 0 || st.error != invq::QiError::kNone ||
        st.head != tail) {
      violation(slot, "owner " + std::to_string(oi) +
                          ": queue not idle and error-free after a "
                          "completed wait (fault " +
                          std::to_string(int(st.fault)) + ")");
      return;
    }
    publish(credits);
    log(slot, {0, LogKind::kWait, uint8_t(oi), 0, credits.size(), seq, 0, 0});
    ctr.waits.fetch_add(1, std::memory_order_relaxed);
  }
}

// Without a worker the status lands before write_tail returns; with one, the guest polls its
// status dword as a driver does. A status that never lands is a violation too: after the run's
// end the worker still runs, so it gets kStatusGrace more to write it.
bool OwnerRun::await_status(unsigned slot, const Owner &o, unsigned oi, uint32_t want) {
  MachineMemory &mem = engine_->memory();
  std::optional<Clock::time_point> give_up;
  for (unsigned spins = 0;; ++spins) {
    uint32_t status = 0;
    mem.read(o.status_hpa, &status, sizeof status);
    if (status == want) return true;
    if (!opt_.background) {
      violation(slot, "owner " + std::to_string(oi) + ": wait status " + std::to_string(want) +
                          " not written when write_tail returned (status " +
                          std::to_string(status) + ")");
      return false;
    }
    if (spins % 16 == 15) {
      if (stopping()) {
        const auto now = Clock::now();
        if (!give_up) give_up = now + kStatusGrace;
        if (now > *give_up) {
          violation(slot, "owner " + std::to_string(oi) + ": wait status " + std::to_string(want) +
                              " never written by the background worker");
          return false;
        }
      }
      std::this_thread::yield();
    }
  }
}

// A descriptor the owner must not be able to issue: a PASID it has no name for (another VM's
// host PASID, or one nobody holds) or a host-only IOTLB invalidation naming another VM's host
// DID (its own when it is alone). The queue must stop with IQE on it, with the right fault, head on
// it, and nothing after it processed (a wait behind it must not write its status). The guest then
// recovers as Linux's qi_check_fault does: it overwrites the bad descriptor with a copy of the
// wait, clears the error and writes the tail again.
bool OwnerRun::hostile(unsigned slot, Owner &o, unsigned oi, Rng &rng, uint64_t &tail,
                       uint32_t &seq) {
  MachineMemory &mem = engine_->memory();
  const Owner &other = owners_[(oi + 1) % owners_.size()];
  const bool host_only = rng.next() & 1;
  uint32_t foreign = other.pasid;
  if (foreign == kGuestPasid || foreign == o.pasid) foreign = 0x7FF00 + oi;  // nobody's
  const Desc bad = host_only ? iotlb_domain(other.vm.did) : piotlb_pasid(foreign);
  const OwnerQueueFault want = host_only ? OwnerQueueFault::kHostOnly : OwnerQueueFault::kNotOwned;
  OwnerQueueStats before;
  uint32_t status_before = 0;
  layer_->owner_queue_stats(o.queue, &before);
  mem.read(o.status_hpa, &status_before, sizeof status_before);
  const uint64_t bad_index = tail;
  uint32_t next = seq + 1;
  if (next == 0) next = 1;
  const Desc wait = wait_status(kStatusGpa, next);
  for (const Desc &d : {bad, wait}) {
    const uint64_t qw[4] = {d.qw0, d.qw1, 0, 0};
    mem.write(o.queue_hpa + tail * 32, qw, sizeof qw);
    tail = (tail + 1) % kQueueEntries;
  }
  log(slot, {0, LogKind::kHostile, uint8_t(oi), 0, host_only, bad.qw0, bad.qw1, 0});
  const int rc = layer_->owner_queue_write_tail(o.queue, tail);
  OwnerQueueState st;
  OwnerQueueStats after;
  uint32_t status_after = 0;
  layer_->owner_queue_state(o.queue, &st);
  layer_->owner_queue_stats(o.queue, &after);
  mem.read(o.status_hpa, &status_after, sizeof status_after);
  std::ostringstream why;
  if (rc != -EBUSY || st.error == invq::QiError::kNone || st.fault != want || st.head != bad_index)
    why << "rc " << rc << ", error " << int(st.error) << ", fault " << int(st.fault) << " (want "
        << int(want) << "), head " << st.head << " (want " << bad_index << ")";
  else if (after.ops_submitted != before.ops_submitted || status_after != status_before)
    why << "something was processed: host ops " << before.ops_submitted << " -> "
        << after.ops_submitted << ", status " << status_before << " -> " << status_after;
  if (!why.str().empty()) {
    std::ostringstream msg;
    msg << "owner " << oi << ": hostile descriptor qw0=0x" << std::hex << bad.qw0 << std::dec
        << " not stopped as required: " << why.str();
    violation(slot, msg.str());
    return false;
  }
  const uint64_t qw[4] = {wait.qw0, wait.qw1, 0, 0};
  mem.write(o.queue_hpa + bad_index * 32, qw, sizeof qw);
  if (layer_->owner_queue_clear_error(o.queue) != 0 ||
      layer_->owner_queue_write_tail(o.queue, tail) != 0) {
    violation(slot, "owner " + std::to_string(oi) + ": queue did not resume after clear_error");
    return false;
  }
  if (!await_status(slot, o, oi, next)) return false;
  layer_->owner_queue_stats(o.queue, &after);
  if (after.ops_submitted != before.ops_submitted) {
    violation(slot, "owner " + std::to_string(oi) + ": the replaced descriptor still took effect");
    return false;
  }
  seq = next;
  counters_[slot].hostile.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// The host's own typed invalidations of the VMs' bindings (host DIDs and PASIDs), credited by
// VT-d's reach for first-stage/nested entries: page range within (DID, PASID), (DID, PASID),
// every entry of the DID (domain-selective IOTLB reaches first-stage and nested entries too),
// global.
void OwnerRun::host_invalidator(unsigned slot, unsigned index) {
  Rng rng(opt_.seed * 1000 + 300 + index);
  Counters &ctr = counters_[slot];
  Engine &e = *engine_;
  std::vector<Credit> credits;
  constexpr unsigned kGrans[] = {kGranPage, kGranRange, kGranPasid, kGranDomain, kGranGlobal};
  while (!stopping()) {
    credits.clear();
    const unsigned nops = 1 + unsigned(rng.below(3));
    for (unsigned i = 0; i < nops; ++i) {
      const unsigned g = kGrans[rng.below(std::size(kGrans))];
      Owner &o = owners_[rng.below(owners_.size())];
      invq::InvalidationOp op;
      op.caches =
          rng.below(4) == 0 ? invq::kAllCaches : uint8_t(invq::kCacheIotlb | invq::kCachePaging);
      op.did = o.vm.did;
      op.pasid = o.pasid;
      op.source_id = o.sid;
      switch (g) {
        case kGranPage:
        case kGranRange: {
          op.scope = invq::Scope::kRange;
          const uint64_t p = rng.below(pages_);
          op.addr = kIova + p * 4096;
          op.npages = g == kGranPage ? 1 : 1 + rng.below(16);
          op.leaf = rng.next() & 1;
          credit(o, p, std::min<uint64_t>(op.npages, pages_ - p), credits);
          break;
        }
        case kGranPasid:
          op.scope = invq::Scope::kPasid;
          credit(o, 0, pages_, credits);
          break;
        case kGranDomain:
          op.scope = invq::Scope::kDomain;
          credit(o, 0, pages_, credits);
          break;
        default:
          op.scope = invq::Scope::kGlobal;
          for (Owner &x : owners_) credit(x, 0, pages_, credits);
          break;
      }
      e.invalidate(op);
      log(slot, {0, LogKind::kTyped, uint8_t(&o - owners_.data()), 0, g, op.addr, op.npages, 0});
      ctr.typed[g].fetch_add(1, std::memory_order_relaxed);
    }
    e.invalidate_wait();
    publish(credits);
    log(slot, {0, LogKind::kWait, 0xFF, 0, credits.size(), 0, 0, 0});
    ctr.waits.fetch_add(1, std::memory_order_relaxed);
  }
}

std::string OwnerRun::dump_log() const {
  struct Tagged {
    unsigned slot;
    LogEntry e;
  };
  std::vector<Tagged> all;
  for (unsigned s = 0; s < rings_.size(); ++s) {
    const Ring &r = rings_[s];
    const uint64_t n = std::min<uint64_t>(r.n, kRingEntries);
    for (uint64_t i = r.n - n; i < r.n; ++i) all.push_back({s, r.e[i % kRingEntries]});
  }
  std::sort(all.begin(), all.end(),
            [](const Tagged &a, const Tagged &b) { return a.e.seq < b.e.seq; });
  const size_t keep = 60;
  std::ostringstream os;
  os << "operation log tail (last " << std::min(keep, all.size()) << " of " << all.size()
     << " retained; seq = global order of logging):\n";
  static const char *const st[] = {"unmapped", "read-only", "read-write", "?"};
  for (size_t i = all.size() > keep ? all.size() - keep : 0; i < all.size(); ++i) {
    const LogEntry &e = all[i].e;
    char buf[256];
    switch (e.kind) {
      case LogKind::kTranslate:
        if (e.c >> 63)
          std::snprintf(buf, sizeof buf,
                        "translate owner %u page %u %s c_before=%llu -> fault 0x%llx", e.owner,
                        e.page, (e.a & 0xFF) == kAccessWrite ? "W" : "R", (unsigned long long)e.b,
                        (unsigned long long)(e.c & 0xFF));
        else
          std::snprintf(buf, sizeof buf, "translate owner %u page %u %s c_before=%llu -> 0x%llx",
                        e.owner, e.page, (e.a & 0xFF) == kAccessWrite ? "W" : "R",
                        (unsigned long long)e.b, (unsigned long long)e.c);
        break;
      case LogKind::kMutate:
        std::snprintf(buf, sizeof buf, "guest mutate owner %u page %u -> v%llu %s", e.owner, e.page,
                      (unsigned long long)e.a, st[e.b & 3]);
        break;
      case LogKind::kDescriptor:
        std::snprintf(buf, sizeof buf,
                      "owner %u descriptor %s qw0=0x%llx qw1=0x%llx (covers %llu pages)", e.owner,
                      owner_granularity_name(unsigned(e.a)), (unsigned long long)e.b,
                      (unsigned long long)e.c, (unsigned long long)e.d);
        break;
      case LogKind::kTail:
        std::snprintf(buf, sizeof buf, "owner %u tail -> %llu (wait status %llu)", e.owner,
                      (unsigned long long)e.a, (unsigned long long)e.b);
        break;
      case LogKind::kWait:
        if (e.owner == 0xFF)
          std::snprintf(buf, sizeof buf, "host typed wait completed, published %llu page versions",
                        (unsigned long long)e.a);
        else
          std::snprintf(buf, sizeof buf,
                        "owner %u wait %llu completed, published %llu page versions", e.owner,
                        (unsigned long long)e.b, (unsigned long long)e.a);
        break;
      case LogKind::kHostile:
        std::snprintf(buf, sizeof buf, "owner %u hostile %s qw0=0x%llx", e.owner,
                      e.a ? "host-only 0x2" : "foreign-PASID 0x6", (unsigned long long)e.b);
        break;
      case LogKind::kTyped:
        std::snprintf(buf, sizeof buf, "host typed %s of owner %u addr=0x%llx npages=%llu",
                      granularity_name(unsigned(e.a)), e.owner, (unsigned long long)e.b,
                      (unsigned long long)e.c);
        break;
    }
    os << "  #" << e.seq << " t" << all[i].slot << " " << buf << "\n";
  }
  return os.str();
}

Summary OwnerRun::go() {
  const unsigned nthreads = unsigned(rings_.size());
  std::vector<std::thread> threads;
  threads.reserve(nthreads);
  std::latch start(nthreads + 1);
  auto spawn = [&](auto fn) {
    threads.emplace_back([&start, fn] {
      start.arrive_and_wait();
      fn();
    });
  };
  unsigned slot = 0;
  for (unsigned i = 0; i < opt_.translators; ++i, ++slot)
    spawn([this, slot, i] { translator(slot, i); });
  for (unsigned o = 0; o < owners_.size(); ++o) {
    for (unsigned i = 0; i < opt_.mutators; ++i, ++slot)
      spawn([this, slot, o, i] { mutator(slot, o, i); });
    spawn([this, slot, o] { owner_invalidator(slot, o); });
    ++slot;
  }
  for (unsigned i = 0; i < opt_.invalidators; ++i, ++slot)
    spawn([this, slot, i] { host_invalidator(slot, i); });

  auto total = [&](auto member) {
    uint64_t s = 0;
    for (unsigned t = 0; t < nthreads; ++t) s += (counters_[t].*member).load();
    return s;
  };
  const auto t0 = Clock::now();
  const auto deadline =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt_.seconds));
  start.arrive_and_wait();
  {
    std::unique_lock lock(mu_);
    auto next_tick = t0 + std::chrono::seconds(1);
    uint64_t last_tr = 0;
    while (!stop_.load()) {
      // The timed wait is the run's clock, not a way to order threads (atomics do that).
      const auto until = opt_.progress ? std::min(next_tick, deadline) : deadline;
      cv_.wait_until(lock, until, [&] { return stop_.load(); });
      const auto now = Clock::now();
      if (opt_.progress && now >= next_tick) {
        const uint64_t tr = total(&Counters::translations);
        std::fprintf(stderr,
                     "[%5.0fs] translations %llu (%.2f M/s)  mutations %llu  waits %llu  "
                     "hostile %llu  violations %llu\n",
                     std::chrono::duration<double>(now - t0).count(), (unsigned long long)tr,
                     double(tr - last_tr) / 1e6, (unsigned long long)total(&Counters::mutations),
                     (unsigned long long)total(&Counters::waits),
                     (unsigned long long)total(&Counters::hostile),
                     (unsigned long long)violations_.load());
        last_tr = tr;
        next_tick += std::chrono::seconds(1);
      }
      if (now >= deadline) stop_.store(true);
    }
  }
  for (std::thread &t : threads) t.join();

  Summary s;
  s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  s.translations = total(&Counters::translations);
  s.faults = total(&Counters::faults);
  s.mutations = total(&Counters::mutations);
  s.waits = total(&Counters::waits);
  s.unverifiable = total(&Counters::unverifiable);
  s.hostile = total(&Counters::hostile);
  for (unsigned t = 0; t < nthreads; ++t) {
    for (unsigned g = 0; g < kOwnerGranCount; ++g) s.owner[g] += counters_[t].owner[g].load();
    for (unsigned g = 0; g < kGranCount; ++g) s.typed[g] += counters_[t].typed[g].load();
  }
  for (const Owner &o : owners_) {
    OwnerQueueStats qs;
    machine::check(layer_->owner_queue_stats(o.queue, &qs), "owner_queue_stats");
    OwnerQueueSummary q;
    q.tail_writes = qs.tail_writes;
    q.descriptors = qs.descriptors;
    q.ops_submitted = qs.ops_submitted;
    q.waits = qs.waits;
    q.errors = qs.errors;
    q.refused_not_owned = qs.refused_not_owned;
    q.refused_host_only = qs.refused_host_only;
    s.owner_queues.push_back(q);
  }
  s.violations = violations_.load();
  if (s.violations) {
    std::ostringstream os;
    os << first_violation_ << "\n"
       << "reproduce (same seed; thread interleaving is not deterministic): " << command_line(opt_)
       << "\n"
       << dump_log();
    s.report = os.str();
  }
  return s;
}

}  // namespace

const char *owner_granularity_name(unsigned g) {
  static const char *const names[] = {"page",      "range",     "pasid", "pc-pasid",
                                      "pc-domain", "pc-global", "devtlb"};
  return g < kOwnerGranCount ? names[g] : "?";
}

Summary run_owner_queues(const Options &opt) {
  OwnerRun r(opt);
  return r.go();
}

}  // namespace nestor::stress
