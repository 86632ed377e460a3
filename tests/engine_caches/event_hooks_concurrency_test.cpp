// Event hooks under concurrency (TSan): hooks added and removed while threads translate.
#include <atomic>
#include <thread>
#include <vector>

#include "machine.h"

namespace nestor::test {
namespace {

// Hooks come and go while other threads translate: a removed hook is never called after
// remove() returns, and translations stay right throughout.
TEST(EventHooksConcurrency, AddRemoveWhileTranslating) {
  Machine m(Mode::kSecondLevel);
  for (uint64_t p = 0; p < 16; ++p) ASSERT_EQ(m.map(p, p, 12, true), build::Status::kOk);
  struct Counter {
    std::atomic<uint64_t> calls{0};
    std::atomic<bool> removed{false};
    std::atomic<uint64_t> late{0};
    static void on_event(void *user, const Event &) {
      auto *c = static_cast<Counter *>(user);
      if (c->removed.load(std::memory_order_acquire)) c->late.fetch_add(1);
      c->calls.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      AddressSpace h = m.cached->open(kSid, true, kPasid);
      for (uint64_t i = 0; !stop.load(std::memory_order_acquire); ++i) {
        const uint64_t page = (i + uint64_t(t)) % 16;
        const Result r = (i & 1) ? h.translate(kIovaBase + page * 4096, kAccessRead)
                                 : m.cached->translate(Machine::request(page, kAccessRead));
        if (!r.ok || r.t.out != kDataBase + page * 4096) wrong.fetch_add(1);
      }
    });
  }
  for (int round = 0; round < 200; ++round) {
    Counter c;
    const int id =
        m.cached->add_event_hook(kEventTranslate | kEventCacheFill, Counter::on_event, &c);
    ASSERT_GE(id, 0);
    // Some events are delivered before it goes (translations keep running).
    while (c.calls.load(std::memory_order_relaxed) == 0) std::this_thread::yield();
    ASSERT_EQ(m.cached->remove_event_hook(id), 0);
    c.removed.store(true, std::memory_order_release);
    const uint64_t at_removal = c.calls.load();
    // Enough translations for a late call to show, then the counter must not have moved.
    for (int i = 0; i < 200; ++i) (void)m.cached->translate(Machine::request(1, kAccessRead));
    EXPECT_EQ(c.calls.load(), at_removal);
    EXPECT_EQ(c.late.load(), 0u);
  }
  stop.store(true, std::memory_order_release);
  for (std::thread &t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0u);
}

}  // namespace
}  // namespace nestor::test
