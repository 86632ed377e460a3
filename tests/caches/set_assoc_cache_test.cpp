// The generic seqlock set-associative array: geometry, fill/replace/evict, refusal rules.
#include "nestor/caches/set_assoc_cache.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <set>
#include <vector>

#include "nestor/caches/hash.h"

namespace nestor::caches {
namespace {

struct K {
  uint64_t a;
};
struct V {
  uint64_t x;
  uint32_t y;
};
using Cache = SetAssocCache<K, V, 4>;

auto always_valid() {
  return [](uint64_t, const K &, const V &) { return true; };
}

TEST(SetAssocCache, GeometryRoundsToPowersOfTwo) {
  Cache c(SetAssocConfig{.capacity = 1000, .shards = 3, .ways = 3});
  EXPECT_EQ(c.ways(), 4u);
  EXPECT_EQ(c.num_shards(), 4u);
  EXPECT_EQ(c.capacity(), 1024u);
  Cache tiny(SetAssocConfig{.capacity = 1, .shards = 8, .ways = 2});
  EXPECT_EQ(tiny.ways(), 2u);
  EXPECT_EQ(tiny.num_sets(), 8u);  // at least one set per shard
  Cache clamp(SetAssocConfig{.capacity = 64, .shards = 1, .ways = 64});
  EXPECT_EQ(clamp.ways(), 4u);
}

TEST(SetAssocCache, FillLookupReplace) {
  Cache c(SetAssocConfig{.capacity = 64, .shards = 2});
  V v{};
  EXPECT_FALSE(c.lookup(K{7}, &v, always_valid()));
  EXPECT_EQ(c.fill(1, K{7}, V{70, 7}, always_valid()), FillResult::kInserted);
  ASSERT_TRUE(c.lookup(K{7}, &v, always_valid()));
  EXPECT_EQ(v.x, 70u);
  EXPECT_EQ(v.y, 7u);
  EXPECT_EQ(c.fill(2, K{7}, V{71, 8}, always_valid()), FillResult::kReplaced);
  ASSERT_TRUE(c.lookup(K{7}, &v, always_valid()));
  EXPECT_EQ(v.x, 71u);
  // Replacement keeps one copy of the key.
  EXPECT_EQ(c.count_if([](uint64_t, const K &k, const V &) { return k.a == 7; }), 1u);
}

TEST(SetAssocCache, StampZeroIsRefused) {
  Cache c;
  EXPECT_EQ(c.fill(0, K{1}, V{}, always_valid()), FillResult::kRefused);
}

TEST(SetAssocCache, ValidPredicateFiltersHitsAndRefusesFills) {
  Cache c(SetAssocConfig{.capacity = 64, .shards = 1});
  ASSERT_EQ(c.fill(5, K{1}, V{1, 1}, always_valid()), FillResult::kInserted);
  V v{};
  auto newer_than_5 = [](uint64_t st, const K &, const V &) { return st > 5; };
  EXPECT_FALSE(c.lookup(K{1}, &v, newer_than_5));
  EXPECT_EQ(c.fill(5, K{2}, V{}, newer_than_5), FillResult::kRefused);
  EXPECT_EQ(c.fill(6, K{2}, V{}, newer_than_5), FillResult::kInserted);
}

bool same_set(const Cache &c, const K &x, const K &y) {
  return c.set_index(x) == c.set_index(y);
}

std::vector<K> same_set_keys(const Cache &c, size_t n) {
  std::vector<K> out;
  for (uint64_t a = 0; out.size() < n; ++a) {
    if (same_set(c, K{0}, K{a})) out.push_back(K{a});
  }
  return out;
}

TEST(SetAssocCache, EvictionWithinFullSet) {
  Cache c(SetAssocConfig{.capacity = 64, .shards = 2, .ways = 4});
  const std::vector<K> keys = same_set_keys(c, 6);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(c.fill(1, keys[i], V{keys[i].a, 0}, always_valid()), FillResult::kInserted);
  }
  EXPECT_EQ(c.fill(1, keys[4], V{keys[4].a, 0}, always_valid()), FillResult::kEvicted);
  V v{};
  ASSERT_TRUE(c.lookup(keys[4], &v, always_valid()));
  EXPECT_EQ(v.x, keys[4].a);
  int present = 0;
  for (int i = 0; i < 5; ++i) present += c.lookup(keys[i], &v, always_valid());
  EXPECT_EQ(present, 4);  // exactly one of the first four went
  // A dead (scope-invalidated) entry is reused before a live one is evicted.
  auto not_key5 = [&](uint64_t, const K &k, const V &) { return k.a != keys[4].a; };
  EXPECT_EQ(c.fill(2, keys[5], V{}, not_key5), FillResult::kInserted);
}

TEST(SetAssocCache, InvalidateSetRefusesOlderFillsInThatSetOnly) {
  Cache c(SetAssocConfig{.capacity = 1024, .shards = 4});
  ASSERT_EQ(c.fill(3, K{1}, V{}, always_valid()), FillResult::kInserted);
  const size_t removed = c.invalidate_set_of(K{1}, 10, [](const K &k) { return k.a == 1; });
  EXPECT_EQ(removed, 1u);
  V v{};
  EXPECT_FALSE(c.lookup(K{1}, &v, always_valid()));
  EXPECT_EQ(c.fill(10, K{1}, V{}, always_valid()), FillResult::kRefused);
  EXPECT_EQ(c.fill(11, K{1}, V{}, always_valid()), FillResult::kInserted);
  // A key in another set is not affected by that set's time.
  uint64_t other = 2;
  while (same_set(c, K{1}, K{other})) ++other;
  EXPECT_EQ(c.fill(5, K{other}, V{}, always_valid()), FillResult::kInserted);
}

// KeyRemover: the equality form of invalidate_set_of that address-selective invalidation
// uses. Every named key goes, no other key does (not even a set-mate), and each named key's
// set refuses fills stamped at or before t. 100 keys span several of its prefetch chunks, and
// a small cache puts many of them in shared sets.
TEST(SetAssocCache, KeyRemoverRemovesExactlyTheNamedKeys) {
  Cache c(SetAssocConfig{.capacity = 256, .shards = 2});
  std::vector<K> present;
  for (uint64_t a = 0; a < 1000 && present.size() < 200; ++a) {
    if (c.fill(1, K{a}, V{a, 0}, always_valid()) == FillResult::kInserted) present.push_back(K{a});
  }
  V v{};
  std::vector<K> live;
  for (const K &k : present) {
    if (c.lookup(k, &v, always_valid())) live.push_back(k);
  }
  ASSERT_GE(live.size(), 150u);
  std::set<uint64_t> named;
  size_t expected = 0;
  {
    Cache::KeyRemover remover(c, 7);
    for (size_t i = 0; i < live.size(); i += 2) {
      remover.add(live[i]);
      named.insert(live[i].a);
      ++expected;
    }
    remover.add(K{5000});  // absent: removes nothing, still stamps its set
    EXPECT_EQ(remover.removed(), expected);
  }
  for (const K &k : live) EXPECT_EQ(c.lookup(k, &v, always_valid()), !named.count(k.a)) << k.a;
  EXPECT_EQ(c.fill(7, K{5000}, V{}, always_valid()), FillResult::kRefused);
  EXPECT_EQ(c.fill(8, K{5000}, V{}, always_valid()), FillResult::kInserted);
  EXPECT_EQ(c.fill(7, live[0], V{}, always_valid()), FillResult::kRefused);
}

TEST(SetAssocCache, InvalidateAllSetsMatchesPredicate) {
  Cache c(SetAssocConfig{.capacity = 1024, .shards = 4});
  for (uint64_t a = 0; a < 100; ++a) ASSERT_TRUE(accepted(c.fill(1, K{a}, V{}, always_valid())));
  EXPECT_EQ(c.invalidate_all_sets(2, [](const K &k) { return k.a % 2 == 0; }), 50u);
  V v{};
  for (uint64_t a = 0; a < 100; ++a) EXPECT_EQ(c.lookup(K{a}, &v, always_valid()), a % 2 == 1);
}

TEST(Hash, Mix64SpreadsLowBits) {
  std::set<uint64_t> sets;
  for (uint64_t i = 0; i < 64; ++i) sets.insert(mix64(i) & 63);
  EXPECT_GT(sets.size(), 32u);
  EXPECT_EQ(round_up_pow2(0), 1u);
  EXPECT_EQ(round_up_pow2(5), 8u);
  EXPECT_EQ(round_up_pow2(8), 8u);
}

}  // namespace
}  // namespace nestor::caches
