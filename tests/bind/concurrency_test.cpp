// Concurrency of the PASID allocator and the bind layer (run under ThreadSanitizer in CI).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "bind_fixture.h"
#include "nestor/pasid_allocator.h"

namespace nestor::bindtest {
namespace {

constexpr int kThreads = 8;

template <class Fn>
void run_threads(int n, Fn fn) {
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) threads.emplace_back(fn, t);
  for (auto &th : threads) th.join();
}

TEST(AllocatorConcurrency, AllocFreeNeverHandsOutAPasidTwice) {
  PasidAllocator a(12);
  std::vector<uint32_t> owners(kThreads);
  for (auto &o : owners) ASSERT_EQ(a.create_owner(400, &o), 0);  // 8 x 400 < 4095: quota, not space
  // claimed[p] is 1 while some thread believes it holds p: a second claim is a double handout.
  auto claimed = std::make_unique<std::atomic<int>[]>(1u << 12);
  std::atomic<int> double_handouts{0}, quota_hits{0}, double_frees{0};
  std::vector<std::vector<uint32_t>> held(kThreads);
  run_threads(kThreads, [&](int t) {
    std::mt19937 rng(uint32_t(t) * 7919u + 1);
    auto &mine = held[size_t(t)];
    for (int i = 0; i < 6000; ++i) {
      if (mine.empty() || rng() % 5 < 3) {
        uint32_t p;
        const int r = a.alloc(owners[size_t(t)], 0, PasidAllocator::kNoGuestPasid, &p);
        if (r == -EDQUOT) {
          quota_hits.fetch_add(1);
          continue;
        }
        ASSERT_EQ(r, 0);
        if (claimed[p].exchange(1) != 0) double_handouts.fetch_add(1);
        mine.push_back(p);
      } else {
        const size_t k = rng() % mine.size();
        const uint32_t p = mine[k];
        mine[k] = mine.back();
        mine.pop_back();
        claimed[p].store(0);
        ASSERT_EQ(a.free(owners[size_t(t)], p), 0);
        // Double free: -EALREADY, or -EPERM if another thread got p in the meantime.
        const int again = a.free(owners[size_t(t)], p);
        ASSERT_TRUE(again == -EALREADY || again == -EPERM) << again;
        if (again == -EALREADY) double_frees.fetch_add(1);
      }
    }
  });
  EXPECT_EQ(double_handouts.load(), 0);
  EXPECT_GT(quota_hits.load(), 0);  // the quota was really exercised
  EXPECT_GT(double_frees.load(), 0);
  size_t total = 0;
  std::set<uint32_t> all;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(a.held(owners[size_t(t)]), held[size_t(t)].size());
    for (uint32_t p : held[size_t(t)]) {
      EXPECT_EQ(a.owner_of(p), owners[size_t(t)]);
      all.insert(p);
    }
    total += held[size_t(t)].size();
  }
  EXPECT_EQ(all.size(), total);
  EXPECT_EQ(a.allocated(), total);
}

TEST(AllocatorConcurrency, SpecificAllocationHasExactlyOneWinner) {
  PasidAllocator a(11);
  std::vector<uint32_t> owners(kThreads);
  for (auto &o : owners) ASSERT_EQ(a.create_owner(0, &o), 0);
  auto wins = std::make_unique<std::atomic<int>[]>(2048);
  run_threads(kThreads, [&](int t) {
    for (uint32_t p = 1; p < 2048; ++p) {
      // Threads walk the space in different orders so they really collide.
      const uint32_t want = (t & 1) ? p : 2048 - p;
      uint32_t got;
      const int r = a.alloc(owners[size_t(t)], want, PasidAllocator::kNoGuestPasid, &got);
      if (r == 0) {
        EXPECT_EQ(got, want);
        wins[want].fetch_add(1);
      } else {
        EXPECT_EQ(r, -EBUSY);
      }
    }
  });
  for (uint32_t p = 1; p < 2048; ++p) ASSERT_EQ(wins[p].load(), 1) << p;
  EXPECT_EQ(a.allocated(), 2047u);
}

TEST(AllocatorConcurrency, ExhaustionIsExact) {
  PasidAllocator a(8);
  std::vector<uint32_t> owners(kThreads);
  for (auto &o : owners) ASSERT_EQ(a.create_owner(0, &o), 0);
  std::atomic<int> total{0};
  run_threads(kThreads, [&](int t) {
    for (;;) {
      uint32_t p;
      const int r = a.alloc(owners[size_t(t)], 0, PasidAllocator::kNoGuestPasid, &p);
      if (r == -ENOSPC) return;
      ASSERT_EQ(r, 0);
      total.fetch_add(1);
    }
  });
  EXPECT_EQ(total.load(), 255);
  // release_all from several threads at once frees exactly everything.
  run_threads(kThreads, [&](int t) { EXPECT_GE(a.release_all(owners[size_t(t)]), 0); });
  EXPECT_EQ(a.allocated(), 0u);
}

// Owners bind, invalidate, unbind and free in parallel, the host remaps part of each domain,
// and translator threads run throughout: nothing may race, and no translation of a VM's
// device may ever produce an HPA outside that VM's memory.
TEST(BindConcurrency, OwnersWorkInParallelWithTranslators) {
  constexpr int kVmCount = 4;
  EngineConfig ec;
  ec.pasid_bits = 8;
  World w(ec, {}, kVmCount);
  std::vector<Vm> vms;
  std::vector<uint64_t> roots;
  for (int v = 0; v < kVmCount; ++v) {
    vms.push_back(w.make_vm(v, 4, 16));
    ASSERT_EQ(w.layer().attach_device(uint16_t((v + 1) << 8), vms.back().did), 0);
    const uint64_t root = vms.back().space->alloc_table();
    GuestFl fl(*vms.back().space, root, 4);
    for (int i = 0; i < 8; ++i)
      ASSERT_EQ(
          fl.map(kIovaBase + uint64_t(i) * 4096, 0x100'0000 + uint64_t(i) * 4096, 12, user_rw()),
          build::Status::kOk);
    roots.push_back(root);
  }
  std::atomic<bool> stop{false};
  std::atomic<int> escapes{0}, translated{0};
  std::vector<std::thread> translators;
  for (int t = 0; t < 2; ++t)
    translators.emplace_back([&, t] {
      std::mt19937 rng(uint32_t(t) + 99);
      while (!stop.load(std::memory_order_relaxed)) {
        const int v = int(rng() % kVmCount);
        Result r = w.translate(uint16_t((v + 1) << 8), true, 1 + rng() % 254,
                               kIovaBase + (rng() % 8) * 4096);
        if (r.ok) {
          translated.fetch_add(1, std::memory_order_relaxed);
          if (!vms[size_t(v)].owns_hpa(r.t.out)) escapes.fetch_add(1);
        }
      }
    });
  run_threads(kVmCount, [&](int v) {
    Vm &vm = vms[size_t(v)];
    const uint16_t sid = uint16_t((v + 1) << 8);
    for (int i = 0; i < 40; ++i) {
      uint32_t pasid;
      ASSERT_EQ(w.layer().alloc_pasid(vm.owner, 0, PasidAllocator::kNoGuestPasid, &pasid), 0);
      ASSERT_EQ(w.layer().bind(vm.owner, sid, pasid, bind_req(roots[size_t(v)])), 0);
      Result r = w.translate(sid, true, pasid, kIovaBase + 4096);
      ASSERT_TRUE(r.ok);
      ASSERT_EQ(r.t.out, vm.hpa_base + 0x100'1000);
      invq::InvalidationOp op;
      op.caches = invq::kCacheIotlb | invq::kCachePaging;
      op.scope = invq::Scope::kPasid;
      op.source_id = sid;
      op.pasid = pasid;
      ASSERT_EQ(w.layer().cache_invalidate(vm.owner, op), 0);
      // Host-side churn in a part of guest RAM nobody translates through.
      ASSERT_EQ(w.layer().unmap(vm.did, 0x200'0000, 2ull << 20), 0);
      ASSERT_EQ(w.layer().map(vm.did, 0x200'0000, vm.hpa_base + 0x200'0000, 2ull << 20,
                              kAccessRead | kAccessWrite),
                0);
      if (i % 2) {
        ASSERT_EQ(w.layer().unbind(vm.owner, sid, pasid), 0);
        ASSERT_FALSE(w.translate(sid, true, pasid, kIovaBase).ok);
        ASSERT_EQ(w.layer().free_pasid(vm.owner, pasid), 0);
      } else {
        ASSERT_EQ(w.layer().release_owner(vm.owner), 1);
      }
    }
  });
  stop.store(true);
  for (auto &t : translators) t.join();
  EXPECT_EQ(escapes.load(), 0);
  EXPECT_EQ(w.layer().pasids().allocated(), 0u);
}

}  // namespace
}  // namespace nestor::bindtest
