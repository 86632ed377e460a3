// nestor-stress engine: see stress.h for what is checked and docs/STRESS.md for why the checks
// are sound. The machine has three address spaces, one per translation type:
//
//   AS 0  first-level only   sid 0x0100 PASID 1 DID 1   iova page p -> HPA kFlData | p<<28 | v<<12
//   AS 1  nested             sid 0x0100 PASID 2 DID 2   iova page p -> GPA kGData  | p<<28 | v<<12
//                            GPA chunk c (1G, 4 pages) -> HPA kNData | c<<40 | w<<30 | offset
//   AS 2  second-level only  sid 0x0200 PASID 3 DID 3   iova page p -> HPA kSlData | p<<28 | v<<12
//
// v is the page's version (16 bits in the address), w the nested chunk's second-level version
// (10 bits). Data HPAs are never touched by the engine, so they need no RAM: only tables are
// backed. A per-page ring of the last 256 versions maps the address bits back to the full
// version and its state (unmapped / read-only / read-write).
//
// Protocol (all per page, single writer per page):
//   mutator:     hist[v] = state; write leaf; written = v            (release)
//   invalidator: S = written (acquire) for every page the op covers; invalidate; wait;
//                completed = max(completed, S)                        (release)
//   translator:  c = completed (acquire); translate; check version >= c
// With drain, the translator also holds an engine epoch guard around [read c, translate, read
// c'] and checks version >= c': a wait that completed while the guard was held must have
// started its batch after the guard was entered (else the drain would have waited for it), so
// the translation saw that batch applied.
#include "stress.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <shared_mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "nestor/engine.h"
#include "nestor/invalidation.h"
#include "nestor/invq/op.h"
#include "nestor/machine/machine.h"
#include "nestor/vtd/descriptor.h"
#include "stress_internal.h"

namespace nestor::stress {
namespace {

constexpr unsigned kAsCount = 3;
enum AsKind : uint8_t { kFl = 0, kNested = 1, kSl = 2 };
const char *as_name(unsigned a) {
  static const char *const names[] = {"fl", "nested", "sl"};
  return a < kAsCount ? names[a] : "?";
}
struct AsDesc {
  uint16_t sid;
  uint32_t pasid;
  uint16_t did;
  uint64_t data;  // base of the output addresses (HPA; GPA for nested)
};
constexpr AsDesc kAs[kAsCount] = {
    {0x0100, 1, 1, uint64_t{1} << 44},
    {0x0100, 2, 2, uint64_t{1} << 40},
    {0x0200, 3, 3, uint64_t{2} << 44},
};
constexpr uint64_t kNData = uint64_t{1} << 46;  // nested chunks' host range
constexpr uint64_t kIova = 0x10'0000'0000ull;

// Machine memory layout (RAM [0, 128 MiB), lazily backed).
constexpr uint64_t kRamSize = 128ull << 20;
constexpr uint64_t kQiRing = 8ull << 20;  // 256 x 256-bit descriptors
constexpr uint64_t kQiStatus = kQiRing + (64u << 10);
constexpr uint64_t kHostTables = 16ull << 20;  // [16, 48) MiB
constexpr uint64_t kHostTablesSize = 32ull << 20;
constexpr uint64_t kGuestTablesHpa = 64ull << 20;  // guest GPA [0, 16 MiB) lives here
constexpr uint64_t kGuestTablesSize = 16ull << 20;

constexpr unsigned kRingEntries = 64;  // operation log per thread

uint64_t page_target(unsigned as, uint64_t p, uint64_t v) {
  return kAs[as].data | (p << 28) | ((v & 0xFFFF) << 12);
}
uint64_t chunk_gpa(uint64_t c) {
  return kAs[kNested].data | (c << 30);
}
uint64_t chunk_hpa(uint64_t c, uint64_t w) {
  return kNData | (c << 40) | ((w & 0x3FF) << 30);
}

// --- operation log -----------------------------------------------------------------------
enum class LogKind : uint8_t {
  kTranslate,
  kMutate,
  kMutateChunk,
  kTableEdit,
  kInvalidate,
  kQi,
  kWait
};
struct LogEntry {
  uint64_t seq = 0;
  LogKind kind = LogKind::kTranslate;
  uint8_t as = 0;
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
      table_edits{0};
  std::array<std::atomic<uint64_t>, kGranCount> typed{}, qi{};
};

// --- the machine --------------------------------------------------------------------------
class Machine {
 public:
  explicit Machine(const Options &opt) : m_(layout(), engine_config(opt)), pages_(opt.pages) {
    engine = &m_.engine();
    m_.place_structures();
    auto spec = [](unsigned as, machine::Mode mode) {
      machine::DeviceSpec s;
      s.source_id = kAs[as].sid;
      s.pasid = kAs[as].pasid;
      s.did = kAs[as].did;
      s.mode = mode;
      s.sre = s.ere = true;
      return s;
    };
    // AS 0: first level in host memory.
    dev[kFl] = &m_.add_device(spec(kFl, machine::Mode::kFirstLevel));
    // AS 1: nested. Second level: guest tables 4K pages, data chunks 1G pages.
    machine::Domain &nested = m_.add_domain(kAs[kNested].did);
    sl_nested = &nested.tables;
    // 4K pages: the host edits the second-level mapping of single first-level table pages.
    nested.map(0, kGuestTablesHpa, kGuestTablesSize);
    chunks = opt.pages / 4;
    for (uint64_t c = 0; c < chunks; ++c) nested.map(chunk_gpa(c), chunk_hpa(c, 1), 1ull << 30, 30);
    machine::DeviceSpec ns = spec(kNested, machine::Mode::kNested);
    ns.domain = &nested;
    ns.guest = &m_.add_guest(nested.slc, 0, kGuestTablesSize);
    dev[kNested] = &m_.add_device(ns);
    // AS 2: second level only.
    machine::DeviceSpec ss = spec(kSl, machine::Mode::kSecondLevel);
    ss.domain = &m_.add_domain(kAs[kSl].did);
    dev[kSl] = &m_.add_device(ss);

    page_state = std::make_unique<Versioned[]>(kAsCount * pages_);
    chunk_state = std::make_unique<Versioned[]>(chunks);
    for (unsigned as = 0; as < kAsCount; ++as)
      for (uint64_t p = 0; p < pages_; ++p) {
        state(as, p).hist[1].store(uint64_t{1} << 2 | kReadWrite);
        machine::check(write_leaf(as, p, 1, kReadWrite), "initial map");
      }
    for (uint64_t c = 0; c < chunks; ++c) chunk_state[c].hist[1].store(uint64_t{1} << 2);
    // Every nested page shares one table per level (the IOVA range sits in one 2M region).
    machine::GuestFl &fl_nested = *dev[kNested]->guest_fl;
    for (int level = 1; level <= 4; ++level) {
      const uint64_t gpa =
          level == 4 ? fl_nested.root() : fl_nested.entry_address(kIova, level) & ~0xFFFull;
      tables[level - 1] = {gpa, kGuestTablesHpa + gpa, m_.alloc_table()};
      table_state[level - 1].hist[1].store(uint64_t{1} << 2 | kReadWrite);
    }
  }

  Versioned &state(unsigned as, uint64_t p) { return page_state[as * pages_ + p]; }
  uint64_t npages() const { return pages_; }

  // Writes the leaf of page p for version v. Only the page's owner calls it; every table on
  // the path exists (created at setup), so concurrent owners never race on a table pointer.
  build::Status write_leaf(unsigned as, uint64_t p, uint64_t v, State st) {
    const uint64_t iova = kIova + p * 4096;
    if (st == kUnmapped) return dev[as]->unmap(iova, 12);
    // First-level leaves executable, second-level ones not.
    const uint8_t perms =
        kAccessRead | (st == kReadWrite ? kAccessWrite : 0) | (as == kSl ? 0 : kAccessExec);
    return dev[as]->map(iova, page_target(as, p, v), 12, perms);
  }
  build::Status write_chunk(uint64_t c, uint64_t w) {
    return sl_nested->map(chunk_gpa(c), chunk_hpa(c, w), 30, build::sl_leaf_bits(7));
  }

 private:
  static machine::RamLayout layout() {
    machine::RamLayout l;
    l.ram_size = kRamSize;
    l.tables_base = kHostTables;
    l.tables_size = kHostTablesSize;
    return l;
  }
  static EngineConfig engine_config(const Options &opt) {
    EngineConfig cfg;
    cfg.iotlb_entries = opt.iotlb_entries;
    cfg.psc_entries = opt.psc_entries;
    cfg.drain = opt.drain && opt.sabotage != Sabotage::kDrainCheckWithoutDrain;
    cfg.coalesce = opt.coalesce;
    cfg.background_invalidation = opt.background;
    if (opt.gpa_dependencies || opt.sabotage == Sabotage::kNarrowGpaInvalidation)
      cfg.gpa_invalidation = EngineConfig::GpaInvalidation::kDependencies;
    return cfg;
  }

  machine::Machine m_;
  uint64_t pages_;

 public:
  Engine *engine = nullptr;
  std::array<machine::Device *, kAsCount> dev{};
  machine::HostSl *sl_nested = nullptr;
  std::unique_ptr<Versioned[]> page_state, chunk_state;
  uint64_t chunks = 0;
  // The nested space's first-level table pages (index: level - 1): GPA, the host page the
  // second level maps it to, and a spare host page for remaps. State kReadWrite = mapped,
  // kUnmapped = the host unmapped the GPA.
  struct TablePage {
    uint64_t gpa, hpa, spare;
  };
  std::array<TablePage, 4> tables{};
  std::array<Versioned, 4> table_state;
  // The table_state version of each page's latest move, stored before the old page is
  // scrubbed: a walk that began before that move's wait completed may still read the old page.
  std::array<std::atomic<uint64_t>, 4> table_moved{};
  // Leaf writes into the nested tables go through the second level (GuestTableSpace): they
  // hold this shared while the table editor holds it exclusively across an edit.
  std::shared_mutex table_mu;
};

// Version whose low `bits` bits are `low`, from the history ring; 0 if it was overwritten.
uint64_t lookup(const Versioned &vs, uint64_t low, unsigned bits, State *st) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  const uint64_t e = vs.hist[low % kHist].load(std::memory_order_acquire);
  const uint64_t v = e >> 2;
  if ((v & mask) != low || v == 0) return 0;
  if (st) *st = State(e & 3);
  return v;
}

// --- the run ------------------------------------------------------------------------------
class Run {
 public:
  explicit Run(const Options &opt) : opt_(opt), m_(opt) {
    const unsigned threads = opt.translators + opt.mutators + opt.invalidators + (opt.qi ? 1 : 0);
    rings_.resize(threads);
    counters_ = std::make_unique<Counters[]>(threads);
  }

  Summary go();

 private:
  void translator(unsigned slot, unsigned index);
  void mutator(unsigned slot, unsigned index);
  bool edit_table(unsigned slot, Rng &rng);
  void announce(unsigned slot, const invq::InvalidationOp &op);
  void invalidator(unsigned slot, unsigned index);
  void qi_invalidator(unsigned slot);

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

  // Pages (and nested chunks) an op covers, with the written version at that moment.
  struct Credit {
    Versioned *vs;
    uint64_t version;
  };
  void credit(const invq::InvalidationOp &op, std::vector<Credit> &out);
  static void publish(const std::vector<Credit> &credits) {
    for (const Credit &c : credits) fetch_max(c.vs->completed, c.version);
  }

  const Options &opt_;
  Machine m_;
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

void Run::violation(unsigned slot, const std::string &what) {
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

// Whether `op` must remove the IOTLB entry of page p of address space `as`, by VT-d rules.
// IOTLB invalidation, page-selective-within-domain (type 0x2, G=11b): second-stage entries of
// the DID in the range, and every first-stage and nested entry of the DID whatever its address
// (QEMU's vtd_hash_remove_by_page quotes the spec). Under the nesting contract (BIND_PGTBL +
// CACHE_INVLD) the owner of a first-level table announces its changes with PASID-based
// invalidations, so a type 0x2 owes it nothing (`nesting_contract`).
bool architecturally_covers(const invq::InvalidationOp &op, unsigned as, uint64_t page,
                            bool nesting_contract) {
  if (!(op.caches & invq::kCacheIotlb)) return false;
  const AsDesc &a = kAs[as];
  const auto in_range = [&] {
    return page >= (op.addr >> 12) && page - (op.addr >> 12) < op.npages;
  };
  switch (op.scope) {
    case invq::Scope::kGlobal:
      return true;
    case invq::Scope::kDomain:
      return op.did == a.did;
    case invq::Scope::kPasid:
      return as != kSl && op.did == a.did && op.pasid == a.pasid;
    case invq::Scope::kRange:
      if (op.did != a.did) return false;
      if (as == kSl) return op.addr_is_gpa && in_range();
      if (op.addr_is_gpa) return !nesting_contract;
      return op.pasid == a.pasid && in_range();
    default:
      return false;
  }
}

// Whether `op` makes a host second-level change of the GPA page `gpa` of the nested domain
// visible: a GPA range of the domain that contains it (the second-stage entries in range go
// whatever IH says of paging structures: the changed entry is a leaf), the domain, or global.
bool covers_nested_gpa(const invq::InvalidationOp &op, uint64_t gpa, uint64_t pages) {
  if (!(op.caches & invq::kCacheIotlb)) return false;
  if (op.scope == invq::Scope::kGlobal) return true;
  if (op.did != kAs[kNested].did) return false;
  if (op.scope == invq::Scope::kDomain) return true;
  if (op.scope != invq::Scope::kRange || !op.addr_is_gpa) return false;
  const uint64_t first = op.addr >> 12, base = gpa >> 12;
  return first < base + pages && base < first + op.npages;
}

void Run::credit(const invq::InvalidationOp &op, std::vector<Credit> &out) {
  for (unsigned as = 0; as < kAsCount; ++as)
    for (uint64_t p = 0; p < m_.npages(); ++p) {
      invq::CacheEntryKey key;
      key.cache = invq::kCacheIotlb;
      key.did = kAs[as].did;
      key.source_id = kAs[as].sid;
      // Second-level-only entries are shared by every PASID of the domain (the IOTLB tags
      // them with no PASID), so PASID-scoped ops do not reach them.
      key.pasid = as == kSl ? invq::kNoPasid : kAs[as].pasid;
      key.page = (kIova >> 12) + p;
      key.second_level = as == kSl;
      const bool covered = opt_.contract
                               ? invq::covers(op, key)
                               : architecturally_covers(op, as, key.page, opt_.gpa_dependencies);
      if (covered) {
        Versioned &vs = m_.state(as, p);
        out.push_back({&vs, vs.written.load(std::memory_order_acquire)});
      }
    }
  // A nested chunk's second-level leaf, and the pages holding the nested space's first-level
  // tables: only what VT-d requires for a second-level change counts.
  for (uint64_t c = 0; c < m_.chunks; ++c) {
    if (covers_nested_gpa(op, chunk_gpa(c), uint64_t{1} << 18)) {
      Versioned &vs = m_.chunk_state[c];
      out.push_back({&vs, vs.written.load(std::memory_order_acquire)});
    }
  }
  for (unsigned l = 0; l < 4; ++l) {
    if (covers_nested_gpa(op, m_.tables[l].gpa, 1)) {
      Versioned &vs = m_.table_state[l];
      out.push_back({&vs, vs.written.load(std::memory_order_acquire)});
    }
  }
}

void Run::translator(unsigned slot, unsigned index) {
  Rng rng(opt_.seed * 1000 + 100 + index);
  Counters &ctr = counters_[slot];
  Engine &e = *m_.engine;
  AddressSpace handles[kAsCount];
  for (unsigned as = 0; as < kAsCount; ++as) handles[as] = e.open(kAs[as].sid, true, kAs[as].pasid);
  const bool drain_check = opt_.drain || opt_.sabotage == Sabotage::kDrainCheckWithoutDrain;
  uint64_t local = 0;
  while (!stopping()) {
    const unsigned as = unsigned(rng.below(kAsCount));
    if (!(opt_.address_spaces >> as & 1)) continue;
    const uint64_t p = rng.below(m_.npages());
    const uint64_t off = rng.below(512) * 8;
    const uint8_t access = rng.below(4) == 0 ? kAccessWrite : kAccessRead;
    const bool use_handle = rng.next() & 1;
    Versioned &vs = m_.state(as, p);
    Versioned *cs = as == kNested ? &m_.chunk_state[p / 4] : nullptr;
    const uint64_t iova = kIova + p * 4096 + off;

    uint64_t c0, w0 = 0, c1 = 0, w1 = 0;
    uint64_t tc[4] = {};
    Result r;
    {
      std::optional<EngineInvalidation::TranslationGuard> guard;
      if (drain_check) guard.emplace(e.invalidation());
      c0 = vs.completed.load(std::memory_order_acquire);
      if (cs) w0 = cs->completed.load(std::memory_order_acquire);
      if (cs)
        for (unsigned l = 0; l < 4; ++l)
          tc[l] = m_.table_state[l].completed.load(std::memory_order_acquire);
      if (use_handle) {
        r = handles[as].translate(iova, access);
      } else {
        r = e.translate(m_.dev[as]->request(iova, access));
      }
      if (drain_check) {
        c1 = vs.completed.load(std::memory_order_acquire);
        if (cs) w1 = cs->completed.load(std::memory_order_acquire);
      }
    }
    const uint64_t written_after = vs.written.load(std::memory_order_acquire);
    log(slot, {0, LogKind::kTranslate, uint8_t(as), uint16_t(p),
               uint64_t(access) | uint64_t(use_handle) << 8 | off << 16, c0,
               r.ok ? r.t.out : (uint64_t{1} << 63) | uint64_t(r.fault.reason), c1});
    ctr.translations.fetch_add(1, std::memory_order_relaxed);

    std::ostringstream why;
    auto where = [&] {
      why << " [as=" << as_name(as) << " page=" << p << " iova=0x" << std::hex << iova
          << " access=" << (access == kAccessWrite ? "W" : "R") << " handle=" << use_handle
          << std::dec << " completed_before=" << c0 << " completed_after=" << c1
          << " written_after=" << written_after;
      if (cs)
        why << " chunk=" << p / 4 << " chunk_completed_before=" << w0
            << " chunk_completed_after=" << w1;
      why << "]";
    };
    // The nested space's table pages: which states did each hold from its completed version on?
    // A level whose history lost a version of that range (the translator was descheduled while
    // the editor made kHist more versions) proves nothing either way: its result is
    // unverifiable, not a table that was gone (docs/STRESS.md finding 8).
    bool table_unmapped_since = false, table_gone = false, table_moved_since = false;
    bool table_unknown = false;
    unsigned gone_level = 0;
    if (cs) {
      for (unsigned l = 0; l < 4; ++l) {
        table_moved_since |= m_.table_moved[l].load(std::memory_order_acquire) > tc[l];
        const Versioned &ts = m_.table_state[l];
        const HistoryStates hs =
            history_states(ts, tc[l], ts.written.load(std::memory_order_acquire));
        table_unmapped_since |= hs.unmapped;
        table_unknown |= hs.unknown;
        if (history_shows_gone(hs) && !table_gone) {
          table_gone = true;
          gone_level = l + 1;
        }
      }
    }
    if (table_unknown && !table_gone && !table_unmapped_since && !table_moved_since) {
      // Neither a served translation nor a fault can be judged against tables whose states
      // in the translation's window are partly unknown.
      ctr.unverifiable.fetch_add(1, std::memory_order_relaxed);
      if (!r.ok) continue;
    }
    if (r.ok && table_gone) {
      why << "translation served although the host unmapped the level-" << gone_level
          << " first-level table page and its type 0x2 invalidation's wait completed (invariant 1)";
      where();
      violation(slot, why.str());
      break;
    }
    if (!r.ok && (table_unmapped_since || table_moved_since)) {
      // Explained by the host's unmap of a table page on the walk, or by a walk that read a
      // table page the host moved and scrubbed while the walk was in flight.
      ctr.faults.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (r.ok) {
      const uint64_t out = r.t.out;
      uint64_t low_v;
      if (as == kNested) {
        // Isolation (invariant 3): the HPA must come from the domain's chunk of this GPA.
        const uint64_t c = (out >> 40) & 63;
        if ((out >> 46) != 1 || c != p / 4 || ((out >> 28) & 3) != (p & 3)) {
          why << "nested HPA 0x" << std::hex << out << " is outside the second-level domain's "
              << "range for this page (isolation)";
          where();
          violation(slot, why.str());
          break;
        }
        const uint64_t w = lookup(*cs, (out >> 30) & 0x3FF, 10, nullptr);
        if (w == 0) {
          ctr.unverifiable.fetch_add(1, std::memory_order_relaxed);
        } else if (w < w0 || (drain_check && w < w1)) {
          why << "stale second-level version " << w << " of chunk " << p / 4 << " returned "
              << (w < w0 ? "after its invalidation's wait completed (invariant 1)"
                         : "by a translation in flight when the wait completed (drain)");
          where();
          violation(slot, why.str());
          break;
        }
        low_v = (out >> 12) & 0xFFFF;
      } else {
        if ((out >> 28) != (page_target(as, p, 0) >> 28)) {
          why << "HPA 0x" << std::hex << out << " does not belong to this page";
          where();
          violation(slot, why.str());
          break;
        }
        low_v = (out >> 12) & 0xFFFF;
      }
      if ((out & 0xFFF) != off || r.t.page_shift != 12) {
        why << "offset/page size wrong: out=0x" << std::hex << out << " shift=" << std::dec
            << int(r.t.page_shift);
        where();
        violation(slot, why.str());
        break;
      }
      State st = kUnmapped;
      const uint64_t v = lookup(vs, low_v, 16, &st);
      if (v == 0) {
        ctr.unverifiable.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (v < c0 || (drain_check && v < c1)) {
        why << "stale version " << v << " returned "
            << (v < c0 ? "after its invalidation's wait completed (invariant 1)"
                       : "by a translation in flight when the wait completed (drain)");
        where();
        violation(slot, why.str());
        break;
      }
      const bool writable = (r.t.perms & kAccessWrite) != 0;
      if (st == kUnmapped || writable != (st == kReadWrite) ||
          ((access & kAccessWrite) && st != kReadWrite)) {
        why << "permissions of version " << v << " (state " << int(st) << ") but result perms "
            << int(r.t.perms);
        where();
        violation(slot, why.str());
        break;
      }
    } else {
      ctr.faults.fetch_add(1, std::memory_order_relaxed);
      const auto reason = r.fault.reason;
      const bool not_present = reason == FaultReason::kFirstLevelEntryNotPresent ||
                               (as == kSl && reason == FaultReason::kSecondLevelEntryNotPresent);
      const bool denied = reason == FaultReason::kWriteDenied && access == kAccessWrite;
      if (!not_present && !denied) {
        why << "unexpected fault 0x" << std::hex << int(reason) << " (" << fault_reason_name(reason)
            << ")";
        where();
        violation(slot, why.str());
        break;
      }
      // The walk read a leaf whose version is in [c0, written_after]; one of them must explain
      // the fault, else the engine answered from something older than the completed wait.
      bool explained = false, unknown = false;
      for (uint64_t v = c0; v <= written_after && v < c0 + 64; ++v) {
        State st = kUnmapped;
        if (lookup(vs, v & 0xFFFF, 16, &st) != v) {
          unknown = true;
          continue;
        }
        if ((not_present && st == kUnmapped) || (denied && st == kReadOnly)) explained = true;
      }
      if (written_after >= c0 + 64) unknown = true;
      // A mutator records version v+1 in the history, writes the leaf, and only then bumps
      // `written`: the walk may already have read v+1's leaf although written_after says v.
      // The history entry (stored before the leaf, which the walk read with acquire) tells.
      {
        const uint64_t next = written_after + 1;
        State st = kUnmapped;
        if (lookup(vs, next & 0xFFFF, 16, &st) == next &&
            ((not_present && st == kUnmapped) || (denied && st == kReadOnly)))
          explained = true;
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

void Run::mutator(unsigned slot, unsigned index) {
  Rng rng(opt_.seed * 1000 + 200 + index);
  Counters &ctr = counters_[slot];
  const unsigned n = opt_.mutators;
  unsigned skipped = 0;
  const bool nested = opt_.address_spaces >> kNested & 1;
  while (!stopping()) {
    if (index == 0 && opt_.table_edits && nested && rng.below(64) == 0) {
      if (!edit_table(slot, rng)) break;
      ctr.table_edits.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (m_.chunks && nested && rng.below(16) == 0) {
      const uint64_t c = rng.below(m_.chunks);
      if (c % n != index) continue;
      Versioned &vs = m_.chunk_state[c];
      const uint64_t w = vs.written.load(std::memory_order_relaxed);
      if (w - vs.completed.load(std::memory_order_acquire) >= kMaxLead) {
        if (++skipped % 64 == 0) std::this_thread::yield();  // let invalidators catch up
        continue;
      }
      vs.hist[(w + 1) % kHist].store((w + 1) << 2, std::memory_order_release);
      if (m_.write_chunk(c, w + 1) != build::Status::kOk) {
        violation(slot, "second-level remap of a chunk failed");
        break;
      }
      vs.written.store(w + 1, std::memory_order_release);
      log(slot, {0, LogKind::kMutateChunk, kNested, uint16_t(c), w + 1, 0, 0, 0});
      ctr.mutations.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    const unsigned as = unsigned(rng.below(kAsCount));
    if (!(opt_.address_spaces >> as & 1)) continue;
    const uint64_t p = rng.below(m_.npages());
    if ((as * m_.npages() + p) % n != index) continue;
    Versioned &vs = m_.state(as, p);
    const uint64_t v = vs.written.load(std::memory_order_relaxed);
    if (v - vs.completed.load(std::memory_order_acquire) >= kMaxLead) {
      if (++skipped % 64 == 0) std::this_thread::yield();
      continue;
    }
    const State cur = State(vs.hist[v % kHist].load(std::memory_order_relaxed) & 3);
    State next;
    switch (rng.below(8)) {
      case 0:
      case 1:
      case 2:
        next = kReadWrite;
        break;  // remap
      case 3:
        next = kReadOnly;
        break;  // remap read-only
      case 4:
      case 5:
        next = cur == kReadWrite ? kReadOnly : kReadWrite;
        break;  // permissions
      default:
        next = cur == kUnmapped ? kReadWrite : kUnmapped;
        break;  // unmap
    }
    vs.hist[(v + 1) % kHist].store((v + 1) << 2 | next, std::memory_order_release);
    std::shared_lock<std::shared_mutex> tables_stay;
    if (as == kNested) tables_stay = std::shared_lock<std::shared_mutex>(m_.table_mu);
    if (m_.write_leaf(as, p, v + 1, next) != build::Status::kOk) {
      violation(slot, "page-table write failed");
      break;
    }
    vs.written.store(v + 1, std::memory_order_release);
    log(slot, {0, LogKind::kMutate, uint8_t(as), uint16_t(p), v + 1, next, 0, 0});
    ctr.mutations.fetch_add(1, std::memory_order_relaxed);
  }
}

// Applies op, waits, then publishes what op covers: the typed path a host driver uses.
void Run::announce(unsigned slot, const invq::InvalidationOp &op) {
  std::vector<Credit> credits;
  credit(op, credits);
  log(slot, {0, LogKind::kInvalidate, 0, 0, kGranGpa, uint64_t(op.did) << 32 | op.pasid, op.addr,
             op.npages});
  Engine &e = *m_.engine;
  if (opt_.sabotage != Sabotage::kSkipInvalidation) e.invalidate(op);
  e.invalidate_wait();
  publish(credits);
  counters_[slot].waits.fetch_add(1, std::memory_order_relaxed);
  log(slot, {0, LogKind::kWait, 0, 0, credits.size(), 0, 0, 0});
}

// One host edit of the second-level mapping of a page holding a nested first-level table,
// announced as Linux announces a change of a nesting parent's second level: a type 0x2
// invalidation by GPA (page-selective, sometimes a few pages around it, IH either way) or of
// the whole domain, then a wait. Leaf writers are held off meanwhile (they write through the
// very mapping being edited).
bool Run::edit_table(unsigned slot, Rng &rng) {
  std::unique_lock<std::shared_mutex> lock(m_.table_mu);
  const unsigned l = unsigned(rng.below(4));
  Machine::TablePage &tp = m_.tables[l];
  Versioned &ts = m_.table_state[l];
  MachineMemory &mem = m_.engine->memory();
  auto make = [&] {
    invq::InvalidationOp op;
    op.caches =
        rng.below(4) == 0 ? invq::kAllCaches : uint8_t(invq::kCacheIotlb | invq::kCachePaging);
    op.did = kAs[kNested].did;
    if (rng.below(4) == 0) {
      op.scope = invq::Scope::kDomain;
    } else {
      op.scope = invq::Scope::kRange;
      op.addr_is_gpa = true;
      op.leaf = rng.next() & 1;
      const uint64_t before = std::min<uint64_t>(rng.below(3), tp.gpa >> 12);
      op.addr = tp.gpa - before * 4096;
      op.npages = before + 1 + rng.below(3);
    }
    return op;
  };
  auto set_state = [&](State st) {
    const uint64_t v = ts.written.load(std::memory_order_relaxed) + 1;
    ts.hist[v % kHist].store(v << 2 | st, std::memory_order_release);
    return v;
  };
  auto map = [&](uint64_t hpa) {
    return m_.sl_nested->map(tp.gpa, hpa, 12, build::sl_leaf_bits(7)) == build::Status::kOk;
  };
  const unsigned kind = unsigned(rng.below(3));
  log(slot, {0, LogKind::kTableEdit, kNested, uint16_t(l + 1), kind, tp.gpa, tp.hpa, 0});
  if (kind == 0) {  // unmap, let translators run into it, map back
    const uint64_t v = set_state(kUnmapped);
    if (m_.sl_nested->unmap(tp.gpa, 12) != build::Status::kOk) {
      violation(slot, "second-level unmap of a table page failed");
      return false;
    }
    ts.written.store(v, std::memory_order_release);
    announce(slot, make());
    for (unsigned i = 0; i < 16 && !stopping(); ++i) std::this_thread::yield();  // dwell
    const uint64_t w = set_state(kReadWrite);
    if (!map(tp.hpa)) {
      violation(slot, "second-level map of a table page failed");
      return false;
    }
    ts.written.store(w, std::memory_order_release);
    announce(slot, make());
    return true;
  }
  // Remap to a copy (kind 1) or move (kind 2: the old page is scrubbed once the change is
  // announced, as when the host reuses it; a walk still reading it then sees zeros).
  std::array<uint8_t, 4096> page;
  if (mem.read(tp.hpa, page.data(), page.size()) != 0 ||
      mem.write(tp.spare, page.data(), page.size()) != 0) {
    violation(slot, "copying a table page failed");
    return false;
  }
  const uint64_t v = set_state(kReadWrite);
  if (!map(tp.spare)) {
    violation(slot, "second-level remap of a table page failed");
    return false;
  }
  ts.written.store(v, std::memory_order_release);
  std::swap(tp.hpa, tp.spare);
  announce(slot, make());
  if (kind == 2) {
    m_.table_moved[l].store(v, std::memory_order_release);
    page.fill(0);
    if (mem.write(tp.spare, page.data(), page.size()) != 0) {
      violation(slot, "scrubbing a table page failed");
      return false;
    }
  }
  return true;
}

// A random typed op of granularity g.
invq::InvalidationOp make_op(Rng &rng, unsigned g, uint64_t pages, uint64_t chunks) {
  invq::InvalidationOp op;
  op.caches =
      rng.below(4) == 0 ? invq::kAllCaches : uint8_t(invq::kCacheIotlb | invq::kCachePaging);
  const unsigned as = unsigned(rng.below(kAsCount));
  op.did = kAs[as].did;
  op.pasid = kAs[as].pasid;
  op.source_id = kAs[as].sid;
  switch (g) {
    case kGranPage:
    case kGranRange: {
      const unsigned fl_as = rng.next() & 1 ? kFl : kNested;
      op.did = kAs[fl_as].did;
      op.pasid = kAs[fl_as].pasid;
      op.scope = invq::Scope::kRange;
      const uint64_t p = rng.below(pages);
      op.addr = kIova + p * 4096;
      op.npages = g == kGranPage ? 1 : (rng.below(8) == 0 ? 2048 : 1 + rng.below(16));
      op.leaf = rng.next() & 1;
      break;
    }
    case kGranPasid:
      op.scope = invq::Scope::kPasid;
      break;
    case kGranDomain:
      op.scope = invq::Scope::kDomain;
      break;
    case kGranGlobal:
      op.scope = invq::Scope::kGlobal;
      break;
    default: {  // GPA: a second-level change, in the nested or the second-level-only domain
      op.scope = invq::Scope::kRange;
      op.addr_is_gpa = true;
      op.leaf = rng.next() & 1;
      const uint64_t pick = rng.below(8);
      if (pick < 3 && chunks) {
        op.did = kAs[kNested].did;
        op.addr = chunk_gpa(rng.below(chunks)) + rng.below(1u << 18) * 4096;
        op.npages = 1 + rng.below(4);
      } else if (pick == 3) {  // the guest-table range of the nested domain
        op.did = kAs[kNested].did;
        op.addr = rng.below(64) * 4096;
        op.npages = 1 + rng.below(4);
      } else if (pick == 4) {  // the first-level-only domain: VT-d still drops its entries
        op.did = kAs[kFl].did;
        op.addr = rng.below(1u << 20) * 4096;
        op.npages = 1;
      } else {
        op.did = kAs[kSl].did;
        op.addr = kIova + rng.below(pages) * 4096;
        op.npages = 1 + rng.below(8);
      }
      break;
    }
  }
  return op;
}

void Run::invalidator(unsigned slot, unsigned index) {
  Rng rng(opt_.seed * 1000 + 300 + index);
  Counters &ctr = counters_[slot];
  Engine &e = *m_.engine;
  std::vector<Credit> credits;
  while (!stopping()) {
    credits.clear();
    const unsigned nops = 1 + unsigned(rng.below(3));  // a batch: coalescing gets to work
    for (unsigned i = 0; i < nops; ++i) {
      const unsigned g = unsigned(rng.below(kGranCount));
      if (!(opt_.granularities >> g & 1)) {
        --i;
        continue;
      }
      const invq::InvalidationOp op = make_op(rng, g, m_.npages(), m_.chunks);
      credit(op, credits);
      log(slot, {0, LogKind::kInvalidate, 0, 0, g, uint64_t(op.did) << 32 | op.pasid, op.addr,
                 op.npages});
      if (opt_.sabotage != Sabotage::kSkipInvalidation) e.invalidate(op);
      ctr.typed[g].fetch_add(1, std::memory_order_relaxed);
    }
    e.invalidate_wait();
    publish(credits);
    log(slot, {0, LogKind::kWait, 0, 0, credits.size(), 0, 0, 0});
    ctr.waits.fetch_add(1, std::memory_order_relaxed);
  }
}

// VT-d queued invalidation: descriptors written into the ring in machine memory, then the
// tail register; a wait descriptor with a status write closes each batch.
void Run::qi_invalidator(unsigned slot) {
  Rng rng(opt_.seed * 1000 + 400);
  Counters &ctr = counters_[slot];
  Engine &e = *m_.engine;
  MachineMemory &mem = e.memory();
  EngineInvalidation &inv = e.invalidation();
  constexpr uint64_t kEntries = 256;
  if (inv.qi_configure(kQiRing, kEntries, 256) != 0) {
    violation(slot, "qi_configure refused a valid queue");
    return;
  }
  uint64_t tail = 0;
  uint32_t status_seq = 0;
  std::vector<Credit> credits;
  auto put = [&](uint64_t qw0, uint64_t qw1) {
    const uint64_t qw[4] = {qw0, qw1, 0, 0};  // 0x6 exists only as a 256-bit descriptor
    mem.write(kQiRing + tail * 32, qw, 32);
    tail = (tail + 1) % kEntries;
  };
  while (!stopping()) {
    credits.clear();
    const unsigned nops = 1 + unsigned(rng.below(3));
    for (unsigned i = 0; i < nops; ++i) {
      uint64_t qw0 = 0, qw1 = 0;
      const unsigned g = unsigned(rng.below(kGranCount));
      if (!(opt_.granularities >> g & 1)) {
        --i;
        continue;
      }
      const unsigned as = unsigned(rng.below(2));  // FL or nested for PASID-based ops
      const uint64_t did = kAs[as].did, pasid = kAs[as].pasid;
      const uint64_t ih = (rng.next() & 1) << 6;
      switch (g) {
        case kGranPage:
        case kGranRange: {  // PASID-based IOTLB, page-selective-within-PASID (G=3), AM
          const uint64_t am = g == kGranPage ? 0 : 1 + rng.below(4);
          const uint64_t p = rng.below(m_.npages()) & ~((uint64_t{1} << am) - 1);
          qw0 = 0x6 | (3u << 4) | did << 16 | pasid << 32;
          qw1 = (kIova + p * 4096) | ih | am;
          break;
        }
        case kGranPasid:
          qw0 = 0x6 | (2u << 4) | did << 16 | pasid << 32;
          break;
        case kGranDomain:  // IOTLB domain-selective (G=2), any of the three domains
          qw0 = 0x2 | (2u << 4) | uint64_t(kAs[rng.below(kAsCount)].did) << 16;
          break;
        case kGranGlobal:
          qw0 = 0x2 | (1u << 4);
          break;
        default: {  // IOTLB page-selective-within-domain (G=3): GPA-addressed
          const bool nested = m_.chunks && (rng.next() & 1);
          const uint64_t gpa = nested ? chunk_gpa(rng.below(m_.chunks)) + rng.below(1u << 18) * 4096
                                      : kIova + rng.below(m_.npages()) * 4096;
          qw0 = 0x2 | (3u << 4) | uint64_t(kAs[nested ? kNested : kSl].did) << 16;
          qw1 = gpa | ih;
          break;
        }
      }
      invq::RawDescriptor raw;
      raw.qw[0] = qw0;
      raw.qw[1] = qw1;
      const invq::DecodeResult d = invq::decode_descriptor(raw, invq::DescriptorWidth::k256);
      if (!d.ok() || d.descriptor.kind != invq::DecodedKind::kOp) {
        violation(slot, "stress QI encoder produced an invalid descriptor (tool bug)");
        return;
      }
      credit(d.descriptor.op, credits);
      put(qw0, qw1);
      log(slot, {0, LogKind::kQi, 0, 0, g, qw0, qw1, 0});
      ctr.qi[g].fetch_add(1, std::memory_order_relaxed);
    }
    if (++status_seq == 0) status_seq = 1;
    put(0x5 | (1u << 5) | uint64_t(status_seq) << 32, kQiStatus);
    const int rc = inv.qi_write_tail(tail);
    if (rc != 0) {
      uint64_t head = inv.queue().head();
      violation(slot, "qi_write_tail returned " + std::to_string(rc) + " (head " +
                          std::to_string(head) + ", tail " + std::to_string(tail) + ")");
      return;
    }
    // Without a worker the status write has landed when write_tail returns; with one, poll
    // the status word as a driver would.
    for (unsigned spins = 0;; ++spins) {
      uint32_t st = 0;
      mem.read(kQiStatus, &st, 4);
      if (st == status_seq) break;
      if (!opt_.background) {
        violation(slot, "QI wait status not written when write_tail returned");
        return;
      }
      if (spins % 16 == 15) std::this_thread::yield();
    }
    publish(credits);
    log(slot, {0, LogKind::kWait, 1, 0, credits.size(), status_seq, 0, 0});
    ctr.waits.fetch_add(1, std::memory_order_relaxed);
  }
}

std::string Run::dump_log() const {
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
  for (size_t i = all.size() > keep ? all.size() - keep : 0; i < all.size(); ++i) {
    const LogEntry &e = all[i].e;
    char buf[256];
    switch (e.kind) {
      case LogKind::kTranslate:
        if (e.c >> 63)
          std::snprintf(buf, sizeof buf,
                        "translate %s page %u %s%s c_before=%llu -> fault 0x%llx c_after=%llu",
                        as_name(e.as), e.page, (e.a & 0xFF) == kAccessWrite ? "W" : "R",
                        (e.a >> 8) & 1 ? " (handle)" : "", (unsigned long long)e.b,
                        (unsigned long long)(e.c & 0xFF), (unsigned long long)e.d);
        else
          std::snprintf(buf, sizeof buf,
                        "translate %s page %u %s%s c_before=%llu -> 0x%llx (v%llu) c_after=%llu",
                        as_name(e.as), e.page, (e.a & 0xFF) == kAccessWrite ? "W" : "R",
                        (e.a >> 8) & 1 ? " (handle)" : "", (unsigned long long)e.b,
                        (unsigned long long)e.c, (unsigned long long)((e.c >> 12) & 0xFFFF),
                        (unsigned long long)e.d);
        break;
      case LogKind::kMutate: {
        static const char *const st[] = {"unmapped", "read-only", "read-write"};
        std::snprintf(buf, sizeof buf, "mutate %s page %u -> v%llu %s", as_name(e.as), e.page,
                      (unsigned long long)e.a, st[e.b & 3]);
        break;
      }
      case LogKind::kMutateChunk:
        std::snprintf(buf, sizeof buf, "mutate nested SL chunk %u -> w%llu", e.page,
                      (unsigned long long)e.a);
        break;
      case LogKind::kTableEdit: {
        static const char *const kinds[] = {"unmap+restore", "remap to copy", "move+scrub"};
        std::snprintf(buf, sizeof buf, "host %s of level-%u table page gpa=0x%llx hpa=0x%llx",
                      kinds[e.a % 3], e.page, (unsigned long long)e.b, (unsigned long long)e.c);
        break;
      }
      case LogKind::kInvalidate:
        std::snprintf(buf, sizeof buf, "invalidate %s did=%llu pasid=%llu addr=0x%llx npages=%llu",
                      granularity_name(unsigned(e.a)), (unsigned long long)(e.b >> 32),
                      (unsigned long long)(e.b & 0xFFFFFFFF), (unsigned long long)e.c,
                      (unsigned long long)e.d);
        break;
      case LogKind::kQi:
        std::snprintf(buf, sizeof buf, "qi descriptor %s qw0=0x%llx qw1=0x%llx",
                      granularity_name(unsigned(e.a)), (unsigned long long)e.b,
                      (unsigned long long)e.c);
        break;
      case LogKind::kWait:
        std::snprintf(buf, sizeof buf, "%s wait completed, published %llu page versions",
                      e.as ? "qi" : "typed", (unsigned long long)e.a);
        break;
    }
    os << "  #" << e.seq << " t" << all[i].slot << " " << buf << "\n";
  }
  return os.str();
}

// Event hooks during a run (--events): every event is checked for what must hold whatever the
// timing, so the observed translate paths and the emission sites run under the storm's
// checker (a translation taking the observed path must still be exact) and under TSan.
struct EventCheck {
  std::atomic<uint64_t> events{0}, errors{0};
  static void on_event(void *user, const Event &e) {
    auto *c = static_cast<EventCheck *>(user);
    c->events.fetch_add(1, std::memory_order_relaxed);
    bool ok = true;
    if (e.translate) {
      const TranslateEvent &t = *e.translate;
      // A fault before any walk is a structure fault; an answer has no fault; a fault event
      // is a failed translation.
      if (t.source == TranslateSource::kStructures)
        ok = !t.result.ok && t.result.fault.stage == FaultStage::kStructures;
      if (t.result.ok) ok = ok && t.result.fault.reason == FaultReason{};
      if (e.kind == kEventFault) ok = ok && !t.result.ok;
    } else if (e.invalidation) {
      const InvalidationEvent &inv = *e.invalidation;
      uint64_t removed = 0;
      for (size_t i = 0; i < kEventCaches; ++i) {
        removed += inv.removed[i];
        ok = ok && inv.over[i] <= inv.removed[i];
      }
      ok = ok && removed == inv.entries.size();
    }
    if (!ok) c->errors.fetch_add(1, std::memory_order_relaxed);
  }
};

Summary Run::go() {
  const unsigned nthreads = unsigned(rings_.size());
  EventCheck event_check;
  const int hook =
      opt_.events ? m_.engine->add_event_hook(opt_.events, EventCheck::on_event, &event_check) : -1;
  if (opt_.events && hook < 0) throw std::runtime_error("cannot add the event hook");
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
  for (unsigned i = 0; i < opt_.mutators; ++i, ++slot) spawn([this, slot, i] { mutator(slot, i); });
  for (unsigned i = 0; i < opt_.invalidators; ++i, ++slot)
    spawn([this, slot, i] { invalidator(slot, i); });
  if (opt_.qi) spawn([this, slot] { qi_invalidator(slot); });

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
      // The timed wait is the run's clock (progress ticks and the time bound), not a way to
      // order threads: everything that must happen-before something else uses atomics.
      const auto until = opt_.progress ? std::min(next_tick, deadline) : deadline;
      cv_.wait_until(lock, until, [&] { return stop_.load(); });
      const auto now = Clock::now();
      if (opt_.progress && now >= next_tick) {
        const uint64_t tr = total(&Counters::translations);
        uint64_t inv = 0;
        for (unsigned t = 0; t < nthreads; ++t)
          for (unsigned g = 0; g < kGranCount; ++g)
            inv += counters_[t].typed[g].load() + counters_[t].qi[g].load();
        std::fprintf(stderr,
                     "[%5.0fs] translations %llu (%.2f M/s)  mutations %llu  invalidations %llu  "
                     "waits %llu  violations %llu\n",
                     std::chrono::duration<double>(now - t0).count(), (unsigned long long)tr,
                     double(tr - last_tr) / 1e6, (unsigned long long)total(&Counters::mutations),
                     (unsigned long long)inv, (unsigned long long)total(&Counters::waits),
                     (unsigned long long)violations_.load());
        last_tr = tr;
        next_tick += std::chrono::seconds(1);
      }
      if (now >= deadline) stop_.store(true);
    }
  }
  for (std::thread &t : threads) t.join();
  if (hook >= 0) m_.engine->remove_event_hook(hook);

  Summary s;
  s.events = event_check.events.load();
  if (const uint64_t bad = event_check.errors.load()) {
    violations_.fetch_add(bad);
    std::lock_guard lock(mu_);
    if (first_violation_.empty()) first_violation_ = std::to_string(bad) + " malformed events";
  }
  s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  s.translations = total(&Counters::translations);
  s.faults = total(&Counters::faults);
  s.mutations = total(&Counters::mutations);
  s.table_edits = total(&Counters::table_edits);
  s.waits = total(&Counters::waits);
  s.unverifiable = total(&Counters::unverifiable);
  for (unsigned t = 0; t < nthreads; ++t)
    for (unsigned g = 0; g < kGranCount; ++g) {
      s.typed[g] += counters_[t].typed[g].load();
      s.qi[g] += counters_[t].qi[g].load();
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

const char *granularity_name(unsigned g) {
  static const char *const names[] = {"page", "range", "pasid", "domain", "global", "gpa"};
  return g < kGranCount ? names[g] : "?";
}

std::string command_line(const Options &o) {
  std::ostringstream os;
  os << "nestor-stress --seed " << o.seed << " --translators " << o.translators << " --mutators "
     << o.mutators << " --invalidators " << o.invalidators << (o.qi ? "" : " --no-qi")
     << " --seconds " << o.seconds << " --pages " << o.pages << " --iotlb-entries "
     << o.iotlb_entries << " --psc-entries " << o.psc_entries << (o.drain ? " --drain" : "")
     << (o.coalesce ? "" : " --no-coalesce") << (o.background ? " --background" : "")
     << (o.contract ? " --contract" : "") << (o.table_edits ? "" : " --no-table-edits")
     << (o.gpa_dependencies ? " --gpa-dependencies" : "");
  if (o.max_translations) os << " --translations " << o.max_translations;
  if (o.events) os << " --events " << o.events;
  if ((o.granularities & 0x3F) != 0x3F) os << " --granularities " << (o.granularities & 0x3F);
  if ((o.address_spaces & 7) != 7) os << " --address-spaces " << (o.address_spaces & 7);
  if (o.sabotage == Sabotage::kSkipInvalidation) os << " --sabotage skip-invalidation";
  if (o.sabotage == Sabotage::kDrainCheckWithoutDrain)
    os << " --sabotage drain-check-without-drain";
  if (o.sabotage == Sabotage::kNarrowGpaInvalidation) os << " --sabotage narrow-gpa-invalidation";
  if (o.owner_queues) os << " --owner-queues " << o.owner_queues;
  if (o.sabotage == Sabotage::kSkipOwnerInvalidation) os << " --sabotage skip-owner-invalidation";
  return os.str();
}

namespace {

// The owner-queue world's summary: the shared lines, then what the owners' queues did.
void print_owner_summary(std::ostream &os, const Options &opt, const Summary &s) {
  os << "nestor-stress summary (owner queues: " << opt.owner_queues << " VMs): seed " << opt.seed
     << ", " << s.seconds << " s\n"
     << "  translations  " << s.translations << " (" << uint64_t(double(s.translations) / s.seconds)
     << "/s), expected faults " << s.faults << ", unverifiable " << s.unverifiable << "\n"
     << "  mutations     " << s.mutations << " (guest first-level leaves)\n"
     << "  waits         " << s.waits << " (owner queues + host typed)\n"
     << "  owner descriptors by kind:";
  for (unsigned g = 0; g < kOwnerGranCount; ++g)
    os << " " << owner_granularity_name(g) << " " << s.owner[g];
  os << "\n  host typed invalidations:";
  for (unsigned g = 0; g < kGranGpa; ++g) os << " " << granularity_name(g) << " " << s.typed[g];
  os << "\n  hostile descriptors refused with IQE " << s.hostile << "\n";
  for (size_t i = 0; i < s.owner_queues.size(); ++i) {
    const OwnerQueueSummary &q = s.owner_queues[i];
    os << "  owner " << i << " queue: tail writes " << q.tail_writes << ", descriptors "
       << q.descriptors << ", host ops " << q.ops_submitted << ", waits " << q.waits << ", errors "
       << q.errors << " (not owned " << q.refused_not_owned << ", host-only " << q.refused_host_only
       << ")\n";
  }
  os << "  violations    " << s.violations << "\n";
  if (!s.report.empty()) os << s.report;
}

}  // namespace

void print_summary(std::ostream &os, const Options &opt, const Summary &s) {
  if (opt.owner_queues) {
    print_owner_summary(os, opt, s);
    return;
  }
  os << "nestor-stress summary: seed " << opt.seed << ", " << s.seconds << " s\n"
     << "  translations  " << s.translations << " (" << uint64_t(double(s.translations) / s.seconds)
     << "/s), expected faults " << s.faults << ", unverifiable " << s.unverifiable << "\n"
     << "  mutations     " << s.mutations << " (table-page edits " << s.table_edits << ")\n"
     << "  waits         " << s.waits << "\n"
     << "  events        " << s.events << "\n"
     << "  invalidations by granularity (typed / QI):";
  for (unsigned g = 0; g < kGranCount; ++g)
    os << " " << granularity_name(g) << " " << s.typed[g] << "/" << s.qi[g];
  os << "\n  violations    " << s.violations << "\n";
  if (!s.report.empty()) os << s.report;
}

Summary run(const Options &opt) {
  if (opt.pages < 4 || opt.pages > 256 || opt.pages % 4)
    throw std::invalid_argument("pages must be a multiple of 4 in [4, 256]");
  if (opt.translators == 0) throw std::invalid_argument("need at least one translator");
  if (opt.mutators == 0) throw std::invalid_argument("need at least one mutator");
  if (!(opt.granularities & 0x3F) || !(opt.address_spaces & 7))
    throw std::invalid_argument("empty granularity or address-space selection");
  if (opt.owner_queues > 8) throw std::invalid_argument("owner-queues must be in [0, 8]");
  if (opt.owner_queues) {
    // The owner-queue world has its own address spaces and invalidation kinds; options that
    // select among the host-built world's would silently mean nothing there.
    if (opt.contract || opt.gpa_dependencies || opt.events || (opt.granularities & 0x3F) != 0x3F ||
        (opt.address_spaces & 7) != 7 ||
        (opt.sabotage != Sabotage::kNone && opt.sabotage != Sabotage::kSkipOwnerInvalidation))
      throw std::invalid_argument(
          "--contract, --gpa-dependencies, --events, --granularities, --address-spaces and "
          "the host-world sabotages do not apply with --owner-queues");
    return run_owner_queues(opt);
  }
  if (opt.sabotage == Sabotage::kSkipOwnerInvalidation)
    throw std::invalid_argument("skip-owner-invalidation needs --owner-queues");
  Run r(opt);
  return r.go();
}

}  // namespace nestor::stress
