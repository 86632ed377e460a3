// Concurrency: readers racing fillers and invalidators. No sleeps; every loop is bounded.
// Built and run under ThreadSanitizer in CI (label "concurrency").
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "nestor/caches/hash.h"
#include "nestor/caches/iotlb.h"
#include "nestor/caches/set_assoc_cache.h"
#include "nestor/caches/structure_caches.h"

namespace nestor::caches {
namespace {

constexpr uint64_t k4K = 1ull << 12, k1G = 1ull << 30;

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kScale = 1;
#else
constexpr int kScale = 4;
#endif

// Every payload word is derived from the key and a version, so a reader that mixed words of
// two different writes would see a mismatch.
struct Payload {
  uint64_t w[8];
};
Payload make_payload(uint64_t key, uint64_t version) {
  Payload p;
  p.w[0] = key;
  p.w[1] = version;
  for (int i = 2; i < 8; ++i) p.w[i] = mix64(key * 1000003 + version * 8 + i);
  return p;
}
bool consistent(uint64_t key, const Payload &p) {
  if (p.w[0] != key) return false;
  for (int i = 2; i < 8; ++i) {
    if (p.w[i] != mix64(key * 1000003 + p.w[1] * 8 + i)) return false;
  }
  return true;
}

struct K {
  uint64_t k;
};

// Spins briefly, then yields: the machine may have fewer cores than the test has threads, and
// a spinner must not burn the time slice the thread it waits for needs.
template <class Pred>
void spin_until(Pred &&pred) {
  for (int i = 0; !pred(); ++i) {
    if (i < 64) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

// Lets every thread start its loop together, so a fast writer cannot finish before the readers
// have begun (an atomic rendezvous, not a sleep).
class StartGate {
 public:
  explicit StartGate(int n) : n_(n) {}
  void arrive_and_wait() {
    arrived_.fetch_add(1, std::memory_order_acq_rel);
    spin_until([&] { return arrived_.load(std::memory_order_acquire) >= n_; });
  }

 private:
  const int n_;
  std::atomic<int> arrived_{0};
};

// Readers keep going while writers run and, once they stop, until they have seen some hits, so
// the test exercises hits however the scheduler orders the threads; max bounds every loop.
constexpr uint64_t kMinHits = 100;
bool keep_reading(int i, const std::atomic<bool> &stop, const std::atomic<uint64_t> &hits,
                  int max) {
  return i < max &&
         (!stop.load(std::memory_order_acquire) || hits.load(std::memory_order_relaxed) < kMinHits);
}
// Walkers keep filling until the reader is done (bounded by max).
bool keep_walking(int i, const std::atomic<bool> &reader_done, int max) {
  return i < max && !reader_done.load(std::memory_order_acquire);
}

TEST(Concurrency, SeqlockReadersNeverSeeTornEntries) {
  // One shard, few sets: writers and readers collide on the same sets constantly.
  SetAssocCache<K, Payload, 4> cache(SetAssocConfig{.capacity = 32, .shards = 1, .ways = 4});
  auto valid = [](uint64_t, const K &, const Payload &) { return true; };
  // Few keys: writers keep rewriting the very slots readers are copying.
  constexpr uint64_t kKeys = 6;
  const int kWrites = 100000 * kScale;
  std::atomic<int> writers_done{0};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> torn{0}, hits{0};
  StartGate gate(4);
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      gate.arrive_and_wait();
      uint64_t x = static_cast<uint64_t>(w) + 1;
      for (int i = 0; i < kWrites; ++i) {
        x = mix64(x);
        const uint64_t key = x % kKeys;
        if (i % 16 == 0) {
          cache.invalidate_set_of(K{key}, 0, [&](const K &k) { return k.k == key; });
        } else {
          cache.fill(1, K{key}, make_payload(key, x), valid);
        }
      }
      if (writers_done.fetch_add(1, std::memory_order_acq_rel) == 1) {
        stop.store(true, std::memory_order_release);
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      gate.arrive_and_wait();
      uint64_t key = static_cast<uint64_t>(r);
      for (int i = 0; keep_reading(i, stop, hits, 40 * kWrites); ++i) {
        key = (key + 1) % kKeys;
        Payload p;
        if (cache.lookup(K{key}, &p, valid)) {
          hits.fetch_add(1, std::memory_order_relaxed);
          if (!consistent(key, p)) torn.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto &t : threads) t.join();
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_GT(hits.load(), 0u);
}

// The memory model for invariants 1 and 2: "page tables" are one atomic version per key; a
// mapping change bumps the version, then invalidates, then publishes "completed". Walkers take
// a stamp, read the version and fill. Readers that observe completed = c before looking up must
// never hit an entry built from a version older than c.
enum class InvKind { kRange, kAm, kPasid, kDomain, kGlobal, kGpa };

void run_no_stale_after_completion(InvKind kind) {
  InvalidationClock clock;
  Iotlb tlb(clock, IotlbConfig{.cache = {.capacity = 64, .shards = 2, .ways = 0}});
  constexpr uint16_t kDid = 3;
  constexpr uint32_t kPasid = 9;
  constexpr int kPages = 8;
  const bool nested = kind == InvKind::kGpa;
  auto gpa_of = [](int page) { return 5 * k1G + static_cast<uint64_t>(page) * k4K; };

  std::atomic<uint64_t> version[kPages];
  std::atomic<uint64_t> completed[kPages];
  for (int p = 0; p < kPages; ++p) {
    version[p].store(1);
    completed[p].store(0);
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> stale{0}, torn{0}, hits{0}, refused_seen{0};
  std::atomic<bool> reader_done{false};
  const int kChanges = 1500 * kScale;

  StartGate gate(3);
  std::thread changer([&] {
    gate.arrive_and_wait();
    for (int i = 0; i < kChanges; ++i) {
      const int p = i % kPages;
      const uint64_t v = version[p].load(std::memory_order_relaxed) + 1;
      version[p].store(v, std::memory_order_seq_cst);  // the page-table write
      switch (kind) {
        case InvKind::kRange:
          tlb.invalidate_range(kDid, kPasid, static_cast<uint64_t>(p) * k4K, 1);
          break;
        case InvKind::kAm:
          tlb.invalidate_page_am(kDid, kPasid, static_cast<uint64_t>(p) * k4K, 1);
          break;
        case InvKind::kPasid:
          tlb.invalidate_pasid(kDid, kPasid);
          break;
        case InvKind::kDomain:
          tlb.invalidate_domain(kDid);
          break;
        case InvKind::kGlobal:
          tlb.invalidate_global();
          break;
        case InvKind::kGpa:
          tlb.invalidate_gpa_range(kDid, gpa_of(p), 1);
          break;
      }
      completed[p].store(v, std::memory_order_release);  // the wait completes
    }
    stop.store(true, std::memory_order_release);
  });

  std::thread walker([&] {
    gate.arrive_and_wait();
    for (int i = 0; keep_walking(i, reader_done, 400 * kChanges); ++i) {
      const int p = i % kPages;
      const uint64_t stamp = clock.now();
      const uint64_t v = version[p].load(std::memory_order_seq_cst);  // the walk
      IotlbEntry e;
      e.hpa_base = v << 12;
      e.gpa_base = nested ? gpa_of(p) : 0;
      e.flags = nested ? kIotlbNested : 0;
      e.perms = static_cast<uint8_t>(mix64(v * 31 + static_cast<uint64_t>(p)));
      if (!tlb.fill(stamp, kDid, kPasid, static_cast<uint64_t>(p) * k4K, e)) {
        refused_seen.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });

  std::thread reader([&] {
    gate.arrive_and_wait();
    for (int i = 0; keep_reading(i, stop, hits, 400 * kChanges); ++i) {
      const int p = (i * 3) % kPages;
      const uint64_t done = completed[p].load(std::memory_order_acquire);
      IotlbEntry e;
      if (tlb.lookup(kDid, kPasid, static_cast<uint64_t>(p) * k4K, &e)) {
        hits.fetch_add(1, std::memory_order_relaxed);
        const uint64_t v = e.hpa_base >> 12;
        if (v < done) stale.fetch_add(1, std::memory_order_relaxed);
        if (e.perms != static_cast<uint8_t>(mix64(v * 31 + static_cast<uint64_t>(p)))) {
          torn.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
    reader_done.store(true, std::memory_order_release);
  });

  changer.join();
  walker.join();
  reader.join();
  EXPECT_EQ(stale.load(), 0u);
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_GT(hits.load(), 0u);
  // After everything settles, every page must read back its final version or miss.
  for (int p = 0; p < kPages; ++p) {
    IotlbEntry e;
    if (tlb.lookup(kDid, kPasid, static_cast<uint64_t>(p) * k4K, &e)) {
      EXPECT_EQ(e.hpa_base >> 12, version[p].load());
    }
  }
}

TEST(Concurrency, NoStaleHitAfterCompletedRangeInvalidation) {
  run_no_stale_after_completion(InvKind::kRange);
}
TEST(Concurrency, NoStaleHitAfterCompletedAmInvalidation) {
  run_no_stale_after_completion(InvKind::kAm);
}
TEST(Concurrency, NoStaleHitAfterCompletedPasidInvalidation) {
  run_no_stale_after_completion(InvKind::kPasid);
}
TEST(Concurrency, NoStaleHitAfterCompletedDomainInvalidation) {
  run_no_stale_after_completion(InvKind::kDomain);
}
TEST(Concurrency, NoStaleHitAfterCompletedGlobalInvalidation) {
  run_no_stale_after_completion(InvKind::kGlobal);
}
TEST(Concurrency, NoStaleHitAfterCompletedGpaInvalidation) {
  run_no_stale_after_completion(InvKind::kGpa);
}

// Range invalidation of the IOTLB probes sets without locking them and relies on the fill to
// find the published range (RangeLog) if the fill wrote its entry after the probe read the
// set. This hammers exactly that window: one thread fills one page over and over with the
// version its "walk" read, the other changes the version and invalidates the page, then looks
// the page up itself. A hit older than the version it just wrote is a stale translation that
// survived a completed invalidation. Publishing the range after probing instead of before
// makes this fail within a few thousand rounds here.
TEST(Concurrency, RangeProbeRacesFillsOfTheSamePage) {
  InvalidationClock clock;
  Iotlb tlb(clock);
  constexpr uint16_t kDid = 2;
  constexpr uint32_t kPasid = 5;
  const int kRounds = 200000 * kScale;
  std::atomic<uint64_t> version{1};
  std::atomic<bool> stop{false};
  uint64_t stale = 0, hits = 0;
  StartGate gate(2);
  std::thread filler([&] {
    gate.arrive_and_wait();
    while (!stop.load(std::memory_order_acquire)) {
      const uint64_t stamp = clock.now();
      IotlbEntry e;
      e.hpa_base = version.load(std::memory_order_seq_cst) << 12;  // the walk
      tlb.fill(stamp, kDid, kPasid, 0, e);
    }
  });
  gate.arrive_and_wait();
  for (int r = 0; r < kRounds; ++r) {
    const uint64_t v = version.load(std::memory_order_relaxed) + 1;
    version.store(v, std::memory_order_seq_cst);  // the page-table write
    tlb.invalidate_range(kDid, kPasid, 0, 1);
    IotlbEntry e;
    if (tlb.lookup(kDid, kPasid, 0, &e)) {
      ++hits;
      if ((e.hpa_base >> 12) < v) ++stale;
    }
  }
  stop.store(true, std::memory_order_release);
  filler.join();
  EXPECT_EQ(stale, 0u) << "of " << hits << " hits";
}

// The fill race forced step by step with two threads: the walker takes its stamp, the
// invalidator invalidates, and only then the walker fills. Every such fill must be refused and
// leave nothing behind. Handshakes are atomics, not sleeps.
TEST(Concurrency, DeliberateFillRaceTwoThreads) {
  InvalidationClock clock;
  Iotlb tlb(clock);
  std::atomic<int> phase{0};  // 0: walker's turn to take a stamp, 1: invalidator's turn, 2: fill
  constexpr int kRounds = 1000;
  std::atomic<int> accepted{0}, leftovers{0};
  std::thread invalidator([&] {
    for (int r = 0; r < kRounds; ++r) {
      spin_until([&] { return phase.load(std::memory_order_acquire) == 1; });
      const uint64_t iova = static_cast<uint64_t>(r) * k4K;
      switch (r % 4) {
        case 0:
          tlb.invalidate_range(1, 1, iova, 1);
          break;
        case 1:
          tlb.invalidate_pasid(1, 1);
          break;
        case 2:
          tlb.invalidate_page_am(1, 1, iova, 4);
          break;
        case 3:
          tlb.invalidate_domain(1);
          break;
      }
      phase.store(2, std::memory_order_release);
    }
  });
  std::thread walker([&] {
    for (int r = 0; r < kRounds; ++r) {
      const uint64_t stamp = clock.now();
      phase.store(1, std::memory_order_release);
      spin_until([&] { return phase.load(std::memory_order_acquire) == 2; });
      const uint64_t iova = static_cast<uint64_t>(r) * k4K;
      IotlbEntry e;
      e.hpa_base = iova;
      if (tlb.fill(stamp, 1, 1, iova, e)) accepted.fetch_add(1);
      if (tlb.lookup(1, 1, iova, &e)) leftovers.fetch_add(1);
      phase.store(0, std::memory_order_release);
    }
  });
  invalidator.join();
  walker.join();
  EXPECT_EQ(accepted.load(), 0);
  EXPECT_EQ(leftovers.load(), 0);
  EXPECT_EQ(tlb.stats().refused_fills, static_cast<uint64_t>(kRounds));
}

// Structure caches under the same protocol: device-scope invalidation while walkers fill.
TEST(Concurrency, PasidCacheNoStaleAfterCompletedDeviceInvalidation) {
  InvalidationClock clock;
  PasidCache<Payload> pc(clock, StructureCacheConfig{.cache = {.capacity = 16, .shards = 1}});
  constexpr int kSids = 4;
  std::atomic<uint64_t> version[kSids], completed[kSids];
  for (int s = 0; s < kSids; ++s) {
    version[s].store(1);
    completed[s].store(0);
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> stale{0}, torn{0}, hits{0};
  std::atomic<bool> reader_done{false};
  const int kChanges = 1500 * kScale;
  StartGate gate(3);
  std::thread changer([&] {
    gate.arrive_and_wait();
    for (int i = 0; i < kChanges; ++i) {
      const int s = i % kSids;
      const uint64_t v = version[s].load(std::memory_order_relaxed) + 1;
      version[s].store(v, std::memory_order_seq_cst);
      if (i % 3 == 0) {
        pc.invalidate_device(static_cast<uint16_t>(s));
      } else if (i % 3 == 1) {
        pc.invalidate_pasid(static_cast<uint16_t>(100 + s), 7);
      } else {
        pc.invalidate_domain(static_cast<uint16_t>(100 + s));
      }
      completed[s].store(v, std::memory_order_release);
    }
    stop.store(true, std::memory_order_release);
  });
  std::thread walker([&] {
    gate.arrive_and_wait();
    for (int i = 0; keep_walking(i, reader_done, 400 * kChanges); ++i) {
      const int s = i % kSids;
      const uint64_t stamp = clock.now();
      const uint64_t v = version[s].load(std::memory_order_seq_cst);
      pc.fill(stamp, static_cast<uint16_t>(s), 7, static_cast<uint16_t>(100 + s),
              make_payload(static_cast<uint64_t>(s), v));
    }
  });
  std::thread reader([&] {
    gate.arrive_and_wait();
    for (int i = 0; keep_reading(i, stop, hits, 400 * kChanges); ++i) {
      const int s = (i * 3) % kSids;
      const uint64_t done = completed[s].load(std::memory_order_acquire);
      Payload p;
      if (pc.lookup(static_cast<uint16_t>(s), 7, &p)) {
        hits.fetch_add(1, std::memory_order_relaxed);
        if (!consistent(static_cast<uint64_t>(s), p)) torn.fetch_add(1);
        if (p.w[3] < done) stale.fetch_add(1);
      }
    }
    reader_done.store(true, std::memory_order_release);
  });
  changer.join();
  walker.join();
  reader.join();
  EXPECT_EQ(stale.load(), 0u);
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_GT(hits.load(), 0u);
}

}  // namespace
}  // namespace nestor::caches
