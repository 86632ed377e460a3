// Model-based randomized test: random fills (fresh and stale stamps) and invalidations of every
// kind against a std::map reference. After each operation every cache hit must be an entry the
// model still holds, with the same payload: the cache may forget (evict, over-invalidate) but
// never return something stale.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "nestor/caches/iotlb.h"
#include "nestor/caches/paging_structure_caches.h"

namespace nestor::caches {
namespace {

constexpr uint64_t k4K = 1ull << 12, k2M = 1ull << 21, k1G = 1ull << 30;
constexpr uint32_t kSl = Iotlb::kSecondLevelPasid;

struct MKey {
  uint16_t did;
  uint32_t pasid;
  unsigned shift;
  uint64_t page;
  auto tie() const { return std::tie(did, pasid, shift, page); }
  bool operator<(const MKey &o) const { return tie() < o.tie(); }
};

struct MVal {
  IotlbEntry e;
  uint64_t stamp;
};

using Pred = std::function<bool(const MKey &, const IotlbEntry &)>;

bool overlaps(uint64_t lo, uint64_t hi, uint64_t a, uint64_t b) {
  return lo <= b && a <= hi;
}

class IotlbModel {
 public:
  explicit IotlbModel(uint64_t seed) : rng_(seed) {}

  void step() {
    const int op = pick(0, 99);
    if (op < 55) {
      fill();
    } else if (op < 70) {
      lookup_random_is_consistent();
    } else {
      invalidate();
    }
    if (rng_() % 8 == 0) stamps_.push_back(clock_.now());
    if (stamps_.size() > 16) stamps_.erase(stamps_.begin());
  }

  // Every address the test can produce, in every (did, pasid).
  void check_all() {
    for (uint16_t did : {1, 2}) {
      for (uint32_t pasid : {1u, 2u, kSl}) {
        for (uint64_t iova : addresses_) check(did, pasid, iova);
      }
    }
  }

  uint64_t hits() const { return hits_; }
  const Iotlb &tlb() const { return tlb_; }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  uint64_t random_addr() {
    return pick(0, 3) * k1G + pick(0, 3) * k2M + pick(0, 3) * k4K + (pick(0, 1) ? 0x80 : 0);
  }
  uint16_t random_did() { return static_cast<uint16_t>(pick(1, 2)); }
  uint32_t random_pasid() {
    static constexpr uint32_t kP[] = {1, 2, kSl};
    return kP[pick(0, 2)];
  }

  void fill() {
    const uint16_t did = random_did();
    const uint32_t pasid = random_pasid();
    const uint64_t iova = random_addr();
    static constexpr unsigned kShifts[] = {12, 12, 21, 30};
    IotlbEntry e;
    e.page_shift = static_cast<uint8_t>(kShifts[pick(0, 3)]);
    e.hpa_base = (next_hpa_++) << 30;
    e.perms = static_cast<uint8_t>(pick(0, 7));
    if (pasid != kSl && pick(0, 1)) {
      e.flags = kIotlbNested;
      e.gpa_base = random_addr() & ~((uint64_t{1} << e.page_shift) - 1);
    }
    const bool stale = !stamps_.empty() && pick(0, 2) == 0;
    const uint64_t stamp =
        stale ? stamps_[pick(0, static_cast<int>(stamps_.size()) - 1)] : clock_.now();
    const MKey key{did, pasid, e.page_shift, iova >> e.page_shift};
    // The model refuses what any invalidation issued at or after the stamp covers.
    bool refused = false;
    for (const auto &[t, pred] : log_) refused |= stamp <= t && pred(key, e);
    const bool accepted = tlb_.fill(stamp, did, pasid, iova, e);
    trace("fill did=" + std::to_string(did) + " pasid=" + std::to_string(pasid) +
          " iova=" + hex(iova) + " shift=" + std::to_string(e.page_shift) +
          " flags=" + std::to_string(e.flags) + " gpa=" + hex(e.gpa_base) +
          " stamp=" + std::to_string(stamp) + (stale ? " stale" : "") +
          (accepted ? " accepted" : " refused") + (refused ? " model-refused" : ""));
    if (!stale) {
      ASSERT_TRUE(accepted);
    }
    if (accepted && !refused) {
      model_[key] = MVal{e, stamp};
    } else if (accepted) {
      // The cache took a fill the model knows is stale: drop the key from the model so any
      // later hit on it fails the check.
      model_.erase(key);
    }
    // A refused fill leaves the cache (and so the model) as it was.
  }

  void invalidate() {
    const uint16_t did = random_did();
    const uint32_t pasid = random_pasid();
    const uint64_t t = clock_.now();  // advance() will return exactly this (single thread)
    Pred pred;
    switch (pick(0, 7)) {
      case 0:
        if (pick(0, 9)) return;  // keep globals rare so the cache holds something
        tlb_.invalidate_global();
        last_inv_ = "global";
        pred = [](const MKey &, const IotlbEntry &) { return true; };
        break;
      case 1:
        tlb_.invalidate_domain(did);
        last_inv_ = "domain " + std::to_string(did);
        pred = [did](const MKey &k, const IotlbEntry &) { return k.did == did; };
        break;
      case 2:
        tlb_.invalidate_pasid(did, pasid);
        last_inv_ = "pasid " + std::to_string(did) + "/" + std::to_string(pasid);
        pred = [did, pasid](const MKey &k, const IotlbEntry &) {
          return k.did == did && k.pasid == pasid;
        };
        break;
      case 3:
      case 4: {
        const uint64_t addr = random_addr();
        const uint64_t npages = pick(0, 5) ? pick(1, 600) : pick(1, 4);
        tlb_.invalidate_range(did, pasid, addr, npages);
        last_inv_ = "range " + std::to_string(did) + "/" + std::to_string(pasid) + " " + hex(addr) +
                    " n=" + std::to_string(npages);
        pred = range_pred(did, pasid, addr & ~(k4K - 1), npages);
        break;
      }
      case 5: {
        const uint64_t addr = random_addr();
        const unsigned am = static_cast<unsigned>(pick(0, 10));
        tlb_.invalidate_page_am(did, pasid, addr, am);
        last_inv_ = "am " + std::to_string(did) + "/" + std::to_string(pasid) + " " + hex(addr) +
                    " am=" + std::to_string(am);
        const uint64_t n = uint64_t{1} << am;
        pred = range_pred(did, pasid, addr & ~(n * k4K - 1), n);
        break;
      }
      case 6:
      case 7: {
        const uint64_t gpa = random_addr() & ~(k4K - 1);
        const uint64_t npages = pick(1, 700);
        const bool dependents = pick(0, 1);
        tlb_.invalidate_gpa_range(
            did, gpa, npages,
            dependents ? GpaReach::kFinalGpaDependents : GpaReach::kFirstLevelOfDomain);
        last_inv_ = std::string(dependents ? "gpa-dependents " : "gpa ") + std::to_string(did) +
                    " " + hex(gpa) + " n=" + std::to_string(npages);
        const uint64_t last = gpa + npages * k4K - 1;
        pred = [did, gpa, last, dependents](const MKey &k, const IotlbEntry &e) {
          if (k.did != did) return false;
          if (k.pasid == kSl) {
            const uint64_t lo = k.page << k.shift;
            return overlaps(lo, lo + (uint64_t{1} << k.shift) - 1, gpa, last);
          }
          // VT-d type 0x2: every first-level and nested entry of the DID. The dependency reach
          // owes only the nested entries whose final GPA page overlaps the range.
          if (!dependents) return true;
          return (e.flags & kIotlbNested) &&
                 overlaps(e.gpa_base, e.gpa_base + (uint64_t{1} << e.page_shift) - 1, gpa, last);
        };
        break;
      }
    }
    trace("invalidate t=" + std::to_string(t) + " " + last_inv_);
    log_.emplace_back(t, pred);
    std::erase_if(model_, [&](const auto &kv) { return pred(kv.first, kv.second.e); });
  }

  static Pred range_pred(uint16_t did, uint32_t pasid, uint64_t addr, uint64_t npages) {
    const uint64_t last = addr + npages * k4K - 1;
    return [=](const MKey &k, const IotlbEntry &) {
      const uint64_t lo = k.page << k.shift;
      return k.did == did && k.pasid == pasid &&
             overlaps(lo, lo + (uint64_t{1} << k.shift) - 1, addr, last);
    };
  }

  void lookup_random_is_consistent() { check(random_did(), random_pasid(), random_addr()); }

  void check(uint16_t did, uint32_t pasid, uint64_t iova) {
    IotlbEntry got;
    if (!tlb_.lookup(did, pasid, iova, &got)) return;
    ++hits_;
    const auto it = model_.find(MKey{did, pasid, got.page_shift, iova >> got.page_shift});
    ASSERT_NE(it, model_.end()) << "stale hit did=" << did << " pasid=" << pasid << " iova=0x"
                                << std::hex << iova << " shift=" << std::dec << int(got.page_shift)
                                << " hpa=0x" << std::hex << got.hpa_base << "\nrecent operations:\n"
                                << recent();
    EXPECT_EQ(it->second.e.hpa_base, got.hpa_base);
    EXPECT_EQ(it->second.e.perms, got.perms);
    EXPECT_EQ(it->second.e.flags, got.flags);
    EXPECT_EQ(it->second.e.gpa_base, got.gpa_base);
  }

  static std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
  }
  // Keeps the last operations so a failure shows how the cache got there.
  void trace(std::string s) {
    trace_.push_back(std::move(s));
    if (trace_.size() > 40) trace_.erase(trace_.begin());
  }
  std::string recent() const {
    std::string out;
    for (const auto &s : trace_) out += "  " + s + "\n";
    return out;
  }

  std::vector<std::string> trace_;
  std::string last_inv_;
  std::mt19937_64 rng_;
  InvalidationClock clock_;
  // Tiny geometry and scope tables: plenty of evictions and scope-slot collisions.
  Iotlb tlb_{clock_, IotlbConfig{.cache = {.capacity = 16, .shards = 1, .ways = 0},
                                 .promote_threshold_pages = 512,
                                 .pasid_scope_slots = 2,
                                 .gpa_page_slots = 2}};
  std::map<MKey, MVal> model_;
  std::vector<std::pair<uint64_t, Pred>> log_;
  std::vector<uint64_t> stamps_;
  std::vector<uint64_t> addresses_ = [] {
    std::vector<uint64_t> v;
    for (uint64_t g = 0; g < 4; ++g)
      for (uint64_t m = 0; m < 4; ++m)
        for (uint64_t p = 0; p < 4; ++p) v.push_back(g * k1G + m * k2M + p * k4K);
    return v;
  }();
  uint64_t next_hpa_ = 1;
  uint64_t hits_ = 0;
};

TEST(IotlbModel, NeverReturnsStaleEntries) {
  uint64_t total_hits = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    IotlbModel m(seed);
    for (int i = 0; i < 3000; ++i) {
      m.step();
      if (i % 10 == 0) m.check_all();
      if (::testing::Test::HasFatalFailure()) return;
    }
    const CacheStats s = m.tlb().stats();
    EXPECT_GT(s.refused_fills, 0u);
    EXPECT_GT(s.evictions, 0u);
    EXPECT_GT(s.inv_promoted, 0u);
    total_hits += m.hits();
  }
  EXPECT_GT(total_hits, 1000u);  // the test must exercise hits, not just misses
}

}  // namespace
}  // namespace nestor::caches
