// Invalidation queue wiring under concurrency (run under TSan in CI: label "concurrency").
//
// Mappings are version-tagged: page p at version v maps to base + (v << 24) + (p << 12), so a
// translation tells which version it saw. Producers remap a page to a new version, invalidate,
// wait, and only then publish the version as committed. A translation that starts after
// reading committed[p] == c must never return a version below c (invariant 1).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine_support.h"
#include "nestor/engine.h"
#include "nestor/invalidation.h"
#include "nestor/walkers/builder.h"

namespace nestor {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr uint64_t kDefaultScale = 20;  // sanitizers run ~10-50x slower
#else
constexpr uint64_t kDefaultScale = 1;
#endif

// NESTOR_STORM_SCALE=<n> divides the iteration counts further (or 1 to force the full run).
uint64_t scale() {
  if (const char *s = std::getenv("NESTOR_STORM_SCALE")) {
    const uint64_t v = std::strtoull(s, nullptr, 10);
    if (v > 0) return v;
  }
  return kDefaultScale;
}

using Space = test::BumpSpace<MachineMemory>;
using FlB = build::FirstLevelBuilder<Space>;
using SlB = build::SecondLevelBuilder<Space>;

constexpr uint64_t kRam = 64ull << 20;
constexpr uint64_t kFlOut = 0x0000'0066'0000'0000ull;
constexpr uint64_t kSlOut = 0x0000'0077'0000'0000ull;
constexpr uint64_t kGpaBase = 0x4000'0000;
constexpr uint16_t kSid = 0x0310;
constexpr uint16_t kFlDid = 5, kSlDid = 6;
constexpr uint32_t kFlPasid = 1, kSlPasid = 2;
constexpr uint64_t kFlLeaf = build::fl_leaf_bits(true, true, false);
constexpr uint64_t kSlLeaf = build::sl_leaf_bits(kAccessRead | kAccessWrite);

uint64_t tagged(uint64_t base, uint64_t page, uint64_t version) {
  return base + (version << 24) + (page << 12);
}

int write_cb(void *ctx, uint64_t pa, const void *buf, size_t len) {
  return static_cast<Engine *>(ctx)->memory().write(pa, buf, len);
}

// An engine with a first-level PASID (IOVA page p at p << 12) and a second-level-only PASID
// (GPA kGpaBase + (p << 12)), every page mapped at version 0, tables pre-built so remaps never
// allocate (the bump allocators are not thread-safe).
struct World {
  explicit World(EngineConfig cfg, uint64_t pages) : engine(tweak(cfg)), pages(pages) {
    EXPECT_EQ(engine.memory().add_ram(0, kRam), 0);
    structs = std::make_unique<Space>(engine.memory(), 0x10'0000, 0x80'0000);
    tables = std::make_unique<Space>(engine.memory(), 0x80'0000, kRam);
    layout = std::make_unique<test::VtdLayout>(vtdw_writer{&write_cb, &engine},
                                               [this] { return structs->alloc_table(); });
    fl = std::make_unique<FlB>(*tables, tables->alloc_table(), 4);
    sl = std::make_unique<SlB>(*tables, tables->alloc_table(), 4);
    for (uint64_t p = 0; p < pages; ++p) {
      EXPECT_EQ(fl->map(p << 12, tagged(kFlOut, p, 0), 12, kFlLeaf), build::Status::kOk);
      EXPECT_EQ(sl->map(kGpaBase + (p << 12), tagged(kSlOut, p, 0), 12, kSlLeaf),
                build::Status::kOk);
    }
    layout->device(kSid);
    vtdw_pasid_entry fpe = test::pe_first_level(fl->root());
    fpe.did = kFlDid;
    layout->pasid(kSid, kFlPasid, fpe);
    vtdw_pasid_entry spe = test::pe_second_level(sl->root());
    spe.did = kSlDid;
    layout->pasid(kSid, kSlPasid, spe);
    EXPECT_EQ(engine.set_root_table(layout->root()), 0);
  }
  static EngineConfig tweak(EngineConfig cfg) {
    // A/D updates would make walks write the very leaves producers rewrite; the tests are
    // about invalidation, not about A/D races.
    cfg.first_level_ad = false;
    return cfg;
  }

  Result translate(uint32_t pasid, uint64_t page) {
    Request req;
    req.source_id = kSid;
    req.has_pasid = true;
    req.pasid = pasid;
    req.iova = pasid == kFlPasid ? page << 12 : kGpaBase + (page << 12);
    req.access = kAccessRead;
    return engine.translate(req);
  }
  void remap(uint32_t pasid, uint64_t page, uint64_t version) {
    const build::Status s =
        pasid == kFlPasid ? fl->map(page << 12, tagged(kFlOut, page, version), 12, kFlLeaf)
                          : sl->map(kGpaBase + (page << 12), tagged(kSlOut, page, version), 12,
                                    kSlLeaf);
    ASSERT_EQ(s, build::Status::kOk);
  }
  invq::InvalidationOp page_op(uint32_t pasid, uint64_t page, uint64_t npages = 1) const {
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging;
    op.scope = invq::Scope::kRange;
    op.npages = npages;
    if (pasid == kFlPasid) {
      op.did = kFlDid;
      op.pasid = kFlPasid;
      op.addr = page << 12;
    } else {  // VT-d type 0x2 page-selective: by GPA, every PASID of the domain
      op.did = kSlDid;
      op.addr = kGpaBase + (page << 12);
      op.addr_is_gpa = true;
    }
    return op;
  }

  Engine engine;
  uint64_t pages;
  std::unique_ptr<Space> structs, tables;
  std::unique_ptr<test::VtdLayout> layout;
  std::unique_ptr<FlB> fl;
  std::unique_ptr<SlB> sl;
};

// Collects the first violation seen by any thread (gtest assertions are not for workers).
struct Violations {
  std::atomic<uint64_t> count{0};
  std::mutex mutex;
  std::string first;
  void report(const std::string &what) {
    if (count.fetch_add(1) == 0) {
      std::lock_guard lock(mutex);
      first = what;
    }
  }
};

// Version seen by a successful translation of `page`, or ~0 if it is not this page's mapping.
uint64_t version_of(const Result &r, uint32_t pasid, uint64_t page) {
  const uint64_t base = pasid == kFlPasid ? kFlOut : kSlOut;
  if (!r.ok || r.t.out < base) return ~uint64_t{0};
  const uint64_t off = r.t.out - base;
  if (((off >> 12) & 0xFFF) != page) return ~uint64_t{0};
  return off >> 24;
}

struct StormOptions {
  bool drain = false;
  bool background = false;
  bool coalesce = true;
  unsigned producers = 2;
  unsigned translators = 2;
  uint64_t iterations = 1000;  // per producer
  uint64_t pages = 256;
};

struct StormResult {
  uint64_t ops = 0, waits = 0, translations = 0;
};

// Producers remap pages and invalidate with a mix of granularities, then wait and publish;
// translators check every result against the published versions.
StormResult run_storm(const StormOptions &o, Violations &v) {
  EngineConfig cfg;
  cfg.drain = o.drain;
  cfg.background_invalidation = o.background;
  cfg.coalesce = o.coalesce;
  cfg.iotlb_entries = 4096;
  World w(cfg, o.pages);
  std::vector<std::atomic<uint64_t>> committed(2 * o.pages);  // [pasid slot * pages + page]
  auto slot = [&](uint32_t pasid, uint64_t page) { return (pasid == kFlPasid ? 0 : o.pages) + page; };
  std::atomic<unsigned> producers_left{o.producers};
  std::atomic<uint64_t> ops{0}, waits{0}, translations{0};

  std::vector<std::thread> threads;
  for (unsigned t = 0; t < o.translators; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(1000 + t);
      uint64_t n = 0;
      while (producers_left.load(std::memory_order_acquire) != 0) {
        const uint32_t pasid = (rng() & 1) ? kFlPasid : kSlPasid;
        const uint64_t page = rng() % o.pages;
        const uint64_t c = committed[slot(pasid, page)].load(std::memory_order_acquire);
        const Result r = w.translate(pasid, page);
        const uint64_t seen = version_of(r, pasid, page);
        if (seen == ~uint64_t{0} || seen < c)
          v.report("pasid " + std::to_string(pasid) + " page " + std::to_string(page) +
                   ": saw version " + std::to_string(seen) + " after version " +
                   std::to_string(c) + " was committed (ok=" + std::to_string(r.ok) + ")");
        ++n;
      }
      translations += n;
    });
  }
  for (unsigned p = 0; p < o.producers; ++p) {
    threads.emplace_back([&, p] {
      std::mt19937_64 rng(p + 1);
      EngineInvalidation &inv = w.engine.invalidation();
      std::vector<uint64_t> version(2 * o.pages, 0);
      std::vector<std::pair<uint32_t, uint64_t>> changed;
      uint64_t my_ops = 0, my_waits = 0;
      for (uint64_t it = 0; it < o.iterations; ++it) {
        changed.clear();
        const unsigned k = 1 + unsigned(rng() % 8);
        for (unsigned i = 0; i < k; ++i) {
          const uint32_t pasid = (rng() & 1) ? kFlPasid : kSlPasid;
          // Producer p owns pages p, p + producers, ...: no two remap the same page.
          const uint64_t page = (rng() % (o.pages / o.producers)) * o.producers + p;
          const uint64_t nv = ++version[slot(pasid, page)];
          w.remap(pasid, page, nv);
          changed.emplace_back(pasid, page);
          // Mostly page-selective (what coalescing merges), sometimes wider scopes.
          invq::InvalidationOp op = w.page_op(pasid, page);
          switch (rng() % 16) {
            case 0: op.scope = invq::Scope::kPasid; break;
            case 1: op.scope = invq::Scope::kDomain; break;
            case 2:
              if (rng() % 8 == 0) op.scope = invq::Scope::kGlobal;
              break;
            case 3:  // a range reaching over the neighbours
              if (page > 0) {
                op = w.page_op(pasid, page - 1, 3);
              }
              break;
            default: break;
          }
          inv.submit(op);
          ++my_ops;
          // Redundant page ops: what a guest driver flushing per page sends.
          if (rng() % 4 == 0) {
            inv.submit(w.page_op(pasid, page));
            ++my_ops;
          }
        }
        if (rng() % 32 == 0) {
          // The direct typed path (bind layer style) followed by the engine-level wait.
          w.engine.invalidate(w.page_op(changed[0].first, changed[0].second));
          ++my_ops;
          w.engine.invalidate_wait();
        } else {
          inv.wait();
        }
        ++my_waits;
        for (const auto &[pasid, page] : changed)
          committed[slot(pasid, page)].store(version[slot(pasid, page)],
                                             std::memory_order_release);
      }
      ops += my_ops;
      waits += my_waits;
      producers_left.fetch_sub(1, std::memory_order_acq_rel);
    });
  }
  for (std::thread &t : threads) t.join();
  // After everything settled, every page translates to its last version.
  for (uint32_t pasid : {kFlPasid, kSlPasid})
    for (uint64_t page = 0; page < o.pages; ++page) {
      const uint64_t c = committed[slot(pasid, page)].load();
      const uint64_t seen = version_of(w.translate(pasid, page), pasid, page);
      if (seen != c)
        v.report("final: pasid " + std::to_string(pasid) + " page " + std::to_string(page) +
                 " saw " + std::to_string(seen) + " expected " + std::to_string(c));
    }
  return {ops.load(), waits.load(), translations.load()};
}

TEST(InvalidationConcurrency, WaitCompletesOnlyAfterItsBatchIsApplied) {
  for (bool background : {false, true}) {
    Violations v;
    StormOptions o;
    o.background = background;
    o.iterations = std::max<uint64_t>(50, 2000 / scale());
    o.pages = 64;  // small: translators keep hitting pages producers just changed
    const StormResult r = run_storm(o, v);
    EXPECT_EQ(v.count.load(), 0u) << "background=" << background << ": " << v.first;
    EXPECT_GT(r.translations, 0u);
  }
}

TEST(InvalidationConcurrency, StormWithoutDrain) {
  Violations v;
  StormOptions o;
  o.iterations = std::max<uint64_t>(100, 25000 / scale());
  const StormResult r = run_storm(o, v);
  EXPECT_EQ(v.count.load(), 0u) << v.first;
  if (scale() == 1) {
    EXPECT_GE(r.ops, 200000u);  // "hundreds of thousands"
  }
  RecordProperty("ops", std::to_string(r.ops));
  RecordProperty("translations", std::to_string(r.translations));
}

TEST(InvalidationConcurrency, StormWithDrainAndWorker) {
  Violations v;
  StormOptions o;
  o.drain = true;
  o.background = true;
  o.iterations = std::max<uint64_t>(50, 1500 / scale());
  const StormResult r = run_storm(o, v);
  EXPECT_EQ(v.count.load(), 0u) << v.first;
  EXPECT_GT(r.translations, 0u);
}

TEST(InvalidationConcurrency, StormWithoutCoalescing) {
  Violations v;
  StormOptions o;
  o.coalesce = false;
  o.iterations = std::max<uint64_t>(100, 5000 / scale());
  run_storm(o, v);
  EXPECT_EQ(v.count.load(), 0u) << v.first;
}

// --- drain -----------------------------------------------------------------------------------

// Fault injector that parks the first read of one address until released: a translation held
// inside the engine, at a known point, without sleeping.
struct Hold {
  std::atomic<uint64_t> pa{0};
  std::atomic<bool> armed{true};
  std::atomic<bool> entered{false};
  std::atomic<bool> release{false};
  std::atomic<bool> released_inside{false};  // set before the held translation continues

  static bool fn(void *ctx, uint64_t pa, bool is_write) {
    auto *h = static_cast<Hold *>(ctx);
    if (!is_write && pa == h->pa.load() && h->armed.exchange(false)) {
      h->entered.store(true);
      while (!h->release.load()) std::this_thread::yield();
      h->released_inside.store(true);
    }
    return false;  // never fail the access
  }
};

struct DrainOutcome {
  bool done_while_held = false;        // the wait completed while the translation was held
  bool callback_saw_release = false;  // at completion, the held translation had been released
  bool held_result_ok = false;
};

DrainOutcome run_held_translation(bool drain) {
  EngineConfig cfg;
  cfg.drain = drain;
  World w(cfg, 16);
  Hold hold;
  hold.pa = w.fl->entry_address(5 << 12, 1);  // the leaf of page 5: read on an IOTLB miss
  w.engine.memory().set_fail_injector(&Hold::fn, &hold);
  DrainOutcome out;
  std::thread translator([&] { out.held_result_ok = w.translate(kFlPasid, 5).ok; });
  while (!hold.entered.load()) std::this_thread::yield();

  EngineInvalidation &inv = w.engine.invalidation();
  const uint64_t epoch_before = inv.epoch().current_epoch();
  inv.submit(w.page_op(kFlPasid, 5));
  invq::WaitOp wait;
  wait.callback = [&] { out.callback_saw_release = hold.released_inside.load(); };
  invq::WaitTicket ticket = inv.processor().submit_wait(std::move(wait));
  std::thread processor([&] { inv.processor().process_pending(); });
  if (drain) {
    // The processor has applied the batch and is inside the grace period once the epoch
    // moved. Give a broken drain every chance to complete the wait (bounded, never needed
    // for a correct one, which cannot complete while the translation is held).
    while (inv.epoch().current_epoch() == epoch_before) std::this_thread::yield();
    for (int i = 0; i < 20000 && !ticket.done(); ++i) std::this_thread::yield();
  } else {
    ticket.wait();  // nothing to drain: completes with the translation still held
  }
  out.done_while_held = ticket.done();
  hold.release.store(true);
  translator.join();
  processor.join();
  ticket.wait();
  w.engine.memory().set_fail_injector(nullptr, nullptr);
  return out;
}

TEST(InvalidationDrain, WaitWaitsForTranslationThatStartedBefore) {
  const DrainOutcome o = run_held_translation(true);
  EXPECT_FALSE(o.done_while_held);
  EXPECT_TRUE(o.callback_saw_release);
  EXPECT_TRUE(o.held_result_ok);
}

// Control: proves the hold really spans the wait, so the test above is not vacuous.
TEST(InvalidationDrain, WithoutDrainWaitDoesNotWaitForInFlightTranslation) {
  const DrainOutcome o = run_held_translation(false);
  EXPECT_TRUE(o.done_while_held);
  EXPECT_FALSE(o.callback_saw_release);
}

TEST(InvalidationDrain, ManyEnginesAndThreadsRecycleReaderSlots) {
  // More thread x engine registrations than EpochDomain has slots: slots of exited threads
  // go back, and engines destroyed before a thread exits are skipped safely.
  EngineConfig cfg;
  cfg.drain = true;
  World a(cfg, 4);
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 100; ++t)
      threads.emplace_back([&] { EXPECT_TRUE(a.translate(kFlPasid, 1).ok); });
    for (std::thread &t : threads) t.join();
  }
  EXPECT_LE(a.engine.invalidation().epoch().registered_readers(), 1u);
  // This thread outlives an engine it translated on.
  {
    World b(cfg, 4);
    EXPECT_TRUE(b.translate(kFlPasid, 2).ok);
  }
  World c(cfg, 4);
  EXPECT_TRUE(c.translate(kFlPasid, 3).ok);
  c.engine.invalidation().submit(c.page_op(kFlPasid, 3));
  c.engine.invalidate_wait();
}

}  // namespace
}  // namespace nestor
