// Per-thread statistics: sums across threads, slot reuse after threads exit.
#include "nestor/caches/stats.h"

#include <gtest/gtest.h>

#include <array>

#include <thread>
#include <vector>

namespace nestor::caches {
namespace {

TEST(Stats, SumsAcrossThreads) {
  Stats stats;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) stats.add(Counter::kHits);
      stats.add(Counter::kMisses, 5);
    });
  }
  for (auto &th : threads) th.join();
  const CacheStats s = stats.snapshot();
  EXPECT_EQ(s.hits, 8000u);
  EXPECT_EQ(s.misses, 40u);
  EXPECT_EQ(s.lookups(), 8040u);
}

// More threads over time than there are slots: exited threads hand their slot (and counts) on.
TEST(Stats, SlotsAreRecycledWithoutLosingCounts) {
  Stats stats;
  for (size_t t = 0; t < detail::kMaxStatThreads + 44; ++t) {
    std::thread([&] { stats.add(Counter::kFills, 2); }).join();
  }
  EXPECT_EQ(stats.snapshot().fills, 2 * (detail::kMaxStatThreads + 44));
}

// Every field in Counter order, so a counter missing from snapshot() or operator- shows up
// as a wrong value at its index.
std::array<uint64_t, static_cast<size_t>(Counter::kCount)> fields_of(const CacheStats &s) {
  return {s.hits,       s.misses,     s.fills,        s.refused_fills,      s.evictions,
          s.inv_global, s.inv_domain, s.inv_pasid,    s.inv_device,         s.inv_page,
          s.inv_range,  s.inv_gpa,    s.inv_promoted, s.over_invalidations, s.entries_removed,
          s.walks,      s.walk_refs};
}

TEST(Stats, EveryCounterReachesItsField) {
  Stats stats;
  for (unsigned c = 0; c < static_cast<unsigned>(Counter::kCount); ++c) {
    stats.add(static_cast<Counter>(c), c + 1);
  }
  const CacheStats s = stats.snapshot();
  const auto fields = fields_of(s);
  for (size_t i = 0; i < fields.size(); ++i) EXPECT_EQ(fields[i], i + 1) << i;

  // The difference of two snapshots covers every field too.
  for (unsigned c = 0; c < static_cast<unsigned>(Counter::kCount); ++c) {
    stats.add(static_cast<Counter>(c), 100 * (c + 1));
  }
  const auto diffs = fields_of(stats.snapshot() - s);
  for (size_t i = 0; i < diffs.size(); ++i) EXPECT_EQ(diffs[i], 100 * (i + 1)) << i;
}

}  // namespace
}  // namespace nestor::caches
