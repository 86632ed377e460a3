// Randomized differential test. A seeded generator picks random mappings into a plain
// std::map model, the builders write them into engine memory, and random requests through the
// engine are compared with a deliberately simple reference computed from the model alone:
// same HPA, page size and permissions, or the same fault (reason, and level where the model
// knows it). Set NESTOR_DIFF_SEED to replay; the failing seed is printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include "engine_support.h"
#include "nestor/engine.h"
#include "nestor/invq/op.h"
#include "nestor/walkers/builder.h"

namespace nestor {
namespace {

using test::BumpSpace;
using Key = std::pair<int, uint64_t>;  // (level, address >> shift(level))

constexpr unsigned shift_of(int level) { return 12 + 9 * unsigned(level - 1); }
constexpr uint64_t kTableBase = 0x100'0000, kTableEnd = 0x1000'0000;  // host table pool
constexpr uint64_t kStructBase = 0x10'0000, kStructEnd = 0x100'0000;
constexpr uint64_t kGuestTables = 0x40'0000'0000ull;  // GPA of nested FL tables (256 GiB)
constexpr uint64_t kGuestTablesEnd = kGuestTables + (64ull << 20);

// --- the model -------------------------------------------------------------------------------
struct Leaf {
  uint64_t out;
  int level;
  // first level: writable/user/exec; second level: R/W/X permission bits
  bool w = true, u = true, x = true;
  uint8_t perms = 7;
};

struct Model {
  int levels = 4;
  std::map<Key, Leaf> leaves;
  std::set<Key> tables;                  // entries that point at a table
  std::map<Key, uint8_t> fl_clear;       // FL non-leaf: 1 = clear W, 2 = clear U, 4 = set XD
  std::map<Key, uint8_t> sl_keep;        // SL non-leaf: permission bits kept

  // What the builder must answer for map(va, level).
  bool can_map(uint64_t va, int level) const {
    for (int l = levels; l > level; --l)
      if (leaves.count({l, va >> shift_of(l)})) return false;  // a larger page covers it
    return !(level > 1 && tables.count({level, va >> shift_of(level)}));  // a table hangs here
  }
  void map(uint64_t va, const Leaf &leaf) {
    for (int l = levels; l > leaf.level; --l) tables.insert({l, va >> shift_of(l)});
    leaves[{leaf.level, va >> shift_of(leaf.level)}] = leaf;
  }
};

struct Lookup {
  const Leaf *leaf = nullptr;
  int level = 0;  // leaf level, or the level whose entry is not present
  bool w = true, u = true, xd = false;  // first-level path attributes (non-leaf part)
  uint8_t perms = 7;                    // second-level path permissions (non-leaf part)
};

Lookup lookup(const Model &m, uint64_t a) {
  Lookup r;
  for (int l = m.levels; l >= 1; --l) {
    const Key k{l, a >> shift_of(l)};
    if (m.tables.count(k)) {
      if (auto it = m.fl_clear.find(k); it != m.fl_clear.end()) {
        r.w = r.w && !(it->second & 1);
        r.u = r.u && !(it->second & 2);
        r.xd = r.xd || (it->second & 4);
      }
      if (auto it = m.sl_keep.find(k); it != m.sl_keep.end()) r.perms &= it->second;
      continue;
    }
    r.level = l;
    if (auto it = m.leaves.find(k); it != m.leaves.end()) r.leaf = &it->second;
    return r;
  }
  return r;
}

struct Expect {
  FaultReason fault = FaultReason::kNone;
  int level = -1;  // compared when >= 0
  uint64_t out = 0;
  unsigned shift = 0;
  uint8_t perms = 0;
};

struct FlFlags {
  bool sre, ere, wpe;
};

Expect ref_first_level(const Model &m, const FlFlags &f, uint64_t iova, uint8_t acc, bool priv) {
  Expect e;
  const unsigned width = m.levels == 5 ? 57 : 48;
  const uint64_t top = iova >> (width - 1);
  if (top != 0 && top != (~0ull >> (width - 1))) return {FaultReason::kNonCanonicalAddress};
  if (priv && !f.sre) return {FaultReason::kSupervisorRequestsDisabled};
  if ((acc & kAccessExec) && !f.ere) return {FaultReason::kExecuteRequestsDisabled};
  const Lookup l = lookup(m, iova);
  if (!l.leaf) return {FaultReason::kFirstLevelEntryNotPresent, l.level};
  const bool w = l.w && l.leaf->w, u = l.u && l.leaf->u, xd = l.xd || !l.leaf->x;
  uint8_t perms = kAccessRead;
  if (!priv) {
    if (!u) return {FaultReason::kUserAccessDenied, l.level};
    if (w) perms |= kAccessWrite;
    if (f.ere && !xd) perms |= kAccessExec;
  } else {
    if (!f.wpe || w) perms |= kAccessWrite;
    if (f.ere && !xd && !u) perms |= kAccessExec;
  }
  if ((acc & kAccessWrite) && !(perms & kAccessWrite)) return {FaultReason::kWriteDenied, l.level};
  if ((acc & kAccessExec) && !(perms & kAccessExec)) return {FaultReason::kExecuteDenied, l.level};
  const unsigned s = shift_of(l.level);
  e.out = l.leaf->out + (iova & ((1ull << s) - 1));
  e.shift = s;
  e.perms = perms;
  e.level = l.level;
  return e;
}

Expect ref_second_level(const Model &m, uint64_t gpa, uint8_t acc) {
  if (gpa >> shift_of(m.levels + 1)) return {FaultReason::kAddressBeyondMax};
  const Lookup l = lookup(m, gpa);
  if (!l.leaf) return {FaultReason::kSecondLevelEntryNotPresent, l.level};
  const uint8_t p = l.perms & l.leaf->perms;
  if ((acc & kAccessRead) && !(p & kAccessRead)) return {FaultReason::kReadDenied, l.level};
  if ((acc & kAccessWrite) && !(p & kAccessWrite)) return {FaultReason::kWriteDenied, l.level};
  if ((acc & kAccessExec) && !(p & kAccessExec)) return {FaultReason::kExecuteDenied, l.level};
  Expect e;
  const unsigned s = shift_of(l.level);
  e.out = l.leaf->out + (gpa & ((1ull << s) - 1));
  e.shift = s;
  e.perms = p;
  e.level = l.level;
  return e;
}

// --- one random table set --------------------------------------------------------------------
enum class Mode { kFirstLevel, kSecondLevel, kNested };

int mm_write(void *ctx, uint64_t pa, const void *buf, size_t len) {
  return static_cast<MachineMemory *>(ctx)->write(pa, buf, len);
}

class Scenario {
 public:
  // The engine is shared by all table sets of a test: its tables are rebuilt in the same
  // (zeroed on allocation) pages and its caches are invalidated globally between sets.
  Scenario(Mode mode, uint64_t seed, Engine &engine) : mode_(mode), rng_(seed), engine_(engine) {}

  // Returns a description of the first mismatch, or "" if all requests agreed.
  std::string run(int requests) {
    MachineMemory &mem = engine_.memory();
    BumpSpace<MachineMemory> structs(mem, kStructBase, kStructEnd), tables(mem, kTableBase, kTableEnd);
    test::VtdLayout layout(vtdw_writer{mm_write, &mem}, [&] { return structs.alloc_table(); });
    EXPECT_EQ(engine_.set_root_table(layout.root()), 0);
    const uint16_t sid = uint16_t(rng_());
    const uint32_t pasid = uint32_t(rng_() & 0xFFFFF);
    layout.device(sid);

    fl_.levels = coin(2) ? 5 : 4;
    sl_.levels = 3 + int(rng_() % 3);
    flags_ = {coin(6) != 0, coin(6) != 0, coin(2) == 0};
    const bool slade = coin(2);
    const unsigned aw = unsigned(sl_.levels - 2);

    build::SecondLevelBuilder<BumpSpace<MachineMemory>> slb(tables, tables.alloc_table(), sl_.levels);
    sl_root_ = slb.root();
    vtdw_pasid_entry pe{};
    if (mode_ == Mode::kFirstLevel) {
      build::FirstLevelBuilder<BumpSpace<MachineMemory>> flb(tables, tables.alloc_table(), fl_.levels);
      fl_root_ = flb.root();
      if (!populate_fl(flb)) return "builder disagreed with the model: " + log_.str();
      pe = test::pe_first_level(flb.root(), fl_.levels == 5);
    } else if (mode_ == Mode::kSecondLevel) {
      if (!populate_sl(slb, sl_data_limit())) return "builder disagreed with the model: " + log_.str();
      pe = test::pe_second_level(slb.root(), aw);
    } else {
      test::GuestSpace<MachineMemory, BumpSpace<MachineMemory>> guest(mem, tables, slb, kGuestTables,
                                                                      kGuestTablesEnd);
      build::FirstLevelBuilder<decltype(guest)> flb(guest, guest.alloc_table(), fl_.levels);
      fl_root_ = flb.root();
      // FL outputs: GPAs in [0, 8 GiB), now and then beyond the SL width.
      if (!populate_fl(flb)) return "builder disagreed with the model: " + log_.str();
      // The guest's table pages were mapped 4K RW into the SL: record them in the SL model.
      for (const auto &[gpa, hpa] : guest.gpa_to_hpa) {
        Leaf leaf{hpa, 1};
        leaf.perms = kAccessRead | kAccessWrite;
        sl_.map(gpa, leaf);
      }
      if (!populate_sl(slb, 8ull << 30)) return "builder disagreed with the model: " + log_.str();
      pe = test::pe_nested(flb.root(), slb.root(), aw, fl_.levels == 5);
    }
    pe.sre = flags_.sre;
    pe.ere = flags_.ere;
    pe.wpe = flags_.wpe;
    pe.slade = slade;
    pe.did = uint16_t(rng_());
    layout.pasid(sid, pasid, pe);
    restrict_non_leaf(mode_ == Mode::kSecondLevel ? nullptr : &fl_, mem);

    for (int i = 0; i < requests; ++i) {
      Request req;
      req.source_id = sid;
      req.has_pasid = true;
      req.pasid = pasid;
      req.iova = pick_address();
      static const uint8_t kAccess[] = {kAccessRead, kAccessRead, kAccessWrite, kAccessWrite,
                                        kAccessExec, kAccessRead | kAccessWrite,
                                        kAccessRead | kAccessExec};
      req.access = kAccess[rng_() % 7];
      req.privileged = coin(2);
      const Expect want = reference(req);
      const Result got = engine_.translate(req);
      if (std::string d = compare(want, got); !d.empty()) {
        std::ostringstream o;
        o << d << "\n  request iova=0x" << std::hex << req.iova << " access=" << int(req.access)
          << " priv=" << req.privileged << std::dec << " mode=" << int(mode_)
          << " fl_levels=" << fl_.levels << " sl_levels=" << sl_.levels << " sre=" << flags_.sre
          << " ere=" << flags_.ere << " wpe=" << flags_.wpe << "\n" << log_.str();
        return o.str();
      }
    }
    return "";
  }

 private:
  uint64_t coin(unsigned n) { return rng_() % n; }
  unsigned random_shift() {
    const unsigned r = unsigned(rng_() % 8);
    return r < 5 ? 12 : r < 7 ? 21 : 30;
  }
  uint64_t sl_data_limit() const { return 1ull << shift_of(sl_.levels + 1); }
  // Input addresses cluster in a few regions so that tables are shared.
  uint64_t region_address(unsigned width, unsigned shift) {
    static const uint64_t kRegions[] = {0, 0x0000'0000'4000'0000ull, 0x0000'0012'3000'0000ull,
                                        0x0000'7F00'0000'0000ull, 0x0010'0000'0000'0000ull};
    uint64_t base = kRegions[rng_() % 5];
    if (base >> (width - 1)) base = 0;  // keep inside the (lower half of the) input space
    const uint64_t span = std::min<uint64_t>(64ull << 30, 1ull << (width - 1));
    return (base + (rng_() % span)) & page_mask(shift) & ((1ull << (width - 1)) - 1);
  }

  template <class B>
  bool populate_fl(B &flb) {
    const int n = 1 + int(rng_() % 24);
    const unsigned width = fl_.levels == 5 ? 57 : 48;
    for (int i = 0; i < n; ++i) {
      unsigned shift = random_shift();
      const uint64_t va = region_address(width, shift);
      uint64_t out;
      if (mode_ == Mode::kNested) {
        // Usually inside [0, 8 GiB) where the SL maps things, sometimes beyond the SL width.
        out = coin(16) == 0 ? (1ull << shift_of(sl_.levels + 1)) + (rng_() % (1ull << 36))
                            : rng_() % (8ull << 30);
        out &= page_mask(shift);
        if (out >> 52) out &= (1ull << 52) - 1;
      } else {
        out = (rng_() % (1ull << 46)) & page_mask(shift);
      }
      Leaf leaf{out, int(shift - 12) / 9 + 1};
      leaf.w = coin(3) != 0;
      leaf.u = coin(3) != 0;
      leaf.x = coin(3) != 0;
      const bool ok = fl_.can_map(va, leaf.level);
      const build::Status st = flb.map(va, out, shift, build::fl_leaf_bits(leaf.w, leaf.u, leaf.x));
      log_ << "fl map 0x" << std::hex << va << " -> 0x" << out << std::dec << " s" << shift << " w"
           << leaf.w << " u" << leaf.u << " x" << leaf.x << " : " << build::status_name(st) << "\n";
      if (ok != (st == build::Status::kOk)) return false;
      if (ok) fl_.map(va, leaf);
      if (ok && coin(10) == 0) {  // sometimes unmap it again (its tables stay)
        if (build::Status u = flb.unmap(va, shift); u != build::Status::kOk) {
          log_ << "unmap failed: " << build::status_name(u) << "\n";
          return false;
        }
        fl_.leaves.erase({leaf.level, va >> shift});
        log_ << "fl unmap 0x" << std::hex << va << std::dec << "\n";
      }
    }
    return true;
  }

  template <class B>
  bool populate_sl(B &slb, uint64_t limit) {
    const int n = 1 + int(rng_() % 24);
    const unsigned width = unsigned(shift_of(sl_.levels + 1));
    std::vector<uint64_t> fl_outputs;
    for (const auto &[k, leaf] : fl_.leaves) fl_outputs.push_back(leaf.out);
    for (int i = 0; i < n; ++i) {
      const unsigned shift = random_shift();
      uint64_t gpa;
      if (mode_ == Mode::kNested && !fl_outputs.empty() && coin(4) != 0) {
        // Cover (part of) some first-level output.
        gpa = fl_outputs[rng_() % fl_outputs.size()] + (rng_() % (1ull << 30));
      } else {
        gpa = region_address(width, shift);
      }
      gpa &= page_mask(shift);
      if (gpa >= limit) continue;
      const uint64_t out = (rng_() % (1ull << 46)) & page_mask(shift);
      Leaf leaf{out, int(shift - 12) / 9 + 1};
      static const uint8_t kPerms[] = {1, 2, 3, 5, 6, 7};  // X alone would be "not present"
      leaf.perms = kPerms[rng_() % 6];
      const bool ok = sl_.can_map(gpa, leaf.level);
      const build::Status st = slb.map(gpa, out, shift, build::sl_leaf_bits(leaf.perms));
      log_ << "sl map 0x" << std::hex << gpa << " -> 0x" << out << std::dec << " s" << shift
           << " p" << int(leaf.perms) << " : " << build::status_name(st) << "\n";
      if (ok != (st == build::Status::kOk)) return false;
      if (ok) sl_.map(gpa, leaf);
    }
    return true;
  }

  // Restricts some non-leaf entries directly in memory and records it in the model. Nested:
  // never on entries that cover the guest's table pages (those must stay RW).
  void restrict_non_leaf(Model *fl_model, MachineMemory &mem) {
    auto pick = [&](Model &m) -> std::optional<Key> {
      if (m.tables.empty()) return std::nullopt;
      auto it = m.tables.begin();
      std::advance(it, long(rng_() % m.tables.size()));
      return *it;
    };
    const int n = int(rng_() % 4);
    for (int i = 0; i < n; ++i) {
      if (fl_model) {
        auto k = pick(*fl_model);
        if (!k) continue;
        // (nested: FL tables are reached through the SL model, set up above)
        const uint8_t what = uint8_t(1u << (rng_() % 3));
        const uint64_t slot = fl_entry_slot(*k);
        if (!slot) continue;
        uint64_t e;
        if (!mem.read64(slot, &e)) continue;
        e = what == 1 ? e & ~fl::kWritable : what == 2 ? e & ~fl::kUser : e | fl::kNoExecute;
        mem.write64(slot, e);
        fl_model->fl_clear[*k] |= what;
        log_ << "fl restrict L" << k->first << " 0x" << std::hex << (k->second << shift_of(k->first))
             << std::dec << " " << int(what) << "\n";
      }
      if (mode_ != Mode::kFirstLevel) {
        auto k = pick(sl_);
        if (!k) continue;
        const uint64_t lo = k->second << shift_of(k->first), hi = lo + (1ull << shift_of(k->first));
        if (mode_ == Mode::kNested && lo < kGuestTablesEnd && kGuestTables < hi) continue;
        const uint8_t drop = uint8_t(1u << (rng_() % 3));
        uint8_t &keep = sl_.sl_keep.try_emplace(*k, uint8_t(7)).first->second;
        if (!((keep & ~drop) & (kAccessRead | kAccessWrite))) continue;  // must stay present
        const uint64_t slot = sl_entry_slot(*k);
        uint64_t e;
        if (!slot || !mem.read64(slot, &e)) continue;
        mem.write64(slot, e & ~uint64_t(drop));
        keep = uint8_t(keep & ~drop);
        log_ << "sl restrict L" << k->first << " 0x" << std::hex << lo << std::dec << " drop "
             << int(drop) << "\n";
      }
    }
  }
  // Slot addresses, found by walking our own model-independent raw reads from the PASID entry
  // roots (kept from populate via these members).
  uint64_t fl_entry_slot(const Key &k) { return entry_slot(k, fl_root_, fl_.levels, true); }
  uint64_t sl_entry_slot(const Key &k) { return entry_slot(k, sl_root_, sl_.levels, false); }
  uint64_t entry_slot(const Key &k, uint64_t root, int levels, bool guest) {
    MachineMemory &mem = engine_.memory();
    const uint64_t va = k.second << shift_of(k.first);
    uint64_t table = root;
    for (int l = levels;; --l) {
      uint64_t hpa = table;
      if (guest) {  // FL tables in nested mode: GPA -> HPA through the SL model
        if (mode_ == Mode::kNested) {
          const Lookup t = lookup(sl_, table);
          if (!t.leaf) return 0;
          hpa = t.leaf->out + (table & 0xFFF);
        }
      }
      const uint64_t slot = hpa + ((va >> shift_of(l)) & 511) * 8;
      if (l == k.first) return slot;
      uint64_t e;
      if (!mem.read64(slot, &e)) return 0;
      table = e & 0x000F'FFFF'FFFF'F000ull;
    }
  }

 public:
  uint64_t fl_root_ = 0, sl_root_ = 0;

 private:
  uint64_t pick_address() {
    // Mapped addresses (any offset), nearby unmapped ones, and anything at all.
    const Model &m = mode_ == Mode::kSecondLevel ? sl_ : fl_;
    const unsigned r = unsigned(rng_() % 10);
    if (r < 6 && !m.leaves.empty()) {
      auto it = m.leaves.begin();
      std::advance(it, long(rng_() % m.leaves.size()));
      const unsigned s = shift_of(it->first.first);
      return (it->first.second << s) + (rng_() & ((1ull << s) - 1));
    }
    const unsigned width = mode_ == Mode::kSecondLevel ? unsigned(shift_of(sl_.levels + 1))
                                                       : (fl_.levels == 5 ? 57u : 48u);
    if (r < 8) return region_address(width, 12) | (rng_() & 0xFFF);
    if (r < 9) return rng_() & ((1ull << width) - 1);
    return rng_();
  }

  Expect reference(const Request &req) {
    switch (mode_) {
      case Mode::kFirstLevel: return ref_first_level(fl_, flags_, req.iova, req.access, req.privileged);
      case Mode::kSecondLevel: return ref_second_level(sl_, req.iova, req.access);
      case Mode::kNested: {
        Expect f = ref_first_level(fl_, flags_, req.iova, req.access, req.privileged);
        if (f.fault != FaultReason::kNone) return f;
        if (f.out >> shift_of(sl_.levels + 1)) return {FaultReason::kFirstLevelAddressBeyondGaw};
        Expect s = ref_second_level(sl_, f.out, req.access);
        if (s.fault != FaultReason::kNone) return s;
        s.shift = std::min(f.shift, s.shift);
        s.perms = uint8_t(s.perms & f.perms);
        s.level = -1;
        return s;
      }
    }
    return {};
  }

  static std::string compare(const Expect &w, const Result &g) {
    std::ostringstream o;
    if (w.fault != FaultReason::kNone) {
      if (g.ok)
        o << "expected fault 0x" << std::hex << int(w.fault) << ", engine translated to 0x" << g.t.out;
      else if (g.fault.reason != w.fault)
        o << "expected fault 0x" << std::hex << int(w.fault) << ", engine faulted 0x"
          << int(g.fault.reason);
      else if (w.level >= 0 && g.fault.level != w.level)
        o << "fault 0x" << std::hex << int(w.fault) << std::dec << " at level " << int(g.fault.level)
          << ", expected level " << w.level;
      return o.str();
    }
    if (!g.ok) {
      o << "expected 0x" << std::hex << w.out << ", engine faulted 0x" << int(g.fault.reason)
        << " stage " << int(g.fault.stage) << " level " << std::dec << int(g.fault.level);
    } else if (g.t.out != w.out || g.t.page_shift != w.shift || g.t.perms != w.perms) {
      o << std::hex << "expected out 0x" << w.out << " shift " << std::dec << w.shift << " perms "
        << int(w.perms) << std::hex << ", engine out 0x" << g.t.out << std::dec << " shift "
        << int(g.t.page_shift) << " perms " << int(g.t.perms);
    }
    return o.str();
  }

  Mode mode_;
  std::mt19937_64 rng_;
  Engine &engine_;
  Model fl_, sl_;
  FlFlags flags_{};
  std::ostringstream log_;

};

uint64_t base_seed() {
  if (const char *s = std::getenv("NESTOR_DIFF_SEED")) return std::strtoull(s, nullptr, 0);
  return 0x5EED'0000;
}

void run_sets(Mode mode, int sets, int requests, bool caching = true) {
  const uint64_t base = base_seed();
  EngineConfig cfg;
  cfg.caching = caching;
  Engine engine(cfg);
  ASSERT_EQ(engine.memory().add_ram(0, kTableEnd), 0);
  invq::InvalidationOp all;
  all.caches = invq::kAllCaches;
  all.scope = invq::Scope::kGlobal;
  for (int i = 0; i < sets; ++i) {
    const uint64_t seed = base + uint64_t(i) * 0x9E37'79B9 + uint64_t(mode) * 7;
    Scenario s(mode, seed, engine);
    const std::string d = s.run(requests);
    engine.invalidate(all);
    engine.invalidate_wait();
    ASSERT_TRUE(d.empty()) << "table set " << i << ", seed 0x" << std::hex << seed
                           << " (replay: NESTOR_DIFF_SEED=0x" << base << ")\n"
                           << d;
  }
}

TEST(Differential, FirstLevelOnly) { run_sets(Mode::kFirstLevel, 1000, 64); }
TEST(Differential, SecondLevelOnly) { run_sets(Mode::kSecondLevel, 1000, 64); }
TEST(Differential, Nested) { run_sets(Mode::kNested, 1000, 64); }
// The uncached reference engine must agree with the model too.
TEST(Differential, NestedUncached) { run_sets(Mode::kNested, 300, 64, false); }
TEST(Differential, FirstLevelUncached) { run_sets(Mode::kFirstLevel, 300, 64, false); }

}  // namespace
}  // namespace nestor
