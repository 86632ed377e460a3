// C event hooks added and removed while other threads translate (label concurrency: the TSan
// suite runs it). The contract under test is nestor_event_hook_remove's: once it returns, the
// callback is not running and is never called again, so its user data may be freed -- here it
// is, and a late call would be a use after free (ASan, TSan) besides a counted failure. Slots
// are reused round after round, so a stale slot would be caught too.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "capi_vm.h"
#include "nestor.h"

namespace {

struct Counter {
  std::atomic<uint64_t> calls{0};
  std::atomic<bool> removed{false};
};

std::atomic<uint64_t> g_late{0};

void count(void *user, const nestor_event *ev) {
  auto *c = static_cast<Counter *>(user);
  if (c->removed.load(std::memory_order_acquire)) g_late.fetch_add(1);
  if (ev->kind == NESTOR_EVENT_TRANSLATE && ev->translate && ev->translate->result.fault == 0)
    c->calls.fetch_add(1, std::memory_order_relaxed);
}

TEST(EventsCapiConcurrency, RemoveReturnsOnlyOnceNoCallIsRunning) {
  nestor_engine *e = nullptr;
  nestor_bind *b = nullptr;
  ASSERT_EQ(nestor::test::capi_make_bind_engine(&e, &b), 0);
  nestor::test::CapiVm vm;
  ASSERT_EQ(nestor::test::capi_make_vm(e, b, 256ull << 20, 64ull << 20, 0, &vm), 0);
  constexpr uint16_t kDev = 0x0100;
  ASSERT_EQ(nestor_device_attach(b, kDev, vm.did), 0);
  uint32_t pasid = 0;
  ASSERT_EQ(nestor_pasid_alloc(b, vm.owner, 0, NESTOR_NO_GUEST_PASID, &pasid), 0);
  const nestor_bind_data bd = nestor::test::capi_bind_data();
  ASSERT_EQ(nestor_bind_pgtbl(b, vm.owner, kDev, pasid, &bd), 0);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      nestor_request req{};
      req.source_id = kDev;
      req.has_pasid = 1;
      req.pasid = pasid;
      req.iova = 0x10;
      req.access = NESTOR_ACCESS_READ;
      while (!stop.load(std::memory_order_relaxed)) {
        nestor_result res{};
        if (nestor_translate(e, &req, &res) != 0 || res.fault != 0) bad.fetch_add(1);
      }
    });
  }

  for (int round = 0; round < 200; ++round) {
    auto c = std::make_unique<Counter>();
    int id = -1;
    ASSERT_EQ(nestor_event_hook_add(e, NESTOR_EVENT_TRANSLATE, count, c.get(), &id), 0);
    // Delivered to the translating threads: wait for one call (they never stop translating).
    while (c->calls.load(std::memory_order_relaxed) == 0) std::this_thread::yield();
    ASSERT_EQ(nestor_event_hook_remove(e, id), 0);
    c->removed.store(true, std::memory_order_release);
    c.reset();  // the user data dies: the engine must not touch it again
  }
  stop.store(true);
  for (std::thread &t : threads) t.join();
  EXPECT_EQ(g_late.load(), 0u) << "a callback ran after nestor_event_hook_remove returned";
  EXPECT_EQ(bad.load(), 0u);
  nestor_bind_destroy(b);
  nestor_engine_destroy(e);
}

}  // namespace
