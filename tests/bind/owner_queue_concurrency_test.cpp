// Owners' direct queues, the host's queue and the host's bind-layer calls all at once, while
// devices translate (run under ThreadSanitizer in CI, label `concurrency`). Each guest moves a
// page of its own first-level table, invalidates it through its queue with a wait, and then
// must see the new mapping (DESIGN.md invariant 1: no stale translation after a completed
// wait); no translation of a VM's device may ever leave that VM's memory (invariant 3).
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "bind_fixture.h"
#include "nestor/invalidation.h"
#include "qi_descriptors.h"

namespace nestor::bindtest {
namespace {

constexpr uint64_t k4K = 4096;
constexpr uint64_t kQueueGpa = 0x20000, kStatusGpa = 0x30000;
constexpr uint64_t kPageA = 0x100000, kPageB = 0x200000;  // a guest page moves between these
constexpr unsigned kEntries = 128;                        // 256-bit: one page
constexpr int kVmCount = 3, kRounds = 400;

TEST(OwnerQueueConcurrency, GuestsHostAndTranslatorsAtOnce) {
  BindConfig bc;
  bc.features = kNestingFeatAll | kNestingFeatDirectInvld;
  World w({}, bc, kVmCount);
  struct Guest {
    Vm vm;
    uint16_t sid;
    uint32_t pasid;
    uint32_t queue;
    std::unique_ptr<GuestFl> fl;
  };
  std::vector<Guest> guests(kVmCount);
  for (int v = 0; v < kVmCount; ++v) {
    Guest &g = guests[size_t(v)];
    g.vm = w.make_vm(v);
    g.sid = uint16_t((v + 1) << 8);
    ASSERT_EQ(w.layer().attach_device(g.sid, g.vm.did), 0);
    // Every guest calls its PASID 1; the host PASIDs differ.
    ASSERT_EQ(w.layer().alloc_pasid(g.vm.owner, 0, 1, &g.pasid), 0);
    const uint64_t root = g.vm.space->alloc_table();
    g.fl = std::make_unique<GuestFl>(*g.vm.space, root, 4);
    for (unsigned i = 0; i < 8; ++i)
      ASSERT_EQ(g.fl->map(kIovaBase + i * k4K, kPageA + i * k4K, 12, user_rw()),
                build::Status::kOk);
    BindRequest req = bind_req(root);
    req.guest_pasid = 1;
    ASSERT_EQ(w.layer().bind(g.vm.owner, g.sid, g.pasid, req), 0);
    ASSERT_EQ(
        w.layer().owner_queue_create(g.vm.owner, g.vm.did, kQueueGpa, kEntries, 256, &g.queue), 0);
  }
  constexpr uint64_t kHostQueue = 0x100000, kHostStatus = 0x101000;  // host RAM, no VM's
  ASSERT_EQ(w.engine().invalidation().qi_configure(kHostQueue, 256, 128), 0);

  std::atomic<bool> stop{false};
  std::atomic<int> escapes{0}, stale{0}, translated{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(uint32_t(t) + 7);
      while (!stop.load(std::memory_order_relaxed)) {
        const Guest &g = guests[rng() % kVmCount];
        const Result r = w.translate(g.sid, true, g.pasid, kIovaBase + (rng() % 8) * k4K);
        if (!r.ok) continue;  // a guest is between its unmap and map
        translated.fetch_add(1, std::memory_order_relaxed);
        if (!g.vm.owns_hpa(r.t.out)) escapes.fetch_add(1);
      }
    });
  // The host: its own queue (waits and a global context-cache flush) and second-level churn in a
  // range nobody translates through, which takes the layer's mutex exclusively.
  threads.emplace_back([&] {
    for (size_t tail = 0; !stop.load(std::memory_order_relaxed);) {
      const test::qi::Desc d = tail % 2 ? test::qi::wait_status(kHostStatus, uint32_t(tail))
                                        : test::qi::context_global();
      const uint64_t qw[2] = {d.qw0, d.qw1};
      ASSERT_EQ(w.mem().write(kHostQueue + tail * 16, qw, sizeof qw), 0);
      tail = (tail + 1) % 256;
      ASSERT_EQ(w.engine().invalidation().qi_write_tail(tail), 0);
      const Guest &g = guests[tail % kVmCount];
      ASSERT_EQ(w.layer().unmap(g.vm.did, 0x300'0000, 2ull << 20), 0);
      ASSERT_EQ(w.layer().map(g.vm.did, 0x300'0000, g.vm.hpa_base + 0x300'0000, 2ull << 20,
                              kAccessRead | kAccessWrite),
                0);
    }
  });
  std::vector<std::thread> owners;
  for (int v = 0; v < kVmCount; ++v)
    owners.emplace_back([&, v] {
      Guest &g = guests[size_t(v)];
      size_t tail = 0;
      for (int round = 0; round < kRounds; ++round) {
        const unsigned i = unsigned(round % 8);
        const uint64_t iova = kIovaBase + i * k4K;
        const uint64_t gpa = ((round / 8) % 2 ? kPageA : kPageB) + i * k4K;
        ASSERT_EQ(g.fl->unmap(iova, 12), build::Status::kOk);
        ASSERT_EQ(g.fl->map(iova, gpa, 12, user_rw()), build::Status::kOk);
        // Page-selective PASID-based IOTLB for guest PASID 1 (guest DID 1), then a wait.
        const test::qi::Desc ds[2] = {test::qi::piotlb_page(1, 1, iova),
                                      test::qi::wait_status(kStatusGpa, uint32_t(round))};
        for (const auto &d : ds) {
          const uint64_t qw[4] = {d.qw0, d.qw1, 0, 0};
          ASSERT_EQ(w.mem().write(g.vm.hpa_base + kQueueGpa + tail * 32, qw, sizeof qw), 0);
          tail = (tail + 1) % kEntries;
        }
        ASSERT_EQ(w.layer().owner_queue_write_tail(g.queue, tail), 0);
        uint32_t status = ~0u;
        ASSERT_EQ(w.mem().read(g.vm.hpa_base + kStatusGpa, &status, sizeof status), 0);
        ASSERT_EQ(status, uint32_t(round));
        const Result r = w.translate(g.sid, true, g.pasid, iova);
        ASSERT_TRUE(r.ok);
        if (r.t.out != g.vm.hpa_base + gpa) stale.fetch_add(1);
      }
    });
  for (auto &t : owners) t.join();
  stop.store(true);
  for (auto &t : threads) t.join();
  EXPECT_EQ(escapes.load(), 0);
  EXPECT_EQ(stale.load(), 0);
  EXPECT_GT(translated.load(), 0);
  for (const Guest &g : guests) {
    OwnerQueueStats st;
    ASSERT_EQ(w.layer().owner_queue_stats(g.queue, &st), 0);
    EXPECT_EQ(st.descriptors, 2u * kRounds);
    EXPECT_EQ(st.ops_submitted, uint64_t(kRounds));
    EXPECT_EQ(st.errors, 0u);
  }
}

}  // namespace
}  // namespace nestor::bindtest
